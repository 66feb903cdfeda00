//! The blocks of an indexed ext4 directory: the dx_root (logical block 0), dx_node index blocks, and leaf blocks
//! of directory entries, parsed from bytes with every bound checked. A block that is not what it should be
//! gives a [`DxError`] that says what is wrong, never a panic: these bytes are read live from a device, may be
//! half-written by a concurrent split, and may be corrupt.
//!
//! Layout (little-endian; linux fs/ext4/namei.c): the dx_root starts with the `.` and `..` entries, then
//! dx_root_info at 0x18 and count/limit at 0x20; a dx_node starts with an empty 8-byte entry covering the
//! block, then count/limit at 0x08. Entries are {hash u32, block u32}; the first entry's hash field holds
//! {limit u16, count u16}. With metadata_csum a dx_tail {reserved u32, crc32c u32} follows `limit` entries and a
//! leaf ends in a 12-byte entry that holds the leaf's crc32c.

use super::crc32c;
use super::superblock::{le16, le32};
use std::fmt;

/// Directory-logical block numbers in index entries use the low 28 bits.
pub const BLOCK_MASK: u32 = 0x0fff_ffff;
/// The inode flag of an indexed directory (`EXT4_INDEX_FL`).
pub const INDEX_FL: u32 = 0x1000;
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
pub const ENCRYPT_FL: u32 = 0x800;
pub const CASEFOLD_FL: u32 = 0x4000_0000;

const ROOT_COUNT_OFFSET: usize = 0x20;
const NODE_COUNT_OFFSET: usize = 0x08;
const DX_TAIL: usize = 8;
const LEAF_TAIL: usize = 12;
const LEAF_TAIL_FILE_TYPE: u8 = 0xde;

/// What shapes a directory's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: usize,
    /// metadata_csum: index blocks carry a dx_tail, leaves a checksum entry.
    pub csum: bool,
    /// Casefolded and encrypted directories store an 8-byte hash in every entry, index nodes included.
    pub hash_in_dirent: bool,
}

impl Geometry {
    pub fn root_limit(&self) -> u16 {
        let csz = if self.csum { DX_TAIL } else { 0 };
        (self.block_size.saturating_sub(32 + csz) / 8) as u16
    }

    pub fn node_limit(&self) -> u16 {
        let csz = if self.csum { DX_TAIL } else { 0 };
        let fake = if self.hash_in_dirent { 16 } else { 8 };
        (self.block_size.saturating_sub(fake + csz) / 8) as u16
    }

    /// The bytes an entry with a name of `name_len` takes.
    pub fn rec_len(&self, name_len: usize) -> usize {
        let hash = if self.hash_in_dirent { 8 } else { 0 };
        (name_len + 8 + hash + 3) & !3
    }

    /// The end of the space entries may use in a leaf.
    fn leaf_end(&self) -> usize {
        self.block_size - if self.csum { LEAF_TAIL } else { 0 }
    }

    /// rec_len as stored; 64 KiB blocks need the kernel's encoding for lengths that do not fit 16 bits.
    fn decode_rec_len(&self, raw: u16) -> usize {
        if self.block_size < 65536 {
            return usize::from(raw);
        }
        if raw == 0xffff || raw == 0 {
            return self.block_size;
        }
        usize::from(raw & 0xfffc) | (usize::from(raw & 3) << 16)
    }
}

/// The leaf bytes a name of `name_len` takes in a directory without per-entry hashes: `(L + 11) & !3`.
pub fn rec_len(name_len: usize) -> usize {
    (name_len + 11) & !3
}

/// One index entry: names whose hash is at least `hash` (up to the next entry's) live under `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DxEntry {
    pub hash: u32,
    pub block: u32,
}

/// An index block, root or node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxBlock {
    pub count: u16,
    pub limit: u16,
    /// `count` entries, the first with hash 0.
    pub entries: Vec<DxEntry>,
    /// The stored dx_tail checksum (with metadata_csum), already verified.
    pub checksum: Option<u32>,
}

