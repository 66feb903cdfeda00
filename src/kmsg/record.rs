//! One kernel log record, whichever way it was read: a `/dev/kmsg` record (`PRI,SEQ,TS_USEC,FLAGS;message` plus
//! ` KEY=VALUE` continuation lines), or a text line as printed by `dmesg` (`[ 1234.567890] msg`), `dmesg -T`
//! (`[Tue Nov 27 16:38:56 2026] msg`), `dmesg -r` (`<4>[ 1234.567890] msg`), `dmesg -x` (`kern  :warn  : [...]
//! msg`), `journalctl -k` (`Nov 27 16:38:56 host kernel: msg`, also `-o short-iso` and `-o short-precise`),
//! syslog's kern.log, or a raw kmsg record saved to a file.
//!
//! Parsing never panics and never fails a run: input that is none of these is [`Line::Malformed`], which the
//! reader counts and skips. Messages stay bytes: the kernel does not promise UTF-8.

use super::search::{find, find_either};
use std::borrow::Cow;

/// One record. Fields that the input format does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record<'a> {
    /// syslog facility (0 = kernel, 1 = user space writing to /dev/kmsg).
    pub facility: Option<u8>,
    /// syslog level, 0 (emerg) to 7 (debug).
    pub level: Option<u8>,
    /// The kernel's sequence number (kmsg only).
    pub seq: Option<u64>,
    /// Microseconds since boot (kmsg, dmesg).
    pub ts_usec: Option<u64>,
    /// Wall-clock time exactly as the text printed it (dmesg -T, journalctl, syslog); the node's local time. As
    /// read: [`Record::wall_text`] makes it text, for the few records that need it.
    pub wall: Option<&'a [u8]>,
    /// No known prefix: the whole line was taken as the message (`dmesg -t`, `journalctl -o cat`, console
    /// output). Such lines carry neither time nor facility.
    pub bare: bool,
    /// The kernel flagged the record as a continuation of the previous one (kmsg flag `c`).
    pub cont: bool,
    /// The message, with kmsg's `\xHH` escapes decoded.
    pub message: Cow<'a, [u8]>,
    /// kmsg's dictionary: its ` KEY=VALUE` continuation lines (`SUBSYSTEM=block`, `DEVICE=b7:0`) as read, for
    /// [`Record::fields`] to decode. Borrowed: a record is made for every line read, and a copy of a few small
    /// strings each time would cost as much as the rest of the record.
    pub dict: &'a [u8],
}

impl<'a> Record<'a> {
    /// The wall-clock stamp as text; bytes that are not UTF-8 (a Latin-1 locale's month names) are replaced.
    pub fn wall_text(&self) -> Option<Cow<'a, str>> {
        self.wall.map(String::from_utf8_lossy)
    }

    /// kmsg's dictionary, decoded: (`SUBSYSTEM`, `block`), (`DEVICE`, `b7:0`).
    pub fn fields(&self) -> impl Iterator<Item = (String, String)> + 'a {
        let decode = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
        self.dict.split(|&b| b == b'\n').filter_map(move |line| {
            let kv = line.strip_prefix(b" ")?;
            let eq = memchr::memchr(b'=', kv)?;
            Some((decode(&kv[..eq]), decode(&kv[eq + 1..])))
        })
    }

    /// The message for display (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.message)
    }

    /// True when the record was written by user space rather than the kernel (kmsg and `dmesg -r`/`-x` only).
    pub fn from_userspace(&self) -> bool {
        self.facility.is_some_and(|f| f != 0)
    }
}

/// What one text line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Record(Record<'a>),
    /// A blank line or a journalctl marker (`-- Boot 3f2a... --`, `-- No entries --`).
    Blank,
    /// A journal or syslog line from a program other than the kernel.
    NotKernel,
    /// None of the known formats.
    Malformed,
}

/// Parses one `/dev/kmsg` read: the header line and its continuation lines. `None` when it is not a record.
pub fn parse_kmsg(buf: &[u8]) -> Option<Record<'_>> {
    let (head, rest) = match memchr::memchr(b'\n', buf) {
        Some(i) => (&buf[..i], &buf[i + 1..]),
        None => (buf, &[][..]),
    };
    let mut r = parse_kmsg_header(head)?;
    r.dict = rest;
    Some(r)
}

/// `PRI,SEQ,TS_USEC,FLAGS[,more...];message`.
fn parse_kmsg_header(head: &[u8]) -> Option<Record<'_>> {
    let semi = memchr::memchr(b';', head)?;
    let mut parts = head[..semi].split(|&b| b == b',');
    let pri = num(parts.next()?)?;
    let seq = num(parts.next()?)?;
    let ts = num(parts.next()?)?;
    let flags = parts.next()?;
    if flags.is_empty() {
        return None;
    }
    let pri = u8::try_from(pri).ok()?;
    Some(Record {
        facility: Some(pri >> 3),
        level: Some(pri & 7),
        seq: Some(seq),
        ts_usec: Some(ts),
        wall: None,
        cont: flags.contains(&b'c'),
        message: unescape(&head[semi + 1..]),
        ..Record::default()
    })
}

