//! The `kmsg` check: reads the kernel log and turns known problems into findings that name a path and a pod: a
//! full ext4 directory index resolved to its directory and the container that writes there, OOM kills resolved
//! from their memory cgroup, hung tasks resolved from their pid, and the rest of node-problem-detector's kernel
//! monitor (I/O errors, read-only remounts, XFS shutdowns, oopses, lockups, leaked network devices, memory errors).
//!
//! - [`record`]: one record, parsed from /dev/kmsg or from the text dmesg and journalctl print;
//! - [`reader`]: reading /dev/kmsg (all it holds, or following it) or text lines from a file or stdin;
//! - [`rules`]: matching, and folding bursts into groups;
//! - [`resolve`]: each group into a [`Finding`] that names a path and a pod.
//!
//! [`scan`] runs all three over a [`Source`] and returns a [`CheckOutput`]; [`scan_with`] hands findings over as
//! they settle, for `--follow`; [`follow_with`] does the same from a [`Follower`] kept between calls (the agent).
//! The check that `wonk scan`, `wonk kmsg` and the agent run over these is `checks::kmsg`.

pub mod reader;
pub mod record;
pub mod resolve;
pub mod rules;
mod search;

use crate::finding::{BlindSpot, CheckOutput, Finding};
use crate::owner::Attributor;
use reader::{KmsgOptions, ReadStats, Sink};
use record::Record;
use resolve::Resolver;
use rules::Engine;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use reader::{last_seq, Follower};

/// Where the kernel log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The node's /dev/kmsg (under `--host-root`): every record it still holds, then, with `follow`, new ones
    /// until [`Options::stop`] is set.
    DevKmsg { follow: bool },
    /// A file of text lines: saved `dmesg` (any time format), `journalctl -k`, kern.log, or raw kmsg records.
    File(PathBuf),
    /// The same, from standard input.
    Stdin,
}

/// How to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// /dev/kmsg only: look only at records with a greater sequence number (see [`last_seq`]).
    pub since_seq: Option<u64>,
    /// /dev/kmsg only: skip what the log holds now and start with the next record (useful with `follow`).
    pub from_end: bool,
    /// Ends a `follow` scan (checked at least every 200 ms); the groups still open are then reported.
    pub stop: Option<Arc<AtomicBool>>,
    /// With `follow`: a group is reported once it has been quiet this long, so a burst becomes one finding.
    pub settle: Duration,
    /// A saved log (a file or standard input): look up the devices, inodes and pids it names on this host even
    /// without evidence that it is from this host's current boot.
    pub resolve_here: bool,
    /// Only records logged at or after this time (µs since boot, the kernel's clock); others are counted in
    /// `outside_window`.
    pub min_ts_usec: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            since_seq: None,
            from_end: false,
            stop: None,
            settle: Duration::from_secs(5),
            resolve_here: false,
            min_ts_usec: None,
        }
    }
}

/// Reads `source` to its end (or, following, until stopped) and returns every finding, the counters in `stats`
/// and what could not be seen in `blind_spots`.
pub fn scan(owners: &Attributor, source: &Source, opts: &Options) -> CheckOutput {
    let mut found = Vec::new();
    let (mut out, _) = scan_inner(owners, Input::Source(source), opts, &mut |f| found.push(f));
    out.findings = found;
    out
}

/// Like [`scan`], but hands each finding to `emit` as soon as it is complete: when following, a group is
/// complete after [`Options::settle`] without new messages; otherwise at the end. The returned output holds the
/// counters and blind spots, and no findings. Following /dev/kmsg, the log is read on a thread of its own (a
/// [`Follower`]), so that resolving and emitting findings never holds up reading.
pub fn scan_with(
    owners: &Attributor,
    source: &Source,
    opts: &Options,
    emit: &mut dyn FnMut(Finding),
) -> CheckOutput {
    scan_inner(owners, Input::Source(source), opts, emit).0
}

/// Like [`scan_with`] following /dev/kmsg, but from a [`Follower`] that the caller keeps between calls (the
/// agent's periods), so that the log is read without a gap between them; `since_seq` and `from_end` of `opts`
/// are the follower's business. Returns when `opts.stop` is set; the groups still open are then reported.
pub fn follow_with(
    owners: &Attributor,
    follower: &mut Follower,
    opts: &Options,
    emit: &mut dyn FnMut(Finding),
) -> CheckOutput {
    scan_inner(owners, Input::Follower(follower), opts, emit).0
}

