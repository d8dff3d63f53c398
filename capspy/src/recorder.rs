//! The recording daemon's loop: sweep the kernel map, attribute each cgroup to a container, a
//! service or the host, and write batches to the store.
//!
//! The kernel map holds counts since the program was loaded; each sweep writes them as this
//! session's cumulative values, so a batch written twice, or a daemon killed between batches,
//! never counts a check twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::attribute::engines::{Engines, Identity};
use crate::attribute::{CgroupIndex, Owner, Runtime};
use crate::model::caps::CapSet;
use crate::model::loss::LossCounters;
use crate::model::text::short_id;
use crate::model::time::{BootClock, now_ms, unix_ms};
use crate::store::{CheckRecord, StoreWriter, Subject, SubjectKind, UNATTRIBUTED_PREFIX};
use crate::trace::call_path::CallPaths;
use crate::trace::collector::{Collector, Observation};
use crate::trace::hook::Tracer;
use crate::watch::drift::{Source, Watch, Who};

/// What became of one cgroup id.
#[derive(Clone)]
struct Attributed {
    key: String,
    /// Relative to the v2 root; None when the cgroup was gone before we looked.
    path: Option<String>,
    /// Set once the subject row is written; containers are refreshed until enriched.
    enriched: bool,
    /// The engine answered (or there is none to ask): a refresh only reads the granted set.
    named: bool,
    /// Containers only: the workload key and the container's name, for drift detection.
    workload: Option<String>,
    name: Option<String>,
}

/// The container cgroup [`Recorder::attribute`] looks at.
struct Look<'a> {
    cgroup_id: u64,
    runtime: Runtime,
    id: &'a str,
    /// Below the v2 root.
    path: &'a str,
    /// Its engine answered an earlier look.
    named: bool,
}

/// What the container's engine said.
enum Asked {
    /// It named the container (or knows none such), with the granted set its record holds.
    Answered(Option<CapSet>),
    /// A pod's sandbox, stored as its runtime's service: nothing more to write.
    Sandbox,
    /// No answer this time: ask again on a later sweep.
    Unreachable,
}

pub struct Recorder {
    collector: Collector,
    store: StoreWriter,
    session: i64,
    index: CgroupIndex,
    v2_root: PathBuf,
    engines: Engines,
    clock: BootClock,
    call_paths: Option<CallPaths>,
    cgroups: HashMap<u64, Attributed>,
    /// Containers seen running, to mark them ended when their cgroup goes away.
    running: HashSet<String>,
    /// `capspy watch`: baselines, alerts and metrics.
    watch: Option<Watch>,
    /// Cgroups the previous sweep found gone, retired by this one (see [`Recorder::flush`]).
    gone_before: HashSet<u64>,
    /// The loss counters last written to the store.
    written_losses: Option<LossCounters>,
}

impl Recorder {
    pub fn new(
        tracer: &mut Tracer,
        store: StoreWriter,
        v2_root: PathBuf,
        call_paths: Option<CallPaths>,
        engines: Engines,
    ) -> Result<Self> {
        let collector = Collector::new(tracer)?;
        let mut store = store;
        let session = store.begin_session(tracer.method.name(), now_ms())?;
        // For `capspy ls` and the reports to say why containers have no names.
        store.set_engines(engines.statuses())?;
        Ok(Self {
            collector,
            store,
            session,
            index: CgroupIndex::new(v2_root.clone()),
            v2_root,
            engines,
            clock: BootClock::now(),
            call_paths,
            cgroups: HashMap::new(),
            running: HashSet::new(),
            watch: None,
            gone_before: HashSet::new(),
            written_losses: None,
        })
    }

