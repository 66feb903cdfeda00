//! Warming a directory's way to the root before the kernel names it. `open_by_handle_at` reconnects a
//! directory to its filesystem's root one parent at a time: the parent's inode, the child's `..` entry, then the
//! parent's entries until the child's name, each read waiting for the one before. From a cold cache that is
//! most of a `wonk who DEV:INODE`. [`warm`] reads the same chain from the block device first, through the page
//! cache that the kernel's own metadata reads use, and asks for the blocks of every directory whose inode shares
//! an inode-table block with the chain at once, so that the kernel then finds them cached.
//!
//! It is a hint and nothing more: no answer is taken from it (the path still comes from the kernel and is
//! checked), a wrong or failed read only costs the time the kernel takes anyway, and the walk is bounded.

use super::read::Device;
use super::superblock::{le16, le32, Superblock};
use std::collections::HashSet;

const ROOT_INO: u64 = 2;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const EXTENTS_FL: u32 = 0x0008_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
/// Offsets in an inode: i_mode, i_flags, i_block (60 bytes: an extent tree's root, or 15 block numbers).
const I_MODE: usize = 0x00;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
/// Parents followed at most.
const MAX_LEVELS: usize = 256;
/// Blocks asked for per directory at most.
const MAX_BLOCKS: u64 = 256;
/// Extent tree levels followed at most (ext4 allows 5).
const MAX_DEPTH: u16 = 5;

/// Where a directory's blocks are, as far as warming needs them.
#[derive(Debug, PartialEq, Eq)]
pub enum DirBlocks {
    /// Runs of (first physical block, count), in logical order; the first holds `.` and `..`.
    Runs(Vec<(u64, u64)>),
    /// An extent tree deeper than the inode: the block holding its next level.
    Tree(u64),
    /// Entries inside the inode (inline_data); its first 4 bytes are the parent's inode number.
    Inline { parent: u32 },
}

/// How far [`warm`] went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// The target's inode-table block was cached already, so nothing was read.
    pub was_cached: bool,
    /// The directories read, from the target up: their inode numbers, ending with the root's (2) when the walk
    /// got there.
    pub chain: Vec<u64>,
}

/// A directory inode's blocks; `None` for anything that is not a directory or that does not parse.
pub fn parse_dir_inode(raw: &[u8]) -> Option<DirBlocks> {
    let i_block = raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN)?;
    if le16(raw, I_MODE) & S_IFMT != S_IFDIR {
        return None;
    }
    let flags = le32(raw, I_FLAGS);
    if flags & INLINE_DATA_FL != 0 {
        return Some(DirBlocks::Inline {
            parent: le32(i_block, 0),
        });
    }
    if flags & EXTENTS_FL != 0 {
        return parse_extent_node(i_block);
    }
    // The old block map: 12 direct block numbers (indirect blocks are not followed).
    let runs: Vec<(u64, u64)> = (0..12)
        .map(|i| u64::from(le32(i_block, i * 4)))
        .take_while(|&b| b != 0)
        .map(|b| (b, 1))
        .collect();
    (!runs.is_empty()).then_some(DirBlocks::Runs(runs))
}

/// An extent tree node (in the inode, or a block of the tree): its leaf extents, or the first child to follow.
pub fn parse_extent_node(b: &[u8]) -> Option<DirBlocks> {
    if b.len() < 12 || le16(b, 0) != EXTENT_MAGIC {
        return None;
    }
    let entries = usize::from(le16(b, 2));
    let depth = le16(b, 6);
    if depth > MAX_DEPTH || 12 + entries.checked_mul(12)? > b.len() {
        return None;
    }
    let entry = |i: usize| &b[12 + i * 12..24 + i * 12];
    if depth > 0 {
        if entries == 0 {
            return None;
        }
        let e = entry(0);
        return Some(DirBlocks::Tree(
            u64::from(le32(e, 4)) | u64::from(le16(e, 8)) << 32,
        ));
    }
    let mut runs = Vec::new();
    for i in 0..entries {
        let e = entry(i);
        let len = u64::from(le16(e, 4));
        // Past 32768 the length marks an unwritten extent: nothing on disk to read.
        if len > 32768 {
            continue;
        }
        runs.push((u64::from(le32(e, 8)) | u64::from(le16(e, 6)) << 32, len));
    }
    Some(DirBlocks::Runs(runs))
}

