//! `wonk pressure` against real cgroup v2 pressure files: a kubelet-shaped tree under a private cgroup root, one
//! pod syncing every write to a loop-mounted ext4, one pod asleep.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const BUSY_UID: &str = "7a1c0de0-0000-4000-8000-00000000b051";
const IDLE_UID: &str = "7a1c0de0-0000-4000-8000-0000000001d1";
const BUSY_CID: &str = "b05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05ab05a";
const IDLE_CID: &str = "1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e1d1e";

fn share(p: &Value, resource: &str) -> f64 {
    p["stalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["resource"] == resource)
        .unwrap_or_else(|| panic!("no {resource} stall in {p:#}"))["some"]["share"]
        .as_f64()
        .unwrap()
}

/// Two pods, one per kubelet cgroup driver: the busy one (cgroupfs layout) writes with O_DSYNC to a
/// loop-mounted ext4, so its tasks wait for the device; the idle one (systemd layout) sleeps. Read from PSI and
/// from D-state samples, the busy pod leads and the idle one shows nothing.
#[test]
fn busy_pod_leads_idle_pod_shows_little() {
    if !root_or_skip("busy_pod_leads_idle_pod_shows_little")
        || !present_or_skip(
            "busy_pod_leads_idle_pod_shows_little",
            Scratch::has_unified_psi(),
            "cgroup v2 with PSI at /sys/fs/cgroup/unified",
        )
    {
        return;
    }
    let mut s = Scratch::new("pressure");
    let (mnt, _dev) = s.ext4("fs", "64M", "");
    let busy_cg = s.cgroup_in(
        "unified",
        &format!("kubepods/burstable/pod{BUSY_UID}/{BUSY_CID}"),
        None,
    );
    let idle_uid_ = IDLE_UID.replace('-', "_");
    let idle_cg = s.cgroup_in(
        "unified",
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{idle_uid_}.slice/cri-containerd-{IDLE_CID}.scope"
        ),
        None,
    );
    // One process (sh execs perl) that rewrites 16 MiB in 64 KiB writes, each synced (O_SYNC) before the next.
    let file = mnt.join("f");
    let writer = s.spawn_cmd(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > /sys/fs/cgroup/unified{busy_cg}/cgroup.procs && exec perl -MFcntl -e '\
         sysopen(my $f, \"{}\", O_WRONLY|O_CREAT|O_SYNC) or die; my $b = \"x\" x 65536; \
         while (1) {{ sysseek($f, 0, 0); syswrite($f, $b) for 1..256 }}'",
        file.display()
    )));
    let sleeper = s.spawn_cmd(Command::new("sleep").arg("1000"));
    std::fs::write(
        format!("/sys/fs/cgroup/unified{idle_cg}/cgroup.procs"),
        sleeper.to_string(),
    )
    .unwrap();
    // The writer moved itself into its cgroup before it wrote its first byte.
    while std::fs::metadata(&file).map_or(0, |m| m.len()) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let root = s.cgroup_parent();

    let (_, r) = wonk_json(&["pressure", "--cgroup-root", &root, "--window", "2"]);
    let d = &r["checks"][0]["details"];
    assert_eq!(d["source"], "psi", "{d:#}");
    let busy = pod_by_uid(d, BUSY_UID);
    let idle = pod_by_uid(d, IDLE_UID);
    assert_eq!(d["pods"][0]["owner"]["pod_uid"], BUSY_UID, "{d:#}");
    assert_eq!(busy["worst"], "io", "{busy:#}");
    let (b, i) = (share(busy, "io"), share(idle, "io"));
    assert!(b > 0.0 && i < b / 10.0, "busy io {b}, idle io {i}");
    assert_eq!(i, 0.0, "a sleeping pod waits for no IO: {idle:#}");
    // Its container is read too, in the systemd layout as in the cgroupfs one.
    assert_eq!(busy["containers"][0]["owner"]["container_id"], BUSY_CID);
    assert_eq!(idle["containers"][0]["owner"]["container_id"], IDLE_CID);
    assert!(
        share(&busy["containers"][0], "io") > 0.0,
        "{:#}",
        busy["containers"][0]
    );
    // The node's own pressure is the baseline, and the stall it shows includes the busy pod's.
    let node_io = d["node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["resource"] == "io")
        .unwrap();
    assert!(node_io["some"]["share"].as_f64().unwrap() > 0.0);

    let (_, r) = wonk_json(&[
        "pressure",
        "--cgroup-root",
        &root,
        "--window",
        "2",
        "--source",
        "d-state",
    ]);
    let d = &r["checks"][0]["details"];
    assert_eq!(d["source"], "d-state", "{d:#}");
    let busy = pod_by_uid(d, BUSY_UID);
    let idle = pod_by_uid(d, IDLE_UID);
    assert_eq!(idle["dstate_samples"], 0, "{idle:#}");
    assert!(
        busy["dstate_samples"].as_u64().unwrap() > 0,
        "the writer waits for the device in D state: {busy:#}"
    );
    assert_eq!(d["pods"][0]["owner"]["pod_uid"], BUSY_UID, "{d:#}");
    s.kill(writer);
}