/// The dx_root: its index block and dx_root_info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxRoot {
    /// The inode numbers in `.` and `..`.
    pub dot_inode: u32,
    pub dotdot_inode: u32,
    pub hash_version: u8,
    pub info_length: u8,
    /// 0: the root points at leaves; 1: at dx_nodes that point at leaves; 2: two levels of dx_nodes.
    pub indirect_levels: u8,
    pub index: DxBlock,
}

/// A leaf block, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Live entries (inode != 0).
    pub live: u32,
    /// The name length of each live entry.
    pub name_lens: Vec<u8>,
    /// The largest free run a new entry could take: an unused entry's whole rec_len, or a live entry's
    /// rec_len beyond what its name needs.
    pub largest_gap: usize,
    /// Bytes that live entries need.
    pub used: usize,
}

impl Leaf {
    /// Whether a name of `name_len` fits in this leaf without a split.
    pub fn fits(&self, g: &Geometry, name_len: usize) -> bool {
        self.largest_gap >= g.rec_len(name_len)
    }
}

/// What is wrong with a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DxError {
    Truncated {
        have: usize,
        need: usize,
    },
    NotIndexBlock(&'static str),
    ReservedNotZero(u32),
    BadInfoLength(u8),
    UnknownHashVersion(u8),
    UnsupportedFlags(u8),
    TooDeep {
        levels: u8,
        max: u8,
    },
    BadLimit {
        limit: u16,
        expected: u16,
    },
    CountOverLimit {
        count: u16,
        limit: u16,
    },
    NoEntries,
    NoRoomForTail {
        limit: u16,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    HashOrder {
        index: usize,
    },
    BadDirent {
        offset: usize,
        why: &'static str,
    },
    NoChecksumTail,
    /// An index entry points past the end of the directory.
    BeyondEnd {
        block: u32,
        blocks: u64,
    },
    /// An index entry points at an index block above it on its own path: following it would go round.
    Loop {
        block: u32,
    },
    /// An index entry points at a block that another entry of the index already points at.
    ReferencedTwice {
        block: u32,
    },
    /// The block is not mapped on disk.
    Hole,
}

impl fmt::Display for DxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DxError::Truncated { have, need } => write!(f, "truncated: {have} of {need} bytes"),
            DxError::NotIndexBlock(why) => write!(f, "not an index block: {why}"),
            DxError::ReservedNotZero(v) => write!(f, "dx_root_info reserved_zero is {v:#x}"),
            DxError::BadInfoLength(l) => write!(f, "dx_root_info info_length {l}, not 8"),
            DxError::UnknownHashVersion(v) => write!(f, "unknown hash version {v}"),
            DxError::UnsupportedFlags(v) => write!(f, "unsupported dx_root_info flags {v:#x}"),
            DxError::TooDeep { levels, max } => write!(
                f,
                "indirect_levels {levels}, but this filesystem allows {} at most",
                max - 1
            ),
            DxError::BadLimit { limit, expected } => {
                write!(f, "limit {limit}, expected {expected} for this block size")
            }
            DxError::CountOverLimit { count, limit } => write!(f, "count {count} > limit {limit}"),
            DxError::NoEntries => write!(f, "count is 0"),
            DxError::NoRoomForTail { limit } => {
                write!(f, "limit {limit} leaves no room for the dx_tail checksum")
            }
            DxError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            DxError::HashOrder { index } => {
                write!(f, "entry {index} has a hash below the entry before it")
            }
            DxError::BadDirent { offset, why } => {
                write!(f, "bad directory entry at offset {offset}: {why}")
            }
            DxError::NoChecksumTail => {
                write!(f, "metadata_csum is on but the leaf has no checksum entry")
            }
            DxError::BeyondEnd { block, blocks } => {
                write!(
                    f,
                    "points at block {block}, but the directory has {blocks} blocks"
                )
            }
            DxError::Loop { block } => {
                write!(
                    f,
                    "points at block {block}, an index block above it on its own path (a loop)"
                )
            }
            DxError::ReferencedTwice { block } => {
                write!(
                    f,
                    "points at block {block}, which another index entry already points at (referenced twice)"
                )
            }
            DxError::Hole => write!(f, "not mapped on disk (a hole in the directory)"),
        }
    }
}

