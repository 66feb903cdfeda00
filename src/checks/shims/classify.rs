//! Judging a shim from disk and /proc alone: healthy, leaked, orphaned workload or unknown, and why.

use super::*;

pub(super) fn classify(host: &Host, s: &mut Shim, min_age: i64) {
    let live_inits = s.bundles.iter().filter(|b| b.init_pid_alive).count();
    let young = s.age_seconds.is_some_and(|a| a < min_age);
    if s.children.is_empty() {
        if young {
            s.class = ShimClass::Unknown;
            s.why = format!("no children yet, but it started less than {min_age} s ago");
        } else if s.bundles.is_empty() {
            s.class = ShimClass::Leaked;
            s.why = "no child processes and no bundle dir in containerd's state".into();
        } else if live_inits == 0 && s.bundles.iter().all(|b| b.rootfs_empty == Some(true)) {
            s.class = ShimClass::Leaked;
            let dead: Vec<String> = s
                .bundles
                .iter()
                .filter_map(|b| b.init_pid.map(|p| p.to_string()))
                .collect();
            s.why = format!(
                "no child processes; {} bundle dir(s) remain with their rootfs unmounted, init.pid {}",
                s.bundles.len(),
                if dead.is_empty() { "missing".to_string() } else { format!("{} dead", dead.join(", ")) }
            );
        } else if live_inits == 0 {
            s.class = ShimClass::Unknown;
            s.why = "no child processes, but not every bundle's rootfs is known to be unmounted: possibly a \
                     stopped task that was not deleted yet, which containerd may still list"
                .into();
        } else {
            s.class = ShimClass::Unknown;
            s.why = "no child processes, yet a bundle's init.pid is alive".into();
        }
        return;
    }
    let gone: Vec<String> = s
        .children
        .iter()
        .filter_map(|&c| missing_upperdir(host, c))
        .collect();
    if !gone.is_empty() {
        s.class = ShimClass::OrphanedWorkload;
        s.why = format!(
            "live children, but the snapshot behind their root is gone ({})",
            gone.join(", ")
        );
    } else if live_inits > 0 {
        s.class = ShimClass::Healthy;
        s.why = format!("serves {live_inits} live container(s)");
    } else if s.bundles.is_empty() {
        s.class = ShimClass::OrphanedWorkload;
        s.why = "live children, but no bundle dir in containerd's state".into();
    } else {
        s.class = ShimClass::Unknown;
        s.why = "live children, but no bundle's init.pid is one of them".into();
    }
}

/// The upperdir of a process's overlay root, if it no longer exists on the host.
pub(super) fn missing_upperdir(host: &Host, pid: u32) -> Option<String> {
    let data = procfs::mountinfo(host, pid).ok()?;
    let (mounts, _) = mountinfo::parse(&data);
    let root = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == b"/" && m.fs_type == "overlay")?;
    let upper =
        bytes_path(&mountinfo::unescape_overlay(root.super_option("upperdir")?)).to_path_buf();
    match std::fs::symlink_metadata(host.path(&upper)) {
        Err(e) if vanished(&e) => Some(upper.display().to_string()),
        _ => None,
    }
}