/// The parent's inode number from a directory's first block: the entry after `.`, when it is `..`.
pub fn parent_from_first_block(b: &[u8]) -> Option<u32> {
    let dot_len = usize::from(le16(b.get(..8)?, 4));
    let dotdot = b.get(dot_len..dot_len.checked_add(10)?)?;
    (dot_len >= 12 && dotdot[6] == 2 && &dotdot[8..10] == b"..").then(|| le32(dotdot, 0))
}

/// What an inode says on disk about a directory, read from the inode table on the block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInode {
    pub mode: u16,
    /// `i_flags`: `EXT4_INDEX_FL` and friends as written to the inode table, which can differ from what the
    /// kernel holds in memory.
    pub flags: u32,
    /// `i_size_lo | i_size_high << 32`.
    pub size: u64,
    pub generation: u32,
}

/// Parses the fields of [`DiskInode`] from an inode's bytes; `None` when they are too short.
pub fn parse_inode(raw: &[u8]) -> Option<DiskInode> {
    if raw.len() < 0x70 {
        return None;
    }
    Some(DiskInode {
        mode: le16(raw, I_MODE),
        flags: le32(raw, I_FLAGS),
        size: u64::from(le32(raw, 0x04)) | u64::from(le32(raw, 0x6c)) << 32,
        generation: le32(raw, 0x64),
    })
}

/// Reads inode `ino` from the inode table on the device (through the page cache, so it sees what the kernel has
/// written there even before writeback). `None` when the superblock's geometry is not sane or a read fails.
pub fn read_inode(dev: &Device, sb: &Superblock, ino: u64) -> Option<DiskInode> {
    let geo = Geometry::of(sb)?;
    let (block, slot) = geo.locate(dev, ino)?;
    let at = block
        .checked_mul(geo.bs)?
        .checked_add((slot * geo.inode_size) as u64)?;
    let mut raw = vec![0u8; geo.inode_size];
    dev.read_at(at, &mut raw).ok()?;
    parse_inode(&raw)
}

/// Reads the chain of directories from inode `ino` up to the root into the page cache, unless the target's
/// inode-table block is cached already (then its way up, which the kernel read to get there, most likely is too).
///
/// Each level: the inode-table block holding the directory (the first time that block is met, the first block
/// of every directory in it is asked for, since a path's directories are often created together and share it),
/// all blocks of each parent (the kernel reads them to find the child's name), and the parent's number from the
/// directory's `..` entry, the one read that has to wait.
pub fn warm(dev: &Device, sb: &Superblock, ino: u64) -> Warmed {
    let Some(geo) = Geometry::of(sb) else {
        return Warmed::default();
    };
    let Some(at) = geo
        .locate(dev, ino)
        .and_then(|(block, _)| block.checked_mul(geo.bs))
    else {
        return Warmed::default();
    };
    if dev.is_cached(at, geo.bs as usize) {
        return Warmed {
            was_cached: true,
            chain: Vec::new(),
        };
    }
    walk(dev, &geo, ino)
}

/// [`warm`] without asking whether the target is cached first.
pub fn warm_always(dev: &Device, sb: &Superblock, ino: u64) -> Warmed {
    Geometry::of(sb).map_or_else(Warmed::default, |geo| walk(dev, &geo, ino))
}

fn walk(dev: &Device, geo: &Geometry, ino: u64) -> Warmed {
    let mut warmed = Warmed::default();
    let mut seen = HashSet::new();
    let mut tables = HashSet::new();
    let mut table = vec![0u8; geo.bs as usize];
    let mut cur = ino;
    while warmed.chain.len() < MAX_LEVELS && seen.insert(cur) {
        let Some((block, slot)) = geo.locate(dev, cur) else {
            break;
        };
        let Some(at) = block.checked_mul(geo.bs) else {
            break;
        };
        if dev.read_at(at, &mut table).is_err() {
            break;
        }
        let mut ranges = Vec::new();
        if tables.insert(block) {
            for d in table
                .chunks_exact(geo.inode_size)
                .filter_map(parse_dir_inode)
            {
                geo.ranges(&d, 1, &mut ranges);
            }
        }
        let Some(Some(me)) = table
            .chunks_exact(geo.inode_size)
            .nth(slot)
            .map(parse_dir_inode)
        else {
            break;
        };
        warmed.chain.push(cur);
        // The target itself is only asked for `..`; its parents for all their entries.
        let wanted = if cur == ino { 1 } else { MAX_BLOCKS };
        geo.ranges(&me, wanted, &mut ranges);
        ask(dev, ranges);
        if cur == ROOT_INO {
            break;
        }
        let Some(parent) = geo.parent(dev, &me, wanted) else {
            break;
        };
        cur = u64::from(parent);
    }
    warmed
}

