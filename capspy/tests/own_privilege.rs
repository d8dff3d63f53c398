//! capspy measured by capspy: `capspy watch` needs what its recipes (dist/capspy.service,
//! dist/Dockerfile, dist/kubernetes/daemonset.yaml) grant, `privilege::DAEMON_CAPABILITIES`,
//! plus NET_ADMIN asked only by the loader's probe of XDP device maps, which is left out. Fails
//! when capspy starts needing another capability or stops needing one of them. Needs root.

use std::collections::BTreeSet;
use std::process::Command;

use capspy::kernel::privilege::DAEMON_CAPABILITIES;
use capspy::model::caps::Capability;
use serde_json::Value;

const CAPSPY: &str = env!("CARGO_BIN_EXE_capspy");

#[test]
fn the_daemon_needs_what_its_recipes_grant() {
    let dir = std::env::temp_dir().join(format!("capspy-own-{}", std::process::id()));
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let report = dir.join("self.json");
    let out = Command::new(CAPSPY)
        .args(["run", "--format", "json", "--output"])
        .arg(&report)
        .args(["--", CAPSPY, "watch", "--baseline"])
        .arg(&baselines)
        .arg("--store")
        .arg(dir.join("x.db"))
        .args(["--duration", "2s", "--metrics", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let required: BTreeSet<String> = doc["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut want: BTreeSet<String> = DAEMON_CAPABILITIES
        .iter()
        .map(ToString::to_string)
        .collect();
    want.insert(Capability::NET_ADMIN.to_string());
    assert_eq!(required, want, "{doc:#}");
    let net_admin = doc["explanations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["capability"] == "NET_ADMIN")
        .unwrap();
    let path = net_admin["evidence"]["call_path"].to_string();
    assert!(
        path.contains("map_create"),
        "NET_ADMIN from elsewhere: {net_admin:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
