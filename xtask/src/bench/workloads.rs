//! Section 5, what real work pays: a fork+exec shell loop, nginx answering `wrk` over loopback
//! and a `make -j2` build, under nothing (twice: an A/A control), `capspy watch` (baselines
//! loaded, metrics on), the bpftrace one-liner and per-event streaming, the variants interleaved
//! in rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::cost::{Variant, attach};
use super::daemon::{cpu_seconds, sched_seconds};
use super::inside::{BpfStats, bpf_prog_stats};
use super::process::{Ctx, Proc, check_interrupted, children_cpu_secs, signal};
use super::scale::{FakeContainers, cgroup_v2_root, fake_id};

/// The variants of this section, in the order of the first round.
pub(super) const MACRO_VARIANTS: [Variant; 5] = [
    Variant::Baseline,
    Variant::Watch,
    Variant::Control,
    Variant::Bpftrace,
    Variant::Stream,
];

/// One figure of one workload; `higher_is_better` for throughputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Figure {
    ExecCpu,
    ExecWall,
    NginxRps,
    NginxP99,
    NginxCpu,
    MakeWall,
    MakeCpu,
}

pub(super) const FIGURES: [Figure; 7] = [
    Figure::ExecCpu,
    Figure::ExecWall,
    Figure::NginxRps,
    Figure::NginxP99,
    Figure::NginxCpu,
    Figure::MakeWall,
    Figure::MakeCpu,
];

impl Figure {
    pub(super) fn what(self) -> &'static str {
        match self {
            Self::ExecCpu => "fork+exec loop: CPU µs per exec",
            Self::ExecWall => "fork+exec loop: wall µs per exec",
            Self::NginxRps => "nginx under wrk: requests/s",
            Self::NginxP99 => "nginx under wrk: p99 latency, ms",
            Self::NginxCpu => "nginx under wrk: nginx CPU µs per request",
            Self::MakeWall => "`make -j2`: wall s",
            Self::MakeCpu => "`make -j2`: CPU s (all processes)",
        }
    }

    pub(super) fn higher_is_better(self) -> bool {
        self == Self::NginxRps
    }
}

/// Per variant and figure, one value per round.
#[derive(Default)]
pub(super) struct Macro {
    pub(super) rounds: usize,
    pub(super) execs: u64,
    pub(super) files: usize,
    pub(super) wrk_secs: u64,
    pub(super) values: BTreeMap<(Variant, Figure), Vec<f64>>,
    /// Baseline files `capspy watch` loaded.
    pub(super) baselines: usize,
    /// Alerts `capspy watch` raised over all rounds (lines in its alerts file).
    pub(super) alerts: usize,
    /// Per tracer and workload, what the tracer spent, one per round.
    pub(super) spent: BTreeMap<(Variant, Work), Vec<Spent>>,
}

/// The three workloads of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Work {
    Exec,
    Nginx,
    Make,
}

pub(super) const WORKS: [Work; 3] = [Work::Exec, Work::Nginx, Work::Make];

impl Work {
    pub(super) fn what(self) -> &'static str {
        match self {
            Self::Exec => "fork+exec loop",
            Self::Nginx => "nginx under wrk",
            Self::Make => "`make -j2`",
        }
    }
}

/// What an attached tracer spent while one workload ran, beside the workload's own CPU: its
/// programs' time and runs (kernel BPF stats) and its process's CPU (all threads). An account,
/// not a difference between two noisy runs, so it resolves fractions of a percent.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Spent {
    pub(super) prog_ns: f64,
    pub(super) runs: f64,
    pub(super) proc_ns: f64,
    pub(super) work_ns: f64,
}

impl Spent {
    /// The tracer's share of the workload's CPU in %, with `hook_ns` per program run for the
    /// hook's own entry, which the stats do not count (see `Derived::hook_entry_ns`).
    pub(super) fn share(&self, hook_ns: f64) -> f64 {
        (self.prog_ns + self.runs * hook_ns + self.proc_ns) / self.work_ns * 100.0
    }
}

/// What process `pid` has spent so far: (programs' ns, program runs, its own CPU in ns).
fn spent_so_far(pid: u32) -> (f64, f64, f64) {
    let (ns, runs) = bpf_prog_stats(pid)
        .values()
        .fold((0u64, 0u64), |(ns, runs), (n, r)| (ns + n, runs + r));
    #[expect(clippy::cast_precision_loss, reason = "far below 2^52")]
    (
        ns as f64,
        runs as f64,
        sched_seconds(pid).unwrap_or(0.0) * 1e9,
    )
}