impl std::error::Error for DxError {}

/// The per-directory checksum seed: the filesystem seed continued over the inode number and generation.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c::update(fs_seed, &ino.to_le_bytes());
    crc32c::update(s, &generation.to_le_bytes())
}

fn need(b: &[u8], g: &Geometry) -> Result<(), DxError> {
    if b.len() != g.block_size || g.block_size < 1024 {
        return Err(DxError::Truncated {
            have: b.len(),
            need: g.block_size.max(1024),
        });
    }
    Ok(())
}

/// Parses logical block 0 of an indexed directory. `max_levels` is 2, or 3 with large_dir. With `seed` (the
/// inode's checksum seed) the dx_tail checksum is verified.
pub fn parse_root(
    b: &[u8],
    g: &Geometry,
    max_levels: u8,
    seed: Option<u32>,
) -> Result<DxRoot, DxError> {
    need(b, g)?;
    if g.decode_rec_len(le16(b, 4)) != 12 || b[6] != 1 || b[8] != b'.' {
        return Err(DxError::NotIndexBlock(
            "the first entry is not '.' with rec_len 12",
        ));
    }
    if g.decode_rec_len(le16(b, 16)) != g.block_size - 12 || b[18] != 2 || &b[20..22] != b".." {
        return Err(DxError::NotIndexBlock(
            "the second entry is not '..' covering the block",
        ));
    }
    let reserved = le32(b, 0x18);
    if reserved != 0 {
        return Err(DxError::ReservedNotZero(reserved));
    }
    let (hash_version, info_length, indirect_levels, flags) = (b[0x1c], b[0x1d], b[0x1e], b[0x1f]);
    if info_length != 8 {
        return Err(DxError::BadInfoLength(info_length));
    }
    if !matches!(hash_version, 0 | 1 | 2 | 6) {
        return Err(DxError::UnknownHashVersion(hash_version));
    }
    if flags & 1 != 0 {
        return Err(DxError::UnsupportedFlags(flags));
    }
    if indirect_levels >= max_levels {
        return Err(DxError::TooDeep {
            levels: indirect_levels,
            max: max_levels,
        });
    }
    let index = parse_index(b, g, ROOT_COUNT_OFFSET, g.root_limit(), seed)?;
    Ok(DxRoot {
        dot_inode: le32(b, 0),
        dotdot_inode: le32(b, 12),
        hash_version,
        info_length,
        indirect_levels,
        index,
    })
}

/// Whether logical block 0 of a directory has a dx_root's shape (`.` of 12 bytes, `..` covering the rest of the
/// block, dx_root_info with reserved_zero 0 and info_length 8), whatever the inode's index flag says.
pub fn looks_like_root(b: &[u8], g: &Geometry) -> bool {
    need(b, g).is_ok()
        && g.decode_rec_len(le16(b, 4)) == 12
        && b[6] == 1
        && b[8] == b'.'
        && g.decode_rec_len(le16(b, 16)) == g.block_size - 12
        && b[18] == 2
        && &b[20..22] == b".."
        && le32(b, 0x18) == 0
        && b[0x1d] == 8
}

/// Parses a dx_node block.
pub fn parse_node(b: &[u8], g: &Geometry, seed: Option<u32>) -> Result<DxBlock, DxError> {
    need(b, g)?;
    if le32(b, 0) != 0 || g.decode_rec_len(le16(b, 4)) != g.block_size {
        return Err(DxError::NotIndexBlock(
            "it does not start with an empty entry covering the block",
        ));
    }
    parse_index(b, g, NODE_COUNT_OFFSET, g.node_limit(), seed)
}

