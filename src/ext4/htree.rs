//! How full a directory's htree index is, and what that means for the next create: [`analyze`] reads the
//! index of one directory live from its block device and reports its fill per level, an estimate of its entries,
//! the share of the hash space where a new name fails with ENOSPC right now, and the entries left before the
//! first such failure. [`filesystems`] lists the mounted ext4 filesystems with the features that decide the
//! index's size.
//!
//! A create fails with "index full" if and only if the leaf for the name's hash has no gap for the new entry,
//! every index block on the hash's path is full, and the index already has as many levels as the filesystem
//! allows (2, or 3 with large_dir).

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

/// One index block as read.
#[derive(Debug)]
struct Node {
    level: u8,
    block: u32,
    parent: Option<usize>,
    count: u16,
    limit: u16,
    children: Vec<usize>,
    /// Leaves below a bottom node: a range in [`Tree::leaves`].
    leaves: std::ops::Range<usize>,
}

/// A leaf, by its place in the hash order; it covers `lo` up to the next leaf's `lo`.
#[derive(Debug, Clone, Copy)]
struct LeafRef {
    block: u32,
    lo: u32,
    bottom: u32,
}

#[derive(Debug)]
struct Tree {
    root: DxRoot,
    nodes: Vec<Node>,
    leaves: Vec<LeafRef>,
    /// The bottom index blocks, in hash order.
    bottom: Vec<usize>,
    rereads: u64,
}

impl Tree {
    fn leaf_hi(&self, k: usize) -> u64 {
        self.leaves
            .get(k + 1)
            .map_or(HASH_SPACE, |l| u64::from(l.lo))
    }

    fn leaf_width(&self, k: usize) -> u64 {
        self.leaf_hi(k).saturating_sub(u64::from(self.leaves[k].lo))
    }

    fn full(&self, i: usize) -> bool {
        self.nodes[i].count == self.nodes[i].limit
    }

    /// Whether every index block from bottom node `i` up to the root is full.
    fn path_full(&self, mut i: usize) -> bool {
        loop {
            if !self.full(i) {
                return false;
            }
            match self.nodes[i].parent {
                Some(p) => i = p,
                None => return true,
            }
        }
    }
}