/// Runs `work` (which returns the workload's CPU in s) and what `tracer` spent meanwhile.
fn accounted<T>(
    tracer: Option<u32>,
    work: impl FnOnce() -> Result<(T, f64)>,
) -> Result<(T, Option<Spent>)> {
    let before = tracer.map(spent_so_far);
    let (out, work_s) = work()?;
    let spent = tracer.zip(before).map(|(pid, (ns0, runs0, cpu0))| {
        let (ns, runs, cpu) = spent_so_far(pid);
        Spent {
            prog_ns: ns - ns0,
            runs: runs - runs0,
            proc_ns: cpu - cpu0,
            work_ns: work_s * 1e9,
        }
    });
    Ok((out, spent))
}

impl Macro {
    /// `variant`'s share of `work`'s CPU per round, in % (see [`Spent::share`]).
    pub(super) fn shares(&self, variant: Variant, work: Work, hook_ns: f64) -> Vec<f64> {
        self.spent
            .get(&(variant, work))
            .map_or_else(Vec::new, |xs| xs.iter().map(|x| x.share(hook_ns)).collect())
    }

    /// % overhead of `variant` per round against the same round's baseline: positive is worse.
    pub(super) fn overhead(&self, variant: Variant, figure: Figure) -> Vec<f64> {
        let (Some(base), Some(xs)) = (
            self.values.get(&(Variant::Baseline, figure)),
            self.values.get(&(variant, figure)),
        ) else {
            return Vec::new();
        };
        xs.iter()
            .zip(base)
            .map(|(x, b)| {
                if figure.higher_is_better() {
                    (b / x - 1.0) * 100.0
                } else {
                    (x / b - 1.0) * 100.0
                }
            })
            .collect()
    }
}

pub(super) fn macro_workloads(ctx: &Ctx) -> Result<Macro> {
    let plan = ctx.plan;
    let dir = ctx.scratch.join("macro");
    fs::create_dir_all(&dir)?;
    let project = generate_c_project(&dir.join("cproject"), plan.macro_files)?;
    // Dropped last: its processes are gone by then.
    let container = Container::new()?;
    let mut nginx = Nginx::start(&dir.join("nginx"), &container)?;
    let baselines = make_baselines(ctx, &dir, &project, &nginx, &container)?;
    let mut out = Macro {
        rounds: plan.macro_rounds,
        execs: plan.macro_execs,
        files: plan.macro_files,
        wrk_secs: plan.wrk_secs,
        ..Macro::default()
    };
    let alerts = dir.join("alerts.jsonl");
    // For the tracers' accounts (section 5b); the stats' clock reads add to every tracer alike.
    let _stats = BpfStats::enable()?;
    for round in 0..plan.macro_rounds {
        let n = MACRO_VARIANTS.len();
        for variant in (0..n).map(|i| MACRO_VARIANTS[(i + round) % n]) {
            let (mut attached, metrics) = match variant {
                Variant::Watch => {
                    let (watch, port) = start_watch(ctx, &baselines, &alerts)?;
                    (Some(watch), Some(port))
                }
                _ => (attach(ctx, variant, "macro")?.proc, None),
            };
            let tracer = attached.as_ref().map(Proc::pid);
            let (figures, spent) = measure(ctx, &project, &nginx, &container, tracer)?;
            for (work, spent) in spent {
                out.spent.entry((variant, work)).or_default().push(spent);
            }
            if let Some(port) = metrics {
                check_metrics(port)?;
            }
            match (attached.as_mut(), variant) {
                // Its output is not needed here, and it has hung on SIGINT for a minute on a
                // busy machine: killed, its programs detach with its fds.
                (Some(proc), Variant::Bpftrace) => proc.kill(),
                (Some(proc), _) => proc.stop().map(drop)?,
                (None, _) => {}
            }
            report_round(round, plan.macro_rounds, variant, &figures);
            for (figure, value) in figures {
                out.values.entry((variant, figure)).or_default().push(value);
            }
        }
        let _ = fs::remove_file(ctx.scratch.join("macro.db"));
    }
    nginx.stop()?;
    out.baselines = baselines.count;
    out.alerts = fs::read_to_string(&alerts).map_or(0, |s| s.lines().count());
    Ok(out)
}

fn report_round(round: usize, rounds: usize, variant: Variant, figures: &[(Figure, f64)]) {
    let mut line = format!(
        "bench: macro round {}/{rounds} {:<8}",
        round + 1,
        variant.name()
    );
    for (figure, value) in figures {
        let _ = write!(line, " {figure:?} {value:.1}");
    }
    eprintln!("{line}");
}

