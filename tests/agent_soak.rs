//! The kernel-log flood soak of `wonk agent` (issue #6): for a minute the test writes 10,000 unrelated lines a
//! second into /dev/kmsg and, every 5 s, makes the kernel log real ext4 "index full" warnings (failed creates in
//! a full htree on a loop-mounted ext4). An independent reader in the test follows /dev/kmsg from the record the
//! agent started after. The agent must count every warning the kernel logged (or say, in
//! `wonk_kmsg_records_lost_total`, that it lost records), count every record it read once, keep serving /metrics
//! and keep its RSS bounded. The test prints what it measured: lines written and per second, the agent's CPU and
//! RSS, the slowest scrape, warnings logged and counted. About 65 s.
//!
//! The flood overwrites the node's whole kernel log many times over; cargo runs this binary's one test alone.

#[macro_use]
mod common;

use common::agent::*;
use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wonk::host::{procfs, Host};

const FLOOD: Duration = Duration::from_secs(60);
/// Lines per batch, one batch every [`BATCH_EVERY`]: 10,000 lines a second.
const BATCH: usize = 100;
const BATCH_EVERY: Duration = Duration::from_millis(10);
/// A round of failed creates (and so of real ext4 warnings) this often during the flood.
const EXT4_EVERY: Duration = Duration::from_secs(5);
/// Failed creates per round.
const EXT4_FAILS: usize = 3;
const SCRAPE_EVERY: Duration = Duration::from_secs(2);
/// The RSS target is 20 MiB; this bound only catches growth without bound.
const RSS_BOUND_KIB: u64 = 64 << 10;

/// What the test's own reader saw in /dev/kmsg after the agent's first record.
#[derive(Debug, Default, Clone)]
struct Seen {
    records: u64,
    /// Records overwritten before this reader read them (gaps in sequence numbers), and EPIPE answers.
    lost: u64,
    epipe: u64,
    last_seq: Option<u64>,
    /// (seq, device) of every ext4 "index full" warning.
    index_full: Vec<(u64, String)>,
    /// ext4 warnings (any text) on the test's device.
    ext4_warnings_ours: u64,
    /// Flood lines seen, by their tag.
    flood: u64,
}

/// One /dev/kmsg record: `PRI,SEQ,TS,FLAGS;message\n` and continuation lines. Returns (seq, message).
fn parse_record(rec: &[u8]) -> Option<(u64, &[u8])> {
    let semi = rec.iter().position(|&b| b == b';')?;
    let seq = std::str::from_utf8(&rec[..semi])
        .ok()?
        .split(',')
        .nth(1)?
        .parse()
        .ok()?;
    let msg = &rec[semi + 1..];
    let end = msg.iter().position(|&b| b == b'\n').unwrap_or(msg.len());
    Some((seq, &msg[..end]))
}

