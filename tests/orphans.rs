//! `wonk orphans` on real objects: a kubelet-shaped pod directory whose pod has no sandbox and no process, with a
//! tmpfs volume still mounted under it and a mount namespace holding a copy of that mount; a task bundle that no
//! shim serves; mount tables over a limit.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;

fn finding<'a>(r: &'a Value, kind: &str, subject: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["subject"] == subject)
        .unwrap_or_else(|| panic!("no {kind} finding for {subject}: {r:#}"))
}

#[test]
fn a_gone_pods_dir_with_a_volume_still_mounted_and_a_bundle_without_shim() {
    require_root!();
    let mut s = Scratch::new("orphans");
    let gone = "0a0a0a0a-1111-4222-8333-444444444444";
    let live = "1b1b1b1b-1111-4222-8333-444444444444";
    let sandbox = "5a5a".repeat(16);
    // The gone pod: an emptyDir of 3 files (10, 20 and 30 bytes) and a secret-like tmpfs volume still mounted.
    let pod = format!("kubelet/pods/{gone}");
    for (f, n) in [("a", 10), ("b", 20), ("sub/c", 30)] {
        s.write(
            &format!("{pod}/volumes/kubernetes.io~empty-dir/cache/{f}"),
            &"x".repeat(n),
        );
    }
    let vol = s.path(&format!("{pod}/volumes/kubernetes.io~secret/token"));
    s.host_mount("-t tmpfs -o size=1m tmpfs", &vol);
    std::fs::write(vol.join("token"), "secret").unwrap();
    // A namespace made now keeps a copy of that mount.
    let holder = s.spawn_ns("true");
    // The live pod: its sandbox is in containerd's state (and no shim serves the bundle).
    s.write(
        &format!("kubelet/pods/{live}/etc-hosts"),
        "127.0.0.1 localhost\n",
    );
    s.bundle(
        "state",
        &sandbox,
        &Pod::new("shop", "web-0", live, &sandbox).sandbox(),
    );

    let (state, kubelet) = (s.s("state"), s.s("kubelet"));
    let (code, r) = wonk_json(&[
        "orphans",
        "--min-age",
        "0",
        "--max-mounts",
        "1",
        "--containerd-state",
        &state,
        "--kubelet-root",
        &kubelet,
    ]);
    assert_eq!(code, 1, "{r:#}");
    let pod_path = s.s(&pod);
    let f = finding(&r, "orphaned-pod-volumes", &pod_path);
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["owner"]["pod_uid"], gone);
    let ev = &f["evidence"];
    assert_eq!(ev["pod_uid"], gone);
    let mounts = ev["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mount_point"] == vol.display().to_string() && m["fs_type"] == "tmpfs"),
        "{ev:#}"
    );
    let holders = ev["holders"].as_array().unwrap();
    assert!(
        holders.iter().any(|h| h["pid"] == holder as u64),
        "pid {holder} holds a copy: {ev:#}"
    );
    // The walk of the pod's directory stays on its own filesystem: the emptyDir's 3 files, not the tmpfs's.
    assert_eq!(ev["size"]["files"], 3, "{ev:#}");
    assert_eq!(ev["size"]["bytes"], 60, "{ev:#}");
    assert!(f["advice"][0].as_str().unwrap().contains("umount"));
    // The live pod's directory is not an orphan: its sandbox is in containerd's state.
    assert!(
        !r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["subject"] == s.s(&format!("kubelet/pods/{live}"))),
        "{r:#}"
    );
    // Its bundle has no shim.
    let bdir = s.s(&format!(
        "state/io.containerd.runtime.v2.task/k8s.io/{sandbox}"
    ));
    let b = finding(&r, "bundle-without-shim", &bdir);
    assert_eq!(b["evidence"]["id"], sandbox);
    assert_eq!(b["evidence"]["container_type"], "sandbox");
    assert_eq!(b["owner"]["pod"], "web-0");
    assert_eq!(b["severity"], "info");
    // Every mount table is over a limit of 1: the host's, and the holder's namespace.
    let host = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "mount-table" && f["evidence"]["scope"] == "host")
        .unwrap_or_else(|| panic!("{r:#}"));
    assert!(host["evidence"]["mounts"].as_u64().unwrap() > 1);
    let details = &r["checks"][0]["details"];
    assert!(details["mount_tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["scope"] == "namespace" && t["mounts"].as_u64().unwrap() > 1));

    // Once the volume is unmounted (everywhere), the directory is only an info leftover.
    s.kill(holder);
    s.sh(&format!("umount '{}'", vol.display()));
    let (_, r) = wonk_json(&[
        "orphans",
        "--min-age",
        "0",
        "--containerd-state",
        &state,
        "--kubelet-root",
        &kubelet,
    ]);
    let f = finding(&r, "orphaned-pod-dir", &pod_path);
    assert_eq!(f["severity"], "info");
    assert_eq!(f["evidence"]["mounts_total"], 0);
}

#[cfg(feature = "cri")]
#[path = "node/mod.rs"]
mod node;

/// A pod whose sandbox is stopped but not removed (as a completed Job's is) has no bundle and no process, yet is
/// not orphaned: CRI still lists it. Once removed, its leftover directory is.
#[cfg(feature = "cri")]
#[test]
fn a_stopped_sandbox_is_not_an_orphan_until_it_is_removed() {
    require_root!();
    let node = node::Node::get();
    let pod = node.pod(node::PodOpts::new(
        "job-0",
        "batch",
        node::Handler::Cgroupfs,
    ));
    let cri = node.cri();
    cri.stop_pod_sandbox(&pod.sandbox_id)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", node.log_tail()));
    assert!(
        !pod.bundle(&pod.sandbox_id).exists(),
        "the stopped sandbox's bundle is gone"
    );
    let kr = node.kubelet_root.display().to_string();
    let subject = pod.pod_dir.display().to_string();
    let run = || wonk_json(&["orphans", "--min-age", "0", "--kubelet-root", &kr]).1;
    let r = run();
    assert!(
        !r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["subject"] == subject),
        "{r:#}"
    );
    cri.remove_pod_sandbox(&pod.sandbox_id)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", node.log_tail()));
    let r = run();
    let f = finding(&r, "orphaned-pod-dir", &subject);
    assert_eq!(f["evidence"]["pod_uid"], pod.uid.as_str());
}

