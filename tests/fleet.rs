//! wonk as a platform team runs it: `wonk agent` on a staged node (a ghost bind mount, a directory index filled
//! until creates fail, threads in D state, all in pod shop/web-0, and a containerd shim leaked by a real
//! containerd, tests/node, from pod shop/leaky-0), scraped by a real Prometheus (Debian's
//! package) with the scrape job the Prometheus Operator generates for deploy/'s ServiceMonitor (its target labels
//! name the wonk pod, `wonk/wonk-x7k2p`), wonk's alert rules loaded, and every query of the Grafana dashboard
//! (deploy/grafana/wonk-dashboard.json) evaluated through Prometheus's HTTP API.

#![cfg(feature = "cri")]

#[macro_use]
mod common;
mod node;

use common::agent::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The wonk pod the ServiceMonitor's target labels name: never the pod an alert is about.
const WONK_POD: &str = "wonk-x7k2p";

fn tools(test: &str) -> bool {
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    have("prometheus", test)
        && present_or_skip(
            test,
            ok(Command::new("kubectl").args(["version", "--client"]))
                && ok(Command::new("python3").args(["-c", "import yaml"])),
            "kubectl and python3 with PyYAML (scripts/test installs them)",
        )
}

fn result(v: &Value) -> Vec<Value> {
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Polls `q` until it returns series for which `ok` holds, or fails after `secs` naming what it last saw.
fn wait_query(port: u16, q: &str, secs: u64, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < end {
        last = prom_query(port, q);
        let r = result(&last);
        if !r.is_empty() && ok(&r) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{q}: not seen within {secs} s; last answer: {last}");
}

/// Every query of a Grafana dashboard: (panel title, expr), rows' panels included.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("").to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn a_staged_node_through_the_servicemonitor_alerts_and_dashboard() {
    let test = "a_staged_node_through_the_servicemonitor_alerts_and_dashboard";
    if !root_or_skip(test) || !tools(test) {
        return;
    }
    let mut s = Scratch::new("fleet");
    // A shim leaked by a real containerd (tests/node), whose pod is gone.
    let node = node::Node::get();
    let victim = node.pod(node::PodOpts::new(
        "leaky-0",
        "shop",
        node::Handler::Cgroupfs,
    ));
    let shim = node.leak_shim(&victim);
    // kubelet's root on a small ext4 without large_dir: the pod's emptyDir is there.
    let (mnt, _) = s.ext4("kubelet", "256M", "-b 1024 -O ^large_dir");
    stage_ghost(&mut s);
    let cache = mnt.join(format!(
        "pods/{GHOST_UID}/volumes/kubernetes.io~empty-dir/cache"
    ));
    std::fs::create_dir_all(&cache).unwrap();
    // Threads in D state in a second container of the same pod.
    let worker = "e".repeat(56) + "0dd5ea7e";
    let dpids = s.d_state(2);
    let mut cg = String::new();
    for p in &dpids {
        cg = s.cgroup(&format!("kubepods/burstable/pod{GHOST_UID}/{worker}"), *p);
    }
    s.bundle(
        "state",
        &worker,
        &Pod::new("shop", "web-0", GHOST_UID, &ghost_sandbox())
            .container("worker")
            .cgroup(&cg)
            .spec(),
    );

    let Staged {
        proc: mut a,
        port,
        listen,
        log,
    } = staged_agent(&s, &mnt, &[]);
    // After the agent started, so that its kernel-log follower sees the index fill up.
    fill_to_enospc(&cache);
    let subject = cache.display().to_string();
    let shim_subject = format!("pid {}", shim.pid);
    wait_metrics(port, 60, "the staged node's findings", |m| {
        values(
            m,
            "wonk_finding",
            &[("check", "shims"), ("kind", "leaked"), ("pod", "leaky-0")],
        )
        .len()
            == 1
            && value(m, "wonk_shims_leaked_resident_bytes", &[]).is_some_and(|v| v > 0.0)
            && value(m, "wonk_finding", &[("check", "ghosts"), ("pod", "web-0")]).is_some()
            && value(m, "wonk_htree_failing_ratio", &[("path", &subject)]).is_some_and(|v| v > 0.0)
            && value(
                m,
                "wonk_dstate_threads",
                &[("pod", "web-0"), ("container", "worker")],
            ) == Some(2.0)
    });

    // Prometheus scrapes it with the job the operator generates for the kube-prometheus-stack overlay's
    // ServiceMonitor; Kubernetes discovery is replaced by a static target carrying the wonk pod's metadata.
    let meta = json!({
        "__meta_kubernetes_namespace": "wonk",
        "__meta_kubernetes_service_name": "wonk",
        "__meta_kubernetes_pod_name": WONK_POD,
        "__meta_kubernetes_pod_container_name": "wonk",
        "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_endpoint_port_name": "metrics",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": WONK_POD,
    });
    let out = Command::new("python3")
        .arg(repo("tests/deploy/scrape_config.py"))
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("kube-prometheus-stack")
        .arg(&listen)
        .arg(meta.to_string())
        .arg(repo("deploy/prometheus/wonk-rules.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = s.write(
        "prom/prometheus.yml",
        &String::from_utf8(out.stdout).unwrap(),
    );
    let (_prom, pp) = prometheus(&s, &cfg);

    // The finding's pod, not wonk's, on every series about a pod; wonk's own series carry wonk's pod.
    // Other tests on this machine may stage ghosts of their own: ours is found by its path.
    let ghost_path = s.s("root/data.txt");
    let ghost = wait_query(
        pp,
        &format!(r#"wonk_finding{{check="ghosts",subject="{ghost_path}"}}"#),
        60,
        |_| true,
    );
    assert_eq!(ghost.len(), 1, "{ghost:?}");
    let m = &ghost[0]["metric"];
    assert_eq!(
        (&m["namespace"], &m["pod"], &m["container"], &m["kind"]),
        (
            &json!("shop"),
            &json!("web-0"),
            &json!("app"),
            &json!("deleted")
        ),
        "{m}"
    );
    assert_eq!(m["subject"], s.s("root/data.txt"), "{m}");
    assert_eq!(
        (&m["job"], &m["instance"], &m["service"], &m["endpoint"]),
        (
            &json!("wonk"),
            &json!("node-1"),
            &json!("wonk"),
            &json!("metrics")
        ),
        "the operator's target labels: {m}"
    );
    assert!(
        m.get("exported_pod").is_none() && m.get("exported_namespace").is_none(),
        "{m}"
    );
    let runs = wait_query(pp, r#"wonk_check_runs_total{check="ghosts"}"#, 10, |_| true);
    assert_eq!(runs[0]["metric"]["pod"], WONK_POD, "{runs:?}");
    assert_eq!(runs[0]["metric"]["namespace"], "wonk", "{runs:?}");
    let htree = wait_query(
        pp,
        &format!(r#"wonk_htree_failing_ratio{{path="{subject}"}}"#),
        30,
        |_| true,
    );
    assert_eq!(htree[0]["metric"]["pod"], "web-0", "{htree:?}");
    // No series about a pod names the wonk pod, and none had its labels renamed.
    for q in [
        format!(
            r#"{{__name__=~"wonk_finding|wonk_ghost_mounts|wonk_htree_.*|wonk_dstate_threads|wonk_pod_.*", pod="{WONK_POD}"}}"#
        ),
        r#"{exported_pod!=""}"#.to_string(),
        r#"{exported_namespace!=""}"#.to_string(),
    ] {
        assert!(
            result(&prom_query(pp, &q)).is_empty(),
            "{q}: {}",
            prom_query(pp, &q)
        );
    }

    // The alerts name the finding's pod and subject (other tests on this machine may raise alerts of their own:
    // ours are found by subject).
    let want = [
        ("WonkHtreeIndexFull", "firing", "web-0"),
        ("WonkKernelIndexFullEvents", "firing", "web-0"),
        ("WonkGhostMount", "pending", "web-0"),
        ("WonkLeakedShims", "pending", "leaky-0"),
    ];
    let ours = [ghost_path.as_str(), subject.as_str(), shim_subject.as_str()];
    let find = |alerts: &Value, name: &str, state: &str| -> Option<Value> {
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|x| {
                x["labels"]["alertname"] == name
                    && x["state"] == state
                    && ours
                        .iter()
                        .any(|o| x["labels"]["subject"] == *o || x["labels"]["path"] == *o)
            })
            .cloned()
    };
    let end = Instant::now() + Duration::from_secs(60);
    let mut alerts = Value::Null;
    while Instant::now() < end {
        alerts = prom_alerts(pp);
        if want.iter().all(|(n, st, _)| find(&alerts, n, st).is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (name, state, pod) in want {
        let a =
            find(&alerts, name, state).unwrap_or_else(|| panic!("{name} not {state}: {alerts:#}"));
        assert_eq!(a["labels"]["pod"], pod, "{name}: {a:#}");
        assert_eq!(a["labels"]["namespace"], "shop", "{name}: {a:#}");
        let d = a["annotations"]["description"].as_str().unwrap();
        assert!(d.contains(&format!("shop/{pod}")), "{name}: {d}");
        let runbook = a["annotations"]["runbook_url"].as_str().unwrap();
        assert_eq!(runbook, format!("docs/RUNBOOK.md#{}", name.to_lowercase()));
    }
    let shim_alert = find(&alerts, "WonkLeakedShims", "pending").unwrap();
    assert!(
        shim_alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains(&format!("The containerd shim {shim_subject} ")),
        "{shim_alert:#}"
    );
    let ghost_alert = find(&alerts, "WonkGhostMount", "pending").unwrap();
    assert!(
        ghost_alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains(&s.s("root/data.txt")),
        "{ghost_alert:#}"
    );
    let htree_alert = find(&alerts, "WonkHtreeIndexFull", "firing").unwrap();
    assert!(htree_alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .starts_with(&subject));
    let kmsg_alert = find(&alerts, "WonkKernelIndexFullEvents", "firing").unwrap();
    assert_eq!(kmsg_alert["labels"]["subject"], subject, "{kmsg_alert:#}");
    assert!(
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["labels"]["pod"] != WONK_POD),
        "no alert names the wonk pod: {alerts:#}"
    );

    // Every panel of the dashboard returns series, with the node variable at "all" and Grafana's rate window.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/wonk-dashboard.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 20, "{queries:?}");
    for (title, expr) in &queries {
        let q = expr
            .replace("$node", ".*")
            .replace("$__rate_interval", "1m");
        let r = wait_query(pp, &q, 30, |_| true);
        assert!(!r.is_empty(), "{title}: {q}");
    }

    let (code, _) = a.term();
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}
