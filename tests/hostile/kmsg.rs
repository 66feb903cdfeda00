//! Kernel-log records forged from user space. Any process that can open /dev/kmsg for writing (root in a
//! container, or a pod with the host's /dev) can log a line that reads exactly like the kernel's: an OOM kill
//! naming a victim pod's memory cgroup, a full ext4 directory index on a node disk. The kernel marks every such
//! record with a facility other than 0 ("user" when the writer gives none), which no kernel message has.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use wonk::checks::{Check, Context};
use wonk::host::Host;
use wonk::kmsg::reader::{read_kmsg, KmsgOptions, ReadStats};
use wonk::kmsg::record::Record;
use wonk::kmsg::{self, Options, Source};
use wonk::owner::Attributor;

/// The forged records, one `write` each (as `echo '<3>...' > /dev/kmsg` does); 4 records stay well inside the
/// writers' rate limit (10 per 5 s per open file).
fn forge(tag: &str, pod_uid: &str) -> Vec<String> {
    let memcg = format!("/kubepods/burstable/pod{pod_uid}/{tag}");
    vec![
        format!("<3>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={tag},mems_allowed=0,oom_memcg={memcg},task_memcg={memcg},task=victim,pid=4242,uid=0"),
        "<3>Memory cgroup out of memory: Killed process 4242 (victim) total-vm:812340kB, anon-rss:524288kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1200kB oom_score_adj:-997".to_string(),
        format!("<4>EXT4-fs warning (device {tag}): ext4_dx_add_entry:2380: Directory (ino: 2) index full, reach max htree level :2"),
        format!("EXT4-fs warning (device {tag}): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem"),
    ]
}

/// The forged records in /dev/kmsg after `since`, as the kernel keeps them: (facility, record saved as a kmsg
/// line, `PRI,SEQ,TS,-;message`).
fn forged_records(host: &Host, since: Option<u64>, tag: &str) -> Vec<(Option<u8>, String)> {
    let mut mine = Vec::new();
    read_kmsg(
        host,
        &KmsgOptions {
            since_seq: since,
            ..KmsgOptions::default()
        },
        &mut ReadStats::default(),
        &mut |r: &Record<'_>| {
            let t = r.text();
            if t.contains(tag) || t.contains("Killed process 4242 (victim)") {
                let pri = r.facility.unwrap_or(0) << 3 | r.level.unwrap_or(0);
                let saved = format!("{pri},{},{},-;{t}\n", r.seq.unwrap(), r.ts_usec.unwrap());
                mine.push((r.facility, saved));
            }
        },
    )
    .unwrap();
    mine
}

fn mentions(v: &serde_json::Value, tag: &str, pod_uid: &str) -> bool {
    let s = v.to_string();
    s.contains(tag) || s.contains(pod_uid)
}

/// Stages the attack: a process writes a forged OOM kill of a pod and a forged ext4 index-full warning to
/// /dev/kmsg. `wonk kmsg`, the `kmsg` check of `scan` and the agent's follower must give no finding for them, and
/// count them as dropped (with a blind spot that says so). Before, both became findings (the OOM one naming the
/// pod).
#[test]
fn records_written_to_dev_kmsg_from_user_space_are_dropped_and_counted() {
    require_root!();
    let host = Host::open(Path::new("/")).unwrap();
    let tag = format!("wonkforged{}", std::process::id());
    let pod_uid = "0f0f0f0f-1111-2222-3333-444455556666";
    let since = kmsg::last_seq(&host).unwrap();
    let mut follower = kmsg::Follower::start(&host, since, false).unwrap();
    let lines = forge(&tag, pod_uid);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .unwrap();
        for l in &lines {
            f.write_all(format!("{l}\n").as_bytes()).unwrap();
        }
    }

    // The raw records, as the kernel keeps them: facility 1 ("user") for each, even the one written as <3>.
    let mine = forged_records(&host, since, &tag);
    assert_eq!(mine.len(), 4, "{mine:?}");
    assert!(mine.iter().all(|(f, _)| *f == Some(1)), "{mine:?}");

    let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    // The check `wonk scan` runs (all of /dev/kmsg) and `wonk kmsg`'s scan from just before the writes.
    for out in [
        wonk::checks::kmsg::Kmsg::default().run(&ctx),
        kmsg::scan(
            ctx.owners,
            &Source::DevKmsg { follow: false },
            &Options {
                since_seq: since,
                ..Options::default()
            },
        ),
    ] {
        assert_eq!(out.failed, None);
        for f in &out.findings {
            let v = serde_json::to_value(f).unwrap();
            assert!(!mentions(&v, &tag, pod_uid), "forged finding: {v:#}");
        }
        assert!(stat(&out, "dropped_from_userspace") >= 4, "{:?}", out.stats);
        assert!(
            out.blind_spots
                .iter()
                .any(|b| b.what.contains("written from user space")),
            "{:?}",
            out.blind_spots
        );
    }

    // The agent's path: a follower started before the writes, read through follow_with.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut found = Vec::new();
    let out = kmsg::follow_with(
        ctx.owners,
        &mut follower,
        &Options {
            stop: Some(stop),
            settle: std::time::Duration::ZERO,
            ..Options::default()
        },
        &mut |f| found.push(serde_json::to_value(&f).unwrap()),
    );
    assert_eq!(out.failed, None);
    assert!(
        found.iter().all(|v| !mentions(v, &tag, pod_uid)),
        "{found:#?}"
    );
    assert!(stat(&out, "dropped_from_userspace") >= 4, "{:?}", out.stats);

    // Exactly: the same 4 records saved as kmsg records (what `cat /dev/kmsg > file` keeps) and read back.
    let s = Scratch::new("hostile-kmsg");
    let saved: String = mine.iter().map(|(_, line)| line.as_str()).collect();
    let file = s.write("saved.kmsg", &saved);
    let (code, report) = wonk_json(&["kmsg", file.to_str().unwrap()]);
    let check = &report["checks"][0];
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    assert_eq!(check["findings"], 0, "{report:#}");
    assert_eq!(check["stats"]["records_read"], 4, "{report:#}");
    assert_eq!(check["stats"]["dropped_from_userspace"], 4, "{report:#}");
    assert_ne!(code, 3, "{report:#}");

    // `wonk kmsg` on the live log: the binary path.
    let (_, report) = wonk_json(&["kmsg"]);
    for f in report["findings"].as_array().unwrap() {
        assert!(!mentions(f, &tag, pod_uid), "forged finding: {f:#}");
    }
}
