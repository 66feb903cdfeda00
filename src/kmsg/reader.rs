//! Reading kernel log records: from `/dev/kmsg` (non-blocking, one record per `read()`, optionally following the
//! log until told to stop), or as text lines from a file or stdin. Memory stays bounded whatever the input: one
//! record buffer for kmsg, one capped line buffer for text.
//!
//! /dev/kmsg semantics (Documentation/ABI/testing/dev-kmsg): a fresh open starts at the oldest record the ring
//! buffer still holds; `EAGAIN` means the reader has caught up; `EPIPE` means records were overwritten before
//! they were read, and the next read goes on from the oldest record still held.

use super::record::{self, Line, Record};
use crate::host::Host;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// Text lines longer than [`MAX_LINE`].
    pub oversized: u64,
    /// `EPIPE` answers: times the ring buffer overwrote records before wonk read them.
    pub overwritten: u64,
    /// Records lost to overwriting, from the gaps in sequence numbers.
    pub lost: u64,
    /// Records at or before `since_seq`.
    pub skipped_old: u64,
    /// The sequence number of the last kmsg record read, even if skipped.
    pub last_seq: Option<u64>,
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
                let Some(r) = record::parse_kmsg(&buf[..n]) else {
                    stats.malformed += 1;
                    continue;
                };
                if let Some(seq) = r.seq {
                    if let Some(p) = prev.filter(|&p| seq > p + 1) {
                        stats.lost += seq - p - 1;
                    }
                    stats.last_seq = Some(seq);
                    if opts.since_seq.is_some_and(|s| seq <= s) {
                        stats.skipped_old += 1;
                        continue;
                    }
                    prev = Some(prev.map_or(seq, |p| p.max(seq)));
                }
                stats.records += 1;
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
    while let Some(line) = lines.next_line()? {
        match line {
            Some(l) => match record::parse_line(l) {
                Line::Record(r) => {
                    stats.records += 1;
                    sink.record(&r);
                }
                Line::Blank => {}
                Line::NotKernel => stats.not_kernel += 1,
                Line::Malformed => stats.malformed += 1,
            },
            None => stats.oversized += 1,
        }
    }
    sink.idle();
    Ok(())
}

/// A line splitter that never holds more than [`MAX_LINE`] bytes of one line.
struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Lines<R> {
    fn new(input: R) -> Lines<R> {
        Lines {
            input,
            buf: vec![0; 256 << 10],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// `Some(Some(line))`, `Some(None)` for an oversized line (skipped), `None` at the end.
    fn next_line(&mut self) -> io::Result<Option<Option<&[u8]>>> {
        let mut oversized = false;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let (s, e) = (self.start, self.start + i);
                self.start = e + 1;
                if oversized || e - s > MAX_LINE {
                    return Ok(Some(None));
                }
                return Ok(Some(Some(&self.buf[s..e])));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(if oversized { Some(None) } else { None });
                }
                let (s, e) = (self.start, self.end);
                self.start = self.end;
                if oversized || e - s > MAX_LINE {
                    return Ok(Some(None));
                }
                return Ok(Some(Some(&self.buf[s..e])));
            }
            if self.end - self.start >= MAX_LINE {
                oversized = true;
                self.start = self.end;
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
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
    fn text_lines_are_split_and_counted() {
        let (msgs, st) = collect(
            b"[ 1.000000] a\n\ngarbage\nNov 27 16:38:56 h sshd[1]: x\n[ 2.000000] b\r\n[ 3.000000] c",
        );
        assert_eq!(msgs, ["a", "b", "c"]);
        assert_eq!((st.records, st.malformed, st.not_kernel), (3, 1, 1));
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
        let input = b"[ 1.000000] one\n[ 2.000000] two\n";
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        read_text(Trickle(input), &mut st, &mut |r: &Record<'_>| {
            out.push(r.text().into_owned())
        })
        .unwrap();
        assert_eq!(out, ["one", "two"]);
    }
}