/// Decodes kmsg's `\xHH` escapes (the kernel escapes non-printable bytes and the backslash itself).
pub fn unescape(b: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memmem::find(b, b"\\x").is_none() {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let (Some(h), Some(l)) = (
                b.get(i + 2).and_then(|&c| hex(c)),
                b.get(i + 3).and_then(|&c| hex(c)),
            ) {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A decimal number of 1 to 19 digits.
pub(crate) fn num(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// The UTF-8 byte order mark some editors and Windows tools put before the first line.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Copies `line` into `out` without ANSI escape sequences (`dmesg --color=always`, `-H`): CSI sequences
/// (`ESC [ params final`) and two-byte escapes. False (and `out` untouched) when the line holds no ESC.
#[inline]
pub fn strip_ansi(line: &[u8], out: &mut Vec<u8>) -> bool {
    if memchr::memchr(0x1b, line).is_none() {
        return false;
    }
    out.clear();
    let mut i = 0;
    while i < line.len() {
        if line[i] != 0x1b {
            out.push(line[i]);
            i += 1;
            continue;
        }
        i += 1;
        if line.get(i) == Some(&b'[') {
            i += 1;
            while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                i += 1;
            }
        }
        i += 1;
    }
    true
}

/// Parses one text line in any of the formats in this module's documentation. The trailing newline is optional.
/// ANSI escapes must already be gone ([`strip_ansi`]).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let line = trim_end(line);
    let line = line.strip_prefix(BOM).unwrap_or(line);
    let Some(&first) = line.first() else {
        return Line::Blank;
    };
    let known = match first {
        // Returned from where it is made: a line is too large a value to copy for every one.
        b'[' => {
            return match dmesg(line) {
                Some(s) => stamped(s, None),
                None => further_in(line),
            }
        }
        b'<' => syslog_pri(line),
        b'0'..=b'9' => digits_first(line),
        b'-' if line.starts_with(b"-- ") => Line::Blank,
        b' ' if kmsg_field(&line[1..]) => Line::Blank,
        b'A'..=b'Z' | b'a'..=b'z' => {
            if line.len() > 4 && line[3] == b' ' && month(&line[..3]) {
                short(line)
            } else if line.len() > 5 && line[3] == b' ' && weekday(&line[..3]) {
                short_full(line)
            } else if let Some(rest) = line.strip_prefix(b"kernel:") {
                tagged(rest)
            } else if line.starts_with(b"Message from syslogd@") {
                Line::Blank
            } else {
                decoded_levels(line)
            }
        }
        _ if line.iter().all(u8::is_ascii_whitespace) => return Line::Blank,
        _ => Line::Malformed,
    };
    match known {
        Line::Malformed => further_in(line),
        other => other,
    }
}

/// How far into a line an unknown prefix may reach before the kernel message.
const PREFIX_WINDOW: usize = 256;

/// A line in no known format: the kernel message after a `kernel:` tag or a dmesg timestamp further in (an
/// unknown prefix: a node name, a container runtime's log prefix, rsyslog's broadcast ` kernel:`), or talosctl's
/// `NODE: FACILITY: LEVEL: [TIME]: msg`; else the whole line as a bare message, if it is text.
fn further_in(line: &[u8]) -> Line<'_> {
    // Prefixes are short: the search is bounded, so a long line of brackets costs no more than a short one.
    let window = &line[..line.len().min(PREFIX_WINDOW)];
    if let Some(i) = find(window, b"kernel:") {
        if i == 0 || line[i - 1] == b' ' {
            return tagged(&line[i + 7..]);
        }
    }
    if let Some(l) = talos(line) {
        return l;
    }
    let mut from = 0;
    while let Some(o) = memchr::memchr(b'[', &window[from..]).map(|o| o + from) {
        if let Some(s) = dmesg(&line[o..]).filter(|s| s.ts_usec.is_some()) {
            return Line::Record(s.record(None));
        }
        from = o + 1;
    }
    // Text, not binary: no control bytes but tabs, some letters.
    let text =
        line.iter().all(|&c| c >= 0x20 || c == b'\t') && line.iter().any(u8::is_ascii_alphabetic);
    if !text {
        return Line::Malformed;
    }
    Line::Record(Record {
        bare: true,
        message: Cow::Borrowed(line),
        ..Record::default()
    })
}

/// After a `kernel:` tag: an optional space and dmesg timestamp, then the message.
fn tagged(rest: &[u8]) -> Line<'_> {
    let rest = trim_start(rest);
    if rest.first() == Some(&b'[') {
        if let Some(s) = dmesg(rest) {
            return Line::Record(s.record(None));
        }
    }
    Line::Record(Record {
        message: Cow::Borrowed(strip_caller(rest)),
        ..Record::default()
    })
}

/// talosctl dmesg: `172.20.0.2: kern:    info: [2021-10-13T13:50:49.046553263Z]: msg` (facility and level
/// named, as dmesg -x does).
fn talos(line: &[u8]) -> Option<Line<'_>> {
    let open = find(&line[..line.len().min(PREFIX_WINDOW)], b": [")?;
    let close = find(&line[open..], b"]: ")? + open;
    let stamp = &line[open + 3..close];
    if !(stamp.len() >= 10 && stamp[4] == b'-' && stamp.contains(&b'T')) {
        return None;
    }
    let mut parts = line[..open].rsplitn(3, |&c| c == b':');
    let level = level_code(trim(parts.next()?))?;
    let facility = facility_code(trim(parts.next()?))?;
    Some(Line::Record(Record {
        facility: Some(facility),
        level: Some(level),
        wall: Some(stamp),
        message: Cow::Borrowed(&line[close + 3..]),
        ..Record::default()
    }))
}

/// A line that starts with a digit: journalctl `-o short-iso` / rsyslog RFC 3339 (`2026-11-27T16:38:56+0000 host
/// kernel: msg`), `dmesg --time-format iso` (`2026-11-27T16:38:56,123456+00:00 msg`), year-first syslog (`2025
/// Jul 03 12:00:00 host kernel: msg`), `-o short-unix` (`1751544000.123456 host kernel: msg`), the console of
/// Talos's dashboard (`05/09/2024 11:12:20 msg`: day first, no host or tag; Talos's own lines among them are
/// read as messages too, and no rule matches them), or a raw kmsg record.
fn digits_first(line: &[u8]) -> Line<'_> {
    const CONSOLE: &[u8] = b"00/00/0000 00:00:00 ";
    if line.len() > CONSOLE.len()
        && CONSOLE
            .iter()
            .zip(line)
            .all(|(&shape, &c)| c == shape || (shape == b'0' && c.is_ascii_digit()))
    {
        return Line::Record(Record {
            wall: Some(&line[..CONSOLE.len() - 1]),
            message: Cow::Borrowed(strip_caller(&line[CONSOLE.len()..])),
            ..Record::default()
        });
    }
    if line.len() > 10 && line[..4].iter().all(u8::is_ascii_digit) {
        if line[4] == b'-' {
            return iso(line);
        }
        if line[4] == b' ' && line.len() > 8 && month(&line[5..8]) {
            // "2025 Jul 03 12:00:00 host ...": the stamp is three words.
            let mut sp = 4;
            for _ in 0..3 {
                sp = match memchr::memchr(b' ', &line[sp + 1..]) {
                    Some(i) => sp + 1 + i,
                    None => return Line::Malformed,
                };
                while line.get(sp + 1) == Some(&b' ') {
                    sp += 1;
                }
            }
            return after_stamp(line, sp);
        }
    }
    if let Some(sp) = memchr::memchr(b' ', line) {
        if seconds_to_usec(&line[..sp]).is_some() && line[..sp].len() > 11 {
            return after_stamp(line, sp);
        }
    }
    parse_kmsg_header(line).map_or(Line::Malformed, Line::Record)
}

