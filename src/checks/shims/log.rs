//! Why a shim leaked, from containerd's own log: `wonk shims --containerd-log FILE|-` reads containerd's log (plain
//! lines as containerd writes them or `journalctl -u containerd` prints them, or `journalctl -o export`) and attaches
//! to each leaked shim the lines that name one of its ids (its sandbox's and its bundles') and tell of a failure:
//! a TaskExit event containerd failed to handle, `context deadline exceeded`, a failed RemoveContainer or
//! RemovePodSandbox, any other error or warning. Bounded: the last [`LOG_LIMIT`] bytes of the log are read, the
//! first [`LINES_PER_SHIM`] matching lines of each shim are kept (the rest counted), each cut at [`LINE_LIMIT`].

use serde::Serialize;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most of a log that is read: its end, where the incident is.
pub const LOG_LIMIT: u64 = 64 << 20;
/// Lines kept per shim, the earliest first (the first failure is the cause; what follows repeats it).
pub const LINES_PER_SHIM: usize = 16;
/// Bytes of one line kept.
pub const LINE_LIMIT: usize = 2048;

/// What a log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineKind {
    /// containerd failed to handle the task's exit event.
    TaskExit,
    /// A RemoveContainer or RemovePodSandbox (or a task delete) that failed.
    RemoveFailed,
    /// `context deadline exceeded` in another line.
    DeadlineExceeded,
    /// Another error or warning naming the id.
    Error,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::TaskExit => "task-exit",
            LineKind::RemoveFailed => "remove-failed",
            LineKind::DeadlineExceeded => "deadline-exceeded",
            LineKind::Error => "error",
        }
    }
}

/// One line of containerd's log about a shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// When it was logged, as the log says it (`time="..."`, the journal's realtime stamp, or a syslog prefix).
    pub time: Option<String>,
    pub kind: LineKind,
    /// The line says `context deadline exceeded`.
    pub timeout: bool,
    /// The line (the journal's MESSAGE), cut at 2,048 bytes, invalid UTF-8 replaced.
    pub line: String,
}

/// The lines about one shim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShimLog {
    pub lines: Vec<LogLine>,
    /// Every matching line, kept or not.
    pub total: u64,
}

/// Where the log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn parse(s: &Path) -> Source {
        if s == Path::new("-") {
            Source::Stdin
        } else {
            Source::File(s.to_path_buf())
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "standard input".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// A log as read: its records, and how many bytes before them were not read.
#[derive(Debug, Default)]
pub struct Log {
    pub records: Vec<(Option<String>, Vec<u8>)>,
    pub skipped_bytes: u64,
}

/// Reads the end of a log ([`LOG_LIMIT`]). A file must be a regular file (a FIFO is never opened for reading).
pub fn read(src: &Source) -> io::Result<Log> {
    let (data, skipped) = match src {
        Source::Stdin => tail(io::stdin().lock())?,
        Source::File(p) => {
            let (fd, id) = crate::host::open_regular_at(&rustix::fs::CWD, p, u64::MAX)?;
            let mut f = std::fs::File::from(fd);
            let skip = id.size.saturating_sub(LOG_LIMIT);
            f.seek(SeekFrom::Start(skip))?;
            let mut data = Vec::new();
            f.take(LOG_LIMIT).read_to_end(&mut data)?;
            (data, skip)
        }
    };
    let mut data = data.as_slice();
    if skipped > 0 {
        // The first line read is a part of one.
        if let Some(i) = memchr::memchr(b'\n', data) {
            data = &data[i + 1..];
        }
    }
    Ok(Log {
        records: parse(data),
        skipped_bytes: skipped,
    })
}

/// The last [`LOG_LIMIT`] bytes of a stream, and how many came before them.
fn tail(mut r: impl Read) -> io::Result<(Vec<u8>, u64)> {
    let limit = LOG_LIMIT as usize;
    let mut buf = Vec::new();
    let mut skipped = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 2 * limit {
            let cut = buf.len() - limit;
            buf.drain(..cut);
            skipped += cut as u64;
        }
    }
    if buf.len() > limit {
        let cut = buf.len() - limit;
        buf.drain(..cut);
        skipped += cut as u64;
    }
    Ok((buf, skipped))
}

