//! `wonk layers` on a real overlay root and a kubelet emptyDir, with exact counts to compare against.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_pods_writable_layer_and_emptydir_are_counted_exactly() {
    if !root_or_skip("a_pods_writable_layer_and_emptydir_are_counted_exactly") {
        return;
    }
    let mut s = Scratch::new("layers");
    let uid = "7a7a7a7a-1111-4222-8333-444444444444";
    let cid = "beef".repeat(16);
    for d in ["lower", "upper", "work", "rootfs"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    // An image layer that can run sleep: the binary and the libraries it links.
    s.sh(&format!(
        "mkdir -p {l}/bin && cp /bin/sleep {l}/bin/ && for x in $(ldd /bin/sleep | grep -o '/[^ ]*'); do mkdir -p {l}$(dirname $x); cp $x {l}$x; done",
        l = s.s("lower")
    ));
    // The writable layer: 3 directories of 700 files of 10 bytes; one file hard-linked twice more, one symlink.
    for d in 0..3 {
        for f in 0..700 {
            s.write(&format!("upper/app/tmp{d}/f{f}"), "0123456789");
        }
    }
    s.sh(&format!("ln {0}/app/tmp0/f0 {0}/app/l1 && ln {0}/app/tmp0/f0 {0}/app/l2 && ln -s f0 {0}/app/tmp0/sym", s.s("upper")));
    let empty = format!("kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/cache");
    s.write(&format!("{empty}/a/blob"), "12345");
    s.write(&format!("{empty}/b"), "123");

    let rootfs = s.path("rootfs");
    let pid = s.spawn_ns_exec(
        &format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
            s.s("lower"),
            s.s("upper"),
            s.s("work"),
            rootfs.display()
        ),
        &format!("chroot {} /bin/sleep 100000", rootfs.display()),
    );
    for _ in 0..100 {
        if std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|l| l == rootfs) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    s.bundle(
        "state",
        &cid,
        &spec(
            "container",
            "batch",
            "crawler-0",
            uid,
            "worker",
            &cid,
            &cg,
            json!([]),
        ),
    );

    let (code, r) = wonk_json(&[
        "layers",
        "--max-files",
        "2000",
        "--containerd-state",
        &s.s("state"),
        "--kubelet-root",
        &s.s("kubelet"),
    ]);
    assert_eq!(code, 1, "{r:#}");
    let f = findings_for(&r, uid);
    assert_eq!(f.len(), 1, "{r:#}");
    let f = f[0];
    assert_eq!(f["kind"], "costly-delete");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["owner"]["pod"], "crawler-0");
    assert_eq!(f["owner"]["namespace"], "batch");
    let ev = &f["evidence"];
    // 2100 files + 2 more names of the hard-linked one in the layer; 2 in the emptyDir.
    assert_eq!(ev["files"], 2100 + 2 + 2, "{ev:#}");
    // app, tmp0..2 in the layer; a in the emptyDir.
    assert_eq!(ev["dirs"], 4 + 1);
    assert_eq!(ev["other"], 1);
    assert_eq!(
        ev["bytes"],
        2100 * 10 + 5 + 3,
        "hard links are counted once"
    );
    assert_eq!(ev["metadata_operations"], 2104 + 5 + 1);
    assert_eq!(ev["lower_bound"], false);
    let layers = ev["layers"].as_array().unwrap();
    let upper = layers.iter().find(|l| l["kind"] == "upperdir").unwrap();
    assert_eq!(upper["path"], s.s("upper"));
    assert_eq!(upper["container"], "worker");
    assert_eq!(upper["largest_dirs"][0]["entries"], 701);
    assert!(upper["largest_dirs"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with(&s.s("upper/app/tmp")));
    let ed = layers.iter().find(|l| l["kind"] == "emptyDir").unwrap();
    assert_eq!(ed["path"], s.s(&empty));
    assert_eq!(
        (ed["files"].as_u64(), ed["bytes"].as_u64()),
        (Some(2), Some(8))
    );

    // Below the threshold the pod is not flagged by `scan`'s check, but `wonk layers` still lists it.
    let (code, r) = wonk_json(&[
        "layers",
        "--containerd-state",
        &s.s("state"),
        "--kubelet-root",
        &s.s("kubelet"),
    ]);
    assert!(code <= 1);
    assert_eq!(findings_for(&r, uid)[0]["kind"], "layers");

    // A budget that runs out never yields figures that claim to be complete.
    let (_, r) = wonk_json(&[
        "layers",
        "--budget",
        "0.000001",
        "--kubelet-root",
        &s.s("kubelet"),
    ]);
    for f in r["findings"].as_array().unwrap() {
        assert_eq!(f["evidence"]["lower_bound"], true, "{f:#}");
    }
}
