//! The report: the machine, the run's figures, per-round derivations, the targets, number
//! formatting, and the markdown document around the tables and the analysis.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::Plan;
use super::aggregation::Aggregation;
use super::cost::{Cost, Counts, Variant};
use super::daemon::DaemonCost;
use super::inside::Inside;
use super::reading::Reading;
use super::scale::Scale;
use super::stages::Stages;
use super::workloads::Macro;
use crate::cmd;

pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

pub(super) fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// "median (min–max)".
pub(super) fn spread(xs: &[f64], digits: usize) -> String {
    let (lo, hi) = min_max(xs);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(xs))
}

/// The interval holding the median of the population `xs` were drawn from with at least 95%
/// confidence, from the sample's order statistics (no assumption on the distribution): the
/// k-th smallest and k-th largest values, for the largest k with P(Binomial(n, ½) < k) ≤ 2.5%.
/// None under 6 values, where even the sample's extremes do not reach 95%.
pub(super) fn median_interval(xs: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len();
    let mut below = 0.0; // P(Binomial(n, ½) < k), for k from 0
    let mut choose = 1.0; // C(n, k)
    let mut k = 0;
    let total = 2f64.powi(i32::try_from(n).ok()?);
    while k < n / 2 && below + choose / total <= 0.025 {
        below += choose / total;
        #[expect(clippy::cast_precision_loss, reason = "round counts are small")]
        {
            choose = choose * (n - k) as f64 / (k + 1) as f64;
        }
        k += 1;
    }
    if k == 0 {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Some((v[k - 1], v[n - k]))
}

/// "1.21–1.43", or "—" with too few values for 95%.
pub(super) fn interval(xs: &[f64], digits: usize) -> String {
    median_interval(xs).map_or_else(
        || "—".into(),
        |(lo, hi)| format!("{lo:.digits$}–{hi:.digits$}"),
    )
}

/// "0.12% (0.10…0.15)", or "—" without values.
pub(super) fn spread_share(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "—".into();
    }
    let (lo, hi) = min_max(xs);
    format!("{:.2}% ({lo:.2}…{hi:.2})", median(xs))
}

/// "+0.3% (−1.2…+2.0)": a median % and its range, signed.
pub(super) fn spread_pct(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "—".into();
    }
    let (lo, hi) = min_max(xs);
    format!("{:+.1}% ({lo:+.1}…{hi:+.1})", median(xs))
}

/// The 1-minute load average every 5 s during the run: how much other work shared the CPUs.
pub(super) struct LoadSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<Vec<f64>>,
}

impl LoadSampler {
    pub(super) fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            let mut tick = 0u32;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if tick.is_multiple_of(50) {
                    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
                    if let Some(one) = text.split_whitespace().next().and_then(|v| v.parse().ok()) {
                        samples.push(one);
                    }
                }
                tick += 1;
                thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Self { stop, thread }
    }

    pub(super) fn finish(self) -> Vec<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

pub(super) struct Machine {
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) cpu_model: String,
    pub(super) memory: String,
    pub(super) revision: String,
    pub(super) bpftrace: String,
    /// 1, 5 and 15 minute load averages when the run ended: other work on the machine shows
    /// up as noise in every figure.
    pub(super) loadavg: String,
    /// 1-minute load average sampled every 5 s through the run.
    pub(super) load_samples: Vec<f64>,
}

impl Machine {
    pub(super) fn probe() -> Self {
        let quiet = |cmd: &mut Command| cmd::output(cmd).map(|s| s.trim().to_owned()).ok();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let git = |args: &[&str]| {
            quiet(
                Command::new("git")
                    .current_dir(cmd::workspace_root())
                    .args(args),
            )
            .unwrap_or_default()
        };
        // BENCHMARKS.md itself is the previous run's output, not a change to what is measured.
        let dirty = if git(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
        ])
        .is_empty()
        {
            ""
        } else {
            " with uncommitted changes"
        };
        Self {
            kernel: quiet(Command::new("uname").arg("-r")).unwrap_or_default(),
            cpus: thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory: format!("{} GiB", mem_kib / (1024 * 1024)),
            revision: format!("{}{dirty}", git(&["rev-parse", "--short", "HEAD"])),
            bpftrace: quiet(Command::new("bpftrace").arg("--version")).unwrap_or_default(),
            loadavg: fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            load_samples: Vec::new(),
        }
    }
}

