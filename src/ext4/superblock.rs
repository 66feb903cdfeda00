//! The ext4 superblock: the 1024 bytes at byte offset 1024 of the device, parsed for what the htree reader needs
//! (block size, the features that shape the directory index and its checksums, the checksum seed) and what a
//! user recognises a filesystem by (uuid, volume name).

use super::crc32c;
use serde::Serialize;
use std::fmt;

/// Where the superblock starts on the device, and how long it is.
pub const OFFSET: u64 = 1024;
pub const SIZE: usize = 1024;

pub const MAGIC: u16 = 0xef53;

pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub const INCOMPAT_LARGEDIR: u32 = 0x4000;
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
pub const INCOMPAT_CASEFOLD: u32 = 0x20000;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// The fields wonk uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub block_size: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    /// Up to 16 bytes, NUL padding removed.
    pub volume_name: Vec<u8>,
    /// The hash new directory indexes get (0 legacy, 1 half_md4, 2 tea, 6 siphash).
    pub def_hash_version: u8,
    /// `s_hash_seed`: the seed of every directory's name hash (all zero: the kernel's default seed).
    pub hash_seed: [u32; 4],
    /// `s_flags`: 0x1 signed hash, 0x2 unsigned hash, 0x4 test filesystem.
    pub flags: u32,
    /// Replaces the uuid as checksum seed when the csum_seed feature is on.
    pub checksum_seed: u32,
    /// The stored superblock checksum, and whether it matched (`None` without metadata_csum).
    pub checksum: u32,
    pub checksum_ok: Option<bool>,
    /// `s_first_data_block`: 1 with 1 KiB blocks, else 0; the group descriptors start in the block after it.
    pub first_data_block: u32,
    pub inodes_per_group: u32,
    /// Bytes per inode in the inode table (128 for revision 0).
    pub inode_size: u16,
    /// Bytes per group descriptor: 32, or `s_desc_size` with the 64bit feature.
    pub desc_size: u16,
}

/// Why 1024 bytes are not an ext4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockError {
    Truncated { have: usize },
    BadMagic(u16),
    BadBlockSize { log: u32 },
}

impl fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperblockError::Truncated { have } => {
                write!(f, "truncated: {have} of {SIZE} bytes")
            }
            SuperblockError::BadMagic(m) => {
                write!(f, "magic {m:#06x} is not ext2/3/4's {MAGIC:#06x}")
            }
            SuperblockError::BadBlockSize { log } => {
                write!(f, "s_log_block_size {log} gives no valid block size")
            }
        }
    }
}

impl std::error::Error for SuperblockError {}

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses the superblock from its 1024 bytes (longer input is cut).
pub fn parse(b: &[u8]) -> Result<Superblock, SuperblockError> {
    if b.len() < SIZE {
        return Err(SuperblockError::Truncated { have: b.len() });
    }
    let b = &b[..SIZE];
    let magic = le16(b, 0x38);
    if magic != MAGIC {
        return Err(SuperblockError::BadMagic(magic));
    }
    let log = le32(b, 0x18);
    // 1 KiB to 64 KiB are the block sizes ext4 mounts.
    if log > 6 {
        return Err(SuperblockError::BadBlockSize { log });
    }
    let feature_incompat = le32(b, 0x60);
    let feature_ro_compat = le32(b, 0x64);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[0x68..0x78]);
    let name = &b[0x78..0x88];
    let name_len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let mut blocks_count = u64::from(le32(b, 0x04));
    if feature_incompat & INCOMPAT_64BIT != 0 {
        blocks_count |= u64::from(le32(b, 0x150)) << 32;
    }
    let checksum = le32(b, 0x3fc);
    let checksum_ok = (feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0)
        .then(|| crc32c::update(!0, &b[..0x3fc]) == checksum);
    Ok(Superblock {
        inodes_count: le32(b, 0x00),
        blocks_count,
        block_size: 1024 << log,
        feature_compat: le32(b, 0x5c),
        feature_incompat,
        feature_ro_compat,
        uuid,
        volume_name: name[..name_len].to_vec(),
        def_hash_version: b[0xfc],
        hash_seed: {
            let mut seed = [0u8; 16];
            seed.copy_from_slice(&b[0xec..0xfc]);
            super::hash::seed_from_bytes(&seed)
        },
        flags: le32(b, 0x160),
        checksum_seed: le32(b, 0x270),
        checksum,
        checksum_ok,
        first_data_block: le32(b, 0x14),
        inodes_per_group: le32(b, 0x28),
        inode_size: if le32(b, 0x4c) == 0 {
            128
        } else {
            le16(b, 0x58)
        },
        desc_size: if feature_incompat & INCOMPAT_64BIT != 0 {
            le16(b, 0xfe)
        } else {
            32
        },
    })
}

impl Superblock {
    pub fn dir_index(&self) -> bool {
        self.feature_compat & COMPAT_DIR_INDEX != 0
    }

    pub fn large_dir(&self) -> bool {
        self.feature_incompat & INCOMPAT_LARGEDIR != 0
    }

    pub fn metadata_csum(&self) -> bool {
        self.feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0
    }

    pub fn casefold(&self) -> bool {
        self.feature_incompat & INCOMPAT_CASEFOLD != 0
    }

    pub fn encrypt(&self) -> bool {
        self.feature_incompat & INCOMPAT_ENCRYPT != 0
    }

    pub fn inline_data(&self) -> bool {
        self.feature_incompat & INCOMPAT_INLINE_DATA != 0
    }

