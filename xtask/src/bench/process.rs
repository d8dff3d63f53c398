//! Plumbing of the bench: Ctrl-C, the scratch folder, the workload binary and the child
//! processes it starts (stopped by pid).

use std::fs;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::Plan;
use crate::cmd;

pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C sets a flag instead of killing xtask, so the guards below still stop what the bench
/// started and remove its cgroups.
pub(super) fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// A private folder for the workload binary and the stores; removed on drop.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("capspy-bench-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn compile_workload(dir: &Path) -> Result<PathBuf> {
    let source = cmd::workspace_root().join("xtask/bench/workload.c");
    let bin = dir.join("workload");
    cmd::output(
        Command::new("gcc")
            .args(["-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&bin)
            .arg(&source),
    )
    .context("compiling the workload (needs gcc and static libc: build-essential)")?;
    Ok(bin)
}

pub(super) struct Ctx {
    pub(super) capspy: PathBuf,
    pub(super) workload: PathBuf,
    pub(super) scratch: PathBuf,
    pub(super) plan: Plan,
}

impl Ctx {
    /// Runs a timed workload mode; returns CPU nanoseconds per call in the fastest tenth of the
    /// loop. CPU time rather than wall time: the BPF programs run in the calling task, so their
    /// cost is in it, while time other processes take on a shared machine is not; the fastest
    /// tenth because what such work still does to this task (caches, a busy sibling thread)
    /// only ever adds time.
    pub(super) fn timed(&self, mode: &str, calls: u64) -> Result<f64> {
        check_interrupted()?;
        let out = cmd::output(
            Command::new(&self.workload)
                .arg(mode)
                .arg(calls.to_string()),
        )?;
        let t = parse_calls(&out)?;
        ensure!(
            t.calls == calls,
            "workload made {} calls, not {calls}",
            t.calls
        );
        let (ns, n) = t.best.filter(|b| b.1 > 0).unwrap_or((t.cpu_ns, t.calls));
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        Ok(ns as f64 / n.max(1) as f64)
    }

    pub(super) fn capspy(&self) -> Command {
        let mut cmd = Command::new(&self.capspy);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Starts `capspy record` with a fresh store and waits until it has attached.
    pub(super) fn start_daemon(&self, store: &Path, extra: &[&str]) -> Result<Proc> {
        let mut daemon = Proc::spawn(
            "capspy record",
            self.capspy()
                .args(["record", "--interval", "1s", "--store"])
                .arg(store)
                .args(extra),
        )?;
        daemon.wait_for(
            |l| l.starts_with("capspy: recording with hook"),
            Duration::from_secs(30),
        )?;
        Ok(daemon)
    }
}

/// What a timed workload run reports.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Timing {
    pub(super) calls: u64,
    pub(super) wall_ns: u64,
    pub(super) cpu_ns: u64,
    /// CPU time of the fastest of the loop's equal chunks, and the chunk's calls (timed loops).
    pub(super) best: Option<(u64, u64)>,
}

/// "calls C ns T cpu_ns U [best_cpu_ns B chunk_calls M]" from the workload.
pub(super) fn parse_calls(out: &str) -> Result<Timing> {
    let fields: Vec<&str> = out.split_whitespace().collect();
    let (head, best) = match fields.as_slice() {
        [head @ .., "best_cpu_ns", b, "chunk_calls", m] => (head, Some((b.parse()?, m.parse()?))),
        all => (all, None),
    };
    match head {
        ["calls", c, "ns", t, "cpu_ns", u] => Ok(Timing {
            calls: c.parse()?,
            wall_ns: t.parse()?,
            cpu_ns: u.parse()?,
            best,
        }),
        _ => bail!("unexpected workload output {out:?}"),
    }
}

/// A child process whose stdout and stderr lines are collected, stopped by pid.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) lines: mpsc::Receiver<String>,
    pub(super) seen: Vec<String>,
    pub(super) reaped: bool,
}

impl Proc {
    pub(super) fn spawn(name: &'static str, command: &mut Command) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            name,
            child,
            lines,
            seen: Vec::new(),
            reaped: false,
        })
    }

    /// SIGKILL, then reaped.
    pub(super) fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Whether it has exited (then reaped).
    pub(super) fn exited(&mut self) -> Result<bool> {
        if !self.reaped && self.child.try_wait()?.is_some() {
            self.reaped = true;
        }
        Ok(self.reaped)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line of output that satisfies `ready`.
    pub(super) fn wait_for(
        &mut self,
        ready: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let hit = ready(&line);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        self.reaped = true;
                        self.drain();
                        bail!(
                            "{} exited ({status}) before it was ready:\n{}",
                            self.name,
                            self.seen.join("\n")
                        );
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{} not ready after {timeout:?}:\n{}",
                        self.name,
                        self.seen.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50));
                    if self.child.try_wait()?.is_some() {
                        self.reaped = true;
                        bail!("{} closed its output:\n{}", self.name, self.seen.join("\n"));
                    }
                }
            }
        }
    }

    pub(super) fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
    }

    /// SIGINT (every program here stops cleanly on it), SIGKILL if it is still there after a
    /// minute (bpftrace takes about 2 s to detach here, more on a busy machine). Returns all its
    /// output.
    pub(super) fn stop(&mut self) -> Result<Vec<String>> {
        if !self.reaped {
            signal(self.pid(), libc::SIGINT);
            let deadline = Instant::now() + Duration::from_mins(1);
            let status = loop {
                if let Some(status) = self.child.try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    // Where it hangs, for whoever reads the error.
                    let pid = self.pid();
                    let wchan =
                        fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                    let stack =
                        fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    let _ = self.child.kill();
                    self.child.wait()?;
                    self.reaped = true;
                    bail!(
                        "{} did not stop on SIGINT in a minute (waiting in {wchan:?}); killed\n{}",
                        self.name,
                        stack.trim_end()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            };
            self.reaped = true;
            self.drain();
            ensure!(
                status.success(),
                "{} failed ({status}):\n{}",
                self.name,
                self.seen.join("\n")
            );
        }
        Ok(std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall on a child we spawned and have not reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

/// user+sys CPU of all reaped children so far: around one child's run, its own CPU time.
pub(super) fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage);
        usage
    };
    let secs = |t: libc::timeval| {
        #[expect(clippy::cast_precision_loss, reason = "small numbers")]
        let s = t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s
    };
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_output() {
        let t = parse_calls("calls 10 ns 2000 cpu_ns 1500\n").unwrap();
        assert_eq!(
            (t.calls, t.wall_ns, t.cpu_ns, t.best),
            (10, 2000, 1500, None)
        );
        let t = parse_calls("calls 10 ns 2000 cpu_ns 1500 best_cpu_ns 140 chunk_calls 1").unwrap();
        assert_eq!(t.best, Some((140, 1)));
        assert!(parse_calls("oops").is_err());
    }
}
