//! Reading kernel log records: from `/dev/kmsg` (non-blocking, one record per `read()`, optionally following the
//! log until told to stop), or as text lines from a file or stdin. Memory stays bounded whatever the input: one
//! record buffer for kmsg, one capped line buffer for text, and for a [`Follower`] a queue of at most
//! [`FOLLOW_QUEUE_BYTES`].
//!
//! A [`Follower`] reads /dev/kmsg on a thread of its own and queues the records, so that whatever its consumer
//! does between two records (resolving a finding walks /proc and reads a directory's index) never keeps it from
//! reading: the ring buffer is small (128 KiB by default, a tenth of a second at 10,000 lines a second) and what
//! the kernel overwrites before it is read is gone. A follower outlives its consumers, so that the agent's
//! periods read one stream without a gap between them.
//!
//! /dev/kmsg semantics (Documentation/ABI/testing/dev-kmsg): a fresh open starts at the oldest record the ring
//! buffer still holds; `EAGAIN` means the reader has caught up; `EPIPE` means records were overwritten before
//! they were read, and the next read goes on from the oldest record still held.

use super::record::{self, Line, Record};
use crate::host::Host;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The kernel rejects reads into buffers smaller than one record (about 8 KiB) with `EINVAL`.
pub const KMSG_BUF: usize = 16 << 10;
/// Longer text lines are counted as oversized and skipped.
pub const MAX_LINE: usize = 64 << 10;

/// What a reader saw, as counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadStats {
    /// Records handed on (after the `since_seq` filter).
    pub records: u64,
    /// Lines or kmsg reads in no known format.
    pub malformed: u64,
    /// Journal or syslog lines from programs other than the kernel.
    pub not_kernel: u64,
    /// Of the records, lines with no known prefix, read whole as the message (`dmesg -t`, `journalctl -o cat`).
    pub bare: u64,
    /// Text lines longer than [`MAX_LINE`].
    pub oversized: u64,
    /// `EPIPE` answers: times the ring buffer overwrote records before wonk read them.
    pub overwritten: u64,
    /// Records lost, from the gaps in sequence numbers: overwritten by the kernel before they were read, or (for a
    /// [`Follower`]) dropped because its queue was full.
    pub lost: u64,
    /// Of those, dropped by a [`Follower`] whose queue was full.
    pub dropped: u64,
    /// Records at or before `since_seq`.
    pub skipped_old: u64,
    /// The sequence number of the last kmsg record read, even if skipped.
    pub last_seq: Option<u64>,
    /// The boot ids a journal's `-- Boot ID --` markers named (distinct, at most 16), lower-case hex without
    /// dashes: the evidence that a saved log is from this host's current boot.
    pub boot_ids: Vec<String>,
}