/// containerd's real bolt databases, read offline while it runs: a snapshot directory the snapshotter does not
/// know and an active snapshot no container uses (`ctr snapshots prepare`) are orphaned; the running pod's own
/// snapshot and the image's committed layers are not.
#[cfg(feature = "cri")]
#[test]
fn snapshots_no_container_uses_are_found_in_containerds_bolt_databases() {
    require_root!();
    let node = node::Node::get();
    let pod = node.pod(node::PodOpts::new("web-0", "shop", node::Handler::Cgroupfs));
    let snaps = node
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let stray = snaps.join("987654");
    std::fs::create_dir_all(stray.join("fs")).unwrap();
    std::fs::write(stray.join("fs/junk"), "0123456789").unwrap();
    let key = format!("wonk-stray-{}", std::process::id());
    let sock = node.socket.display().to_string();
    let ctr = |args: &[&str]| {
        let out = std::process::Command::new("ctr")
            .args(["-a", &sock, "-n", "k8s.io", "snapshots"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctr(&["prepare", &key]);

    let kr = node.kubelet_root.display().to_string();
    let (_, r) = wonk_json(&["orphans", "--min-age", "0", "--kubelet-root", &kr]);
    ctr(&["rm", &key]);
    let _ = std::fs::remove_dir_all(&stray);
    let details = &r["checks"][0]["details"];
    let ours = details["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dir"] == snaps.display().to_string())
        .unwrap_or_else(|| panic!("{r:#}"));
    assert!(ours["metadata_error"].is_null(), "{ours:#}");
    let orphaned = ours["orphaned"].as_array().unwrap();
    let f = finding(&r, "orphaned-snapshot", &stray.display().to_string());
    assert_eq!(f["evidence"]["reason"], "not-in-metadata");
    assert_eq!(f["evidence"]["size"]["files"], 1);
    assert_eq!(f["evidence"]["size"]["bytes"], 10);
    let active = orphaned
        .iter()
        .find(|o| o["reason"] == "active-unused")
        .unwrap_or_else(|| panic!("{ours:#}"));
    assert_eq!(active["snapshot_key"], key.as_str());
    assert_eq!(active["namespace"], "k8s.io");
    // The pod's writable layer is in use, and the image's layers are committed: neither is an orphan.
    let upper = pod.upperdir();
    let pod_snap = upper.parent().unwrap().display().to_string();
    assert!(!orphaned.iter().any(|o| o["path"] == pod_snap), "{ours:#}");
    assert_eq!(orphaned.len(), 2, "{ours:#}");
    assert!(ours["known"].as_u64().unwrap() >= 1, "{ours:#}");
}