pub(super) struct Report {
    pub(super) plan: Plan,
    pub(super) machine: Machine,
    pub(super) counts: Counts,
    pub(super) cost: Cost,
    pub(super) inside: Inside,
    pub(super) aggregation: Aggregation,
    pub(super) stages: Stages,
    pub(super) daemon: DaemonCost,
    pub(super) scale: Scale,
    pub(super) reading: Reading,
    pub(super) workloads: Macro,
    pub(super) elapsed: Duration,
    pub(super) quick: bool,
}

/// Per-round figures derived from the rounds.
pub(super) struct Derived {
    /// Added ns per check over the same round's baseline.
    pub(super) added: BTreeMap<Variant, Vec<f64>>,
    pub(super) capspy_floor: Vec<f64>,
    pub(super) capspy_bpftrace: Vec<f64>,
    pub(super) mmap_added: BTreeMap<Variant, Vec<f64>>,
}

pub(super) fn added_over_baseline(
    rounds: &BTreeMap<Variant, Vec<f64>>,
) -> BTreeMap<Variant, Vec<f64>> {
    let base = rounds.get(&Variant::Baseline).cloned().unwrap_or_default();
    rounds
        .iter()
        .filter(|(v, _)| **v != Variant::Baseline)
        .map(|(v, xs)| (*v, xs.iter().zip(&base).map(|(x, b)| x - b).collect()))
        .collect()
}

pub(super) fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// capspy/floor, issue 17's target.
pub(super) const FLOOR_TARGET: f64 = 1.3;
pub(super) const BPFTRACE_TARGET: f64 = 1.0 / 3.0;
pub(super) const CPU_TARGET: f64 = 0.01;
/// 30 MB, in the KiB that /proc reports.
pub(super) const RSS_TARGET_KIB: u64 = 30_000_000 / 1024;
pub(super) const READ_TARGET_SECS: f64 = 1.0;

pub(super) fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

impl Derived {
    pub(super) fn median_added(&self, v: Variant) -> f64 {
        self.added.get(&v).map_or(f64::NAN, |x| median(x))
    }

    /// The floor's added cost per check, at least 0 (section 5b's cost per program run of the
    /// hook's own entry, which the kernel's BPF stats do not count).
    pub(super) fn hook_entry_ns(&self) -> f64 {
        self.median_added(Variant::Floor).max(0.0)
    }

    pub(super) fn floor_ratio(&self) -> f64 {
        self.median_added(Variant::Capspy) / self.median_added(Variant::Floor)
    }

    pub(super) fn bpftrace_ratio(&self) -> f64 {
        self.median_added(Variant::Capspy) / self.median_added(Variant::Bpftrace)
    }
}

impl Report {
    pub(super) fn derived(&self) -> Derived {
        let added = added_over_baseline(&self.cost.setuid);
        let get = |v| added.get(&v).cloned().unwrap_or_default();
        Derived {
            capspy_floor: ratios(&get(Variant::Capspy), &get(Variant::Floor)),
            capspy_bpftrace: ratios(&get(Variant::Capspy), &get(Variant::Bpftrace)),
            mmap_added: added_over_baseline(&self.cost.mmap),
            added,
        }
    }

