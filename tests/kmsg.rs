//! The kmsg check against the real kernel: a directory index filled on a loop-mounted ext4 until creates fail with
//! ENOSPC, a real OOM kill in a memory cgroup laid out like kubelet's, lines written to /dev/kmsg, and a follower
//! that reports new records until it is stopped. Each test looks only at records newer than its start.

#[macro_use]
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use wonk::checks::{Check, Context};
use wonk::finding::CheckOutput;
use wonk::host::Host;
use wonk::kmsg::{self, Options, Source};
use wonk::owner::Attributor;

fn host() -> Host {
    Host::open(Path::new("/")).unwrap()
}

/// Scans /dev/kmsg from just after `since`, with bundles read from `state`.
fn scan_since(host: &Host, s: &Scratch, since: Option<u64>) -> (CheckOutput, Vec<Value>) {
    let owners = Attributor::new(host, s.path("kubelet"), &[s.path("state")]);
    let ctx = Context {
        host,
        owners: &owners,
    };
    let out = kmsg::scan(
        ctx.owners,
        &Source::DevKmsg { follow: false },
        &Options {
            since_seq: since,
            ..Options::default()
        },
    );
    assert_eq!(out.failed, None);
    let findings = out
        .findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    (out, findings)
}

/// Creates files with 250-character names in `dir` until a create fails; returns how many succeeded and the error.
fn fill_until_failure(dir: &Path) -> (usize, std::io::Error) {
    let pad = "x".repeat(242);
    for i in 0..500_000 {
        let name = dir.join(format!("{i:08}{pad}"));
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
        {
            return (i, e);
        }
    }
    panic!("no create failed in {}", dir.display());
}

fn dev_number(p: &Path) -> String {
    let dev = std::fs::metadata(p).unwrap().dev();
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// The htree-full finding for `device`, the kernel's name for the loop device.
fn htree_finding<'a>(findings: &'a [Value], device: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["kind"] == "htree-full" && f["evidence"]["device"] == device)
        .unwrap_or_else(|| panic!("no htree-full finding for {device}: {findings:#?}"))
}

/// A flat directory on a 1 KiB-block ext4 without large_dir fills its two-level index after about 20,000 entries;
/// the kernel's warning becomes a finding whose path is that directory.
#[test]
fn a_full_directory_index_becomes_a_finding_with_its_path() {
    require_root!();
    let mut s = Scratch::new("kmsg-htree");
    let (mnt, dev) = s.ext4("fs", "256M", "-b 1024 -N 65536 -O ^large_dir");
    let device = dev.trim_start_matches("/dev/").to_string();
    let dir = mnt.join("flat");
    std::fs::create_dir(&dir).unwrap();
    let host = host();
    let since = kmsg::last_seq(&host).unwrap();

    let (created, err) = fill_until_failure(&dir);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(created > 10_000, "only {created} entries before ENOSPC");

    let (out, findings) = scan_since(&host, &s, since);
    let f = htree_finding(&findings, &device);
    let e = &f["evidence"];
    let path = dir.display().to_string();
    assert_eq!(f["check"], "kmsg");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["subject"], path);
    assert_eq!(e["path"], path);
    assert_eq!(e["inode"], ino(&dir));
    assert_eq!(e["device_number"], dev_number(&dir));
    assert!(
        e["resolved_by"] == "open_by_handle_at" || e["resolved_by"] == "search",
        "{f:#}"
    );
    assert!(e["count"].as_u64().unwrap() >= 1, "{f:#}");
    assert!(e["first_seq"].as_u64().unwrap() > since.unwrap_or(0));
    assert!(e["last_seq"].as_u64() >= e["first_seq"].as_u64());
    assert_eq!(e["htree_levels"], 2);
    assert_eq!(e["large_dir"], false);
    assert!(e["ext4_warning_count"].as_u64().unwrap() >= e["count"].as_u64().unwrap());
    assert!(e["first_time"].as_str().unwrap().ends_with('Z'), "{f:#}");
    assert_eq!(f["owner"], Value::Null);
    assert!(stat(&out, "matched_htree_full") >= 1);
    assert!(stat(&out, "matched_htree_companion") >= 1);

    // The check `wonk scan` runs reads everything /dev/kmsg holds, this burst included.
    let owners = Attributor::new(&host, s.path("kubelet"), &[]);
    let all = wonk::checks::kmsg::Kmsg::default().run(&Context {
        host: &host,
        owners: &owners,
    });
    assert_eq!(all.failed, None);
    let all: Vec<Value> = all
        .findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    // The log may also hold older warnings for the same loop device, about filesystems made by earlier tests:
    // each mount of the device starts new groups, and only those after the last mount are looked up.
    let same: Vec<&Value> = all
        .iter()
        .filter(|f| {
            f["kind"] == "htree-full"
                && f["evidence"]["device"] == device.as_str()
                && f["evidence"]["remounted"] == false
        })
        .collect();
    assert_eq!(same.len(), 1, "{all:#?}");
    assert_eq!(same[0]["subject"], path);
    assert_eq!(same[0]["evidence"]["inode"], ino(&dir));
    for f in all.iter().filter(|f| {
        f["kind"] == "htree-full"
            && f["evidence"]["device"] == device.as_str()
            && f["evidence"]["remounted"] == true
    }) {
        assert_eq!(f["evidence"]["path"], Value::Null, "{f:#}");
        assert!(
            f["evidence"]["path_error"]
                .as_str()
                .unwrap()
                .contains("mounted again"),
            "{f:#}"
        );
    }
    for f in all
        .iter()
        .filter(|f| f["kind"] == "htree-full" && f["evidence"]["device"] == device.as_str())
    {
        match f["evidence"]["path"].as_str() {
            Some(p) => assert!(
                Path::new(p).is_dir(),
                "a stale message resolved to a file: {f:#}"
            ),
            None => assert!(f["evidence"]["path_error"].is_string(), "{f:#}"),
        }
    }
}

