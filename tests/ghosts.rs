//! `wonk ghosts` against real mount namespaces and real bind mounts.

#[macro_use]
mod common;

use common::*;
use serde_json::json;

/// The seed's exact sequence: bind a file, `mv -f` a new one over its host path. The ghost is found with the
/// old and new inodes; the healthy sibling file and directory mounts are not reported.
#[test]
fn seed_sequence_mv_over_a_bound_file() {
    require_root!();
    let mut s = Scratch::new("seed");
    let data = s.write("host/data.txt", "version2\n");
    s.write("host/healthy.txt", "fine\n");
    s.write("host/dir/inner", "x\n");
    s.write("root/data.txt", "");
    s.write("root/healthy.txt", "");
    std::fs::create_dir_all(s.path("root/dir")).unwrap();
    let pid = s.spawn_ns(&format!(
        "mount --bind {h}/data.txt {r}/data.txt -o ro; mount --bind {h}/healthy.txt {r}/healthy.txt; mount --bind {h}/dir {r}/dir",
        h = s.s("host"),
        r = s.s("root")
    ));
    let old_ino = ino(&data);
    let (code, r) = wonk_json(&["ghosts"]);
    assert!(
        findings_for(&r, &s.s("root/data.txt")).is_empty(),
        "reported before the mv: {r:#}"
    );

    s.write("host/new.txt", "version3\n");
    s.sh(&format!("mv -f {0}/new.txt {0}/data.txt", s.s("host")));
    let new_ino = ino(&data);
    assert_ne!(old_ino, new_ino);
    let (code2, r) = wonk_json(&["ghosts"]);
    assert!(code <= 1 && code2 == 1, "exit codes {code}, {code2}");
    let f = findings_for(&r, &s.s("root/data.txt"));
    assert_eq!(f.len(), 1, "{r:#}");
    let f = f[0];
    assert_eq!(f["check"], "ghosts");
    assert_eq!(f["kind"], "deleted");
    assert_eq!(f["severity"], "warning");
    let ev = &f["evidence"];
    assert_eq!(ev["pid"], pid);
    assert_eq!(ev["mounted"]["inode"], old_ino);
    assert_eq!(ev["mounted"]["links"], 0);
    assert_eq!(ev["mounted"]["size"], 9);
    assert_eq!(ev["host_path"], s.s("host/data.txt"));
    assert_eq!(ev["host_path_from"], "mountinfo");
    assert_eq!(ev["host_now"]["inode"], new_ino);
    assert_eq!(ev["host_now"]["links"], 1);
    assert_eq!(
        ev["mountinfo_root"],
        format!("{}//deleted", s.s("host/data.txt"))
    );
    assert!(f["advice"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.as_str().unwrap().contains("parent directory")));
    assert!(findings_for(&r, &s.s("root/healthy.txt")).is_empty());
    assert!(findings_for(&r, &s.s("root/dir")).is_empty());

    // The human table names the same thing.
    let (_, table, _) = wonk(&["ghosts", "--color", "never"]);
    assert!(
        table.contains(&s.s("root/data.txt")) && table.contains(&old_ino.to_string()),
        "{table}"
    );
}

/// A replaced file whose old inode is kept alive by a hard link is not `deleted` but `replaced`.
#[test]
fn replaced_while_a_hard_link_keeps_the_old_inode() {
    require_root!();
    let mut s = Scratch::new("hardlink");
    let data = s.write("host/data.txt", "old\n");
    s.write("root/data.txt", "");
    s.spawn_ns(&format!(
        "mount --bind {} {}",
        s.s("host/data.txt"),
        s.s("root/data.txt")
    ));
    let old_ino = ino(&data);
    s.sh(&format!(
        "ln {0}/data.txt {0}/keep.txt && echo newer > {0}/new && mv -f {0}/new {0}/data.txt",
        s.s("host")
    ));
    let (_, r) = wonk_json(&["ghosts"]);
    let f = findings_for(&r, &s.s("root/data.txt"));
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["evidence"]["mounted"]["inode"], old_ino);
    assert_eq!(f[0]["evidence"]["mounted"]["links"], 1);
    assert_eq!(f[0]["evidence"]["host_now"]["inode"], ino(&data));
    // The mount's dentry was unlinked by the rename, so the kernel marks it deleted even though links remain.
    assert!(
        f[0]["kind"] == "replaced"
            || f[0]["evidence"]["mountinfo_root"]
                .as_str()
                .unwrap()
                .ends_with("//deleted")
    );
}