fn parse_index(
    b: &[u8],
    g: &Geometry,
    at: usize,
    expected: u16,
    seed: Option<u32>,
) -> Result<DxBlock, DxError> {
    let limit = le16(b, at);
    let count = le16(b, at + 2);
    if limit != expected {
        return Err(DxError::BadLimit { limit, expected });
    }
    if count > limit {
        return Err(DxError::CountOverLimit { count, limit });
    }
    if count == 0 {
        return Err(DxError::NoEntries);
    }
    // `limit == expected` keeps every entry (and the tail) inside the block.
    let checksum = match seed {
        Some(seed) if g.csum => Some(verify_dx_tail(b, at, count, limit, seed)?),
        _ => None,
    };
    let mut entries = Vec::with_capacity(usize::from(count));
    entries.push(DxEntry {
        hash: 0,
        block: le32(b, at + 4) & BLOCK_MASK,
    });
    for i in 1..usize::from(count) {
        let off = at + 8 * i;
        let hash = le32(b, off);
        // Equal neighbours are legal: a long run of colliding names can split twice at the same hash.
        if hash < entries[i - 1].hash {
            return Err(DxError::HashOrder { index: i });
        }
        entries.push(DxEntry {
            hash,
            block: le32(b, off + 4) & BLOCK_MASK,
        });
    }
    Ok(DxBlock {
        count,
        limit,
        entries,
        checksum,
    })
}

/// Checks a dx_tail: crc32c over the header and `count` entries, then the tail's reserved word and a zero in
/// place of the checksum. Returns the stored checksum.
fn verify_dx_tail(b: &[u8], at: usize, count: u16, limit: u16, seed: u32) -> Result<u32, DxError> {
    let tail = at + 8 * usize::from(limit);
    if tail + DX_TAIL > b.len() {
        return Err(DxError::NoRoomForTail { limit });
    }
    let size = at + 8 * usize::from(count);
    let mut c = crc32c::update(seed, &b[..size]);
    c = crc32c::update(c, &b[tail..tail + 4]);
    c = crc32c::update(c, &[0; 4]);
    let stored = le32(b, tail + 4);
    if stored != c {
        return Err(DxError::ChecksumMismatch {
            stored,
            computed: c,
        });
    }
    Ok(stored)
}

/// Walks a leaf block's entries by rec_len. With `seed` (and metadata_csum) the leaf checksum is verified.
pub fn parse_leaf(b: &[u8], g: &Geometry, seed: Option<u32>) -> Result<Leaf, DxError> {
    parse_leaf_names(b, g, seed, |_| {})
}