const UID: &str = "834b7b00-d731-4186-803c-8c4a35a84627";
const SANDBOX: &str = "5ad0b0c05ad0b0c05ad0b0c05ad0b0c05ad0b0c05ad0b0c05ad0b0c05ad0b0c0";

/// A container's bundle and its pod sandbox's, under `s`'s `state`.
fn pod(s: &Scratch, cid: &str, cgroup: &str) {
    s.bundle(
        "state",
        cid,
        &Pod::new("shop", "some-app-7d4b9c-x2x9q", UID, SANDBOX)
            .container("php")
            .cgroup(cgroup)
            .spec(),
    );
    s.bundle(
        "state",
        SANDBOX,
        &Pod::new("shop", "some-app-7d4b9c-x2x9q", UID, SANDBOX).sandbox(),
    );
}

fn assert_owner(o: &Value, cid: &str) {
    assert_eq!(o["namespace"], "shop", "{o:#}");
    assert_eq!(o["pod"], "some-app-7d4b9c-x2x9q", "{o:#}");
    assert_eq!(o["pod_uid"], UID, "{o:#}");
    assert_eq!(o["container"], "php", "{o:#}");
    assert_eq!(o["container_id"], cid, "{o:#}");
}

/// The seed: a php container creates temporary files in a flat /app/tmp of its overlay root until the index is
/// full. The warning names an inode of the disk under the overlay; wonk names the directory in the upperdir and the
/// pod that writes there.
#[test]
fn the_seed_directory_in_a_containers_upperdir_names_the_pod() {
    require_root!();
    let mut s = Scratch::new("kmsg-seed");
    let (disk, dev) = s.ext4("md1", "256M", "-b 1024 -N 65536 -O ^large_dir");
    let device = dev.trim_start_matches("/dev/").to_string();
    for d in ["upper/app/tmp", "work"] {
        std::fs::create_dir_all(disk.join(d)).unwrap();
    }
    s.sleep_image("lower");
    // As containerd does: the overlay root is mounted in the host's namespace, and the container's namespace is a
    // copy that holds it.
    let rootfs = s.path("rootfs");
    s.host_mount(
        &format!(
            "-t overlay overlay -o lowerdir={},upperdir={},workdir={}",
            s.s("lower"),
            disk.join("upper").display(),
            disk.join("work").display(),
        ),
        &rootfs,
    );
    let pid = s.spawn_chrooted("true", &rootfs);
    let cid = format!("41b8343f32f8623c7d20942813b4a48c{}", "5eed".repeat(8));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{UID}/{cid}"), pid);
    pod(&s, &cid, &cg);
    let host = host();
    let since = kmsg::last_seq(&host).unwrap();

    // Through the container's own view of its root, as php-fpm would.
    let app_tmp = PathBuf::from(format!("/proc/{pid}/root/app/tmp"));
    let (created, err) = fill_until_failure(&app_tmp);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(created > 10_000, "only {created} entries before ENOSPC");

    let (_, findings) = scan_since(&host, &s, since);
    let f = htree_finding(&findings, &device);
    let upper_tmp = disk.join("upper/app/tmp");
    assert_eq!(f["subject"], upper_tmp.display().to_string(), "{f:#}");
    assert_eq!(f["evidence"]["inode"], ino(&upper_tmp));
    assert_owner(&f["owner"], &cid);
    let seen = f["evidence"]["seen_by"].as_array().unwrap();
    let up = seen
        .iter()
        .find(|s| s["how"].as_str().unwrap().contains("upperdir"))
        .unwrap_or_else(|| panic!("{f:#}"));
    assert_eq!(up["path_in_container"], "/app/tmp");
    assert_eq!(up["pid"], pid);
    assert_owner(&up["owner"], &cid);
}

