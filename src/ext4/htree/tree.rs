//! Reading the index: the dx_root and dx_node blocks, level by level, with every bound and checksum checked.

use super::*;

/// One index block as read.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) level: u8,
    pub(super) block: u32,
    pub(super) parent: Option<usize>,
    pub(super) count: u16,
    pub(super) limit: u16,
    pub(super) children: Vec<usize>,
    /// Leaves below a bottom node: a range in [`Tree::leaves`].
    pub(super) leaves: std::ops::Range<usize>,
}

/// A leaf, by its place in the hash order; it covers `lo` up to the next leaf's `lo`.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeafRef {
    pub(super) block: u32,
    pub(super) lo: u32,
    pub(super) bottom: u32,
}

#[derive(Debug)]
pub(super) struct Tree {
    pub(super) root: DxRoot,
    pub(super) nodes: Vec<Node>,
    pub(super) leaves: Vec<LeafRef>,
    /// The bottom index blocks, in hash order.
    pub(super) bottom: Vec<usize>,
    pub(super) rereads: u64,
}

impl Tree {
    pub(super) fn leaf_hi(&self, k: usize) -> u64 {
        self.leaves
            .get(k + 1)
            .map_or(HASH_SPACE, |l| u64::from(l.lo))
    }

    pub(super) fn leaf_width(&self, k: usize) -> u64 {
        self.leaf_hi(k).saturating_sub(u64::from(self.leaves[k].lo))
    }

    pub(super) fn full(&self, i: usize) -> bool {
        self.nodes[i].count == self.nodes[i].limit
    }

    /// Whether every index block from bottom node `i` up to the root is full.
    pub(super) fn path_full(&self, mut i: usize) -> bool {
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
pub(super) fn read_parsed<T>(
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
pub(super) fn child_starts(entries: &[DxEntry], lo: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    entries
        .iter()
        .enumerate()
        .map(move |(j, e)| (e.block, if j == 0 { lo } else { e.hash.max(lo) }))
}

pub(super) fn read_tree(
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
pub(super) fn repeat(nodes: &[Node], from: usize, to: usize, block: u32) -> Ext4Error {
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
pub(super) fn check_bounds(t: &Tree, dir_blocks: u64) -> Result<(), Ext4Error> {
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
