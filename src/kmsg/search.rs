//! Byte searches sized for kernel messages: a line's first words, a field in a message of a hundred bytes or so.
//! memchr and memmem pay a setup for every call (dispatch, a searcher built for the needle) that such short
//! haystacks never win back; these look at eight bytes at a time in plain integer words instead.

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of every zero byte of `v`. The lowest bit set is exact; a borrow can flag a byte above a zero
/// one too, which callers either ignore (they take the lowest) or check.
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & (ONES << 7)
}

/// Eight bytes of `b` from `at`, as a little-endian word (`None` past the end).
#[inline(always)]
fn word(b: &[u8], at: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(w))
}

/// Where the first byte of `b` that is `x` or `y` is: for the first words of messages, a few bytes long, that
/// every line has.
#[inline]
pub(crate) fn find_either(b: &[u8], x: u8, y: u8) -> Option<usize> {
    let (xs, ys) = (ONES * u64::from(x), ONES * u64::from(y));
    let mut at = 0;
    while let Some(w) = word(b, at) {
        let hits = zero_bytes(w ^ xs) | zero_bytes(w ^ ys);
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == x || c == y)
        .map(|i| at + i)
}

/// Longest haystack [`find`] searches itself: a kernel message is at most about 1 KiB (printk's line limit).
const SHORT: usize = 1024;

/// Candidates [`find`] compares before it leaves the rest to memmem, whose time is linear whatever the bytes (a
/// hostile line of one repeated pair would otherwise be compared at every position).
const MAX_MISSES: u32 = 16;

/// The first occurrence of `needle` in `h`: the positions where the needle's first two bytes are, found eight at
/// a time, compared whole. Memmem builds a searcher for every call, which costs more than the search of a
/// message does; a matched line looks for several fields.
pub(crate) fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    let (&[a, b, ..], true) = (needle, h.len() <= SHORT) else {
        return memchr::memmem::find(h, needle);
    };
    let (aa, bb) = (ONES * u64::from(a), ONES * u64::from(b));
    let mut misses = 0;
    let mut at = 0;
    while let (Some(w), Some(next)) = (word(h, at), word(h, at + 1)) {
        let mut hits = zero_bytes(w ^ aa) & zero_bytes(next ^ bb);
        while hits != 0 {
            let i = at + hits.trailing_zeros() as usize / 8;
            if h[i..].starts_with(needle) {
                return Some(i);
            }
            misses += 1;
            if misses == MAX_MISSES {
                // Every position up to `i` has been ruled out.
                return memchr::memmem::find(&h[i + 1..], needle).map(|j| i + 1 + j);
            }
            hits &= hits - 1;
        }
        at += 8;
    }
    (at..h.len()).find(|&i| h[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random bytes from a small alphabet: the bytes looked for, their neighbours, and 0x00, 0x01 and 0xff (a
    /// borrow in [`zero_bytes`] flags a byte above a zero one).
    fn haystacks(alphabet: &[u8], max_len: u64, count: usize) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..count)
            .map(|_| {
                let len = next() % max_len;
                (0..len)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn find_either_finds_the_first() {
        let naive = |b: &[u8], x: u8, y: u8| b.iter().position(|&c| c == x || c == y);
        for b in haystacks(
            &[b' ', b':', b'!', b'9', 0, 1, 0xff, 0x1f, 0x3b],
            40,
            20_000,
        ) {
            assert_eq!(find_either(&b, b' ', b':'), naive(&b, b' ', b':'), "{b:?}");
            assert_eq!(find_either(&b, 0, 0xff), naive(&b, 0, 0xff), "{b:?}");
            assert_eq!(find_either(&b, 1, 1), naive(&b, 1, 1), "{b:?}");
        }
    }

    #[test]
    fn find_agrees_with_memmem() {
        let needles: [&[u8]; 8] = [
            b"",
            b"a",
            b"ab",
            b"aab",
            b"ba\x00",
            b"\x00\x01",
            b"abab",
            b" ab\xff",
        ];
        for h in haystacks(b"ab \x00\x01\xff", 1100, 20_000) {
            for n in needles {
                assert_eq!(find(&h, n), memchr::memmem::find(&h, n), "{h:?} {n:?}");
            }
        }
    }
}