/// Waits (bounded) until `pid`, a child of this test, has exited; it stays a zombie until the Scratch reaps it.
fn wait_exited(pid: u32) {
    for _ in 0..6000 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(st)
                if st
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return
            }
            Err(_) => return,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    panic!("process {pid} did not exit");
}

/// A real OOM kill: a shell in a 32 MiB memory cgroup laid out like kubelet's reads 200 MB into a variable.
#[test]
fn a_real_oom_kill_in_a_pod_cgroup_names_the_pod() {
    require_root!();
    let mut s = Scratch::new("kmsg-oom");
    let go = s.path("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.01; done; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${{#x}}",
        go.display()
    );
    let pid = s.spawn_cmd(std::process::Command::new("sh").arg("-c").arg(&script));
    let cid = format!("41b8343f32f8623c7d20942813b4a48c{}", "00ee".repeat(8));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{UID}/{cid}"), pid);
    pod(&s, &cid, &cg);
    std::fs::write(
        format!("/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes"),
        "33554432",
    )
    .unwrap();
    let host = host();
    let since = kmsg::last_seq(&host).unwrap();
    std::fs::write(&go, "").unwrap();
    wait_exited(pid);

    let (_, findings) = scan_since(&host, &s, since);
    let f = findings
        .iter()
        .find(|f| f["kind"] == "oom-kill" && f["evidence"]["memcg"] == cg.as_str())
        .unwrap_or_else(|| panic!("no oom-kill finding for {cg}: {findings:#?}"));
    let e = &f["evidence"];
    assert_eq!(f["subject"], cg.as_str());
    assert_eq!(e["constraint"], "CONSTRAINT_MEMCG");
    assert!(e["count"].as_u64().unwrap() >= 1);
    if e["task"] == "sh" {
        assert_eq!(e["pid"], pid);
    }
    assert!(e["anon_rss_kb"].as_u64().unwrap() > 0, "{f:#}");
    assert_owner(&f["owner"], &cid);
    assert_eq!(f["owner"]["qos"], "Burstable");
}