/// A fake container (cgroup `/docker/<fake id>`) the workloads run in, so that capspy attributes
/// their checks to one workload, as it would a real container's; removed on drop.
struct Container {
    /// Held for its drop, which removes the cgroup.
    _cgroup: FakeContainers,
    procs: PathBuf,
    /// The workload key, as `capspy ls` prints it.
    key: String,
}

impl Container {
    fn new() -> Result<Self> {
        let parent = cgroup_v2_root()?.join("docker");
        let mut fakes = FakeContainers {
            made_parent: !parent.exists(),
            parent: parent.clone(),
            dirs: Vec::new(),
            workers: Vec::new(),
        };
        if fakes.made_parent {
            fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        // An index no scale cgroup uses.
        let id = fake_id(0xffff_fffe);
        let dir = parent.join(&id);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fakes.dirs.push(dir.clone());
        Ok(Self {
            _cgroup: fakes,
            procs: dir.join("cgroup.procs"),
            key: format!("container:{}", &id[..12]),
        })
    }

    /// `program args` started inside the cgroup: a shell moves itself in, then execs it.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(&self.procs)
            .arg(program)
            .args(args);
        cmd
    }
}

/// One pass's figures, and what the tracer spent during each workload.
type Pass = (Vec<(Figure, f64)>, Vec<(Work, Spent)>);

/// One pass of every workload under whatever is attached, and what `tracer` (the attached
/// process) spent during each.
fn measure(
    ctx: &Ctx,
    project: &Path,
    nginx: &Nginx,
    container: &Container,
    tracer: Option<u32>,
) -> Result<Pass> {
    let plan = ctx.plan;
    let ((exec_cpu, exec_wall), exec) = accounted(tracer, || {
        let (cpu, wall) = exec_loop(container, plan.macro_execs)?;
        Ok(((cpu, wall), cpu))
    })?;
    let (wrk, served) = accounted(tracer, || {
        let wrk = nginx.load(plan.wrk_secs)?;
        let cpu = wrk.server_cpu_s;
        Ok((wrk, cpu))
    })?;
    let ((make_wall, make_cpu), made) = accounted(tracer, || {
        let (wall, cpu) = build(container, project)?;
        Ok(((wall, cpu), cpu))
    })?;
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let per_exec = |s: f64| s * 1e6 / plan.macro_execs as f64;
    let figures = vec![
        (Figure::ExecCpu, per_exec(exec_cpu)),
        (Figure::ExecWall, per_exec(exec_wall)),
        (Figure::NginxRps, wrk.rps),
        (Figure::NginxP99, wrk.p99_ms),
        (Figure::NginxCpu, wrk.server_cpu_us),
        (Figure::MakeWall, make_wall),
        (Figure::MakeCpu, make_cpu),
    ];
    let spent = [
        (Work::Exec, exec),
        (Work::Nginx, served),
        (Work::Make, made),
    ]
    .into_iter()
    .filter_map(|(work, spent)| Some((work, spent?)))
    .collect();
    Ok((figures, spent))
}

/// Runs `cmd` to completion: (wall s, CPU s of it and its descendants).
fn timed_status(cmd: &mut Command, what: &str) -> Result<(f64, f64)> {
    check_interrupted()?;
    let cpu = children_cpu_secs();
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {what}"))?;
    let wall = t.elapsed().as_secs_f64();
    ensure!(status.success(), "{what} failed: {status}");
    Ok((wall, children_cpu_secs() - cpu))
}

/// `n` fork+execs of a short dynamically linked command from a shell loop: (CPU s, wall s).
fn exec_loop(container: &Container, n: u64) -> Result<(f64, f64)> {
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let (wall, cpu) = timed_status(
        &mut container.command("sh", &["-c", &script]),
        "the exec loop",
    )?;
    Ok((cpu, wall))
}

/// A C project of `files` small translation units and a Makefile that compiles and links them.
fn generate_c_project(dir: &Path, files: usize) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut calls = String::new();
    let mut decls = String::new();
    for i in 0..files {
        fs::write(
            dir.join(format!("f{i}.c")),
            format!(
                "#include <stdio.h>\n#include <string.h>\n\
                 int f{i}(const char *s) {{\n    char buf[64];\n    \
                 snprintf(buf, sizeof buf, \"%s-{i}\", s);\n    \
                 return (int)strlen(buf) * {i} % 7;\n}}\n"
            ),
        )?;
        let _ = writeln!(calls, "    n += f{i}(\"x\");");
        let _ = writeln!(decls, "int f{i}(const char *);");
    }
    fs::write(
        dir.join("main.c"),
        format!("{decls}int main(void) {{\n    int n = 0;\n{calls}    return n < 0;\n}}\n"),
    )?;
    fs::write(
        dir.join("Makefile"),
        "SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\n\nprog: $(OBJS)\n\t$(CC) -o $@ $^\n\n\
         %.o: %.c\n\t$(CC) -O1 -c -o $@ $<\n",
    )?;
    Ok(dir.to_owned())
}

