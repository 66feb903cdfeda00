//! How full a directory's htree index is, and what that means for the next create: [`analyze`] reads the
//! index of one directory live from its block device and reports its fill per level, an estimate of its entries,
//! the share of the hash space where a new name fails with ENOSPC right now, and the entries left before the
//! first such failure. [`filesystems`] lists the mounted ext4 filesystems with the features that decide the
//! index's size.
//!
//! A create fails with "index full" if and only if the leaf for the name's hash has no gap for the new entry,
//! every index block on the hash's path is full, and the index already has as many levels as the filesystem
//! allows (2, or 3 with large_dir).
//!
//! The parts: `tree` reads the index blocks, `sample` reads and hashes a spread of leaves, `estimate` turns what
//! was read into the report's figures, `advice` into words; `fs` lists the filesystems.

use super::ancestors;
use super::dx::{self, DxEntry, DxError, DxRoot, Geometry, Leaf};
use super::hash::{self, DirHash};
use super::model::{self, Shape};
use super::read::{self, BlockError, BlockReader, Mapping};
use super::superblock::{hash_name, Features};
use super::Ext4Error;
use crate::host::resolve::DevNum;
use crate::host::{display_bytes, mountinfo, procfs, Host};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

mod advice;
mod estimate;
mod fs;
mod sample;
mod tree;

use advice::*;
use estimate::*;
pub use fs::{filesystems, FsInfo};
use sample::*;
use tree::*;

/// Leaves read per sampling round for the entry estimate (and once under full index paths). One round of 128
/// usually reaches the target precision for a large directory: one wait for the disk instead of two.
pub const DEFAULT_SAMPLE_LEAVES: usize = 128;
/// Directories with up to this many leaves are read whole; larger ones are sampled up to this many leaves.
pub const DEFAULT_MAX_SAMPLE_LEAVES: usize = 512;
/// Index blocks read at most: 10,000 blocks index up to about 5 million leaves.
pub const DEFAULT_MAX_INDEX_BLOCKS: u64 = 10_000;
const READS_PER_BLOCK: usize = 3;
const TREE_ATTEMPTS: usize = 5;
const HASH_SPACE: u64 = 1 << 32;
/// Leaves with misfiled names listed at most, and names shown per leaf.
const MISFILED_LEAVES_SHOWN: usize = 8;
const MISFILED_NAMES_SHOWN: usize = 3;
/// Leaves whose names are hashed at most, spread over the leaves read: hashing costs more CPU than reading a
/// cached leaf.
const HASH_CHECK_LEAVES: usize = 64;

/// What to analyse and how much to read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name length to judge creates by; default: the median of the sampled names.
    pub name_len: Option<usize>,
    /// Leaves per sampling round.
    pub sample_leaves: usize,
    /// Directories with at most this many leaves are read whole; others are sampled up to this many.
    pub max_sample_leaves: usize,
    /// Sampling stops once the mean entries per leaf is this precise (relative standard error).
    pub target_rse: f64,
    pub max_index_blocks: u64,
    /// Also list every index block (level, block, count, limit) in the report.
    pub list_index_blocks: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name_len: None,
            sample_leaves: DEFAULT_SAMPLE_LEAVES,
            max_sample_leaves: DEFAULT_MAX_SAMPLE_LEAVES,
            target_rse: 0.02,
            max_index_blocks: DEFAULT_MAX_INDEX_BLOCKS,
            list_index_blocks: false,
        }
    }
}

/// Everything [`analyze`] found about one directory.
#[derive(Debug, Clone, Serialize)]
pub struct HtreeReport {
    /// The directory read, on ext4 (the upper directory when the path given was on overlay).
    pub path: String,
    pub overlay: Option<OverlayRoute>,
    pub device: DeviceRef,
    pub inode: u64,
    pub generation: u32,
    pub dir_size: u64,
    pub dir_blocks: u64,
    pub block_size: u32,
    pub dir_index: bool,
    pub metadata_csum: bool,
    pub large_dir: bool,
    pub casefold: bool,
    pub indexed: bool,
    /// The inode's index flag (`EXT4_INDEX_FL`) as the kernel holds it and as the inode table on the device has
    /// it. Without metadata_csum the kernel drops it in memory (and, once the inode is written, on disk) when it
    /// meets a corrupt index, so neither alone says whether the directory has one.
    pub index_flag: IndexFlag,
    /// Why the directory has no index (`inline`, `linear`, ...), when it has none.
    pub not_indexed: Option<String>,
    pub index: Option<IndexReport>,
    pub advice: Vec<String>,
}

