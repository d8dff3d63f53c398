//! Reading a `docker run ...` command line well enough to rewrite it: where `run` is, which
//! options take a value (so the image is found, not guessed), which options `capspy verify` must
//! replace, and where `capspy run --container` adds `--cidfile`. The container's own command,
//! after the image, is never touched.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::model::caps::Capability;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DockerArgsError {
    #[error("verify runs `docker run ...`: the command must start with docker (got {0:?})")]
    NotDocker(String),
    #[error("no `run` subcommand in the docker command (expected `docker run ...`)")]
    NoRun,
    #[error("docker option {0} needs a value")]
    MissingValue(String),
    #[error(
        "unknown docker run option {0}: verify must know whether it takes a value; write it as {0}=VALUE if it does"
    )]
    UnknownOption(String),
    #[error("no image in the docker run command")]
    NoImage,
    #[error(
        "--privileged grants every capability, so no profile can be verified under it: remove it"
    )]
    Privileged,
    #[error("verify needs each container's exit status: remove {0} (-d/--detach returns at once)")]
    Detached(String),
}

/// `docker run` options that take no value (docker 20.10 to 28).
const RUN_BOOL_LONG: &[&str] = &[
    "detach",
    "disable-content-trust",
    "help",
    "init",
    "interactive",
    "no-healthcheck",
    "oom-kill-disable",
    "privileged",
    "publish-all",
    "quiet",
    "read-only",
    "rm",
    "sig-proxy",
    "tty",
    "use-api-socket",
];

/// `docker run` options that take a value.
const RUN_VALUE_LONG: &[&str] = &[
    "add-host",
    "annotation",
    "attach",
    "blkio-weight",
    "blkio-weight-device",
    "cap-add",
    "cap-drop",
    "cgroup-parent",
    "cgroupns",
    "cidfile",
    "cpu-count",
    "cpu-percent",
    "cpu-period",
    "cpu-quota",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpu-shares",
    "cpus",
    "cpuset-cpus",
    "cpuset-mems",
    "detach-keys",
    "device",
    "device-cgroup-rule",
    "device-read-bps",
    "device-read-iops",
    "device-write-bps",
    "device-write-iops",
    "dns",
    "dns-option",
    "dns-search",
    "domainname",
    "entrypoint",
    "env",
    "env-file",
    "expose",
    "gpus",
    "group-add",
    "health-cmd",
    "health-interval",
    "health-retries",
    "health-start-interval",
    "health-start-period",
    "health-timeout",
    "hostname",
    "io-maxbandwidth",
    "io-maxiops",
    "ip",
    "ip6",
    "ipc",
    "isolation",
    "kernel-memory",
    "label",
    "label-file",
    "link",
    "link-local-ip",
    "log-driver",
    "log-opt",
    "mac-address",
    "memory",
    "memory-reservation",
    "memory-swap",
    "memory-swappiness",
    "mount",
    "name",
    "net",
    "net-alias",
    "network",
    "network-alias",
    "oom-score-adj",
    "pid",
    "pids-limit",
    "platform",
    "publish",
    "pull",
    "restart",
    "runtime",
    "security-opt",
    "shm-size",
    "stop-signal",
    "stop-timeout",
    "storage-opt",
    "sysctl",
    "tmpfs",
    "ulimit",
    "user",
    "userns",
    "uts",
    "volume",
    "volume-driver",
    "volumes-from",
    "workdir",
];

/// Short forms: (letter, long name).
const RUN_SHORT: &[(char, &str)] = &[
    ('a', "attach"),
    ('c', "cpu-shares"),
    ('d', "detach"),
    ('e', "env"),
    ('h', "hostname"),
    ('i', "interactive"),
    ('l', "label"),
    ('m', "memory"),
    ('p', "publish"),
    ('P', "publish-all"),
    ('q', "quiet"),
    ('t', "tty"),
    ('u', "user"),
    ('v', "volume"),
    ('w', "workdir"),
];

/// docker's global options (before the subcommand) that take a value, and podman's.
const GLOBAL_VALUE: &[&str] = &[
    "-H",
    "--host",
    "-c",
    "--context",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    // podman
    "--url",
    "--connection",
    "--root",
    "--runroot",
];

/// What an option is to verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `--cap-add`/`--cap-drop`: replaced by the profile's.
    Capability,
    /// `--rm`, `--cidfile`: verify sets its own, so runs clean up after themselves.
    Housekeeping,
    Other,
}