/// A full rebuild with `make -B -j2`: (wall s, CPU s).
fn build(container: &Container, project: &Path) -> Result<(f64, f64)> {
    let project = project.to_string_lossy();
    timed_status(
        &mut container.command("make", &["-s", "-B", "-j2", "-C", &project]),
        "make -j2",
    )
}

/// nginx (Debian package) serving a small static file on a loopback port, stopped by pid.
struct Nginx {
    proc: Proc,
    port: u16,
    pids: Vec<u32>,
}

struct Wrk {
    rps: f64,
    p99_ms: f64,
    server_cpu_us: f64,
    /// nginx's CPU over the whole window.
    server_cpu_s: f64,
}

impl Nginx {
    fn start(prefix: &Path, container: &Container) -> Result<Self> {
        fs::create_dir_all(prefix.join("www"))?;
        fs::write(prefix.join("www/index.html"), "x".repeat(612))?;
        let port = free_port()?;
        let conf = prefix.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
                 events {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    \
                 server {{\n        listen 127.0.0.1:{port};\n        root {p}/www;\n    }}\n}}\n",
                p = prefix.display()
            ),
        )?;
        let conf = conf.to_string_lossy();
        let mut proc = Proc::spawn(
            "nginx",
            &mut container.command("nginx", &["-g", "daemon off;", "-c", &conf]),
        )
        .context("nginx (Debian package nginx)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if proc.exited()? {
                bail!(
                    "nginx exited: {}",
                    fs::read_to_string(prefix.join("error.log"))?
                );
            }
            ensure!(
                Instant::now() < deadline,
                "nginx is not listening on {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        // The shell exec'd nginx: the pid is the master's. It listens before its workers start.
        let mut pids = process_tree(proc.pid());
        while pids.len() < 3 {
            ensure!(Instant::now() < deadline, "nginx started no workers");
            thread::sleep(Duration::from_millis(50));
            pids = process_tree(proc.pid());
        }
        Ok(Self { proc, port, pids })
    }

    /// Stops the master (SIGQUIT: graceful), then makes sure no worker is left.
    fn stop(&mut self) -> Result<()> {
        signal(self.proc.pid(), libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.proc.exited()? {
            ensure!(Instant::now() < deadline, "nginx did not stop on SIGQUIT");
            thread::sleep(Duration::from_millis(50));
        }
        self.kill_workers();
        Ok(())
    }

    fn kill_workers(&self) {
        for &pid in &self.pids[1..] {
            signal(pid, libc::SIGKILL);
        }
    }

    /// `wrk` for `secs` with two threads and 32 connections; nginx's CPU over the same window.
    fn load(&self, secs: u64) -> Result<Wrk> {
        check_interrupted()?;
        let cpu = |pids: &[u32]| {
            pids.iter()
                .filter_map(|p| cpu_seconds(*p).ok())
                .sum::<f64>()
        };
        let before = cpu(&self.pids);
        let out = crate::cmd::output(Command::new("wrk").args([
            "-t2",
            "-c32",
            &format!("-d{secs}s"),
            "--latency",
            &format!("http://127.0.0.1:{}/", self.port),
        ]))
        .context("wrk (Debian package wrk)")?;
        let server_cpu = cpu(&self.pids) - before;
        let (rps, p99_ms, requests) = parse_wrk(&out)?;
        Ok(Wrk {
            rps,
            p99_ms,
            server_cpu_us: server_cpu * 1e6 / requests.max(1.0),
            server_cpu_s: server_cpu,
        })
    }
}

impl Drop for Nginx {
    /// On an error path: the workers would outlive a killed master.
    fn drop(&mut self) {
        self.kill_workers();
    }
}

/// nginx's master and workers: every process whose parent is `pid`, and `pid`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// (requests/s, p99 in ms, requests) from wrk's `--latency` output.
fn parse_wrk(out: &str) -> Result<(f64, f64, f64)> {
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let p99 = field("99%")
        .and_then(duration_ms)
        .context("no 99% latency in wrk's output")?;
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n))
        .and_then(|n| n.parse().ok())
        .context("no request count in wrk's output")?;
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        bail!("wrk saw errors:\n{out}");
    }
    Ok((rps, p99, requests))
}