    /// How many index levels a directory may have: 2, or 3 with large_dir.
    pub fn max_htree_levels(&self) -> u8 {
        if self.large_dir() {
            3
        } else {
            2
        }
    }

    /// The filesystem-wide start of every metadata checksum: `s_checksum_seed` with csum_seed, else the
    /// CRC-32C of the uuid.
    pub fn csum_seed(&self) -> u32 {
        if self.feature_incompat & INCOMPAT_CSUM_SEED != 0 {
            self.checksum_seed
        } else {
            crc32c::update(!0, &self.uuid)
        }
    }

    /// The uuid in its usual text form.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The features that matter to directories, by the names tune2fs uses.
    pub fn features(&self) -> Features {
        Features {
            dir_index: self.dir_index(),
            large_dir: self.large_dir(),
            metadata_csum: self.metadata_csum(),
            casefold: self.casefold(),
            encrypt: self.encrypt(),
            inline_data: self.inline_data(),
            csum_seed: self.feature_incompat & INCOMPAT_CSUM_SEED != 0,
            filetype: self.feature_incompat & INCOMPAT_FILETYPE != 0,
            extents: self.feature_incompat & INCOMPAT_EXTENTS != 0,
            bit64: self.feature_incompat & INCOMPAT_64BIT != 0,
        }
    }
}

/// Directory-relevant feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Features {
    pub dir_index: bool,
    pub large_dir: bool,
    pub metadata_csum: bool,
    pub casefold: bool,
    pub encrypt: bool,
    pub inline_data: bool,
    pub csum_seed: bool,
    pub filetype: bool,
    pub extents: bool,
    #[serde(rename = "64bit")]
    pub bit64: bool,
}

/// The name of a hash version as the kernel uses it (see [`super::hash::effective_version`]).
pub fn hash_name(v: u8) -> &'static str {
    match v {
        0 => "legacy",
        1 => "half_md4",
        2 => "tea",
        3 => "legacy_unsigned",
        4 => "half_md4_unsigned",
        5 => "tea_unsigned",
        6 => "siphash",
        _ => "unknown",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible superblock: 1 KiB blocks, dir_index, metadata_csum, a valid checksum.
    pub(crate) fn sample(log_block_size: u32, incompat: u32, ro_compat: u32) -> Vec<u8> {
        let mut b = vec![0u8; SIZE];
        b[0..4].copy_from_slice(&5000u32.to_le_bytes());
        b[4..8].copy_from_slice(&65536u32.to_le_bytes());
        b[0x18..0x1c].copy_from_slice(&log_block_size.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        b[0x5c..0x60].copy_from_slice(&COMPAT_DIR_INDEX.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        b[0x64..0x68].copy_from_slice(&ro_compat.to_le_bytes());
        for (i, c) in b[0x68..0x78].iter_mut().enumerate() {
            *c = i as u8 * 17;
        }
        b[0x78..0x7d].copy_from_slice(b"data1");
        b[0xfc] = 1;
        b[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        b[0x270..0x274].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let c = crc32c::update(!0, &b[..0x3fc]);
        b[0x3fc..].copy_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn parses_fields_and_features() {
        let b = sample(
            0,
            INCOMPAT_FILETYPE | INCOMPAT_64BIT,
            RO_COMPAT_METADATA_CSUM,
        );
        let sb = parse(&b).unwrap();
        assert_eq!(sb.block_size, 1024);
        assert_eq!(sb.inodes_count, 5000);
        assert_eq!(sb.blocks_count, (1 << 32) | 65536);
        assert_eq!(sb.volume_name, b"data1");
        assert_eq!(sb.def_hash_version, 1);
        assert!(sb.dir_index() && sb.metadata_csum() && !sb.large_dir() && !sb.casefold());
        assert_eq!(sb.max_htree_levels(), 2);
        assert_eq!(sb.checksum_ok, Some(true));
        assert_eq!(sb.csum_seed(), crc32c::update(!0, &sb.uuid));
        assert_eq!(sb.uuid_string(), "00112233-4455-6677-8899-aabbccddeeff");

        let b = sample(
            2,
            INCOMPAT_LARGEDIR | INCOMPAT_CSUM_SEED | INCOMPAT_CASEFOLD,
            0,
        );
        let sb = parse(&b).unwrap();
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.blocks_count, 65536);
        assert!(sb.large_dir() && sb.casefold());
        assert_eq!(sb.max_htree_levels(), 3);
        assert_eq!(sb.checksum_ok, None);
        assert_eq!(sb.csum_seed(), 0xdead_beef);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(parse(&[]), Err(SuperblockError::Truncated { have: 0 }));
        assert_eq!(
            parse(&[0xff; 100]),
            Err(SuperblockError::Truncated { have: 100 })
        );
        assert_eq!(parse(&[0u8; SIZE]), Err(SuperblockError::BadMagic(0)));
        let mut b = sample(0, 0, RO_COMPAT_METADATA_CSUM);
        b[0x18] = 40;
        assert_eq!(parse(&b), Err(SuperblockError::BadBlockSize { log: 40 }));
        let mut b = sample(0, 0, RO_COMPAT_METADATA_CSUM);
        b[0x100] ^= 1;
        assert_eq!(parse(&b).unwrap().checksum_ok, Some(false));
        for seed in 0..64u32 {
            let mut junk: Vec<u8> = (0..SIZE as u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
                .collect();
            junk[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
            let _ = parse(&junk);
        }
    }
}
