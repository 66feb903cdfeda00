//! wonk against real pods: a private containerd (tests/node), pods created through CRI v1 the way kubelet does,
//! and the wonk binary run on them. Needs root and the `cri` feature (`cargo test --features cri`).
#![cfg(feature = "cri")]

#[macro_use]
mod common;
mod node;

use common::*;
use node::{Handler, Node, Pod, PodOpts};
use serde_json::Value;
use std::path::Path;

/// `wonk ARGS --kubelet-root <node's> --json`, which must exit 0. containerd is found from its process.
fn wonk_ok(node: &Node, args: &[&str]) -> Value {
    let mut a: Vec<&str> = args.to_vec();
    let kr = node.kubelet_root.display().to_string();
    a.extend(["--kubelet-root", &kr]);
    let (code, v) = wonk_json(&a);
    assert_eq!(code, 0, "wonk {args:?}: {v:#}");
    v
}

/// The owner names a pod's container: namespace, pod, uid, container name and id.
fn assert_owner(o: &Value, pod: &Pod, what: &str) {
    assert_eq!(o["namespace"], pod.namespace.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod"], pod.name.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod_uid"], pod.uid.as_str(), "{what}: {o:#}");
    assert_eq!(o["container"], "app", "{what}: {o:#}");
}

#[test]
fn cri_client_runs_and_lists_pods() {
    require_root!();
    let node = Node::get();
    let cri = node.cri();
    let v = cri.version().unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let images = cri.list_images().unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == node::IMAGE)),
        "{images:?}"
    );
    let pod = node.pod(PodOpts::new("lister-0", "cri", Handler::Cgroupfs));
    let sandboxes = cri.list_pod_sandbox(None).unwrap();
    let sb = sandboxes
        .iter()
        .find(|s| s.id == pod.sandbox_id)
        .unwrap_or_else(|| panic!("{sandboxes:?}"));
    let md = sb.metadata.as_ref().unwrap();
    assert_eq!(
        (md.name.as_str(), md.namespace.as_str(), md.uid.as_str()),
        ("lister-0", "cri", pod.uid.as_str())
    );
    assert_eq!(sb.labels["io.kubernetes.pod.uid"], pod.uid);
    let containers = cri
        .list_containers(Some(wonk::cri::api::ContainerFilter {
            pod_sandbox_id: pod.sandbox_id.clone(),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].id, pod.container_id);
    assert_eq!(containers[0].metadata.as_ref().unwrap().name, "app");
    assert_eq!(
        containers[0].state,
        wonk::cri::api::ContainerState::ContainerRunning as i32
    );
    // The pod is the one kubelet would have made: host network, busybox sleeping, its mounts in place.
    assert_eq!(pod.exec("cat /data.txt"), "version2");
    assert_eq!(pod.exec("cat /cache/blob"), "cached");
    assert_eq!(pod.exec("cat /shared/inner.txt"), "inner");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/ns/net", pod.pid)).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(pod.cgroup(), pod.expected_cgroup(&pod.container_id));
}

/// `wonk who` on a real pod's pid, container id, id prefix, a file in its overlay upperdir, and a file in its
/// emptyDir.
fn who_names_the_pod(handler: Handler, name: &str) {
    let node = Node::get();
    let pod = node.pod(PodOpts::new(name, "shop", handler));
    assert_eq!(
        pod.cgroup(),
        pod.expected_cgroup(&pod.container_id),
        "the container's cgroup is not in the {handler:?} layout"
    );

    let v = wonk_ok(node, &["who", &pod.pid.to_string()]);
    assert_eq!(v["kind"], "pid");
    assert_eq!(v["process"]["comm"], "sleep");
    let o = &v["owner"];
    assert_owner(o, &pod, "pid");
    assert_eq!(o["container_id"], pod.container_id.as_str());
    assert_eq!(o["container_type"], "container");
    assert_eq!(o["qos"], "Burstable");
    assert_eq!(o["image"], node::IMAGE);
    assert_eq!(
        o["cgroup"],
        pod.expected_cgroup(&pod.container_id).as_str(),
        "{o:#}"
    );
    let shim = if handler == Handler::ShimV1 {
        "v1"
    } else {
        "v2"
    };
    assert_eq!(
        o["runtime"],
        format!("containerd (shim {shim}, namespace k8s.io)").as_str()
    );

    // The pod's sandbox (pause) process is the pod's too.
    let v = wonk_ok(node, &["who", &pod.sandbox_pid.to_string()]);
    let o = &v["owner"];
    assert_eq!(o["pod"], pod.name.as_str(), "{o:#}");
    assert_eq!(o["pod_uid"], pod.uid.as_str());
    assert_eq!(o["container_type"], "sandbox");
    assert_eq!(o["container_id"], pod.sandbox_id.as_str());

    for target in [&pod.container_id[..], &pod.container_id[..12]] {
        let v = wonk_ok(node, &["who", target]);
        assert_eq!(v["kind"], "container", "{target}: {v:#}");
        assert_owner(&v["owner"], &pod, target);
        assert_eq!(v["owner"]["container_id"], pod.container_id.as_str());
        assert!(
            v["pids"].as_array().unwrap().contains(&pod.pid.into()),
            "{target}: {v:#}"
        );
    }

    // A file the container wrote lands in its overlay upperdir.
    pod.exec("mkdir -p /tmp/work && echo scratch > /tmp/work/scratch");
    let upper = pod.upperdir().join("tmp/work/scratch");
    assert!(upper.exists(), "{} is missing", upper.display());
    let v = wonk_ok(node, &["who", &upper.display().to_string()]);
    let s = v["seen_by"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["how"].as_str().unwrap().contains("upperdir") && s["pid"] == pod.pid)
        .unwrap_or_else(|| panic!("upperdir: {v:#}"));
    assert_eq!(s["path_in_container"], "/tmp/work/scratch");
    assert_owner(&s["owner"], &pod, "upperdir sighting");
    assert_owner(&v["owner"], &pod, "upperdir");

    // A file in the pod's emptyDir: kubelet's pod volume, and the bind mount the container sees it through.
    let blob = pod.empty_dir.join("blob");
    let v = wonk_ok(node, &["who", &blob.display().to_string()]);
    let seen = v["seen_by"].as_array().unwrap();
    assert!(
        seen.iter().any(
            |s| s["how"] == "kubelet pod volume kubernetes.io~empty-dir/cache"
                && s["owner"]["pod"] == pod.name.as_str()
        ),
        "emptyDir: {v:#}"
    );
    let bind = seen
        .iter()
        .find(|s| s["how"].as_str().unwrap().starts_with("bind mount") && s["pid"] == pod.pid)
        .unwrap_or_else(|| panic!("emptyDir bind mount: {v:#}"));
    assert_eq!(bind["path_in_container"], "/cache/blob");
    assert_owner(&bind["owner"], &pod, "emptyDir bind mount");
    assert_eq!(v["owner"]["namespace"], pod.namespace.as_str());
    assert_eq!(v["owner"]["pod"], pod.name.as_str());
    assert_eq!(v["owner"]["pod_uid"], pod.uid.as_str());
}