    /// Runs until SIGINT/SIGTERM or `duration`, flushing every `interval`.
    pub async fn run(&mut self, interval: Duration, duration: Option<Duration>) -> Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(interval);
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await?,
                r = self.collector.next_sightings() => {
                    r.context("reading the ring buffer")?;
                    // Attribute new cgroups while they still exist: short-lived containers
                    // may be gone by the next sweep.
                    self.attribute_new().await;
                    self.judge_sightings();
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                () = &mut deadline => break,
            }
        }
        self.flush().await
    }

    /// Entries in the kernel aggregation map now.
    pub fn map_entries(&self) -> usize {
        self.collector.entries()
    }

    /// One sweep: every key of the kernel map, attributed, written in one transaction.
    pub async fn flush(&mut self) -> Result<()> {
        // Found gone before the map is read, so the counts this sweep reads are their last: a
        // cgroup removed after the read may have made checks since, which the next sweep reads.
        let gone = self.removed_cgroups();
        let root = &self.v2_root;
        let index = &mut self.index;
        let observations = self.collector.sweep(
            |_| true,
            |id| {
                let path = index.resolve(id)?;
                Some(root.join(path.trim_start_matches('/')))
            },
        );
        for (id, path) in self.collector.take_made_cgroups() {
            self.index.learn(id, path);
        }
        let ids: HashSet<u64> = observations.iter().map(|o| o.key.cgroup_id).collect();
        for id in ids {
            self.attribute(id).await;
        }
        self.judge_sightings();
        self.judge_sweep(&observations);
        // Unchanged keys are already stored (with a thousand idle containers, rewriting every
        // row every sweep was most of the daemon's work).
        let records: Vec<CheckRecord> = observations
            .iter()
            .filter(|o| o.changed)
            .map(|o| record(o, &self.clock, self.call_paths.as_mut()))
            .collect();
        // A sweep that changed nothing is not written: with many idle cgroups, a transaction
        // every interval was a good part of the daemon's work.
        let losses = self.collector.losses();
        if !records.is_empty() || self.written_losses.as_ref() != Some(&losses) {
            self.store
                .write_sweep(self.session, &records, Some(&losses))
                .context("writing to the store")?;
            self.written_losses = Some(losses);
        }
        // Retired a sweep after it was found gone: its folder vanishes inside `rmdir` just
        // before the kernel copies its cells out of its storage (`cgroup_rmdir_fold`), so this
        // sweep may have found neither; the next one finds the copy.
        let settled: HashSet<u64> = gone.intersection(&self.gone_before).copied().collect();
        self.retire(&settled)?;
        self.gone_before = gone;
        if let Some(watch) = &mut self.watch {
            watch.retain_cgroups(|id| self.cgroups.contains_key(&id));
        }
        Ok(())
    }

    async fn attribute_new(&mut self) {
        for (id, path) in self.collector.take_made_cgroups() {
            self.index.learn(id, path);
        }
        for id in self.collector.take_new_cgroups() {
            self.attribute(id).await;
        }
    }

    /// Maps a cgroup id to its subject and writes the subject row (again, until a container's
    /// metadata could be read).
    async fn attribute(&mut self, cgroup_id: u64) {
        let earlier = self.cgroups.get(&cgroup_id);
        if earlier.is_some_and(|a| a.enriched) {
            return;
        }
        // Asking the engine again about every short-lived container on every sweep made sweeps
        // take seconds under churn.
        let named = earlier.is_some_and(|a| a.named);
        // What an earlier look learnt from the engine; a later look after the container is gone
        // (`--rm`) must not replace its workload with the engine-less fallback.
        let known = earlier.map(|a| (a.workload.clone(), a.name.clone()));
        let path = self.index.resolve(cgroup_id);
        let owner = path
            .as_deref()
            .map_or(Owner::Host, crate::attribute::owner_from_path);
        let mut subject = subject_of(&owner, now_ms());
        let mut enriched = true;
        let mut asked = true;
        match (&owner, path.as_deref()) {
            (Owner::Container { runtime, id, .. }, Some(path)) => {
                let look = Look {
                    cgroup_id,
                    runtime: *runtime,
                    id,
                    path,
                    named,
                };
                let Some(seen) = self.look_at_container(look, subject, known.as_ref()).await else {
                    return;
                };
                (subject, enriched, asked) = seen;
            }
            (Owner::Service { unit }, Some(path)) => {
                (subject.cap_eff, subject.cap_bnd) = self.unit_granted(unit, path).await;
            }
            _ => {}
        }
        if path.is_none() {
            // Removed before its path could be learnt (its mkdir record lost, or made before the
            // daemon started): its checks stay visible under its id, apart from the host's.
            subject = unattributed(cgroup_id, subject.first_seen_ms);
            enriched = true;
            if let Some(watch) = &self.watch {
                watch.count_unattributed();
            }
            log::warn!("cgroup {cgroup_id} was removed before its path could be learnt");
        }
        self.store_subject(cgroup_id, subject, path, Some((enriched, asked, known)));
    }

    /// A container's subject with what its engine and its processes say: (subject, enriched,
    /// asked), or None when there is nothing to write (nothing new, or a pod's sandbox, stored
    /// here as its runtime's service).
    async fn look_at_container(
        &mut self,
        look: Look<'_>,
        mut subject: Subject,
        known: Option<&(Option<String>, Option<String>)>,
    ) -> Option<(Subject, bool, bool)> {
        // What its processes hold: the fallback where the engine's record says nothing.
        let (eff, bnd) = crate::kernel::cgroup::granted_caps(&self.v2_root, look.path);
        subject.cap_eff = eff;
        subject.cap_bnd = bnd;
        subject.running = true;
        if look.named && eff.is_none() {
            // Nothing new to write: its processes are still not seen (or gone), and the engine
            // had no granted set to give.
            return None;
        }
        let mut engine_granted = None;
        let mut asked = true;
        // Ask the engine until it answers; a container it does not know (or with no engine to
        // ask) will not be known any better next time.
        if !look.named {
            match self.ask_engine(&look, &mut subject).await {
                Asked::Answered(granted) => engine_granted = granted,
                Asked::Sandbox => return None,
                Asked::Unreachable => asked = false,
            }
        }
        if subject.workload.is_none() && known.is_none_or(|k| k.0.is_none()) {
            // Without the engine, the container is its own workload.
            subject.workload = Some(format!("container:{}", short_id(look.id)));
        }
        if let Some(g) = engine_granted {
            // The engine's record outlives the processes, and a `docker exec --privileged`
            // process holds more than the container was granted.
            if (bnd.unwrap_or(0) | eff.unwrap_or(0)) & !g.0 != 0 {
                log::debug!(
                    "container {}: processes hold more than its engine granted",
                    look.id
                );
            }
            subject.cap_bnd = Some(g.0);
            subject.cap_eff = eff.map(|e| e & g.0);
        }
        let enriched = asked && (eff.is_some() || engine_granted.is_some());
        self.running.insert(subject.key.clone());
        Some((subject, enriched, asked))
    }

    /// Names the container in `subject` from its engine's record (and returns the granted set
    /// the record holds); a pod's sandbox is stored as its runtime's service.
    async fn ask_engine(&mut self, look: &Look<'_>, subject: &mut Subject) -> Asked {
        let asked = match self.engines.identify(look.runtime, look.id).await {
            Ok(Some(Identity::Named {
                name,
                image,
                labels,
                workload,
                granted,
            })) => {
                subject.name = Some(name);
                subject.image = Some(image);
                subject.workload = Some(workload);
                subject.labels = labels;
                Asked::Answered(granted)
            }
            Ok(Some(Identity::Infrastructure { unit })) => {
                // A pod's sandbox: its checks are the runtime's, as a monitor's are.
                let service = subject_of(&Owner::Service { unit }, now_ms());
                self.store_subject(look.cgroup_id, service, Some(look.path.to_owned()), None);
                Asked::Sandbox
            }
            Ok(None) => Asked::Answered(None),
            Err(e) => {
                log::debug!("{e}");
                Asked::Unreachable
            }
        };
        if self.engines.take_change()
            && let Err(e) = self.store.set_engines(self.engines.statuses())
        {
            log::warn!("storing the engines' state: {e}");
        }
        asked
    }

    /// What a service's unit grants, for `capspy ls` to say what could be dropped: from its
    /// settings, which do not depend on a process being alive when first seen; else (no systemd
    /// managing this host) what its processes hold.
    async fn unit_granted(&self, unit: &str, path: &str) -> (Option<u64>, Option<u64>) {
        match crate::attribute::systemd::unit_caps(unit).await {
            Some(caps) => (Some(caps.effective.0), Some(caps.bounding.0)),
            None => crate::kernel::cgroup::granted_caps(&self.v2_root, path),
        }
    }

    /// Writes the subject row and remembers what became of the cgroup. `progress` is (enriched,
    /// named, what an earlier look learnt) for containers still being asked about; None when
    /// nothing more is to be learnt.
    #[expect(
        clippy::type_complexity,
        reason = "private plumbing of attribute()'s state"
    )]
    fn store_subject(
        &mut self,
        cgroup_id: u64,
        subject: Subject,
        path: Option<String>,
        progress: Option<(bool, bool, Option<(Option<String>, Option<String>)>)>,
    ) {
        let (enriched, named, known) = progress.unwrap_or((true, true, None));
        if let Err(e) = self.store.upsert_subject(cgroup_id, &subject) {
            log::warn!("storing subject {}: {e}", subject.key);
            return;
        }
        let container = subject.kind == SubjectKind::Container;
        self.cgroups.insert(
            cgroup_id,
            Attributed {
                key: subject.key,
                path,
                enriched,
                named,
                workload: subject
                    .workload
                    .filter(|_| container)
                    .or_else(|| known.as_ref().and_then(|k| k.0.clone())),
                name: subject.name.or_else(|| known.and_then(|k| k.1)),
            },
        );
    }

    /// Attributed cgroups that no longer exist (or whose path was never known).
    fn removed_cgroups(&self) -> HashSet<u64> {
        let root = &self.v2_root;
        self.cgroups
            .iter()
            .filter(|(_, a)| {
                a.path
                    .as_deref()
                    .is_none_or(|p| !root.join(p.trim_start_matches('/')).exists())
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Cgroups found gone before the sweep whose final counts were just written: their kernel
    /// map entries and memory are freed (container churn must not fill the map), and a
    /// container none of whose cgroups remain has ended.
    fn retire(&mut self, gone: &HashSet<u64>) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let keys: HashSet<String> = gone
            .iter()
            .filter_map(|id| self.cgroups.get(id))
            .map(|a| a.key.clone())
            .collect();
        self.cgroups.retain(|id, _| !gone.contains(id));
        self.collector.forget_cgroups(gone);
        for key in keys {
            let remaining = self.cgroups.values().any(|a| a.key == key);
            if !remaining && self.running.remove(&key) {
                self.store.mark_ended(&key, now_ms())?;
            }
        }
        Ok(())
    }
}

/// `capspy watch`: drift detection on first sightings, with the sweep as the fallback.
impl Recorder {
    /// Judges every check against `watch`'s baselines from now on.
    pub fn watch(&mut self, watch: Watch) {
        self.collector.keep_sightings();
        self.watch = Some(watch);
    }

    pub fn watching(&self) -> Option<&Watch> {
        self.watch.as_ref()
    }

    fn judge_sightings(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        for (key, stats) in self.collector.take_sightings() {
            // Not attributed yet (its subject could not be stored): the sweep tries again.
            if let Some(a) = self.cgroups.get(&key.cgroup_id) {
                watch.on_check(who(a), &key, &stats, &self.clock, Source::RingBuffer);
            }
        }
        self.keep_alerted();
    }

    /// Stores what was just alerted, so that a restarted daemon does not alert again.
    fn keep_alerted(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        let alerted = watch.detector_mut().take_alerted();
        if let Err(e) = self.store.note_alerted(&alerted) {
            log::warn!("storing {} alert(s): {e}", alerted.len());
        }
    }

    fn judge_sweep(&mut self, observations: &[Observation]) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        for o in observations {
            if let Some(a) = self.cgroups.get(&o.key.cgroup_id) {
                watch.on_check(who(a), &o.key, &o.stats, &self.clock, Source::Sweep);
            }
        }
        watch.after_sweep(self.collector.losses(), observations.len());
        self.keep_alerted();
    }
}

