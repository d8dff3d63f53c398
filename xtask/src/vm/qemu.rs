//! Running the VMs under qemu (and the native side) with a hard time limit, capturing their output.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::console::echo;
use super::kernel::{CLOUD_SUFFIX, Kernel};
use crate::cmd;

/// Boots every kernel (each boot runs all of its scenarios), as many at a time as there are CPUs:
/// TCG runs a one-CPU VM on one host thread. Prints each kernel's time; the console lines come
/// back in the order of `kernels`, or the first failure once all have stopped.
pub(super) fn boot_all(
    kernels: &[Kernel],
    initrd: &Path,
    logs: &[PathBuf],
    limit: Duration,
) -> Result<Vec<Vec<String>>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, kernels.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (Some(kernel), Some(log)) = (kernels.get(i), logs.get(i)) else {
                        break;
                    };
                    let started = Instant::now();
                    let result = boot(kernel, initrd, limit, log);
                    eprintln!(
                        "vm-test: TIME {}: {} in {:.1} s",
                        kernel.package,
                        if result.is_ok() {
                            "booted and ran every scenario"
                        } else {
                            "failed"
                        },
                        started.elapsed().as_secs_f64()
                    );
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
    });
    drop(tx);
    let mut results: Vec<(usize, Result<Vec<String>>)> = rx.into_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

pub(super) fn boot(
    kernel: &Kernel,
    initrd: &Path,
    limit: Duration,
    log: &Path,
) -> Result<Vec<String>> {
    eprintln!(
        "vm-test: booting {} under TCG (limit {} s)",
        kernel.package,
        limit.as_secs()
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
    ])
    // No NIC: the scenarios use loopback only, and the NIC's boot ROM costs time.
    .args(["-nic", "none", "-kernel"])
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    // loglevel=4 keeps routine kernel messages off the console but shows warnings.
    .args(["-append", "console=ttyS0 panic=-1 loglevel=4"]);
    let label = kernel
        .package
        .trim_start_matches("linux-image-")
        .trim_end_matches(CLOUD_SUFFIX);
    let (lines, status) = run_bounded(qemu, limit, log, label)?;
    if !lines.iter().any(|l| l.contains("CAPSPY-VM-END")) {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(String::as_str)
            .collect();
        bail!(
            "the VM stopped ({status}) before its init finished; last console lines:\n{}",
            tail.join("\n")
        );
    }
    Ok(lines)
}

/// The same scenarios on this machine's kernel with `--hook tracepoint`, with the initramfs's
/// busybox and capprobe first in PATH.
pub(super) fn run_native(stage: &Path, capspy: &Path, log: &Path) -> Result<Vec<String>> {
    let work = std::env::temp_dir().join(format!("capspy-vm-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let path = std::env::join_paths(
        std::iter::once(stage.join("bin")).chain(std::env::split_paths(cmd::child_path())),
    )?;
    let mut sh = Command::new(stage.join("bin/busybox"));
    sh.args(["sh"])
        .arg(stage.join("scenarios.sh"))
        .arg("tracepoint")
        .env("PATH", path)
        .env("CAPSPY", capspy)
        .env("WORK", &work);
    eprintln!("vm-test: running the scenarios natively with --hook tracepoint");
    let result = run_bounded(sh, Duration::from_mins(2), log, "native");
    let _ = fs::remove_dir_all(&work);
    let (mut lines, status) = result?;
    ensure!(status.success(), "the native scenarios failed: {status}");
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    lines.insert(0, format!("CAPSPY-NATIVE-BEGIN {}", release.trim()));
    Ok(lines)
}

/// Kills the process group it leads when dropped: on timeouts, errors and panics alike.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            if let Ok(pgid) = i32::try_from(self.0.id()) {
                // SAFETY: kill(2) on the process group this program created for the child.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` in a process group of its own with stdout captured line by line (echoed briefly
/// and written to `log`), and kills the group when `limit` runs out.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    log: &Path,
    label: &str,
) -> Result<(Vec<String>, ExitStatus)> {
    let deadline = Instant::now() + limit;
    let mut log_file =
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    // Its own group keeps Ctrl-C from reaching it: it dies with xtask instead.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let shown = cmd::display(&cmd);
    eprintln!("+ {shown}");
    let mut child = KillOnDrop(
        cmd.spawn()
            .with_context(|| format!("cannot start `{shown}`"))?,
    );
    let stdout = child.0.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                writeln!(log_file, "{line}")?;
                echo(label, &line);
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(child);
                bail!(
                    "{label}: no end within {} s: killed it (output so far in {})",
                    limit.as_secs(),
                    log.display()
                );
            }
        }
    }
    // Output closed: the process is exiting, but still only wait until the deadline.
    loop {
        if let Some(status) = child.0.try_wait()? {
            return Ok((lines, status));
        }
        if Instant::now() >= deadline {
            drop(child);
            bail!("{label}: closed its output but did not exit within the limit: killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
