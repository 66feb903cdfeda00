//! The hash ext4 files a directory entry under (linux fs/ext4/hash.c): the legacy hash, half-MD4 and TEA, each
//! over the name's bytes read as signed or unsigned chars, with the filesystem's `s_hash_seed`. The result has
//! its low bit clear: in index entries that bit marks a run of equal hashes continued in the next leaf.
//!
//! Pure: bytes in, a hash out, for any name (no length limit is assumed, no panic).

/// `s_hash_seed` from its 16 superblock bytes.
pub fn seed_from_bytes(b: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// `s_flags` bits that say how the kernel reads name bytes for the hash.
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
pub const FLAGS_UNSIGNED_HASH: u32 = 0x2;

/// The hash of a directory, as the kernel computes it: the dx_root's version (0 legacy, 1 half_md4, 2 tea),
/// turned into its unsigned variant (3, 4, 5) when the superblock says names hash unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirHash {
    /// 0 to 5; 6 (siphash) and others are not computed here.
    pub version: u8,
    pub seed: [u32; 4],
}

/// The version the kernel hashes with: the stored one, plus 3 for the unsigned variants when `s_flags` has
/// `FLAGS_UNSIGNED_HASH`. With neither flag set the kernel picks by the CPU's `char` (signed on x86), so this
/// takes signed.
pub fn effective_version(stored: u8, s_flags: u32) -> u8 {
    if stored <= 2 && s_flags & FLAGS_UNSIGNED_HASH != 0 && s_flags & FLAGS_SIGNED_HASH == 0 {
        stored + 3
    } else {
        stored
    }
}

const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
const DELTA: u32 = 0x9e37_79b9;

impl DirHash {
    /// The major hash of `name`, low bit clear; `None` for a version this does not compute (siphash, unknown).
    pub fn hash(&self, name: &[u8]) -> Option<u32> {
        let unsigned = matches!(self.version, 3..=5);
        let mut buf = if self.seed.iter().any(|&s| s != 0) {
            self.seed
        } else {
            DEFAULT_SEED
        };
        let h = match self.version {
            0 | 3 => legacy(name, unsigned),
            1 | 4 => {
                for chunk in chunks(name, 32) {
                    let mut input = [0u32; 8];
                    str2hashbuf(chunk, &mut input, unsigned);
                    half_md4(&mut buf, &input);
                }
                buf[1]
            }
            2 | 5 => {
                for chunk in chunks(name, 16) {
                    let mut input = [0u32; 4];
                    str2hashbuf(chunk, &mut input, unsigned);
                    tea(&mut buf, &input);
                }
                buf[0]
            }
            _ => return None,
        };
        let h = h & !1;
        // 0xfffffffe is the end-of-directory cookie of 32-bit readdir; the kernel moves names off it.
        Some(if h == 0x7fff_ffff << 1 {
            (0x7fff_ffff - 1) << 1
        } else {
            h
        })
    }
}

/// The name from each chunk's start to its end: the kernel passes the remaining length (not the chunk's) to
/// `str2hashbuf`, which pads by it.
fn chunks(name: &[u8], step: usize) -> impl Iterator<Item = &[u8]> {
    (0..name.len()).step_by(step).map(move |i| &name[i..])
}

fn byte(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        u32::from(b)
    } else {
        b as i8 as i32 as u32
    }
}

fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &c in name {
        let mut h = h1.wrapping_add(h0 ^ byte(c, unsigned).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// Packs up to `out.len() * 4` bytes of `msg` into words, four bytes each, every word started from a pad of the
/// remaining length; words past the name are the pad.
fn str2hashbuf(msg: &[u8], out: &mut [u32], unsigned: bool) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let word = |g: &[u8]| {
        g.iter()
            .fold(pad, |v, &c| byte(c, unsigned).wrapping_add(v << 8))
    };
    let n = msg.len().min(out.len() * 4);
    let (full, rest) = msg[..n].split_at(n / 4 * 4);
    let mut w = 0;
    for (o, g) in out.iter_mut().zip(full.chunks_exact(4)) {
        // Four bytes shift the pad out: the word is the bytes big-endian, less 256 << shift for each byte
        // read as negative (the top byte's correction wraps away).
        let v = u32::from_be_bytes([g[0], g[1], g[2], g[3]]);
        *o = if unsigned {
            v
        } else {
            let neg = |c: u8| u32::from(c >> 7);
            v.wrapping_sub(neg(g[1]) << 24)
                .wrapping_sub(neg(g[2]) << 16)
                .wrapping_sub(neg(g[3]) << 8)
        };
        w += 1;
    }
    if w < out.len() {
        out[w] = word(rest);
        w += 1;
    }
    for o in &mut out[w..] {
        *o = pad;
    }
}

fn tea(buf: &mut [u32; 4], input: &[u32; 4]) {
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let [a, b, c, d] = *input;
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn md4_f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}

fn md4_g(x: u32, y: u32, z: u32) -> u32 {
    (x & y).wrapping_add((x ^ y) & z)
}

fn md4_h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

/// One step: `a = rol(a + f(b, c, d) + x, s)`.
macro_rules! step {
    ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
        $a = $a
            .wrapping_add($f($b, $c, $d))
            .wrapping_add($x)
            .rotate_left($s)
    };
}