/// One option as written: its argv words (one, or flag and value).
#[derive(Clone, Debug)]
struct Opt {
    /// Its long name (`name` for `--name`).
    name: &'static str,
    words: Vec<OsString>,
    role: Role,
}

/// A parsed `docker [GLOBAL OPTIONS] [container] run [OPTIONS] IMAGE [COMMAND...]`.
#[derive(Clone, Debug)]
pub struct DockerRun {
    /// Up to and including `run`.
    prefix: Vec<OsString>,
    /// How much of `prefix` is `docker` and its global options.
    client_len: usize,
    options: Vec<Opt>,
    /// From the image on, untouched (a `--` before the image is kept with it).
    image_and_command: Vec<OsString>,
}

/// How an option word reads: its long name, and an attached value if any.
struct Parsed {
    name: &'static str,
    attached: Option<OsString>,
}

impl DockerRun {
    pub fn parse(argv: &[OsString]) -> Result<Self, DockerArgsError> {
        let program = argv.first().ok_or(DockerArgsError::NoRun)?;
        let base = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base != "docker" {
            return Err(DockerArgsError::NotDocker(
                program.to_string_lossy().into_owned(),
            ));
        }
        let (client_len, run_at) = find_run(argv)?;
        let prefix = argv[..=run_at].to_vec();
        let mut options = Vec::new();
        let mut i = run_at + 1;
        while i < argv.len() {
            let word = &argv[i];
            let text = word.to_string_lossy();
            if text == "--" {
                break;
            }
            if !text.starts_with('-') || text == "-" {
                break;
            }
            let parsed = classify(&text)?;
            let mut words = vec![word.clone()];
            let takes_value = RUN_VALUE_LONG.contains(&parsed.name);
            if takes_value && parsed.attached.is_none() {
                let value = argv
                    .get(i + 1)
                    .ok_or_else(|| DockerArgsError::MissingValue(text.to_string()))?;
                words.push(value.clone());
                i += 1;
            }
            check_allowed(&parsed, &text)?;
            let role = match parsed.name {
                "cap-add" | "cap-drop" => Role::Capability,
                "rm" | "cidfile" => Role::Housekeeping,
                _ => Role::Other,
            };
            options.push(Opt {
                name: parsed.name,
                words,
                role,
            });
            i += 1;
        }
        if i >= argv.len() || (argv[i] == "--" && i + 1 >= argv.len()) {
            return Err(DockerArgsError::NoImage);
        }
        Ok(Self {
            prefix,
            client_len,
            options,
            image_and_command: argv[i..].to_vec(),
        })
    }

    /// The command as written (its own capability flags included): the unrestricted run.
    pub fn unchanged(&self, cidfile: &Path) -> Vec<OsString> {
        self.build(None, cidfile)
    }

    /// The command under `--cap-drop ALL --cap-add ...` for exactly `caps`, in place of the
    /// capability flags it had.
    pub fn with_caps(&self, caps: &[Capability], cidfile: &Path) -> Vec<OsString> {
        self.build(Some(caps), cidfile)
    }

    /// Whether the container outlives the run under a fixed name (`--name` without `--rm`): the
    /// same command then fails the next time, the name being taken.
    pub fn leaves_a_named_container(&self) -> bool {
        let removed = self.options.iter().any(|o| {
            o.name == "rm"
                && o.words
                    .first()
                    .is_none_or(|w| !w.to_string_lossy().ends_with("=false"))
        });
        !removed && self.options.iter().any(|o| o.name == "name")
    }

    /// The command as written, with `--rm` added after `run` when it would leave a named
    /// container, so that it can run again; None when it says `--rm=false`.
    pub fn rerunnable(&self) -> Option<Vec<OsString>> {
        let kept = self.options.iter().any(|o| {
            o.name == "rm"
                && o.words
                    .first()
                    .is_some_and(|w| w.to_string_lossy().ends_with("=false"))
        });
        if kept {
            return None;
        }
        let mut out = self.prefix.clone();
        if self.leaves_a_named_container() {
            out.push("--rm".into());
        }
        for opt in &self.options {
            out.extend(opt.words.iter().cloned());
        }
        out.extend(self.image_and_command.iter().cloned());
        Some(out)
    }