/// Follows /dev/kmsg from its oldest record, keeping what comes after `since`, until `stop`. Written for this test
/// on purpose (not wonk's reader), so that it counts independently of the code under test.
fn follow_kmsg(since: Option<u64>, device: &str, tag: &str, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    let ours = format!("EXT4-fs warning (device {device}): ");
    let mut buf = vec![0u8; 16 << 10];
    let mut prev = since;
    loop {
        match f.read(&mut buf) {
            Ok(n) => {
                let Some((seq, msg)) = parse_record(&buf[..n]) else {
                    panic!(
                        "unparsable /dev/kmsg record {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                };
                if since.is_some_and(|s| seq <= s) {
                    continue;
                }
                let mut s = seen.lock().unwrap();
                if let Some(p) = prev.filter(|&p| seq > p + 1) {
                    s.lost += seq - p - 1;
                }
                prev = Some(seq);
                s.last_seq = Some(seq);
                s.records += 1;
                let text = String::from_utf8_lossy(msg);
                if text.starts_with(&ours) {
                    s.ext4_warnings_ours += 1;
                }
                if text.starts_with("EXT4-fs warning (device ") && text.contains("index full") {
                    let dev = text["EXT4-fs warning (device ".len()..]
                        .split(')')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    s.index_full.push((seq, dev));
                }
                if text.contains(tag) {
                    s.flood += 1;
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EPIPE) => seen.lock().unwrap().epipe += 1,
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let mut pfd = libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, and its count.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
                _ => panic!("reading /dev/kmsg: {e}"),
            },
        }
    }
}

/// A line of unrelated kernel noise (network devices coming and going, apparmor denials, conntrack, overlayfs),
/// each a little different, none of them a problem wonk knows.
fn noise(tag: &str, n: u64) -> String {
    let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
    let veth = format!("veth{:08x}", x as u32);
    let body = match n % 8 {
        0 => format!("<6>IPv6: ADDRCONF(NETDEV_CHANGE): {veth}: link becomes ready"),
        1 => format!(
            "<6>cni0: port {}({veth}) entered forwarding state",
            x % 250 + 1
        ),
        2 => format!("<6>eth0: renamed from tmp{}", x % 100_000),
        3 => format!(
            "<5>audit: type=1400 audit({}.{:03}:{}): apparmor=\"DENIED\" operation=\"open\" profile=\"cri-containerd.apparmor.d\" name=\"/proc/{}/mounts\" pid={} comm=\"nginx\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0",
            1_790_000_000 + n / 1000,
            n % 1000,
            n,
            x % 4_000_000,
            x % 4_000_000
        ),
        4 => format!("<6>device {veth} entered promiscuous mode"),
        5 => "<6>nf_conntrack: default automatic helper assignment has been turned off for security reasons and CT-based firewall rule not found. Use the iptables CT target to attach helpers instead.".to_string(),
        6 => format!(
            "<6>overlayfs: idmapped layers are currently not supported (upper {})",
            x % 1000
        ),
        _ => format!("<6>cni0: port {}({veth}) entered disabled state", x % 250 + 1),
    };
    format!("{body} {tag}:{n}\n")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After comm: state(0) ... utime(11) stime(12).
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn kib(host: &Host, pid: u32, key: &str) -> u64 {
    procfs::status_field(host, pid, key)
        .unwrap()
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The agent's log lines `kernel log` for `subject`: the warnings each says it folded, summed.
fn logged_warnings(log: &str, subject: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("kernel log") && l.contains(&format!("subject={subject} ")))
        .filter_map(|l| {
            let (_, tail) = l.rsplit_once(" (")?;
            tail.strip_suffix(" warnings)")?.parse::<u64>().ok()
        })
        .sum()
}

/// What the agent says it counted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counted {
    /// `wonk_kmsg_events_total{reason="htree-full"}`, every owner.
    index_full: u64,
    /// The same for the test's directory, from the agent's log.
    ours: u64,
    read: u64,
    lost: u64,
}

fn counted(metrics: &str, log: &str, subject: &str) -> Counted {
    let total = |name: &str, labels: &[(&str, &str)]| -> u64 {
        values(metrics, name, labels).iter().sum::<f64>() as u64
    };
    Counted {
        index_full: total("wonk_kmsg_events_total", &[("reason", "htree-full")]),
        ours: logged_warnings(log, subject),
        read: total("wonk_kmsg_records_read_total", &[]),
        lost: total("wonk_kmsg_records_lost_total", &[]),
    }
}

/// Sets the flag when dropped, so that a failed assertion in the middle of the flood ends the threads at once.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct FloodCount {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    took: Duration,
}

fn flood(tag: &str, stop: &AtomicBool) -> FloodCount {
    let mut out = FloodCount::default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap();
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut batches = 0u32;
    while t0.elapsed() < FLOOD && !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            let line = noise(tag, n);
            n += 1;
            // One record per write(2).
            match f.write(line.as_bytes()) {
                Ok(w) if w == line.len() => out.ok += 1,
                r => {
                    out.failed += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("{r:?} writing {line:?}"));
                }
            }
        }
        batches += 1;
        let next = t0 + BATCH_EVERY * batches;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    out.took = t0.elapsed();
    out
}

