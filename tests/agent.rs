//! `wonk agent` for real: a ghost bind mount (attributed to a pod through a bundle and a cgroup) and a full
//! htree index on a loop-mounted ext4, read from /metrics; the same series through a real Prometheus (Debian's
//! package) and its query API, with wonk's alert rules loaded; the rules' own unit tests with promtool; the NPD
//! plugin protocol. The kernel-log flood soak is tests/agent_soak.rs.

mod common;

use common::agent::*;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn have(tool: &str, test: &str) -> bool {
    if Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {tool} (Debian package prometheus), and CI=true");
    }
    eprintln!("skipping {test}: {tool} is not installed (apt-get install prometheus)");
    false
}

/// Stages a ghost file mount in a pod (namespace shop, pod web-0, container app) and returns the sleeping pid.
fn stage_ghost(s: &mut Scratch) -> u32 {
    let uid = "6f1c2b3a-0000-4d5e-8f90-aabbccddeeff";
    let cid = "c".repeat(56) + "0badcafe";
    let sid = "d".repeat(64);
    s.write("host/data.txt", "v1\n");
    s.write("root/data.txt", "");
    let pid = s.spawn_ns(&format!(
        "mount --bind {}/data.txt {}/data.txt",
        s.s("host"),
        s.s("root")
    ));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    let mounts = json!([{"destination": s.s("root/data.txt"), "type": "bind",
                          "source": s.s("host/data.txt"), "options": ["rbind"]}]);
    s.bundle(
        "state",
        &cid,
        &spec("container", "shop", "web-0", uid, "app", &sid, &cg, mounts),
    );
    s.bundle(
        "state",
        &sid,
        &spec("sandbox", "shop", "web-0", uid, "", &sid, "", json!([])),
    );
    s.write("host/new.txt", "v2\n");
    s.sh(&format!("mv -f {0}/new.txt {0}/data.txt", s.s("host")));
    pid
}

const GHOST: &[(&str, &str)] = &[
    ("namespace", "shop"),
    ("pod", "web-0"),
    ("container", "app"),
    ("kind", "deleted"),
];

