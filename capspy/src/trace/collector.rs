//! Reading what the kernel program recorded: first sightings from the ring buffer (which carry
//! the call path as evidence) and the aggregation map itself (the source of truth for counts).
//!
//! The ring buffer may drop records when it is full; the map sweep still finds every key, so a
//! lost record costs evidence, never a check.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap as StdHashMap, HashSet};

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;

use aya::maps::{CgrpStorage, HashMap, MapData, PerCpuArray, RingBuf};
use capspy_common::{
    CELLS, CheckKey, CheckStats, FirstSighting, NewCgroup, cell_of, counter, maps,
};
use tokio::io::unix::AsyncFd;

use crate::model::loss::LossCounters;
use crate::model::text::kernel_string;
use crate::model::time::boot_ns;
use crate::trace::hook::{Aggregation, HookError, Tracer};

/// One aggregation key with its counts, as the kernel holds it.
#[derive(Clone, Debug)]
pub struct Observation {
    pub key: CheckKey,
    pub stats: CheckStats,
    /// Kernel return addresses of the first check, innermost first (empty if its ring buffer
    /// record was lost).
    pub stack: Vec<u64>,
    /// The first process's executable, for the workload's non-root processes (read by the kernel
    /// program with the first sighting; None if unknown or the record was lost).
    pub exe: Option<String>,
    /// Whether the count or the call path differs from the previous sweep's (true the first
    /// time): the daemon writes only these. A call path can arrive a sweep after its key (the
    /// ring buffer record follows the map insert).
    pub changed: bool,
}

/// The cgroup storage object's maps: live cgroups' cells, and removed cgroups' (copied by
/// `cgroup_rmdir_fold` before their storage is freed).
struct Cells {
    live: CgrpStorage<MapData, [u64; CELLS]>,
    folded: HashMap<MapData, u64, [u64; CELLS]>,
    /// Open cgroup directories, the key to `live`: opening one costs tens of µs (a path walk),
    /// which every sweep would pay per cgroup. At most `max_open` (see [`open_cgroups_limit`]);
    /// beyond, one is opened for the read and closed.
    open: StdHashMap<u64, std::fs::File>,
    max_open: usize,
}

impl Cells {
    /// A cgroup's cells: folded at its removal if there are, else its storage.
    fn read(
        &mut self,
        cgroup: u64,
        dir: &mut impl FnMut(u64) -> Option<PathBuf>,
    ) -> Option<[u64; CELLS]> {
        if let Ok(folded) = self.folded.get(&cgroup, 0) {
            return Some(folded);
        }
        if let Some(file) = self.open.get(&cgroup) {
            return self.live.get(file, 0).ok();
        }
        let file = std::fs::File::open(dir(cgroup)?).ok()?;
        let counts = self.live.get(&file, 0).ok();
        if self.open.len() < self.max_open {
            self.open.insert(cgroup, file);
        }
        counts
    }
}

/// Files kept for everything else the daemon opens (its maps and programs, the store, engine
/// sockets) when it keeps cgroup directories open.
const SPARE_FILES: usize = 512;
/// The most cgroup directories kept open, whatever the limit on open files.
const OPEN_CGROUPS_MAX: usize = 16_384;

/// How many cgroup directories to keep open: the soft limit on open files (1024 by default,
/// often far more under a container engine or a login shell) less [`SPARE_FILES`], at most
/// [`OPEN_CGROUPS_MAX`]. Beyond it each sweep opens the others again: measured with 1,000
/// cgroups and 512 kept, those opens were 7.6% of the idle daemon's CPU.
fn open_cgroups_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    soft.saturating_sub(SPARE_FILES).min(OPEN_CGROUPS_MAX)
}

