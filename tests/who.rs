//! `wonk who` on pids, container ids, paths and DEV:INODE, against real cgroups, namespaces and mounts; and the
//! in-root resolution that keeps a hostile container from pointing wonk at host files.

#[macro_use]
mod common;

use common::*;
use serde_json::{json, Value};

const UID_A: &str = "11111111-2222-4333-8444-555555555555";
const UID_B: &str = "99999999-8888-4777-8666-555555555555";

struct Pods {
    s: Scratch,
    pid_a: u32,
    pid_b: u32,
    cid_a: String,
    cid_b: String,
}

/// Two "pods": A in the cgroupfs layout with an overlay root and an emptyDir, B in the systemd layout.
/// `salt` (4 hex digits) keeps the ids of tests that run at the same time apart.
fn two_pods(name: &str, salt: &str) -> Pods {
    let mut s = Scratch::new(name);
    let common = format!("{salt}{}c0", "c0ffee".repeat(9));
    let (cid_a, cid_b) = (format!("{common}a001"), format!("{common}b002"));
    let (sid_a, sid_b) = ("d".repeat(64), "e".repeat(64));
    for d in ["layers/lower", "layers/upper", "layers/work", "rootfs"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    s.write("layers/lower/bin/app", "#!/bin/sh\n");
    let empty_dir = format!("kubelet/pods/{UID_A}/volumes/kubernetes.io~empty-dir/cache");
    s.write(&format!("{empty_dir}/blob"), "cached\n");
    // As containerd does: the overlay root is mounted in the host's namespace, and the container's namespace is a
    // copy that holds it.
    s.host_mount(
        &format!(
            "-t overlay overlay -o lowerdir={},upperdir={},workdir={}",
            s.s("layers/lower"),
            s.s("layers/upper"),
            s.s("layers/work")
        ),
        &s.path("rootfs"),
    );
    let pid_a = s.spawn_ns(&format!(
        "mkdir -p {r}/cache\nmount --bind {e} {r}/cache",
        r = s.s("rootfs"),
        e = s.s(&empty_dir),
    ));
    let pid_b = s.spawn_ns("true");
    let cg_a = s.cgroup(&format!("kubepods/burstable/pod{UID_A}/{cid_a}"), pid_a);
    let uid_b = UID_B.replace('-', "_");
    let cg_b = s.cgroup(
        &format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_b}.slice/cri-containerd-{cid_b}.scope"),
        pid_b,
    );
    s.bundle(
        "state",
        &cid_a,
        &Pod::new("shop", "web-0", UID_A, &sid_a)
            .container("app")
            .cgroup(&cg_a)
            .spec(),
    );
    s.bundle(
        "state",
        &sid_a,
        &Pod::new("shop", "web-0", UID_A, &sid_a).sandbox(),
    );
    s.bundle(
        "state",
        &cid_b,
        &Pod::new("batch", "job-x", UID_B, &sid_b)
            .container("worker")
            .cgroup(&cg_b)
            .spec(),
    );
    s.bundle(
        "state",
        &sid_b,
        &Pod::new("batch", "job-x", UID_B, &sid_b).sandbox(),
    );
    Pods {
        s,
        pid_a,
        pid_b,
        cid_a,
        cid_b,
    }
}

fn who(p: &Pods, target: &str) -> Value {
    let (code, v) = wonk_json(&[
        "who",
        target,
        "--containerd-state",
        &p.s.s("state"),
        "--kubelet-root",
        &p.s.s("kubelet"),
    ]);
    assert_eq!(code, 0, "{v:#}");
    v
}

