//! The tables, as printed and as in BENCHMARKS.md.

use std::fmt::Write as _;

use super::aggregation::AGG_VARIANTS;
use super::cost::{VARIANTS, Variant};
use super::report::{
    BPFTRACE_TARGET, CPU_TARGET, FLOOR_TARGET, READ_TARGET_SECS, RSS_TARGET_KIB, Report, group,
    interval, kib, kib_to_mib, mb, median, met, ratio_u, spread, spread_pct, spread_share,
};
use super::stages::STAGES;
use super::workloads::{FIGURES, WORKS};

impl Report {
    pub(super) fn tables(&self) -> String {
        let mut s = String::new();
        self.setuid_table(&mut s);
        self.mmap_table(&mut s);
        self.inside_tables(&mut s);
        self.aggregation_table(&mut s);
        self.stages_table(&mut s);
        self.daemon_table(&mut s);
        self.scale_table(&mut s);
        self.reading_table(&mut s);
        self.workloads_table(&mut s);
        self.spent_table(&mut s);
        let _ = write!(
            s,
            "\nWhole benchmark: {:.0} s{}.",
            self.elapsed.as_secs_f64(),
            if self.quick {
                " (--quick: smoke test, not a measurement)"
            } else {
                ""
            }
        );
        s
    }

    /// Section 1: the setuid loop under every variant, and the ratios judged.
    fn setuid_table(&self, s: &mut String) {
        let d = self.derived();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "### 1. Per-check cost\n\n`setuid(0)` loop as root, {} calls per measurement, {} rounds, \
             the variants' order rotated every round; min/median/max over rounds. Times are the \
             workload's CPU time per call (CLOCK_PROCESS_CPUTIME_ID) in the fastest tenth of \
             each measurement: the programs run in the calling task, so their cost is in it, \
             while the time other work on a shared machine takes is not, and what that work \
             still does to the task (caches, a busy sibling thread) only ever adds time. `capspy run` \
             counted {} CAP_SETUID checks for {} calls ({:.3} per call).\n",
            group(p.setuid_calls),
            p.rounds,
            group(self.counts.setuid_checks),
            group(self.counts.setuid_calls),
            ratio_u(self.counts.setuid_checks, self.counts.setuid_calls),
        );
        s.push_str("| variant | what | CPU ns per call, median (min–max) | added ns per check, median (min–max) |\n|---|---|---|---|\n");
        for v in VARIANTS {
            let per_call = self
                .cost
                .setuid
                .get(&v)
                .map_or_else(String::new, |x| spread(x, 1));
            let added = d.added.get(&v).map_or_else(|| "—".into(), |x| spread(x, 1));
            let _ = writeln!(s, "| {} | {} | {per_call} | {added} |", v.name(), v.what());
        }
        let (events, lost) = self.cost.stream_events;
        if self.cost.bpftrace_unverified > 0 {
            let _ = writeln!(
                s,
                "\nbpftrace hung on SIGINT and was killed in {} of {} rounds: its count could not \
                 confirm it was attached throughout those rounds.",
                self.cost.bpftrace_unverified, p.rounds
            );
        }
        let _ = writeln!(
            s,
            "\nstream: userspace read {} records, the ring buffer dropped {} ({:.2}%).\n",
            group(events),
            group(lost),
            100.0 * ratio_u(lost, events + lost)
        );
        // Judged on the ratio of the medians: a per-round ratio divides by the floor's few
        // nanoseconds, which round-to-round noise of the same size can make near zero.
        let floor_ratio = d.floor_ratio();
        let bpftrace_ratio = d.bpftrace_ratio();
        s.push_str(
            "| ratio of added cost | of the medians | per round, median (min–max) | 95% interval of \
             the per-round median | target | |\n|---|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            s,
            "| capspy / floor | {floor_ratio:.2} | {} | {} | ≤ {FLOOR_TARGET} | {} |",
            spread(&d.capspy_floor, 2),
            interval(&d.capspy_floor, 2),
            met(floor_ratio <= FLOOR_TARGET)
        );
        let _ = writeln!(
            s,
            "| capspy / bpftrace | {bpftrace_ratio:.2} | {} | {} | ≤ 0.33 | {} |",
            spread(&d.capspy_bpftrace, 2),
            interval(&d.capspy_bpftrace, 2),
            met(bpftrace_ratio <= BPFTRACE_TARGET)
        );
    }

    fn mmap_table(&self, s: &mut String) {
        let d = self.derived();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "\nThe common real-world check: mmap+munmap of a private writable page, {} calls per \
             measurement; each makes {:.3} advisory CAP_SYS_ADMIN check (the overcommit \
             heuristic; counted by `capspy run`: {} for {} calls).\n",
            group(p.mmap_calls),
            ratio_u(self.counts.mmap_checks, self.counts.mmap_calls),
            group(self.counts.mmap_checks),
            group(self.counts.mmap_calls),
        );
        s.push_str("| variant | CPU ns per call, median (min–max) | added ns per check, median (min–max) |\n|---|---|---|\n");
        for v in VARIANTS.into_iter().filter(|v| v.runs_mmap()) {
            let per_call = self
                .cost
                .mmap
                .get(&v)
                .map_or_else(String::new, |x| spread(x, 1));
            let added = d
                .mmap_added
                .get(&v)
                .map_or_else(|| "—".into(), |x| spread(x, 1));
            let _ = writeln!(s, "| {} | {per_call} | {added} |", v.name());
        }
    }

    fn inside_tables(&self, s: &mut String) {
        let p = &self.plan;
        let _ = writeln!(
            s,
            "\nTime inside the BPF program per run (kernel BPF stats, {} setuid calls; the stats \
             add their own two clock reads to every figure, so compare differences):\n",
            group(p.stats_calls)
        );
        s.push_str("| program | ns per run |\n|---|---|\n");
        for (v, ns) in &self.inside.programs {
            let _ = writeln!(s, "| {} | {ns:.1} |", v.name());
        }
        let _ = writeln!(
            s,
            "| capspy, mmap loop (SYS_ADMIN, cached call site) | {:.1} |",
            self.inside.capspy_mmap
        );
        s.push_str(
            "\nWhat the hot path's pieces cost here: bpftrace programs on the same tracepoint, \
             each adding one piece to an empty program (same stats):\n\n| program body | ns per \
             run | over empty |\n|---|---|---|\n",
        );
        let empty = self.inside.helpers.first().map_or(0.0, |h| h.1);
        for (what, ns) in &self.inside.helpers {
            let _ = writeln!(s, "| {what} | {ns:.1} | {:+.1} |", ns - empty);
        }
    }

    fn daemon_table(&self, s: &mut String) {
        let dc = &self.daemon;
        let cpu_ok = dc.cpu_ticks < CPU_TARGET && dc.cpu_sched < CPU_TARGET;
        let _ = writeln!(
            s,
            "\n### 2. The daemon's own cost\n\n`capspy record` (sweep every 1 s) while a load \
             generator makes {} CAP_SETUID checks per second for {:.1} s:\n\n| figure | value \
             | target | |\n|---|---|---|---|\n| CPU, utime+stime | {:.2}% of one core | < 1% | {} \
             |\n| CPU, threads' schedstat | {:.2}% of one core | < 1% | |\n| VmRSS at the end \
             (anonymous + file) | {:.1} MB ({:.1} + {:.1}) | < 30 MB | {} |\n| VmHWM (peak since \
             start) | {:.1} MB | < 30 MB | {} |\n| keys in the CHECKS map (each swept every \
             second) | {} | | |",
            group(dc.checks_per_sec),
            dc.window_secs,
            dc.cpu_ticks * 100.0,
            met(cpu_ok),
            dc.cpu_sched * 100.0,
            mb(dc.rss_kib),
            mb(dc.anon_kib),
            mb(dc.file_kib),
            met(dc.rss_kib < RSS_TARGET_KIB),
            mb(dc.hwm_kib),
            met(dc.hwm_kib < RSS_TARGET_KIB),
            dc.keys.map_or_else(|| "— (needs bpftool)".into(), group),
        );
    }

    fn scale_table(&self, s: &mut String) {
        let sc = &self.scale;
        let _ = writeln!(
            s,
            "\n### 3. Scale\n\n{} concurrent cgroups `/docker/<fake 64-hex id>` under the cgroup v2 \
             root, each with one process that made its own checks (cgroup i: setuid(0) or \
             setgid(0), i+1 times; {} checks in all), the daemon running; then read back from the \
             store with `capspy ls --format json` and one `capspy profile ID --format json` per \
             cgroup ({:.1} s for all).\n\n| figure | value | target | |\n|---|---|---|---|\n| \
             cgroups listed by `capspy ls` | {} / {} | all | |\n| attributed exactly (one row, \
             right capability, exact count) | {} / {} | all | {} |\n| daemon CPU, idle, holding \
             them ({:.0} s) | {:.2}% of one core | | |\n| daemon VmRSS | {:.1} MB | | |\n| \
             CHECKS entries two sweeps after the cgroups were removed | {} | | |",
            group(sc.cgroups as u64),
            group(sc.checks),
            sc.verify_secs,
            sc.listed,
            sc.cgroups,
            sc.exact,
            sc.cgroups,
            met(sc.exact == sc.cgroups && sc.listed == sc.cgroups),
            sc.idle_secs,
            sc.idle_cpu * 100.0,
            mb(sc.rss_kib),
            sc.keys_after_removal
                .map_or_else(|| "— (needs bpftool)".into(), group),
        );
        for e in &sc.errors {
            let _ = writeln!(s, "\nattribution error: {e}");
        }
        self.maps_table(s);
    }

    fn maps_table(&self, s: &mut String) {
        let sc = &self.scale;
        s.push_str("\nThe daemon's kernel maps at that size (fdinfo `memlock`; names and entries from bpftool):\n\n| map | type | key B | value B | max entries | entries in use | memlock |\n|---|---|---|---|---|---|---|\n");
        for m in &sc.maps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.1} KiB |",
                m.name,
                m.kind,
                m.key,
                m.value,
                group(m.max_entries),
                m.entries.map_or_else(|| "—".into(), group),
                kib(m.memlock)
            );
        }
        let total: u64 = sc.maps.iter().map(|m| m.memlock).sum();
        let _ = writeln!(s, "| all | | | | | | {:.1} MiB |", kib(total) / 1024.0);
    }

    fn reading_table(&self, s: &mut String) {
        let p = &self.plan;
        let r = &self.reading;
        let _ = writeln!(
            s,
            "\n### 4. Reading\n\nA store of {} container workloads ({} of them running, 4 check \
             rows each; {:.1} MiB, written in {:.1} s by `capspy/examples/bench_store.rs`), {} \
             runs each. Wall time is what a user waits; CPU time (user+sys) is what it takes \
             when the machine is not shared (the commands are single-threaded):\n\n| command | \
             wall ms, median (min–max) | CPU ms, median (min–max) | target (wall) | \
             |\n|---|---|---|---|---|",
            group(r.workloads as u64),
            group(r.running as u64),
            kib_to_mib(r.store_kib),
            r.build_secs,
            p.read_runs,
        );
        for (shown, times, cpu) in &r.commands {
            let ms = |xs: &[f64]| xs.iter().map(|t| t * 1e3).collect::<Vec<f64>>();
            let _ = writeln!(
                s,
                "| `{shown}` | {} | {} | < 1 s | {} |",
                spread(&ms(times), 0),
                spread(&ms(cpu), 0),
                met(median(times) < READ_TARGET_SECS)
            );
        }
    }

    /// Section 5: each figure's baseline and the others' % overhead over it, per round.
    fn workloads_table(&self, s: &mut String) {
        let w = &self.workloads;
        let _ = writeln!(
            s,
            "\n### 5. What real work pays\n\n{} rounds, the variants' order rotated every round; \
             each round runs, under each variant: a shell loop of {} fork+execs of `/bin/true`, \
             nginx (2 workers, a 612-byte static file) answering `wrk -t2 -c32` over loopback for \
             {} s, and a full `make -B -j2` of a generated C project of {} files. Overhead is the \
             variant's figure over the same round's baseline (for requests/s, the baseline's over \
             the variant's), so positive is worse; median (min…max) over rounds. \"nothing, again\" is \
             the baseline measured a second time in each round, at its own place in the rotation: \
             its overhead is the noise of the run, what a difference must exceed to be resolved. \
             `capspy watch` \
             had {} baseline(s) loaded (made by `capspy record` and `capspy baseline save` over one \
             pass of the same workloads) and raised {} alert(s).\n",
            w.rounds,
            group(w.execs),
            w.wrk_secs,
            w.files,
            w.baselines,
            w.alerts,
        );
        s.push_str(
            "| figure | baseline, median (min–max) | nothing, again (A/A) | capspy watch | bpftrace | \
             stream | capspy < 1% and below every peer |\n|---|---|---|---|---|---|---|\n",
        );
        for figure in FIGURES {
            let base = w
                .values
                .get(&(Variant::Baseline, figure))
                .map_or_else(String::new, |x| spread(x, 2));
            let mut row = format!("| {} | {base} |", figure.what());
            for v in [
                Variant::Control,
                Variant::Watch,
                Variant::Bpftrace,
                Variant::Stream,
            ] {
                let _ = write!(row, " {} |", spread_pct(&w.overhead(v, figure)));
            }
            let watch = median(&w.overhead(Variant::Watch, figure));
            let peers = [Variant::Bpftrace, Variant::Stream]
                .map(|v| median(&w.overhead(v, figure)))
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            let _ = writeln!(s, "{row} {} |", met(watch < 1.0 && watch <= peers));
        }
    }

    /// Section 5b: what each tracer spent during each workload, as a share of the workload's CPU.
    fn spent_table(&self, s: &mut String) {
        let w = &self.workloads;
        let hook = self.derived().hook_entry_ns();
        let _ = writeln!(
            s,
            "\n### 5b. What the tracer itself spends\n\nThe same rounds, accounted instead of \
             compared: while each workload ran, the tracer's programs' time (kernel BPF stats, on \
             through section 5), {hook:.0} ns per program run for the hook's own entry (the \
             floor's added cost, section 1: the stats do not count it) and its process's CPU (all \
             threads: the daemon's sweeps, bpftrace, the streaming reader), as a share of the \
             workload's CPU (the exec loop's, nginx's, the build's); median (min…max) over \
             rounds.\n\n| workload | capspy watch | bpftrace | stream | capspy < 1% and below \
             every peer |\n|---|---|---|---|---|"
        );
        for work in WORKS {
            let mut row = format!("| {} |", work.what());
            for v in [Variant::Watch, Variant::Bpftrace, Variant::Stream] {
                let _ = write!(row, " {} |", spread_share(&w.shares(v, work, hook)));
            }
            let capspy = median(&w.shares(Variant::Watch, work, hook));
            let peers = [Variant::Bpftrace, Variant::Stream]
                .map(|v| median(&w.shares(v, work, hook)))
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            let _ = writeln!(s, "{row} {} |", met(capspy < 1.0 && capspy <= peers));
        }
    }

    /// Section 1c: the aggregation alone, hash map against cgroup storage, one and two CPUs.
    fn aggregation_table(&self, s: &mut String) {
        let a = &self.aggregation;
        let _ = writeln!(
            s,
            "\n### 1c. The aggregation alone\n\nWhat capspy's CHECKS hash costs against cgroup \
             local storage, each alone on tp_btf `cap_capable` beside the floor: ns per run inside \
             the program (kernel BPF stats, {} setuid calls per measurement, {} rounds, order \
             rotated), with one workload process, and with two at once counting on the same key \
             (same cgroup, capability and verdict; one per CPU when both are free).\n\n| program | \
             what | ns per run, one process | over the floor | two processes, one key | two / one \
             |\n|---|---|---|---|---|---|",
            group(a.calls),
            a.rounds,
        );
        for v in AGG_VARIANTS {
            let one = a.one.get(&v).map_or_else(String::new, |x| spread(x, 1));
            let two = a.two.get(&v).map_or_else(String::new, |x| spread(x, 1));
            let over = if v == Variant::Floor {
                "—".to_owned()
            } else {
                spread(&a.diff(v, Variant::Floor), 1)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {one} | {over} | {two} | {} |",
                v.name(),
                v.what(),
                spread(&a.contention(v), 2)
            );
        }
        let _ = writeln!(
            s,
            "\n| figure | median (min–max) |\n|---|---|\n\
             | hash − cgrp (what the storage saves alone) | {} |\n\
             | capspy, hash only − capspy (what the storage saves capspy) | {} |",
            spread(&a.diff(Variant::Hash, Variant::Cgrp), 1),
            spread(&a.diff(Variant::CapspyHash, Variant::Capspy), 1),
        );
    }

    /// Section 1d: capspy's own program stopped after each stage of its hot path.
    fn stages_table(&self, s: &mut String) {
        let st = &self.stages;
        let _ = writeln!(
            s,
            "\n### 1d. capspy's program, stage by stage\n\ncapspy's own program on tp_btf \
             `cap_capable` (the cgroup storage object), stopped after each stage of its hot path \
             (`capspy record --bench-stop-after N` loads the object built with the stage cuts; the \
             last row is capspy as it runs), beside the floor: ns per run inside the program \
             (kernel BPF stats, {} setuid(0) calls as root per measurement, {} rounds, order \
             rotated); what a stage adds is its difference to the row above in the same round.\n\n\
             | stage | what the program has done | ns per run, median (min–max) | added by the \
             stage, median (min–max) |\n|---|---|---|---|\n| floor | {} | {} | — |",
            group(st.calls),
            st.rounds,
            Variant::Floor.what(),
            spread(&st.floor, 1),
        );
        for (i, what) in STAGES.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {what} | {} | {} |",
                i + 1,
                spread(&st.by_stage[i], 1),
                spread(&st.increment(i), 1),
            );
        }
        let _ = writeln!(
            s,
            "\n| figure | median (min–max) |\n|---|---|\n| capspy − floor, inside the program | \
             {} |",
            spread(&st.over_floor(), 1),
        );
    }
}