pub struct Collector {
    checks: HashMap<MapData, CheckKey, CheckStats>,
    /// `checks` again, for batch lookups; None once they failed.
    checks_fd: Option<OwnedFd>,
    /// The common checks' counts per cgroup, with the cgroup storage object (see
    /// `capspy-ebpf/src/storage.rs`): a key's count is its hash count plus its cell.
    cells: Option<Cells>,
    sightings: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    stacks: StdHashMap<CheckKey, Vec<u64>>,
    exes: StdHashMap<CheckKey, String>,
    /// Per key, what the last sweep saw: see [`Seen`].
    latest: StdHashMap<CheckKey, Seen>,
    /// cgroups of first sightings not yet handed out by [`Collector::take_new_cgroups`].
    new_cgroups: Vec<u64>,
    /// Cgroup v2 directories as the kernel made them, when the `cgroup_mkdir` program attached.
    /// Watched like `sightings`: a burst of short-lived cgroups that make no new key would
    /// otherwise fill the ring between two sweeps, and a lost record leaves only a walk, which
    /// cannot find a cgroup already removed.
    made_cgroups: Option<AsyncFd<RingBuf<MapData>>>,
    made_paths: Vec<(u64, String)>,
    /// First sightings kept for [`Collector::take_sightings`]; None unless asked for (drift).
    sightings_out: Option<Vec<(CheckKey, CheckStats)>>,
}