/// Records (time, message) of a journal export or of plain lines.
pub fn parse(data: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let head = &data[..data.len().min(4096)];
    let export = head.starts_with(b"__CURSOR=")
        || memchr::memmem::find(head, b"\n__REALTIME_TIMESTAMP=").is_some();
    if export {
        parse_export(data)
    } else {
        data.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| (line_time(l), l.to_vec()))
            .collect()
    }
}

/// `journalctl -o export`: entries of `NAME=value` lines separated by an empty line; a value that is not text is
/// `NAME`, a newline, its length (u64, little-endian) and its bytes, then a newline.
fn parse_export(mut data: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    let (mut msg, mut time): (Option<Vec<u8>>, Option<String>) = (None, None);
    while let Some(nl) = memchr::memchr(b'\n', data) {
        let field = &data[..nl];
        data = &data[nl + 1..];
        if field.is_empty() {
            if let Some(m) = msg.take() {
                let t = time.take().or_else(|| line_time(&m));
                out.push((t, m));
            }
            time = None;
            continue;
        }
        let (name, value): (&[u8], Vec<u8>) = match memchr::memchr(b'=', field) {
            Some(eq) => (&field[..eq], field[eq + 1..].to_vec()),
            None => {
                // Binary field: the length, the bytes, a newline.
                if data.len() < 8 {
                    break;
                }
                let len = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) as usize;
                let Some(v) = data.get(8..8usize.saturating_add(len)) else {
                    break;
                };
                let v = v.to_vec();
                data = data.get(8 + len + 1..).unwrap_or(&[]);
                (field, v)
            }
        };
        match name {
            b"MESSAGE" => msg = Some(value),
            b"__REALTIME_TIMESTAMP" => {
                time = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .map(|us| {
                        let t = crate::finding::utc(us.div_euclid(1_000_000));
                        format!(
                            "{}.{:06}Z",
                            t.trim_end_matches('Z'),
                            us.rem_euclid(1_000_000)
                        )
                    })
            }
            _ => {}
        }
    }
    if let Some(m) = msg {
        let t = time.or_else(|| line_time(&m));
        out.push((t, m));
    }
    out
}