fn write_kmsg(lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap();
    for l in lines {
        // One write per record.
        f.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
}

/// Kernel records of 30 OOM kills of one container fold into one finding, three reports of one hung task into one
/// finding with the first report's trace, and the hung task that still runs is resolved to its pod, state and
/// kernel stack. User space cannot log kernel records (/dev/kmsg gives what it writes facility "user", which wonk
/// drops), so the records are a saved kmsg log, read with `resolve_here` as `wonk kmsg FILE --resolve-here` does.
#[test]
fn oom_and_hung_task_records_fold_and_resolve() {
    require_root!();
    let mut s = Scratch::new("kmsg-write");
    let sleeper = s.spawn_cmd(std::process::Command::new("sleep").arg("100000"));
    let hung_cid = format!("41b8343f32f8623c7d20942813b4a48c{}", "4a4a".repeat(8));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{UID}/{hung_cid}"), sleeper);
    pod(&s, &hung_cid, &cg);
    let oom_cid = format!("41b8343f32f8623c7d20942813b4a48c{}", "0077".repeat(8));
    let memcg = format!("/kubepods/burstable/pod{UID}/{oom_cid}");
    pod(&s, &oom_cid, &memcg);
    let host = host();
    let since = Some(1000);

    let mut lines = Vec::new();
    for i in 0..30 {
        let victim = 700_000 + i;
        lines.push(format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={oom_cid},mems_allowed=0,oom_memcg={memcg},task_memcg={memcg},task=php-fpm,pid={victim},uid=33"));
        lines.push(format!("Memory cgroup out of memory: Killed process {victim} (php-fpm) total-vm:812340kB, anon-rss:{}kB, file-rss:1024kB, shmem-rss:0kB, UID:33 pgtables:1200kB oom_score_adj:-997", 500_000 + i));
    }
    for secs in [122, 245, 368] {
        lines.push(format!(
            "INFO: task sleep:{sleeper} blocked for more than {secs} seconds."
        ));
        lines.push(format!(
            "task:sleep            state:D stack:0     pid:{sleeper}"
        ));
        lines.push("Call Trace:".into());
        lines.push(" <TASK>".into());
        lines.push(format!(" __schedule+0x3a0/0xb40 report{secs}"));
        lines.push(" do_nanosleep+0x6b/0x190".into());
        lines.push(" </TASK>".into());
    }
    lines.push("INFO: task gone-task:99999999 blocked for more than 122 seconds.".into());
    let saved: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("4,{},{},-;{l}\n", 1001 + i, 5_000_000 + i * 1000))
        .collect();
    let file = s.write("saved.kmsg", &saved);
    let owners = Attributor::new(&host, s.path("kubelet"), &[s.path("state")]);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let out = kmsg::scan(
        ctx.owners,
        &Source::File(file),
        &Options {
            resolve_here: true,
            ..Options::default()
        },
    );
    assert_eq!(out.failed, None);
    let findings: Vec<Value> = out
        .findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap())
        .collect();
    let oom = findings
        .iter()
        .find(|f| f["kind"] == "oom-kill" && f["subject"] == memcg.as_str())
        .unwrap_or_else(|| panic!("{findings:#?}"));
    let e = &oom["evidence"];
    assert_eq!(e["count"], 30);
    assert_eq!(e["pid"], 700_029);
    assert_eq!(e["pids"].as_array().unwrap().len(), 16);
    assert_eq!(e["pids"][0], 700_000);
    assert_eq!(e["anon_rss_kb"], 500_029);
    assert_eq!(e["oom_score_adj"], -997);
    assert!(e["first_seq"].as_u64() > since && e["last_seq"].as_u64() > e["first_seq"].as_u64());
    assert_owner(&oom["owner"], &oom_cid);

    let hung = findings
        .iter()
        .find(|f| f["subject"] == format!("pid {sleeper} (sleep)"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    let e = &hung["evidence"];
    assert_eq!(hung["kind"], "task-hung");
    assert_eq!(e["count"], 3);
    assert_eq!(e["blocked_for_secs"], 368);
    assert_eq!(e["alive"], true);
    assert_eq!(e["state_now"], "S (sleeping)");
    assert!(
        !e["stack_now"].as_array().unwrap().is_empty(),
        "root reads /proc/PID/stack: {hung:#}"
    );
    assert_eq!(
        e["logged_stack"],
        json!([
            "__schedule+0x3a0/0xb40 report122",
            "do_nanosleep+0x6b/0x190"
        ])
    );
    assert_owner(&hung["owner"], &hung_cid);

    let gone = findings
        .iter()
        .find(|f| f["subject"] == "pid 99999999 (gone-task)")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(gone["evidence"]["alive"], false);
    assert_eq!(gone["owner"], Value::Null);
    assert_eq!(stat(&out, "dropped_from_userspace"), 0);
    assert_eq!(stat(&out, "malformed"), 0);
    assert!(hung["evidence"]["resolved_here"] == true);
}

/// A follower started before the records arrive reports them while it runs, and ends when told to.
#[test]
fn following_dev_kmsg_reports_new_records_until_stopped() {
    require_root!();
    // Starting at the end skips what the log holds (bar records that arrive meanwhile).
    {
        let host = host();
        let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
        let ctx = Context {
            host: &host,
            owners: &owners,
        };
        let read = |from_end| {
            let opts = Options {
                from_end,
                ..Options::default()
            };
            stat(
                &kmsg::scan(ctx.owners, &Source::DevKmsg { follow: false }, &opts),
                "records_read",
            )
        };
        let (all, end) = (read(false), read(true));
        assert!(end < all, "from the end {end}, from the start {all}");
    }
    // A real kernel event while following: an OOM kill in a 32 MiB memory cgroup. Lines a process writes to
    // /dev/kmsg meanwhile are read, counted as dropped, and reported as nothing.
    let mut s = Scratch::new("kmsg-follow");
    let go = s.path("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.01; done; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${{#x}}",
        go.display()
    );
    let pid = s.spawn_cmd(std::process::Command::new("sh").arg("-c").arg(&script));
    let cid = format!("41b8343f32f8623c7d20942813b4a48c{}", "00ff".repeat(8));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{UID}/{cid}"), pid);
    std::fs::write(
        format!("/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes"),
        "33554432",
    )
    .unwrap();
    let since = kmsg::last_seq(&host()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let follower = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let host = host();
            let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
            let ctx = Context {
                host: &host,
                owners: &owners,
            };
            let opts = Options {
                since_seq: since,
                stop: Some(stop),
                settle: Duration::from_millis(300),
                ..Options::default()
            };
            kmsg::scan_with(
                ctx.owners,
                &Source::DevKmsg { follow: true },
                &opts,
                &mut |f| {
                    let _ = tx.send(serde_json::to_value(&f).unwrap());
                },
            )
        })
    };
    let iface = format!("wonkf{}", std::process::id());
    write_kmsg(&[
        format!("unregister_netdevice: waiting for {iface} to become free. Usage count = 3"),
        format!("unregister_netdevice: waiting for {iface} to become free. Usage count = 2"),
    ]);
    std::fs::write(&go, "").unwrap();
    wait_exited(pid);
    loop {
        let f = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the follower reported nothing");
        assert_ne!(f["subject"], iface.as_str(), "a forged record: {f:#}");
        if f["kind"] == "oom-kill" && f["evidence"]["memcg"] == cg.as_str() {
            assert_eq!(f["evidence"]["resolved_here"], true);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let out = follower.join().unwrap();
    assert_eq!(out.failed, None);
    assert!(stat(&out, "records_read") >= 2);
    assert!(stat(&out, "dropped_from_userspace") >= 2);
    assert_eq!(stat(&out, "matched_netdev_unregister"), 0);
}

/// Saved logs from another node: nothing there is resolved, and the finding says why.
#[test]
fn a_saved_journal_from_another_node() {
    let host = host();
    let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmsg");
    let out = kmsg::scan(
        ctx.owners,
        &Source::File(fixtures.join("seed.journal")),
        &Options::default(),
    );
    assert_eq!(out.failed, None);
    assert_eq!(stat(&out, "records_read"), 8);
    assert_eq!(stat(&out, "not_kernel"), 1);
    assert_eq!(out.findings.len(), 1);
    let f = serde_json::to_value(&out.findings[0]).unwrap();
    assert_eq!(f["kind"], "htree-full");
    assert_eq!(f["severity"], "critical");
    let e = &f["evidence"];
    assert_eq!(e["count"], 4);
    assert_eq!(e["first_time"], "Sep 06 14:14:36");
    assert_eq!(e["first_seq"], Value::Null);
    assert_eq!(e["device"], "md1");
    assert_eq!(e["inode"], 211566352);
    assert_eq!(e["large_dir"], false);
    if !Path::new("/sys/class/block/md1").exists() {
        assert_eq!(f["subject"], "md1:211566352");
        assert_eq!(e["path"], Value::Null);
        assert!(e["path_error"].as_str().unwrap().contains("md1"), "{f:#}");
    }
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys[..8],
        [
            "count",
            "bursts",
            "first_seq",
            "last_seq",
            "first_time",
            "last_time",
            "first_ts_usec",
            "last_ts_usec"
        ]
    );

    let out = kmsg::scan(
        ctx.owners,
        &Source::File(fixtures.join("no-such-file")),
        &Options::default(),
    );
    assert!(out.failed.unwrap().contains("no-such-file"));
}

/// The whole ring buffer is overwritten while a reader is between two reads: the reader gets EPIPE, counts it
/// and the records it lost, and goes on to the newest. Opt-in (WONK_TEST_KMSG_FLOOD=1): the flood wipes the
/// node's kernel log history, which tests running at the same time may still be reading.
#[test]
fn an_overwritten_ring_buffer_is_counted_and_reading_goes_on() {
    if std::env::var("WONK_TEST_KMSG_FLOOD").as_deref() != Ok("1") {
        eprintln!("skipping an_overwritten_ring_buffer_is_counted_and_reading_goes_on: set WONK_TEST_KMSG_FLOOD=1");
        return;
    }
    require_root!();
    use wonk::kmsg::reader::{read_kmsg, KmsgOptions, ReadStats};
    use wonk::kmsg::record::Record;
    let _unlimited = Sysctl::set("/proc/sys/kernel/printk_devkmsg", "on");
    let host = host();
    let tag = format!("wonk-flood-{}", std::process::id());
    let since = kmsg::last_seq(&host).unwrap();
    write_kmsg(&[format!("{tag} first")]);
    // 4,000 records of about 150 bytes: several times the usual 128 KiB ring buffer.
    let flood: Vec<String> = (0..4000)
        .map(|i| format!("{tag} {i:05} {}", "x".repeat(120)))
        .collect();
    let mut stats = ReadStats::default();
    let (mut first, mut flooded, mut last_seen) = (false, false, false);
    read_kmsg(
        &host,
        &KmsgOptions {
            since_seq: since,
            ..KmsgOptions::default()
        },
        &mut stats,
        &mut |r: &Record<'_>| {
            let t = r.text();
            first |= t == format!("{tag} first");
            if first && !flooded {
                flooded = true;
                write_kmsg(&flood);
            }
            last_seen |= t.starts_with(&format!("{tag} 03999 "));
        },
    )
    .unwrap();
    assert!(first && flooded);
    assert!(stats.overwritten >= 1, "{stats:?}");
    assert!(stats.lost > 0, "{stats:?}");
    assert!(
        last_seen,
        "reading did not go on to the newest records: {stats:?}"
    );
}

