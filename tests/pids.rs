//! `wonk pids` and `wonk cgroups` against real cgroups: a pod whose container init never reaps its children,
//! under a small pids.max, and the dying cgroups its zombies hold.

#[macro_use]
mod common;

use common::*;
use std::process::Command;

const UID: &str = "2b1e0000-0000-4000-8000-00000000de4d";
const CID: &str = "de4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4dde4d";
const IDLE_UID: &str = "2b1e0000-0000-4000-8000-0000000001d1";
const CHILDREN: u64 = 12;

fn zombies_of(ppid: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| {
            let rest = &s[s.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            f[0] == "Z" && f[1] == ppid.to_string()
        })
        .count() as u64
}

/// A pod's container runs as PID 1 of its own pid namespace a program that forks 12 children and never waits
/// for them (the missing-init problem); each child first moves itself into a cgroup of its own below the
/// container's (cgroup v2), which is then removed, so that each zombie holds a dying cgroup. The pod's pids.max
/// (cgroup v1 `pids` here) is 16; it holds 14 tasks: a warning before the limit, naming the parent.
#[test]
fn zombies_of_a_container_init_near_the_pid_limit_and_the_dying_cgroups_they_hold() {
    let t = "zombies_of_a_container_init_near_the_pid_limit_and_the_dying_cgroups_they_hold";
    if !root_or_skip(t)
        || !present_or_skip(
            t,
            Scratch::has_unified_psi()
                && std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists(),
            "cgroup v2 at /sys/fs/cgroup/unified and the v1 pids hierarchy at /sys/fs/cgroup/pids",
        )
    {
        return;
    }
    let mut s = Scratch::new("pids");
    let pod = format!("kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/{CID}");
    let cg = s.cgroup_in("pids", &ctr, None);
    s.cgroup_in("unified", &ctr, None);
    std::fs::write(
        format!(
            "/sys/fs/cgroup/pids{}/pids.max",
            s.cgroup_in("pids", &pod, None)
        ),
        "16",
    )
    .unwrap();
    for i in 1..=CHILDREN {
        s.cgroup_in("unified", &format!("{ctr}/sub{i}"), None);
    }
    let idle = s.spawn_cmd(Command::new("sleep").arg("1000"));
    s.cgroup_in(
        "pids",
        &format!("kubepods/besteffort/pod{IDLE_UID}/{CID}1"),
        Some(idle),
    );

    let code = format!(
        "for my $i (1..{CHILDREN}) {{ my $p = fork; die unless defined $p; if (!$p) {{ \
           open(my $f, '>', \"/sys/fs/cgroup/unified{cg}/sub$i/cgroup.procs\") or exit 1; print $f '0'; close $f; \
           exit 0 }} }} sleep 1000"
    );
    let unshare = s.spawn_cmd(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > /sys/fs/cgroup/pids{cg}/cgroup.procs && echo $$ > /sys/fs/cgroup/unified{cg}/cgroup.procs \
                 && exec unshare -pf --kill-child perl -e \"$0\""
            ))
            .arg(&code)
            .stderr(std::process::Stdio::null()),
    );
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    let init: u32 = loop {
        let c = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = c.split_whitespace().next() {
            break p.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    while zombies_of(init) < CHILDREN {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 1..=CHILDREN {
        std::fs::remove_dir(format!("/sys/fs/cgroup/unified{cg}/sub{i}")).unwrap();
    }
    let root = s.cgroup_parent();

    let (code, r) = wonk_json(&["pids", "--cgroup-root", &root]);
    assert_eq!(code, 1, "a warning: {r:#}");
    let d = &r["checks"][0]["details"];
    assert_eq!(d["source"], "cgroup1 pids");
    let p = pod_by_uid(d, UID);
    // unshare, its child (the namespace's init) and 12 zombies.
    assert_eq!(p["pids_current"], 2 + CHILDREN, "{p:#}");
    assert_eq!(p["pids_max"], 16);
    assert_eq!(p["zombies"], CHILDREN);
    assert_eq!(p["reapers"][0]["pid"], init);
    assert_eq!(p["reapers"][0]["comm"], "perl");
    assert_eq!(p["reapers"][0]["zombies"], CHILDREN);
    assert_eq!(p["reapers"][0]["ns_init"], true);
    assert_eq!(p["reapers"][0]["container"], &CID[..13]);
    let idle_pod = pod_by_uid(d, IDLE_UID);
    assert_eq!(idle_pod["pids_current"], 1);
    assert_eq!(
        idle_pod["pids_max"],
        serde_json::Value::Null,
        "no limit: max"
    );
    assert_eq!(idle_pod["zombies"], 0);
    let f = findings_for(&r, &format!("pod {UID}"));
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["kind"], "pids-limit");
    assert_eq!(f[0]["severity"], "warning");
    let summary = f[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "14 of 16 pids used (88%); 12 zombie(s) of pid {init} (perl)"
        )) && summary.contains("PID 1 of its pid namespace"),
        "{summary}"
    );

    let (_, r) = wonk_json(&["cgroups", "--cgroup-root", &root]);
    let d = &r["checks"][0]["details"];
    let p = pod_by_uid(d, UID);
    assert_eq!(p["dying"], CHILDREN, "{p:#}");
    assert_eq!(p["live"], 1, "the container's cgroup: {p:#}");
    let f = findings_for(&r, &format!("pod {UID}"));
    assert_eq!(f[0]["kind"], "pod-dying-cgroups", "{r:#}");
    assert_eq!(f[0]["evidence"]["dying"], CHILDREN);
    let node = d["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "cgroup2")
        .unwrap();
    assert!(node["dying"].as_u64().unwrap() >= CHILDREN, "{node:#}");
}
