//! `wonk enospc` against real failing creates: a full htree index on a loop-mounted ext4 (1 KiB blocks), and a
//! filesystem that is really full (no inodes left).

#[macro_use]
mod common;

use common::enospc::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Creates files with `name_len`-byte names in `dir` until `failures` creates failed; returns (created, errno).
fn fill(dir: &Path, name_len: usize, failures: usize) -> (usize, Option<i32>) {
    let (mut created, mut failed, mut errno) = (0, 0, None);
    for i in 0.. {
        let name = format!("{i:0>width$}", width = name_len);
        match std::fs::File::create(dir.join(name)) {
            Ok(_) => created += 1,
            Err(e) => {
                errno = e.raw_os_error();
                failed += 1;
                if failed >= failures {
                    break;
                }
            }
        }
        if i > 200_000 {
            break;
        }
    }
    (created, errno)
}

#[test]
fn full_index_and_full_filesystem_told_apart() {
    require_root!();
    let mut s = Scratch::new("enospc");
    if !Path::new(TRACEFS).join("instances").is_dir() {
        s.host_mount("-t tracefs nodev", Path::new(TRACEFS));
    }
    let me = std::process::id();

    // A flat directory of 250-character names fills a 1 KiB-block htree at about 20,000 entries.
    let (mnt, _) = s.ext4("idx", "256M", "-b 1024 -O ^large_dir");
    let flat = mnt.join("app/tmp");
    std::fs::create_dir_all(&flat).unwrap();
    let mut result = (0, None);
    let r = enospc_during(4, || result = fill(&flat, 250, 20));
    assert_eq!(
        result.1,
        Some(libc::ENOSPC),
        "the fill never hit ENOSPC after {} files",
        result.0
    );
    let mine: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["evidence"]["pid"] == me)
        .collect();
    assert_eq!(mine.len(), 1, "{r:#}");
    let f = mine[0];
    assert_eq!(f["kind"], "index-full", "{f:#}");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["evidence"]["syscall"], "openat");
    assert_eq!(f["evidence"]["errno"], 28);
    assert_eq!(
        f["evidence"]["index_full_warnings"],
        "logged at the moment these calls failed"
    );
    assert!(f["evidence"]["count"].as_u64().unwrap() >= 20, "{f:#}");
    let dirs: Vec<&str> = f["evidence"]["index_full"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["directory"].as_str().unwrap())
        .collect();
    assert!(dirs.contains(&flat.to_str().unwrap()), "{dirs:?}");

    // A filesystem with no inodes left fails creates with ENOSPC too, and says nothing about an index.
    let (small, _) = s.ext4("full", "8M", "-b 1024 -N 64");
    let mut result = (0, None);
    let r = enospc_during(3, || result = fill(&small, 8, 5));
    assert_eq!(result.1, Some(libc::ENOSPC));
    let mine: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["evidence"]["pid"] == me)
        .collect();
    assert_eq!(mine.len(), 1, "{r:#}");
    assert_eq!(mine[0]["kind"], "filesystem-full", "{:#}", mine[0]);
    let full = mine[0]["evidence"]["full_filesystems"].as_array().unwrap();
    assert!(
        full.iter()
            .any(|m| m["mount_point"] == small.to_str().unwrap() && m["inodes_available"] == 0),
        "{full:?}"
    );

    // SIGTERM ends a run cleanly: the instance is removed and the report printed.
    let child = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(["enospc", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let inst = Path::new(TRACEFS).join(format!("instances/wonk-enospc-{}", child.id()));
    let t = Instant::now();
    while !inst.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(inst.exists());
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) of the child we just spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 2), "{out:?}");
    assert!(!inst.exists(), "SIGTERM left {}", inst.display());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checks"][0]["status"], "ok");

    // An instance left by a wonk that was killed outright (here: a pid that cannot exist) is removed at start.
    let stale = Path::new(TRACEFS).join("instances/wonk-enospc-4194304999");
    std::fs::create_dir(&stale).unwrap();
    let r = enospc_during(1, || {});
    assert!(!stale.exists(), "the stale instance is still there");
    let spots = r["blind_spots"].as_array().unwrap();
    assert!(
        spots.iter().any(|b| b["what"] == "wonk-enospc-4194304999"),
        "{r:#}"
    );
}

#[test]
fn a_missing_tracefs_is_explained() {
    // A host root with a procfs but no tracefs.
    let s = Scratch::new("notracefs");
    std::os::unix::fs::symlink("/proc", s.path("proc")).unwrap();
    let (code, _, err) = wonk(&["--host-root", &s.s(""), "enospc", "-d", "1"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("tracefs is not mounted") && err.contains("mount -t tracefs"),
        "{err}"
    );
}