/// Where the index flag was seen set.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IndexFlag {
    /// FS_IOC_GETFLAGS: what the kernel holds in memory.
    pub kernel: bool,
    /// The inode read from the inode table, only when the kernel's flag is off; `None` when it was not read or
    /// could not be.
    pub on_disk: Option<bool>,
    /// The flag is set nowhere, yet the directory has more than one block and block 0 is a dx_root.
    pub dropped: bool,
}

/// Whether the names in the sampled leaves (up to 64 of them, spread over those read) hash into the range their index entry gives the leaf. A name outside
/// it cannot be found by a lookup (which reads only the leaf its hash leads to).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HashCheck {
    /// The hash computed, as the kernel names it (with `_unsigned` when the superblock says so).
    pub hash: Option<&'static str>,
    pub leaves_checked: u64,
    pub names_checked: u64,
    pub names_outside: u64,
    /// Leaves holding names outside their range.
    pub leaves_outside: u64,
    /// Up to 8 leaves holding names outside their range, in the order read.
    pub leaves: Vec<MisfiledLeaf>,
    /// Why names were not hashed, when they were not.
    pub skipped: Option<String>,
}

/// A leaf whose names do not all belong under its index entry.
#[derive(Debug, Clone, Serialize)]
pub struct MisfiledLeaf {
    /// Directory-logical block number.
    pub block: u32,
    /// The hashes the index gives this leaf: `lo` up to (not including) `hi`.
    pub lo: u32,
    pub hi: u64,
    pub names: u32,
    pub names_outside: u32,
    /// Up to 3 of them: the name (bytes escaped) and its hash.
    pub sample: Vec<MisfiledName>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MisfiledName {
    pub name: String,
    pub hash: u32,
}

/// How an overlay path was turned into a directory on ext4.
#[derive(Debug, Clone, Serialize)]
pub struct OverlayRoute {
    /// The path given, on overlay.
    pub merged: String,
    /// The same directory in the overlay's upper layer.
    pub upper: String,
}

/// A block device, by number and kernel name.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRef {
    pub dev: DevNum,
    pub name: String,
}

/// The index of an indexed directory.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub hash_version: u8,
    pub hash: &'static str,
    /// indirect_levels: 0 when the root points at leaves, 1 with one level of dx_nodes, 2 with two.
    pub levels: u8,
    /// The most levels this filesystem allows: 2, or 3 with large_dir (indirect_levels stays below it).
    pub max_levels: u8,
    pub root: Fill,
    /// Per level of dx_nodes, top first.
    pub node_levels: Vec<LevelStats>,
    pub index_blocks: u64,
    pub leaf_blocks: u64,
    pub entries: EntryEstimate,
    pub create_failure: CreateFailure,
    pub headroom: Headroom,
    pub reads: Reads,
    /// Sampled leaves that could not be read or parsed (they are left out of the estimates), and an index flag
    /// the kernel dropped.
    pub problems: Vec<String>,
    /// The names of the sampled leaves against the hash ranges of their index entries.
    pub hash_check: HashCheck,
    /// Every index block, with [`Options::list_index_blocks`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<IndexBlock>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fill {
    pub count: u16,
    pub limit: u16,
    pub full: bool,
}

/// The dx_nodes at one level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelStats {
    /// 1 for the nodes below the root, 2 for the next level.
    pub level: u8,
    pub nodes: u64,
    pub limit: u16,
    pub count_min: u16,
    pub count_median: u16,
    pub count_max: u16,
    /// Nodes with count == limit.
    pub full: u64,
}