    pub(super) fn markdown(&self, tables: &str) -> String {
        let m = &self.machine;
        format!(
            "# capspy benchmarks\n\n\
             What capspy costs on the host it watches, measured by `cargo xtask bench` against the \
             floor (the least a program on the same hook can cost) and its peers. Every figure \
             below comes from one run; the analysis under the tables is written by the same run \
             from its own figures.\n\n\
             ## Machine\n\n\
             - kernel {kernel}, {cpus} CPUs ({model}), {memory} RAM (a Firecracker guest on the \
             project's machines)\n\
             - capspy {revision}, hook tp_btf (the only one this kernel allows; see \
             `capspy doctor`)\n\
             - {bpftrace}\n\
             - load average at the end of the run (1, 5, 15 min): {loadavg}; the 1-minute \
             figure sampled every 5 s through the run: median {load_median:.1} (min \
             {load_min:.1}, max {load_max:.1}) on {cpus} CPUs. Anything above the bench's own ~1 \
             means other work (other builds and tests on this shared machine) took CPU time \
             during the measurements and widened the spreads\n\n\
             ## Reproduce\n\n\
             As root, from a clone (needs gcc with a static libc, make, `bpftrace`, `nginx` and \
             `wrk`; `bpftool` adds map names and entry counts, `perf` the daemon's profile):\n\n\
             ```sh\ncargo xtask bench           # about {minutes} minutes; writes BENCHMARKS.md\n\
             cargo xtask bench --quick   # smoke test: small counts, prints the tables only\n```\n\n\
             `cargo test -p xtask --release --test bench` runs the quick one and checks that every \
             table is printed and every fake container attributed (no timing is asserted).\n\n\
             ## Results\n\n{tables}\n\n\
             ## Analysis\n\n{analysis}",
            kernel = m.kernel,
            cpus = m.cpus,
            model = m.cpu_model,
            memory = m.memory,
            revision = m.revision,
            bpftrace = m.bpftrace,
            loadavg = m.loadavg,
            load_median = median(&m.load_samples),
            load_min = min_max(&m.load_samples).0,
            load_max = min_max(&m.load_samples).1,
            minutes = self.elapsed.as_secs().div_ceil(60),
            analysis = self.analysis(),
        )
    }
}

