//! Fuzzes the ext4 on-disk parsers: superblock, dx_root, dx_node and leaf blocks, inodes, extent tree nodes and
//! a directory's first block come from a block device that wonk does not trust, and leaf names (any bytes, any
//! length) are hashed. Only panics, hangs and runaway allocations count as failures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::ext4::ancestors::{parent_from_first_block, parse_dir_inode, parse_extent_node, parse_inode};
use wonk::ext4::dx::{looks_like_root, parse_leaf, parse_leaf_names, parse_node, parse_root, Geometry};
use wonk::ext4::hash::DirHash;
use wonk::ext4::superblock;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, block)) = data.split_first() else { return };
    black_box(superblock::parse(block).is_ok());
    black_box(parse_dir_inode(block));
    black_box(parse_inode(block));
    let h = DirHash { version: flags % 8, seed: [u32::from(flags), 0, 7, 0] };
    black_box(h.hash(block));
    black_box(parse_extent_node(block));
    black_box(parent_from_first_block(block));
    let block_size = if flags & 1 == 0 { 1024 } else { 4096 };
    let mut b = block.to_vec();
    b.resize(block_size, 0);
    let g = Geometry { block_size, csum: flags & 2 != 0, hash_in_dirent: flags & 4 != 0 };
    let seed = (flags & 8 != 0).then_some(0x1234_5678);
    black_box(parse_root(&b, &g, 2 + (flags >> 7), seed).is_ok());
    black_box(parse_node(&b, &g, seed).is_ok());
    black_box(parse_leaf(&b, &g, seed).is_ok());
    black_box(looks_like_root(&b, &g));
    black_box(parse_leaf_names(&b, &g, seed, |name| {
        black_box(h.hash(name));
    }).is_ok());
});