/// Asks the device for byte ranges, ranges that touch or overlap merged into one: each request is an I/O of its
/// own, and the directories of a path created together sit side by side (ten requests become one).
fn ask(dev: &Device, ranges: Vec<(u64, u64)>) {
    for (off, len) in merge_ranges(ranges) {
        dev.prefetch(off, len);
    }
}

/// `(offset, length)` ranges sorted, with those that touch or overlap merged.
fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (off, len) in ranges {
        let end = off.saturating_add(len);
        match out.last_mut() {
            Some((o, l)) if off <= o.saturating_add(*l) => *l = end.max(o.saturating_add(*l)) - *o,
            _ => out.push((off, len)),
        }
    }
    out
}

/// The numbers that place an inode on disk.
struct Geometry {
    bs: u64,
    inode_size: usize,
    inodes_per_group: u64,
    desc_size: u64,
    first_data_block: u64,
}

impl Geometry {
    fn of(sb: &Superblock) -> Option<Geometry> {
        let inode_size = usize::from(sb.inode_size);
        let g = Geometry {
            bs: u64::from(sb.block_size),
            inode_size,
            inodes_per_group: u64::from(sb.inodes_per_group),
            desc_size: u64::from(sb.desc_size),
            first_data_block: u64::from(sb.first_data_block),
        };
        let sane = inode_size >= I_BLOCK + I_BLOCK_LEN
            && inode_size.is_power_of_two()
            && inode_size as u64 <= g.bs
            && g.inodes_per_group > 0
            && g.desc_size >= 32;
        sane.then_some(g)
    }

    /// The inode-table block holding inode `ino`, and the inode's slot in it.
    fn locate(&self, dev: &Device, ino: u64) -> Option<(u64, usize)> {
        let i = ino.checked_sub(1)?;
        let (group, index) = (i / self.inodes_per_group, i % self.inodes_per_group);
        let desc_at = (self.first_data_block + 1)
            .checked_mul(self.bs)?
            .checked_add(group.checked_mul(self.desc_size)?)?;
        let mut desc = vec![0u8; self.desc_size.min(64) as usize];
        dev.read_at(desc_at, &mut desc).ok()?;
        let mut table = u64::from(le32(&desc, 8));
        if desc.len() >= 64 {
            table |= u64::from(le32(&desc, 0x28)) << 32;
        }
        let per_block = self.bs / self.inode_size as u64;
        let block = table.checked_add(index / per_block)?;
        Some((block, (index % per_block) as usize))
    }

    /// The byte ranges of a directory's first `max` blocks (or of the block of its extent tree's next level),
    /// added to `out`.
    fn ranges(&self, d: &DirBlocks, max: u64, out: &mut Vec<(u64, u64)>) {
        let mut left = max;
        match d {
            DirBlocks::Runs(runs) => {
                for &(start, len) in runs {
                    let n = len.min(left);
                    if n == 0 {
                        break;
                    }
                    if let (Some(off), Some(bytes)) =
                        (start.checked_mul(self.bs), n.checked_mul(self.bs))
                    {
                        out.push((off, bytes));
                    }
                    left -= n;
                }
            }
            DirBlocks::Tree(block) => {
                if let Some(off) = block.checked_mul(self.bs) {
                    out.push((off, self.bs));
                }
            }
            DirBlocks::Inline { .. } => {}
        }
    }

    /// The parent of a directory: from its inode (inline) or its first block, following a deeper extent tree
    /// (whose first `max` blocks are asked for on the way).
    fn parent(&self, dev: &Device, d: &DirBlocks, max: u64) -> Option<u32> {
        let mut node = match d {
            DirBlocks::Inline { parent } => return Some(*parent),
            DirBlocks::Runs(runs) => return self.parent_in(dev, runs.first()?.0),
            DirBlocks::Tree(block) => *block,
        };
        let mut buf = vec![0u8; self.bs as usize];
        for _ in 0..MAX_DEPTH {
            dev.read_at(node.checked_mul(self.bs)?, &mut buf).ok()?;
            match parse_extent_node(&buf)? {
                DirBlocks::Runs(runs) => {
                    let first = runs.first()?.0;
                    let mut ranges = Vec::new();
                    self.ranges(&DirBlocks::Runs(runs), max, &mut ranges);
                    ask(dev, ranges);
                    return self.parent_in(dev, first);
                }
                DirBlocks::Tree(next) => node = next,
                DirBlocks::Inline { .. } => return None,
            }
        }
        None
    }