fn weekday(d: &[u8]) -> bool {
    matches!(
        d,
        b"Mon" | b"Tue" | b"Wed" | b"Thu" | b"Fri" | b"Sat" | b"Sun"
    )
}

/// journalctl `-o short-full`: `Tue 2025-07-03 12:00:00 UTC host kernel: msg`.
fn short_full(line: &[u8]) -> Line<'_> {
    if !line[4].is_ascii_digit() {
        return decoded_levels(line);
    }
    let mut sp = 3;
    for _ in 0..3 {
        sp = match memchr::memchr(b' ', &line[sp + 1..]) {
            Some(i) => sp + 1 + i,
            None => return Line::Malformed,
        };
    }
    after_stamp(line, sp)
}

/// The boot id of journalctl's `-- Boot 3f2a...9c1e --` marker (32 hex digits, or a dashed UUID), normalized to
/// lower case without dashes.
pub fn boot_marker(line: &[u8]) -> Option<String> {
    let rest = trim_end(line).strip_prefix(b"-- Boot ")?;
    let id = rest.strip_suffix(b" --")?;
    let hex: Vec<u8> = id
        .iter()
        .filter(|&&c| c != b'-')
        .map(u8::to_ascii_lowercase)
        .collect();
    (hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(&hex).into_owned())
}

/// ` SUBSYSTEM=block`: a continuation line of a kmsg record saved to a file.
fn kmsg_field(b: &[u8]) -> bool {
    match memchr::memchr(b'=', b) {
        Some(eq) if eq > 0 => b[..eq]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'),
        _ => false,
    }
}

fn trim_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = b {
        b = rest;
    }
    b
}

fn month(m: &[u8]) -> bool {
    matches!(
        m,
        b"Jan"
            | b"Feb"
            | b"Mar"
            | b"Apr"
            | b"May"
            | b"Jun"
            | b"Jul"
            | b"Aug"
            | b"Sep"
            | b"Oct"
            | b"Nov"
            | b"Dec"
    )
}

/// A line that starts with a dmesg stamp, taken apart by [`dmesg`]: dmesg, or journalctl `-o short-monotonic`
/// (`[ 1234.567890] host kernel: msg`). `pri` comes from a `<N>` prefix before the stamp.
#[inline]
fn stamped(mut s: Stamped<'_>, pri: Option<u64>) -> Line<'_> {
    // A bracketed prefix that only looks like a wall-clock stamp (a program's `[2026-09-10T01:28:40Z ERROR tag]`),
    // then a dmesg line: the inner stamp is the kernel's.
    if s.ts_usec.is_none() && s.message.first() == Some(&b'[') {
        if let Some(inner) = dmesg(s.message).filter(|i| i.ts_usec.is_some()) {
            s = inner;
        }
    }
    // short-monotonic: "host kernel: msg", or "host ident[pid]: msg" from another program. A host name has no
    // colon, which most kernel messages' first word has ("IPv6:", "audit:").
    let head = &s.message[..s.message.len().min(72)];
    let first_space = find_either(head, b' ', b':').filter(|&i| i > 0 && head[i] == b' ');
    if let Some(sp) = first_space {
        let after = &s.message[sp + 1..];
        if let Some(m) = after.strip_prefix(b"kernel: ") {
            s.message = m;
        } else if program_tag(after) {
            return Line::NotKernel;
        }
    }
    Line::Record(s.record(pri))
}

/// `ident[pid]: ` at the start of `b`: a syslog program tag. Judged from the first word alone, which most lines
/// end within a few bytes.
fn program_tag(b: &[u8]) -> bool {
    let Some(end) = find_either(&b[..b.len().min(64)], b' ', b' ') else {
        return false;
    };
    let Some(w) = b[..end].strip_suffix(b"]:") else {
        return false;
    };
    let Some(open) = w.iter().position(|&c| c == b'[') else {
        return false;
    };
    open > 0
        && w.len() > open + 1
        && w[open + 1..].iter().all(u8::is_ascii_digit)
        && w[..open].iter().all(|c| c.is_ascii_graphic())
}

/// `[ 1234.567890] msg`, `[Tue Nov 27 16:38:56 2026] msg`, with an optional caller id (`[    T1] `); also the
/// stamps of `dmesg -d` (`[ 1.5 <   0.2>]`), `--time-format delta` (`[<   0.2>]`) and `-H`/`reltime`
/// (`[Nov27 16:38]`, then `[  +0.000072]`), which give no time since boot.
fn dmesg(line: &[u8]) -> Option<Stamped<'_>> {
    let mut s = Stamped {
        ts_usec: None,
        wall: None,
        message: &[],
    };
    let close = match plain_stamp(line) {
        Some((us, close)) => {
            s.ts_usec = Some(us);
            close
        }
        None => long_stamp(line, &mut s)?,
    };
    let msg = &line[close + 1..];
    s.message = strip_caller(msg.strip_prefix(b" ").unwrap_or(msg));
    Some(s)
}