enum Input<'a> {
    Source(&'a Source),
    Follower(&'a mut Follower),
}

/// Like [`scan`], but also returns the error that ended reading, if any, so that a caller can tell a log it may
/// not read (no CAP_SYSLOG, no /dev/kmsg) from one that failed.
pub fn scan_all(
    owners: &Attributor,
    source: &Source,
    opts: &Options,
) -> (CheckOutput, Option<io::Error>) {
    let mut found = Vec::new();
    let (mut out, err) = scan_inner(owners, Input::Source(source), opts, &mut |f| found.push(f));
    out.findings = found;
    (out, err)
}

fn scan_inner(
    owners: &Attributor,
    input: Input<'_>,
    opts: &Options,
    emit: &mut dyn FnMut(Finding),
) -> (CheckOutput, Option<io::Error>) {
    let mut out = CheckOutput::default();
    let mut stats = ReadStats::default();
    let source_name = match &input {
        Input::Source(Source::File(p)) => Some(p.display().to_string()),
        Input::Source(Source::Stdin) => Some("standard input".to_string()),
        _ => None,
    };
    let (kmsg, follow) = match &input {
        Input::Source(Source::DevKmsg { follow }) => (true, *follow),
        Input::Follower(_) => (true, true),
        Input::Source(_) => (false, false),
    };
    let resolver = Resolver::new(
        owners,
        if kmsg { boot_usec() } else { None },
        kmsg || opts.resolve_here,
    );
    let mut engine = Engine::new();
    let stop = opts.stop.as_deref();
    let outside_window;
    let result = {
        let mut sink = EngineSink {
            engine: &mut engine,
            resolver: &resolver,
            follow,
            settle: opts.settle,
            emit: &mut *emit,
            min_ts_usec: opts.min_ts_usec,
            outside_window: 0,
        };
        let r = match input {
            Input::Source(Source::DevKmsg { follow: false }) => reader::read_kmsg(
                owners.host(),
                &KmsgOptions {
                    follow: false,
                    from_end: opts.from_end,
                    since_seq: opts.since_seq,
                    stop: opts.stop.clone(),
                },
                &mut stats,
                &mut sink,
            ),
            Input::Source(Source::DevKmsg { follow: true }) => {
                Follower::start(owners.host(), opts.since_seq, opts.from_end)
                    .and_then(|mut f| f.read(stop, &mut stats, &mut sink))
            }
            Input::Follower(f) => f.read(stop, &mut stats, &mut sink),
            Input::Source(Source::File(p)) => {
                std::fs::File::open(p).and_then(|f| reader::read_text(f, &mut stats, &mut sink))
            }
            Input::Source(Source::Stdin) => {
                reader::read_text(io::stdin().lock(), &mut stats, &mut sink)
            }
        };
        outside_window = sink.outside_window;
        r
    };
    if !resolver.here() && !stats.boot_ids.is_empty() {
        // A journal whose every boot marker names this host's current boot.
        let now = current_boot_id(owners.host());
        resolver.set_here(now.is_some_and(|id| stats.boot_ids.iter().all(|b| *b == id)));
    }
    let mut emitted = 0u64;
    for g in engine.take_all() {
        emitted += 1;
        emit(resolver.finding(&g));
    }
    if !resolver.here() && (emitted > 0 || engine.matched() > 0) {
        out.blind_spots.push(BlindSpot::new(
            "kmsg",
            "the devices, inodes and pids the saved log names",
            "not looked up on this host: nothing shows that the log is from this host's current boot (a journal's \
             `-- Boot ID --` marker would), and elsewhere the same names are other things; \
             `wonk kmsg --resolve-here` looks them up anyway",
        ));
    }
    out.stats = vec![
        ("records_read".into(), stats.records),
        ("malformed".into(), stats.malformed),
        ("not_kernel".into(), stats.not_kernel),
        ("bare_lines".into(), stats.bare),
        ("oversized".into(), stats.oversized),
        ("overwritten".into(), stats.overwritten),
        ("records_lost".into(), stats.lost),
        ("records_dropped".into(), stats.dropped),
        ("skipped_old".into(), stats.skipped_old),
        ("outside_window".into(), outside_window),
    ];
    out.stats.extend(engine.stats());
    let (from_user, unknown) = engine.provenance();
    if from_user > 0 {
        out.blind_spots.push(BlindSpot::new(
            "kmsg",
            format!("{from_user} kernel log records written from user space"),
            "their facility is not the kernel's (a process wrote them to /dev/kmsg): they were dropped, since any \
             process that can open /dev/kmsg, a container's included, can forge them",
        ));
    }
    if unknown > 0 {
        out.blind_spots.push(BlindSpot::new(
            "kmsg",
            format!("the origin of {unknown} matched kernel log lines"),
            "the log's format does not carry the syslog facility (save it with `dmesg -r`, `dmesg -x` or from \
             /dev/kmsg to keep it), so lines a process wrote to /dev/kmsg cannot be told from the kernel's",
        ));
    }
    if stats.lost > 0 || stats.overwritten > 0 {
        out.blind_spots.push(BlindSpot::new(
            "kmsg",
            format!("{} kernel log records", stats.lost),
            "the kernel's ring buffer overwrote them before wonk read them (or wonk's queue of records read was \
             full); counts may be low",
        ));
    }
    for (what, why) in resolver.unresolved.take() {
        out.blind_spots.push(BlindSpot::new("kmsg", what, why));
    }
    if let (Some(name), Ok(())) = (&source_name, &result) {
        let not_understood = stats.malformed + stats.oversized;
        let prefixed = stats.records - stats.bare;
        if prefixed == 0 && engine.matched() == 0 && stats.records + not_understood > 0 {
            // Nothing says this is a kernel log, and nothing in it matched: not "a clean log".
            out.failed = Some(format!(
                "nothing in {name} was recognized as kernel log output: no line has a kernel log prefix (dmesg \
                 timestamp, `kernel:` tag, kmsg header) and none matched a rule ({} lines read as bare messages, \
                 {not_understood} not understood, {} from other programs)",
                stats.bare, stats.not_kernel
            ));
        } else if stats.records == 0 && not_understood == 0 {
            out.blind_spots.push(BlindSpot::new(
                "kmsg",
                name.clone(),
                format!(
                    "it holds no kernel log record ({} lines from other programs)",
                    stats.not_kernel
                ),
            ));
        } else {
            if not_understood > 0 {
                out.blind_spots.push(BlindSpot::new(
                    "kmsg",
                    format!("{not_understood} lines of {name}"),
                    "binary, or longer than 64 KiB: not read",
                ));
            }
            if stats.bare > 0 {
                out.blind_spots.push(BlindSpot::new(
                    "kmsg",
                    format!("{} lines of {name} without a kernel log prefix", stats.bare),
                    "read whole as kernel messages (as `dmesg -t` or `journalctl -o cat` prints them): their time \
                     and origin are unknown",
                ));
            }
        }
    }
    let err = match result {
        Ok(()) => None,
        Err(e) => {
            let what = match source_name {
                None => owners.host().path("/dev/kmsg").display().to_string(),
                Some(n) => n,
            };
            out.failed = Some(format!("cannot read the kernel log from {what}: {e}"));
            Some(e)
        }
    };
    (out, err)
}

struct EngineSink<'e, 'r, 'a> {
    engine: &'e mut Engine,
    resolver: &'r Resolver<'a>,
    follow: bool,
    settle: Duration,
    emit: &'e mut dyn FnMut(Finding),
    min_ts_usec: Option<u64>,
    outside_window: u64,
}