/// MD4's three rounds cut to eight steps each (linux lib/halfmd4.c), written out: names of the sampled leaves
/// are hashed by the tens of thousands.
fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let [mut a, mut b, mut c, mut d] = *buf;
    step!(md4_f, a, b, c, d, x[0], 3);
    step!(md4_f, d, a, b, c, x[1], 7);
    step!(md4_f, c, d, a, b, x[2], 11);
    step!(md4_f, b, c, d, a, x[3], 19);
    step!(md4_f, a, b, c, d, x[4], 3);
    step!(md4_f, d, a, b, c, x[5], 7);
    step!(md4_f, c, d, a, b, x[6], 11);
    step!(md4_f, b, c, d, a, x[7], 19);
    step!(md4_g, a, b, c, d, x[1].wrapping_add(K2), 3);
    step!(md4_g, d, a, b, c, x[3].wrapping_add(K2), 5);
    step!(md4_g, c, d, a, b, x[5].wrapping_add(K2), 9);
    step!(md4_g, b, c, d, a, x[7].wrapping_add(K2), 13);
    step!(md4_g, a, b, c, d, x[0].wrapping_add(K2), 3);
    step!(md4_g, d, a, b, c, x[2].wrapping_add(K2), 5);
    step!(md4_g, c, d, a, b, x[4].wrapping_add(K2), 9);
    step!(md4_g, b, c, d, a, x[6].wrapping_add(K2), 13);
    step!(md4_h, a, b, c, d, x[3].wrapping_add(K3), 3);
    step!(md4_h, d, a, b, c, x[7].wrapping_add(K3), 9);
    step!(md4_h, c, d, a, b, x[2].wrapping_add(K3), 11);
    step!(md4_h, b, c, d, a, x[6].wrapping_add(K3), 15);
    step!(md4_h, a, b, c, d, x[1].wrapping_add(K3), 3);
    step!(md4_h, d, a, b, c, x[5].wrapping_add(K3), 9);
    step!(md4_h, c, d, a, b, x[0].wrapping_add(K3), 11);
    step!(md4_h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        for v in 0..=7u8 {
            let h = DirHash {
                version: v,
                seed: [1, 2, 3, 4],
            };
            for len in [0usize, 1, 3, 4, 15, 16, 17, 31, 32, 33, 255, 1000] {
                let name: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
                assert_eq!(h.hash(&name).is_some(), v <= 5);
                if let Some(x) = h.hash(&name) {
                    assert_eq!(x & 1, 0);
                }
            }
        }
    }

    /// Values from `debugfs -R "dx_hash -h ALG -s SEED NAME"` (e2fsprogs), seed zero (the default) and a uuid.
    #[test]
    fn matches_debugfs() {
        let uuid = [
            0x4d, 0xce, 0x86, 0x67, 0xf0, 0x8e, 0x4d, 0xbe, 0xb7, 0xee, 0x76, 0x8a, 0x39, 0x80,
            0x62, 0x15,
        ];
        let seeded = seed_from_bytes(&uuid);
        let n40 = format!("{:040}", 7);
        let n100 = "q".repeat(100);
        let cases: [(u8, [u32; 4], &str, u32); 12] = [
            (0, [0; 4], "abc", 0x75afd992),
            (0, seeded, &n40, 0x2af0439e),
            (0, [0; 4], &n100, 0x7f637644),
            (1, [0; 4], "abc", 0xd196a868),
            (1, seeded, "abc", 0x6e47553e),
            (1, [0; 4], &n40, 0x136bd350),
            (1, seeded, &n40, 0x0853af2c),
            (1, seeded, &n100, 0xb3347330),
            (2, [0; 4], "abc", 0xb1435ec4),
            (2, seeded, "abc", 0x763b45da),
            (2, seeded, &n40, 0x58ec23d0),
            (2, [0; 4], &n100, 0xa5e4e9a6),
        ];
        for (version, seed, name, want) in cases {
            let got = DirHash { version, seed }.hash(name.as_bytes()).unwrap();
            assert_eq!(got, want, "version {version} name {name}");
        }
        // ASCII names hash the same signed and unsigned.
        let h = |v| {
            DirHash {
                version: v,
                seed: seeded,
            }
            .hash(b"abc")
        };
        assert_eq!((h(0), h(1), h(2)), (h(3), h(4), h(5)));
        // Bytes above 0x7f do not.
        let h = |v| {
            DirHash {
                version: v,
                seed: seeded,
            }
            .hash("\u{e9}t\u{e9}".as_bytes())
        };
        assert_ne!(h(1), h(4));
        assert_ne!(h(2), h(5));
        assert_ne!(h(0), h(3));
    }

    /// Full words equal the kernel's byte-by-byte packing, signed and unsigned.
    #[test]
    fn packing_matches_the_byte_loop() {
        for unsigned in [false, true] {
            for g in [
                [0u8, 0x80, 0xff, 0x7f],
                [0xe9, 0x74, 0xe9, 0x01],
                [0x41, 0x42, 0x43, 0x44],
            ] {
                let mut out = [0u32; 1];
                str2hashbuf(&g, &mut out, unsigned);
                let pad = 0x0404_0404u32;
                let want = g
                    .iter()
                    .fold(pad, |v, &c| byte(c, unsigned).wrapping_add(v << 8));
                assert_eq!(out[0], want, "{g:x?} unsigned {unsigned}");
            }
        }
    }

    #[test]
    fn unsigned_only_with_the_unsigned_flag() {
        assert_eq!(effective_version(1, FLAGS_UNSIGNED_HASH), 4);
        assert_eq!(effective_version(1, FLAGS_SIGNED_HASH), 1);
        assert_eq!(effective_version(2, 0), 2);
        assert_eq!(effective_version(6, FLAGS_UNSIGNED_HASH), 6);
    }
}