fn who(a: &Attributed) -> Who<'_> {
    // A cgroup gone before it was resolved would add one label value per id.
    let label = if a.key.starts_with(UNATTRIBUTED_PREFIX) {
        "unknown"
    } else {
        a.workload.as_deref().unwrap_or(&a.key)
    };
    Who {
        label,
        container: a
            .workload
            .as_deref()
            .map(|w| (w, a.key.as_str(), a.name.as_deref())),
    }
}

/// The subject of a cgroup whose path could not be learnt: `cgroup:<id>`, of its own kind.
fn unattributed(cgroup_id: u64, now: i64) -> Subject {
    Subject {
        kind: SubjectKind::Unattributed,
        key: format!("{UNATTRIBUTED_PREFIX}{cgroup_id}"),
        ..subject_of(&Owner::Host, now)
    }
}

fn subject_of(owner: &Owner, now: i64) -> Subject {
    let (kind, key, runtime) = match owner {
        Owner::Container { runtime, id, .. } => (
            SubjectKind::Container,
            id.clone(),
            Some(runtime.to_string()),
        ),
        Owner::Service { unit } => (SubjectKind::Service, unit.clone(), None),
        Owner::Host => (SubjectKind::Host, "host".to_string(), None),
    };
    Subject {
        kind,
        key,
        runtime,
        name: None,
        image: None,
        workload: None,
        labels: std::collections::BTreeMap::new(),
        cap_eff: None,
        cap_bnd: None,
        first_seen_ms: now,
        last_seen_ms: now,
        running: false,
        ended_ms: None,
    }
}

/// The store's record of one observation.
fn record(o: &Observation, clock: &BootClock, call_paths: Option<&mut CallPaths>) -> CheckRecord {
    let row = crate::model::check::CheckRow::from_observation(o, clock, call_paths);
    CheckRecord {
        cgroup_id: o.key.cgroup_id,
        cap: o.key.cap,
        verdict: o.key.verdict,
        audit: o.key.audit,
        userns: o.key.userns,
        bucket: o.key.bucket,
        origin: o.key.origin,
        classifier: o.stats.classifier,
        count: o.stats.count,
        first_seen_ms: unix_ms(row.first_seen),
        last_seen_ms: unix_ms(row.last_seen),
        pid: o.stats.first_pid,
        tgid: o.stats.first_tgid,
        uid: o.stats.first_uid,
        comm: row.example.comm,
        call_path: row.call_path,
        exe: row.example.exe,
    }
}