/// One index block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexBlock {
    /// 0 for the root.
    pub level: u8,
    /// Directory-logical block number.
    pub block: u32,
    pub count: u16,
    pub limit: u16,
}

/// Entries, estimated from a sample of leaves.
#[derive(Debug, Clone, Serialize)]
pub struct EntryEstimate {
    pub estimate: u64,
    /// Every leaf was read and parsed: the estimate is the count.
    pub exact: bool,
    /// The leaves read for the estimate: all of them if there are few (see [`Options::max_sample_leaves`]), else
    /// rounds of an even spread in hash order until the mean is precise enough.
    pub sampled_leaves: u64,
    pub sampled_entries: u64,
    pub per_leaf_mean: f64,
    /// The relative standard error of `per_leaf_mean` (0 when exact); the estimate is good to about twice it.
    pub relative_std_error: f64,
    pub name_len_median: Option<u32>,
    pub name_len_max: Option<u32>,
}

/// Which new names fail right now.
#[derive(Debug, Clone, Serialize)]
pub struct CreateFailure {
    /// The name length judged, and where it came from (`given`, `median of sampled names`, `default`).
    pub name_len: usize,
    pub name_len_source: &'static str,
    /// The leaf bytes such a name needs.
    pub rec_len: usize,
    /// Whether the index has all the levels it may have; only then can a create fail.
    pub at_max_levels: bool,
    /// The share of the hash space whose index path (root and nodes) is entirely full.
    pub full_path_share: f64,
    /// The share of the hash space where a create of such a name fails now (0 unless `at_max_levels`).
    pub failing_share: f64,
    pub full_path_leaves: u64,
    /// Leaves under full index paths that were read to decide whether the name fits.
    pub full_path_leaves_read: u64,
    /// How `failing_share` was obtained.
    pub method: String,
}

/// How far the directory is from its first ENOSPC.
#[derive(Debug, Clone, Serialize)]
pub struct Headroom {
    /// Creates of names like the judged one before the first is expected to fail (the median of the model's
    /// random runs); `None` when the model could not say (no entries sampled, or an index too large to run).
    pub entries_left: Option<u64>,
    /// The 10th and 90th percentiles of the random runs: the first failure falls in this range 8 times in 10.
    pub entries_left_low: Option<u64>,
    pub entries_left_high: Option<u64>,
    /// `entries.estimate + entries_left`.
    pub entries_at_first_failure: Option<u64>,
    /// Names per leaf the projection grows the index at.
    pub entries_per_leaf: f64,
    /// Leaves the model expects at the first failure.
    pub leaves_at_first_failure: Option<u64>,
    /// Random runs of the model behind the median and percentiles (0: one deterministic run).
    pub runs: usize,
    pub model: String,
}

/// What was read to produce the report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reads {
    pub index_blocks: u64,
    pub leaf_blocks: u64,
    /// Blocks read again after a checksum or structure error (a split racing the read).
    pub rereads: u64,
    /// Times the whole index was read again after it changed under the reader.
    pub retries: u64,
}

/// Analyses the directory at node path `path`, judging creates by names of `name_len` (default: the median of
/// the sampled names).
pub fn analyze(
    host: &Host,
    path: &Path,
    name_len: Option<usize>,
) -> Result<HtreeReport, Ext4Error> {
    analyze_with(
        host,
        path,
        &Options {
            name_len,
            ..Options::default()
        },
    )
}

