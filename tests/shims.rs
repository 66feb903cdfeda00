//! `wonk shims` on real containerd pods: a shim leaked the way the seed's were (containerd's own PR 9004
//! reproduction: strace delays the shim's umount2 while the pod is stopped and removed through CRI), next to
//! healthy pods. Needs root and the `cri` feature.
#![cfg(feature = "cri")]

#[macro_use]
mod common;
mod node;

use common::*;
use node::{Handler, Node, PodOpts};
use serde_json::Value;
use std::time::{Duration, Instant};

fn shims(node: &Node, extra: &[&str]) -> (i32, Value) {
    let kr = node.kubelet_root.display().to_string();
    // CRI gets more time than by default: a loaded CI machine must not turn "no" into "no answer".
    let mut args = vec![
        "shims",
        "--min-age",
        "0",
        "--cri-timeout",
        "5000",
        "--kubelet-root",
        &kr,
    ];
    args.extend_from_slice(extra);
    wonk_json(&args)
}

#[test]
fn a_leaked_shim_is_found_and_reaped_and_nothing_else() {
    require_root!();
    let node = Node::get();
    let healthy = node.pod(PodOpts::new("steady-0", "shop", Handler::Cgroupfs));
    let victim = node.pod(PodOpts::new("leaky-0", "shop", Handler::Cgroupfs));
    assert_eq!(
        victim.shim_pids.len(),
        1,
        "one v2 shim per pod: {:?}",
        victim.shim_pids
    );
    let shim = victim.shim_pids[0];
    let (_, before) = shims(node, &[]);
    assert_eq!(shim_by_pid(&before, shim)["class"], "healthy", "{before:#}");
    let _shim_guard = node.leak_shim(&victim);
    let cri = node.cri();
    let listed = cri.list_pod_sandbox(None).unwrap();
    assert!(
        !listed.iter().any(|s| s.id == victim.sandbox_id),
        "CRI still lists the removed pod"
    );

    let (code, r) = shims(node, &[]);
    assert_eq!(code, 1, "{r:#}");
    let stats = &r["checks"][0]["stats"];
    assert_eq!(stats["leaked"], 1, "{stats}");
    assert!(
        stats["running_sandboxes"].as_u64().unwrap() >= 1,
        "the healthy pod's sandbox: {stats}"
    );
    assert!(stats["leaked_threads"].as_u64().unwrap() > 1, "{stats}");
    let s = shim_by_pid(&r, shim);
    assert_eq!(s["class"], "leaked", "{s:#}");
    // CRI answers: it no longer lists the pod, and says so.
    assert_eq!(
        s["cri_lists"], false,
        "{s:#}\nblind spots: {:#}",
        r["blind_spots"]
    );
    assert!(
        s["why"].as_str().unwrap().ends_with("CRI lists it: no"),
        "{s:#}"
    );
    assert!(s["children"].as_array().unwrap().is_empty());
    assert_eq!(s["id"], victim.sandbox_id.as_str());
    assert_eq!(s["owner"]["pod_uid"], victim.uid.as_str(), "{s:#}");
    assert_eq!(s["owner"]["pod"], "leaky-0");
    assert_eq!(s["owner"]["namespace"], "shop");
    let bundles = s["bundles"].as_array().unwrap();
    assert!(!bundles.is_empty(), "{s:#}");
    assert!(
        bundles
            .iter()
            .all(|b| b["init_pid_alive"] == false && b["rootfs_empty"] == true),
        "{s:#}"
    );
    assert!(s["rss_kib"].as_u64().unwrap() > 0 && s["threads"].as_u64().unwrap() > 1);
    for p in &healthy.shim_pids {
        assert_eq!(shim_by_pid(&r, *p)["class"], "healthy", "{r:#}");
        assert_eq!(shim_by_pid(&r, *p)["cri_lists"], true, "{r:#}");
    }
    let findings: Vec<&Value> = r["findings"].as_array().unwrap().iter().collect();
    assert_eq!(findings.len(), 1, "{r:#}");
    assert_eq!(findings[0]["kind"], "leaked");
    assert_eq!(findings[0]["evidence"]["pid"], shim);
    assert_eq!(findings[0]["evidence"]["cri_lists"], false);

    // Why it leaked: containerd's own log (its output, captured by the node in a box) names the shim's ids in
    // the lines that tell of the timeout, and the finding quotes them with their times.
    let log = node.dir.join("containerd.log");
    let (_, r) = shims(node, &["--containerd-log", &log.display().to_string()]);
    let s = shim_by_pid(&r, shim);
    let lines = s["containerd_log"]["lines"].as_array().unwrap_or_else(|| {
        panic!(
            "no containerd_log for the leaked shim: {s:#}\n{}",
            node.log_tail()
        )
    });
    let timeout = lines
        .iter()
        .find(|l| l["timeout"] == true)
        .unwrap_or_else(|| panic!("no timeout line: {s:#}"));
    assert!(
        timeout["line"]
            .as_str()
            .unwrap()
            .contains("context deadline exceeded"),
        "{timeout:#}"
    );
    assert!(
        timeout["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{timeout:#}"
    );
    assert!(
        timeout["line"]
            .as_str()
            .unwrap()
            .contains(victim.sandbox_id.as_str())
            || s["bundles"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| timeout["line"]
                    .as_str()
                    .unwrap()
                    .contains(b["id"].as_str().unwrap())),
        "{timeout:#}"
    );
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["evidence"]["pid"] == shim)
        .unwrap();
    assert!(
        f["advice"][0]
            .as_str()
            .unwrap()
            .contains("context deadline exceeded"),
        "{f:#}"
    );
    assert_eq!(f["evidence"]["containerd_log"], s["containerd_log"]);
    // The healthy pod's shim gets no log lines.
    for p in &healthy.shim_pids {
        assert!(shim_by_pid(&r, *p).get("containerd_log").is_none(), "{r:#}");
    }

    // Without --yes and without a terminal, --reap refuses and kills nothing.
    let (_, r) = shims(node, &["--reap"]);
    assert!(r.get("actions").is_none(), "{r:#}");
    assert!(std::path::Path::new(&format!("/proc/{shim}")).exists());

    let (_, r) = shims(node, &["--reap", "--yes"]);
    let actions = r["actions"].as_array().unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(actions.len(), 1, "{r:#}");
    assert_eq!(actions[0]["pid"], shim);
    assert_eq!(actions[0]["result"], "killed");
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{shim}/cmdline")).exists()
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{shim}/cmdline")).exists(),
        "the leaked shim survived"
    );
    for p in &healthy.shim_pids {
        assert!(
            std::path::Path::new(&format!("/proc/{p}")).exists(),
            "a healthy shim was killed"
        );
    }
    assert!(std::path::Path::new(&format!("/proc/{}", healthy.pid)).exists());
}
