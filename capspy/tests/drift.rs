//! Drift monitoring against a real Docker engine: baselines saved from the store, `capspy watch`
//! alerting on real containers, its metrics scraped over loopback, and `capspy diff` on real
//! files. Needs root and `dockerd`/`docker` (CI installs them); an engine is started here if none
//! runs, and then stopped here, by pid. Every container is removed by id.
//!
//! One test function runs the scenarios in order: they share the engine, the image and the watch
//! daemon, and each depends on what the one before left (the baseline, the alerts so far).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

mod common;

use common::{Cleanup, Daemon, alerts, docker};

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");
const IMAGE: &str = common::BUSYBOX;
/// The promise: an alert within 2 seconds of the check.
const ALERT_WITHIN: Duration = Duration::from_secs(2);

/// `docker run -d` a container on loopback only; its id goes to the cleanup list.
fn run_container(cleanup: &mut Cleanup, name: &str, script: &str) -> String {
    cleanup.run_detached(IMAGE, name, script)
}

fn remove_container(id: &str) {
    docker(&["rm", "-f", id]);
}

fn capspy(args: &[&str]) -> Output {
    Command::new(CAPSPY).args(args).output().unwrap()
}

fn alerts_of(file: &Path, workload: &str, kind: &str) -> Vec<Value> {
    alerts(file)
        .into_iter()
        .filter(|a| a["workload"] == workload && a["kind"] == kind)
        .collect()
}

/// Polls the alerts file until `want` holds or `limit` passes; the time it first held.
fn wait_for(file: &Path, limit: Duration, want: impl Fn(&[Value]) -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if want(&alerts(file)) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One sample of the exposition: metric name and labels.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// GET /metrics, its samples.
fn scrape(url: &str) -> Samples {
    let body = common::get_metrics(url);
    parse_openmetrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// A strict reading of the OpenMetrics text format (prometheus-client has no parser): `# TYPE`
/// before a family's samples, at most one `# HELP`, samples named after their family and type,
/// contiguous families never repeated, well-formed escaped labels, numeric values, non-negative
/// counters, and `# EOF` as the very last line.
fn parse_openmetrics(text: &str) -> Result<Samples, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with `# EOF`")?;
    let mut samples = Samples::new();
    let mut families: Vec<(String, String)> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(kind), Some(name)) = (kind, name) else {
                return Err(at("bad descriptor"));
            };
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            match kind {
                "TYPE" => {
                    let t = rest.ok_or_else(|| at("TYPE without a type"))?;
                    let known = [
                        "counter",
                        "gauge",
                        "info",
                        "stateset",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "unknown",
                    ];
                    if !known.contains(&t) {
                        return Err(at("unknown type"));
                    }
                    if families.iter().any(|(f, _)| f == name) {
                        return Err(at("family described twice"));
                    }
                    families.push((name.to_string(), t.to_string()));
                }
                "HELP" => {
                    if helped.iter().any(|h| h == name) {
                        return Err(at("second HELP"));
                    }
                    helped.push(name.to_string());
                }
                "UNIT" => {}
                _ => return Err(at("unknown descriptor")),
            }
            continue;
        }
        let (family, kind) = families
            .last()
            .ok_or_else(|| at("sample before any TYPE"))?;
        let (name, labels, value) = parse_sample(line).map_err(|e| at(&e))?;
        let allowed: Vec<String> = match kind.as_str() {
            "counter" => vec![format!("{family}_total"), format!("{family}_created")],
            "info" => vec![format!("{family}_info")],
            _ => vec![family.clone()],
        };
        if !allowed.contains(&name) {
            return Err(at(&format!("sample does not belong to family {family}")));
        }
        if kind == "counter" && value < 0.0 {
            return Err(at("negative counter"));
        }
        if samples.insert((name, labels), value).is_some() {
            return Err(at("duplicate sample"));
        }
    }
    Ok(samples)
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("bad sample name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            // label name
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if !valid_name(&key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    Some('\n') | None => return Err("unterminated label value".into()),
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(key, value).is_some() {
                return Err("repeated label".into());
            }
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("expected , or } after a label".into()),
            }
        }
        let end = end.ok_or("unterminated label set")?;
        rest = &inner[end + 1..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = value.split(' ');
    let v = fields.next().unwrap_or_default();
    let number = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields (exemplars are not expected here)".into());
    }
    Ok((name.to_string(), labels, number))
}

