//! Drift alerts through the engines operators already run: `capspy watch --metrics` on loopback
//! with a baseline, a real Prometheus (Debian's `prometheus`) scraping it and evaluating
//! dist/prometheus/capspy-rules.yaml, a real Alertmanager (`prometheus-alertmanager`) delivering
//! to a webhook receiver this test runs on loopback. A container goes beyond its baseline; the
//! test waits for the CapspyDrift alert to arrive with its workload and capability labels.
//!
//! Needs root, Docker, and both Debian packages (CI installs them); every process it starts is
//! stopped by pid, every container removed by id. Everything listens on 127.0.0.1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{Cleanup, Daemon, http_get, signal};

const IMAGE: &str = common::BUSYBOX;
/// From the container's chown to the webhook: one scrape, one evaluation, group_wait, under load.
const DELIVERED_WITHIN: Duration = Duration::from_secs(40);

/// A daemon we started, stopped by its pid (SIGTERM, then SIGKILL after 10 s).
struct Spawned {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Spawned {
    fn start(name: &'static str, program: &str, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Self { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `GET url` until it answers 200, or fails with the daemon's log.
    fn wait_ready(&mut self, url: &str) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            if http_get(url).is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} not ready at {url}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                signal(&self.child, libc::SIGKILL);
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A port free on loopback now (the daemons take it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The webhook receiver: every POSTed body, as Alertmanager sent it.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Some(body) = read_post(stream) {
                sink.lock().unwrap().push(body);
            }
        }
    });
    (port, received)
}

/// One HTTP/1.1 request: its JSON body, answered with 200.
fn read_post(stream: TcpStream) -> Option<Value> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// The alerts of every delivered notification, flattened.
fn delivered(received: &Mutex<Vec<Value>>) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The baseline allows NET_RAW only, as `capspy baseline save` would write it after a ping.
fn write_baseline(dir: &Path, workload: &str) -> PathBuf {
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let baseline = serde_json::json!({
        "schema_version": 2,
        "subject": { "kind": "workload", "key": workload, "containers": [] },
        "hook": "store",
        "required": ["NET_RAW"],
        "checks": [],
    });
    std::fs::write(baselines.join("web.json"), baseline.to_string()).unwrap();
    baselines
}

/// Alertmanager on loopback, no cluster, posting every group (after 1 s) to the webhook.
fn start_alertmanager(dir: &Path, hook_port: u16) -> (Spawned, u16) {
    let port = free_port();
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: test\n  group_by: [alertname, workload, capability]\n  \
             group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n"
        ),
    )
    .unwrap();
    let mut alertmanager = Spawned::start(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // No cluster: no gossip port on every interface.
            "--cluster.listen-address=".into(),
        ],
        dir,
    );
    alertmanager.wait_ready(&format!("http://127.0.0.1:{port}/-/ready"));
    (alertmanager, port)
}

/// Prometheus on loopback scraping `target` and evaluating the shipped rules every second.
fn start_prometheus(dir: &Path, target: &str, am_port: u16) -> (Spawned, u16) {
    let rules =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/prometheus/capspy-rules.yaml");
    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: capspy\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let mut prometheus = Spawned::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir,
    );
    prometheus.wait_ready(&format!("http://127.0.0.1:{port}/-/ready"));
    (prometheus, port)
}

#[test]
fn a_drift_alert_reaches_alertmanager_through_prometheus() {
    for tool in ["prometheus", "prometheus-alertmanager"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!(
                "SKIPPED: {tool} is not installed (apt-get install prometheus prometheus-alertmanager)"
            );
            return;
        }
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("capspy-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup::new(dir.clone());
    common::ensure_busybox(&dir);
    let tag = common::letters_tag();
    let name = format!("capspy-alert-{tag}");
    let workload = format!("image:{IMAGE}/{name}");

    let baselines = write_baseline(&dir, &workload);
    let (hook_port, received) = webhook_receiver();
    let (alertmanager, am_port) = start_alertmanager(&dir, hook_port);

    let watch = Daemon::watch(
        &dir.join("watch.db"),
        &baselines,
        &dir.join("alerts.jsonl"),
        &["--metrics", "127.0.0.1:0"],
    );
    let url = watch.metrics_url();
    let target = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");

    let (prometheus, prom_port) = start_prometheus(&dir, target, am_port);

    // The workload pings (its baseline) and then chowns a file: drift.
    cleanup.run_detached(
        IMAGE,
        &name,
        "ping -c 1 127.0.0.1; touch /tmp/f; chown 1000 /tmp/f; sleep 60",
    );

    let chowned = Instant::now();
    let ours = |a: &Value| a["labels"]["workload"] == workload.as_str();
    let alert = loop {
        if let Some(a) = delivered(&received)
            .into_iter()
            .find(|a| ours(a) && a["labels"]["alertname"] == "CapspyDrift")
        {
            break a;
        }
        assert!(
            chowned.elapsed() < DELIVERED_WITHIN,
            "no CapspyDrift alert for {workload} delivered within {DELIVERED_WITHIN:?}; \
             delivered: {:#?}\nwatch: {:?}\nprometheus alerts: {:?}\nalertmanager:\n{}",
            delivered(&received),
            watch.lines(),
            http_get(&format!("http://127.0.0.1:{prom_port}/api/v1/alerts")),
            alertmanager.log(),
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("delivered {:?} after the chown", chowned.elapsed());
    assert_eq!(alert["status"], "firing", "{alert:#}");
    assert_eq!(alert["labels"]["capability"], "CHOWN", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("used CHOWN outside its baseline")),
        "{alert:#}"
    );
    // What the baseline allows never alerts.
    let allowed: Vec<Value> = delivered(&received)
        .into_iter()
        .filter(|a| ours(a) && a["labels"]["capability"] == "NET_RAW")
        .collect();
    assert!(allowed.is_empty(), "{allowed:#?}");

    drop(prometheus);
    drop(alertmanager);
    assert!(watch.stop().success());
    drop(cleanup);
    eprintln!("alerts test took {:?}", started.elapsed());
}
