//! `wonk agent` for real: a ghost bind mount (attributed to a pod through a bundle and a cgroup) and a full
//! htree index on a loop-mounted ext4, read from /metrics; the same series through a real Prometheus (Debian's
//! package) and its query API, with wonk's alert rules loaded; the rules' own unit tests with promtool; the NPD
//! plugin protocol. The kernel-log flood soak is tests/agent_soak.rs.

#[macro_use]
mod common;

use common::agent::*;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

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
    require_root!();
    let mut s = Scratch::new("agent");
    let (mnt, dev) = s.ext4("fs", "256M", "-b 1024 -O ^large_dir");
    let dev = dev.trim_start_matches("/dev/").to_string();
    let dir = mnt.join("app/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let dirs = dir.display().to_string();
    std::fs::create_dir_all(s.path("textfile")).unwrap();
    let Staged {
        proc: mut a,
        port,
        listen,
        log,
    } = staged_agent(
        &s,
        &mnt,
        &["--textfile", &s.s("textfile"), "--fail-check", "layers"],
    );
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
            && value(m, "wonk_kmsg_events_total", &[("reason", "htree-full")])
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
    for c in [
        "ghosts", "shims", "htree", "dstate", "kmsg", "deleted", "orphans",
    ] {
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
        let cfg = s.write(
            "prom/prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: wonk\n    static_configs:\n      - targets: ['{listen}']\n",
                repo("deploy/prometheus/wonk-rules.yaml").display()
            ),
        );
        let (_prom, prom_port) = prometheus(&s, &cfg);
        let query = |q: &str| prom_query(prom_port, q);
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
            alerts = prom_alerts(prom_port);
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
    let crd = std::fs::read_to_string(repo("deploy/base/prometheusrule.yaml")).unwrap();
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
        "deploy/base/prometheusrule.yaml must hold deploy/prometheus/wonk-rules.yaml's groups, indented by 2"
    );
    // Every alert has a summary, a description and a runbook_url pointing at its own section of docs/RUNBOOK.md.
    let runbook = std::fs::read_to_string(repo("docs/RUNBOOK.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        let body = &rules[rules.find(&format!("- alert: {a}\n")).unwrap()..];
        let body = &body[..body[2..].find("- alert: ").map_or(body.len(), |i| i + 2)];
        for key in ["summary: ", "description: "] {
            assert!(body.contains(key), "{a} has no {key}");
        }
        assert!(
            body.contains(&format!(
                "runbook_url: \"docs/RUNBOOK.md#{}\"",
                a.to_lowercase()
            )),
            "{a}: runbook_url"
        );
        assert!(
            runbook.contains(&format!("\n## {a}\n")),
            "docs/RUNBOOK.md has no section {a}"
        );
    }
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
    require_root!();
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
    // A wrong --host-root: NPD shows stdout only, so the reason is there, and the verdict is unknown (2).
    let (code, out, _) = wonk(&["check", "ghosts", "--host-root", "/nonexistent/wonk-host"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("ghosts: unknown: cannot open --host-root /nonexistent/wonk-host")
            && out.len() <= 81,
        "{out}"
    );
    let (code, out, _) = wonk(&["check", "ghosts", "--window", "60"]);
    assert_eq!(
        (code, out.as_str()),
        (2, "ghosts: unknown: --window: ghosts reads no log\n")
    );
}

/// `wonk check kmsg --window`: a full directory index the kernel logged a moment ago is a problem within an hour's
/// window, and outside a window that starts after it (it no longer keeps the condition set until the ring
/// buffer rolls over).
#[test]
fn npd_kmsg_window() {
    require_root!();
    let mut s = Scratch::new("agent-npd-kmsg");
    let (mnt, dev) = s.ext4("fs", "64M", "-b 1024 -N 60000 -O ^large_dir");
    let dev = dev.trim_start_matches("/dev/").to_string();
    let dir = mnt.join("full");
    std::fs::create_dir_all(&dir).unwrap();
    // Our records: our loop device, logged after this (µs since boot): other tests log full indexes too, and
    // loop devices are reused.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let t0 = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    fill_to_enospc(&dir);
    let ours = |v: &serde_json::Value| {
        v["findings"].as_array().map_or(0, |fs| {
            fs.iter()
                .filter(|f| {
                    f["kind"] == "htree-full"
                        && f["evidence"]["device"] == dev.as_str()
                        && f["evidence"]["first_ts_usec"]
                            .as_u64()
                            .is_some_and(|t| t >= t0)
                })
                .count()
        })
    };
    let (code, out, _) = wonk(&["check", "kmsg", "--window", "3600"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.len() <= 81, "{out}");
    let (_, json, err) = wonk(&["kmsg", "--since", "3600", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json} {err}"));
    assert!(ours(&v) >= 1, "{v:#}");
    // Once a second has passed, a window of one second no longer holds it.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, json, _) = wonk(&["kmsg", "--since", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ours(&v), 0, "{v:#}");
    assert!(v["checks"][0]["stats"]["outside_window"].is_u64(), "{v:#}");
}

/// kubectl's habits on a real finding: `-n`/`--pod` keep a pod's findings (and the exit code follows what is
/// listed), `-o wide` shows the namespace and kind, `-o json` is `--json`.
#[test]
fn namespace_and_pod_filters_and_wide_output() {
    require_root!();
    let mut s = Scratch::new("agent-filters");
    stage_ghost(&mut s);
    let state = s.s("state");
    let subject = s.s("root/data.txt");
    let ours = |v: &serde_json::Value| findings_for(v, &subject).len();
    let (code, v) = wonk_json(&[
        "ghosts",
        "--containerd-state",
        &state,
        "-n",
        "shop",
        "--pod",
        "web-0",
    ]);
    assert_eq!((code, ours(&v)), (1, 1), "{v:#}");
    for f in v["findings"].as_array().unwrap() {
        assert_eq!(f["owner"]["pod"], "web-0", "{f:#}");
    }
    assert_eq!(v["scope"]["namespace"], "shop");
    let (code, v) = wonk_json(&["-n", "elsewhere", "ghosts", "--containerd-state", &state]);
    assert_eq!(ours(&v), 0, "{v:#}");
    assert!(v["scope"]["hidden"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(code, 0, "nothing listed, nothing wrong: {v:#}");
    let (code, v) = wonk_json(&[
        "ghosts",
        "--containerd-state",
        &state,
        "-n",
        "elsewhere",
        "-A",
    ]);
    assert_eq!((code, ours(&v)), (1, 1), "-A overrides -n: {v:#}");
    let (_, wide, _) = wonk(&[
        "ghosts",
        "--containerd-state",
        &state,
        "--pod",
        "web-0",
        "-o",
        "wide",
    ]);
    let head = wide
        .lines()
        .find(|l| l.starts_with("SEV"))
        .unwrap_or_else(|| panic!("{wide}"));
    assert!(
        head.contains("KIND") && head.contains("NAMESPACE"),
        "{head}"
    );
    assert!(
        wide.lines()
            .any(|l| l.contains("ghosts  deleted") && l.contains("shop") && l.ends_with(&subject)),
        "{wide}"
    );
    let (_, out, _) = wonk(&["ghosts", "--containerd-state", &state, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ours(&v), 1);
}
