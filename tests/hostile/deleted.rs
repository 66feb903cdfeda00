//! Deleted-but-open files as a pod can stage them: names that pose as deleted, and held inodes that are not files.

use crate::common::*;

/// Attack: a pod holds open a file it named `app.log (deleted)` (still linked: its link text ends in ` (deleted)`
/// as a deleted file's does) and a deleted FIFO, opened read-write so that it never blocks the pod. A check that
/// believed the link text would count the named file as space held by a deleted file; one that opened the file
/// behind `/proc/PID/fd/N` to stat it would block for ever on the FIFO. wonk counts only what `statx` of an
/// `O_PATH` handle says has 0 links and is a regular file, and never opens it.
#[test]
fn a_file_named_deleted_and_a_deleted_fifo_are_not_counted() {
    require_root!();
    let mut s = Scratch::new("hostile-deleted");
    let (mnt, _) = s.ext4("fs", "64M", "");
    let named = mnt.join("app.log (deleted)");
    let fifo = mnt.join("pipe");
    s.sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=20 status=none && mkfifo '{}'",
        named.display(),
        fifo.display()
    ));
    let pid = s.spawn_ns(&format!(
        "exec 5<'{}'; exec 6<>'{}'; rm '{}'",
        named.display(),
        fifo.display(),
        fifo.display()
    ));
    let link = std::fs::read_link(format!("/proc/{pid}/fd/5")).unwrap();
    assert!(link.to_string_lossy().ends_with(" (deleted)"), "{link:?}");
    let (_, r) = wonk_json(&["deleted", "--share", "0.001"]);
    assert!(
        !r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["evidence"]["pid"] == pid as u64),
        "{r:#}"
    );
    let holders = r["checks"][0]["details"]["holders"].as_array().unwrap();
    assert!(!holders.iter().any(|p| p["pid"] == pid as u64), "{r:#}");
}