#[test]
fn pids_and_container_ids_in_both_cgroup_layouts() {
    require_root!();
    let p = two_pods("who-ids", "1d5a");
    let a = who(&p, &p.pid_a.to_string());
    assert_eq!(a["kind"], "pid");
    assert_eq!(a["process"]["comm"], "sleep");
    let o = &a["owner"];
    assert_eq!(
        (
            o["namespace"].as_str(),
            o["pod"].as_str(),
            o["pod_uid"].as_str()
        ),
        (Some("shop"), Some("web-0"), Some(UID_A))
    );
    assert_eq!(
        (o["container"].as_str(), o["container_id"].as_str()),
        (Some("app"), Some(p.cid_a.as_str()))
    );
    assert_eq!(o["qos"], "Burstable");
    assert!(
        o["cgroup"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/kubepods/burstable/pod{UID_A}/{}", p.cid_a)),
        "{o}"
    );

    let b = who(&p, &p.pid_b.to_string());
    let o = &b["owner"];
    assert_eq!(
        (
            o["namespace"].as_str(),
            o["pod"].as_str(),
            o["pod_uid"].as_str()
        ),
        (Some("batch"), Some("job-x"), Some(UID_B))
    );
    assert_eq!(o["container"], "worker");
    assert_eq!(o["qos"], "BestEffort");
    assert!(
        o["cgroup"].as_str().unwrap().contains("cri-containerd-"),
        "{o}"
    );

    // A unique prefix names one container and its live processes; a shared prefix is refused with the choices.
    let c = who(&p, &p.cid_b[..61]);
    assert_eq!(c["kind"], "container");
    assert_eq!(c["owner"]["pod"], "job-x");
    assert_eq!(c["pids"], json!([p.pid_b]));
    let (code, _, err) = wonk(&["who", &p.cid_a[..12], "--containerd-state", &p.s.s("state")]);
    assert_eq!(code, 3);
    assert!(
        err.contains("ambiguous") && err.contains(&p.cid_a) && err.contains(&p.cid_b),
        "{err}"
    );
}

#[test]
fn paths_in_an_upperdir_a_lowerdir_and_an_emptydir() {
    require_root!();
    let p = two_pods("who-paths", "9a75");
    p.s.write("layers/upper/tmp/scratch", "x");
    let up = who(&p, &p.s.s("layers/upper/tmp/scratch"));
    let seen = up["seen_by"].as_array().unwrap();
    let s = seen
        .iter()
        .find(|s| s["how"].as_str().unwrap().contains("upperdir") && s["pid"] == p.pid_a)
        .unwrap_or_else(|| panic!("{up:#}"));
    assert_eq!(s["path_in_container"], p.s.s("rootfs/tmp/scratch"));
    assert_eq!(s["owner"]["pod"], "web-0");
    assert_eq!(s["owner"]["container"], "app");
    assert_eq!(s["pid"], p.pid_a);
    assert_eq!(up["owner"]["pod_uid"], UID_A);

    let low = who(&p, &p.s.s("layers/lower/bin/app"));
    let s = low["seen_by"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["how"].as_str().unwrap().contains("lowerdir") && s["pid"] == p.pid_a);
    assert_eq!(
        s.unwrap_or_else(|| panic!("{low:#}"))["path_in_container"],
        p.s.s("rootfs/bin/app")
    );

    let blob = format!("kubelet/pods/{UID_A}/volumes/kubernetes.io~empty-dir/cache/blob");
    let e = who(&p, &p.s.s(&blob));
    let seen = e["seen_by"].as_array().unwrap();
    assert!(
        seen.iter().any(
            |s| s["how"] == "kubelet pod volume kubernetes.io~empty-dir/cache"
                && s["owner"]["pod"] == "web-0"
        ),
        "{e:#}"
    );
    let bind = seen
        .iter()
        .find(|s| s["how"].as_str().unwrap().starts_with("bind mount"))
        .unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(bind["path_in_container"], p.s.s("rootfs/cache/blob"));
    assert_eq!(bind["owner"]["container"], "app");
    assert_eq!(e["owner"]["namespace"], "shop");
    assert_eq!(e["owner"]["pod"], "web-0");
}

#[test]
fn dev_inode_on_a_loop_mounted_ext4() {
    require_root!();
    let mut s = Scratch::new("who-inode");
    let (mnt, dev) = s.ext4("fs", "64M", "-b 1024 -O ^large_dir");
    let dir = mnt.join("app/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let ino = ino(&dir);
    let name = dev.trim_start_matches("/dev/");
    let (code, v) = wonk_json(&["who", &format!("{name}:{ino}")]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["kind"], "inode");
    assert_eq!(v["path"]["path"], dir.display().to_string());
    assert_eq!(v["path"]["inode"], ino);
    assert_eq!(v["path"]["resolved_by"], "open_by_handle_at");
    let majmin = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).unwrap();
    let (code, v) = wonk_json(&["who", &format!("{}:{ino}", majmin.trim())]);
    assert_eq!(code, 0);
    assert_eq!(v["path"]["path"], dir.display().to_string());
    let (code, _, err) = wonk(&["who", &format!("{name}:999999")]);
    assert_eq!(code, 3);
    assert!(err.contains("999999"), "{err}");
    // Written as a path, the device is named back in the form `who` takes.
    let (code, _, err) = wonk(&["who", &format!("{dev}:{ino}")]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!("{dev}:{ino}")) && err.contains(&format!("give {name}:{ino}")),
        "{err}"
    );
}