/// Where records go.
pub trait Sink {
    fn record(&mut self, r: &Record<'_>);
    /// The reader has caught up with the log (kmsg) and may now wait for more.
    fn idle(&mut self) {}
}

impl<F: FnMut(&Record<'_>)> Sink for F {
    fn record(&mut self, r: &Record<'_>) {
        self(r)
    }
}

/// How to read /dev/kmsg.
#[derive(Debug, Clone, Default)]
pub struct KmsgOptions {
    /// Wait for new records after catching up, until `stop` is set.
    pub follow: bool,
    /// Start at the end of the log instead of the oldest record held.
    pub from_end: bool,
    /// Only hand on records with a sequence number greater than this.
    pub since_seq: Option<u64>,
    /// Set to end a `follow` read; checked at least every [`POLL_INTERVAL`].
    pub stop: Option<Arc<AtomicBool>>,
}

/// How long a following reader sleeps in `poll` before it looks at its stop flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Reads /dev/kmsg under the host root into `sink`, updating `stats` as it goes.
pub fn read_kmsg(
    host: &Host,
    opts: &KmsgOptions,
    stats: &mut ReadStats,
    sink: &mut impl Sink,
) -> io::Result<()> {
    let mut f = open_kmsg(host)?;
    if opts.from_end {
        // SAFETY: lseek on a file descriptor we own; no memory is involved.
        if unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let stopped = || {
        opts.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    let mut buf = vec![0u8; KMSG_BUF];
    let mut prev = opts.since_seq;
    loop {
        match f.read(&mut buf) {
            Ok(0) => {
                sink.idle();
                if !opts.follow || stopped() {
                    return Ok(());
                }
                wait_readable(&f)?;
            }
            Ok(n) => {
                let Some(r) = account(&buf[..n], opts.since_seq, &mut prev, stats) else {
                    continue;
                };
                sink.record(&r);
                if stats.records % 4096 == 0 && stopped() {
                    return Ok(());
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EPIPE) => stats.overwritten += 1,
                Some(libc::EAGAIN) => loop {
                    sink.idle();
                    if !opts.follow || stopped() {
                        return Ok(());
                    }
                    if wait_readable(&f)? {
                        break;
                    }
                },
                _ => return Err(e),
            },
        }
    }
}

/// Parses one kmsg read and counts it: malformed, old (at or before `since`), or a record handed on, with the
/// records lost since `prev` (the last one handed on).
fn account<'b>(
    buf: &'b [u8],
    since: Option<u64>,
    prev: &mut Option<u64>,
    stats: &mut ReadStats,
) -> Option<Record<'b>> {
    let Some(r) = record::parse_kmsg(buf) else {
        stats.malformed += 1;
        return None;
    };
    if let Some(seq) = r.seq {
        if let Some(p) = prev.filter(|&p| seq > p + 1) {
            stats.lost += seq - p - 1;
        }
        stats.last_seq = Some(seq);
        if since.is_some_and(|s| seq <= s) {
            stats.skipped_old += 1;
            return None;
        }
        *prev = Some(prev.map_or(seq, |p| p.max(seq)));
    }
    stats.records += 1;
    Some(r)
}

/// The sequence number in a kmsg record's header (`PRI,SEQ,...;`), without parsing the rest.
fn kmsg_seq(buf: &[u8]) -> Option<u64> {
    let end = memchr::memchr(b';', buf)?;
    record::num(buf[..end].split(|&b| b == b',').nth(1)?)
}

/// Most bytes of records a [`Follower`] holds for its consumer; records that do not fit are dropped (and
/// counted, as gaps in sequence numbers, in [`ReadStats::lost`]).
pub const FOLLOW_QUEUE_BYTES: usize = 4 << 20;
/// What one queued record costs besides its bytes (its allocation and its place in the queue), for the budget.
const QUEUED_OVERHEAD: usize = 64;

/// What the reading thread and the consumer of a [`Follower`] share.
#[derive(Default)]
struct FollowShared {
    stop: AtomicBool,
    queued_bytes: AtomicUsize,
    overwritten: AtomicU64,
    skipped_old: AtomicU64,
    dropped: AtomicU64,
    error: Mutex<Option<io::Error>>,
}

/// Running totals of what a [`Follower`]'s consumers were handed and what was lost, over the follower's life;
/// another thread may read them while a consumer runs.
#[derive(Debug, Default)]
pub struct FollowTotals {
    pub records: AtomicU64,
    pub lost: AtomicU64,
}

/// /dev/kmsg read on a thread of its own into a bounded queue; see the module's documentation. Dropping it
/// stops the thread (within [`POLL_INTERVAL`]).
pub struct Follower {
    rx: Receiver<Vec<u8>>,
    shared: Arc<FollowShared>,
    totals: Arc<FollowTotals>,
    thread: Option<JoinHandle<()>>,
    /// The last sequence number handed on, for the gaps (across consumers).
    prev: Option<u64>,
    /// The shared counters already added to some consumer's [`ReadStats`].
    taken: (u64, u64, u64),
}

impl Follower {
    /// Opens /dev/kmsg under the host root (so that an error shows here) and starts reading: records after
    /// `since_seq`, or with `from_end` only those logged from now on.
    pub fn start(host: &Host, since_seq: Option<u64>, from_end: bool) -> io::Result<Follower> {
        let mut f = open_kmsg(host)?;
        if from_end {
            // SAFETY: lseek on a file descriptor we own; no memory is involved.
            if unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(FollowShared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kmsg-read".into())
            .spawn(move || {
                if let Err(e) = follow_thread(&mut f, since_seq, &tx, &sh) {
                    *sh.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            })?;
        Ok(Follower {
            rx,
            shared,
            totals: Arc::default(),
            thread: Some(thread),
            prev: since_seq,
            taken: (0, 0, 0),
        })
    }

    /// The running totals, to be read from another thread.
    pub fn totals(&self) -> Arc<FollowTotals> {
        self.totals.clone()
    }

    /// The sequence number of the last record handed on (or the `since_seq` it started after).
    pub fn last_seq(&self) -> Option<u64> {
        self.prev
    }

    /// Hands queued records to `sink`, waiting for more, until `stop` is set (checked when the queue is empty and
    /// every 4096 records); what is still queued then is for the next call. `stats` gets what this call saw. An
    /// error of the reading thread (which then ends) is returned once the queue is empty.
    pub fn read(
        &mut self,
        stop: Option<&AtomicBool>,
        stats: &mut ReadStats,
        sink: &mut impl Sink,
    ) -> io::Result<()> {
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let result = loop {
            let buf = match self.rx.try_recv() {
                Ok(b) => b,
                Err(TryRecvError::Empty) => {
                    sink.idle();
                    if stopped() {
                        break Ok(());
                    }
                    match self.rx.recv_timeout(POLL_INTERVAL) {
                        Ok(b) => b,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break Err(self.ended()),
                    }
                }
                Err(TryRecvError::Disconnected) => break Err(self.ended()),
            };
            self.shared
                .queued_bytes
                .fetch_sub(buf.len() + QUEUED_OVERHEAD, Ordering::Relaxed);
            let lost = stats.lost;
            let r = account(&buf, None, &mut self.prev, stats);
            self.totals
                .lost
                .fetch_add(stats.lost - lost, Ordering::Relaxed);
            if let Some(r) = r {
                self.totals.records.fetch_add(1, Ordering::Relaxed);
                sink.record(&r);
                if stats.records % 4096 == 0 && stopped() {
                    break Ok(());
                }
            }
        };
        let now = (
            self.shared.overwritten.load(Ordering::Relaxed),
            self.shared.skipped_old.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        );
        stats.overwritten += now.0 - self.taken.0;
        stats.skipped_old += now.1 - self.taken.1;
        stats.dropped += now.2 - self.taken.2;
        self.taken = now;
        result
    }

    fn ended(&self) -> io::Error {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| io::Error::other("the kernel log reader ended"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reading thread of a [`Follower`]: reads every record as soon as the kernel logs it, until stopped.
fn follow_thread(
    f: &mut File,
    since: Option<u64>,
    tx: &Sender<Vec<u8>>,
    sh: &FollowShared,
) -> io::Result<()> {
    let mut buf = vec![0u8; KMSG_BUF];
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match f.read(&mut buf) {
            Ok(0) => {
                wait_readable(f)?;
            }
            Ok(n) => {
                if let (Some(s), Some(seq)) = (since, kmsg_seq(&buf[..n])) {
                    if seq <= s {
                        sh.skipped_old.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                let cost = n + QUEUED_OVERHEAD;
                if sh.queued_bytes.load(Ordering::Relaxed) + cost > FOLLOW_QUEUE_BYTES {
                    // The consumer is behind: this record becomes a gap it counts as lost.
                    sh.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                sh.queued_bytes.fetch_add(cost, Ordering::Relaxed);
                if tx.send(buf[..n].to_vec()).is_err() {
                    return Ok(());
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EPIPE) => {
                    sh.overwritten.fetch_add(1, Ordering::Relaxed);
                }
                Some(libc::EAGAIN) => {
                    wait_readable(f)?;
                }
                _ => return Err(e),
            },
        }
    }
}

fn open_kmsg(host: &Host) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(host.path("/dev/kmsg"))
}

/// Waits up to [`POLL_INTERVAL`] for a record; true when there is one (or an overwrite to report).
fn wait_readable(f: &File) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and its count.
    let n = unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// The sequence number of the newest record /dev/kmsg holds now (`None` when it is empty). Tests and callers use it
/// to look only at what comes after.
pub fn last_seq(host: &Host) -> io::Result<Option<u64>> {
    let mut stats = ReadStats::default();
    read_kmsg(
        host,
        &KmsgOptions::default(),
        &mut stats,
        &mut |_: &Record<'_>| {},
    )?;
    Ok(stats.last_seq)
}

/// Reads text lines (dmesg, journalctl -k, kern.log, saved kmsg records) into `sink`.
pub fn read_text(input: impl Read, stats: &mut ReadStats, sink: &mut impl Sink) -> io::Result<()> {
    let mut lines = Lines::new(input);
    let mut plain = Vec::new();
    while let Some(line) = lines.next_line()? {
        match line {
            Some((l, escapes)) => {
                match record::parse_line(if escapes && record::strip_ansi(l, &mut plain) {
                    &plain
                } else {
                    l
                }) {
                    Line::Blank => {
                        if let Some(id) = record::boot_marker(l) {
                            if stats.boot_ids.len() < 16 && !stats.boot_ids.contains(&id) {
                                stats.boot_ids.push(id);
                            }
                        }
                    }
                    Line::Record(r) => {
                        stats.records += 1;
                        stats.bare += u64::from(r.bare);
                        sink.record(&r);
                    }
                    Line::NotKernel => stats.not_kernel += 1,
                    Line::Malformed => stats.malformed += 1,
                }
            }
            None => stats.oversized += 1,
        }
    }
    sink.idle();
    Ok(())
}

/// A line as [`Lines`] hands it on: its bytes and whether they hold an ESC, or `None` for an oversized line
/// (skipped).
type TextLine<'a> = Option<(&'a [u8], bool)>;

/// The byte that starts an ANSI escape sequence (`dmesg --color=always`).
const ESC: u8 = 0x1b;

/// A line splitter that never holds more than [`MAX_LINE`] bytes of one line. It looks for escapes in the same
/// pass as for the end of the line, so that a line without them (nearly all) is not searched twice.
struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Where the search of the current line goes on: `buf[start..scan]` holds no newline.
    scan: usize,
    /// `buf[start..scan]` holds an ESC.
    escapes: bool,
}

impl<R: Read> Lines<R> {
    fn new(input: R) -> Lines<R> {
        Lines {
            input,
            buf: vec![0; 256 << 10],
            start: 0,
            end: 0,
            eof: false,
            scan: 0,
            escapes: false,
        }
    }

    /// The next line, `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<TextLine<'_>>> {
        let mut oversized = false;
        loop {
            loop {
                let rest = &self.buf[self.scan..self.end];
                // Past the line's first ESC, only its end is of interest.
                let found = if self.escapes {
                    memchr::memchr(b'\n', rest)
                } else {
                    memchr::memchr2(b'\n', ESC, rest)
                };
                let Some(i) = found else {
                    break;
                };
                let at = self.scan + i;
                self.scan = at + 1;
                if self.buf[at] == ESC {
                    self.escapes = true;
                    continue;
                }
                let (s, escapes) = (self.start, std::mem::take(&mut self.escapes));
                self.start = self.scan;
                if oversized || at - s > MAX_LINE {
                    return Ok(Some(None));
                }
                return Ok(Some(Some((&self.buf[s..at], escapes))));
            }
            self.scan = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(if oversized { Some(None) } else { None });
                }
                let (s, e, escapes) = (self.start, self.end, std::mem::take(&mut self.escapes));
                self.start = self.end;
                if oversized || e - s > MAX_LINE {
                    return Ok(Some(None));
                }
                return Ok(Some(Some((&self.buf[s..e], escapes))));
            }
            if self.end - self.start >= MAX_LINE {
                oversized = true;
                self.start = self.end;
                self.escapes = false;
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scan -= self.start;
                self.start = 0;
            }
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8]) -> (Vec<String>, ReadStats) {
        let mut out = Vec::new();
        let mut stats = ReadStats::default();
        read_text(input, &mut stats, &mut |r: &Record<'_>| {
            out.push(r.text().into_owned())
        })
        .unwrap();
        (out, stats)
    }

    #[test]
    fn kmsg_sequence_numbers_from_the_header_only() {
        assert_eq!(
            kmsg_seq(b"6,498,3116446215,-;a;b,c\n SUBSYSTEM=x"),
            Some(498)
        );
        assert_eq!(kmsg_seq(b"6,498"), None);
        assert_eq!(kmsg_seq(b"6;498,1,-;x"), None);
        assert_eq!(kmsg_seq(b""), None);
    }

    #[test]
    fn text_lines_are_split_and_counted() {
        let (msgs, st) = collect(
            b"[ 1.000000] a\n\ngarbage\nNov 27 16:38:56 h sshd[1]: x\n[ 2.000000] b\r\n[ 3.000000] c",
        );
        assert_eq!(msgs, ["a", "garbage", "b", "c"]);
        assert_eq!(
            (st.records, st.bare, st.malformed, st.not_kernel),
            (4, 1, 0, 1)
        );
    }

    #[test]
    fn oversized_lines_are_skipped_with_bounded_memory() {
        let mut input = b"[ 1.000000] before\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 5));
        input.extend(b"\n[ 2.000000] after\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE * 2));
        let (msgs, st) = collect(&input);
        assert_eq!(msgs, ["before", "after"]);
        assert_eq!(st.oversized, 2);
        assert_eq!(st.malformed, 0);
    }

    /// A reader that hands out one byte at a time, to cross every buffer boundary.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.split_first() {
                Some((&b, rest)) if !buf.is_empty() => {
                    buf[0] = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn short_reads_make_the_same_lines() {
        let input =
            b"[ 1.000000] one\n[ 2.000000] two\n\x1b[32m[ 3.000000] \x1b[0mthree\n[ 4.000000] four";
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        read_text(Trickle(input), &mut st, &mut |r: &Record<'_>| {
            out.push(r.text().into_owned())
        })
        .unwrap();
        assert_eq!(out, ["one", "two", "three", "four"]);
        assert_eq!(collect(input).0, out);
    }

    /// Escapes are stripped from the lines that hold them only, wherever they are in the line.
    #[test]
    fn escapes_found_with_the_line_ends() {
        let input =
            b"\x1b[33m[ 1.000000] a\x1b[0m\n[ 2.000000] b\n[ 3.000000] c\x1b[0m\n[ 4.000000] \x1b\n\x1b";
        let (msgs, st) = collect(input);
        assert_eq!(msgs, ["a", "b", "c", ""]);
        assert_eq!((st.records, st.malformed), (4, 0));
    }
}