    /// `docker` and its global options, for other docker commands (`docker rm`).
    pub fn client(&self) -> Vec<OsString> {
        self.prefix[..self.client_len].to_vec()
    }

    /// The command's own capability flags, as written (what a restricted run replaces).
    pub fn capability_flags(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| o.role == Role::Capability)
            .map(|o| join_lossy(&o.words))
            .collect()
    }

    /// The `--rm`/`--cidfile` options verify replaced with its own.
    pub fn housekeeping_flags(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| o.role == Role::Housekeeping)
            .map(|o| join_lossy(&o.words))
            .filter(|w| w != "--rm" && w != "--rm=true")
            .collect()
    }

    fn build(&self, caps: Option<&[Capability]>, cidfile: &Path) -> Vec<OsString> {
        let mut out = self.prefix.clone();
        out.push("--rm".into());
        out.push("--cidfile".into());
        out.push(cidfile.as_os_str().to_owned());
        if let Some(caps) = caps {
            out.extend(docker_flags(caps).into_iter().map(OsString::from));
        }
        for opt in &self.options {
            let keep = match opt.role {
                Role::Other => true,
                Role::Capability => caps.is_none(),
                Role::Housekeeping => false,
            };
            if keep {
                out.extend(opt.words.iter().cloned());
            }
        }
        out.extend(self.image_and_command.iter().cloned());
        out
    }
}

/// For `docker|podman [global options] [container] run ...`: the command with
/// `--cidfile CIDFILE` added after `run`, and the file the client will write the new container's
/// id to. When the command passes `--cidfile` already, it is kept and that file is read. None for
/// any other command.
pub fn with_cidfile(argv: &[OsString], cidfile: &Path) -> Option<(Vec<OsString>, PathBuf)> {
    let client = Path::new(argv.first()?).file_name()?;
    if client != "docker" && client != "podman" {
        return None;
    }
    let (_, run_at) = find_run(argv).ok()?;
    let mut i = run_at + 1;
    while let Some(word) = argv.get(i) {
        let text = word.to_string_lossy();
        if text == "--" || !text.starts_with('-') || text == "-" {
            break;
        }
        // An option we do not know could take a value: stop looking rather than misread.
        let Ok(parsed) = classify(&text) else { break };
        if parsed.name == "cidfile" {
            let given = parsed.attached.or_else(|| argv.get(i + 1).cloned())?;
            return Some((argv.to_vec(), PathBuf::from(given)));
        }
        if RUN_VALUE_LONG.contains(&parsed.name) && parsed.attached.is_none() {
            i += 1;
        }
        i += 1;
    }
    let mut with = argv[..=run_at].to_vec();
    with.push("--cidfile".into());
    with.push(cidfile.as_os_str().to_owned());
    with.extend(argv[run_at + 1..].iter().cloned());
    Some((with, cidfile.to_path_buf()))
}

/// `--cap-drop ALL` and one `--cap-add` per capability, in the order given.
pub fn docker_flags(caps: &[Capability]) -> Vec<String> {
    let mut flags = vec!["--cap-drop".to_string(), "ALL".to_string()];
    for cap in caps {
        flags.push("--cap-add".into());
        flags.push(cap.name());
    }
    flags
}

