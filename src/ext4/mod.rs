//! ext4 on-disk format, read live from the node: superblock features ([`superblock`]), the directory index
//! (htree: dx_root, dx_node and leaf blocks, [`dx`]), and the reader that maps a directory's blocks with FIEMAP
//! and reads them from its block device ([`read`]). [`htree`] turns that into a report: how full a directory's
//! index is, which share of the hash space fails to take a new name right now, and how many entries are left
//! before the first "index full" ENOSPC.
//!
//! [`superblock`], [`dx`] and [`crc32c`] are pure: bytes in, typed values or typed errors out, never a panic.
//! Only [`read`] and [`htree`] touch the node, and only through [`crate::host::Host`].

pub mod ancestors;
pub mod crc32c;
pub mod dx;
pub mod hash;
pub mod htree;
mod model;
pub mod read;
pub mod superblock;

pub use htree::{analyze, analyze_with, filesystems, FsInfo, HtreeReport, Options};

use std::fmt;
use std::io;

/// Why a directory's index could not be analysed.
#[derive(Debug)]
pub enum Ext4Error {
    /// A read or syscall failed; `what` says which.
    Io { what: String, source: io::Error },
    /// The path is not a directory.
    NotADirectory { path: String },
    /// The directory is on another filesystem; `fs` names it (`xfs`, `btrfs`, `tmpfs`, ...).
    NotExt4 { path: String, fs: String },
    /// An overlay directory that has no upper directory on the host to read.
    Overlay { path: String, why: String },
    /// The block device behind the filesystem cannot be found or is not what the directory lives on.
    Device { dev: String, why: String },
    /// The superblock is unreadable as ext4.
    Superblock(superblock::SuperblockError),
    /// An index or leaf block is corrupt (or kept changing under every re-read).
    Corrupt { block: u64, problem: dx::DxError },
    /// The directory holds more index blocks than wonk reads.
    TooLarge { index_blocks: u64, cap: u64 },
}

impl fmt::Display for Ext4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ext4Error::Io { what, source } => write!(f, "{what}: {source}"),
            Ext4Error::NotADirectory { path } => write!(f, "{path}: not a directory"),
            Ext4Error::NotExt4 { path, fs } => {
                write!(
                    f,
                    "{path}: on {fs}, not ext4; the htree index exists only on ext4"
                )
            }
            Ext4Error::Overlay { path, why } => write!(f, "{path}: on overlay, and {why}"),
            Ext4Error::Device { dev, why } => write!(f, "block device {dev}: {why}"),
            Ext4Error::Superblock(e) => write!(f, "superblock: {e}"),
            Ext4Error::Corrupt { block, problem } => {
                write!(f, "directory block {block}: {problem}")
            }
            Ext4Error::TooLarge { index_blocks, cap } => write!(
                f,
                "the index has {index_blocks} blocks, more than the {cap} wonk reads"
            ),
        }
    }
}

// The cause is part of the message, so `source()` stays empty and `{:#}` does not print it twice.
impl std::error::Error for Ext4Error {}

impl Ext4Error {
    pub(crate) fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Ext4Error {
        Ext4Error::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}