fn sample(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    s.get(&(name.to_string(), want)).copied().unwrap_or(0.0)
}

/// What the scenarios share.
struct Ctx {
    cleanup: Cleanup,
    dir: PathBuf,
    pinger: String,
    pinger_workload: String,
    alerts: PathBuf,
    baselines: PathBuf,
}

#[test]
fn watch_alerts_on_drift_and_new_workloads() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("capspy-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = Cleanup::new(dir.clone());
    common::ensure_busybox(&dir);
    let tag = common::letters_tag();
    let pinger = format!("capspy-d-pinger-{tag}");
    let mut t = Ctx {
        cleanup,
        pinger_workload: format!("image:{IMAGE}/{pinger}"),
        pinger,
        alerts: dir.join("alerts.jsonl"),
        baselines: dir.join("baselines"),
        dir,
    };

    baseline_a_pinger(&mut t);
    let watch = Daemon::watch(
        &t.dir.join("watch.db"),
        &t.baselines,
        &t.alerts,
        &["--metrics", "127.0.0.1:0"],
    );
    let url = watch.metrics_url();
    let before = scrape(&url);
    assert!((sample(&before, "capspy_map_capacity", &[]) - 32_768.0).abs() < 0.5);
    assert!((sample(&before, "capspy_baselines", &[]) - 1.0).abs() < 0.5);
    assert!(
        before
            .keys()
            .any(|(name, labels)| name == "capspy_hook_info" && labels.contains_key("method")),
        "{before:?}"
    );

    the_baselined_behaviour_is_silent(&mut t);
    chown_outside_the_baseline_alerts_once_within_2s(&mut t, &watch);
    a_workload_without_baseline_is_new(&mut t);

    let after = scrape(&url);
    metrics_moved(&t, &before, &after);
    assert!(watch.stop().success());
    diff_exit_codes_on_real_files(&t);
    eprintln!("drift test took {:?}", started.elapsed());
}