/// [`analyze`] with every option.
pub fn analyze_with(host: &Host, path: &Path, opts: &Options) -> Result<HtreeReport, Ext4Error> {
    let mut dir = read::open_dir(host, path)?;
    let mut magic = dir.fs_magic()?;
    let mut overlay = None;
    if read::is_overlay(magic) {
        let upper = read::overlay_upper(host, &dir)?;
        let merged = dir.path.display().to_string();
        dir = read::open_dir(host, &upper).map_err(|e| match e {
            Ext4Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Ext4Error::Overlay {
                    path: merged.clone(),
                    why: format!(
                        "its upper directory {} does not exist: the directory is only in the read-only \
                         lower layers, so nothing was ever created in it",
                        upper.display()
                    ),
                }
            }
            e => e,
        })?;
        magic = dir.fs_magic()?;
        overlay = Some(OverlayRoute {
            merged,
            upper: dir.path.display().to_string(),
        });
    }
    if !read::is_ext4(magic) {
        let fs = read::describe_fs(host, &dir, magic);
        return Err(match &overlay {
            Some(o) => Ext4Error::NotExt4 {
                path: o.merged.clone(),
                fs: format!("overlay, whose upper directory {} is on {fs}", o.upper),
            },
            None => Ext4Error::NotExt4 {
                path: dir.path.display().to_string(),
                fs,
            },
        });
    }
    dir.read_inode_info()?;
    let device = read::open_device(host, dir.dev)?;
    let sb = device.superblock()?;
    let bs = sb.block_size;
    let mut report = HtreeReport {
        path: dir.path.display().to_string(),
        overlay,
        device: DeviceRef {
            dev: dir.dev,
            name: device.name.clone(),
        },
        inode: dir.ino,
        generation: dir.generation,
        dir_size: dir.size,
        dir_blocks: dir.size / u64::from(bs),
        block_size: bs,
        dir_index: sb.dir_index(),
        metadata_csum: sb.metadata_csum(),
        large_dir: sb.large_dir(),
        casefold: sb.casefold(),
        indexed: false,
        index_flag: IndexFlag {
            kernel: dir.flags & dx::INDEX_FL != 0,
            on_disk: None,
            dropped: false,
        },
        not_indexed: None,
        index: None,
        advice: Vec::new(),
    };
    if dir.flags & dx::INLINE_DATA_FL != 0 {
        report.not_indexed = Some("inline: the directory's entries live inside its inode".into());
        return Ok(report);
    }
    // When the kernel has no index flag, the inode as written in the inode table (checked to be this directory
    // by its mode and generation) may still have it. When the kernel has it, the index is read anyway.
    if !report.index_flag.kernel {
        let disk = ancestors::read_inode(&device, &sb, dir.ino)
            .filter(|d| d.mode & 0o170000 == 0o040000 && d.generation == dir.generation);
        report.index_flag.on_disk = disk.map(|d| d.flags & dx::INDEX_FL != 0);
    }
    let g = Geometry {
        block_size: bs as usize,
        csum: sb.metadata_csum(),
        hash_in_dirent: dir.flags & dx::CASEFOLD_FL != 0 && dir.flags & dx::ENCRYPT_FL != 0,
    };
    if !report.index_flag.kernel && report.index_flag.on_disk != Some(true) {
        let blocks = report.dir_blocks;
        if blocks <= 1 {
            report.not_indexed = Some("linear: the directory fits in one block".into());
            return Ok(report);
        }
        if !sb.dir_index() || !block0_is_root(&dir, &device, &g)? {
            report.not_indexed = Some(format!(
                "linear: {blocks} blocks, no index flag and no dx_root in block 0 (the directory grew while \
                 dir_index was off, or its index was removed)"
            ));
            return Ok(report);
        }
        report.index_flag.dropped = true;
    }
    if !sb.dir_index() {
        report.not_indexed = Some(
            "the filesystem's dir_index feature is off, so the kernel ignores this index".into(),
        );
        return Ok(report);
    }
    let hashing = Hashing {
        s_flags: sb.flags,
        seed: sb.hash_seed,
        skip: (dir.flags & dx::CASEFOLD_FL != 0).then_some(
            "the directory is casefolded: names hash after Unicode case folding, which wonk does not do",
        ),
    };
    let seed = sb
        .metadata_csum()
        .then(|| dx::inode_seed(sb.csum_seed(), dir.ino as u32, dir.generation));
    let max_levels = sb.max_htree_levels();
    let mut retries = 0u64;
    let (tree, leaves_read, size) = loop {
        let extents = match dir.map(bs)? {
            Mapping::Inline => {
                report.not_indexed =
                    Some("inline: the directory's entries live inside its inode".into());
                return Ok(report);
            }
            Mapping::Extents(e) => e,
        };
        let reader = BlockReader::new(&device, bs, extents, Some(&dir));
        let attempt = read_tree(&reader, &g, max_levels, seed, dir.ino, opts).and_then(|t| {
            // Directories never shrink: a size read after the index bounds every block it may name.
            let size = dir.size_now()?;
            check_bounds(&t, size / u64::from(bs))?;
            let s = read_samples(&reader, &g, seed, &t, opts, hashing);
            Ok((t, s, size))
        });
        match attempt {
            Ok(r) => break r,
            Err(Ext4Error::Corrupt { .. }) if retries + 1 < TREE_ATTEMPTS as u64 => retries += 1,
            Err(e) => return Err(e),
        }
    };
    report.dir_size = size;
    report.dir_blocks = size / u64::from(bs);
    report.indexed = true;
    let mut index = summarize(&tree, &leaves_read, &g, max_levels, opts, retries);
    if report.index_flag.dropped {
        index.problems.insert(
            0,
            format!(
                "inode {}: the index flag is off in the kernel and {} the inode table, but the directory has {} \
                 blocks and block 0 is a dx_root: the kernel dropped the index after finding it corrupt, and \
                 lookups and creates now scan every block",
                dir.ino,
                if report.index_flag.on_disk.is_some() { "in" } else { "(unread) in" },
                report.dir_blocks
            ),
        );
    }
    report.advice = advice(&report, &index);
    report.index = Some(index);
    Ok(report)
}

