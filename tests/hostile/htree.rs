//! A directory's htree index is written by the kernel, but its bytes sit on a device a pod can fill with names of
//! its choosing and that can be corrupt: wonk must never call a damaged index healthy. Each test builds a real
//! ext4 image on a loop device, damages one structure (with `dd`-style writes to the device or `debugfs -w`, and
//! `debugfs -R htree_dump` as the oracle), and asserts that `wonk htree` reports a critical `index-corrupt`
//! finding that says what is wrong and where, in JSON and in the table, with a non-zero exit.

use super::common::*;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

const CRITICAL: i32 = 2;

/// Creates `n` empty files with names of `len` bytes in `dir`.
fn fill(dir: &Path, n: usize, len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let mut name = format!("{i:010}");
        while name.len() < len {
            name.push('x');
        }
        std::fs::File::create(dir.join(name)).unwrap();
    }
}

fn debugfs(dev: &str, req: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn peek(dev: &str, off: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The dx_root's entries as htree_dump prints them: (hash, block).
fn root_entries(dump: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut root = false;
    for line in dump.lines() {
        root |= line.contains("Root node dump");
        if root {
            if let Some(rest) = line.strip_prefix("Entry #") {
                let (_, r) = rest.split_once("Hash 0x").unwrap();
                let (h, b) = r.split_once(", block ").unwrap();
                out.push((
                    u32::from_str_radix(h, 16).unwrap(),
                    b.trim().parse().unwrap(),
                ));
            } else if line.trim().is_empty() && !out.is_empty() {
                break;
            }
        }
    }
    out
}

/// How many names htree_dump lists in leaf `block`.
fn names_in_leaf(dump: &str, block: u32) -> usize {
    let head = format!("Reading directory block {block},");
    let mut n = 0;
    let mut inside = false;
    for line in dump.lines() {
        if line.starts_with("Reading directory block") {
            inside = line.starts_with(&head);
            continue;
        }
        if line.starts_with("Entry #") {
            inside = false;
        }
        if inside {
            // Each entry: `INODE 0xHASH-MINOR (REC_LEN) NAME`.
            n += line.matches(" 0x").count();
        }
    }
    n
}

/// A fresh ext4 with 1 KiB blocks, mounted, with `d` holding `n` names of `len` bytes; the device synced.
fn fs_with_dir(s: &mut Scratch, name: &str, mkfs: &str, n: usize, len: usize) -> (String, String) {
    let (mnt, dev) = s.ext4(
        name,
        "64M",
        &format!("-b 1024 -O ^large_dir -N 4000 {mkfs}"),
    );
    let d = mnt.join("d");
    fill(&d, n, len);
    s.sh("sync");
    (d.display().to_string(), dev)
}

/// Unmounts and mounts again the filesystem of `dev` at scratch path `name`.
fn remount(s: &Scratch, dev: &str, name: &str) {
    let mnt = s.path(name);
    s.sh(&format!(
        "umount '{}' && mount {dev} '{}'",
        mnt.display(),
        mnt.display()
    ));
}

/// The htree finding for `dir` in a `wonk htree --json` report.
fn finding(r: &Value, dir: &str) -> Value {
    findings_for(r, dir)
        .first()
        .map(|f| (*f).clone())
        .unwrap_or_else(|| panic!("no finding for {dir} in {r:#}"))
}

/// `wonk htree ARGS` in the table: it names the corruption and shows no made-up precision.
fn table(args: &[&str]) -> (i32, String) {
    let (code, out, err) = wonk(args);
    assert!(!out.contains("inf%"), "{out}");
    assert!(!out.contains("no findings"), "{out}");
    (code, format!("{out}{err}"))
}

/// Attack: the dx_root's hash version byte is set to 9, which no kernel knows. Expected: a critical finding at
/// block 0 naming the version, not a blind spot, and exit 2 (the old code reported it only as a blind spot when
/// another directory was given too).
#[test]
fn bad_hash_version() {
    require_root!();
    let mut s = Scratch::new("hx-hashv");
    let (d, dev) = fs_with_dir(&mut s, "fs", "", 200, 40);
    let ok = s.path("fs/ok");
    fill(&ok, 3, 8);
    poke(&dev, physical(&dev, "/d", 0, 1024) + 0x1c, &[9]);
    let oks = ok.display().to_string();
    let (code, r) = wonk_json(&["htree", &d, &oks]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["evidence"]["block"], 0);
    assert_eq!(f["evidence"]["problem"], "unknown hash version 9");
    let (code, text) = table(&["htree", &d, &oks]);
    assert_eq!(code, CRITICAL);
    assert!(
        text.contains("index-corrupt") && text.contains("unknown hash version 9"),
        "{text}"
    );
}

/// Attack: the dx_root's limit is changed (one directory) and a count made larger than the limit (another).
/// Expected: both are critical findings with expected and found values, in one run over both paths.
#[test]
fn bad_limit_and_count() {
    require_root!();
    let mut s = Scratch::new("hx-limit");
    let (d1, dev) = fs_with_dir(&mut s, "fs", "-O ^metadata_csum", 200, 40);
    let d2 = s.path("fs/e");
    fill(&d2, 200, 40);
    s.sh("sync");
    let d2 = d2.display().to_string();
    poke(
        &dev,
        physical(&dev, "/d", 0, 1024) + 0x20,
        &200u16.to_le_bytes(),
    );
    poke(
        &dev,
        physical(&dev, "/e", 0, 1024) + 0x22,
        &300u16.to_le_bytes(),
    );
    let (code, r) = wonk_json(&["htree", &d1, &d2]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f1 = finding(&r, &d1);
    assert_eq!(f1["kind"], "index-corrupt");
    assert_eq!(
        f1["evidence"]["problem"],
        "limit 200, expected 124 for this block size"
    );
    let f2 = finding(&r, &d2);
    assert_eq!(f2["kind"], "index-corrupt");
    assert_eq!(f2["evidence"]["problem"], "count 300 > limit 124");
    assert!(
        r["blind_spots"].as_array().is_none_or(|b| b.is_empty()),
        "{r:#}"
    );
}

/// Attack: a dx_root entry is pointed at the leaf another entry already names. Expected: "referenced twice" with
/// the block, not "a loop" (nothing goes round).
#[test]
fn block_referenced_twice() {
    require_root!();
    let mut s = Scratch::new("hx-twice");
    let (d, dev) = fs_with_dir(&mut s, "fs", "-O ^metadata_csum", 200, 40);
    let entries = root_entries(&debugfs(&dev, "htree_dump /d"));
    assert!(entries.len() >= 3, "{entries:?}");
    let root = physical(&dev, "/d", 0, 1024);
    // Entry i's block is at 0x20 + 8 i + 4; entry 2 takes entry 1's.
    poke(&dev, root + 0x34, &entries[1].1.to_le_bytes());
    assert_eq!(le32(&peek(&dev, root + 0x34, 4)), entries[1].1);
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["evidence"]["block"], entries[1].1);
    let p = f["evidence"]["problem"].as_str().unwrap();
    assert!(p.contains("referenced twice") && !p.contains("loop"), "{p}");
}

/// Attack: with metadata_csum, one byte of a leaf (a name) and one byte of the dx_root's entries are flipped.
/// Expected: the leaf's checksum error is a critical finding in the table (no "+-inf%"), the root's is one under
/// `--scan` too (the old code made it a blind spot and exited 0), and `--scan` names the directory whose entries
/// it could not list.
#[test]
fn bad_leaf_and_node_checksums() {
    require_root!();
    let mut s = Scratch::new("hx-csum");
    let (d, dev) = fs_with_dir(&mut s, "fs", "-O metadata_csum", 200, 40);
    let entries = root_entries(&debugfs(&dev, "htree_dump /d"));
    let leaf = entries[1].1;
    poke(&dev, physical(&dev, "/d", leaf, 1024) + 20, b"Z");
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    let c = f["evidence"]["corruption"][0].as_str().unwrap();
    assert!(
        c.contains(&format!("directory block {leaf}: checksum mismatch")),
        "{c}"
    );
    let (code, text) = table(&["htree", &d]);
    assert_eq!(code, CRITICAL);
    assert!(text.contains("checksum mismatch"), "{text}");

    // The root's checksum: one bit of entry 1's hash.
    let e = s.path("fs/e");
    fill(&e, 200, 40);
    s.sh("sync");
    let es = e.display().to_string();
    let root = physical(&dev, "/e", 0, 1024);
    let b = peek(&dev, root + 0x28, 1)[0];
    poke(&dev, root + 0x28, &[b ^ 0x04]);
    // A remount drops the device's cached (and already verified) blocks, so the kernel's getdents reads the bad
    // leaf again.
    remount(&s, &dev, "fs");
    let mnt = s.path("fs").display().to_string();
    let (code, r) = wonk_json(&["htree", "--scan", &mnt, "--min-size", "2048"]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &es);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    assert_eq!(f["evidence"]["block"], 0);
    assert!(
        f["evidence"]["problem"]
            .as_str()
            .unwrap()
            .starts_with("checksum mismatch: stored"),
        "{f:#}"
    );
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    // The walk's getdents on /d fails at the bad leaf: the directory is named as not fully read.
    let blind = serde_json::to_string(&r["blind_spots"]).unwrap();
    assert!(
        blind.contains("could not be read") && blind.contains(&d),
        "{blind}"
    );
}

/// Attack: a leaf block of the directory is unmapped (`debugfs -w punch`), leaving a hole the index points into.
/// Expected: a critical finding naming the block as a hole (the old code kept it in `index.problems`, info, exit 0).
#[test]
fn hole_in_the_directory() {
    require_root!();
    let mut s = Scratch::new("hx-hole");
    let (d, dev) = fs_with_dir(&mut s, "fs", "-O ^metadata_csum", 200, 40);
    let mnt = s.path("fs");
    let entries = root_entries(&debugfs(&dev, "htree_dump /d"));
    let leaf = entries[1].1;
    s.sh(&format!("umount '{}'", mnt.display()));
    s.sh(&format!("debugfs -w -R 'punch /d {leaf} {leaf}' {dev}"));
    s.sh(&format!("mount {dev} '{}'", mnt.display()));
    let _ = mnt;
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    assert!(
        f["summary"].as_str().unwrap().contains(&format!(
            "directory block {leaf}: not mapped on disk (a hole"
        )),
        "{f:#}"
    );
    let (code, _) = table(&["htree", &d]);
    assert_eq!(code, CRITICAL);
}

/// Attack: two dx_root entries swap their leaves, so each leaf's names hash outside the range its entry gives it
/// (lookups of them fail). Expected: every one of those names is counted, as htree_dump lists them, with a
/// sample and the leaf's block and range.
#[test]
fn names_under_the_wrong_hash() {
    require_root!();
    let mut s = Scratch::new("hx-misfiled");
    let (d, dev) = fs_with_dir(&mut s, "fs", "-O ^metadata_csum", 200, 40);
    let dump = debugfs(&dev, "htree_dump /d");
    let entries = root_entries(&dump);
    let (a, b) = (entries[1].1, entries[2].1);
    let moved = names_in_leaf(&dump, a) + names_in_leaf(&dump, b);
    assert!(moved > 0, "{dump}");
    let root = physical(&dev, "/d", 0, 1024);
    poke(&dev, root + 0x2c, &b.to_le_bytes());
    poke(&dev, root + 0x34, &a.to_le_bytes());
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    let h = &f["evidence"]["report"]["index"]["hash_check"];
    assert_eq!(h["names_outside"], moved as u64, "{h:#}");
    assert_eq!(h["leaves_outside"], 2, "{h:#}");
    assert_eq!(h["hash"], "half_md4");
    let blocks: Vec<u64> = h["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["block"].as_u64().unwrap())
        .collect();
    assert_eq!(blocks, vec![u64::from(b), u64::from(a)]);
    assert!(h["leaves"][0]["sample"].as_array().unwrap().len() <= 3);
    let shown = f["evidence"]["misfiled"][0].as_str().unwrap();
    assert!(
        shown.starts_with(&format!("block {b} (hashes 0x")),
        "{shown}"
    );
    // Before the swap, every name was where its hash belongs.
    poke(&dev, root + 0x2c, &a.to_le_bytes());
    poke(&dev, root + 0x34, &b.to_le_bytes());
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, 0, "{r:#}");
    let h = &finding(&r, &d)["evidence"]["report"]["index"]["hash_check"];
    assert_eq!(
        (h["names_outside"].as_u64(), h["names_checked"].as_u64()),
        (Some(0), Some(200)),
        "{h:#}"
    );
}

/// Attack: a filesystem flagged for unsigned name hashes, with names of bytes above 0x7f. Expected: the hash
/// is named `half_md4_unsigned` and every name hashes into its leaf (read signed, they would not).
#[test]
fn unsigned_hash_flag() {
    require_root!();
    let mut s = Scratch::new("hx-unsigned");
    let (mnt, dev) = s.ext4("fs", "64M", "-b 1024 -O ^metadata_csum -N 4000");
    s.sh(&format!("umount '{}'", mnt.display()));
    s.sh(&format!("debugfs -w -R 'ssv flags 2' {dev}"));
    s.sh(&format!("mount {dev} '{}'", mnt.display()));
    let d = mnt.join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..300u32 {
        let name = format!("\u{e9}t\u{e9}-{i:04}-{}", "\u{fc}".repeat(10));
        std::fs::File::create(d.join(name)).unwrap();
    }
    s.sh("sync");
    let ds = d.display().to_string();
    let (code, r) = wonk_json(&["htree", &ds]);
    assert_eq!(code, 0, "{r:#}");
    let ix = &finding(&r, &ds)["evidence"]["report"]["index"];
    assert_eq!(ix["hash"], "half_md4_unsigned");
    assert_eq!(ix["hash_check"]["names_outside"], 0, "{ix:#}");
    assert_eq!(ix["hash_check"]["names_checked"], 300);
}

/// Attack: without metadata_csum the kernel drops a corrupt index's flag when anything lists the directory
/// (here `ls`, as `--scan`'s own walk does), and writes the inode back without it. Expected: wonk still sees a
/// 3+-block directory whose block 0 is a dx_root and reports the corruption (the old code said "not-indexed:
/// fits in one block" and exited 0), for one path and for `--scan`.
#[test]
fn no_metadata_csum_after_ls() {
    require_root!();
    let mut s = Scratch::new("hx-dropped");
    let (d, dev) = fs_with_dir(&mut s, "fs", "-O ^metadata_csum", 200, 40);
    poke(&dev, physical(&dev, "/d", 0, 1024) + 0x1c, &[9]);
    s.sh(&format!("ls '{d}' > /dev/null; sync"));
    let attrs = s.sh(&format!("lsattr -d '{d}'"));
    assert!(
        !attrs.split_whitespace().next().unwrap().contains('I'),
        "{attrs}"
    );
    let (code, r) = wonk_json(&["htree", &d]);
    assert_eq!(code, CRITICAL, "{r:#}");
    let f = finding(&r, &d);
    assert_eq!(f["kind"], "index-corrupt", "{f:#}");
    assert_eq!(f["evidence"]["problem"], "unknown hash version 9");
    let mnt = s.path("fs").display().to_string();
    let (code, r) = wonk_json(&["htree", "--scan", &mnt, "--min-size", "2048"]);
    assert_eq!(code, CRITICAL, "{r:#}");
    assert_eq!(finding(&r, &d)["kind"], "index-corrupt");
    let (code, text) = table(&["htree", &d]);
    assert_eq!(code, CRITICAL);
    assert!(!text.contains("not-indexed"), "{text}");

    // With noatime nothing writes the inode back: the flag is gone from the kernel only, still set on disk.
    let mnt = s.path("fs");
    s.sh(&format!("mount -o remount,noatime '{}'", mnt.display()));
    let e = mnt.join("e");
    fill(&e, 200, 40);
    s.sh("sync");
    poke(&dev, physical(&dev, "/e", 0, 1024) + 0x1c, &[9]);
    let es = e.display().to_string();
    s.sh(&format!("ls '{es}' > /dev/null; sync"));
    let attrs = s.sh(&format!("lsattr -d '{es}'"));
    assert!(
        !attrs.split_whitespace().next().unwrap().contains('I'),
        "{attrs}"
    );
    let stat = debugfs(&dev, "stat /e");
    assert!(stat.contains("Flags: 0x81000"), "{stat}");
    let (code, r) = wonk_json(&["htree", &es]);
    assert_eq!(code, CRITICAL, "{r:#}");
    assert_eq!(
        finding(&r, &es)["evidence"]["problem"],
        "unknown hash version 9"
    );
}

/// A directory that cannot be read at all: the table says the check failed, and does not also say
/// "no findings" above it.
#[test]
fn failed_check_is_not_also_no_findings() {
    let missing = std::env::temp_dir().join(format!("wonk-no-such-dir-{}", std::process::id()));
    let (code, text) = table(&["htree", &missing.display().to_string()]);
    assert_ne!(code, 0);
    assert!(text.contains("check htree failed"), "{text}");
}