/// The chain `who DEV:INODE` reads ahead of the kernel's reconnection, from the block device itself: the
/// directories from the target up to the root, with extents, with the old block map, and with inline data.
#[test]
fn ancestors_read_from_the_block_device() {
    require_root!();
    let mut s = Scratch::new("who-ancestors");
    let host = wonk::host::Host::open(std::path::Path::new("/")).unwrap();
    for (i, opts) in ["", "-b 1024 -O ^extent,^64bit", "-O inline_data"]
        .iter()
        .enumerate()
    {
        let (mnt, _) = s.ext4(&format!("fs{i}"), "64M", opts);
        let dir = mnt.join("a/b/c/d");
        std::fs::create_dir_all(&dir).unwrap();
        // Directories the chain does not pass through, some sharing its inode-table block.
        for side in ["a/x", "a/b/y", "z"] {
            std::fs::create_dir_all(mnt.join(side)).unwrap();
        }
        s.sh("sync");
        let expected: Vec<u64> = ["a/b/c/d", "a/b/c", "a/b", "a", ""]
            .iter()
            .map(|rel| ino(&mnt.join(rel)))
            .collect();
        assert_eq!(
            expected.last(),
            Some(&2),
            "{opts}: the root of an ext4 is inode 2"
        );
        let id = wonk::host::resolve::stat_in_root(
            host.root_dir(),
            dir.to_str().unwrap().as_bytes(),
            false,
        )
        .unwrap();
        let dev = wonk::ext4::read::open_device(&host, id.dev).unwrap();
        let sb = dev.superblock().unwrap();
        let warmed = wonk::ext4::ancestors::warm_always(&dev, &sb, id.ino);
        assert_eq!(warmed.chain, expected, "mkfs.ext4 {opts}");
        assert!(!warmed.was_cached);
        // A regular file is no directory: nothing to follow.
        std::fs::write(mnt.join("a/f"), b"x").unwrap();
        s.sh("sync");
        assert_eq!(
            wonk::ext4::ancestors::warm_always(&dev, &sb, ino(&mnt.join("a/f"))).chain,
            Vec::<u64>::new()
        );
    }
}