/// A write rate limit on one block device in the root blkio cgroup (v1), removed in Drop.
struct Throttle(String);

impl Throttle {
    fn new(dev: &str, bytes_per_second: u64) -> Throttle {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(dev).unwrap().rdev();
        let t = Throttle(format!("{}:{}", libc::major(rdev), libc::minor(rdev)));
        t.set(bytes_per_second);
        t
    }
    fn set(&self, bytes_per_second: u64) {
        std::fs::write(
            "/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device",
            format!("{} {bytes_per_second}", self.0),
        )
        .unwrap();
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// A node-wide IO stall with a visible cause: a pod's `syncfs` waits for 16 MiB of dirty data to be written
/// to a loop device throttled to 1 MiB/s. The node's IO stall finding names the thread waiting in
/// `sync_filesystem` and its pod.
#[test]
fn node_io_stall_names_the_thread_in_sync_filesystem() {
    let t = "node_io_stall_names_the_thread_in_sync_filesystem";
    if !root_or_skip(t)
        || !present_or_skip(
            t,
            Scratch::has_unified_psi()
                && std::path::Path::new("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device")
                    .exists(),
            "cgroup v2 with PSI at /sys/fs/cgroup/unified and v1 blkio throttling",
        )
    {
        return;
    }
    let mut s = Scratch::new("pressure-sync");
    let (mnt, dev) = s.ext4("fs", "128M", "");
    let cg = s.cgroup_in(
        "unified",
        &format!("kubepods/burstable/pod{BUSY_UID}/{BUSY_CID}"),
        None,
    );
    let throttle = Throttle::new(&dev, 1 << 20);
    s.sh(&format!(
        "dd if=/dev/urandom of={}/f bs=1M count=16 2>/dev/null",
        mnt.display()
    ));
    let sync = s.spawn_cmd(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > /sys/fs/cgroup/unified{cg}/cgroup.procs && exec sync -f {}/f",
        mnt.display()
    )));
    // Wait until it waits: D state with sync_filesystem on its stack.
    let stack = format!("/proc/{sync}/stack");
    while !std::fs::read_to_string(&stack)
        .unwrap_or_default()
        .contains("sync_filesystem")
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, r) = wonk_json(&[
        "pressure",
        "--cgroup-root",
        &s.cgroup_parent(),
        "--window",
        "1",
    ]);
    drop(throttle);
    let d = &r["checks"][0]["details"];
    let w = d["sync_waiters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == sync)
        .unwrap_or_else(|| panic!("pid {sync} not among the sync waiters: {d:#}"));
    assert!(
        ["sync_filesystem", "__writeback_inodes_sb_nr"].contains(&w["function"].as_str().unwrap()),
        "{w:#}"
    );
    assert_eq!(w["comm"], "sync");
    assert_eq!(w["owner"]["pod_uid"], BUSY_UID);
    let busy = pod_by_uid(d, BUSY_UID);
    assert_eq!(busy["worst"], "io", "{busy:#}");
    let f = findings_for(&r, "node");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["kind"], "node-io-stalled");
    let summary = f[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "thread(s) in D state in {} (pod {BUSY_UID})",
            w["function"].as_str().unwrap()
        )),
        "{summary}"
    );
}