pub(super) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
pub(super) fn ratio_u(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
pub(super) fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

/// KiB (as /proc reports) to decimal MB, the unit of the target.
#[expect(clippy::cast_precision_loss, reason = "display only")]
pub(super) fn mb(k: u64) -> f64 {
    k as f64 * 1024.0 / 1e6
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
pub(super) fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::daemon::Profile;
    use crate::bench::inside::HELPER_PROGRAMS;
    use crate::bench::scale::MapInfo;
    use crate::bench::workloads::{FIGURES, Spent, WORKS};

    #[test]
    fn median_interval_is_the_order_statistics_holding_95_percent() {
        let xs = |n: u32| (0..n).rev().map(f64::from).collect::<Vec<_>>();
        assert_eq!(median_interval(&xs(5)), None);
        assert_eq!(median_interval(&xs(6)), Some((0.0, 5.0)));
        // P(B(11, ½) ≤ 1) = 0.6%, P(B ≤ 2) = 3.3%: the 2nd smallest to the 2nd largest.
        assert_eq!(median_interval(&xs(11)), Some((1.0, 9.0)));
        // P(B(21, ½) ≤ 5) = 1.3%, P(B ≤ 6) = 3.9%.
        assert_eq!(median_interval(&xs(21)), Some((5.0, 15.0)));
        assert_eq!(interval(&xs(3), 1), "—");
    }

    #[test]
    fn statistics() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
        assert_eq!(spread(&[1.0, 2.0, 10.0], 1), "2.0 (1.0–10.0)");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(999), "999");
    }

    fn fixture() -> Report {
        let rounds = |base: f64| -> Vec<f64> { (0..3).map(|i| base + f64::from(i)).collect() };
        let mut setuid = BTreeMap::new();
        for (v, b) in [
            (Variant::Baseline, 460.0),
            (Variant::Floor, 495.0),
            (Variant::Capspy, 530.0),
            (Variant::Bpftrace, 570.0),
            (Variant::Stream, 1160.0),
        ] {
            setuid.insert(v, rounds(b));
        }
        let mut mmap = BTreeMap::new();
        for (v, b) in [
            (Variant::Baseline, 1030.0),
            (Variant::Floor, 1060.0),
            (Variant::Capspy, 1090.0),
        ] {
            mmap.insert(v, rounds(b));
        }
        Report {
            plan: Plan::new(false),
            machine: Machine {
                kernel: "6.18".into(),
                cpus: 2,
                cpu_model: "cpu".into(),
                memory: "23 GiB".into(),
                revision: "abc".into(),
                bpftrace: "bpftrace v0.17.0".into(),
                loadavg: "1 2 3".into(),
                load_samples: vec![1.0, 3.0, 8.0],
            },
            counts: Counts {
                setuid_calls: 100_000,
                setuid_checks: 100_000,
                mmap_calls: 100_000,
                mmap_checks: 100_000,
            },
            cost: Cost {
                setuid,
                mmap,
                stream_events: (1000, 0),
                bpftrace_unverified: 1,
            },
            inside: Inside {
                programs: vec![(Variant::Floor, 42.0), (Variant::Capspy, 80.0)],
                capspy_mmap: 73.0,
                helpers: HELPER_PROGRAMS
                    .iter()
                    .zip([38.0, 33.0, 42.0, 49.0, 68.0, 42.0, 45.0, 87.0])
                    .map(|((w, _), ns)| (*w, ns))
                    .collect(),
            },
            aggregation: fixture_aggregation(),
            stages: fixture_stages(),
            daemon: fixture_daemon(),
            scale: fixture_scale(),
            reading: Reading {
                workloads: 10_000,
                running: 1000,
                store_kib: 9000,
                build_secs: 0.5,
                commands: vec![("capspy ls".into(), vec![1.2, 1.3], vec![0.4, 0.5])],
            },
            workloads: fixture_workloads(),
            elapsed: Duration::from_secs(315),
            quick: false,
        }
    }

    fn fixture_stages() -> Stages {
        Stages {
            rounds: 1,
            calls: 1_000_000,
            floor: vec![36.0],
            by_stage: [37.0, 48.0, 50.0, 55.0, 75.0, 82.0, 85.0]
                .map(|ns| vec![ns])
                .to_vec(),
        }
    }

    fn fixture_aggregation() -> Aggregation {
        let mut a = Aggregation {
            rounds: 2,
            calls: 1_000_000,
            ..Aggregation::default()
        };
        for (v, ns) in [
            (Variant::Floor, 40.0),
            (Variant::Hash, 70.0),
            (Variant::Cgrp, 48.0),
            (Variant::Capspy, 80.0),
            (Variant::CapspyHash, 100.0),
        ] {
            a.one.insert(v, vec![ns, ns]);
            a.two.insert(v, vec![ns * 1.1, ns * 1.1]);
        }
        a
    }

    fn fixture_workloads() -> Macro {
        let mut m = Macro {
            rounds: 2,
            execs: 2000,
            files: 300,
            wrk_secs: 5,
            baselines: 3,
            alerts: 0,
            ..Macro::default()
        };
        for (v, scale) in [
            (Variant::Baseline, 1.0),
            (Variant::Control, 1.001),
            (Variant::Watch, 1.005),
            (Variant::Bpftrace, 1.02),
            (Variant::Stream, 1.2),
        ] {
            for f in FIGURES {
                let x = if f.higher_is_better() {
                    1000.0 / scale
                } else {
                    1000.0 * scale
                };
                m.values.insert((v, f), vec![x, x]);
            }
        }
        for (v, prog_ns) in [
            (Variant::Watch, 1e6),
            (Variant::Bpftrace, 2e6),
            (Variant::Stream, 2e7),
        ] {
            for work in WORKS {
                let spent = Spent {
                    prog_ns,
                    runs: 20_000.0,
                    proc_ns: 1e6,
                    work_ns: 1e9,
                };
                m.spent.insert((v, work), vec![spent, spent]);
            }
        }
        m
    }

    fn fixture_daemon() -> DaemonCost {
        DaemonCost {
            checks_per_sec: 99_999,
            cpu_ticks: 0.0,
            cpu_sched: 0.001,
            window_secs: 10.0,
            rss_kib: 16_500,
            hwm_kib: 32_000,
            anon_kib: 7_700,
            file_kib: 8_800,
            keys: Some(3),
            attach_hwm_kib: 32_000,
            profile: Profile {
                samples: 7,
                top: vec![(14.0, "f".into())],
            },
        }
    }

    fn fixture_scale() -> Scale {
        let map = |name: &str, entries| MapInfo {
            name: name.into(),
            kind: "hash".into(),
            key: 16,
            value: 56,
            max_entries: 32_768,
            memlock: 4_457_000,
            entries,
        };
        Scale {
            cgroups: 1000,
            exact: 1000,
            errors: vec!["e".into()],
            listed: 1000,
            checks: 500_500,
            maps: vec![map("CHECKS", Some(1002)), map("id 9", None)],
            idle_cpu: 0.002,
            idle_secs: 5.0,
            rss_kib: 18_500,
            verify_secs: 1.8,
            profile: Profile::default(),
            keys_after_removal: Some(5),
        }
    }

    /// Every section and paragraph is rendered, and the verdicts follow the figures.
    #[test]
    fn renders_every_section_with_verdicts_from_the_figures() {
        let r = fixture();
        let doc = r.markdown(&r.tables());
        for needle in [
            "### 1. Per-check cost",
            "| capspy / floor | 2.00 |",
            "### 2. The daemon's own cost",
            "### 3. Scale",
            "| CHECKS | hash |",
            "### 4. Reading",
            "**Per check.** capspy adds 70 ns",
            "capspy/floor is 2.0 (target ≤ 1.3: missed)",
            "**Where capspy's time goes.**",
            "**The common check.**",
            "peak 32.8 MB (target < 30 MB: steady met, peak missed)",
            "(1,002 keys with the cgroups, 5 two sweeps after they were removed)",
            "`capspy ls` missed the target in wall time (1250 ms)",
            "### 1c. The aggregation alone",
            "| cgrp | `task->cgroups->dfl_cgrp`",
            "| hash − cgrp (what the storage saves alone) | 22.0 (22.0–22.0) |",
            "| capspy, hash only − capspy (what the storage saves capspy) | 20.0 (20.0–20.0) |",
            "takes 20 ns less per check than with every check in the hash",
            "**The aggregation.**",
            "### 1d. capspy's program, stage by stage",
            "| 5 | + the setid origin",
            "| capspy − floor, inside the program | 49.0 (49.0–49.0) |",
            "What each stage adds, in ns (medians of the per-round differences; the stats' clock \
             reads are in the floor): 1: 1.0, 2: 11.0, 3: 2.0, 4: 5.0, 5: 20.0, 6: 7.0, 7: 3.0.",
            "capspy is 38 ns over it. The costliest stages are 5 (20 ns), 2 (11 ns), 6 (7 ns);",
            "### 5. What real work pays",
            "| nginx under wrk: requests/s | 1000.00 (1000.00–1000.00) | +0.1% (+0.1…+0.1) | +0.5% (+0.5…+0.5) | +2.0% (+2.0…+2.0) | +20.0% (+20.0…+20.0) | **met** |",
            "**Real work.**",
            "outside the control's range over the rounds on 7 of 7 figures",
            "### 5b. What the tracer itself spends",
            // (1e6 ns + 20,000 runs x 35 ns of hook (the floor's) + 1e6 ns) / 1e9 ns.
            "| fork+exec loop | 0.27% (0.27…0.27) | 0.37% (0.37…0.37) | 2.17% (2.17…2.17) | **met** |",
            "of each workload's CPU, `capspy watch` spent 0.27% (fork+exec loop)",
            "Whole benchmark: 315 s.",
            "median 3.0 (min 1.0, max 8.0) on 2 CPUs",
        ] {
            assert!(doc.contains(needle), "no {needle:?} in:\n{doc}");
        }
    }
}