/// A container root full of symlinks to host files. Through /proc/PID/root a plain open follows `/etc/shadow`
/// to the host's; wonk's resolution stays inside the root. And a ghost inside a chroot is reported at the path
/// the container sees.
#[test]
fn hostile_symlinks_in_a_container_root() {
    require_root!();
    let mut s = Scratch::new("escape");
    let root = s.path("root");
    // A minimal root that can run sleep: the binary and the libraries it links.
    s.sh(&format!(
        "mkdir -p {r}/bin {r}/sub/deeper && cp /bin/sleep {r}/bin/ && for l in $(ldd /bin/sleep | grep -o '/[^ ]*'); do mkdir -p {r}$(dirname $l); cp $l {r}$l; done",
        r = root.display()
    ));
    std::os::unix::fs::symlink("/etc/shadow", root.join("evil")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../etc/shadow",
        root.join("sub/deeper/rel"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../../../..", root.join("dots")).unwrap();
    s.write("host/data.txt", "v1\n");
    s.write("root/data.txt", "");
    let pid = s.spawn_ns_exec(
        &format!(
            "mount --bind {} {}",
            s.s("host/data.txt"),
            s.s("root/data.txt")
        ),
        &format!("chroot {} /bin/sleep 100000", root.display()),
    );
    let proc_root = format!("/proc/{pid}/root");
    for _ in 0..100 {
        if std::fs::read_link(&proc_root).is_ok_and(|l| l == root) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_link(&proc_root).unwrap(),
        root,
        "the process never entered its chroot"
    );
    let host_shadow = ino(std::path::Path::new("/etc/shadow"));
    assert_eq!(
        ino(&std::path::PathBuf::from(format!("{proc_root}/evil"))),
        host_shadow,
        "the attack is real"
    );
    let rootf = wonk::host::resolve::open_root(std::path::Path::new(&proc_root)).unwrap();
    for p in [
        "/evil",
        "sub/deeper/rel",
        "dots/etc/shadow",
        "/../../etc/shadow",
    ] {
        match wonk::host::resolve::stat_in_root(&rootf, p.as_bytes(), true) {
            Ok(id) => assert_ne!(id.ino, host_shadow, "{p} escaped the root"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{p}: {e}"),
        }
    }

    s.sh(&format!(
        "echo v2 > {0}/n && mv -f {0}/n {0}/data.txt",
        s.s("host")
    ));
    let (_, r) = wonk_json(&["ghosts"]);
    let f: Vec<_> = findings_for(&r, "/data.txt")
        .into_iter()
        .filter(|f| f["evidence"]["pid"] == pid)
        .collect();
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["evidence"]["host_path"], s.s("host/data.txt"));
}

/// Without flags, wonk finds containerd's state directory from the running daemon's `--config`.
#[test]
fn containerd_state_found_from_the_running_daemons_config() {
    require_root!();
    let mut s = Scratch::new("ctd-config");
    let state = s.path("ctd/state");
    s.write(
        "ctd/config.toml",
        &format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
            s.s("ctd/root"),
            state.display(),
            s.s("ctd/c.sock")
        ),
    );
    // A stand-in daemon: a program named `containerd` that only waits, given `--config`.
    let src = s.write(
        "bin/daemon.c",
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    );
    let bin = s.path("bin/containerd");
    assert!(std::process::Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    let config = s.s("ctd/config.toml");
    s.spawn_cmd(std::process::Command::new(&bin).args(["--config", &config]));
    let uid = "5a5a5a5a-1111-4222-8333-444444444444";
    let cid = "f00d".repeat(16);
    let pid = s.spawn_ns("true");
    let cg = s.cgroup(&format!("kubepods/pod{uid}/{cid}"), pid);
    s.bundle(
        "ctd/state",
        &cid,
        &Pod::new("infra", "dns-1", uid, &cid)
            .container("coredns")
            .cgroup(&cg)
            .spec(),
    );
    let (code, v) = wonk_json(&["who", &pid.to_string()]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["owner"]["pod"], "dns-1");
    assert_eq!(v["owner"]["container"], "coredns");
    assert_eq!(v["owner"]["qos"], "Guaranteed");

    // A shim v1 node keeps its bundles under io.containerd.runtime.v1.linux, as in the seed.
    let cid1 = "1eaf".repeat(16);
    let pid1 = s.spawn_ns("true");
    let cg1 = s.cgroup(&format!("kubepods/besteffort/pod{uid}/{cid1}"), pid1);
    let v1 = "io.containerd.runtime.v1.linux";
    s.bundle_in(
        "ctd/state",
        v1,
        &cid1,
        &Pod::new("infra", "dns-1", uid, &cid1)
            .container("sidecar")
            .cgroup(&cg1)
            .spec(),
    );
    let (code, v) = wonk_json(&["who", &cid1[..12]]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["owner"]["container"], "sidecar");
    assert_eq!(
        v["owner"]["runtime"],
        "containerd (shim v1, namespace k8s.io)"
    );
    assert_eq!(v["pids"], json!([pid1]));
}

#[test]
fn bad_targets_are_named_in_the_error() {
    for (target, needle) in [
        ("not-a-thing", "not-a-thing"),
        ("nosuchdev:12", "nosuchdev"),
        ("../etc:5", "../etc"),
        ("/no/such/path/wonk", "/no/such/path/wonk"),
    ] {
        let (code, out, err) = wonk(&["who", target]);
        assert_eq!(code, 3, "{target}: {out}");
        assert!(
            err.starts_with("wonk: error:") && err.contains(needle),
            "{target}: {err}"
        );
    }
    let (code, _, err) = wonk(&["--host-root", "/no/such/root", "scan"]);
    assert_eq!(code, 3);
    assert!(err.contains("/no/such/root"), "{err}");
    let (code, _, _) = wonk(&["scan", "--no-such-flag"]);
    assert_eq!(code, 3);
}