/// A dmesg line taken apart: its time since boot or its wall-clock stamp, and the message after it.
struct Stamped<'a> {
    ts_usec: Option<u64>,
    wall: Option<&'a [u8]>,
    message: &'a [u8],
}

impl<'a> Stamped<'a> {
    /// The record, with the facility and level of `pri` (a `<N>` prefix) when there was one.
    #[inline]
    fn record(self, pri: Option<u64>) -> Record<'a> {
        let pri = pri.and_then(|p| u8::try_from(p).ok());
        Record {
            facility: pri.map(|p| p >> 3),
            level: pri.map(|p| p & 7),
            ts_usec: self.ts_usec,
            wall: self.wall,
            message: Cow::Borrowed(self.message),
            ..Record::default()
        }
    }
}

/// The stamp nearly every dmesg line has, `[ 1234.567890]` (spaces, 1 to 19 digits, a dot, 0 to 9 digits), read
/// in one pass: the time since boot in µs and the position of the `]`. `None` for any other shape, which
/// [`long_stamp`] reads.
// Always: every dmesg line goes through it, and with two callers the compiler would make it a call.
#[inline(always)]
fn plain_stamp(line: &[u8]) -> Option<(u64, usize)> {
    let mut i = 1;
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    let (secs, dot) = digits_at(line, i)?;
    if dot == i || dot - i > 19 || line[dot] != b'.' {
        return None;
    }
    i = dot + 1;
    // printk prints six digits and the `]`: read at once.
    let (frac, close) = match line
        .get(i..i + 8)
        .and_then(|w| six_digits_then_bracket(w.try_into().ok()?))
    {
        Some(frac) => (frac, i + 6),
        None => {
            let (frac, close) = digits_at(line, i)?;
            let digits = close - i;
            if digits > 9 || line[close] != b']' {
                return None;
            }
            let frac = if digits <= 6 {
                frac * POW10[6 - digits]
            } else {
                frac / POW10[digits - 6]
            };
            (frac, close)
        }
    };
    // The same 64-byte window as the long way.
    if close >= 64 {
        return None;
    }
    Some((secs.checked_mul(1_000_000)?.checked_add(frac)?, close))
}

