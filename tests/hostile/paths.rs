//! Host paths a pod can reach into: hostPath files swapped for symlinks, kubelet's atomic-writer `..data`
//! pointed outside its volume, bundle mount sources naming other files, and overlays a container mounts itself.
//! wonk must never report the identity of what such a path points at (`/etc/shadow`), nor walk or name a host
//! directory a container's own mount table calls its layer.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

/// `/etc/shadow`'s inode: wonk must never report it as what a pod's host path holds.
fn shadow_ino() -> u64 {
    ino(Path::new("/etc/shadow"))
}

/// A ghost finding's evidence, with the host path's identity or symlink.
fn evidence<'a>(r: &'a Value, subject: &str) -> &'a Value {
    let f = findings_for(r, subject);
    assert_eq!(f.len(), 1, "{subject}: {r:#}");
    &f[0]["evidence"]
}

/// Attack: a pod that mounts a hostPath file (and can write the host directory) replaces the file with a
/// symlink to `/etc/shadow` (`ln -sf`), or keeps the old file by a hard link first (a `replaced` ghost), or
/// swaps the whole directory for a symlink to `/etc`. The old code statted the host path through the symlinks
/// and reported `/etc/shadow`'s inode, size and mtime as `host_now`. Now the symlink is the evidence, not
/// followed.
#[test]
fn hostpath_files_swapped_for_symlinks_to_etc_shadow() {
    require_root!();
    let mut s = Scratch::new("hostile-swap");
    for f in ["host/a.txt", "host/b.txt", "host/dir/shadow"] {
        s.write(f, "mine\n");
    }
    for f in ["root/a.txt", "root/b.txt", "root/shadow"] {
        s.write(f, "");
    }
    s.spawn_ns(&format!(
        "mount --bind {h}/a.txt {r}/a.txt; mount --bind {h}/b.txt {r}/b.txt; mount --bind {h}/dir/shadow {r}/shadow",
        h = s.s("host"),
        r = s.s("root")
    ));
    s.sh(&format!(
        "cd {} && ln -sf /etc/shadow a.txt && ln b.txt b.keep && ln -sf /etc/shadow b.txt && rm -rf dir && ln -s /etc dir",
        s.s("host")
    ));

    let (code, r) = wonk_json(&["ghosts"]);
    assert_eq!(code, 1, "{r:#}");
    let shadow = shadow_ino();
    let a = evidence(&r, &s.s("root/a.txt"));
    assert_eq!(
        a["reason"].as_str().map(|r| r.contains("0 links")),
        Some(true)
    );
    assert_eq!(
        a["host_now"],
        json!({"symlink": s.s("host/a.txt"), "target": "/etc/shadow", "followed": false}),
        "{a:#}"
    );
    let b = findings_for(&r, &s.s("root/b.txt"))[0];
    assert_eq!(b["evidence"]["host_now"]["symlink"], s.s("host/b.txt"));
    assert_eq!(b["evidence"]["host_now"]["target"], "/etc/shadow");
    assert!(b["summary"].as_str().unwrap().contains("symlink"), "{b:#}");
    // The directory on the way is the symlink; nothing past it is looked at.
    let d = evidence(&r, &s.s("root/shadow"));
    assert_eq!(
        d["host_now"],
        json!({"symlink": s.s("host/dir"), "target": "/etc", "followed": false}),
        "{d:#}"
    );
    for f in r["findings"].as_array().unwrap() {
        assert_ne!(f["evidence"]["host_now"]["inode"], shadow, "{f:#}");
    }
}