/// A file renamed away and recreated: mountinfo follows the rename, so only the container's config.json
/// source shows the ghost. The finding is attributed to the pod through the cgroup and the bundle.
#[test]
fn renamed_source_found_through_the_bundle_and_attributed() {
    require_root!();
    let mut s = Scratch::new("bundle");
    let uid = "6f1c2b3a-0000-4d5e-8f90-112233445566";
    let cid = "a".repeat(56) + "0badcafe";
    let sid = "b".repeat(64);
    s.write("host/data.txt", "v1\n");
    s.write("host/healthy.txt", "ok\n");
    s.write("root/data.txt", "");
    s.write("root/healthy.txt", "");
    let pid = s.spawn_ns(&format!(
        "mount --bind {h}/data.txt {r}/data.txt; mount --bind {h}/healthy.txt {r}/healthy.txt",
        h = s.s("host"),
        r = s.s("root")
    ));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    let mounts = json!([
        {"destination": s.s("root/data.txt"), "type": "bind", "source": s.s("host/data.txt"), "options": ["rbind", "ro"]},
        {"destination": s.s("root/healthy.txt"), "type": "bind", "source": s.s("host/healthy.txt"), "options": ["rbind"]},
    ]);
    s.bundle(
        "state",
        &cid,
        &Pod::new("shop", "web-0", uid, &sid)
            .container("app")
            .cgroup(&cg)
            .mounts(mounts)
            .spec(),
    );
    s.bundle(
        "state",
        &sid,
        &Pod::new("shop", "web-0", uid, &sid).sandbox(),
    );
    let old = ino(&s.path("host/data.txt"));
    s.sh(&format!(
        "mv {0}/data.txt {0}/data.old && echo v2 > {0}/data.txt",
        s.s("host")
    ));

    let (code, r) = wonk_json(&["ghosts", "--containerd-state", &s.s("state")]);
    assert_eq!(code, 1);
    let f = findings_for(&r, &s.s("root/data.txt"));
    assert_eq!(f.len(), 1, "{r:#}");
    let f = f[0];
    assert_eq!(f["kind"], "replaced");
    assert_eq!(f["evidence"]["host_path_from"], "config.json");
    assert_eq!(f["evidence"]["mounted"]["inode"], old);
    assert_eq!(
        f["evidence"]["host_now"]["inode"],
        ino(&s.path("host/data.txt"))
    );
    assert_eq!(f["evidence"]["mountinfo_root"], s.s("host/data.old"));
    let o = &f["owner"];
    assert_eq!(o["namespace"], "shop");
    assert_eq!(o["pod"], "web-0");
    assert_eq!(o["pod_uid"], uid);
    assert_eq!(o["container"], "app");
    assert_eq!(o["container_id"], cid);
    assert_eq!(o["qos"], "Burstable");
    assert_eq!(o["pid"], pid);
    assert!(findings_for(&r, &s.s("root/healthy.txt")).is_empty());
}

