//! The prose under the tables; its numbers and verdicts are the run's own.

use std::fmt::Write as _;

use super::cost::Variant;
use super::report::{
    BPFTRACE_TARGET, CPU_TARGET, FLOOR_TARGET, READ_TARGET_SECS, RSS_TARGET_KIB, Report, group,
    kib, mb, median, min_max,
};
use super::stages::STAGES;
use super::workloads::{FIGURES, Figure, WORKS};

impl Report {
    pub(super) fn reading_note(&self) -> String {
        let mut out = String::from(
            "`capspy ls` computes one profile per workload and per running container, one \
             indexed query each, so it grows with the number of workloads; `capspy profile` \
             reads one workload.",
        );
        for (shown, times, cpu) in &self.reading.commands {
            let (wall, cpu) = (median(times), median(cpu));
            if wall >= READ_TARGET_SECS && cpu < READ_TARGET_SECS {
                let _ = write!(
                    out,
                    " `{shown}` missed the target in wall time ({:.0} ms) while its CPU time was \
                     {:.0} ms: the machine was shared (see the load average above), so on an idle \
                     machine it answers in about its CPU time.",
                    wall * 1e3,
                    cpu * 1e3
                );
            } else if cpu >= READ_TARGET_SECS {
                let _ = write!(
                    out,
                    " `{shown}` needs {:.0} ms of CPU: a single query for all workloads (the \
                     store has `checks_by_workload` for that) instead of one per workload would \
                     remove most of it.",
                    cpu * 1e3
                );
            }
        }
        out
    }

    pub(super) fn inside(&self, v: Variant) -> f64 {
        self.inside
            .programs
            .iter()
            .find(|(p, _)| *p == v)
            .map_or(f64::NAN, |p| p.1)
    }

    /// A hot-path piece's cost over the empty bpftrace program.
    pub(super) fn helper(&self, name: &str) -> f64 {
        let empty = self.inside.helpers.first().map_or(0.0, |h| h.1);
        self.inside
            .helpers
            .iter()
            .find(|h| h.0 == name)
            .map_or(f64::NAN, |h| (h.1 - empty).max(0.0))
    }

    /// The prose under the tables; its numbers and verdicts are this run's.
    pub(super) fn analysis(&self) -> String {
        format!(
            "{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n{}\n\n**Reading.** {}\n\n{}\n",
            self.per_check_note(),
            self.hot_path_note(),
            self.aggregation_note(),
            self.stages_note(),
            self.mmap_note(),
            self.daemon_note(),
            self.scale_note(),
            self.reading_note(),
            self.workloads_note(),
        )
    }

