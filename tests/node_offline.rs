//! wonk on a node whose containerd does not answer: the node's containerd is frozen with SIGSTOP (its socket still
//! accepts connections, nothing answers), and `wonk shims`, `wonk who` and `wonk ghosts` must still answer from
//! /proc, cgroups and containerd's state on disk, with the right pod names. `wonk shims` must say that CRI did
//! not answer (`cri_lists` null and a blind spot) instead of waiting. Needs root and the `cri` feature.
//!
//! This is a test binary of its own, so its containerd is its own: freezing it cannot stall other tests.
#![cfg(feature = "cri")]

#[macro_use]
mod common;
mod node;

use common::*;
use node::{Handler, Node, Pod, PodOpts};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one wonk run may take before the test gives up on it (kills it, by its pid, and fails). Not a
/// timing assertion: only a guard against a hang.
const WATCHDOG: Duration = Duration::from_secs(30);

/// A process stopped with SIGSTOP for the life of the guard, continued with SIGCONT on every exit path (Drop
/// also runs when the test panics).
struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Stops `pid` after checking that its command line holds `cmdline_has`, and waits until it is stopped.
    fn new(pid: u32, cmdline_has: &str) -> Frozen {
        let cmd = cmdline_of(pid);
        assert!(
            cmd.contains(cmdline_has),
            "pid {pid} is not ours to stop: {cmd:?}"
        );
        // The guard exists before the signal, so that any failure from here on continues the process.
        let guard = Frozen { pid };
        // SAFETY: kill(2) of the pid we recorded and just checked.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let t = Instant::now();
        while state_of(pid) != Some('T') {
            assert!(t.elapsed() < Duration::from_secs(10), "{pid} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        guard
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the pid this guard stopped.
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
    }
}

fn cmdline_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The state letter of /proc/PID/stat.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// `wonk ARGS --json --kubelet-root <node's>`, killed (by its pid) and failed if it runs past [`WATCHDOG`].
/// Returns the exit code, the JSON and how long the run took.
fn wonk_watched(node: &Node, args: &[&str]) -> (i32, Value, Duration) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = node.dir.join(format!("wonk-offline-{n}.out"));
    let err_path = node.dir.join(format!("wonk-offline-{n}.err"));
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .arg("--json")
        .arg("--kubelet-root")
        .arg(&node.kubelet_root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wonk {args:?} did not finish within {WATCHDOG:?} with containerd stopped: it waited on a daemon"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t.elapsed();
    let out = std::fs::read(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let code = status.code().expect("wonk was killed by a signal");
    let v = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "wonk {args:?} printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {err}",
            String::from_utf8_lossy(&out)
        )
    });
    (code, v, took)
}

fn assert_pod(o: &Value, pod: &Pod, what: &str) {
    assert_eq!(o["namespace"], pod.namespace.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod"], pod.name.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod_uid"], pod.uid.as_str(), "{what}: {o:#}");
}

/// The blind spots about CRI on this node's socket.
fn cri_blind_spots<'a>(report: &'a Value, node: &Node) -> Vec<&'a Value> {
    let sock = node.socket.display().to_string();
    report["blind_spots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["scope"] == "shims" && b["what"].as_str().unwrap().contains(&sock))
        .collect()
}