#[test]
fn who_names_a_real_pod_cgroupfs_layout() {
    require_root!();
    who_names_the_pod(Handler::Cgroupfs, "web-cgroupfs-0");
}

#[test]
fn who_names_a_real_pod_systemd_layout() {
    require_root!();
    who_names_the_pod(Handler::SystemdShape, "web-systemd-0");
}

#[test]
fn who_names_a_real_pod_shim_v1() {
    require_root!();
    who_names_the_pod(Handler::ShimV1, "web-shimv1-0");
}

/// The seed's ghost hostPath file in a real pod: `mv -f` a new file over the hostPath on the host. The pod
/// keeps reading the old content; `wonk ghosts` reports exactly that mount, with the pod's names and both
/// inodes, and none of the pod's healthy mounts.
#[test]
fn ghost_hostpath_file_in_a_real_pod() {
    require_root!();
    let node = Node::get();
    let pod = node.pod(PodOpts::new(
        "some-app-7d4b9c-x2x9q",
        "shop",
        Handler::Cgroupfs,
    ));
    let ours = |r: &Value| -> Vec<Value> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["evidence"]["pid"] == pod.pid
                    || f["owner"]["pod_uid"] == pod.uid.as_str()
                    || f["evidence"]["pid"] == pod.sandbox_pid
            })
            .cloned()
            .collect()
    };
    // The healthy siblings that must not be reported are really there, as bind mounts of files and
    // directories: the directory hostPath, the emptyDir, kubelet's /etc/hosts and /dev/termination-log, and
    // containerd's /etc/hostname and /etc/resolv.conf.
    let mi = pod.mountinfo();
    for mp in [
        "/data.txt",
        "/shared",
        "/cache",
        "/etc/hosts",
        "/dev/termination-log",
        "/etc/hostname",
        "/etc/resolv.conf",
    ] {
        assert!(
            mi.lines()
                .any(|l| l.split(' ').nth(4) == Some(mp) && l.split(' ').nth(3) != Some("/")),
            "no bind mount at {mp}:\n{mi}"
        );
    }
    let kr = node.kubelet_root.display().to_string();
    let (code, before) = wonk_json(&["ghosts", "--kubelet-root", &kr]);
    assert!(code <= 1, "exit {code}: {before:#}");
    assert_eq!(
        ours(&before),
        Vec::<Value>::new(),
        "a healthy pod was reported"
    );

    let data = pod.host_dir.join("data.txt");
    let old_ino = ino(&data);
    let new = pod.host_dir.join("new.txt");
    std::fs::write(&new, "version3\n").unwrap();
    let st = std::process::Command::new("mv")
        .arg("-f")
        .arg(&new)
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let new_ino = ino(&data);
    assert_ne!(old_ino, new_ino);
    assert_eq!(
        pod.exec("cat /data.txt"),
        "version2",
        "the pod should still read the old file"
    );

    let (code, after) = wonk_json(&["ghosts", "--kubelet-root", &kr]);
    assert_eq!(code, 1, "{after:#}");
    let found = ours(&after);
    assert_eq!(found.len(), 1, "expected only /data.txt: {found:#?}");
    let f = &found[0];
    assert_eq!(f["check"], "ghosts");
    assert_eq!(f["kind"], "deleted");
    assert_eq!(f["subject"], "/data.txt");
    assert_owner(&f["owner"], &pod, "ghost");
    assert_eq!(f["owner"]["container_id"], pod.container_id.as_str());
    let ev = &f["evidence"];
    assert_eq!(ev["pid"], pod.pid);
    assert_eq!(ev["host_path"], data.display().to_string().as_str());
    assert_eq!(ev["host_path_from"], "config.json");
    assert_eq!(ev["mounted"]["inode"], old_ino);
    assert_eq!(ev["mounted"]["links"], 0);
    assert_eq!(ev["host_now"]["inode"], new_ino);
    assert_eq!(ev["host_now"]["links"], 1);
    assert_eq!(
        ev["mountinfo_root"].as_str().unwrap(),
        format!("{}//deleted", fs_path(&data))
    );
}

