//! Helpers to spawn child processes with a consistent environment.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `$CARGO_HOME/bin`, where rustup and `cargo install` put binaries.
pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
        .join("bin")
}

/// Whether `$CARGO_HOME/bin` is already one of the entries of the current PATH.
pub fn path_has_cargo_bin() -> bool {
    let bin = cargo_bin_dir();
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d == bin))
}

/// PATH for children: the current one with `$CARGO_HOME/bin` in front when missing, so that
/// build scripts find `bpf-linker` and nested `cargo`/`rustup` calls resolve.
pub fn child_path() -> &'static OsString {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        let current = env::var_os("PATH").unwrap_or_default();
        if path_has_cargo_bin() {
            return current;
        }
        let dirs = std::iter::once(cargo_bin_dir()).chain(env::split_paths(&current));
        env::join_paths(dirs).unwrap_or(current)
    })
}

/// Finds `name` in the children's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(child_path())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A command with the children's PATH, whose stdout goes to our stderr: xtask's own stdout
/// is left to capspy (`cargo xtask run -- ... > profile` must stay clean).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", child_path())
        .stdout(Stdio::from(std::io::stderr()));
    cmd
}

/// `cargo` (the same one that runs xtask), run in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = command(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Human-readable form of a command for logs.
pub fn display(cmd: &Command) -> String {
    let mut s = String::new();
    for (key, value) in cmd.get_envs() {
        // PATH is set on every child; showing it would drown the command.
        if key != "PATH"
            && let Some(value) = value
        {
            let _ = write!(s, "{}={} ", key.display(), value.display());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd`, echoing it first, and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, failing unless it exits successfully.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// Effective uid of this process, from /proc (avoids a libc dependency).
pub fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn is_root() -> bool {
    euid() == Some(0)
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else what `cargo metadata` reports (which also
/// honours `build.target-dir` in config files).
pub fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        // Relative to the cwd of the cargo that uses it, which is the workspace root here.
        return Ok(if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        });
    }
    let json = output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    json_string_field(&json, "target_directory")
        .map(PathBuf::from)
        .context("no target_directory in `cargo metadata` output")
}

/// Extracts the string value of a top-level `"key":"..."` from compact JSON. Enough for
/// `cargo metadata`, without pulling a JSON library into xtask.
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_string_field;

    #[test]
    fn parses_target_directory() {
        let json = r#"{"packages":[],"target_directory":"/a/b \"c\"\\d\u00e9","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/a/b \"c\"\\d\u{e9}")
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }
}