impl Sink for EngineSink<'_, '_, '_> {
    fn record(&mut self, r: &Record<'_>) {
        if let (Some(min), Some(ts)) = (self.min_ts_usec, r.ts_usec) {
            if ts < min {
                self.outside_window += 1;
                return;
            }
        }
        self.engine.push(r);
    }

    fn idle(&mut self) {
        if self.follow {
            for g in self.engine.take_settled(self.settle) {
                (self.emit)(self.resolver.finding(&g));
            }
        }
    }
}

/// This host's boot id, as journalctl prints it (32 hex digits).
fn current_boot_id(host: &crate::host::Host) -> Option<String> {
    let b = crate::host::read_bounded(&host.path("/proc/sys/kernel/random/boot_id"), 64).ok()?;
    record::boot_marker(format!("-- Boot {} --", String::from_utf8_lossy(&b).trim()).as_bytes())
}

/// The kernel log's time (µs since boot, CLOCK_MONOTONIC) `ago` before now; 0 when that is before boot.
pub fn usec_since_boot_before(ago: Duration) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    let now = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    now.saturating_sub(ago.as_micros() as u64)
}

/// The wall-clock time of boot in µs since the epoch, to date kmsg timestamps. printk's clock, like
/// CLOCK_MONOTONIC, stops during suspend, so dates after a suspend are early by its length (as in `dmesg -T`).
fn boot_usec() -> Option<i128> {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec that we own.
        (unsafe { libc::clock_gettime(clock, &mut ts) } == 0)
            .then(|| i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1000)
    };
    Some(now(libc::CLOCK_REALTIME)? - now(libc::CLOCK_MONOTONIC)?)
}

