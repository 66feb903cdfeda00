//! `wonk layers` on a real overlay root and a kubelet emptyDir, with exact counts to compare against.

#[macro_use]
mod common;

use common::*;
use serde_json::json;

#[test]
fn a_pods_writable_layer_and_emptydir_are_counted_exactly() {
    require_root!();
    let mut s = Scratch::new("layers");
    let uid = "7a7a7a7a-1111-4222-8333-444444444444";
    let cid = "beef".repeat(16);
    for d in ["lower", "upper", "work", "rootfs"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    // An image layer that can run sleep: the binary and the libraries it links.
    s.sleep_image("lower");
    // The writable layer: 3 directories of 700 files, of 10 bytes in tmp0 and tmp1 and of 0 to 49 bytes in tmp2;
    // one file hard-linked twice more, one symlink.
    let fifty = "0123456789".repeat(5);
    for d in 0..3 {
        for f in 0..700 {
            let content = if d == 2 {
                &fifty[..f % 50]
            } else {
                "0123456789"
            };
            s.write(&format!("upper/app/tmp{d}/f{f}"), content);
        }
    }
    let upper_bytes = 1400 * 10 + 14 * (0..50).sum::<u64>();
    s.sh(&format!("ln {0}/app/tmp0/f0 {0}/app/l1 && ln {0}/app/tmp0/f0 {0}/app/l2 && ln -s f0 {0}/app/tmp0/sym", s.s("upper")));
    let empty = format!("kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/cache");
    s.write(&format!("{empty}/a/blob"), "12345");
    s.write(&format!("{empty}/b"), "123");

    let rootfs = s.path("rootfs");
    // As containerd does: the overlay root is mounted in the host's namespace, and the container's namespace is a
    // copy that holds it.
    s.host_mount(
        &format!(
            "-t overlay overlay -o lowerdir={},upperdir={},workdir={}",
            s.s("lower"),
            s.s("upper"),
            s.s("work")
        ),
        &rootfs,
    );
    let pid = s.spawn_chrooted("true", &rootfs);
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    s.bundle(
        "state",
        &cid,
        &Pod::new("batch", "crawler-0", uid, &cid)
            .container("worker")
            .cgroup(&cg)
            .spec(),
    );

    let (state, kubelet) = (s.s("state"), s.s("kubelet"));
    let layers_json = |extra: &[&str]| {
        let mut args = vec![
            "layers",
            "--max-files",
            "2000",
            "--containerd-state",
            &state,
            "--kubelet-root",
            &kubelet,
        ];
        args.extend_from_slice(extra);
        wonk_json(&args)
    };
    let (code, r) = layers_json(&["--exact-bytes"]);
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
    // Every name once, but the three names of the hard-linked file are one inode.
    assert_eq!(ev["inodes"], 2104 + 5 + 1 - 2);
    assert_eq!(ev["inode_dedup"], "complete");
    assert_eq!(
        ev["bytes"],
        upper_bytes + 5 + 3,
        "hard links are counted once"
    );
    assert_eq!(ev["bytes_method"], "exact");
    // Only the first name of the hard-linked file is statted.
    assert_eq!(
        (
            ev["bytes_statted_files"].as_u64(),
            ev["bytes_estimated_files"].as_u64()
        ),
        (Some(2100 + 2), Some(0))
    );
    assert_eq!(ev["bytes_stderr"], 0);
    assert_eq!(ev["metadata_operations"], 2104 + 5 + 1);
    assert_eq!(ev["lower_bound"], false);
    assert!(!f["summary"].as_str().unwrap().contains("about"), "{f:#}");
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

    // By default, a directory of more than 32 files has the sizes of 32 read: the bytes are an estimate, and say so.
    let (_, r) = layers_json(&[]);
    let f = findings_for(&r, uid)[0];
    let ev = &f["evidence"];
    assert_eq!(
        (&ev["files"], &ev["dirs"], &ev["inodes"]),
        (&json!(2104), &json!(5), &json!(2108))
    );
    assert_eq!(ev["bytes_method"], "sampled", "{ev:#}");
    // 32 in each of the three directories of 700 (tmp0's first name of the linked file may be in app), plus the
    // whole of app and of the emptyDir.
    let statted = ev["bytes_statted_files"].as_u64().unwrap();
    assert_eq!(statted, 3 * 32 + 1 + 2, "{ev:#}");
    assert_eq!(ev["bytes_estimated_files"], 2102 - statted);
    // Only tmp2's sizes vary: the estimate is off by what its sample says, within a few standard errors.
    let (bytes, stderr) = (
        ev["bytes"].as_u64().unwrap(),
        ev["bytes_stderr"].as_u64().unwrap(),
    );
    assert!(stderr > 0, "{ev:#}");
    assert!(
        bytes.abs_diff(upper_bytes + 8) <= 5 * stderr,
        "{bytes} against {}, stderr {stderr}",
        upper_bytes + 8
    );
    assert!(
        f["summary"].as_str().unwrap().contains("about")
            && f["summary"].as_str().unwrap().contains("estimated"),
        "{f:#}"
    );
    let layers = ev["layers"].as_array().unwrap();
    let upper = layers.iter().find(|l| l["kind"] == "upperdir").unwrap();
    assert_eq!(upper["bytes_method"], "sampled");
    // A layer whose directories all have 32 files or fewer is measured exactly.
    let ed = layers.iter().find(|l| l["kind"] == "emptyDir").unwrap();
    assert_eq!(
        (
            &ed["bytes"],
            &ed["bytes_method"],
            &ed["bytes_estimated_files"]
        ),
        (&json!(8), &json!("exact"), &json!(0))
    );

    // With no memory for the inode map, hard links cannot be matched by inode number: the output says so, and
    // --exact-bytes still counts the linked file's bytes once (from its link count).
    let (_, r) = layers_json(&["--exact-bytes", "--dedup-memory", "0"]);
    let ev = &findings_for(&r, uid)[0]["evidence"];
    assert_eq!(ev["inode_dedup"], "capped", "{ev:#}");
    assert_eq!(ev["inodes"], 2104 + 5 + 1, "every name counted as an inode");
    assert_eq!(ev["bytes"], upper_bytes + 8);
    assert!(
        r["blind_spots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["scope"] == "layers" && b["why"].as_str().unwrap().contains("dedup-memory")),
        "{r:#}"
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