/// Creates names in the full `dir` until `fails` creates have failed with ENOSPC. Returns (created, failed).
fn failed_creates(dir: &Path, round: usize, fails: usize) -> (usize, usize) {
    let (mut created, mut failed) = (0, 0);
    for i in 0..10_000 {
        match File::create(dir.join(format!("r{round:03}-{i:0>240}"))) {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                failed += 1;
                if failed == fails {
                    break;
                }
            }
        }
    }
    (created, failed)
}

#[test]
fn kmsg_flood_soak() {
    require_root!();
    let test = "kmsg_flood_soak";
    let kmsg_writable = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .is_ok();
    if !present_or_skip(test, kmsg_writable, "a writable /dev/kmsg")
        || !present_or_skip(
            test,
            Path::new("/proc/sys/kernel/printk_devkmsg").exists(),
            "/proc/sys/kernel/printk_devkmsg",
        )
        || !present_or_skip(
            test,
            Path::new("/dev/loop-control").exists(),
            "loop devices (/dev/loop-control)",
        )
    {
        return;
    }
    let host = Host::open(Path::new("/")).unwrap();
    let mut s = Scratch::new("agent-soak");
    let (mnt, dev) = s.ext4("fs", "256M", "-b 1024 -O ^large_dir");
    let device = dev.trim_start_matches("/dev/").to_string();
    let dir = mnt.join("app/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let subject = dir.display().to_string();
    // ext4 lets 10 warnings of a filesystem through per 5 s: let every one through, on this filesystem only.
    // (Dropped after the Scratch's unmount would be too late: declared after it, it is dropped before.)
    let sysfs = Path::new("/sys/fs/ext4").join(&device);
    let burst = sysfs.join("warning_ratelimit_burst");
    let _burst = burst
        .exists()
        .then(|| Sysctl::set(burst.to_str().unwrap(), "1000000"));
    let warning_count = || -> Option<u64> {
        std::fs::read_to_string(sysfs.join("warning_count"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let entries = fill_to_enospc(&dir);

    // Ghosts, shims and D-state run during the flood; the htree scan and the layer walk only at the start (their
    // default is hourly; an htree scan of the full directory every 30 s would measure the scan, not the flood).
    let port = free_port();
    let log = s.path("agent.log");
    let mut a = agent(
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "30",
            "--htree-interval",
            "3600",
            "--layers-interval",
            "3600",
            "--kmsg-interval",
            "5",
            "--kubelet-root",
            &mnt.display().to_string(),
            "--containerd-state",
            &s.s("state"),
        ],
        &log,
    );
    let pid = a.pid();
    wait_metrics(port, 30, "the agent's first runs", |m| {
        ["ghosts", "htree"]
            .iter()
            .all(|c| value(m, "wonk_check_runs_total", &[("check", c)]).is_some_and(|v| v >= 1.0))
    });
    // The record the agent follows from.
    let end = Instant::now() + Duration::from_secs(20);
    let since: Option<u64> = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("following the kernel log"))
        {
            let v = l.split("since_seq=").nth(1).unwrap_or("");
            let v = v.split_whitespace().next().unwrap_or("");
            break v.trim_matches('"').parse().ok();
        }
        assert!(
            Instant::now() < end,
            "the agent never said where it follows the kernel log from:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tag = format!("wonk-soak-{}", std::process::id());
    let seen = Mutex::new(Seen::default());
    let (stop_reader, stop_flood) = (AtomicBool::new(false), AtomicBool::new(false));
    let warnings_before = warning_count();
    let rss_start = procfs::rss_kib(&host, pid).unwrap();

    let mut scrapes = 0u32;
    let mut scrape_failures: Vec<String> = Vec::new();
    let mut slowest_scrape = Duration::ZERO;
    let mut rss_samples: Vec<u64> = Vec::new();
    let (mut creates_ok, mut creates_failed) = (0usize, 0usize);
    let (mut cpu, mut self_cpu, mut wall) = (0.0, 0.0, Duration::ZERO);
    let mut written = FloodCount::default();
    let mut end_seq = None;
    // The agent's counts and the test's reader, at the same moment.
    let (mut agent_said, mut kernel_logged) = (Counted::default(), Seen::default());

    std::thread::scope(|sc| {
        let _stop_reader = StopOnDrop(&stop_reader);
        sc.spawn(|| follow_kmsg(since, &device, &tag, &seen, &stop_reader));
        let unlimited = Sysctl::set("/proc/sys/kernel/printk_devkmsg", "on");
        let (cpu0, self0, t0) = (
            cpu_seconds(pid),
            cpu_seconds(std::process::id()),
            Instant::now(),
        );
        let flooder = {
            let _stop_flood = StopOnDrop(&stop_flood);
            let flooder = sc.spawn(|| flood(&tag, &stop_flood));
            let (mut next_scrape, mut next_ext4) = (t0, t0 + EXT4_EVERY / 2);
            let mut round = 0;
            while !flooder.is_finished() {
                let now = Instant::now();
                if now >= next_ext4 {
                    let (ok, failed) = failed_creates(&dir, round, EXT4_FAILS);
                    creates_ok += ok;
                    creates_failed += failed;
                    round += 1;
                    next_ext4 += EXT4_EVERY;
                }
                if now >= next_scrape {
                    let t = Instant::now();
                    match get(port, "/metrics", "text/plain") {
                        Ok((status, body))
                            if status.contains(" 200")
                                && body.contains("wonk_check_runs_total") => {}
                        Ok((status, body)) => scrape_failures
                            .push(format!("{status}: {}", &body[..body.len().min(200)])),
                        Err(e) => scrape_failures.push(e.to_string()),
                    }
                    slowest_scrape = slowest_scrape.max(t.elapsed());
                    scrapes += 1;
                    rss_samples.push(procfs::rss_kib(&host, pid).unwrap());
                    next_scrape += SCRAPE_EVERY;
                }
                assert!(
                    a.running(),
                    "the agent exited during the flood:\n{}",
                    std::fs::read_to_string(&log).unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            flooder
        };
        written = flooder.join().unwrap();
        cpu = cpu_seconds(pid) - cpu0;
        self_cpu = cpu_seconds(std::process::id()) - self0;
        wall = t0.elapsed();
        drop(unlimited);

        // The test's reader catches up with the flood's last record; then the agent must have read up to it, and
        // counted every warning the reader saw.
        std::thread::sleep(Duration::from_millis(500));
        end_seq = seen.lock().unwrap().last_seq;
        let span = end_seq.unwrap_or(0) - since.unwrap_or(0);
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let Ok((_, m)) = get(port, "/metrics", "text/plain") else {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            kernel_logged = seen.lock().unwrap().clone();
            agent_said = counted(&m, &std::fs::read_to_string(&log).unwrap(), &subject);
            let ours = kernel_logged
                .index_full
                .iter()
                .filter(|(_, d)| *d == device)
                .count() as u64;
            if agent_said.index_full == kernel_logged.index_full.len() as u64
                && agent_said.ours == ours
                && agent_said.read + agent_said.lost >= span
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    let full_log = std::fs::read_to_string(&log).unwrap();
    let rss_end = procfs::rss_kib(&host, pid).unwrap();
    let hwm = kib(&host, pid, "VmHWM");
    let rss_peak = rss_samples
        .iter()
        .copied()
        .chain([rss_end, hwm])
        .max()
        .unwrap();
    let logged_all = kernel_logged.index_full.len() as u64;
    let logged_ours = kernel_logged
        .index_full
        .iter()
        .filter(|(_, d)| *d == device)
        .count() as u64;
    let span = end_seq.unwrap_or(0) - since.unwrap_or(0);
    let warnings_delta = warning_count().zip(warnings_before).map(|(a, b)| a - b);
    let Counted {
        index_full: counted_all,
        ours: counted_ours,
        read,
        lost,
    } = agent_said;
    let secs = wall.as_secs_f64();

    println!(
        "kmsg flood soak of `wonk agent` (pid {pid}), {entries} entries in the full directory:"
    );
    println!(
        "  lines written to /dev/kmsg: {} ok, {} failed, in {:.1} s: {:.0} lines/s{}",
        written.ok,
        written.failed,
        written.took.as_secs_f64(),
        written.ok as f64 / written.took.as_secs_f64(),
        written
            .first_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (first failure: {e})"))
    );
    println!(
        "  agent CPU during the flood: {cpu:.2} s in {secs:.1} s = {:.1}% of a core (the test's writer and reader: {:.1}%)",
        100.0 * cpu / secs,
        100.0 * self_cpu / secs
    );
    println!(
        "  agent RSS: start {rss_start} KiB, most during the flood {} KiB (sampled every {} s), end {rss_end} KiB; VmHWM {hwm} KiB (its whole life, start-up checks included)",
        rss_samples.iter().max().unwrap_or(&0),
        SCRAPE_EVERY.as_secs()
    );
    println!(
        "  agent: {read} records read ({:.0}/s over the flood), {lost} lost; the kernel logged {span} after its start",
        read as f64 / secs
    );
    println!(
        "  test's reader: {} records, {} flood lines, {} lost, {} EPIPE",
        kernel_logged.records, kernel_logged.flood, kernel_logged.lost, kernel_logged.epipe
    );
    println!(
        "  /metrics: {scrapes} scrapes during the flood, {} failed, slowest {:.1} ms",
        scrape_failures.len(),
        slowest_scrape.as_secs_f64() * 1e3
    );
    println!(
        "  ext4 index-full warnings: {creates_failed} failed creates ({creates_ok} creates went through); the kernel logged {logged_ours} on {device} ({logged_all} on all devices); the agent counted {counted_all} (wonk_kmsg_events_total), {counted_ours} for {subject} (its log)"
    );
    println!(
        "  ext4 warnings on {device}: {} in /dev/kmsg, warning_count +{}",
        kernel_logged.ext4_warnings_ours,
        warnings_delta.map_or("?".into(), |d| d.to_string())
    );

    assert!(a.running(), "the agent died:\n{full_log}");
    assert!(
        scrape_failures.is_empty(),
        "failed scrapes: {scrape_failures:#?}"
    );
    assert!(scrapes >= 20, "only {scrapes} scrapes");
    assert_eq!(
        kernel_logged.lost, 0,
        "the test's own reader lost records: it cannot tell what the kernel logged"
    );
    assert_eq!(written.failed, 0, "{:?}", written.first_error);
    assert!(written.ok > 0 && kernel_logged.flood == written.ok);
    assert!(
        creates_failed > 0 && logged_ours >= creates_failed as u64,
        "each failed create logs at least one warning"
    );
    assert!(rss_peak < RSS_BOUND_KIB, "RSS peak {rss_peak} KiB");
    // Every record after the agent's start was read once or counted as lost; none twice.
    assert!(
        read + lost >= span,
        "read {read} + lost {lost} < {span} records logged"
    );
    let newest = wonk::kmsg::last_seq(&host).unwrap().unwrap_or(0) - since.unwrap_or(0);
    assert!(
        read + lost <= newest,
        "read {read} + lost {lost} > {newest} records logged: some counted twice"
    );
    if lost == 0 {
        assert_eq!(
            counted_all, logged_all,
            "index-full warnings counted by the agent vs logged by the kernel"
        );
        assert_eq!(counted_ours, logged_ours, "for {subject}:\n{full_log}");
    } else {
        // The lost records may have held warnings: the agent says so, and may be short by that many at most.
        println!("  the agent lost {lost} records: its counts are lower bounds");
        assert!(counted_all <= logged_all && logged_all - counted_all <= lost);
        assert!(counted_ours <= logged_ours && logged_ours - counted_ours <= lost);
    }
    if let (Some(d), Some(_)) = (warnings_delta, &_burst) {
        assert_eq!(
            d, kernel_logged.ext4_warnings_ours,
            "ext4's warning_count vs its warnings in /dev/kmsg"
        );
    }
    let (code, _) = a.term();
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}