fn baseline_a_pinger(t: &mut Ctx) {
    let store = t.dir.join("base.db");
    let record = Daemon::record(&store);
    let id = run_container(&mut t.cleanup, &t.pinger, "ping -c 2 127.0.0.1");
    docker(&["wait", &id]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(record.stop().success());
    remove_container(&id);

    let out = capspy(&[
        "baseline",
        "save",
        &t.pinger,
        "--to",
        t.baselines.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let files: Vec<PathBuf> = std::fs::read_dir(&t.baselines)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // The key has '/' and ':'; the file stays in the folder, named safely.
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let json = Path::new(name).extension().is_some_and(|e| e == "json");
    assert!(!name.contains(':') && json, "{name}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(doc["subject"]["key"], t.pinger_workload.as_str(), "{doc:#}");
    assert_eq!(doc["required"], serde_json::json!(["NET_RAW"]), "{doc:#}");
    let check = capspy(&["baseline", "check", t.baselines.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
}

fn the_baselined_behaviour_is_silent(t: &mut Ctx) {
    let id = run_container(&mut t.cleanup, &t.pinger, "ping -c 2 127.0.0.1");
    docker(&["wait", &id]);
    // Longer than the promise, and a few sweeps.
    std::thread::sleep(ALERT_WITHIN + Duration::from_millis(500));
    remove_container(&id);
    let mine: Vec<Value> = alerts(&t.alerts)
        .into_iter()
        .filter(|a| a["workload"] == t.pinger_workload.as_str())
        .collect();
    assert!(mine.is_empty(), "the baselined ping alerted: {mine:#?}");
}

fn chown_outside_the_baseline_alerts_once_within_2s(t: &mut Ctx, watch: &Daemon) {
    // Pings as in the baseline, then waits for the go signal to chown, three times.
    let id = run_container(
        &mut t.cleanup,
        &t.pinger,
        "ping -c 1 127.0.0.1; while [ ! -e /tmp/go ]; do sleep 0.02; done; \
         touch /tmp/f; chown 1 /tmp/f; chown 2 /tmp/f; chown 3 /tmp/f; sleep 2",
    );
    std::thread::sleep(Duration::from_secs(1));
    // The clock starts before the signal is even sent: an upper bound on the latency.
    let signalled = Instant::now();
    let signalled_at = SystemTime::now();
    docker(&["exec", &id, "touch", "/tmp/go"]);
    let workload = t.pinger_workload.clone();
    let seen = wait_for(&t.alerts, Duration::from_secs(10), |all| {
        all.iter()
            .any(|a| a["workload"] == workload.as_str() && a["kind"] == "drift")
    })
    .expect("no drift alert within 10 s");
    let latency = seen - signalled;
    eprintln!("drift alert {latency:?} after the chown was signalled");
    assert!(latency < ALERT_WITHIN, "the alert took {latency:?}");

    docker(&["wait", &id]);
    std::thread::sleep(Duration::from_millis(600));
    let drift = alerts_of(&t.alerts, &t.pinger_workload, "drift");
    assert_eq!(drift.len(), 1, "exactly one drift alert: {drift:#?}");
    let a = &drift[0];
    assert_eq!(a["capability"], "CHOWN", "{a:#}");
    assert_eq!(a["verdict"], "granted", "{a:#}");
    assert_eq!(a["bucket"], "app", "{a:#}");
    assert_eq!(a["process"]["comm"], "chown", "{a:#}");
    assert!(a["process"]["pid"].as_u64().unwrap() > 0, "{a:#}");
    assert_eq!(a["container"]["id"], id.as_str(), "{a:#}");
    assert_eq!(a["container"]["name"], t.pinger.as_str(), "{a:#}");
    assert_eq!(
        a["baseline_required"],
        serde_json::json!(["NET_RAW"]),
        "{a:#}"
    );
    assert_eq!(a["source"], "ring_buffer", "{a:#}");
    // The check's own time (from the kernel) is after the signal and within the promise.
    let check_ms = a["latency_ms"].as_u64().unwrap();
    assert!(check_ms < 2000, "{a:#}");
    let signalled_ms = signalled_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // (50 ms for the kernel's boot clock against the wall clock.)
    let earliest = rfc3339_ms(signalled_ms - 50);
    assert!(a["time"].as_str().unwrap() >= earliest.as_str(), "{a:#}");
    assert!(
        alerts_of(&t.alerts, &t.pinger_workload, "new_workload").is_empty(),
        "a baselined workload is not new"
    );
    // The log line on stderr names the same.
    assert!(
        watch.lines().iter().any(|l| l.contains("ALERT drift")
            && l.contains(&t.pinger)
            && l.contains("CHOWN")
            && l.contains("\"chown\"")),
        "{:#?}",
        watch.lines()
    );
    remove_container(&id);
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch, to compare with alert times
/// as strings (same format, same width).
fn rfc3339_ms(ms: u128) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    format!(
        "{}.{:03}Z",
        String::from_utf8(out.stdout).unwrap().trim(),
        ms % 1000
    )
}

fn a_workload_without_baseline_is_new(t: &mut Ctx) {
    let name = t.pinger.replace("pinger", "fresh");
    let workload = format!("image:{IMAGE}/{name}");
    let id = run_container(&mut t.cleanup, &name, "ping -c 1 127.0.0.1");
    let seen = wait_for(&t.alerts, Duration::from_secs(10), |all| {
        all.iter()
            .any(|a| a["workload"] == workload.as_str() && a["kind"] == "new_workload")
    });
    assert!(
        seen.is_some(),
        "no new_workload alert: {:#?}",
        alerts(&t.alerts)
    );
    docker(&["wait", &id]);
    std::thread::sleep(Duration::from_millis(600));
    let new = alerts_of(&t.alerts, &workload, "new_workload");
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0]["baseline"], Value::Null);
    assert_eq!(new[0]["container"]["id"], id.as_str());
    // Without a baseline nothing is allowed: its ping is reported once, as drift.
    let used = alerts_of(&t.alerts, &workload, "drift");
    assert_eq!(used.len(), 1, "{used:#?}");
    assert_eq!(used[0]["capability"], "NET_RAW");
    remove_container(&id);
}

fn metrics_moved(t: &Ctx, before: &Samples, after: &Samples) {
    let w = t.pinger_workload.as_str();
    let raw = [
        ("workload", w),
        ("capability", "NET_RAW"),
        ("verdict", "granted"),
        ("bucket", "app"),
    ];
    assert!(
        sample(after, "capspy_checks_total", &raw)
            >= sample(before, "capspy_checks_total", &raw) + 2.0,
        "NET_RAW checks of {w} did not move: {after:#?}"
    );
    let drift = [("kind", "drift")];
    assert!(
        sample(after, "capspy_drift_alerts_total", &drift)
            >= sample(before, "capspy_drift_alerts_total", &drift) + 2.0
    );
    assert!(
        sample(
            after,
            "capspy_drift_alerts_total",
            &[("kind", "new_workload")]
        ) >= 1.0
    );
    // Three chowns, one alert: the repeats are counted.
    let chown = [("workload", w), ("capability", "CHOWN"), ("kind", "drift")];
    assert!(
        sample(after, "capspy_drift_checks_total", &chown) >= 3.0,
        "{after:#?}"
    );
    for ring in ["sightings", "cgroups"] {
        let labels = BTreeMap::from([("ring".to_string(), ring.to_string())]);
        assert!(
            after.contains_key(&("capspy_ringbuf_lost_total".to_string(), labels)),
            "{after:#?}"
        );
    }
    assert!(after.contains_key(&("capspy_map_overflow_total".to_string(), BTreeMap::new())));
    assert!(sample(after, "capspy_map_entries", &[]) >= 1.0);
}

fn diff_exit_codes_on_real_files(t: &Ctx) {
    let baseline = std::fs::read_dir(&t.baselines)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let base = baseline.to_str().unwrap();
    let store = t.dir.join("watch.db");
    // The workload as the watch daemon recorded it: ping and chown.
    let current = t.dir.join("current.json");
    let out = capspy(&[
        "profile",
        &t.pinger,
        "--format",
        "json",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&current, &out.stdout).unwrap();
    let cur = current.to_str().unwrap();

    let same = capspy(&["diff", base, base]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stdout).contains("result: no drift"));

    let drift = capspy(&["diff", base, cur]);
    assert_eq!(drift.status.code(), Some(1), "{drift:?}");
    let text = String::from_utf8_lossy(&drift.stdout);
    assert!(
        text.contains("drift: needs CHOWN beyond the baseline"),
        "{text}"
    );

    let json = capspy(&["diff", base, cur, "--format", "json"]);
    assert_eq!(json.status.code(), Some(1), "{json:?}");
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["drift"], true);
    assert_eq!(v["added"], serde_json::json!(["CHOWN"]));

    // Needing less than the baseline is no drift.
    let less = capspy(&["diff", cur, base]);
    assert_eq!(less.status.code(), Some(0), "{less:?}");

    // With --store, names instead of files.
    let named = capspy(&["diff", base, &t.pinger, "--store", store.to_str().unwrap()]);
    assert_eq!(named.status.code(), Some(1), "{named:?}");

    // Errors: exit 2 with one line naming the file, never a panic.
    let text = std::fs::read_to_string(&baseline).unwrap();
    let truncated = t.dir.join("truncated.json");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let foreign = t.dir.join("image-inspect.json");
    std::fs::write(&foreign, docker(&["image", "inspect", IMAGE]).stdout).unwrap();
    let missing = t.dir.join("missing.json");
    for (file, why) in [
        (&truncated, "truncated"),
        (&foreign, "not a capspy profile"),
        (&missing, "No such file"),
    ] {
        let out = capspy(&["diff", base, file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {out:?}", file.display());
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A truncated baseline is named with its line and column.
    let out = capspy(&["diff", truncated.to_str().unwrap(), base]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    let pattern = format!("{}:", truncated.display());
    let tail = stderr.split(&pattern).nth(1).unwrap_or_default();
    let mut numbers = tail.split(':').take(2).map(str::parse::<usize>);
    assert!(
        matches!((numbers.next(), numbers.next()), (Some(Ok(_)), Some(Ok(_)))),
        "no line:column in {stderr}"
    );
}