/// [`parse_leaf`], handing each live entry's name to `name` as it goes (before the leaf is known to be whole).
pub fn parse_leaf_names(
    b: &[u8],
    g: &Geometry,
    seed: Option<u32>,
    mut name: impl FnMut(&[u8]),
) -> Result<Leaf, DxError> {
    need(b, g)?;
    let end = g.leaf_end();
    if g.csum {
        let t = end;
        if le32(b, t) != 0
            || le16(b, t + 4) != 12
            || b[t + 6] != 0
            || b[t + 7] != LEAF_TAIL_FILE_TYPE
        {
            return Err(DxError::NoChecksumTail);
        }
        if let Some(seed) = seed {
            let computed = crc32c::update(seed, &b[..end]);
            let stored = le32(b, t + 8);
            if stored != computed {
                return Err(DxError::ChecksumMismatch { stored, computed });
            }
        }
    }
    let mut leaf = Leaf {
        live: 0,
        name_lens: Vec::new(),
        largest_gap: 0,
        used: 0,
    };
    let mut off = 0;
    while off < end {
        let bad = |why| DxError::BadDirent { offset: off, why };
        if off + 8 > end {
            return Err(bad("the entry header runs past the block"));
        }
        let inode = le32(b, off);
        let rlen = g.decode_rec_len(le16(b, off + 4));
        let name_len = usize::from(b[off + 6]);
        if rlen < 12 {
            return Err(bad("rec_len is below the minimum of 12"));
        }
        if rlen % 4 != 0 {
            return Err(bad("rec_len is not a multiple of 4"));
        }
        if off + rlen > end {
            return Err(bad("rec_len runs past the block"));
        }
        let need = g.rec_len(name_len);
        if inode != 0 {
            if rlen < need {
                return Err(bad("rec_len is too small for name_len"));
            }
            leaf.live += 1;
            leaf.name_lens.push(name_len as u8);
            // `rlen >= need` and `off + rlen <= end` keep the name inside the block.
            name(&b[off + 8..off + 8 + name_len]);
            leaf.used += need;
            leaf.largest_gap = leaf.largest_gap.max(rlen - need);
        } else {
            leaf.largest_gap = leaf.largest_gap.max(rlen);
        }
        off += rlen;
    }
    Ok(leaf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SEED: u32 = 0x1234_5678;

    pub(crate) fn geo(bs: usize, csum: bool) -> Geometry {
        Geometry {
            block_size: bs,
            csum,
            hash_in_dirent: false,
        }
    }

    fn put16(b: &mut [u8], off: usize, v: u16) {
        b[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn fill_index(
        b: &mut [u8],
        g: &Geometry,
        at: usize,
        limit: u16,
        entries: &[DxEntry],
        seed: u32,
    ) {
        put16(b, at, limit);
        put16(b, at + 2, entries.len() as u16);
        put32(b, at + 4, entries[0].block);
        for (i, e) in entries.iter().enumerate().skip(1) {
            put32(b, at + 8 * i, e.hash);
            put32(b, at + 8 * i + 4, e.block);
        }
        if g.csum {
            let tail = at + 8 * usize::from(limit);
            let mut c = crc32c::update(seed, &b[..at + 8 * entries.len()]);
            c = crc32c::update(c, &b[tail..tail + 4]);
            c = crc32c::update(c, &[0; 4]);
            put32(b, tail + 4, c);
        }
    }

    /// A dx_root as the kernel writes it.
    pub(crate) fn root_block(g: &Geometry, levels: u8, entries: &[DxEntry], seed: u32) -> Vec<u8> {
        let mut b = vec![0u8; g.block_size];
        put32(&mut b, 0, 12);
        put16(&mut b, 4, 12);
        b[6] = 1;
        b[7] = 2;
        b[8] = b'.';
        put32(&mut b, 12, 2);
        put16(&mut b, 16, (g.block_size - 12) as u16);
        b[18] = 2;
        b[19] = 2;
        b[20..22].copy_from_slice(b"..");
        b[0x1c] = 1;
        b[0x1d] = 8;
        b[0x1e] = levels;
        fill_index(&mut b, g, ROOT_COUNT_OFFSET, g.root_limit(), entries, seed);
        b
    }

    pub(crate) fn node_block(g: &Geometry, entries: &[DxEntry], seed: u32) -> Vec<u8> {
        let mut b = vec![0u8; g.block_size];
        put16(&mut b, 4, g.block_size as u16);
        fill_index(&mut b, g, NODE_COUNT_OFFSET, g.node_limit(), entries, seed);
        b
    }

    /// A leaf with the given name lengths packed from the start; the last entry takes the rest.
    pub(crate) fn leaf_block(g: &Geometry, names: &[usize], seed: u32) -> Vec<u8> {
        let mut b = vec![0u8; g.block_size];
        let end = g.leaf_end();
        let mut off = 0;
        for (i, &n) in names.iter().enumerate() {
            let rl = if i + 1 == names.len() {
                end - off
            } else {
                g.rec_len(n)
            };
            put32(&mut b, off, 100 + i as u32);
            put16(&mut b, off + 4, rl as u16);
            b[off + 6] = n as u8;
            b[off + 7] = 1;
            off += rl;
        }
        if names.is_empty() {
            put16(&mut b, 4, end as u16);
        }
        if g.csum {
            put16(&mut b, end + 4, 12);
            b[end + 7] = LEAF_TAIL_FILE_TYPE;
            let c = crc32c::update(seed, &b[..end]);
            put32(&mut b, end + 8, c);
        }
        b
    }

    fn entries(n: u32) -> Vec<DxEntry> {
        (0..n)
            .map(|i| DxEntry {
                hash: if i == 0 { 0 } else { i * 0x0100_0000 },
                block: i + 1,
            })
            .collect()
    }

    #[test]
    fn limits_match_the_measured_ones() {
        assert_eq!(
            (geo(1024, false).root_limit(), geo(1024, false).node_limit()),
            (124, 127)
        );
        assert_eq!(
            (geo(1024, true).root_limit(), geo(1024, true).node_limit()),
            (123, 126)
        );
        assert_eq!(
            (geo(4096, false).root_limit(), geo(4096, false).node_limit()),
            (508, 511)
        );
        assert_eq!(
            (geo(4096, true).root_limit(), geo(4096, true).node_limit()),
            (507, 510)
        );
        let cf = Geometry {
            hash_in_dirent: true,
            ..geo(4096, true)
        };
        assert_eq!((cf.root_limit(), cf.node_limit()), (507, 509));
        assert_eq!(rec_len(250), 260);
        assert_eq!(rec_len(8), 16);
        assert_eq!(cf.rec_len(8), 24);
    }

    #[test]
    fn parses_root_and_node_with_checksums() {
        for csum in [false, true] {
            let g = geo(1024, csum);
            let e = entries(14);
            let r = parse_root(&root_block(&g, 1, &e, SEED), &g, 2, Some(SEED)).unwrap();
            assert_eq!((r.indirect_levels, r.hash_version, r.dot_inode), (1, 1, 12));
            assert_eq!((r.index.count, r.index.limit), (14, g.root_limit()));
            assert_eq!(r.index.entries, e);
            assert_eq!(r.index.checksum.is_some(), csum);
            let n = parse_node(&node_block(&g, &e[..5], SEED), &g, Some(SEED)).unwrap();
            assert_eq!((n.count, n.limit), (5, g.node_limit()));
        }
    }

    #[test]
    fn count_over_limit_is_an_error() {
        let g = geo(1024, false);
        let mut b = node_block(&g, &entries(3), SEED);
        put16(&mut b, 10, 200);
        assert_eq!(
            parse_node(&b, &g, None),
            Err(DxError::CountOverLimit {
                count: 200,
                limit: 127
            })
        );
        let mut b = root_block(&g, 0, &entries(3), SEED);
        put16(&mut b, 0x22, 0xffff);
        assert_eq!(
            parse_root(&b, &g, 2, None),
            Err(DxError::CountOverLimit {
                count: 0xffff,
                limit: 124
            })
        );
    }

    #[test]
    fn bad_checksum_is_an_error() {
        let g = geo(4096, true);
        let mut b = node_block(&g, &entries(40), SEED);
        b[8 + 8 * 20] ^= 0x40;
        assert!(matches!(
            parse_node(&b, &g, Some(SEED)),
            Err(DxError::ChecksumMismatch { .. })
        ));
        let b = root_block(&g, 1, &entries(4), SEED);
        assert!(matches!(
            parse_root(&b, &g, 2, Some(SEED ^ 1)),
            Err(DxError::ChecksumMismatch { .. })
        ));
        let mut l = leaf_block(&g, &[10, 20, 30], SEED);
        l[100] ^= 1;
        assert!(matches!(
            parse_leaf(&l, &g, Some(SEED)),
            Err(DxError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn bad_root_info_limit_and_depth_are_errors() {
        let g = geo(1024, false);
        let good = root_block(&g, 1, &entries(3), SEED);
        let mut b = good.clone();
        b[0x1d] = 12;
        assert_eq!(parse_root(&b, &g, 2, None), Err(DxError::BadInfoLength(12)));
        let mut b = good.clone();
        b[0x1e] = 2;
        assert_eq!(
            parse_root(&b, &g, 2, None),
            Err(DxError::TooDeep { levels: 2, max: 2 })
        );
        assert!(parse_root(&b, &g, 3, None).is_ok());
        let mut b = good.clone();
        put16(&mut b, 0x20, 508);
        assert_eq!(
            parse_root(&b, &g, 2, None),
            Err(DxError::BadLimit {
                limit: 508,
                expected: 124
            })
        );
        let mut b = good.clone();
        b[0x1c] = 9;
        assert_eq!(
            parse_root(&b, &g, 2, None),
            Err(DxError::UnknownHashVersion(9))
        );
        let mut b = good.clone();
        put16(&mut b, 4, 16);
        assert!(matches!(
            parse_root(&b, &g, 2, None),
            Err(DxError::NotIndexBlock(_))
        ));
        let mut b = good;
        put32(&mut b, 0x20 + 16, 5);
        assert_eq!(
            parse_root(&b, &g, 2, None),
            Err(DxError::HashOrder { index: 2 })
        );
        // A leaf is not a node.
        let l = leaf_block(&g, &[8, 8], SEED);
        assert!(matches!(
            parse_node(&l, &g, None),
            Err(DxError::NotIndexBlock(_))
        ));
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let g = geo(4096, true);
        let b = root_block(&g, 0, &entries(2), SEED);
        for len in [0, 1, 12, 0x22, 1024, 4095] {
            assert!(matches!(
                parse_root(&b[..len], &g, 2, Some(SEED)),
                Err(DxError::Truncated { .. })
            ));
            assert!(matches!(
                parse_node(&b[..len], &g, None),
                Err(DxError::Truncated { .. })
            ));
            assert!(matches!(
                parse_leaf(&b[..len], &g, None),
                Err(DxError::Truncated { .. })
            ));
        }
        let tiny = Geometry {
            block_size: 16,
            csum: true,
            hash_in_dirent: false,
        };
        assert!(parse_leaf(&[0; 16], &tiny, None).is_err());
        assert!(parse_root(&[0; 16], &tiny, 2, None).is_err());
    }

    #[test]
    fn leaves_count_live_entries_and_gaps() {
        let g = geo(1024, true);
        let l = parse_leaf(&leaf_block(&g, &[250, 250, 250], SEED), &g, Some(SEED)).unwrap();
        assert_eq!(l.live, 3);
        assert_eq!(l.name_lens, vec![250, 250, 250]);
        // 1012 usable bytes, 780 used: the last entry has 232 spare, less than the 260 a 250-byte name needs.
        assert_eq!(l.largest_gap, 1012 - 780);
        assert!(!l.fits(&g, 250));
        assert!(l.fits(&g, 200));
        let empty = parse_leaf(&leaf_block(&g, &[], SEED), &g, Some(SEED)).unwrap();
        assert_eq!((empty.live, empty.largest_gap), (0, 1012));
    }

    #[test]
    fn bad_leaves_are_errors() {
        let g = geo(1024, false);
        let good = leaf_block(&g, &[10, 10], SEED);
        let mut b = good.clone();
        put16(&mut b, 4, 0);
        assert!(matches!(
            parse_leaf(&b, &g, None),
            Err(DxError::BadDirent { offset: 0, .. })
        ));
        let mut b = good.clone();
        put16(&mut b, 4, 2000);
        assert!(matches!(
            parse_leaf(&b, &g, None),
            Err(DxError::BadDirent { .. })
        ));
        let mut b = good.clone();
        put16(&mut b, 4, 14);
        assert!(matches!(
            parse_leaf(&b, &g, None),
            Err(DxError::BadDirent { .. })
        ));
        let mut b = good;
        b[6] = 200;
        assert!(matches!(
            parse_leaf(&b, &g, None),
            Err(DxError::BadDirent { .. })
        ));
        let gc = geo(1024, true);
        assert_eq!(
            parse_leaf(&leaf_block(&g, &[10], SEED), &gc, None),
            Err(DxError::NoChecksumTail)
        );
        let mut b = leaf_block(&gc, &[10], SEED);
        b[1024 - 5] = 0;
        assert_eq!(parse_leaf(&b, &gc, None), Err(DxError::NoChecksumTail));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for bs in [1024usize, 4096] {
            for csum in [false, true] {
                let g = geo(bs, csum);
                for round in 0..400 {
                    let mut b: Vec<u8> = (0..bs)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        })
                        .collect();
                    // Make some rounds plausible enough to get past the first checks.
                    if round % 2 == 0 {
                        let r = root_block(&g, (round % 3) as u8, &entries(3), SEED);
                        b[..0x24].copy_from_slice(&r[..0x24]);
                        put16(&mut b, 4, bs as u16);
                        put32(&mut b, 0, 0);
                    }
                    let _ = parse_root(&b, &g, 3, Some(SEED));
                    let _ = parse_node(&b, &g, Some(SEED));
                    let _ = parse_leaf(&b, &g, Some(SEED));
                    let _ = parse_leaf(&b, &g, None);
                }
            }
        }
    }
}
