//! Cgroups a pod can make: with a writable cgroupfs (cgroup namespaces and delegation allow it), a container
//! creates cgroups below its own and names them anything, such as a kubelet pod tree with another pod's uid.
//! wonk must count what runs there for the pod whose container it is, and never list a pod the pod made up.

use crate::common::*;
use std::process::Command;

const REAL: &str = "40a1c0de-0000-4000-8000-0000000000a1";
const FAKE: &str = "40a1c0de-0000-4000-8000-00000000fa4e";
const CID: &str = "c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de";
const FAKE_CID: &str = "fa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4efa4e";

/// Attack: a container builds `kubepods/besteffort/pod<uid>/<id>` below its own cgroup (v2, and in the v1
/// `pids` hierarchy) and runs a process there, to add a pod to wonk's rankings or to move its own processes to
/// another pod. The pod walk starts at kubelet's place only and stops at container cgroups, and a process's
/// pod is the first pod in its cgroup path: `pressure`, `pids` and `cgroups` list the real pod alone, with the
/// process counted as its own.
#[test]
fn a_pod_tree_made_inside_a_container_adds_no_pod() {
    let t = "a_pod_tree_made_inside_a_container_adds_no_pod";
    if !root_or_skip(t)
        || !present_or_skip(
            t,
            Scratch::has_unified_psi()
                && std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists(),
            "cgroup v2 at /sys/fs/cgroup/unified and the v1 pids hierarchy",
        )
    {
        return;
    }
    let mut s = Scratch::new("hostile-cgroups");
    let nested =
        format!("kubepods/besteffort/pod{REAL}/{CID}/kubepods/besteffort/pod{FAKE}/{FAKE_CID}");
    let p = s.spawn_cmd(Command::new("sleep").arg("1000"));
    s.cgroup_in("unified", &nested, Some(p));
    s.cgroup_in("pids", &nested, Some(p));
    let root = s.cgroup_parent();
    for check in ["pressure", "pids", "cgroups"] {
        let (_, r) = wonk_json(&[check, "--cgroup-root", &root]);
        let text = r.to_string();
        assert!(!text.contains(FAKE), "{check} lists the made-up pod: {r:#}");
        assert!(!text.contains(FAKE_CID), "{check}: {r:#}");
        if check != "cgroups" {
            let pods = r["checks"][0]["details"]["pods"].as_array().unwrap();
            assert_eq!(pods.len(), 1, "{check}: {r:#}");
            assert_eq!(pods[0]["owner"]["pod_uid"], REAL);
        }
    }
    let (_, r) = wonk_json(&["pids", "--cgroup-root", &root]);
    let pod = &r["checks"][0]["details"]["pods"][0];
    assert_eq!(
        pod["processes"], 1,
        "the sleeper is the real pod's: {pod:#}"
    );
    assert_eq!(pod["pids_current"], 1);
}