/// Whether the directory's block 0 has a dx_root's shape.
fn block0_is_root(dir: &read::Dir, device: &read::Device, g: &Geometry) -> Result<bool, Ext4Error> {
    let Mapping::Extents(extents) = dir.map(g.block_size as u32)? else {
        return Ok(false);
    };
    let reader = BlockReader::new(device, g.block_size as u32, extents, Some(dir));
    match reader.read(0) {
        Ok(b) => Ok(dx::looks_like_root(&b, g)),
        Err(BlockError::Unmapped) => Ok(false),
        Err(BlockError::Io(e)) => Err(Ext4Error::io(
            format!("reading directory block 0 from /dev/{}", device.name),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::dx::tests::{geo, leaf_block, node_block, root_block, SEED};
    use crate::ext4::read::{Device, Extent};
    use std::io::Write;

    fn e(hash: u32, block: u32) -> DxEntry {
        DxEntry { hash, block }
    }

    /// Lays `blocks` out in a file and reads its index like a directory's.
    fn tree_of(name: &str, g: &Geometry, blocks: &[Vec<u8>]) -> (Result<Tree, Ext4Error>, u64) {
        let path = std::env::temp_dir().join(format!("wonk-htree-{name}-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        for b in blocks {
            f.write_all(b).unwrap();
        }
        let device = Device::from_file(std::fs::File::open(&path).unwrap(), name);
        std::fs::remove_file(&path).unwrap();
        let extents = vec![Extent {
            logical: 0,
            physical: 0,
            length: (blocks.len() * g.block_size) as u64,
            unwritten: false,
            unreadable: false,
        }];
        let reader = BlockReader::new(&device, g.block_size as u32, extents, None);
        let n = blocks.len() as u64;
        let t = read_tree(&reader, g, 2, Some(SEED), 12, &Options::default())
            .and_then(|t| check_bounds(&t, n).map(|()| t));
        (t, n)
    }

    fn blocks(g: &Geometry, second_node: &[DxEntry]) -> Vec<Vec<u8>> {
        vec![
            root_block(g, 1, &[e(0, 1), e(0x8000_0000, 2)], SEED),
            node_block(g, &[e(0, 3), e(0x4000_0000, 4)], SEED),
            node_block(g, second_node, SEED),
            leaf_block(g, &[20, 20], SEED),
            leaf_block(g, &[20], SEED),
            leaf_block(g, &[30, 30, 30], SEED),
        ]
    }

    #[test]
    fn reads_a_two_level_index() {
        let g = geo(1024, true);
        let (t, _) = tree_of("good", &g, &blocks(&g, &[e(0, 5)]));
        let t = t.unwrap();
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(
            t.leaves.iter().map(|l| l.block).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            t.leaves.iter().map(|l| l.lo).collect::<Vec<_>>(),
            vec![0, 0x4000_0000, 0x8000_0000]
        );
        assert_eq!(t.leaf_width(2), 0x8000_0000);
        assert!(!t.path_full(1));
    }

    #[test]
    fn loops_and_out_of_range_blocks_are_corruption() {
        let g = geo(1024, true);
        let (t, _) = tree_of("loop", &g, &blocks(&g, &[e(0, 5), e(0x9000_0000, 0)]));
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                block: 0,
                problem: DxError::Loop { block: 0 }
            })
        ));
        let (t, _) = tree_of("twice", &g, &blocks(&g, &[e(0, 5), e(0x9000_0000, 3)]));
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                problem: DxError::ReferencedTwice { block: 3 },
                ..
            })
        ));
        // A sibling index block is referenced twice; the node itself is a loop.
        let (t, _) = tree_of("sibling", &g, &blocks(&g, &[e(0, 5), e(0x9000_0000, 1)]));
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                problem: DxError::ReferencedTwice { block: 1 },
                ..
            })
        ));
        let (t, _) = tree_of("self", &g, &blocks(&g, &[e(0, 5), e(0x9000_0000, 2)]));
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                problem: DxError::Loop { block: 2 },
                ..
            })
        ));
        let (t, n) = tree_of("beyond", &g, &blocks(&g, &[e(0, 5), e(0x9000_0000, 77)]));
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt { block: 77, problem: DxError::BeyondEnd { block: 77, blocks } }) if blocks == n
        ));
    }

    #[test]
    fn a_corrupt_node_is_read_again_then_reported() {
        let g = geo(1024, true);
        let mut b = blocks(&g, &[e(0, 5)]);
        b[2][0x0a] = 0xff;
        let (t, _) = tree_of("count", &g, &b);
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                block: 2,
                problem: DxError::CountOverLimit { .. }
            })
        ));
        let mut b = blocks(&g, &[e(0, 5)]);
        b[1][0x10] ^= 1;
        let (t, _) = tree_of("csum", &g, &b);
        assert!(matches!(
            t,
            Err(Ext4Error::Corrupt {
                block: 1,
                problem: DxError::ChecksumMismatch { .. }
            })
        ));
        let plain = geo(1024, false);
        let mut b = blocks(&plain, &[e(0, 5)]);
        b[0][0] = 99;
        let (t, _) = tree_of("dot", &plain, &b);
        assert!(matches!(t, Err(Ext4Error::Device { .. })), "{t:?}");
        // A truncated device: the root and a node are there, the other node is not.
        let (t, _) = tree_of("short", &g, &blocks(&g, &[e(0, 5)])[..2]);
        assert!(
            matches!(
                t,
                Err(Ext4Error::Corrupt {
                    block: 2,
                    problem: DxError::Hole
                })
            ),
            "{t:?}"
        );
    }

    #[test]
    fn spread_is_even_deterministic_and_rounds_interleave() {
        assert_eq!(spread(3, 64, 0), vec![0, 1, 2]);
        assert_eq!(spread(3, 64, 1), Vec::<usize>::new());
        assert_eq!(spread(100, 4, 0), vec![12, 37, 62, 87]);
        assert_eq!(spread(100, 4, 1), vec![6, 31, 56, 81]);
        assert_eq!(spread(100, 4, 2), vec![18, 43, 68, 93]);
        assert_eq!(spread(0, 4, 0), Vec::<usize>::new());
        let mut all: Vec<usize> = (0..8).flat_map(|r| spread(1_000_000, 64, r)).collect();
        assert_eq!(all.len(), 512);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 512);
    }

    #[test]
    fn child_ranges_start_at_the_parent_low_bound() {
        let e = [
            DxEntry { hash: 0, block: 5 },
            DxEntry {
                hash: 0x100,
                block: 6,
            },
        ];
        let v: Vec<_> = child_starts(&e, 0x80).collect();
        assert_eq!(v, vec![(5, 0x80), (6, 0x100)]);
    }
}