/// Attack: a pod that controls a ConfigMap-like volume directory (or a fake one in a hostPath) points the atomic
/// writer's `..data` at `/etc`, or makes a timestamped directory a symlink to `/etc`, after its subPath mount of
/// the key `shadow` became a ghost. The old code resolved `..data/shadow` through the symlinks and reported
/// `/etc/shadow`'s identity as `atomic_writer_current_now`. Now `..data` is read only as the atomic writer
/// makes it (a relative symlink to a sibling `..<timestamp>` directory), and nothing else is followed.
#[test]
fn atomic_writer_data_pointed_outside_the_volume() {
    require_root!();
    let mut s = Scratch::new("hostile-data");
    let uid = "5eed5eed-0000-4000-8000-000000000001";
    let kubelet = s.path("kubelet");
    let v1 = "..2026_11_27_17_00_00.000000001";
    let v2 = "..2026_11_27_17_05_00.000000002";
    let mut subs = Vec::new();
    for vol in ["abs", "rel", "stamp"] {
        let dir = format!("kubelet/pods/{uid}/volumes/kubernetes.io~configmap/{vol}");
        s.write(&format!("{dir}/{v1}/shadow"), "level=1\n");
        s.sh(&format!(
            "cd {} && ln -s {v1} ..data && ln -s ..data/shadow shadow",
            s.s(&dir)
        ));
        let sub = s.write(
            &format!("kubelet/pods/{uid}/volume-subpaths/{vol}/app/0"),
            "",
        );
        s.host_bind(&s.path(&format!("{dir}/{v1}/shadow")), &sub);
        s.write(&format!("root/{vol}"), "");
        subs.push((vol, dir, sub));
    }
    let binds: Vec<String> = subs
        .iter()
        .map(|(vol, _, sub)| {
            format!(
                "mount --bind {} {}",
                sub.display(),
                s.s(&format!("root/{vol}"))
            )
        })
        .collect();
    s.spawn_ns(&binds.join("\n"));
    // The attacks: the old version is gone (the mounts are ghosts), and `..data` points elsewhere.
    let depth = "../".repeat(s.dir.components().count() + 8);
    for (vol, dir, _) in &subs {
        let link = match *vol {
            "abs" => "/etc".to_string(),
            "rel" => format!("{depth}etc"),
            _ => v2.to_string(),
        };
        s.sh(&format!(
            "cd {} && rm -rf {v1} && ln -sfn {link} ..data",
            s.s(dir)
        ));
        if *vol == "stamp" {
            // `..data` has the atomic writer's shape, but its timestamped directory is a symlink to /etc.
            s.sh(&format!("cd {} && ln -s /etc {v2}", s.s(dir)));
        }
    }

    let (code, r) = wonk_json(&["ghosts", "--kubelet-root", &kubelet.display().to_string()]);
    assert_eq!(code, 1, "{r:#}");
    let shadow = shadow_ino();
    for (vol, dir, _) in &subs {
        let ev = evidence(&r, &s.s(&format!("root/{vol}")));
        let data = format!("{}/..data", s.s(dir));
        assert_eq!(ev["atomic_writer_current"], format!("{data}/shadow"));
        let now = &ev["atomic_writer_current_now"];
        assert_ne!(now["inode"], shadow, "{ev:#}");
        assert_eq!(now["followed"], false, "{ev:#}");
        match *vol {
            "abs" => assert_eq!(now["symlink_to"], "/etc", "{now:#}"),
            "rel" => assert_eq!(now["not_atomic_writer"], data, "{now:#}"),
            _ => assert_eq!(
                *now,
                json!({"symlink": format!("{}/{v2}", s.s(dir)), "target": "/etc", "followed": false})
            ),
        }
    }
}