/// Where `p` lies inside its filesystem, as mountinfo's root field shows it (the node's /tmp may be a mount).
fn fs_path(p: &Path) -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let s = p.display().to_string();
    let best = mi
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (root, mp) = (f[3], f[4]);
            let under = mp == "/" || s == mp || s.starts_with(&format!("{mp}/"));
            under.then(|| (mp.len(), root.to_string(), mp.to_string()))
        })
        .max()
        .unwrap();
    let rest = if best.2 == "/" {
        &s[..]
    } else {
        &s[best.2.len()..]
    };
    if best.1 == "/" {
        rest.to_string()
    } else {
        format!("{}{rest}", best.1)
    }
}

/// What a pod made on the host, to check that it is gone.
struct Traces {
    pids: Vec<u32>,
    sockets: Vec<String>,
    bundles: Vec<std::path::PathBuf>,
    dirs: Vec<std::path::PathBuf>,
    ids: Vec<String>,
    cgroups: Vec<std::path::PathBuf>,
}

fn traces(pod: &Pod) -> Traces {
    let ids = vec![pod.container_id.clone(), pod.sandbox_id.clone()];
    let bundles: Vec<_> = ids.iter().map(|id| pod.bundle(id)).collect();
    let mut sockets = Vec::new();
    for b in &bundles {
        if let Ok(a) = std::fs::read_to_string(b.join("address")) {
            sockets.push(a.trim().trim_start_matches("unix://").to_string());
        }
    }
    if pod.handler != Handler::ShimV1 {
        assert_eq!(pod.shim_pids.len(), 1, "shim v2: one shim per pod");
        assert!(!sockets.is_empty(), "no shim socket recorded");
    }
    for s in &sockets {
        assert!(Path::new(s).exists(), "{s}");
    }
    for &shim in &pod.shim_pids {
        assert!(cmdline_of(shim).contains("containerd-shim"), "{shim}");
    }
    let mut cgroups: Vec<std::path::PathBuf> = ids
        .iter()
        .map(|id| pod.expected_cgroup(id).into())
        .collect();
    cgroups.push(cgroups[0].parent().unwrap().to_path_buf());
    Traces {
        pids: [pod.pid, pod.sandbox_pid]
            .into_iter()
            .chain(pod.shim_pids.iter().copied())
            .collect(),
        sockets,
        bundles,
        dirs: vec![pod.pod_dir.clone(), pod.host_dir.clone()],
        ids,
        cgroups,
    }
}

fn assert_gone(t: &Traces, what: &str) {
    for pid in &t.pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{what}: pid {pid} is still there: {stat}"
        );
    }
    for s in &t.sockets {
        assert!(!Path::new(s).exists(), "{what}: {s} remains");
    }
    for p in t.bundles.iter().chain(&t.dirs) {
        assert!(!p.exists(), "{what}: {} remains", p.display());
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for id in &t.ids {
        assert!(!mi.contains(id.as_str()), "{what}: a mount of {id} remains");
    }
    for m in node::cgroup_mounts() {
        for cg in &t.cgroups {
            let p = m.join(cg.strip_prefix("/").unwrap());
            assert!(!p.exists(), "{what}: {} remains", p.display());
        }
    }
}

/// A pod whose test fails (panics) is removed by the unwinding, in every runtime handler: no processes, no
/// shim, no shim socket, no mounts, no cgroups, no bundles, no pod directories remain.
#[test]
fn the_pod_of_a_failed_test_leaves_nothing_behind() {
    require_root!();
    let node = Node::get();
    for handler in [Handler::Cgroupfs, Handler::SystemdShape, Handler::ShimV1] {
        let seen = std::sync::Mutex::new(None);
        let r = std::panic::catch_unwind(|| {
            let pod = node.pod(PodOpts::new("doomed-0", "tmp", handler));
            *seen.lock().unwrap() = Some(traces(&pod));
            panic!("deliberate failure with a live {handler:?} pod");
        });
        assert!(r.is_err());
        let t = seen
            .into_inner()
            .unwrap()
            .unwrap_or_else(|| panic!("{handler:?}: the pod was not made"));
        assert_gone(&t, &format!("{handler:?}"));
    }
}

fn cmdline_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