    fn parent_in(&self, dev: &Device, block: u64) -> Option<u32> {
        let mut buf = vec![0u8; self.bs as usize];
        dev.read_at(block.checked_mul(self.bs)?, &mut buf).ok()?;
        parent_from_first_block(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(mode: u16, flags: u32, i_block: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; 256];
        raw[I_MODE..I_MODE + 2].copy_from_slice(&mode.to_le_bytes());
        raw[I_FLAGS..I_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        raw[I_BLOCK..I_BLOCK + i_block.len()].copy_from_slice(i_block);
        raw
    }

    fn extent_root(depth: u16, entries: &[[u8; 12]]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&EXTENT_MAGIC.to_le_bytes());
        b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&depth.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for e in entries {
            b.extend_from_slice(e);
        }
        b
    }

    fn leaf(lblk: u32, len: u16, start: u64) -> [u8; 12] {
        let mut e = [0u8; 12];
        e[0..4].copy_from_slice(&lblk.to_le_bytes());
        e[4..6].copy_from_slice(&len.to_le_bytes());
        e[6..8].copy_from_slice(&((start >> 32) as u16).to_le_bytes());
        e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
        e
    }

    #[test]
    fn directory_inodes() {
        let root = extent_root(0, &[leaf(0, 3, 0x1_0000_0010), leaf(3, 32768 + 5, 99)]);
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR | 0o755, EXTENTS_FL, &root)),
            Some(DirBlocks::Runs(vec![(0x1_0000_0010, 3)]))
        );
        let mut idx = [0u8; 12];
        idx[4..8].copy_from_slice(&77u32.to_le_bytes());
        let deep = extent_root(1, &[idx]);
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR, EXTENTS_FL, &deep)),
            Some(DirBlocks::Tree(77))
        );
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR, INLINE_DATA_FL, &5u32.to_le_bytes())),
            Some(DirBlocks::Inline { parent: 5 })
        );
        let map: Vec<u8> = [100u32, 101, 0]
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR, 0, &map)),
            Some(DirBlocks::Runs(vec![(100, 1), (101, 1)]))
        );
        assert_eq!(parse_dir_inode(&inode(0o100644, EXTENTS_FL, &root)), None);
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR, EXTENTS_FL, &[0u8; 12])),
            None
        );
        let too_many = {
            let mut r = extent_root(0, &[]);
            r[2..4].copy_from_slice(&9u16.to_le_bytes());
            r
        };
        assert_eq!(
            parse_dir_inode(&inode(S_IFDIR, EXTENTS_FL, &too_many)),
            None
        );
        assert_eq!(parse_dir_inode(&[0u8; 40]), None);
    }

    #[test]
    fn touching_ranges_become_one_request() {
        assert_eq!(
            merge_ranges(vec![
                (8192, 4096),
                (0, 4096),
                (4096, 4096),
                (20480, 4096),
                (16384, 8192)
            ]),
            vec![(0, 12288), (16384, 8192)]
        );
        assert_eq!(merge_ranges(vec![(0, 8192), (4096, 100)]), vec![(0, 8192)]);
        assert_eq!(merge_ranges(vec![(0, 10), (11, 1)]), vec![(0, 10), (11, 1)]);
        assert_eq!(
            merge_ranges(vec![(u64::MAX - 1, 5), (u64::MAX, 1)]),
            vec![(u64::MAX - 1, 1)]
        );
        assert!(merge_ranges(Vec::new()).is_empty());
    }

    #[test]
    fn first_blocks() {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&12u32.to_le_bytes());
        b[4..6].copy_from_slice(&12u16.to_le_bytes());
        b[6] = 1;
        b[8] = b'.';
        b[12..16].copy_from_slice(&4242u32.to_le_bytes());
        b[16..18].copy_from_slice(&4084u16.to_le_bytes());
        b[18] = 2;
        b[20..22].copy_from_slice(b"..");
        assert_eq!(parent_from_first_block(&b), Some(4242));
        b[21] = b'x';
        assert_eq!(parent_from_first_block(&b), None);
        b[21] = b'.';
        b[4..6].copy_from_slice(&65535u16.to_le_bytes());
        assert_eq!(parent_from_first_block(&b), None);
        assert_eq!(parent_from_first_block(&b[..10]), None);
    }
}