/// Attack: a container's bundle names `/etc/shadow` as the source of its bind mount of a file of its own (a
/// fake bundle, or a tampered one). The old code took the source on trust and reported `/etc/shadow`'s identity
/// as what the host path holds now, in a `replaced` finding against a healthy mount. Now a source is used only
/// where the host's mount table agrees that the mount came from there; the kernel's own record is used instead,
/// and the disagreement is evidence.
#[test]
fn a_bundle_mount_source_naming_etc_shadow() {
    require_root!();
    let mut s = Scratch::new("hostile-source");
    let uid = "5eed5eed-0000-4000-8000-000000000002";
    let cid = "5eed".repeat(16);
    let sid = "5ead".repeat(16);
    s.write("host/healthy.txt", "ok\n");
    s.write("host/ghost.txt", "v1\n");
    s.write("root/healthy.txt", "");
    s.write("root/ghost.txt", "");
    let pid = s.spawn_ns(&format!(
        "mount --bind {h}/healthy.txt {r}/healthy.txt; mount --bind {h}/ghost.txt {r}/ghost.txt",
        h = s.s("host"),
        r = s.s("root")
    ));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    let mounts = json!([
        {"destination": s.s("root/healthy.txt"), "type": "bind", "source": "/etc/shadow", "options": ["rbind"]},
        {"destination": s.s("root/ghost.txt"), "type": "bind", "source": "/etc/shadow", "options": ["rbind"]},
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
    s.sh(&format!(
        "cd {} && echo v2 > n && mv -f n ghost.txt",
        s.s("host")
    ));

    let (code, r) = wonk_json(&["ghosts", "--containerd-state", &s.s("state")]);
    assert_eq!(code, 1, "{r:#}");
    assert!(
        findings_for(&r, &s.s("root/healthy.txt")).is_empty(),
        "{r:#}"
    );
    let ev = evidence(&r, &s.s("root/ghost.txt"));
    assert_eq!(ev["host_path"], s.s("host/ghost.txt"), "{ev:#}");
    assert_eq!(ev["host_path_from"], "mountinfo");
    assert_eq!(ev["bundle_source_disagrees"], "/etc/shadow");
    assert_eq!(ev["host_now"]["inode"], ino(&s.path("host/ghost.txt")));
    assert_ne!(ev["host_now"]["inode"], shadow_ino());
}

/// Stages a "container" whose root is an overlay it mounted itself, inside its own mount namespace, with
/// `upperdir` a host directory that stands for the host's `/etc` (a scratch directory with a marker file).
fn own_overlay_root(s: &mut Scratch, uid: &str, cid: &str) -> u32 {
    for d in ["lower", "hostetc", "work", "rootfs"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    s.write("hostetc/shadow", "root:$6$marker:19000:0:99999:7:::\n");
    s.sleep_image("lower");
    let rootfs = s.path("rootfs");
    let pid = s.spawn_chrooted(
        &format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
            s.s("lower"),
            s.s("hostetc"),
            s.s("work"),
            rootfs.display()
        ),
        &rootfs,
    );
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    s.bundle(
        "state",
        cid,
        &Pod::new("evil", "mole-0", uid, cid)
            .container("app")
            .cgroup(&cg)
            .spec(),
    );
    pid
}

/// Attack: a container mounts an overlay on its own `/` with `upperdir=/etc` (a path as it sees it, which wonk
/// would read as the host's). The old code took the upperdir from the container's mount table and walked that
/// host directory as the pod's writable layer. Now only the host's mount of the same overlay says where a layer
/// is; this one is not in the host's table, so it is not walked, and a blind spot says so.
#[test]
fn layers_ignore_an_overlay_root_the_container_mounted_itself() {
    require_root!();
    let mut s = Scratch::new("hostile-layers");
    let uid = "5eed5eed-0000-4000-8000-000000000003";
    let pid = own_overlay_root(&mut s, uid, &"3e7c".repeat(16));
    let (_, r) = wonk_json(&[
        "layers",
        "--max-files",
        "1",
        "--containerd-state",
        &s.s("state"),
        "--kubelet-root",
        &s.s("kubelet"),
    ]);
    let hostetc = s.s("hostetc");
    for f in r["findings"].as_array().unwrap() {
        assert!(
            !f.to_string().contains(&hostetc),
            "walked the container's claimed upperdir: {f:#}"
        );
        assert_ne!(f["owner"]["pod_uid"], uid, "{f:#}");
    }
    let blind = r["blind_spots"].as_array().unwrap();
    assert!(
        blind.iter().any(|b| b["what"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("pid {pid}")))),
        "{r:#}"
    );
}

/// Attack: the same overlay makes `who` say the pod sees a host file (`<etc>/shadow`) as part of its writable
/// layer. The old code read upperdir from the container's mount table. Now only the host's mount table names
/// layers, so the pod is not among those who see it.
#[test]
fn who_ignores_an_overlay_root_the_container_mounted_itself() {
    require_root!();
    let mut s = Scratch::new("hostile-who");
    let uid = "5eed5eed-0000-4000-8000-000000000004";
    let pid = own_overlay_root(&mut s, uid, &"3e7d".repeat(16));
    let (code, w) = wonk_json(&[
        "who",
        &s.s("hostetc/shadow"),
        "--containerd-state",
        &s.s("state"),
        "--kubelet-root",
        &s.s("kubelet"),
    ]);
    assert_eq!(code, 0, "{w:#}");
    for seen in w["seen_by"].as_array().unwrap() {
        assert_ne!(seen["pid"], pid, "{w:#}");
        assert!(
            !seen["how"].as_str().unwrap_or("").contains("overlay"),
            "{w:#}"
        );
    }
    assert_ne!(w["owner"]["pod_uid"], uid, "{w:#}");
}