/// wrk's durations: "812.00us", "1.23ms", "2.01s".
fn duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

struct Baselines {
    dir: PathBuf,
    count: usize,
}

/// Records one pass of the workloads with `capspy record`, then saves every workload's profile
/// as a baseline, as a user does before `capspy watch`.
fn make_baselines(
    ctx: &Ctx,
    dir: &Path,
    project: &Path,
    nginx: &Nginx,
    container: &Container,
) -> Result<Baselines> {
    let store = dir.join("baseline.db");
    let mut daemon = ctx.start_daemon(&store, &[])?;
    exec_loop(container, ctx.plan.macro_execs.min(200))?;
    nginx.load(1)?;
    build(container, project)?;
    // Two sweeps, so the last checks are in the store.
    thread::sleep(Duration::from_millis(2_500));
    daemon.stop()?;
    let baselines = dir.join("baselines");
    crate::cmd::output(
        ctx.capspy()
            .args(["baseline", "save", "--to"])
            .arg(&baselines)
            .arg("--store")
            .arg(&store)
            .arg(&container.key),
    )?;
    let count = fs::read_dir(&baselines)?.count();
    ensure!(count > 0, "`capspy baseline save` wrote no baseline");
    Ok(Baselines {
        dir: baselines,
        count,
    })
}

/// `capspy watch` with the baselines loaded and metrics served on a loopback port (returned).
fn start_watch(ctx: &Ctx, baselines: &Baselines, alerts: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut watch = Proc::spawn(
        "capspy watch",
        ctx.capspy()
            .args(["watch", "--interval", "1s", "--baseline"])
            .arg(&baselines.dir)
            .arg("--store")
            .arg(ctx.scratch.join("macro.db"))
            .arg("--alerts")
            .arg(alerts)
            .args(["--metrics", &format!("127.0.0.1:{port}")]),
    )?;
    let loaded = format!(" {} baseline(s) from", baselines.count);
    watch.wait_for(
        |l| l.starts_with("capspy: watching with hook") && l.contains(&loaded),
        Duration::from_secs(30),
    )?;
    thread::sleep(Duration::from_millis(300));
    Ok((watch, port))
}

/// One scrape of `/metrics`, as Prometheus would, to prove they were served throughout.
fn check_metrics(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("connecting to /metrics")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    ensure!(
        body.starts_with("HTTP/1.1 200") && body.contains("capspy_"),
        "/metrics answered:\n{body}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 4s test @ http://127.0.0.1:8080/\n  2 threads and 32 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   \
                   1.20ms  500.00us   9.00ms   80.00%\n  Latency Distribution\n     50%  \
                   1.10ms\n     75%    1.30ms\n     90%    1.60ms\n     99%  812.00us\n  \
                   52000 requests in 4.00s, 40.00MB read\nRequests/sec:  13000.00\n\
                   Transfer/sec:     10.00MB\n";
        let (rps, p99, n) = parse_wrk(out).unwrap();
        assert!((rps - 13000.0).abs() < 1e-9);
        assert!((p99 - 0.812).abs() < 1e-9);
        assert!((n - 52000.0).abs() < 1e-9);
        assert_eq!(duration_ms("2.5s"), Some(2500.0));
        assert!(parse_wrk("oops").is_err());
        assert!(parse_wrk(&format!("{out}  Non-2xx or 3xx responses: 3\n")).is_err());
    }

    #[test]
    fn overhead_is_against_the_same_rounds_baseline_and_positive_when_worse() {
        let mut m = Macro::default();
        m.values
            .insert((Variant::Baseline, Figure::NginxRps), vec![100.0, 200.0]);
        m.values
            .insert((Variant::Watch, Figure::NginxRps), vec![50.0, 200.0]);
        m.values
            .insert((Variant::Baseline, Figure::MakeWall), vec![10.0, 20.0]);
        m.values
            .insert((Variant::Watch, Figure::MakeWall), vec![11.0, 20.0]);
        assert_eq!(
            m.overhead(Variant::Watch, Figure::NginxRps),
            vec![100.0, 0.0]
        );
        let make = m.overhead(Variant::Watch, Figure::MakeWall);
        assert!((make[0] - 10.0).abs() < 1e-9 && make[1].abs() < 1e-9);
        assert!(m.overhead(Variant::Stream, Figure::MakeWall).is_empty());
    }
}
