//! Byte helpers for matching kernel messages without regular expressions.

use super::*;

pub(super) fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

pub(super) use crate::kmsg::search::find;

/// Whether `needle` is in `h`.
pub(super) fn contains(h: &[u8], needle: &[u8]) -> bool {
    find(h, needle).is_some()
}

/// The bytes after the first occurrence of `needle`.
pub(super) fn after<'a>(h: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    find(h, needle).map(|i| &h[i + needle.len()..])
}

/// Leading decimal digits: (value, bytes used).
pub(super) fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    num(&b[..n]).map(|v| (v, n))
}

pub(super) fn number_after(h: &[u8], needle: &[u8]) -> Option<u64> {
    after(h, needle).and_then(|r| digits(r).map(|(n, _)| n))
}

pub(super) fn signed_after(h: &[u8], needle: &[u8]) -> Option<i64> {
    let r = after(h, needle)?;
    match r.strip_prefix(b"-") {
        Some(neg) => digits(neg).and_then(|(n, _)| i64::try_from(n).ok().map(|v| -v)),
        None => digits(r).and_then(|(n, _)| i64::try_from(n).ok()),
    }
}

/// The bytes up to `end` (or all).
pub(super) fn upto(b: &[u8], end: u8) -> &[u8] {
    memchr::memchr(end, b).map_or(b, |i| &b[..i])
}

pub(super) fn text(b: &[u8]) -> String {
    let mut s = display_bytes(b);
    truncate(&mut s, MAX_TEXT);
    s
}

/// Longest [`text`], in bytes.
const MAX_TEXT: usize = 256;

/// What [`text`] gives, without a copy when the bytes are UTF-8 and short enough to stay whole.
pub(super) fn text_cow(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) if s.len() <= MAX_TEXT => Cow::Borrowed(s),
        _ => Cow::Owned(text(b)),
    }
}