    fn per_check_note(&self) -> String {
        let d = self.derived();
        let floor = d.median_added(Variant::Floor);
        let bpftrace = d.median_added(Variant::Bpftrace);
        let third_note = if floor >= bpftrace / 3.0 {
            format!(
                " That is less than the floor itself adds ({floor:.0} ns): on this machine no \
                 program on capspy's hook, however small, can be within a third of \
                 bpftrace's cost, so the two targets cannot both be met here{}.",
                if d.floor_ratio() <= FLOOR_TARGET {
                    "; capspy meets the one measured against its own hook"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        };
        format!(
            "**Per check.** capspy adds {capspy:.0} ns to a check; the floor adds {floor:.0} ns, \
             bpftrace {bpftrace:.0} ns and per-event streaming {stream:.0} ns. capspy/floor is \
             {fr:.1} (target ≤ {FLOOR_TARGET}: {fv}); capspy/bpftrace is {br:.2} (target ≤ 0.33: {bv}). The \
             floor's added cost is almost only the hook itself (the tp_btf trampoline around a \
             one-instruction program), so {FLOOR_TARGET}× the floor leaves capspy about {budget:.0} ns for its \
             own work over the hook's; bpftrace's one-liner pays the classic tracepoint (the event record is built \
             before the program runs) and a hash update, which sets a third of it at {third:.0} ns.\
             {third_note}",
            capspy = d.median_added(Variant::Capspy),
            stream = d.median_added(Variant::Stream),
            fr = d.floor_ratio(),
            br = d.bpftrace_ratio(),
            fv = verdict(d.floor_ratio() <= FLOOR_TARGET),
            bv = verdict(d.bpftrace_ratio() <= BPFTRACE_TARGET),
            budget = (FLOOR_TARGET - 1.0) * floor,
            third = bpftrace / 3.0,
        )
    }

    /// The CHECKS hash lookup on capspy's 16-byte key lies between a map add on one trivial key
    /// and bpftrace's lookup-and-update on its (cgroup, cap, ret) key less the cgroup id:
    /// (low, high) in ns.
    fn hash_range(&self) -> (f64, f64) {
        let low = self.helper("hash map add, one global key");
        let high = (self.helper("the one-liner: key (cgroup, cap, ret), hash map add")
            - self.helper("cgroup id"))
        .max(low);
        (low, high)
    }

    fn hot_path_note(&self) -> String {
        let pieces = [
            ("`bpf_get_current_cgroup_id`", self.helper("cgroup id")),
            ("`bpf_get_current_pid_tgid`", self.helper("pid/tgid")),
        ];
        let (hash_low, hash_high) = self.hash_range();
        let others: f64 = pieces.iter().map(|p| p.1).sum();
        let mut ranked = pieces.to_vec();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut list = String::new();
        let _ = writeln!(
            list,
            "- the CHECKS hash lookup on the 16-byte key, then the atomic add: ~{hash_low:.0}–\
             {hash_high:.0} ns (a map add on one trivial key; bpftrace's lookup and update on its \
             (cgroup, cap, ret) key, less the cgroup id)"
        );
        for (what, ns) in &ranked {
            let _ = writeln!(list, "- {what}: ~{ns:.0} ns");
        }
        format!(
            "**Where capspy's time goes.** Inside its program a check takes {ic:.0} ns against \
             {ifl:.0} ns for the floor's (kernel BPF stats; both include the stats' own two \
             clock reads), so about {extra:.0} ns of capspy's work per check. Its hot path calls, \
             with what each costs on this machine (bpftrace bodies over an empty one, same \
             stats; together ~{lo:.0}–{hi:.0} ns, the rest being the program's own instructions: \
             building the key, branches, bounds checks):\n\n{list}\
             - `bpf_get_current_task_btf` and `bpf_task_pt_regs`, then plain loads through \
             those BTF pointers of `task->real_cred` (borrowed credentials), the first 8 bytes \
             of `task->comm` (runtime bucket) and `orig_ax` (syscall number for the call-site \
             class): instructions the verifier guards, not helper calls (a \
             `bpf_probe_read_kernel` would cost ~{probe:.0} ns each)\n\
             - two inlined array lookups (call-site class, user namespace) and the \
             runtime-comm compare: ~1 ns each\n\n\
             The clock (`bpf_ktime_get_boot_ns`, ~{ktime:.0} ns here) and the whole process name \
             (`bpf_get_current_comm`, ~{comm:.0} ns) are read only for a key's first check: the \
             daemon dates the latest check by the sweep that sees its count change.\n\n\
             On the hash path what is left is the aggregation itself, the cgroup id and the \
             hash update (a per-CPU hash would drop the atomic, which only matters with many \
             CPUs sharing a hot key); the common checks skip both once their key is known \
             (cgroup local storage: sections 1c and 1d). {reach}",
            ic = self.inside(Variant::Capspy),
            ifl = self.inside(Variant::Floor),
            extra = self.inside(Variant::Capspy) - self.inside(Variant::Floor),
            lo = others + hash_low,
            hi = others + hash_high,
            probe = self.helper("probe_read (task->real_cred)"),
            ktime = self.helper("ktime"),
            comm = self.helper("comm"),
            reach = self.reach_note(),
        )
    }

    /// Whether the aggregation's core (cgroup id and hash update) leaves room under the target.
    fn reach_note(&self) -> String {
        let d = self.derived();
        let floor = d.median_added(Variant::Floor);
        let (hash_low, hash_high) = self.hash_range();
        let core_low = self.helper("cgroup id") + hash_low;
        let core_high = self.helper("cgroup id") + hash_high;
        if d.floor_ratio() <= FLOOR_TARGET {
            format!(
                "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                 {floor:.0} ns; the rest of capspy's work fits the ≤ {FLOOR_TARGET}× budget in this run."
            )
        } else if core_low >= floor {
            format!(
                "Those two cost at least ~{core_low:.0} ns here, as much as the floor's whole \
                 {floor:.0} ns, so ≤ {FLOOR_TARGET}× the floor is out of reach for a tracer that \
                 aggregates by cgroup in the kernel."
            )
        } else if core_high >= floor {
            format!(
                "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                 {floor:.0} ns: ≤ {FLOOR_TARGET}× the floor leaves almost no room for the key's \
                 classification (audit class, bucket, user namespace)."
            )
        } else {
            format!(
                "Those two cost ~{core_low:.0}–{core_high:.0} ns here against the floor's \
                 {floor:.0} ns; the rest of the excess is the key's classification (audit \
                 class, bucket, user namespace)."
            )
        }
    }

    fn mmap_note(&self) -> String {
        let mmap = self
            .derived()
            .mmap_added
            .get(&Variant::Capspy)
            .map_or(f64::NAN, |x| median(x));
        format!(
            "**The common check.** The overcommit check made by every private writable mmap \
             costs {mmap:.0} ns added with capspy ({im:.0} ns inside the program): its call-site \
             cache answers the audit class from an array, so it costs what a setuid check does. \
             A tracer that read the stack on every check to tell advisory from audited checks \
             would pay `bpf_get_stack` every time.",
            im = self.inside.capspy_mmap,
        )
    }

    fn daemon_note(&self) -> String {
        let dc = &self.daemon;
        let profile = if dc.profile.top.is_empty() {
            "(perf was not installed, so no profile)".to_owned()
        } else {
            format!(
                "its hottest functions under the load were {}.",
                dc.profile.hottest()
            )
        };
        let scale_profile = if self.scale.profile.top.is_empty() {
            String::new()
        } else {
            format!("; hottest there: {}", self.scale.profile.hottest())
        };
        let peak_note = if dc.attach_hwm_kib + 1024 >= dc.hwm_kib {
            format!(
                "the peak was already reached when it had attached ({:.1} MB), so it comes \
                 from starting up (the kernel's BTF and symbol table are read then), not \
                 from the load.",
                mb(dc.attach_hwm_kib)
            )
        } else {
            format!(
                "the peak grew after attaching ({:.1} MB then), under the load.",
                mb(dc.attach_hwm_kib)
            )
        };
        format!(
            "**The daemon.** {cpu:.2}% of a core at {rate} checks per second (target < 1%: \
             {cv}); its CPU does not depend on the check rate (the kernel aggregates) but on \
             what it does once per sweep: read every key of the map and write (and symbolize) only the \
             keys whose count changed since the last sweep; {profile} Holding the keys of {n} \
             containers, the idle daemon took {idle:.2}% of a core{scale_profile}: reading the \
             map key by key (one syscall each) and checking that each cgroup still exists. \
             Resident memory {rss:.1} MB ({anon:.1} \
             MB anonymous, {file:.1} MB of mapped binary), peak {hwm:.1} MB (target < 30 MB: \
             steady {rv}, peak {hv}); {peak_note}",
            cpu = dc.cpu_ticks * 100.0,
            rate = group(dc.checks_per_sec),
            cv = verdict(dc.cpu_ticks < CPU_TARGET && dc.cpu_sched < CPU_TARGET),
            n = self.scale.cgroups,
            idle = self.scale.idle_cpu * 100.0,
            rss = mb(dc.rss_kib),
            anon = mb(dc.anon_kib),
            file = mb(dc.file_kib),
            hwm = mb(dc.hwm_kib),
            rv = verdict(dc.rss_kib < RSS_TARGET_KIB),
            hv = verdict(dc.hwm_kib < RSS_TARGET_KIB),
        )
    }

    fn scale_note(&self) -> String {
        let checks_map = self.scale.maps.iter().find(|m| m.name == "CHECKS");
        let churn = match (
            checks_map.and_then(|m| m.entries),
            self.scale.keys_after_removal,
        ) {
            (Some(before), Some(after)) if after < before / 2 => format!(
                "The daemon frees the keys of removed cgroups once their final counts are \
                 stored ({} keys with the cgroups, {} two sweeps after they were removed), \
                 so container churn does not fill it.",
                group(before),
                group(after)
            ),
            (Some(before), Some(after)) => format!(
                "The keys of removed cgroups stay ({} keys with the cgroups, {} two sweeps \
                 after they were removed), so a host with container churn fills it over time.",
                group(before),
                group(after)
            ),
            _ => "(Without bpftool the bench cannot count entries to see whether removed \
                  cgroups' keys are freed.)"
                .to_owned(),
        };
        format!(
            "**Scale and full maps.** {exact} of {n} concurrent cgroups were attributed exactly. \
             CHECKS is a preallocated hash: {memlock} whatever the number of containers, {max} \
             keys, one per (cgroup, capability, verdict, audit class, user namespace, bucket) \
             seen; a container makes a handful, so thousands of live containers fit. {churn} \
             When it is full, a check whose key is new is \
             not stored: the kernel counts it in COUNTERS (`CHECKS_OVERFLOW`), which `capspy \
             run` reports as `losses.checks_overflow`; keys already in the map keep counting. \
             The daemon keeps the same counters for \
             each session in the store. \
             KPROBE_ARGS has one entry unless the kprobe method is the one attached.",
            exact = self.scale.exact,
            n = self.scale.cgroups,
            memlock = checks_map.map_or_else(
                || "its memory is fixed at load".to_owned(),
                |m| format!("{:.1} MiB of kernel memory", kib(m.memlock) / 1024.0)
            ),
            max = group(checks_map.map_or(32_768, |m| m.max_entries)),
        )
    }

    fn workloads_note(&self) -> String {
        let w = &self.workloads;
        let pct = |v: Variant, f: Figure| median(&w.overhead(v, f));
        let line = |v: Variant| {
            format!(
                "the exec loop {:+.1}% CPU per exec, nginx {:+.1}% requests/s (p99 {:+.1}%, its \
                 CPU per request {:+.1}%), `make -j2` {:+.1}% wall and {:+.1}% CPU",
                pct(v, Figure::ExecCpu),
                -pct(v, Figure::NginxRps),
                pct(v, Figure::NginxP99),
                pct(v, Figure::NginxCpu),
                pct(v, Figure::MakeWall),
                pct(v, Figure::MakeCpu),
            )
        };
        let under = FIGURES
            .iter()
            .filter(|f| pct(Variant::Watch, **f) < 1.0)
            .count();
        // The A/A control: nothing attached, measured twice a round. A difference inside its
        // range over the rounds is noise this run cannot resolve.
        let resolved: Vec<&str> = FIGURES
            .iter()
            .filter(|f| {
                let (lo, hi) = min_max(&w.overhead(Variant::Control, **f));
                let watch = pct(Variant::Watch, **f);
                watch < lo || watch > hi
            })
            .map(|f| f.what())
            .collect();
        let noise = FIGURES
            .iter()
            .flat_map(|f| w.overhead(Variant::Control, *f))
            .map(f64::abs)
            .fold(0.0, f64::max);
        let cpu_noise = [Figure::ExecCpu, Figure::NginxCpu, Figure::MakeCpu]
            .iter()
            .flat_map(|f| w.overhead(Variant::Control, *f))
            .map(f64::abs)
            .fold(0.0, f64::max);
        format!(
            "**Real work.** Against nothing attached (medians over {rounds} rounds; for \
             requests/s the change in throughput): under `capspy watch` {watch}; under the \
             bpftrace one-liner {bpftrace}; under per-event streaming {stream}. capspy's median \
             is under 1% on {under} of {n} figures. Nothing attached, measured a second time in \
             each round (the A/A control), differed from the baseline by up to {noise:.1}% in a \
             round ({cpu_noise:.1}% on the three CPU-time figures): capspy's median lies outside \
             the control's range over the rounds on {k} of {n} figures{list}, and elsewhere this \
             run cannot tell capspy from nothing; the per-check cost of section 1 is what tells \
             the variants apart precisely, and so does an account of what the tracers spent \
             (5b): {accounts}.",
            rounds = w.rounds,
            watch = line(Variant::Watch),
            bpftrace = line(Variant::Bpftrace),
            stream = line(Variant::Stream),
            n = FIGURES.len(),
            k = resolved.len(),
            accounts = self.accounts_note(),
            list = if resolved.is_empty() {
                String::new()
            } else {
                format!(" ({})", resolved.join("; "))
            },
        )
    }

    /// Section 5b in words: each tracer's median share of each workload's CPU.
    fn accounts_note(&self) -> String {
        let w = &self.workloads;
        let hook = self.derived().hook_entry_ns();
        let line = |v: Variant| {
            let shares: Vec<String> = WORKS
                .iter()
                .map(|work| {
                    format!(
                        "{:.2}% ({})",
                        median(&w.shares(v, *work, hook)),
                        work.what()
                    )
                })
                .collect();
            shares.join(", ")
        };
        let under = WORKS
            .iter()
            .filter(|work| median(&w.shares(Variant::Watch, **work, hook)) < 1.0)
            .count();
        format!(
            "of each workload's CPU, `capspy watch` spent {watch} (under 1% on {under} of {n}); \
             bpftrace {bpftrace}; per-event streaming {stream}",
            watch = line(Variant::Watch),
            bpftrace = line(Variant::Bpftrace),
            stream = line(Variant::Stream),
            n = WORKS.len(),
        )
    }

    fn aggregation_note(&self) -> String {
        let a = &self.aggregation;
        let over = |v| median(&a.diff(v, Variant::Floor));
        let saved = median(&a.diff(Variant::Hash, Variant::Cgrp));
        let in_capspy = median(&a.diff(Variant::CapspyHash, Variant::Capspy));
        let contention = |v| median(&a.contention(v));
        let shared = contention(Variant::Hash) - contention(Variant::Floor);
        format!(
            "**The aggregation.** Alone on the hook, capspy's hash (cgroup id, lookup on the \
             16-byte key, atomic add) takes {hash:.0} ns per check over the floor inside the \
             program, cgroup local storage {cgrp:.0} ns: the storage saves {saved:.0} ns. capspy \
             counts the common checks (the workload's own, against the initial user namespace, \
             and the overcommit check per syscall) in the storage where the kernel has it (Linux 6.2+; a \
             second object without the map for older kernels, a program on cgroup removal that \
             copies the counts out before the storage is freed): inside the program it takes \
             {in_capspy:.0} ns less per check than with every check in the hash \
             (`--no-cgroup-storage`). {pays}\n\n\
             **One hot key, two CPUs.** With two processes counting on one key at once, a check \
             costs {h2:.2}× what it costs with one in the hash, {c2:.2}× in the storage, \
             {cap2:.2}× in capspy, and {f2:.2}× in the floor, whose per-CPU counter shares \
             nothing (the control). {sharing} On this shared 2-CPU guest the two processes \
             overlap only part of the time, so this is a lower bound. What it means for a \
             64-CPU host (an inference, not measured here): a key is shared when many threads \
             of one container make the same check at once (a multithreaded runtime's private \
             writable mmaps all make the overcommit SYS_ADMIN check); every add then has to \
             take the counter's cache line from another core, tens of ns to over 100 ns across \
             sockets, one CPU at a time, so that key's cost per check grows with the CPUs \
             hammering it and its rate is capped by how fast the line moves. It stays correct. \
             Per-CPU counters (a per-CPU hash, or per-CPU cells in the cgroup storage) remove \
             it, at the price of the daemon summing one value per CPU and key at each sweep.",
            hash = over(Variant::Hash),
            cgrp = over(Variant::Cgrp),
            pays = if in_capspy >= 5.0 {
                "The saving is larger than the rounds' noise inside the program."
            } else {
                "The saving is within the noise here."
            },
            h2 = contention(Variant::Hash),
            c2 = contention(Variant::Cgrp),
            cap2 = contention(Variant::Capspy),
            f2 = contention(Variant::Floor),
            sharing = if shared > 0.1 {
                format!(
                    "The hash's check costs {:.0}% more than the floor's ratio explains: the \
                     shared counter's cache line moving between the CPUs at each atomic add.",
                    shared * 100.0
                )
            } else {
                "Beyond the floor's own change, sharing the key costs nothing measurable here."
                    .to_owned()
            },
        )
    }
}

impl Report {
    /// What each stage of capspy's hot path costs (section 1d), and what stands between capspy
    /// and capspy/floor ≤ 1.3.
    fn stages_note(&self) -> String {
        let st = &self.stages;
        let floor_added = self.derived().median_added(Variant::Floor);
        let own = median(&st.over_floor());
        let (own_low, own_high) = min_max(&st.over_floor());
        let mut costs: Vec<(usize, f64)> = (0..STAGES.len())
            .map(|i| (i + 1, median(&st.increment(i))))
            .collect();
        let listed = costs
            .iter()
            .map(|(n, ns)| format!("{n}: {ns:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        costs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let budget = (FLOOR_TARGET - 1.0) * floor_added;
        let excess = own - budget;
        let ranked = costs
            .iter()
            .take(3)
            .map(|(n, ns)| format!("{n} ({ns:.0} ns)"))
            .collect::<Vec<_>>()
            .join(", ");
        let stands = if excess <= 0.0 {
            "capspy's own work fits that budget in this run.".to_owned()
        } else {
            let mut cut = 0.0;
            let needed = costs
                .iter()
                .take_while(|(_, ns)| {
                    let more = cut < excess;
                    cut += ns;
                    more
                })
                .count();
            format!(
                "capspy is {excess:.0} ns over it. The costliest stages are {ranked}; reaching \
                 the budget would take removing the work of the {needed} costliest (together \
                 {cut:.0} ns), and every stage is part of what the profile records (the \
                 call-site class is the audit class, the bucket and user namespace decide \
                 whether a check is the workload's own, the origin tells a check that changes \
                 nothing from one that needs the capability, the cell is the count)."
            )
        };
        format!(
            "**capspy's program, stage by stage.** Inside its program capspy takes {full:.0} ns \
             per check against the floor's {fl:.0} ns: {own:.0} ns of its own work (per round \
             {own_low:.0}–{own_high:.0}). What each stage adds, in ns (medians of the per-round \
             differences; the stats' clock reads are in the floor): {listed}. capspy/floor ≤ \
             {FLOOR_TARGET} needs capspy's added cost per check within {pct:.0}% of the \
             floor's; with the floor adding {floor_added:.0} ns to a check (section 1) that is a \
             budget of {budget:.0} ns for capspy's own work. {stands}",
            full = st.by_stage.last().map_or(f64::NAN, |v| median(v)),
            fl = median(&st.floor),
            pct = (FLOOR_TARGET - 1.0) * 100.0,
        )
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