/// The agent with every interval at 1 s: ghost, htree and kernel-log series with the right values, a check that
/// panics on every run shows in the error metrics without taking the agent down, the textfile, a pod's series
/// going with the pod, SIGTERM. Then Prometheus scrapes it and evaluates wonk's alert rules on the same series.
#[test]
fn agent_metrics_through_prometheus() {
    if !root_or_skip("agent_metrics_through_prometheus") {
        return;
    }
    let mut s = Scratch::new("agent");
    let (mnt, dev) = s.ext4("fs", "256M", "-b 1024 -O ^large_dir");
    let dev = dev.trim_start_matches("/dev/").to_string();
    let dir = mnt.join("app/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let dirs = dir.display().to_string();
    std::fs::create_dir_all(s.path("textfile")).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = s.path("agent.log");
    let mut a = agent(
        &[
            "--listen",
            &listen,
            "--interval",
            "1",
            "--kubelet-root",
            &mnt.display().to_string(),
            "--containerd-state",
            &s.s("state"),
            "--textfile",
            &s.s("textfile"),
            "--fail-check",
            "layers",
        ],
        &log,
    );
    wait_metrics(port, 20, "first runs", |m| {
        value(m, "wonk_check_runs_total", &[("check", "ghosts")]).is_some_and(|v| v >= 1.0)
    });
    let (status, body) = get(port, "/healthz", "*/*").unwrap();
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    assert!(get(port, "/nope", "*/*").unwrap().0.contains("404"));

    let ghost_pid = stage_ghost(&mut s);
    let created = fill_to_enospc(&dir);
    let htree = [
        ("path", dirs.as_str()),
        ("device", dev.as_str()),
        ("large_dir", "false"),
    ];
    let m = wait_metrics(port, 60, "ghost, htree and kmsg series", |m| {
        value(m, "wonk_ghost_mounts", GHOST) == Some(1.0)
            && value(m, "wonk_htree_failing_ratio", &htree).is_some_and(|v| v > 0.0)
            && value(
                m,
                "wonk_kmsg_events_total",
                &[("reason", "htree-full"), ("pod", "")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    let root = value(&m, "wonk_htree_root_fill_ratio", &htree).unwrap();
    let node = value(&m, "wonk_htree_node_fill_ratio", &htree).unwrap();
    let entries = value(&m, "wonk_htree_entries", &htree).unwrap();
    assert!(root > 0.9 && root <= 1.0, "root fill {root}");
    assert!(node > 0.9 && node <= 1.0, "node fill {node}");
    assert!(
        (entries - created as f64).abs() / created as f64 <= 0.10,
        "entries {entries}, created {created}"
    );
    // Names already fail for part of the hash space; what is left elsewhere is a sliver of the entries.
    let left = value(&m, "wonk_htree_entries_left", &htree).unwrap();
    assert!(left < entries * 0.01, "entries left {left} of {entries}");
    // The panicking check is counted, and everything else goes on.
    assert!(value(&m, "wonk_check_errors_total", &[("check", "layers")]).unwrap() >= 1.0);
    assert_eq!(
        value(&m, "wonk_check_errors_total", &[("check", "ghosts")]),
        Some(0.0)
    );
    for c in ["ghosts", "shims", "htree", "dstate", "kmsg", "deleted", "orphans"] {
        let t = value(
            &m,
            "wonk_check_last_success_timestamp_seconds",
            &[("check", c)],
        );
        assert!(t.is_some_and(|t| t > 1.6e9), "{c}: {m}");
        assert!(
            value(&m, "wonk_check_duration_seconds", &[("check", c)]).is_some(),
            "{c}"
        );
    }
    assert!(value(
        &m,
        "wonk_check_last_success_timestamp_seconds",
        &[("check", "layers")]
    )
    .is_none());
    assert!(value(&m, "wonk_shims", &[("class", "leaked")]).is_some());
    assert!(m.contains("# TYPE wonk_kmsg_events_total counter"), "{m}");
    // OpenMetrics when asked for it.
    let (_, om) = get(
        port,
        "/metrics",
        "application/openmetrics-text; version=1.0.0",
    )
    .unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE wonk_kmsg_events counter"));
    // node_exporter's textfile, renamed into place.
    let tf = std::fs::read_to_string(s.path("textfile/wonk.prom")).unwrap();
    assert!(tf.contains("wonk_ghost_mounts{"), "{tf}");
    assert!(!tf.contains("# EOF"));

    // Prometheus scrapes the agent every second, with wonk's rules loaded.
    if have(
        "prometheus",
        "agent_metrics_through_prometheus (Prometheus part)",
    ) {
        let prom_port = free_port();
        let cfg = s.write(
            "prom/prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: wonk\n    static_configs:\n      - targets: ['{listen}']\n",
                repo("deploy/prometheus/wonk-rules.yaml").display()
            ),
        );
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", s.s("prom/data")))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.path("prom/log")).unwrap())
            .spawn()
            .unwrap();
        let _prom = Proc {
            child: Some(child),
            name: "prometheus",
        };
        let query = |q: &str| -> serde_json::Value {
            let enc: String = q
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            get(prom_port, &format!("/api/v1/query?query={enc}"), "*/*")
                .ok()
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let q_ghost = r#"wonk_ghost_mounts{namespace="shop",pod="web-0",container="app",kind="deleted",job="wonk"}"#;
        let q_htree = format!(r#"wonk_htree_failing_ratio{{path="{dirs}",large_dir="false"}}"#);
        let end = Instant::now() + Duration::from_secs(60);
        let (mut g, mut h) = (json!(null), json!(null));
        while Instant::now() < end {
            g = query(q_ghost);
            h = query(&q_htree);
            if g["data"]["result"].as_array().is_some_and(|r| r.len() == 1)
                && h["data"]["result"].as_array().is_some_and(|r| r.len() == 1)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(s.path("prom/log")).unwrap_or_default();
        assert_eq!(g["data"]["result"][0]["value"][1], "1", "{g}\n{log}");
        let share: f64 = h["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(share > 0.0, "{h}");
        let up = query(&format!(r#"up{{instance="{listen}"}}"#));
        assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
        // wonk's rules on those series: the index-full alert fires, the ghost and near-full ones are pending
        // (their `for:` is minutes), the error alert fires for the panicking check.
        let end = Instant::now() + Duration::from_secs(30);
        let mut alerts = json!(null);
        let want = [
            ("WonkHtreeIndexFull", "firing"),
            ("WonkHtreeIndexNearlyFull", "pending"),
            ("WonkGhostMount", "pending"),
            ("WonkKernelIndexFullEvents", "firing"),
            ("WonkCheckFailing", "firing"),
        ];
        let has = |alerts: &serde_json::Value, name: &str, state: &str| {
            alerts["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == name && x["state"] == state)
            })
        };
        while Instant::now() < end {
            alerts = get(prom_port, "/api/v1/alerts", "*/*")
                .ok()
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
                .unwrap_or(json!(null));
            if want.iter().all(|(n, st)| has(&alerts, n, st)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for (n, st) in want {
            assert!(has(&alerts, n, st), "{n} not {st}: {alerts:#}");
        }
        let ghost_alert = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["labels"]["alertname"] == "WonkGhostMount" && x["labels"]["pod"] == "web-0")
            .unwrap_or_else(|| panic!("{alerts:#}"));
        assert_eq!(ghost_alert["labels"]["namespace"], "shop");
        assert!(
            !has(&alerts, "WonkLeakedShims", "firing")
                && !has(&alerts, "WonkLeakedShims", "pending")
        );
    }

    // The pod goes: its series go with it.
    s.kill(ghost_pid);
    wait_metrics(port, 20, "ghost series removed", |m| {
        value(m, "wonk_ghost_mounts", GHOST).is_none()
    });

    let (code, took) = a.term();
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("check panicked") && log.contains("check=\"layers\""),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
}

/// The alert rules' own unit tests, and the PrometheusRule manifest holding the same groups.
#[test]
fn promtool_tests_the_alert_rules() {
    let rules = std::fs::read_to_string(repo("deploy/prometheus/wonk-rules.yaml")).unwrap();
    let crd = std::fs::read_to_string(repo("deploy/prometheusrule.yaml")).unwrap();
    let groups = &rules[rules.find("groups:").unwrap()..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    assert!(
        crd.contains(&indented),
        "deploy/prometheusrule.yaml must hold deploy/prometheus/wonk-rules.yaml's groups, indented by 2"
    );
    if !have("promtool", "promtool_tests_the_alert_rules") {
        return;
    }
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(repo("deploy/prometheus/wonk-rules.test.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// node-problem-detector's protocol: exit 0/1/2 and one line of at most 80 characters.
#[test]
fn npd_plugin_protocol() {
    if !root_or_skip("npd_plugin_protocol") {
        return;
    }
    let mut s = Scratch::new("agent-npd");
    let (code, out, _) = wonk(&["check", "ghosts", "--containerd-state", &s.s("state")]);
    assert!(
        code <= 1 && out.trim_end().chars().count() <= 80,
        "{code} {out}"
    );
    stage_ghost(&mut s);
    let (code, out, err) = wonk(&["check", "ghosts", "--containerd-state", &s.s("state")]);
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.trim_end().chars().count() <= 80, "{out}");
    assert!(out.starts_with("ghosts: "), "{out}");
    let (code, out, _) = wonk(&["check", "shims"]);
    assert!(code <= 1 && out.trim_end().chars().count() <= 80, "{out}");
    let (code, _, _) = wonk(&["check", "nosuch"]);
    assert_ne!(code, 0);
}