/// The decimal digits of `line` from `i`: their value (wrapped past 19 digits, which callers refuse) and where
/// they end. `None` when the line ends with them.
#[inline(always)]
fn digits_at(line: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    loop {
        let d = line.get(i)?.wrapping_sub(b'0');
        if d > 9 {
            return Some((n, i));
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
}

/// Six ASCII digits then `]` at the start of `w` (its last byte is not looked at): their value.
#[inline]
fn six_digits_then_bracket(w: [u8; 8]) -> Option<u64> {
    const LOW6: u64 = 0x0000_FFFF_FFFF_FFFF;
    let w = u64::from_le_bytes(w);
    // A byte is a digit when its high nibble is 3 both as it is and with 6 added (0x30 to 0x39).
    let digits = (w & 0xF0F0_F0F0_F0F0) == 0x3030_3030_3030
        && (((w & LOW6) + 0x0606_0606_0606) & 0xF0F0_F0F0_F0F0) == 0x3030_3030_3030;
    if !digits || (w >> 48) as u8 != b']' {
        return None;
    }
    // The digits in the top six bytes (the first one in byte 2), then pairs, fours and eights combined.
    let v = (w & 0x0F0F_0F0F_0F0F) << 16;
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
}

/// Any stamp of [`dmesg`]'s documentation, into `r`: the position of its `]`.
fn long_stamp<'a>(line: &'a [u8], r: &mut Stamped<'a>) -> Option<usize> {
    // Every stamp fits in 64 bytes (see the 48-byte bound below). A plain loop: memchr's setup costs more than
    // the dozen bytes of a usual stamp.
    let close = line[..line.len().min(64)].iter().position(|&c| c == b']')?;
    let inside = trim(&line[1..close]);
    if let Some(us) = seconds_to_usec(inside) {
        r.ts_usec = Some(us);
    } else if let Some(us) = inside
        .ends_with(b">")
        .then(|| inside.split(|&c| c == b' ').next())
        .flatten()
        .and_then(seconds_to_usec)
    {
        r.ts_usec = Some(us);
    } else if inside.len() >= 3
        && ((inside[0] == b'<' && inside.ends_with(b">")) || inside[0] == b'+')
        && seconds_to_usec(trim(inside[1..].strip_suffix(b">").unwrap_or(&inside[1..]))).is_some()
    {
        // A delta from the previous line: no time of its own.
    } else if inside.len() >= 8 && inside.len() <= 48 && inside.contains(&b':') {
        r.wall = Some(inside);
    } else {
        return None;
    }
    Some(close)
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [c, rest @ ..] = b {
        if !c.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    b
}

/// `[    T123] ` or `[  C1] ` (printk caller ids) before the message; also the `c7    604 ` (CPU and pid) that
/// Qualcomm's Android kernels print after the stamp.
fn strip_caller(msg: &[u8]) -> &[u8] {
    if msg.first() == Some(&b'c') {
        return strip_cpu_pid(msg).unwrap_or(msg);
    }
    if msg.first() != Some(&b'[') {
        return msg;
    }
    let Some(close) = memchr::memchr(b']', msg).filter(|&c| c <= 16) else {
        return msg;
    };
    let id = trim(&msg[1..close]);
    let ok =
        id.len() >= 2 && matches!(id[0], b'T' | b'C') && id[1..].iter().all(u8::is_ascii_digit);
    if !ok {
        return msg;
    }
    let rest = &msg[close + 1..];
    rest.strip_prefix(b" ").unwrap_or(rest)
}

/// `c<cpu> <spaces><pid> ` at the start of `msg`: the rest, or `None` when `msg` does not start so.
fn strip_cpu_pid(msg: &[u8]) -> Option<&[u8]> {
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let cpu = digits(&msg[1..]);
    if !(1..=3).contains(&cpu) {
        return None;
    }
    let rest = &msg[1 + cpu..];
    let spaces = rest.iter().take_while(|&&c| c == b' ').count();
    let pid = digits(&rest[spaces..]);
    if spaces == 0 || !(1..=7).contains(&pid) || rest.get(spaces + pid) != Some(&b' ') {
        return None;
    }
    Some(&rest[spaces + pid + 1..])
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [c, rest @ ..] = b {
        if !c.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    while let [rest @ .., c] = b {
        if !c.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    b
}

const POW10: [u64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// `1234.567890` -> 1234567890 µs: 1 to 19 digits, a dot, and 0 to 9 digits. One pass: this runs for every line
/// of a saved dmesg.
fn seconds_to_usec(b: &[u8]) -> Option<u64> {
    let digit = |c: u8| c.wrapping_sub(b'0');
    let mut i = 0;
    let mut secs: u64 = 0;
    while let Some(&c) = b.get(i) {
        let d = digit(c);
        if d > 9 {
            break;
        }
        if i == 19 {
            return None;
        }
        secs = secs * 10 + u64::from(d);
        i += 1;
    }
    if i == 0 || b.get(i) != Some(&b'.') {
        return None;
    }
    let frac = &b[i + 1..];
    // "[  240.]": seen in reports with the fraction cut off.
    if frac.len() > 9 {
        return None;
    }
    let mut f: u64 = 0;
    for &c in frac {
        let d = digit(c);
        if d > 9 {
            return None;
        }
        f = f * 10 + u64::from(d);
    }
    let f = if frac.len() <= 6 {
        f * POW10[6 - frac.len()]
    } else {
        f / POW10[frac.len() - 6]
    };
    secs.checked_mul(1_000_000)?.checked_add(f)
}

/// `<4>[ 1234.567890] msg` (dmesg -r) or `<4>msg`.
fn syslog_pri(line: &[u8]) -> Line<'_> {
    let Some(close) = memchr::memchr(b'>', line).filter(|&c| c <= 5) else {
        return Line::Malformed;
    };
    let Some(pri) = num(&line[1..close]) else {
        return Line::Malformed;
    };
    let rest = &line[close + 1..];
    if rest.first() == Some(&b'[') {
        if let Some(Line::Record(r)) = dmesg(rest).map(|s| stamped(s, Some(pri))) {
            return Line::Record(r);
        }
    }
    let Ok(pri) = u8::try_from(pri) else {
        return Line::Malformed;
    };
    Line::Record(Record {
        facility: Some(pri >> 3),
        level: Some(pri & 7),
        message: Cow::Borrowed(rest),
        ..Record::default()
    })
}

/// `kern  :warn  : [ 1234.567890] msg` (dmesg -x).
fn decoded_levels(line: &[u8]) -> Line<'_> {
    let mut it = line.splitn(3, |&b| b == b':');
    let (Some(fac), Some(lvl), Some(rest)) = (it.next(), it.next(), it.next()) else {
        return Line::Malformed;
    };
    let (Some(fac), Some(lvl)) = (facility_code(trim(fac)), level_code(trim(lvl))) else {
        return Line::Malformed;
    };
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let pri = u64::from(fac) << 3 | u64::from(lvl);
    if rest.first() == Some(&b'[') {
        if let Some(s) = dmesg(rest) {
            return Line::Record(s.record(Some(pri)));
        }
    }
    Line::Record(Record {
        facility: Some(fac),
        level: Some(lvl),
        message: Cow::Borrowed(rest),
        ..Record::default()
    })
}

fn facility_code(b: &[u8]) -> Option<u8> {
    const NAMES: [&[u8]; 12] = [
        b"kern",
        b"user",
        b"mail",
        b"daemon",
        b"auth",
        b"syslog",
        b"lpr",
        b"news",
        b"uucp",
        b"cron",
        b"authpriv",
        b"ftp",
    ];
    NAMES.iter().position(|n| *n == b).map(|i| i as u8)
}

fn level_code(b: &[u8]) -> Option<u8> {
    const NAMES: [&[u8]; 8] = [
        b"emerg", b"alert", b"crit", b"err", b"warn", b"notice", b"info", b"debug",
    ];
    // talosctl spells some out.
    let b: &[u8] = match b {
        b"emergency" => b"emerg",
        b"critical" => b"crit",
        b"error" => b"err",
        b"warning" => b"warn",
        other => other,
    };
    NAMES.iter().position(|n| *n == b).map(|i| i as u8)
}

/// `Nov 27 16:38:56 host kernel: msg` (journalctl -k, syslog); the day may be space-padded and the time may have
/// a fraction (`-o short-precise`).
fn short(line: &[u8]) -> Line<'_> {
    // Month, day and time: "Nov 27 16:38:56" or "Nov  7 16:38:56.123456".
    let mut i = 4;
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    let day_start = i;
    while line.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == day_start || i - day_start > 2 || line.get(i) != Some(&b' ') {
        return Line::Malformed;
    }
    i += 1;
    let Some(sp) = find_either(&line[i..], b' ', b' ').map(|s| s + i) else {
        return Line::Malformed;
    };
    let time = &line[i..sp];
    if time.len() < 8 || time[2] != b':' || time[5] != b':' {
        return Line::Malformed;
    }
    after_stamp(line, sp)
}

/// `2026-11-27T16:38:56.123456+0000 host kernel: msg` (journalctl -o short-iso, rsyslog).
fn iso(line: &[u8]) -> Line<'_> {
    let Some(sp) = memchr::memchr(b' ', line) else {
        return Line::Malformed;
    };
    if !line[..sp].contains(&b'T') && !line[..sp].contains(&b':') {
        return Line::Malformed;
    }
    if line[..sp].contains(&b',') {
        // dmesg --time-format iso: "2026-11-27T16:38:56,123456+00:00 msg", no host or tag.
        return Line::Record(Record {
            wall: Some(&line[..sp]),
            message: Cow::Borrowed(strip_caller(&line[sp + 1..])),
            ..Record::default()
        });
    }
    after_stamp(line, sp)
}

/// The rest of a journal/syslog line after its timestamp (which ends at `sp`): `host ident: msg`.
fn after_stamp(line: &[u8], sp: usize) -> Line<'_> {
    let wall = &line[..sp];
    let rest = &line[sp + 1..];
    let Some(host_end) = find_either(rest, b' ', b' ') else {
        return Line::Malformed;
    };
    // Some syslog setups leave the host out: "Feb 23 03:28:16 kernel: msg".
    let rest = if &rest[..host_end] == b"kernel:" {
        rest
    } else {
        &rest[host_end + 1..]
    };
    let Some(colon) = find_either(rest, b':', b':') else {
        return Line::Malformed;
    };
    if &rest[..colon] != b"kernel" {
        // A program's tag has no space ("systemd[1]:"); text that does is some other prefix.
        if rest[..colon].contains(&b' ') {
            return Line::Malformed;
        }
        return Line::NotKernel;
    }
    let mut msg = &rest[colon + 1..];
    msg = msg.strip_prefix(b" ").unwrap_or(msg);
    let mut s = Stamped {
        ts_usec: None,
        wall: Some(wall),
        message: msg,
    };
    // syslog's kern.log keeps the kernel's own timestamp: "kernel: [ 1234.567890] msg".
    if msg.first() == Some(&b'[') {
        let stamp = plain_stamp(msg).or_else(|| {
            let close = memchr::memchr(b']', msg)?;
            Some((seconds_to_usec(trim(&msg[1..close]))?, close))
        });
        if let Some((us, close)) = stamp {
            s.ts_usec = Some(us);
            msg = &msg[close + 1..];
            msg = msg.strip_prefix(b" ").unwrap_or(msg);
        }
    }
    s.message = strip_caller(msg);
    Line::Record(s.record(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualcomm_cpu_and_pid_after_the_stamp() {
        let Line::Record(r) = parse_line(b"[   10.016001] c7    604 EXT4-fs error (device sda45): ext4_lookup:1599: inode #2: comm init: deleted inode referenced: 123") else {
            panic!("not a record");
        };
        assert_eq!(r.ts_usec, Some(10_016_001));
        assert!(
            r.message.starts_with(b"EXT4-fs error (device sda45)"),
            "{:?}",
            String::from_utf8_lossy(&r.message)
        );
        // A message that only starts with a c is left alone.
        let Line::Record(r) = parse_line(b"[    1.000000] cgroup: something 12 ") else {
            panic!("not a record");
        };
        assert!(r.message.starts_with(b"cgroup: "));
    }

    #[test]
    fn seconds_of_every_shape() {
        assert_eq!(seconds_to_usec(b"1234.567890"), Some(1_234_567_890));
        assert_eq!(seconds_to_usec(b"0.5"), Some(500_000));
        assert_eq!(seconds_to_usec(b"240."), Some(240_000_000));
        assert_eq!(seconds_to_usec(b"1.123456789"), Some(1_123_456));
        assert_eq!(
            seconds_to_usec(b"1.1234567890"),
            None,
            "at most 9 fraction digits"
        );
        assert_eq!(
            seconds_to_usec(b"9999999999999999999.0"),
            None,
            "overflows as µs"
        );
        assert_eq!(
            seconds_to_usec(b"99999999999999999999.0"),
            None,
            "20 digits"
        );
        for bad in [&b""[..], b".5", b"12", b"1.2x", b"a.1", b"1..2", b" 1.2"] {
            assert_eq!(
                seconds_to_usec(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The one-pass reader of the usual stamp agrees with the long way on every line it takes.
    #[test]
    fn plain_stamp_agrees_with_the_long_way() {
        let long = |line: &[u8]| {
            let mut s = Stamped {
                ts_usec: None,
                wall: None,
                message: &[],
            };
            long_stamp(line, &mut s).map(|close| (s.ts_usec, close))
        };
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for secs in [
            "0",
            "7",
            "12345",
            "1000",
            "9999999999999",
            "1844674407370",
            "18446744073709",
            "1234567890123456789",
            "12345678901234567890",
        ] {
            for frac in [
                "",
                "5",
                "123456",
                "000001",
                "999999",
                "1234567",
                "123456789",
                "1234567890",
                "12345a",
                "12 456",
            ] {
                for pad in ["", " ", "    ", &" ".repeat(50)] {
                    for tail in ["", " msg", "]", "  x", "\u{0}"] {
                        lines.push(format!("[{pad}{secs}.{frac}]{tail}").into_bytes());
                        lines.push(format!("[{pad}{secs}.{frac} ]{tail}").into_bytes());
                        lines.push(format!("[{pad}{secs}{frac}]{tail}").into_bytes());
                    }
                }
            }
        }
        let mut taken = 0;
        for line in &lines {
            // What it leaves, dmesg reads the long way.
            if let Some((us, close)) = plain_stamp(line) {
                taken += 1;
                let text = String::from_utf8_lossy(line);
                assert_eq!(long(line), Some((Some(us), close)), "{text:?}");
            }
        }
        assert!(taken > 100, "{taken}");
        assert_eq!(plain_stamp(b"[ 1234.567890] x"), Some((1_234_567_890, 13)));
        assert_eq!(plain_stamp(b"[ 0.000001] x"), Some((1, 10)));
        assert_eq!(six_digits_then_bracket(*b"012345]x"), Some(12_345));
        assert_eq!(six_digits_then_bracket(*b"999999] "), Some(999_999));
        for bad in [
            b"01234:]x",
            b"0123/5]x",
            b"012345 x",
            b"\xb012345]x",
            b"0:2345]x",
        ] {
            assert_eq!(six_digits_then_bracket(*bad), None, "{bad:?}");
        }
    }

    fn rec(line: &str) -> Record<'_> {
        match parse_line(line.as_bytes()) {
            Line::Record(r) => r,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn kmsg_record_with_fields_and_escapes() {
        let r = parse_kmsg(
            b"4,377,2388009252,-;EXT4-fs warning (device loop0): a\\x5cb\\x0ac\n SUBSYSTEM=block\n DEVICE=b7:0\nnot a field\n X\\x3d=a\\x3db\n",
        )
        .unwrap();
        assert_eq!(r.facility, Some(0));
        assert_eq!(r.level, Some(4));
        assert_eq!(r.seq, Some(377));
        assert_eq!(r.ts_usec, Some(2_388_009_252));
        assert!(!r.cont);
        assert_eq!(&r.message[..], b"EXT4-fs warning (device loop0): a\\b\nc");
        assert_eq!(
            r.fields().collect::<Vec<_>>(),
            vec![
                ("SUBSYSTEM".into(), "block".into()),
                ("DEVICE".into(), "b7:0".into()),
                ("X=".into(), "a=b".into()),
            ]
        );
        let r = parse_kmsg(b"12,9,10,c,caller=T42;hello").unwrap();
        assert_eq!((r.facility, r.level, r.cont), (Some(1), Some(4), true));
        assert_eq!(&r.message[..], b"hello");
    }

    #[test]
    fn kmsg_garbage_is_rejected() {
        for bad in [
            &b""[..],
            b";",
            b"4,1,2;no flags",
            b"x,1,2,-;msg",
            b"4,,2,-;msg",
            b"4,1,2,;msg",
            b"999,1,2,-;pri too large",
            b"4,1,99999999999999999999,-;ts overflow",
            b"4,1,2,- no semicolon",
            b"\xff\xfe,\x00;",
        ] {
            assert!(
                parse_kmsg(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(&unescape(b"\\x4")[..], b"\\x4");
        assert_eq!(&unescape(b"\\xzz\\x41")[..], b"\\xzzA");
    }

    #[test]
    fn dmesg_formats() {
        let r = rec("[ 2388.009252] EXT4-fs warning (device loop0): x\n");
        assert_eq!(r.ts_usec, Some(2_388_009_252));
        assert_eq!(r.text(), "EXT4-fs warning (device loop0): x");
        let r = rec("[Tue Nov 27 16:38:56 2026] INFO: task a:1 blocked");
        assert_eq!(r.wall_text().as_deref(), Some("Tue Nov 27 16:38:56 2026"));
        assert_eq!(r.ts_usec, None);
        assert_eq!(r.text(), "INFO: task a:1 blocked");
        let r = rec("<4>[    1.5] msg");
        assert_eq!(
            (r.level, r.facility, r.ts_usec),
            (Some(4), Some(0), Some(1_500_000))
        );
        let r = rec("[  123.000001][    T1] caller id");
        assert_eq!(r.text(), "caller id");
        let r = rec("kern  :warn  : [ 2.000000] decoded");
        assert_eq!((r.facility, r.level), (Some(0), Some(4)));
        assert_eq!(r.text(), "decoded");
        let r = rec("user  :notice: [ 2.000000] from user space");
        assert!(r.from_userspace());
        let r = rec("6,12,345,-;raw kmsg in a file");
        assert_eq!((r.seq, r.ts_usec), (Some(12), Some(345)));
        // A program's bracketed prefix before the dmesg line (github.com/Flux159/ragnarokoffline.app/issues/89).
        let r = rec("[2026-09-10T01:28:40.861261Z ERROR init_or_kernel] [   60.892060] EXT4-fs error (device vda): x");
        assert_eq!(r.ts_usec, Some(60_892_060));
        assert_eq!(r.text(), "EXT4-fs error (device vda): x");
    }

    #[test]
    fn journal_formats() {
        let r = rec("Nov 27 16:38:56 node-1 kernel: Buffer I/O error on dev sdb, logical block 0");
        assert_eq!(r.wall_text().as_deref(), Some("Nov 27 16:38:56"));
        assert_eq!(r.text(), "Buffer I/O error on dev sdb, logical block 0");
        let r = rec("Nov  7 16:38:56.123456 node-1 kernel: x");
        assert_eq!(r.wall_text().as_deref(), Some("Nov  7 16:38:56.123456"));
        let r = rec("Nov 27 16:38:56 node-1 kernel: [ 10.250000] kern.log keeps the timestamp");
        assert_eq!(r.ts_usec, Some(10_250_000));
        assert_eq!(r.text(), "kern.log keeps the timestamp");
        let r = rec("2026-11-27T16:38:56+0000 node-1 kernel: iso");
        assert_eq!(r.wall_text().as_deref(), Some("2026-11-27T16:38:56+0000"));
        assert_eq!(r.text(), "iso");
        assert_eq!(
            parse_line(b"Nov 27 16:38:56 node-1 systemd[1]: Started x."),
            Line::NotKernel
        );
        assert_eq!(parse_line(b"-- Boot 3f2a --"), Line::Blank);
        assert_eq!(parse_line(b" SUBSYSTEM=block"), Line::Blank);
        assert_eq!(parse_line(b"   \r\n"), Line::Blank);
    }

    #[test]
    fn garbage_lines_are_malformed_or_bare_not_fatal() {
        for bad in ["[1.5", "\u{0}\u{1}\u{2}", "1234"] {
            assert_eq!(parse_line(bad.as_bytes()), Line::Malformed, "{bad:?}");
        }
        assert_eq!(parse_line(b"\xff\xfe\xfd"), Line::Malformed);
        assert_eq!(rec("Nov xx 16:38:56 h kernel: x").text(), "x");
        // Text in no known format is read whole, as `dmesg -t` prints messages.
        for bare in [
            "garbage",
            "[unterminated",
            "[] empty",
            "[abc] no time",
            "<x>bad pri",
            "Nov 27 host",
            "2026-11-27Tnospace",
            "kern :nolevel: x",
            "<99999999>overflow",
            " lowercase=x",
            "[ 1.1234567890] frac too long",
        ] {
            let r = rec(bare);
            assert!(r.bare, "{bare:?}");
            assert_eq!(r.text(), bare);
        }
    }

    /// 64 KiB lines of brackets or of `kernel:` look-alikes (the prefix search is bounded to [`PREFIX_WINDOW`]
    /// bytes and a stamp's `]` to 64, so they cost what a short line does) give a bare message or nothing, never
    /// a stamp.
    #[test]
    fn long_lines_of_prefix_look_alikes() {
        for unit in [&b"["[..], b"[ 1", b"[]", b": [", b"xkernel:"] {
            let line: Vec<u8> = unit.iter().copied().cycle().take(64 << 10).collect();
            match parse_line(&line) {
                Line::Record(r) => assert!(r.bare && r.ts_usec.is_none(), "{unit:?}"),
                Line::Malformed => {}
                other => panic!("{unit:?}: {other:?}"),
            }
        }
    }

    fn clean(line: &[u8]) -> Record<'static> {
        let mut plain = Vec::new();
        let l = if strip_ansi(line, &mut plain) {
            plain
        } else {
            line.to_vec()
        };
        let l: &'static [u8] = Box::leak(l.into_boxed_slice());
        match parse_line(l) {
            Line::Record(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    /// Every text format of issue 14, one line each, with the message and stamp it must give.
    #[test]
    fn every_text_format() {
        let msg = "INFO: task a:1 blocked for more than 120 seconds.";
        /// A line, and the time since boot, the wall-clock stamp and the facility it must give.
        type Case<'a> = (&'a str, Option<u64>, Option<&'a str>, Option<u8>);
        let cases: &[Case<'_>] = &[
            // dmesg -t, journalctl -o cat, console output
            ("INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            // dmesg --time-format iso
            ("2024-01-15T10:23:45,123456+00:00 INFO: task a:1 blocked for more than 120 seconds.", None, Some("2024-01-15T10:23:45,123456+00:00"), None),
            // dmesg --time-format delta, dmesg -d
            ("[<    0.000123>] INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            ("[ 1234.567890 <    0.000123>] INFO: task a:1 blocked for more than 120 seconds.", Some(1_234_567_890), None, None),
            // dmesg -H / --time-format reltime
            ("[Nov27 16:38] INFO: task a:1 blocked for more than 120 seconds.", None, Some("Nov27 16:38"), None),
            ("[  +0.000072] INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            // bare kernel: prefix, rsyslog broadcast
            ("kernel: INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            (" kernel:[ 10.000000] INFO: task a:1 blocked for more than 120 seconds.", Some(10_000_000), None, None),
            (" kernel:INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            // RFC 3339 and year-first syslog
            ("2025-07-03T12:00:00.123456+00:00 node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", None, Some("2025-07-03T12:00:00.123456+00:00"), None),
            ("2025 Jul 03 12:00:00 node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", None, Some("2025 Jul 03 12:00:00"), None),
            // the Talos dashboard's console (github.com/siderolabs/talos/issues/9269), talosctl dmesg
            ("05/09/2024 11:12:20 INFO: task a:1 blocked for more than 120 seconds.", None, Some("05/09/2024 11:12:20"), None),
            ("172.20.0.2: kern:    info: [2021-10-13T13:50:49.046553263Z]: INFO: task a:1 blocked for more than 120 seconds.", None, Some("2021-10-13T13:50:49.046553263Z"), Some(0)),
            // journalctl -o short-full, short-unix, short-monotonic
            ("Tue 2025-07-03 12:00:00 UTC node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", None, Some("Tue 2025-07-03 12:00:00 UTC"), None),
            ("1751544000.123456 node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", None, Some("1751544000.123456"), None),
            ("[ 1234.567890] node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", Some(1_234_567_890), None, None),
            // an unknown prefix before a dmesg timestamp or a kernel: tag
            ("node-1 | [ 5.000000] INFO: task a:1 blocked for more than 120 seconds.", Some(5_000_000), None, None),
            ("2025-07-03 12:00:00 stdout F node-1 kernel: INFO: task a:1 blocked for more than 120 seconds.", None, None, None),
            // UTF-8 BOM
            ("\u{feff}[ 1.000000] INFO: task a:1 blocked for more than 120 seconds.", Some(1_000_000), None, None),
        ];
        for (line, ts, wall, facility) in cases {
            let r = clean(line.as_bytes());
            assert_eq!(r.text(), msg, "{line:?}");
            assert_eq!(r.ts_usec, *ts, "{line:?}");
            assert_eq!(r.wall_text().as_deref(), *wall, "{line:?}");
            assert_eq!(r.facility, *facility, "{line:?}");
        }
        // dmesg --color=always
        let r = clean(b"\x1b[32m[ 1.000000] \x1b[0m\x1b[33mINFO: task a:1 blocked for more than 120 seconds.\x1b[0m");
        assert_eq!((r.text().as_ref(), r.ts_usec), (msg, Some(1_000_000)));
        // dmesg -T in a Latin-1 locale: the stamp's bytes are replaced, the message stays.
        let r = clean(
            b"[Mi M\xe4r 27 16:38:56 2026] INFO: task a:1 blocked for more than 120 seconds.",
        );
        assert_eq!(r.text(), msg);
        assert_eq!(
            r.wall_text().as_deref(),
            Some("Mi M\u{fffd}r 27 16:38:56 2026")
        );
        // talosctl from user space
        let r = clean(b"10.5.0.2: user: warning: [2021-10-13T13:50:49.046553263Z]: forged");
        assert!(r.from_userspace());
        // short-monotonic lines of other programs are not the kernel's.
        assert_eq!(
            parse_line(b"[ 1234.567890] node-1 systemd[1]: Started x."),
            Line::NotKernel
        );
        assert_eq!(
            parse_line(b"Message from syslogd@node-1 at Jul  3 12:00:00 ..."),
            Line::Blank
        );
        assert_eq!(
            boot_marker(b"-- Boot 3f2a1b2c3d4e5f60718293a4b5c6d7e8 --").as_deref(),
            Some("3f2a1b2c3d4e5f60718293a4b5c6d7e8")
        );
        assert_eq!(boot_marker(b"-- No entries --"), None);
    }
}
