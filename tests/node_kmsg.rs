//! `wonk kmsg` on a real pod: the pod's hostPath directory `/shared` is a loop-mounted ext4 with 1 KiB blocks and
//! no large_dir, mounted on the host before the pod is made (mounts made later do not propagate into the
//! container). The container fills a flat `/shared/tmp` until the kernel's directory index is full; the kernel's
//! warning must become an `htree-full` finding that names the host directory, the pod, and the directory as the
//! pod sees it. Only records newer than the test's start are looked at. Needs root and the `cri` feature.
#![cfg(feature = "cri")]

#[macro_use]
mod common;
mod node;

use common::*;
use node::{Handler, Node, Pod, PodOpts};
use serde_json::Value;
use std::path::Path;

fn assert_pod(o: &Value, pod: &Pod, what: &str) {
    assert_eq!(o["namespace"], pod.namespace.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod"], pod.name.as_str(), "{what}: {o:#}");
    assert_eq!(o["pod_uid"], pod.uid.as_str(), "{what}: {o:#}");
    assert_eq!(o["container"], "app", "{what}: {o:#}");
}

#[test]
fn a_full_directory_index_in_a_pods_hostpath_names_the_pod() {
    require_root!();
    // Declared before the pod, so that the pod goes first and the filesystem is unmounted after it.
    let mut s = Scratch::new("node-kmsg");
    let (mnt, dev) = s.ext4("shared", "256M", "-b 1024 -N 65536 -O ^large_dir");
    let device = dev.trim_start_matches("/dev/").to_string();
    let host = wonk::host::Host::open(Path::new("/")).unwrap();
    let since = wonk::kmsg::last_seq(&host).unwrap().unwrap_or(0);

    let node = Node::get();
    let pod = node.pod(PodOpts::new("tmpfiller-0", "shop", Handler::Cgroupfs).shared_dir(&mnt));
    assert_eq!(pod.shared_dir, mnt);

    // One shell, no fork per file: a 240-character prefix built once, then creates until one fails. `true`, not
    // `:`: a redirection that fails on a special built-in such as `:` exits the shell.
    let out = pod.exec(
        r#"mkdir /shared/tmp
p=xxxxxxxxxx; p=$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p$p
i=0
{ while true > "/shared/tmp/$p$i"; do i=$((i+1)); done; } 2>&1
echo "created $i""#,
    );
    eprintln!("{out}");
    let created: u64 = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("created "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out.contains("No space left on device"),
        "the creates did not end with ENOSPC: {out}"
    );
    assert!(
        created > 10_000,
        "only {created} files before ENOSPC: {out}"
    );
    let dir = mnt.join("tmp");
    let dir_s = dir.display().to_string();

    let kr = node.kubelet_root.display().to_string();
    let (code, r) = wonk_json(&["kmsg", "--kubelet-root", &kr]);
    assert_eq!(code, 2, "a full index is critical: {r:#}");
    let ours: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["kind"] == "htree-full"
                && f["evidence"]["device"] == device.as_str()
                && f["evidence"]["last_seq"].as_u64() > Some(since)
        })
        .collect();
    assert_eq!(ours.len(), 1, "{r:#}");
    let f = ours[0];
    let e = &f["evidence"];
    assert_eq!(f["severity"], "critical");
    assert_eq!(e["inode"], ino(&dir), "{f:#}");
    assert_eq!(e["path"], dir_s.as_str(), "{f:#}");
    assert_eq!(f["subject"], dir_s.as_str(), "{f:#}");
    assert_eq!(e["large_dir"], false, "{f:#}");

    // The pod, as the finding's owner and in the sighting that shows the directory as the pod sees it.
    let seen = e["seen_by"].as_array().unwrap();
    let inside = seen
        .iter()
        .find(|s| s["pid"] == pod.pid)
        .unwrap_or_else(|| panic!("the pod's container is not in seen_by: {f:#}"));
    assert_eq!(inside["path_in_container"], "/shared/tmp", "{f:#}");
    assert_pod(&inside["owner"], &pod, "seen_by");
    assert_eq!(inside["owner"]["container_id"], pod.container_id.as_str());
    assert_pod(&f["owner"], &pod, "owner");
    assert_eq!(f["owner"]["container_id"], pod.container_id.as_str());

    // `wonk kmsg` reads all the log holds, and folds in older warnings about the same device and inode (an
    // earlier filesystem on a reused loop device). Read from the test's start only, the finding is this test's.
    let owners = wonk::owner::Attributor::new(&host, node.kubelet_root.clone(), &[]);
    let ctx = wonk::checks::Context {
        host: &host,
        owners: &owners,
    };
    let out = wonk::kmsg::scan(
        ctx.owners,
        &wonk::kmsg::Source::DevKmsg { follow: false },
        &wonk::kmsg::Options {
            since_seq: Some(since),
            ..Default::default()
        },
    );
    let fresh: Vec<Value> = out
        .findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .filter(|f| f["kind"] == "htree-full" && f["evidence"]["device"] == device.as_str())
        .collect();
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    let e = &fresh[0]["evidence"];
    assert!(e["first_seq"].as_u64().unwrap() > since, "{e:#}");
    assert_eq!(e["path"], dir_s.as_str(), "{e:#}");
    assert_pod(&fresh[0]["owner"], &pod, "owner, from the test's records");
    let inside = e["seen_by"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pod.pid)
        .unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(inside["path_in_container"], "/shared/tmp", "{e:#}");
}