#[test]
fn wonk_answers_from_disk_while_containerd_is_stopped() {
    require_root!();
    let node = Node::get();
    let pod = node.pod(PodOpts::new("frozen-web-0", "shop", Handler::Cgroupfs));
    assert_eq!(pod.shim_pids.len(), 1, "one v2 shim per pod");
    let shim = pod.shim_pids[0];

    // A ghost for `ghosts` to name: the hostPath file replaced on the host (`mv -f`), as in the seed.
    let data = pod.host_dir.join("data.txt");
    let new = pod.host_dir.join("new.txt");
    std::fs::write(&new, "version3\n").unwrap();
    assert!(Command::new("mv")
        .arg("-f")
        .arg(&new)
        .arg(&data)
        .status()
        .unwrap()
        .success());

    // With containerd answering, CRI adds what it lists.
    let (code, r, took) = wonk_watched(node, &["shims", "--min-age", "0"]);
    eprintln!(
        "wonk shims with containerd running: {} ms",
        took.as_millis()
    );
    assert!(code <= 1, "{r:#}");
    let s = shim_by_pid(&r, shim);
    assert_eq!(s["class"], "healthy", "{s:#}");
    assert_eq!(s["cri_lists"], true, "{s:#}");
    assert_eq!(cri_blind_spots(&r, node), Vec::<&Value>::new(), "{r:#}");

    let frozen = Frozen::new(node.containerd_pid, &node.config.display().to_string());

    // shims: everything from disk, CRI's part null, and a blind spot saying why.
    let (code, r, took) = wonk_watched(node, &["shims", "--min-age", "0"]);
    eprintln!(
        "wonk shims with containerd stopped: {} ms (CRI budget {} ms)",
        took.as_millis(),
        wonk::checks::shims::CRI_BUDGET.as_millis()
    );
    assert!(code <= 1, "{r:#}");
    let s = shim_by_pid(&r, shim);
    assert_eq!(s["class"], "healthy", "{s:#}");
    assert_eq!(s["cri_lists"], Value::Null, "{s:#}");
    assert_eq!(s["id"], pod.sandbox_id.as_str(), "{s:#}");
    assert_eq!(s["containerd_pid"], node.containerd_pid, "{s:#}");
    assert_pod(&s["owner"], &pod, "shim owner");
    let bundles: Vec<&str> = s["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(
        bundles.contains(&pod.sandbox_id.as_str()) && bundles.contains(&pod.container_id.as_str()),
        "{s:#}"
    );
    let spots = cri_blind_spots(&r, node);
    assert_eq!(spots.len(), 1, "{r:#}");
    eprintln!("blind spot: {}", spots[0]);
    assert!(
        spots[0]["why"]
            .as_str()
            .unwrap()
            .starts_with("CRI did not answer in time"),
        "{:#}",
        spots[0]
    );

    // who: the container's pid names its pod and container.
    let (code, v, took) = wonk_watched(node, &["who", &pod.pid.to_string()]);
    eprintln!("wonk who with containerd stopped: {} ms", took.as_millis());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["kind"], "pid");
    assert_pod(&v["owner"], &pod, "who");
    assert_eq!(v["owner"]["container"], "app", "{v:#}");
    assert_eq!(v["owner"]["container_id"], pod.container_id.as_str());
    assert_eq!(v["owner"]["image"], node::IMAGE);

    // ghosts: the replaced hostPath file, with its pod.
    let (code, r, took) = wonk_watched(node, &["ghosts"]);
    eprintln!(
        "wonk ghosts with containerd stopped: {} ms",
        took.as_millis()
    );
    assert!((1..=2).contains(&code), "{r:#}");
    let found: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["owner"]["pod_uid"] == pod.uid.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{r:#}");
    assert_eq!(found[0]["kind"], "deleted");
    assert_eq!(found[0]["subject"], "/data.txt");
    assert_pod(&found[0]["owner"], &pod, "ghost");
    assert_eq!(found[0]["owner"]["container"], "app");
    assert_eq!(
        found[0]["evidence"]["host_path"],
        data.display().to_string().as_str()
    );

    // containerd was stopped the whole time.
    assert_eq!(state_of(node.containerd_pid), Some('T'));
    drop(frozen);

    // Continued, containerd answers again, and the pod is removed through CRI when it drops.
    let (_, r, _) = wonk_watched(node, &["shims", "--min-age", "0"]);
    assert_eq!(shim_by_pid(&r, shim)["cri_lists"], true, "{r:#}");
    assert!(Path::new(&format!("/proc/{}", pod.pid)).exists());
}