fn join_lossy(words: &[OsString]) -> String {
    words
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where global options end, and the index of `run` (as in `docker run` or
/// `docker container run`).
fn find_run(argv: &[OsString]) -> Result<(usize, usize), DockerArgsError> {
    let mut i = 1;
    while i < argv.len() {
        let word = argv[i].to_string_lossy();
        if word.starts_with('-') {
            if GLOBAL_VALUE.contains(&word.as_ref()) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if word == "run" {
            return Ok((i, i));
        }
        if word == "container" && argv.get(i + 1).is_some_and(|w| w == OsStr::new("run")) {
            return Ok((i, i + 1));
        }
        return Err(DockerArgsError::NoRun);
    }
    Err(DockerArgsError::NoRun)
}

/// Reads one option word as docker's flag parser (pflag) does: `--name`, `--name=value`, `-x`,
/// `-xVALUE`, `-x=VALUE`, or a cluster of single-letter flags like `-it`, where the last may take
/// a value. Returns the option that decides whether the next word is a value.
fn classify(word: &str) -> Result<Parsed, DockerArgsError> {
    if let Some(long) = word.strip_prefix("--") {
        let (name, attached) = match long.split_once('=') {
            Some((n, v)) => (n, Some(OsString::from(v))),
            None => (long, None),
        };
        let known = RUN_BOOL_LONG
            .iter()
            .chain(RUN_VALUE_LONG)
            .find(|k| **k == name)
            .ok_or_else(|| DockerArgsError::UnknownOption(format!("--{name}")))?;
        return Ok(Parsed {
            name: known,
            attached,
        });
    }
    let letters: Vec<char> = word[1..].chars().collect();
    for (k, letter) in letters.iter().enumerate() {
        let name = RUN_SHORT
            .iter()
            .find(|(l, _)| l == letter)
            .map(|(_, n)| *n)
            .ok_or_else(|| DockerArgsError::UnknownOption(format!("-{letter}")))?;
        let rest: String = letters[k + 1..].iter().collect();
        let is_value = RUN_VALUE_LONG.contains(&name);
        if is_value || rest.starts_with('=') || rest.is_empty() {
            let attached = if rest.is_empty() {
                None
            } else {
                Some(OsString::from(rest.strip_prefix('=').unwrap_or(&rest)))
            };
            return Ok(Parsed { name, attached });
        }
        // A boolean letter followed by more letters: check it now, carry on with the rest.
        check_allowed(
            &Parsed {
                name,
                attached: None,
            },
            word,
        )?;
    }
    Err(DockerArgsError::UnknownOption(word.to_string()))
}

/// Options no verification can run under.
fn check_allowed(parsed: &Parsed, word: &str) -> Result<(), DockerArgsError> {
    let on = parsed
        .attached
        .as_ref()
        .is_none_or(|v| !matches!(v.to_str(), Some("false" | "0" | "False" | "FALSE")));
    match parsed.name {
        "privileged" if on => Err(DockerArgsError::Privileged),
        "detach" if on => Err(DockerArgsError::Detached(word.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(s: &str) -> Option<String> {
        let argv: Vec<OsString> = s.split(' ').map(OsString::from).collect();
        let (cmd, path) = with_cidfile(&argv, Path::new("/t/cid"))?;
        assert_eq!(path, Path::new("/t/cid"));
        Some(words(&cmd).join(" "))
    }

    #[test]
    fn docker_run_gets_a_cidfile() {
        assert_eq!(
            added("docker run --rm img sh -c x").as_deref(),
            Some("docker run --cidfile /t/cid --rm img sh -c x")
        );
        assert_eq!(
            added("/usr/bin/docker -H unix:///r.sock --debug container run -d img").as_deref(),
            Some("/usr/bin/docker -H unix:///r.sock --debug container run --cidfile /t/cid -d img")
        );
        assert_eq!(
            added("podman run img").as_deref(),
            Some("podman run --cidfile /t/cid img")
        );
        // `--cidfile` in the container's command is the container's business.
        assert_eq!(
            added("docker run -e A=1 img prog --cidfile x").as_deref(),
            Some("docker run --cidfile /t/cid -e A=1 img prog --cidfile x")
        );
    }

    #[test]
    fn a_given_cidfile_is_used_as_is() {
        for s in [
            &["docker", "run", "--name", "x", "--cidfile", "/u/id", "img"][..],
            &["docker", "run", "--cidfile=/u/id", "img"],
        ] {
            let (cmd, path) = with_cidfile(&argv(s), Path::new("/t/cid")).unwrap();
            assert_eq!(cmd, argv(s));
            assert_eq!(path, Path::new("/u/id"));
        }
    }

    #[test]
    fn other_commands_get_no_cidfile() {
        for s in [
            "docker compose up",
            "docker start web",
            "docker",
            "docker --host",
            "sh -c docker-run",
            "nerdctl run img",
            "docker -H run",
        ] {
            assert_eq!(added(s), None, "{s}");
        }
    }

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn words(v: &[OsString]) -> Vec<String> {
        v.iter().map(|w| w.to_string_lossy().into_owned()).collect()
    }

    fn parse(s: &[&str]) -> Result<DockerRun, DockerArgsError> {
        DockerRun::parse(&argv(s))
    }

    const CID: &str = "/tmp/v/run-1.cid";

    fn restricted(s: &[&str], caps: &[Capability]) -> Vec<String> {
        words(&parse(s).unwrap().with_caps(caps, Path::new(CID)))
    }

    #[test]
    fn flags_go_after_run_and_before_the_image() {
        let got = restricted(
            &[
                "docker",
                "run",
                "--network",
                "none",
                "img:1",
                "sh",
                "-c",
                "x",
            ],
            &[Capability::NET_RAW],
        );
        assert_eq!(
            got,
            [
                "docker",
                "run",
                "--rm",
                "--cidfile",
                CID,
                "--cap-drop",
                "ALL",
                "--cap-add",
                "NET_RAW",
                "--network",
                "none",
                "img:1",
                "sh",
                "-c",
                "x"
            ]
        );
    }

    #[test]
    fn no_capabilities_is_drop_all_alone() {
        let got = restricted(&["docker", "run", "img"], &[]);
        assert_eq!(
            got,
            [
                "docker",
                "run",
                "--rm",
                "--cidfile",
                CID,
                "--cap-drop",
                "ALL",
                "img"
            ]
        );
    }

    #[test]
    fn the_users_capability_flags_are_replaced_not_added_to() {
        let cmd = [
            "docker",
            "run",
            "--cap-add",
            "SYSLOG",
            "--cap-add=NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--cap-drop=NET_RAW",
            "img",
        ];
        let got = restricted(&cmd, &[Capability::SYSLOG]);
        assert_eq!(
            got[5..],
            ["--cap-drop", "ALL", "--cap-add", "SYSLOG", "img"],
            "{got:?}"
        );
        let run = parse(&cmd).unwrap();
        assert_eq!(
            run.capability_flags(),
            [
                "--cap-add SYSLOG",
                "--cap-add=NET_ADMIN",
                "--cap-drop ALL",
                "--cap-drop=NET_RAW"
            ]
        );
        // The unrestricted run keeps them: it is the command as written.
        let unchanged = words(&run.unchanged(Path::new(CID)));
        assert_eq!(
            unchanged[5..9],
            ["--cap-add", "SYSLOG", "--cap-add=NET_ADMIN", "--cap-drop"]
        );
    }

    #[test]
    fn the_containers_own_command_is_never_touched() {
        // After the image, `--cap-add` and `run` are the container's arguments.
        let got = restricted(
            &[
                "docker",
                "run",
                "img",
                "prog",
                "--cap-add",
                "SYS_ADMIN",
                "--privileged",
                "-d",
            ],
            &[],
        );
        assert_eq!(
            got[7..],
            [
                "img",
                "prog",
                "--cap-add",
                "SYS_ADMIN",
                "--privileged",
                "-d"
            ]
        );
    }

    #[test]
    fn option_values_are_not_mistaken_for_the_image_or_for_flags() {
        // `-e`'s value starts with a dash and names a capability flag: still just a value.
        let got = restricted(
            &[
                "docker",
                "run",
                "-e",
                "--cap-add=SYS_ADMIN",
                "--name",
                "run",
                "-v",
                "/a:/b",
                "--sysctl",
                "net.ipv4.ip_unprivileged_port_start=1024",
                "img",
            ],
            &[],
        );
        assert_eq!(
            got[7..],
            [
                "-e",
                "--cap-add=SYS_ADMIN",
                "--name",
                "run",
                "-v",
                "/a:/b",
                "--sysctl",
                "net.ipv4.ip_unprivileged_port_start=1024",
                "img"
            ]
        );
    }

    #[test]
    fn short_flags_read_as_docker_reads_them() {
        let got = restricted(
            &[
                "docker",
                "run",
                "-it",
                "-p8080:80",
                "-e=A=1",
                "-ue",
                "1000",
                "img",
            ],
            &[],
        );
        // `-ue 1000`: -u takes "e" as its value, so 1000 is the image.
        assert_eq!(
            got[7..],
            ["-it", "-p8080:80", "-e=A=1", "-ue", "1000", "img"]
        );
        let got = restricted(&["docker", "run", "-ti", "-e", "A=1", "img", "x"], &[]);
        assert_eq!(got[7..], ["-ti", "-e", "A=1", "img", "x"]);
        // A cluster ending in a value flag takes the next word: `-ie A=1`.
        let got = restricted(&["docker", "run", "-ie", "A=1", "img"], &[]);
        assert_eq!(got[7..], ["-ie", "A=1", "img"]);
    }

    #[test]
    fn container_run_global_options_and_paths_are_understood() {
        let got = restricted(
            &[
                "/usr/bin/docker",
                "-H",
                "unix:///run/docker.sock",
                "--debug",
                "container",
                "run",
                "img",
            ],
            &[Capability::CHOWN],
        );
        assert_eq!(
            got[..5],
            [
                "/usr/bin/docker",
                "-H",
                "unix:///run/docker.sock",
                "--debug",
                "container"
            ]
        );
        assert_eq!(got[5], "run");
        assert_eq!(got[9..], ["--cap-drop", "ALL", "--cap-add", "CHOWN", "img"]);
        let run = parse(&["docker", "-c", "container", "container", "run", "img"]).unwrap();
        assert_eq!(words(&run.client()), ["docker", "-c", "container"]);
    }

    #[test]
    fn a_double_dash_before_the_image_stays_with_it() {
        let got = restricted(&["docker", "run", "--rm", "--", "img", "x"], &[]);
        assert_eq!(got[7..], ["--", "img", "x"]);
    }

    #[test]
    fn rm_and_cidfile_are_verifys_own() {
        let run = parse(&[
            "docker",
            "run",
            "--rm=false",
            "--cidfile",
            "/x.cid",
            "--rm",
            "img",
        ])
        .unwrap();
        let got = words(&run.unchanged(Path::new(CID)));
        assert_eq!(got, ["docker", "run", "--rm", "--cidfile", CID, "img"]);
        assert_eq!(run.housekeeping_flags(), ["--rm=false", "--cidfile /x.cid"]);
    }

    #[test]
    fn a_named_container_without_rm_is_left_behind() {
        let left = |words: &[&str]| parse(words).unwrap().leaves_a_named_container();
        assert!(left(&["docker", "run", "--name", "web", "img"]));
        assert!(left(&["docker", "run", "--name=web", "--rm=false", "img"]));
        assert!(!left(&["docker", "run", "--rm", "--name", "web", "img"]));
        assert!(!left(&["docker", "run", "img", "--name", "x"]));
        assert!(!left(&["docker", "run", "img"]));
    }

    #[test]
    fn a_rerunnable_command_is_removed_after_it_ran() {
        let again = |w: &[&str]| parse(w).unwrap().rerunnable().map(|v| words(&v));
        assert_eq!(
            again(&[
                "docker",
                "-H",
                "unix:///x",
                "run",
                "--name",
                "web",
                "img",
                "--rm"
            ])
            .unwrap(),
            [
                "docker",
                "-H",
                "unix:///x",
                "run",
                "--rm",
                "--name",
                "web",
                "img",
                "--rm"
            ]
        );
        assert_eq!(
            again(&["docker", "run", "--rm", "--name", "web", "img"]).unwrap(),
            ["docker", "run", "--rm", "--name", "web", "img"]
        );
        assert_eq!(
            again(&["docker", "run", "--name=web", "--rm=false", "img"]),
            None
        );
    }

    #[test]
    fn commands_verify_cannot_run_are_errors() {
        use DockerArgsError as E;
        assert!(matches!(
            parse(&["podman", "run", "img"]),
            Err(E::NotDocker(_))
        ));
        assert_eq!(parse(&["docker", "ps"]).unwrap_err(), E::NoRun);
        assert_eq!(parse(&["docker"]).unwrap_err(), E::NoRun);
        assert_eq!(parse(&["docker", "run", "--rm"]).unwrap_err(), E::NoImage);
        assert_eq!(parse(&["docker", "run", "--"]).unwrap_err(), E::NoImage);
        assert_eq!(
            parse(&["docker", "run", "--name"]).unwrap_err(),
            E::MissingValue("--name".into())
        );
        assert_eq!(
            parse(&["docker", "run", "--privileged", "img"]).unwrap_err(),
            E::Privileged
        );
        assert_eq!(
            parse(&["docker", "run", "-dit", "img"]).unwrap_err(),
            E::Detached("-dit".into())
        );
        assert_eq!(
            parse(&["docker", "run", "--detach", "img"]).unwrap_err(),
            E::Detached("--detach".into())
        );
        assert_eq!(
            parse(&["docker", "run", "--frobnicate", "img"]).unwrap_err(),
            E::UnknownOption("--frobnicate".into())
        );
        assert_eq!(
            parse(&["docker", "run", "-Z", "img"]).unwrap_err(),
            E::UnknownOption("-Z".into())
        );
        // Explicitly off is fine.
        assert!(parse(&["docker", "run", "--privileged=false", "-d=false", "img"]).is_ok());
    }
}