impl Collector {
    pub fn new(tracer: &mut Tracer) -> Result<Self, HookError> {
        let (checks, checks_fd) = tracer.take_hash_map(maps::CHECKS)?;
        let sightings: RingBuf<MapData> = tracer.take_map(maps::SIGHTINGS)?;
        let counters = tracer.take_map(maps::COUNTERS)?;
        // SAFETY: the ring buffer owns its map fd, which stays open as long as the AsyncFd
        // owns the ring buffer.
        let sightings =
            unsafe { AsyncFd::register_with_interest(sightings, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let cells = match tracer.aggregation {
            Aggregation::CgroupStorage => Some(Cells {
                live: tracer.take_map(maps::CHECK_CELLS)?,
                folded: tracer.take_map(maps::FOLDED_CELLS)?,
                open: StdHashMap::new(),
                max_open: open_cgroups_limit(),
            }),
            Aggregation::Hash(_) => None,
        };
        Ok(Self {
            checks,
            checks_fd: Some(checks_fd),
            cells,
            sightings,
            counters,
            stacks: StdHashMap::new(),
            exes: StdHashMap::new(),
            latest: StdHashMap::new(),
            new_cgroups: Vec::new(),
            made_cgroups: tracer
                .take_map::<RingBuf<MapData>>(maps::NEW_CGROUPS)
                .ok()
                // SAFETY: as for `sightings`.
                .and_then(|ring| {
                    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                        .ok()
                }),
            made_paths: Vec::new(),
            sightings_out: None,
        })
    }

    /// Waits until the ring buffer has records, then takes them all.
    pub async fn next_sightings(&mut self) -> std::io::Result<()> {
        match &self.made_cgroups {
            Some(made) => tokio::select! {
                guard = self.sightings.readable_mut() => guard?.clear_ready(),
                guard = made.readable() => guard?.clear_ready(),
            },
            None => self.sightings.readable_mut().await?.clear_ready(),
        }
        self.drain_sightings();
        Ok(())
    }

    /// Takes every record now in the ring buffers, without waiting.
    pub fn drain_sightings(&mut self) {
        self.drain_first_sightings();
        self.drain_made_cgroups();
    }

    /// Reads the `cgroup_mkdir` ring: call it *after* whatever named the cgroup ids to resolve
    /// (a sighting, a map sweep). The kernel submits a cgroup's record before the folder is
    /// even visible (`cgroup_mkdir` fires its tracepoint before `kernfs_activate`,
    /// <https://github.com/torvalds/linux/blob/v6.18/kernel/cgroup/cgroup.c>), so before any
    /// process can enter it and make a check: every id read before this call has its
    /// record in the ring by then (unless the ring was full). Read before them, the record of a
    /// cgroup made in between would come a drain late, and a cgroup already removed by then
    /// could only be looked for by a walk, which cannot find it.
    fn drain_made_cgroups(&mut self) {
        if let Some(ring) = &mut self.made_cgroups {
            let ring = ring.get_mut();
            while let Some(item) = ring.next() {
                if let Some(made) = decode::<NewCgroup>(&item) {
                    self.made_paths.push((made.id, kernel_string(&made.path)));
                }
            }
        }
    }

    fn drain_first_sightings(&mut self) {
        let ring = self.sightings.get_mut();
        while let Some(item) = ring.next() {
            if let Some(sighting) = decode::<FirstSighting>(&item) {
                let stack = sighting
                    .stack
                    .iter()
                    .copied()
                    .take_while(|a| *a != 0)
                    .collect();
                self.stacks.insert(sighting.key, stack);
                if let Some(exe) = sighting.exe_path() {
                    self.exes.insert(sighting.key, exe);
                }
                self.new_cgroups.push(sighting.key.cgroup_id);
                if let Some(out) = &mut self.sightings_out {
                    out.push((sighting.key.merged(), sighting.stats));
                }
            }
        }
    }

    /// Reads the aggregation map: every key whose cgroup passes `want`. `last_ns` is the time of
    /// the sweep that first saw the current count (exact for a key checked once). `dir` gives a
    /// cgroup's directory, to read its cells by (with the cgroup storage object).
    pub fn sweep(
        &mut self,
        want: impl Fn(u64) -> bool,
        dir: impl FnMut(u64) -> Option<PathBuf>,
    ) -> Vec<Observation> {
        self.drain_first_sightings();
        let now = boot_ns();
        let mut entries = self.read_checks();
        entries.retain(|(key, _)| want(key.cgroup_id));
        self.add_cells(&mut entries, dir);
        let mut out: BTreeMap<CheckKey, Observation> = BTreeMap::new();
        for (key, mut stats) in entries {
            // A key made for its cell whose cell could not be read yet: the next sweep reads it
            // (or the hash holds it once the cgroup is removed).
            if stats.count == 0 {
                continue;
            }
            let stack = self.stacks.get(&key).cloned().unwrap_or_default();
            let (last_ns, changed) =
                date_latest(&mut self.latest, key, &stats, !stack.is_empty(), now);
            stats.last_ns = last_ns;
            let o = Observation {
                key: key.merged(),
                stats,
                stack,
                exe: self.exes.get(&key).cloned(),
                changed,
            };
            match out.entry(o.key) {
                Entry::Vacant(v) => {
                    v.insert(o);
                }
                Entry::Occupied(mut e) => merge(e.get_mut(), o),
            }
        }
        // After the map: cgroups made while it was read are among its keys.
        self.drain_made_cgroups();
        out.into_values().collect()
    }

    /// Every entry of the hash map, in batches where the kernel can.
    fn read_checks(&mut self) -> Vec<(CheckKey, CheckStats)> {
        let mut entries = Vec::new();
        if let Some(fd) = &self.checks_fd {
            match super::batch::lookup_all(fd.as_fd(), &mut entries) {
                Ok(()) => return entries,
                Err(e) => {
                    // Every kernel with the ring buffer (5.8) has them (5.6): not expected.
                    log::warn!("batch lookups of the checks map: {e}; iterating it instead");
                    self.checks_fd = None;
                }
            }
        }
        // Entries can be added while iterating; iteration errors only end this sweep early, and
        // the next sweep reads the same keys again.
        for entry in &self.checks {
            let Ok(entry) = entry else { break };
            entries.push(entry);
        }
        entries
    }

    /// Adds each common key's cell to its hash count, one read per cgroup: its cells folded at
    /// its removal if there are, else its storage (by an fd of its directory), in that order (see
    /// `cgroup_rmdir_fold` for why it never counts a check twice). The entries are grouped by
    /// cgroup so that one cgroup's cells (4 KiB) are held at a time: a table of every cgroup's
    /// was megabytes allocated, faulted in and freed on each sweep.
    fn add_cells(
        &mut self,
        entries: &mut [(CheckKey, CheckStats)],
        mut dir: impl FnMut(u64) -> Option<PathBuf>,
    ) {
        let Some(cells) = &mut self.cells else { return };
        entries.sort_unstable_by_key(|(key, _)| key.cgroup_id);
        for group in entries.chunk_by_mut(|a, b| a.0.cgroup_id == b.0.cgroup_id) {
            let cgroup = group[0].0.cgroup_id;
            if group.iter().all(|(key, _)| cell_of(key).is_none()) {
                continue;
            }
            let Some(counts) = cells.read(cgroup, &mut dir) else {
                continue;
            };
            for (key, stats) in group {
                if let Some(index) = cell_of(key) {
                    stats.count = stats.count.saturating_add(counts[index]);
                }
            }
        }
    }

    /// Removes every kernel map entry of these cgroups (after their final counts were stored).
    pub fn forget_cgroups(&mut self, cgroups: &HashSet<u64>) {
        let doomed: Vec<CheckKey> = self
            .checks
            .keys()
            .filter_map(Result::ok)
            .filter(|k| cgroups.contains(&k.cgroup_id))
            .collect();
        if let Some(cells) = &mut self.cells {
            for id in cgroups {
                // Only removed cgroups with cells have an entry.
                let _ = cells.folded.remove(id);
                cells.open.remove(id);
            }
        }
        for key in &doomed {
            // Already gone is fine: nothing else removes entries.
            let _ = self.checks.remove(key);
            self.stacks.remove(key);
            self.exes.remove(key);
            self.latest.remove(key);
        }
    }

    /// Entries in the kernel map now.
    pub fn entries(&self) -> usize {
        self.checks.keys().filter_map(Result::ok).count()
    }

    /// Cgroup v2 directories made since the last call, with their paths.
    pub fn take_made_cgroups(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.made_paths)
    }

    /// The cgroups of first sightings since the last call, each once.
    pub fn take_new_cgroups(&mut self) -> Vec<u64> {
        let mut ids = std::mem::take(&mut self.new_cgroups);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Keeps first sightings (key, first process) for [`Collector::take_sightings`].
    pub fn keep_sightings(&mut self) {
        self.sightings_out.get_or_insert_with(Vec::new);
    }

    /// First sightings since the last call, in arrival order (empty unless kept).
    pub fn take_sightings(&mut self) -> Vec<(CheckKey, CheckStats)> {
        self.sightings_out
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn losses(&self) -> LossCounters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map_or(0, |values| values.iter().sum())
        };
        LossCounters {
            sightings_lost: sum(counter::SIGHTINGS_LOST),
            checks_overflow: sum(counter::CHECKS_OVERFLOW),
            unclassified: sum(counter::UNCLASSIFIED),
            cgroups_lost: sum(counter::CGROUPS_LOST),
        }
    }
}

/// Adds the kernel entry `o` to `into`, both of one merged key (advisory checks the kernel kept
/// apart per syscall, see [`CheckKey::syscall`]): counts add up, the first process and call
/// path are the earliest check's that has a call path.
fn merge(into: &mut Observation, o: Observation) {
    let count = into.stats.count.saturating_add(o.stats.count);
    let last_ns = into.stats.last_ns.max(o.stats.last_ns);
    let changed = into.changed || o.changed;
    let rank = |x: &Observation| (x.stack.is_empty(), x.stats.first_ns);
    if rank(&o) < rank(into) {
        let first_ns = into.stats.first_ns.min(o.stats.first_ns);
        *into = o;
        into.stats.first_ns = first_ns;
    } else {
        into.stats.first_ns = into.stats.first_ns.min(o.stats.first_ns);
    }
    into.stats.count = count;
    into.stats.last_ns = last_ns;
    into.changed = changed;
}

/// What a sweep saw of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    count: u64,
    /// When the count became `count` (boot ns): the kernel does not date repeated checks, see
    /// [`CheckStats::last_ns`].
    at: u64,
    has_stack: bool,
}

