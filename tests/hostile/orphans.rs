//! Pod leftovers as a pod can fake them: mounts in a namespace of its own at paths that look like another pod's
//! directory.

use crate::common::*;

/// Attack: a process in a mount namespace of its own (a container) mounts a tmpfs at the path of a gone pod's
/// volume, as its own namespace sees it, to pose as the namespace that keeps that pod's volumes busy (and to make
/// wonk advise `nsenter` into it, or count mounts the host does not have). wonk takes the mounts under a pod's
/// directory from the host's table only, and a namespace as a holder only when it has a mount of the same device
/// and root as one of them: the gone pod has no mounts, and no holder.
#[test]
fn a_namespace_mounting_at_a_gone_pods_path_is_not_its_holder() {
    require_root!();
    let mut s = Scratch::new("hostile-orphans");
    let gone = "0c0c0c0c-1111-4222-8333-444444444444";
    let vol = s.path(&format!(
        "kubelet/pods/{gone}/volumes/kubernetes.io~secret/token"
    ));
    std::fs::create_dir_all(&vol).unwrap();
    let poser = s.spawn_ns(&format!(
        "mount -t tmpfs -o size=1m tmpfs '{}'",
        vol.display()
    ));
    let kubelet = s.s("kubelet");
    let (_, r) = wonk_json(&["orphans", "--min-age", "0", "--kubelet-root", &kubelet]);
    let pod = s.s(&format!("kubelet/pods/{gone}"));
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == pod.as_str())
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(f["kind"], "orphaned-pod-dir", "{f:#}");
    assert_eq!(f["evidence"]["mounts_total"], 0, "{f:#}");
    let holders = f["evidence"]["holders"].as_array().unwrap();
    assert!(!holders.iter().any(|h| h["pid"] == poser as u64), "{f:#}");
}
