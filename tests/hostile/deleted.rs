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

/// Attack: a pod fills what one walk of the BPF iterators can hand over (a record per held file) with 72,000
/// descriptors on deleted files of its own (4 processes of 18,000: the open-file limit here is 20,000), so that
/// the processes the walk reaches after them are not in its records, and another pod's deleted 10 MB log would go
/// unseen. wonk reads every process the walk did not record through /proc, says that the walk was cut short, and
/// still counts each flooding process's file once.
#[test]
fn a_pod_filling_the_walk_with_descriptors_hides_no_other_pods_file() {
    require_root!();
    let mut s = Scratch::new("hostile-deleted-flood");
    let (mnt, _) = s.ext4("fs", "64M", "");
    let victim = mnt.join("victim.log");
    let mut flooders = Vec::new();
    for i in 0..4 {
        let flood = mnt.join(format!("flood{i}"));
        let pid = s.spawn_ns_exec(
            "true",
            &format!(
                "perl -e 'open(my $f, \">\", \"{p}\") or die; unlink \"{p}\" or die; my @h = map {{ open(my $d, \">&\", $f) or die \"$_: $!\"; $d }} 1 .. 18000; sleep 100000'",
                p = flood.display()
            ),
        );
        flooders.push(pid);
    }
    // The flood is open when each process's descriptor table is that big.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for &pid in &flooders {
        while std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) < 18_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {pid} did not open its descriptors"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    s.sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=10 status=none",
        victim.display()
    ));
    // Started after the flood: a later pid, which the walk reaches after it.
    let holder = s.spawn_ns(&format!(
        "exec 7<'{}'; rm '{}'",
        victim.display(),
        victim.display()
    ));
    let (_, r) = wonk_json(&["deleted", "--top", "100"]);
    let d = &r["checks"][0]["details"];
    let held_by = |pid: u32| {
        d["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid as u64)
            .cloned()
            .unwrap_or_else(|| panic!("pid {pid} not among the holders: {d:#}"))
    };
    let v = held_by(holder);
    assert_eq!(v["files"], 1);
    assert_eq!(v["allocated_bytes"], 10u64 << 20);
    // Each flooder's 18,000 descriptors are one file.
    for &pid in &flooders {
        assert_eq!(held_by(pid)["files"], 1);
    }
    if d["source"] == "bpf" {
        assert!(
            r["blind_spots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["what"]
                    .as_str()
                    .unwrap()
                    .contains("records of the BPF iterators")),
            "{:#}",
            r["blind_spots"]
        );
    }
}