/// When the latest check of `key` happened, as well as a sweep at `now` can tell, and whether
/// the key changed since the previous sweep.
fn date_latest(
    latest: &mut StdHashMap<CheckKey, Seen>,
    key: CheckKey,
    stats: &CheckStats,
    has_stack: bool,
    now: u64,
) -> (u64, bool) {
    let previous = latest.get(&key).copied();
    let at = match previous {
        Some(p) if p.count == stats.count => p.at,
        // Checked once: the kernel's first time is the latest. More: some time up to now.
        None if stats.count <= 1 => stats.first_ns,
        _ => now,
    };
    let seen = Seen {
        count: stats.count,
        at,
        has_stack,
    };
    latest.insert(key, seen);
    (at, previous != Some(seen))
}

/// Copies a ring buffer record out, if it has the expected size.
fn decode<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: T is plain repr(C) data (Pod); any bit pattern is a valid value and the length
    // was checked. The record may be unaligned, hence read_unaligned.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(count: u64, first_ns: u64) -> CheckStats {
        CheckStats {
            count,
            first_ns,
            last_ns: first_ns,
            first_pid: 1,
            first_tgid: 1,
            first_uid: 0,
            classifier: 0,
            padding: [0; 3],
            first_comm: [0; 16],
        }
    }

    #[test]
    fn latest_check_is_dated_by_the_sweep_that_saw_the_count_change() {
        let key = |cap| CheckKey {
            cgroup_id: 7,
            cap,
            verdict: 0,
            audit: 0,
            userns: 0,
            bucket: 0,
            origin: 0,
            syscall: 0,
        };
        let mut latest = StdHashMap::new();
        let mut sweep =
            |cap, count, now| date_latest(&mut latest, key(cap), &stats(count, 100), true, now);
        // One check: its own time.
        assert_eq!(sweep(1, 1, 1_000), (100, true));
        // Already several when first swept: the sweep's time.
        assert_eq!(sweep(2, 5, 1_000), (1_000, true));
        // Unchanged counts keep their time; a changed one takes the new sweep's.
        assert_eq!(sweep(1, 1, 2_000), (100, false));
        assert_eq!(sweep(2, 5, 2_000), (1_000, false));
        assert_eq!(sweep(2, 9, 3_000), (3_000, true));
        assert_eq!(sweep(1, 2, 3_000), (3_000, true));
    }

    #[test]
    fn advisory_entries_of_several_syscalls_merge_into_one_row() {
        let obs = |syscall, count, first_ns, stack: Vec<u64>| Observation {
            key: CheckKey {
                cgroup_id: 7,
                cap: 21,
                verdict: 0,
                audit: 1,
                userns: 0,
                bucket: 0,
                origin: 0,
                syscall,
            }
            .merged(),
            stats: stats(count, first_ns),
            stack,
            exe: None,
            changed: syscall == 3,
        };
        let mut row = obs(1, 5, 200, vec![0xffff_0001]);
        // Earlier, but its ring buffer record was lost: the example stays the one with a stack.
        merge(&mut row, obs(2, 3, 100, Vec::new()));
        assert_eq!((row.stats.count, row.stats.first_ns), (8, 100));
        assert_eq!(row.stack, [0xffff_0001]);
        // Earlier and with a stack: it becomes the example.
        merge(&mut row, obs(3, 1, 50, vec![0xffff_0002]));
        assert_eq!((row.stats.count, row.stats.first_ns), (9, 50));
        assert_eq!(row.stack, [0xffff_0002]);
        assert!(row.changed);
        assert_eq!(row.key.syscall, 0);
    }

    #[test]
    fn a_call_path_arriving_late_is_a_change() {
        let key = CheckKey {
            cgroup_id: 7,
            cap: 1,
            verdict: 0,
            audit: 0,
            userns: 0,
            bucket: 0,
            origin: 0,
            syscall: 0,
        };
        let mut latest = StdHashMap::new();
        let mut sweep =
            |has_stack, now| date_latest(&mut latest, key, &stats(1, 100), has_stack, now);
        assert_eq!(sweep(false, 1_000), (100, true));
        assert_eq!(sweep(true, 2_000), (100, true));
        assert_eq!(sweep(true, 3_000), (100, false));
    }
}
