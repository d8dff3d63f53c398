//! The initramfs each VM boots: busybox, capspy with its libraries, capprobe and the scripts.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, ensure};

use crate::cmd;

/// Busybox applets the init script and the scenarios call.
const APPLETS: &[&str] = &[
    "cat", "chown", "echo", "grep", "ip", "kill", "mkdir", "mount", "ping", "poweroff", "printf",
    "rm", "sed", "sh", "sleep", "tr", "true", "umount", "uname",
];

/// Fails early, naming the Debian package, when a tool is missing. Returns busybox's path.
pub(super) fn check_tools() -> Result<PathBuf> {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
        ("gcc", "build-essential"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("mknod", "coreutils"),
        ("ldd", "libc-bin"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| cmd::which(tool).is_none())
        .map(|(tool, pkg)| format!("{tool} (package {pkg})"))
        .collect();
    ensure!(missing.is_empty(), "vm-test needs: {}", missing.join(", "));
    let busybox =
        cmd::which("busybox").context("vm-test needs busybox (package busybox-static)")?;
    let elf = fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    ensure!(
        !elf_has_interpreter(&elf),
        "{} is dynamically linked: the initramfs needs a static one (package busybox-static)",
        busybox.display()
    );
    Ok(busybox)
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP header (is dynamically linked).
fn elf_has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| u32_at(phoff + i * usize::from(phentsize)) == Some(PT_INTERP))
}

fn vm_dir() -> PathBuf {
    cmd::workspace_root().join("xtask").join("vm")
}

pub(super) fn build_initramfs(
    stage: &Path,
    initrd: &Path,
    capspy: &Path,
    busybox: &Path,
) -> Result<()> {
    let _ = fs::remove_dir_all(stage);
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(stage.join(dir))?;
    }
    let bin = stage.join("bin");
    copy(busybox, &bin.join("busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    copy(capspy, &bin.join("capspy"))?;
    // capspy links glibc dynamically: its libraries go where ldd found them.
    let ldd = cmd::output(Command::new("ldd").arg(capspy))?;
    for lib in shared_libraries(&ldd) {
        let inside = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(inside.parent().unwrap_or(stage))?;
        copy(&lib, &inside)?;
    }
    let source = vm_dir().join("capprobe.c");
    cmd::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(bin.join("capprobe"))
            .arg(&source),
    )?;
    copy(&vm_dir().join("init"), &stage.join("init"))?;
    fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;
    copy(&vm_dir().join("scenarios.sh"), &stage.join("scenarios.sh"))?;
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    cmd::run(
        Command::new("mknod")
            .arg(stage.join("dev/console"))
            .args(["c", "5", "1"]),
    )?;

    let cpio = initrd.with_extension("cpio");
    pack_cpio(stage, &cpio)?;
    let _ = fs::remove_file(initrd);
    cmd::run(Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio))?;
    fs::rename(cpio.with_extension("cpio.gz"), initrd)?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the loader,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO has no file.
fn shared_libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `find . | cpio -o -H newc` in `stage`, with the file list made here.
fn pack_cpio(stage: &Path, out: &Path) -> Result<()> {
    let mut list = String::new();
    let mut dirs = vec![PathBuf::from(".")];
    while let Some(dir) = dirs.pop() {
        let _ = writeln!(list, "{}", dir.display());
        for entry in fs::read_dir(stage.join(&dir))? {
            let entry = entry?;
            let rel = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                dirs.push(rel);
            } else {
                let _ = writeln!(list, "{}", rel.display());
            }
        }
    }
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting cpio")?;
    let written = cpio
        .stdin
        .take()
        .context("cpio's stdin")?
        .write_all(list.as_bytes());
    let status = cpio.wait()?;
    written.context("writing the file list to cpio")?;
    ensure!(status.success(), "cpio failed: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            shared_libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn elf_interpreter_is_detected() {
        let mut elf = vec![0u8; 0x100];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20] = 0x40; // e_phoff
        elf[0x36] = 0x38; // e_phentsize
        elf[0x38] = 2; // e_phnum
        elf[0x40] = 1; // PT_LOAD
        assert!(!elf_has_interpreter(&elf));
        elf[0x40 + 0x38] = 3; // PT_INTERP
        assert!(elf_has_interpreter(&elf));
        assert!(!elf_has_interpreter(b"#!/bin/sh"));
    }
}