#[cfg(test)]
mod tests {
    use super::reader::{read_text, ReadStats};
    use super::record::Record;
    use super::rules::{Detail, Engine, Group, Rule};
    use std::collections::HashMap;

    /// Runs a fixture from tests/fixtures/kmsg through the text reader and the rules.
    fn fixture(name: &str) -> (Vec<Group>, ReadStats, HashMap<String, u64>) {
        let path = format!("{}/tests/fixtures/kmsg/{name}", env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut engine = Engine::new();
        let mut stats = ReadStats::default();
        read_text(file, &mut stats, &mut |r: &Record<'_>| engine.push(r)).unwrap();
        let counters = engine.stats().into_iter().collect();
        (engine.take_all(), stats, counters)
    }

    fn htree(g: &Group) -> (&str, Option<u64>, Option<u64>, Option<bool>) {
        match &g.detail {
            Detail::Htree {
                device,
                inode,
                levels,
                large_dir,
                ..
            } => (device, *inode, *levels, *large_dir),
            other => panic!("not an htree group: {other:?}"),
        }
    }

    /// The same real burst (3 failed creates on a 1 KiB-block ext4 without large_dir, recorded on this project's
    /// kernel; ext4's rate limit kept 5 of the 12 warning pairs) in every format it can be saved in.
    #[test]
    fn recorded_htree_burst_in_every_format() {
        for name in [
            "htree-loop0.kmsg",
            "htree-loop0.dmesg",
            "htree-loop0.dmesg-T",
            "htree-loop0.dmesg-r",
            "htree-loop0.dmesg-x",
        ] {
            let (groups, stats, counters) = fixture(name);
            assert_eq!((stats.records, stats.malformed), (10, 0), "{name}");
            assert_eq!(groups.len(), 1, "{name}: {groups:#?}");
            let g = &groups[0];
            assert_eq!(
                (g.rule, g.key.as_str(), g.count),
                (Rule::HtreeFull, "loop0:32769", 5)
            );
            assert_eq!(
                htree(g),
                ("loop0", Some(32769), Some(2), Some(false)),
                "{name}"
            );
            assert_eq!(counters["matched_htree_companion"], 5);
            match name {
                "htree-loop0.kmsg" => {
                    assert_eq!((g.first.seq, g.last.seq), (Some(498), Some(506)));
                    assert_eq!(g.first.ts_usec, Some(3_116_446_215));
                }
                "htree-loop0.dmesg-T" => {
                    assert_eq!(g.first.wall.as_deref(), Some("Fri Nov 27 18:22:55 2026"));
                    assert_eq!(g.first.ts_usec, None);
                }
                _ => assert_eq!(
                    (g.first.ts_usec, g.last.ts_usec),
                    (Some(3_116_446_215), Some(3_116_446_926))
                ),
            }
        }
    }

    /// The seed's 8 lines, as `journalctl -k` shows them (with a containerd line in between): one finding, count 4.
    #[test]
    fn seed_lines_from_the_journal() {
        let (groups, stats, _) = fixture("seed.journal");
        assert_eq!(
            (stats.records, stats.not_kernel, stats.malformed),
            (8, 1, 0)
        );
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].count, 4);
        assert_eq!(
            htree(&groups[0]),
            ("md1", Some(211566352), Some(2), Some(false))
        );
        assert_eq!(groups[0].first.wall.as_deref(), Some("Sep 06 14:14:36"));
    }