/// The time a plain line gives: logrus' `time="..."`, else a leading RFC 3339 stamp, else a syslog prefix
/// (`Dec  6 07:58:01`).
fn line_time(l: &[u8]) -> Option<String> {
    if let Some(i) = memchr::memmem::find(l, b"time=\"") {
        let rest = &l[i + 6..];
        let end = memchr::memchr(b'"', rest)?;
        return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    let stamp = |n: usize| l.get(..n).map(|p| String::from_utf8_lossy(p).into_owned());
    if l.len() > 19 && l[..4].iter().all(u8::is_ascii_digit) && l[4] == b'-' && l[10] == b'T' {
        let end = memchr::memchr(b' ', l).unwrap_or(l.len());
        return stamp(end);
    }
    if l.len() > 15 && l[0].is_ascii_uppercase() && l[3] == b' ' && l[9] == b':' && l[12] == b':' {
        return stamp(15);
    }
    None
}

/// What a message is about, if it tells of a failure.
pub fn classify(m: &[u8]) -> Option<(LineKind, bool)> {
    let has = |s: &str| memchr::memmem::find(m, s.as_bytes()).is_some();
    let timeout = has("deadline exceeded");
    let failed = has("level=error") || has("level=warn") || has("failed") || has("error=");
    let kind = if has("TaskExit") && failed {
        LineKind::TaskExit
    } else if (has("RemoveContainer") || has("RemovePodSandbox") || has("delete task")) && failed {
        LineKind::RemoveFailed
    } else if timeout {
        LineKind::DeadlineExceeded
    } else if failed {
        LineKind::Error
    } else {
        return None;
    };
    Some((kind, timeout))
}

/// The lines of `log` that name one of `ids` and tell of a failure. Ids shorter than 12 characters are not
/// matched: they would match other text.
pub fn about(log: &Log, ids: &[&str]) -> Option<ShimLog> {
    let finders: Vec<memchr::memmem::Finder> = ids
        .iter()
        .filter(|i| i.len() >= 12)
        .map(|i| memchr::memmem::Finder::new(i.as_bytes()))
        .collect();
    if finders.is_empty() {
        return None;
    }
    let mut s = ShimLog::default();
    for (time, m) in &log.records {
        if !finders.iter().any(|f| f.find(m).is_some()) {
            continue;
        }
        let Some((kind, timeout)) = classify(m) else {
            continue;
        };
        s.total += 1;
        if s.lines.len() < LINES_PER_SHIM {
            let cut = &m[..m.len().min(LINE_LIMIT)];
            s.lines.push(LogLine {
                time: time.clone(),
                kind,
                timeout,
                line: String::from_utf8_lossy(cut).into_owned(),
            });
        }
    }
    (s.total > 0).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0c4a8e3b2d1f00112233445566778899aabbccddeeff0011223344556677";

    #[test]
    fn plain_lines_with_logrus_times() {
        let data = format!(
            "time=\"2026-12-06T07:58:01.123Z\" level=info msg=\"StopPodSandbox for \\\"{ID}\\\"\"\n\
             time=\"2026-12-06T07:58:11.200Z\" level=error msg=\"failed to handle container TaskExit event &TaskExit{{ContainerID:{ID},}}\" error=\"failed to stop container: context deadline exceeded\"\n\
             time=\"2026-12-06T07:58:12Z\" level=error msg=\"other\" id=zzz\n"
        );
        let log = Log {
            records: parse(data.as_bytes()),
            skipped_bytes: 0,
        };
        let s = about(&log, &[ID]).unwrap();
        assert_eq!(s.total, 1);
        assert_eq!(s.lines[0].kind, LineKind::TaskExit);
        assert!(s.lines[0].timeout);
        assert_eq!(s.lines[0].time.as_deref(), Some("2026-12-06T07:58:11.200Z"));
        assert!(about(&log, &["short"]).is_none());
    }

    #[test]
    fn journal_export_with_a_binary_message() {
        let msg =
            format!("level=error msg=\"RemoveContainer for \\\"{ID}\\\" failed\"\nsecond line");
        let mut data =
            b"__CURSOR=s=1\n__REALTIME_TIMESTAMP=1765007891200300\n_PID=5\nMESSAGE\n".to_vec();
        data.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        data.extend_from_slice(msg.as_bytes());
        data.extend_from_slice(
            b"\n\n__CURSOR=s=2\n__REALTIME_TIMESTAMP=1765007892000000\nMESSAGE=fine\n\n",
        );
        let recs = parse(&data);
        assert_eq!(recs.len(), 2);
        let log = Log {
            records: recs,
            skipped_bytes: 0,
        };
        let s = about(&log, &[ID]).unwrap();
        assert_eq!(s.lines[0].kind, LineKind::RemoveFailed);
        assert_eq!(
            s.lines[0].time.as_deref(),
            Some("2025-12-06T07:58:11.200300Z")
        );
        assert!(s.lines[0].line.contains("second line"));
    }

    #[test]
    fn truncated_export_does_not_panic() {
        for n in 0..40 {
            let d = b"__CURSOR=x\nMESSAGE\n\xff\xff\xff\xff\xff\xff\xff\xffab";
            let _ = parse(&d[..n.min(d.len())]);
        }
    }
}