/// kubelet's atomic writer swaps a ConfigMap's `..data` and deletes the old timestamped directory; a subPath
/// mount of a key in the old directory becomes a ghost, both in kubelet's bind mount and in the container.
#[test]
fn configmap_subpath_after_an_atomic_writer_update() {
    require_root!();
    let mut s = Scratch::new("subpath");
    let uid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let kubelet = s.path("kubelet");
    let vol = format!("pods/{uid}/volumes/kubernetes.io~configmap/cfg");
    let v1 = "..2026_11_27_17_00_00.000000001";
    s.write(&format!("kubelet/{vol}/{v1}/app.conf"), "level=1\n");
    s.sh(&format!(
        "cd {}/{vol} && ln -s {v1} ..data && ln -s ..data/app.conf app.conf",
        kubelet.display()
    ));
    // kubelet resolves the subPath and bind-mounts the file at volume-subpaths/<volume>/<container>/<index>.
    let sub = s.write(&format!("kubelet/pods/{uid}/volume-subpaths/cfg/app/0"), "");
    s.host_bind(&s.path(&format!("kubelet/{vol}/{v1}/app.conf")), &sub);
    s.write("root/etc/app.conf", "");
    s.spawn_ns(&format!(
        "mount --bind {} {}",
        sub.display(),
        s.s("root/etc/app.conf")
    ));

    let (_, r) = wonk_json(&["ghosts", "--kubelet-root", &kubelet.display().to_string()]);
    assert!(
        findings_for(&r, &s.s("root/etc/app.conf")).is_empty(),
        "{r:#}"
    );

    // The atomic writer's update, as kubelet does it.
    let v2 = "..2026_11_27_17_05_00.000000002";
    s.write(&format!("kubelet/{vol}/{v2}/app.conf"), "level=2\n");
    s.sh(&format!(
        "cd {}/{vol} && ln -s {v2} ..data_tmp && mv -T ..data_tmp ..data && rm -rf {v1}",
        kubelet.display()
    ));
    let (_, r) = wonk_json(&["ghosts", "--kubelet-root", &kubelet.display().to_string()]);
    let f = findings_for(&r, &s.s("root/etc/app.conf"));
    assert_eq!(f.len(), 1, "{r:#}");
    let ev = &f[0]["evidence"];
    assert_eq!(f[0]["kind"], "deleted");
    assert_eq!(ev["mounted"]["links"], 0);
    assert_eq!(ev["host_now"], "gone");
    let current = format!("{}/{vol}/..data/app.conf", kubelet.display());
    assert_eq!(ev["atomic_writer_current"], current);
    assert_eq!(
        ev["atomic_writer_current_now"]["inode"],
        ino(&s.path(&format!("kubelet/{vol}/{v2}/app.conf")))
    );
    assert!(f[0]["advice"][0].as_str().unwrap().contains("subPath"));
    // kubelet's own bind mount in the host namespace is a ghost too, attributed to the pod by its path.
    // (Namespaces that other tests create meanwhile copy the host's mount table, and this mount with it.)
    let host_ns = std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .display()
        .to_string();
    let k: Vec<_> = findings_for(&r, &sub.display().to_string())
        .into_iter()
        .filter(|f| format!("mnt:[{}]", f["evidence"]["mount_namespace"]) == host_ns)
        .collect();
    assert_eq!(k.len(), 1, "{r:#}");
    assert_eq!(k[0]["owner"]["pod_uid"], uid);
    assert_eq!(k[0]["owner"]["container"], "app");
}

/// Processes and namespaces come and go while wonk runs; it never fails because of that.
#[test]
fn namespaces_churning_during_a_scan() {
    require_root!();
    let s = Scratch::new("churn");
    s.write("host/f", "x");
    s.write("root/f", "");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (host, root) = (s.s("host/f"), s.s("root/f"));
    let stop2 = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            // Each in a process group of its own, killed as a group: a kill that lands while sh waits for mount
            // must not leave mount running on its own.
            let mut kids: Vec<std::process::Child> = (0..4)
                .map(|_| {
                    use std::os::unix::process::CommandExt;
                    std::process::Command::new("unshare")
                        .args(["-m", "--propagation", "private", "sh", "-c"])
                        .arg(format!("mount --bind {host} {root}; exec sleep 10"))
                        .process_group(0)
                        .spawn()
                        .unwrap()
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(5));
            for k in &mut kids {
                // SAFETY: kill(2) of the process group this test made, by its id (the child's pid).
                unsafe { libc::kill(-(k.id() as i32), libc::SIGKILL) };
                let _ = k.wait();
            }
            n += 1;
        }
        n
    });
    for _ in 0..25 {
        let (code, r) = wonk_json(&["ghosts"]);
        assert!(code == 0 || code == 1, "exit {code}: {r:#}");
        assert_eq!(r["checks"][0]["status"], "ok");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
}

/// `--host-root`: wonk in its own mount namespace, with the host's / mounted at DIR, finds the same ghost and
/// reports host paths as the node sees them.
#[test]
fn host_root_as_in_a_daemonset() {
    require_root!();
    let mut s = Scratch::new("hostroot");
    s.write("host/data.txt", "v1\n");
    s.write("root/data.txt", "");
    s.spawn_ns(&format!(
        "mount --bind {} {}",
        s.s("host/data.txt"),
        s.s("root/data.txt")
    ));
    s.sh(&format!(
        "echo v2 > {0}/n && mv -f {0}/n {0}/data.txt",
        s.s("host")
    ));
    std::fs::create_dir_all(s.path("hostfs")).unwrap();
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --rbind / {hf} && exec {w} --host-root {hf} ghosts --json",
            hf = s.s("hostfs"),
            w = env!("CARGO_BIN_EXE_wonk")
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["host_root"], s.s("hostfs"));
    let f = findings_for(&r, &s.s("root/data.txt"));
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["evidence"]["host_path"], s.s("host/data.txt"));
    assert_eq!(
        f[0]["evidence"]["host_now"]["inode"],
        ino(&s.path("host/data.txt"))
    );
}