    /// A real memcg OOM kill (89 records: the header, its call trace, memory stats, the task table, the
    /// `oom-kill:` summary and the `Killed process` line) is one kill of one cgroup.
    #[test]
    fn recorded_memcg_oom_kill() {
        let (groups, stats, counters) = fixture("oom-memcg.kmsg");
        assert_eq!((stats.records, stats.malformed), (89, 0));
        assert_eq!(groups.len(), 1, "{groups:#?}");
        let g = &groups[0];
        let memcg = "/wonk-rec-30533/kubepods/burstable/pod834b7b00-d731-4186-803c-8c4a35a84627/41b8343f32f8623c7d20942813b4a48c72cc0d34ae7400000000000000000001";
        assert_eq!((g.rule, g.key.as_str(), g.count), (Rule::OomKill, memcg, 1));
        assert_eq!((g.first.seq, g.last.seq), (Some(494), Some(494)));
        let Detail::Oom {
            constraint,
            task,
            pids,
            uid,
            anon_rss_kb,
            total_vm_kb,
            ..
        } = &g.detail
        else {
            panic!()
        };
        assert_eq!(constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(
            (task.as_str(), pids.as_slice(), *uid),
            ("sh", &[16791][..], Some(0))
        );
        assert_eq!((*anon_rss_kb, *total_vm_kb), (Some(32000), Some(38948)));
        assert_eq!(counters["matched_oom_kill"], 2);
        assert_eq!(counters["matched_kernel_oops"], 0);
    }

    #[test]
    fn hung_task_reports_fold_per_task_with_their_trace() {
        let (groups, stats, _) = fixture("hung-task.dmesg-T");
        assert_eq!((stats.records, stats.malformed), (31, 0));
        let got: Vec<(&str, u64)> = groups.iter().map(|g| (g.key.as_str(), g.count)).collect();
        assert_eq!(got, [("containerd:1310", 2), ("php-fpm:2916472", 1)]);
        let Detail::Hung {
            blocked_secs,
            logged_stack,
            ..
        } = &groups[0].detail
        else {
            panic!()
        };
        assert_eq!(*blocked_secs, 245);
        assert_eq!(logged_stack.len(), 14, "{logged_stack:#?}");
        assert_eq!(logged_stack[5], "ovl_sync_fs+0x5d/0x90 [overlay]");
        assert_eq!(
            groups[0].first.wall.as_deref(),
            Some("Wed Sep  6 14:44:52 2023")
        );
        assert_eq!(
            groups[0].last.wall.as_deref(),
            Some("Wed Sep  6 14:46:55 2023")
        );
    }

    /// One line for each of node-problem-detector's default kernel-monitor rules, and the extra ones.
    #[test]
    fn every_npd_pattern_has_a_rule() {
        let (groups, stats, counters) = fixture("npd.dmesg");
        assert_eq!((stats.records, stats.malformed), (14, 0));
        for rule in Rule::ALL {
            let n = counters[rule.stat()];
            if rule >= Rule::BlockIoError {
                // Not among NPD's default rules: tests/fixtures/kmsg/corpus covers them.
                continue;
            }
            if rule == Rule::HtreeFull {
                assert_eq!(n, 0);
            } else {
                assert!(n >= 1, "{} matched nothing", rule.stat());
            }
        }
        let docker = groups.iter().find(|g| g.key == "docker:7").unwrap();
        assert_eq!(docker.rule, Rule::TaskHung);
        assert_eq!(groups.len(), 13, "{groups:#?}");
    }

    #[test]
    fn garbage_is_counted_and_skipped() {
        let (groups, stats, _) = fixture("garbage.txt");
        // Text in no known format is read whole (bare); "kern  :bogus : [ 1.0] x" has a dmesg stamp further in.
        assert_eq!((stats.records, stats.bare), (11, 6));
        assert_eq!(stats.malformed, 1);
        assert_eq!(stats.not_kernel, 1);
        assert_eq!(stats.oversized, 1);
        let got: Vec<(Rule, &str)> = groups.iter().map(|g| (g.rule, g.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Rule::HtreeFull, "md1:211566352"),
                (Rule::TaskHung, "\u{fffd}bad\u{fffd}:77"),
                (Rule::FsReadOnly, "vda"),
            ]
        );
    }

    /// Every fixture line, cut and spliced at pseudo-random points and sprinkled with bytes the parsers look
    /// for, goes through both parsers and the rules without a panic.
    #[test]
    fn mangled_lines_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kmsg");
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for d in [dir.to_string(), format!("{dir}/corpus")] {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    let data = std::fs::read(p).unwrap();
                    lines.extend(data.split(|&b| b == b'\n').map(<[u8]>::to_vec));
                }
            }
        }
        let specials = b"[]<>():;,.=#\\x -0123456789\xff\n\x1b{}+";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let mut engine = Engine::new();
        for _ in 0..100_000 {
            let a = &lines[next(lines.len())];
            let b = &lines[next(lines.len())];
            let mut m: Vec<u8> = a[..next(a.len() + 1)].to_vec();
            m.extend_from_slice(&b[next(b.len() + 1)..]);
            for _ in 0..next(4) {
                let at = next(m.len() + 1);
                m.insert(at, specials[next(specials.len())]);
            }
            if let super::record::Line::Record(r) = super::record::parse_line(&m) {
                engine.push(&r);
            }
            let mut plain = Vec::new();
            if super::record::strip_ansi(&m, &mut plain) {
                if let super::record::Line::Record(r) = super::record::parse_line(&plain) {
                    engine.push(&r);
                }
            }
            let _ = super::record::boot_marker(&m);
            if let Some(r) = super::record::parse_kmsg(&m) {
                engine.push(&r);
            }
            let raw = Record {
                message: std::borrow::Cow::Borrowed(&m),
                ..Record::default()
            };
            engine.push(&raw);
        }
        assert!(engine.matched() > 0);
    }
}
