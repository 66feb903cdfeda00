//! The seed's first incident through the command line: a flat directory on ext4 (1 KiB blocks, no large_dir)
//! filled to its first ENOSPC; `wonk htree`, `wonk htree --scan`, `wonk fs` and `wonk kmsg` on it.

#[macro_use]
mod common;

use common::*;
use std::path::Path;

/// Creates 250-byte names in `dir` until a create fails with ENOSPC; returns how many were created.
fn fill_to_enospc(dir: &Path) -> usize {
    for i in 0..200_000usize {
        let name = format!("{i:0>250}");
        if let Err(e) = std::fs::File::create(dir.join(name)) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return i;
        }
    }
    panic!("no ENOSPC after 200,000 creates");
}

#[test]
fn the_seed_directory_from_warning_to_path() {
    require_root!();
    let mut s = Scratch::new("htree-cli");
    let (mnt, dev) = s.ext4("fs", "256M", "-b 1024 -O ^large_dir");
    let dir = mnt.join("app/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let quiet = mnt.join("quiet");
    std::fs::create_dir_all(&quiet).unwrap();
    let since = wonk::kmsg::last_seq(&wonk::host::Host::open(Path::new("/")).unwrap()).unwrap();

    let created = fill_to_enospc(&dir);
    let dirs = dir.display().to_string();

    let (code, r) = wonk_json(&["htree", &dirs, &quiet.display().to_string()]);
    assert_eq!(code, 2, "{r:#}");
    let f = &findings_for(&r, &dirs)[0];
    assert_eq!(f["kind"], "index-full");
    assert_eq!(f["severity"], "critical");
    let rep = &f["evidence"]["report"];
    assert_eq!(rep["index"]["max_levels"], 2);
    assert_eq!(rep["index"]["levels"], 1);
    assert_eq!(rep["large_dir"], false);
    assert!(
        rep["index"]["create_failure"]["failing_share"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let est = rep["index"]["entries"]["estimate"].as_f64().unwrap();
    assert!(
        (est - created as f64).abs() / (created as f64) < 0.10,
        "estimate {est}, created {created}"
    );
    assert!(f["advice"][0]
        .as_str()
        .unwrap()
        .contains("tune2fs -O large_dir"));
    assert_eq!(
        findings_for(&r, &quiet.display().to_string())[0]["kind"],
        "not-indexed"
    );

    // --scan finds it without being told where it is, and leaves the small directory out.
    let (code, r) = wonk_json(&["htree", "--scan", &mnt.display().to_string()]);
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(findings_for(&r, &dirs).len(), 1, "{r:#}");
    assert!(findings_for(&r, &quiet.display().to_string()).is_empty());
    // The directory a scan starts from counts too.
    let (code, r) = wonk_json(&["htree", "--scan", &dirs]);
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(findings_for(&r, &dirs).len(), 1, "{r:#}");

    // The filesystem's features, from its superblock.
    let (code, fss) = wonk_json(&["fs"]);
    assert_eq!(code, 0);
    let fs = fss
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mount_point"] == mnt.display().to_string())
        .unwrap();
    assert_eq!(fs["block_size"], 1024);
    assert_eq!(fs["features"]["large_dir"], false);
    assert_eq!(fs["features"]["dir_index"], true);
    assert_eq!(fs["device_name"], dev.trim_start_matches("/dev/"));

    // The kernel's warning becomes a finding that names the directory.
    let (_, k) = wonk_json(&["kmsg"]);
    let hits: Vec<_> = k["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "htree-full" && f["evidence"]["last_seq"].as_u64() > since)
        .filter(|f| f["evidence"]["path"] == dirs.as_str())
        .collect();
    assert_eq!(hits.len(), 1, "{k:#}");
    assert_eq!(hits[0]["evidence"]["inode"], ino(&dir));
    let now = &hits[0]["evidence"]["htree_now"];
    assert_eq!(now["max_levels"], 2, "{now}");
    assert!(now["failing_share"].as_f64().unwrap() > 0.0, "{now}");

    // large_dir gives the index a third level: nothing fails any more.
    s.sh(&format!("tune2fs -O large_dir {dev} >/dev/null"));
    let (code, r) = wonk_json(&["htree", &dirs]);
    assert!(code <= 1, "{r:#}");
    let rep = &findings_for(&r, &dirs)[0]["evidence"]["report"];
    assert_eq!(rep["index"]["max_levels"], 3);
    assert_eq!(rep["index"]["create_failure"]["failing_share"], 0.0);
}

#[test]
fn paths_that_are_not_ext4_directories() {
    let s = Scratch::new("htree-bad");
    let file = s.write("f", "x");
    let (code, _, err) = wonk(&["htree", &file.display().to_string()]);
    assert_eq!(code, 3);
    assert!(err.is_empty() || !err.contains("panicked"), "{err}");
    let (code, out, _) = wonk(&["htree", "/proc", "--color", "never"]);
    assert_eq!(code, 3);
    assert!(out.contains("/proc") && out.contains("not ext4"), "{out}");
    let (code, out, _) = wonk(&["htree", "/no/such/dir/wonk", "--color", "never"]);
    assert_eq!(code, 3);
    assert!(out.contains("/no/such/dir/wonk"), "{out}");
}