/// A missing file, a directory and a file in which nothing is kernel-log output fail the check (exit 3), and
/// `--json` still prints the report with the check's error; a log that is only bare messages with a match works.
#[test]
fn unreadable_or_unrecognized_files_fail_the_check_with_a_json_report() {
    let s = Scratch::new("kmsg-cli");
    let missing = s.path("no-such-file");
    let prose = s.write("prose.txt", "hello\nthis is not a kernel log\n");
    let bare = s.write(
        "bare.txt",
        "INFO: task kworker/2:1:5747 blocked for more than 120 seconds.\nsome other line\n",
    );
    for (path, what) in [
        (missing.as_path(), "no-such-file"),
        (s.dir.as_path(), "Is a directory"),
        (prose.as_path(), "nothing in"),
    ] {
        let (code, report) = wonk_json(&["kmsg", path.to_str().unwrap()]);
        assert_eq!(code, 3, "{report:#}");
        assert_eq!(report["checks"][0]["status"], "failed", "{report:#}");
        assert!(
            report["checks"][0]["error"]
                .as_str()
                .unwrap()
                .contains(what),
            "{report:#}"
        );
    }
    let (code, report) = wonk_json(&["kmsg", bare.to_str().unwrap()]);
    assert_ne!(code, 3, "{report:#}");
    assert_eq!(report["findings"][0]["kind"], "task-hung");
    assert_eq!(report["findings"][0]["evidence"]["resolved_here"], false);
    assert_eq!(report["checks"][0]["stats"]["bare_lines"], 2);
    let spots = report["blind_spots"].to_string();
    assert!(spots.contains("without a kernel log prefix"), "{spots}");
    assert!(spots.contains("not looked up on this host"), "{spots}");
    // Asked by name, the same log is looked up here.
    let (_, report) = wonk_json(&["kmsg", bare.to_str().unwrap(), "--resolve-here"]);
    assert_eq!(report["findings"][0]["evidence"]["resolved_here"], true);
}

/// A saved journal is looked up on this host only when its boot markers all name this host's current boot.
#[test]
fn a_journal_of_this_boot_is_resolved_here_and_one_of_another_is_not() {
    let s = Scratch::new("kmsg-boot");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace('-', "");
    let line = "Nov 27 16:38:56 node-1 kernel: INFO: task sleep:99999999 blocked for more than 120 seconds.";
    let host = host();
    let owners = Attributor::new(&host, PathBuf::from("/nonexistent"), &[]);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    for (marker, here) in [
        (format!("-- Boot {boot} --"), true),
        (
            "-- Boot 00112233445566778899aabbccddeeff --".to_string(),
            false,
        ),
        (String::new(), false),
    ] {
        let file = s.write("journal.txt", &format!("{marker}\n{line}\n"));
        let out = kmsg::scan(ctx.owners, &Source::File(file), &Options::default());
        let f = serde_json::to_value(&out.findings[0]).unwrap();
        assert_eq!(f["evidence"]["resolved_here"], here, "{marker:?}: {f:#}");
        // Looked up here, the pid is known not to run; from elsewhere, nothing is said about it.
        assert_eq!(
            f["evidence"]["alive"],
            if here { json!(false) } else { Value::Null },
            "{f:#}"
        );
    }
}