/// Reads a block and parses it, reading again (up to [`READS_PER_BLOCK`] times) while it does not parse: a
/// concurrent split can be caught half-way.
fn read_parsed<T>(
    reader: &BlockReader,
    lblk: u32,
    rereads: &mut u64,
    mut parse: impl FnMut(&[u8]) -> Result<T, DxError>,
) -> Result<T, Ext4Error> {
    let mut last = DxError::Hole;
    for attempt in 0..READS_PER_BLOCK {
        if attempt > 0 {
            *rereads += 1;
        }
        let buf = match reader.read(u64::from(lblk)) {
            Ok(b) => b,
            Err(BlockError::Unmapped) => {
                return Err(Ext4Error::Corrupt {
                    block: u64::from(lblk),
                    problem: DxError::Hole,
                })
            }
            Err(BlockError::Io(e)) => {
                return Err(Ext4Error::io(
                    format!(
                        "reading directory block {lblk} from /dev/{}",
                        reader.device.name
                    ),
                    e,
                ))
            }
        };
        match parse(&buf) {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(Ext4Error::Corrupt {
        block: u64::from(lblk),
        problem: last,
    })
}

/// The (block, lo) of each entry of an index block covering hashes from `lo`.
fn child_starts(entries: &[DxEntry], lo: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    entries
        .iter()
        .enumerate()
        .map(move |(j, e)| (e.block, if j == 0 { lo } else { e.hash.max(lo) }))
}

fn read_tree(
    reader: &BlockReader,
    g: &Geometry,
    max_levels: u8,
    seed: Option<u32>,
    ino: u64,
    opts: &Options,
) -> Result<Tree, Ext4Error> {
    let mut rereads = 0;
    let root = read_parsed(reader, 0, &mut rereads, |b| {
        dx::parse_root(b, g, max_levels, seed)
    })?;
    if u64::from(root.dot_inode) != ino & 0xffff_ffff {
        return Err(Ext4Error::Device {
            dev: format!("/dev/{}", reader.device.name),
            why: format!(
                "block 0 of the directory names inode {} in '.', not {ino}: the device or the block map \
                 does not match the directory",
                root.dot_inode
            ),
        });
    }
    // Index blocks by block number: their place in `nodes`.
    let mut seen: HashMap<u32, usize> = HashMap::from([(0, 0)]);
    let mut nodes = vec![Node {
        level: 0,
        block: 0,
        parent: None,
        count: root.index.count,
        limit: root.index.limit,
        children: Vec::new(),
        leaves: 0..0,
    }];
    // Each frontier entry: (node index, its entries, the lowest hash it covers).
    let mut frontier: Vec<(usize, Vec<DxEntry>, u32)> = vec![(0, root.index.entries.clone(), 0)];
    for level in 1..=root.indirect_levels {
        let mut next = Vec::new();
        reader.prefetch(
            frontier
                .iter()
                .flat_map(|(_, entries, _)| entries.iter().map(|e| u64::from(e.block))),
        );
        for (pi, entries, lo) in &frontier {
            for (block, clo) in child_starts(entries, *lo) {
                if let Some(&other) = seen.get(&block) {
                    return Err(repeat(&nodes, *pi, other, block));
                }
                seen.insert(block, nodes.len());
                if nodes.len() as u64 >= opts.max_index_blocks {
                    return Err(Ext4Error::TooLarge {
                        index_blocks: nodes.len() as u64 + 1,
                        cap: opts.max_index_blocks,
                    });
                }
                let node =
                    read_parsed(reader, block, &mut rereads, |b| dx::parse_node(b, g, seed))?;
                let i = nodes.len();
                nodes.push(Node {
                    level,
                    block,
                    parent: Some(*pi),
                    count: node.count,
                    limit: node.limit,
                    children: Vec::new(),
                    leaves: 0..0,
                });
                nodes[*pi].children.push(i);
                next.push((i, node.entries, clo));
            }
        }
        frontier = next;
    }
    let mut leaves = Vec::new();
    let mut bottom = Vec::with_capacity(frontier.len());
    for (bi, entries, lo) in &frontier {
        let start = leaves.len();
        for (block, clo) in child_starts(entries, *lo) {
            leaves.push(LeafRef {
                block,
                lo: clo,
                bottom: *bi as u32,
            });
        }
        nodes[*bi].leaves = start..leaves.len();
        bottom.push(*bi);
    }
    // Leaves are many (up to millions), so they are checked for repeats by sorting, not one by one.
    if let Some(l) = leaves.iter().find(|l| seen.contains_key(&l.block)) {
        return Err(repeat(&nodes, l.bottom as usize, seen[&l.block], l.block));
    }
    let mut blocks: Vec<u32> = leaves.iter().map(|l| l.block).collect();
    blocks.sort_unstable();
    if let Some(w) = blocks.windows(2).find(|w| w[0] == w[1]) {
        return Err(Ext4Error::Corrupt {
            block: u64::from(w[0]),
            problem: DxError::ReferencedTwice { block: w[0] },
        });
    }
    Ok(Tree {
        root,
        nodes,
        leaves,
        bottom,
        rereads,
    })
}

/// An entry of index block `from` points at index block `to` (`block`): a loop when `to` is on `from`'s own path
/// up to the root, else a block referenced twice.
fn repeat(nodes: &[Node], from: usize, to: usize, block: u32) -> Ext4Error {
    let mut at = Some(from);
    while let Some(i) = at {
        if i == to {
            return Ext4Error::Corrupt {
                block: u64::from(block),
                problem: DxError::Loop { block },
            };
        }
        at = nodes[i].parent;
    }
    Ext4Error::Corrupt {
        block: u64::from(block),
        problem: DxError::ReferencedTwice { block },
    }
}

/// Every block the index names must lie inside the directory.
fn check_bounds(t: &Tree, dir_blocks: u64) -> Result<(), Ext4Error> {
    let named = t
        .nodes
        .iter()
        .map(|n| n.block)
        .chain(t.leaves.iter().map(|l| l.block));
    match named.max() {
        Some(block) if u64::from(block) >= dir_blocks => Err(Ext4Error::Corrupt {
            block: u64::from(block),
            problem: DxError::BeyondEnd {
                block,
                blocks: dir_blocks,
            },
        }),
        _ => Ok(()),
    }
}

/// Round `r` of an even spread of `k` indices over `0..n`. Round 0 takes the middle of each of `k` equal
/// slices; later rounds take points between earlier ones (0.5, 0.25, 0.75, 0.125, ... of a slice), so any
/// number of rounds stays evenly spread and never repeats an index while slices are wide enough.
fn spread(n: usize, k: usize, round: usize) -> Vec<usize> {
    if n <= k {
        return if round == 0 {
            (0..n).collect()
        } else {
            Vec::new()
        };
    }
    let phase = van_der_corput(round as u32 + 1);
    (0..k)
        .map(|i| (((i as f64 + phase) * n as f64 / k as f64) as usize).min(n - 1))
        .collect()
}

fn van_der_corput(mut i: u32) -> f64 {
    let (mut v, mut f) = (0.0, 0.5);
    while i > 0 {
        if i & 1 == 1 {
            v += f;
        }
        i >>= 1;
        f /= 2.0;
    }
    v
}

/// What the names of a directory hash with.
#[derive(Debug, Clone, Copy)]
struct Hashing {
    /// The superblock's `s_flags` (signed or unsigned hash).
    s_flags: u32,
    seed: [u32; 4],
    /// Why names are not hashed, when they are not.
    skip: Option<&'static str>,
}

/// The leaves read: the spread sample for the estimate and a sample of the leaves under full index paths.
struct Samples {
    spread: Vec<usize>,
    /// Parsed leaves by leaf index; `None` when the leaf could not be read.
    leaves: std::collections::BTreeMap<usize, Option<Leaf>>,
    problems: Vec<String>,
    rereads: u64,
    /// The hash names are checked with, when they are.
    hash: Option<DirHash>,
    hash_check: HashCheck,
    /// Leaves that may still be hashed.
    hash_leaves_left: usize,
}

impl Samples {
    /// Reads leaf `k`; with `hash`, its names are checked against its hash range.
    fn read(
        &mut self,
        reader: &BlockReader,
        g: &Geometry,
        seed: Option<u32>,
        t: &Tree,
        k: usize,
        hash: bool,
    ) {
        if self.leaves.contains_key(&k) {
            return;
        }
        let block = t.leaves[k].block;
        // A name belongs here if its hash is at least the entry's (its low bit, "continued", cleared) and below
        // the next leaf's entry.
        let (lo, hi) = (t.leaves[k].lo & !1, t.leaf_hi(k));
        let dh = self.hash.filter(|_| hash);
        let mut misfiled = MisfiledLeaf {
            block,
            lo,
            hi,
            names: 0,
            names_outside: 0,
            sample: Vec::new(),
        };
        let parsed = read_parsed(reader, block, &mut self.rereads, |b| {
            misfiled.names = 0;
            misfiled.names_outside = 0;
            misfiled.sample.clear();
            dx::parse_leaf_names(b, g, seed, |name| {
                let Some(h) = dh.and_then(|d| d.hash(name)) else {
                    return;
                };
                misfiled.names += 1;
                if h < lo || u64::from(h) >= hi {
                    misfiled.names_outside += 1;
                    if misfiled.sample.len() < MISFILED_NAMES_SHOWN {
                        let mut shown = name.escape_ascii().to_string();
                        shown.truncate(80);
                        misfiled.sample.push(MisfiledName {
                            name: shown,
                            hash: h,
                        });
                    }
                }
            })
        });
        match parsed {
            Ok(l) => {
                if dh.is_some() {
                    let c = &mut self.hash_check;
                    c.leaves_checked += 1;
                    c.names_checked += u64::from(misfiled.names);
                    c.names_outside += u64::from(misfiled.names_outside);
                    if misfiled.names_outside > 0 {
                        c.leaves_outside += 1;
                        if c.leaves.len() < MISFILED_LEAVES_SHOWN {
                            c.leaves.push(misfiled);
                        }
                    }
                }
                self.leaves.insert(k, Some(l));
            }
            Err(e) => {
                self.problems.push(format!("leaf {e}"));
                self.leaves.insert(k, None);
            }
        }
    }

    /// Reads the leaves `ks`, their blocks requested from the device together.
    fn read_all(
        &mut self,
        reader: &BlockReader,
        g: &Geometry,
        seed: Option<u32>,
        t: &Tree,
        ks: &[usize],
    ) {
        reader.prefetch(
            ks.iter()
                .filter(|k| !self.leaves.contains_key(k))
                .map(|&k| u64::from(t.leaves[k].block)),
        );
        // The leaves hashed: as many as are left to hash, spread evenly over `ks`.
        let m = self.hash_leaves_left.min(ks.len());
        self.hash_leaves_left -= m;
        for (i, &k) in ks.iter().enumerate() {
            let hash = (i + 1) * m / ks.len() > i * m / ks.len();
            self.read(reader, g, seed, t, k, hash);
        }
    }

    /// Live entries per leaf over the spread sample: mean and relative standard error of the mean.
    fn per_leaf(&self) -> (f64, f64) {
        let live: Vec<f64> = self
            .spread
            .iter()
            .filter_map(|k| self.leaves.get(k).and_then(Option::as_ref))
            .map(|l| f64::from(l.live))
            .collect();
        let m = live.len() as f64;
        if live.len() < 2 {
            return (live.first().copied().unwrap_or(0.0), f64::INFINITY);
        }
        let mean = live.iter().sum::<f64>() / m;
        let var = live.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0);
        let rse = if mean > 0.0 {
            (var / m).sqrt() / mean
        } else {
            0.0
        };
        (mean, rse)
    }
}

/// Reads leaves: all of them when there are at most `max_sample_leaves`; else rounds of an even spread in hash
/// order until the mean entries per leaf has a relative standard error of at most `target_rse` (or the cap is
/// reached); then a spread of the leaves under full index paths, which decide which creates fail.
fn read_samples(
    reader: &BlockReader,
    g: &Geometry,
    seed: Option<u32>,
    t: &Tree,
    opts: &Options,
    hashing: Hashing,
) -> Samples {
    let version = hash::effective_version(t.root.hash_version, hashing.s_flags);
    let mut hash_check = HashCheck {
        hash: Some(hash_name(version)),
        ..HashCheck::default()
    };
    let h = DirHash {
        version,
        seed: hashing.seed,
    };
    let hash = match hashing.skip {
        Some(why) => {
            hash_check.skipped = Some(why.to_string());
            None
        }
        None if h.hash(b"").is_none() => {
            hash_check.skipped = Some(format!(
                "wonk does not compute the {} hash",
                hash_name(version)
            ));
            None
        }
        None => Some(h),
    };
    let mut s = Samples {
        spread: Vec::new(),
        leaves: Default::default(),
        problems: Vec::new(),
        rereads: 0,
        hash,
        hash_check,
        hash_leaves_left: HASH_CHECK_LEAVES,
    };
    let n = t.leaves.len();
    let round_size = if n <= opts.max_sample_leaves {
        n
    } else {
        opts.sample_leaves.max(2)
    };
    let mut round = 0;
    while s.spread.len() < n.min(opts.max_sample_leaves.max(round_size)) {
        let fresh: Vec<usize> = spread(n, round_size, round)
            .into_iter()
            .filter(|k| !s.spread.contains(k))
            .collect();
        round += 1;
        if fresh.is_empty() {
            if round > 64 {
                break;
            }
            continue;
        }
        s.read_all(reader, g, seed, t, &fresh);
        s.spread.extend(fresh);
        if s.per_leaf().1 <= opts.target_rse {
            break;
        }
    }
    let fp_leaves: Vec<usize> = t
        .bottom
        .iter()
        .filter(|&&b| t.path_full(b))
        .flat_map(|&b| t.nodes[b].leaves.clone())
        .collect();
    let fp_round = if fp_leaves.len() <= opts.max_sample_leaves {
        fp_leaves.len()
    } else {
        opts.sample_leaves
    };
    let fp: Vec<usize> = spread(fp_leaves.len(), fp_round, 0)
        .into_iter()
        .map(|i| fp_leaves[i])
        .collect();
    s.read_all(reader, g, seed, t, &fp);
    s
}

fn summarize(
    t: &Tree,
    s: &Samples,
    g: &Geometry,
    max_levels: u8,
    opts: &Options,
    retries: u64,
) -> IndexReport {
    let levels = t.root.indirect_levels;
    let node_levels = (1..=levels)
        .map(|level| {
            let mut counts: Vec<u16> = t
                .nodes
                .iter()
                .filter(|n| n.level == level)
                .map(|n| n.count)
                .collect();
            counts.sort_unstable();
            LevelStats {
                level,
                nodes: counts.len() as u64,
                limit: g.node_limit(),
                count_min: counts.first().copied().unwrap_or(0),
                count_median: counts.get(counts.len() / 2).copied().unwrap_or(0),
                count_max: counts.last().copied().unwrap_or(0),
                full: counts.iter().filter(|&&c| c == g.node_limit()).count() as u64,
            }
        })
        .collect();

    let n_leaves = t.leaves.len() as u64;
    let sampled: Vec<&Leaf> = s
        .spread
        .iter()
        .filter_map(|k| s.leaves.get(k).and_then(Option::as_ref))
        .collect();
    let sampled_entries: u64 = sampled.iter().map(|l| u64::from(l.live)).sum();
    let per_leaf_mean = if sampled.is_empty() {
        0.0
    } else {
        sampled_entries as f64 / sampled.len() as f64
    };
    let exact = sampled.len() as u64 == n_leaves;
    let mut names: Vec<u8> = sampled
        .iter()
        .flat_map(|l| l.name_lens.iter().copied())
        .collect();
    names.sort_unstable();
    let name_len_median = names.get(names.len() / 2).map(|&n| u32::from(n));
    let entries = EntryEstimate {
        estimate: if exact {
            sampled_entries
        } else {
            (per_leaf_mean * n_leaves as f64).round() as u64
        },
        exact,
        sampled_leaves: sampled.len() as u64,
        sampled_entries,
        per_leaf_mean,
        relative_std_error: if exact { 0.0 } else { s.per_leaf().1 },
        name_len_median,
        name_len_max: names.last().map(|&n| u32::from(n)),
    };

    let (name_len, name_len_source) = match (opts.name_len, name_len_median) {
        (Some(l), _) => (l.clamp(1, 255), "given"),
        (None, Some(m)) => (m.max(1) as usize, "median of sampled names"),
        (None, None) => (
            255,
            "default (no names sampled): the longest name ext4 allows",
        ),
    };
    let create_failure = failing(t, s, g, max_levels, name_len, name_len_source);
    let headroom = headroom(t, &sampled, g, max_levels, &entries, &create_failure);

    let blocks = if opts.list_index_blocks {
        t.nodes
            .iter()
            .map(|n| IndexBlock {
                level: n.level,
                block: n.block,
                count: n.count,
                limit: n.limit,
            })
            .collect()
    } else {
        Vec::new()
    };
    IndexReport {
        hash_version: t.root.hash_version,
        hash: s.hash_check.hash.unwrap_or(hash_name(t.root.hash_version)),
        levels,
        max_levels,
        root: Fill {
            count: t.root.index.count,
            limit: t.root.index.limit,
            full: t.root.index.count == t.root.index.limit,
        },
        node_levels,
        index_blocks: t.nodes.len() as u64,
        leaf_blocks: n_leaves,
        entries,
        create_failure,
        headroom,
        reads: Reads {
            index_blocks: t.nodes.len() as u64,
            leaf_blocks: s.leaves.len() as u64,
            rereads: t.rereads + s.rereads,
            retries,
        },
        problems: s.problems.clone(),
        hash_check: s.hash_check.clone(),
        blocks,
    }
}

fn failing(
    t: &Tree,
    s: &Samples,
    g: &Geometry,
    max_levels: u8,
    name_len: usize,
    name_len_source: &'static str,
) -> CreateFailure {
    let at_max = t.root.indirect_levels + 1 == max_levels;
    let mut fp_width = 0u64;
    let mut fp_leaves = 0u64;
    for &b in &t.bottom {
        if t.path_full(b) {
            for k in t.nodes[b].leaves.clone() {
                fp_width += t.leaf_width(k);
                fp_leaves += 1;
            }
        }
    }
    // Leaves read under full paths: whether the name fits, weighted by the hash width each covers.
    let (mut read_w, mut no_room_w, mut read_n) = (0u64, 0u64, 0u64);
    for (&k, leaf) in &s.leaves {
        let Some(leaf) = leaf else { continue };
        if !t.path_full(t.leaves[k].bottom as usize) {
            continue;
        }
        read_n += 1;
        read_w += t.leaf_width(k);
        if !leaf.fits(g, name_len) {
            no_room_w += t.leaf_width(k);
        }
    }
    let share = |w: f64| w / HASH_SPACE as f64;
    let (failing_share, method) = if !at_max {
        (
            0.0,
            format!(
                "no create fails yet: the index has {} of {max_levels} levels, and a full root makes it grow one",
                t.root.indirect_levels + 1
            ),
        )
    } else if fp_leaves == 0 {
        (
            0.0,
            "no index path is full, so every leaf can still split".to_string(),
        )
    } else if read_n == fp_leaves {
        (
            share(no_room_w as f64),
            format!("exact: all {fp_leaves} leaves under full index paths were read"),
        )
    } else if read_w == 0 {
        (
            share(fp_width as f64),
            "upper bound: no leaf under a full index path could be read, so all are taken to be full".into(),
        )
    } else {
        let p = no_room_w as f64 / read_w as f64;
        (
            share(no_room_w as f64 + p * (fp_width - read_w) as f64),
            format!(
                "estimated: {read_n} of {fp_leaves} leaves under full index paths were read; {:.1}% of their \
                 hash width has no room for the name, and the unread ones are taken to be the same",
                p * 100.0
            ),
        )
    };
    CreateFailure {
        name_len,
        name_len_source,
        rec_len: g.rec_len(name_len),
        at_max_levels: at_max,
        full_path_share: share(fp_width as f64),
        failing_share,
        full_path_leaves: fp_leaves,
        full_path_leaves_read: read_n,
        method,
    }
}

fn headroom(
    t: &Tree,
    sampled: &[&Leaf],
    g: &Geometry,
    max_levels: u8,
    entries: &EntryEstimate,
    cf: &CreateFailure,
) -> Headroom {
    let live: u64 = sampled.iter().map(|l| u64::from(l.live)).sum();
    let used: u64 = sampled.iter().map(|l| l.used as u64).sum();
    // Leaves hold fewer long names than short ones: scale the density seen to the judged name's size.
    let per_leaf = if live == 0 {
        0.0
    } else {
        entries.per_leaf_mean * (used as f64 / live as f64) / cf.rec_len as f64
    };
    let shape = Shape {
        blocks: t
            .nodes
            .iter()
            .map(|n| {
                let bottom = n.children.is_empty();
                let width = if bottom {
                    n.leaves.clone().map(|k| t.leaf_width(k)).sum::<u64>() as f64
                        / HASH_SPACE as f64
                } else {
                    0.0
                };
                model::Block {
                    parent: n.parent,
                    children: n.children.clone(),
                    limit: u32::from(n.limit),
                    leaves: if bottom { f64::from(n.count) } else { 0.0 },
                    width,
                }
            })
            .collect(),
        depth: t.root.indirect_levels + 1,
        max_depth: max_levels,
        node_limit: u32::from(g.node_limit()),
    };
    let projection = model::project(&shape, per_leaf, entries.relative_std_error);
    // A name that hashes into a failing range fails: with a failing share s, the first failure comes after
    // about 1/s creates, whatever the index does elsewhere.
    let by_share = (cf.failing_share > 0.0).then(|| 1.0 / cf.failing_share);
    let cap = |c: f64| by_share.map_or(c, |b| c.min(b)).round() as u64;
    let entries_left = projection.map(|p| cap(p.creates)).or(by_share.map(cap));
    Headroom {
        entries_left,
        entries_left_low: projection.map(|p| cap(p.low)),
        entries_left_high: projection.map(|p| cap(p.high)),
        entries_at_first_failure: entries_left.map(|l| entries.estimate + l),
        entries_per_leaf: per_leaf,
        leaves_at_first_failure: projection.map(|p| p.leaves.round() as u64),
        runs: projection.map_or(0, |p| p.runs),
        model: format!(
            "split projection: each bottom index block gains leaves in proportion to the hash width it covers, \
             at {per_leaf:.2} names of {} bytes per leaf (a Poisson process, {} seeded runs); a full block splits \
             in half while a block above has room; the first ENOSPC is the next leaf split under a full block \
             whose path is full at {max_levels} levels{}",
            cf.rec_len,
            projection.map_or(0, |p| p.runs),
            if by_share.is_some() {
                "; capped by 1 / failing_share, the expected creates before one hashes into a failing range"
            } else {
                ""
            }
        ),
    }
}

fn advice(r: &HtreeReport, ix: &IndexReport) -> Vec<String> {
    let cf = &ix.create_failure;
    if !cf.at_max_levels {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !r.large_dir {
        out.push(format!(
            "tune2fs -O large_dir /dev/{} allows a third index level, so creates succeed again at once (it works \
             on a mounted filesystem). It cannot be undone; GRUB before 2.12 cannot boot from a filesystem with \
             large_dir; kernels before 5.14 could corrupt a directory that grows to 3 levels.",
            r.device.name
        ));
    }
    out.push(format!(
        "Or shard the directory: spread its {} entries over subdirectories (for example by a hash prefix of the \
         name), or remove what is no longer needed.",
        ix.entries.estimate
    ));
    out
}

/// A mounted ext4 filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct FsInfo {
    pub device: DevNum,
    pub device_name: Option<String>,
    /// Where it is mounted (the mount of its root when there is one, else the shortest mount point).
    pub mount_point: String,
    /// How many mounts of it the host's mount table holds (bind mounts included).
    pub mounts: usize,
    pub fs_type: String,
    pub block_size: Option<u32>,
    pub features: Option<Features>,
    /// 2, or 3 with large_dir.
    pub max_levels: Option<u8>,
    pub uuid: Option<String>,
    pub volume_name: Option<String>,
    /// Why the superblock could not be read, when it could not.
    pub error: Option<String>,
}

/// Every mounted ext4 (and ext2/ext3) filesystem in the host's mount table, one per device, with the directory
/// features read from its superblock.
pub fn filesystems(host: &Host) -> Result<Vec<FsInfo>, Ext4Error> {
    let data =
        procfs::mountinfo(host, 1).map_err(|e| Ext4Error::io("reading /proc/1/mountinfo", e))?;
    let (mounts, _) = mountinfo::parse(&data);
    let mut by_dev: std::collections::BTreeMap<(u32, u32), Vec<&mountinfo::Mount>> =
        Default::default();
    for m in &mounts {
        if matches!(m.fs_type.as_str(), "ext4" | "ext3" | "ext2") {
            by_dev.entry(m.dev()).or_default().push(m);
        }
    }
    let mut out = Vec::new();
    for ((major, minor), ms) in by_dev {
        let Some(primary) = ms
            .iter()
            .min_by_key(|m| (m.root != b"/", m.mount_point.len()))
        else {
            continue;
        };
        let dev = DevNum { major, minor };
        let mut info = FsInfo {
            device: dev,
            device_name: None,
            mount_point: display_bytes(&primary.mount_point),
            mounts: ms.len(),
            fs_type: primary.fs_type.clone(),
            block_size: None,
            features: None,
            max_levels: None,
            uuid: None,
            volume_name: None,
            error: None,
        };
        match read::open_device(host, dev).and_then(|d| d.superblock().map(|sb| (d, sb))) {
            Ok((d, sb)) => {
                info.device_name = Some(d.name);
                info.block_size = Some(sb.block_size);
                info.features = Some(sb.features());
                info.max_levels = Some(sb.max_htree_levels());
                info.uuid = Some(sb.uuid_string());
                info.volume_name = Some(display_bytes(&sb.volume_name));
            }
            Err(e) => info.error = Some(e.to_string()),
        }
        out.push(info);
    }
    Ok(out)
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
