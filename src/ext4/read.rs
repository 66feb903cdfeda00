//! Reading a live directory's blocks: open the directory on the node (inside `--host-root`, like every node
//! path), learn its inode, generation and flags, map its logical blocks to device offsets with FS_IOC_FIEMAP,
//! and read those offsets from the filesystem's block device.
//!
//! The device is read buffered, never with O_DIRECT: ext4 keeps directory blocks in the block device's page
//! cache, so a buffered read sees the current index, even blocks not yet written back. O_DIRECT reads, and
//! reads of the image file behind a loop device, see only what reached the disk.

use super::superblock::{self, Superblock};
use super::Ext4Error;
use crate::host::mountinfo::{self, Mount};
use crate::host::resolve::DevNum;
use crate::host::{bytes_path, procfs, read_bounded, Host};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const EXT4_MAGIC: i64 = 0xef53;
const OVERLAY_MAGIC: i64 = 0x794c_7630;

/// An open directory on the node.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where it is on the node, after symlinks.
    pub path: PathBuf,
    pub dev: DevNum,
    pub ino: u64,
    pub size: u64,
    /// i_generation, part of the directory's checksum seed.
    pub generation: u32,
    /// The inode flags (FS_IOC_GETFLAGS): [`super::dx::INDEX_FL`] and friends.
    pub flags: u32,
}

/// Opens a directory at a node path. Symlinks resolve inside the host root, as in [`crate::host::resolve`].
pub fn open_dir(host: &Host, path: &Path) -> Result<Dir, Ext4Error> {
    let shown = path.display().to_string();
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut rel = bytes;
    while let Some(r) = rel.strip_prefix(b"/") {
        rel = r;
    }
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    let fd = loop {
        match rustix::fs::openat2(
            host.root_dir(),
            bytes_path(rel),
            flags,
            Mode::empty(),
            resolve,
        ) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            r => break r.map_err(|e| Ext4Error::io(format!("opening {shown}"), e))?,
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Ext4Error::io(format!("stat {shown}"), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Ext4Error::NotADirectory { path: shown });
    }
    let seen = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
    let node_path = seen
        .and_then(|p| host.to_node_path(&p))
        .unwrap_or_else(|| path.to_path_buf());
    let dev = DevNum::from_dev_t(st.st_dev);
    Ok(Dir {
        path: node_path,
        dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        generation: 0,
        flags: 0,
        fd,
    })
}

impl Dir {
    /// The filesystem magic from statfs.
    pub fn fs_magic(&self) -> Result<i64, Ext4Error> {
        let s = rustix::fs::fstatfs(&self.fd)
            .map_err(|e| Ext4Error::io(format!("statfs {}", self.path.display()), e))?;
        #[allow(clippy::unnecessary_cast)]
        Ok(s.f_type as i64)
    }

    /// The size now: the directory may have grown since it was opened.
    pub fn size_now(&self) -> Result<u64, Ext4Error> {
        let st = rustix::fs::fstat(&self.fd)
            .map_err(|e| Ext4Error::io(format!("stat {}", self.path.display()), e))?;
        Ok(st.st_size as u64)
    }

    /// Reads the inode flags and generation; both need the directory on ext4.
    pub fn read_inode_info(&mut self) -> Result<(), Ext4Error> {
        let shown = self.path.display().to_string();
        self.flags = rustix::fs::ioctl_getflags(&self.fd)
            .map_err(|e| Ext4Error::io(format!("FS_IOC_GETFLAGS on {shown}"), e))?
            .bits();
        let mut generation: libc::c_long = 0;
        // SAFETY: FS_IOC_GETVERSION writes at most one long through the pointer, which points at one.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::FS_IOC_GETVERSION,
                &mut generation as *mut libc::c_long,
            )
        };
        if r != 0 {
            return Err(Ext4Error::io(
                format!("FS_IOC_GETVERSION on {shown}"),
                std::io::Error::last_os_error(),
            ));
        }
        self.generation = generation as u32;
        Ok(())
    }

    /// Maps the directory's blocks with FIEMAP.
    pub fn map(&self, block_size: u32) -> Result<Mapping, Ext4Error> {
        fiemap(&self.fd, u64::from(block_size))
            .map_err(|e| Ext4Error::io(format!("FS_IOC_FIEMAP on {}", self.path.display()), e))
    }
}

/// The name of a filesystem by its statfs magic.
pub fn fs_name(magic: i64) -> Option<&'static str> {
    Some(match magic as u32 {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlay",
        0x6969 => "nfs",
        0x2fc1_2fc1 => "zfs",
        0xf2f5_2010 => "f2fs",
        0x7371_7368 => "squashfs",
        0xe0f5_e1e2 => "erofs",
        0x6573_5546 => "fuse",
        0x8584_58f6 => "ramfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x6367_7270 => "cgroup2",
        0x4d44 => "vfat",
        0x2011_bab0 => "exfat",
        0x5346_544e => "ntfs",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x00c3_6400 => "ceph",
        0xca45_1a4e => "bcachefs",
        0x5265_4973 => "reiserfs",
        0x3153_464a => "jfs",
        0x9660 => "iso9660",
        0x0027_e0eb => "cgroup",
        _ => return None,
    })
}

/// One run of a file's blocks on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    pub length: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
    /// The location is not known yet or the data is encoded; raw reads would be wrong.
    pub unreadable: bool,
}

/// Where a directory's blocks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// The directory lives inside its inode (inline_data): never indexed.
    Inline,
    Extents(Vec<Extent>),
}

const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
const FIEMAP_BATCH: usize = 256;
/// _IOWR('f', 11, struct fiemap), with sizeof(struct fiemap) == 32.
const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; FIEMAP_BATCH],
}

fn fiemap(fd: &impl AsFd, block_size: u64) -> std::io::Result<Mapping> {
    let mut out = Vec::new();
    let mut start = 0u64;
    // A directory cannot have more extents than blocks; the bound only guards against a kernel that loops.
    for _ in 0..(1 << 20) {
        let mut fm = Box::new(Fiemap {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: 0,
            fm_mapped_extents: 0,
            fm_extent_count: FIEMAP_BATCH as u32,
            fm_reserved: 0,
            fm_extents: [FiemapExtent::default(); FIEMAP_BATCH],
        });
        // SAFETY: the buffer is a struct fiemap followed by fm_extent_count extents, as the ioctl expects.
        let r = unsafe {
            libc::ioctl(
                fd.as_fd().as_raw_fd(),
                FS_IOC_FIEMAP as _,
                &mut *fm as *mut Fiemap,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = (fm.fm_mapped_extents as usize).min(FIEMAP_BATCH);
        if n == 0 {
            break;
        }
        let mut last = false;
        for e in &fm.fm_extents[..n] {
            if e.fe_flags & FIEMAP_EXTENT_DATA_INLINE != 0 {
                return Ok(Mapping::Inline);
            }
            out.push(Extent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                length: e.fe_length,
                unwritten: e.fe_flags & FIEMAP_EXTENT_UNWRITTEN != 0,
                unreadable: e.fe_flags
                    & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED)
                    != 0,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let tail = fm.fm_extents[n - 1];
        let next = tail
            .fe_logical
            .saturating_add(tail.fe_length.max(block_size));
        if last || next <= start {
            break;
        }
        start = next;
    }
    out.sort_by_key(|e| e.logical);
    Ok(Mapping::Extents(out))
}

/// A filesystem's block device, open for buffered reads.
#[derive(Debug)]
pub struct Device {
    file: File,
    pub dev: DevNum,
    /// The kernel's name (`vda`, `md1`, `loop3`).
    pub name: String,
}

/// Opens the block device with number `dev`: `/sys/dev/block/MAJ:MIN/uevent` names it, `/dev/NAME` (or the
/// `/dev/block/MAJ:MIN` link) is opened read-only, and the opened file must be that very device.
pub fn open_device(host: &Host, dev: DevNum) -> Result<Device, Ext4Error> {
    let uevent = host.path(format!("/sys/dev/block/{dev}/uevent"));
    let text = read_bounded(&uevent, 64 << 10).map_err(|e| Ext4Error::Device {
        dev: dev.to_string(),
        why: format!(
            "{} unreadable ({e}); is this a block device's filesystem?",
            uevent.display()
        ),
    })?;
    let name = parse_devname(&text).ok_or_else(|| Ext4Error::Device {
        dev: dev.to_string(),
        why: format!("{} names no DEVNAME", uevent.display()),
    })?;
    open_named(host, dev, name)
}

/// Opens block device `dev` by its kernel name (`/dev/NAME`, else the `/dev/block/MAJ:MIN` link), when the caller
/// knows the name already (a kernel message or the user gave it); the opened file must be that very device.
pub fn open_named(host: &Host, dev: DevNum, name: String) -> Result<Device, Ext4Error> {
    let fail = |why: String| Ext4Error::Device {
        dev: dev.to_string(),
        why,
    };
    let candidates = [
        host.path(format!("/dev/{name}")),
        host.path(format!("/dev/block/{dev}")),
    ];
    let mut why = Vec::new();
    for p in &candidates {
        match File::open(p) {
            Ok(file) => {
                let st = rustix::fs::fstat(&file)
                    .map_err(|e| fail(format!("stat {}: {e}", p.display())))?;
                let rdev = DevNum::from_dev_t(st.st_rdev);
                if st.st_mode & libc::S_IFMT == libc::S_IFBLK && rdev == dev {
                    return Ok(Device { file, dev, name });
                }
                why.push(format!("{} is not block device {dev}", p.display()));
            }
            Err(e) => why.push(format!("{}: {e}", p.display())),
        }
    }
    Err(fail(format!(
        "cannot open it ({}); wonk reads the index from the device and needs root and the node's /dev",
        why.join("; ")
    )))
}

/// DEVNAME from a uevent file, when it is a plain device name.
pub fn parse_devname(uevent: &[u8]) -> Option<String> {
    let line = uevent
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"DEVNAME="))?;
    let name = std::str::from_utf8(line).ok()?.trim();
    let plain = !name.is_empty()
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    plain.then(|| name.to_string())
}

impl Device {
    /// A device backed by any file, for tests that lay out blocks themselves.
    #[cfg(test)]
    pub(crate) fn from_file(file: File, name: &str) -> Device {
        Device {
            file,
            dev: DevNum { major: 0, minor: 0 },
            name: name.to_string(),
        }
    }

    /// Reads exactly `buf.len()` bytes at byte offset `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    /// Asks the kernel to start reading these bytes into the page cache (POSIX_FADV_WILLNEED) and returns.
    pub fn prefetch(&self, off: u64, len: u64) {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return;
        };
        // SAFETY: a plain syscall on a descriptor this device owns; it reads no memory of ours.
        unsafe {
            libc::posix_fadvise(self.file.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED);
        }
    }

    /// Whether `len` bytes at `off` are in the page cache now: a read that may not wait for the disk
    /// (`preadv2` with `RWF_NOWAIT`) gets them all.
    pub fn is_cached(&self, off: u64, len: usize) -> bool {
        let mut buf = vec![0u8; len];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let Ok(off) = libc::off_t::try_from(off) else {
            return false;
        };
        // SAFETY: one iovec over `buf`, which outlives the call; the kernel writes at most `len` bytes into it.
        let n = unsafe {
            libc::syscall(
                libc::SYS_preadv2,
                self.file.as_raw_fd(),
                &iov as *const libc::iovec,
                1,
                off,
                0,
                libc::RWF_NOWAIT,
            )
        };
        usize::try_from(n).is_ok_and(|n| n == len)
    }

    pub fn superblock(&self) -> Result<Superblock, Ext4Error> {
        let mut buf = vec![0u8; superblock::SIZE];
        self.read_at(superblock::OFFSET, &mut buf).map_err(|e| {
            Ext4Error::io(format!("reading the superblock of /dev/{}", self.name), e)
        })?;
        superblock::parse(&buf).map_err(Ext4Error::Superblock)
    }
}

/// Why a directory block could not be read.
#[derive(Debug)]
pub enum BlockError {
    /// No extent covers the block, or its location is unknown.
    Unmapped,
    Io(std::io::Error),
}

/// Reads directory-logical blocks through a FIEMAP mapping. A block the mapping does not cover makes the reader
/// map the directory again (once per block): a directory being written to grows while it is read.
#[derive(Debug)]
pub struct BlockReader<'a> {
    pub device: &'a Device,
    pub block_size: u32,
    extents: std::cell::RefCell<Vec<Extent>>,
    dir: Option<&'a Dir>,
}

impl<'a> BlockReader<'a> {
    /// A reader over a mapping; with `dir`, the mapping is refreshed from it when a block is missing.
    pub fn new(
        device: &'a Device,
        block_size: u32,
        extents: Vec<Extent>,
        dir: Option<&'a Dir>,
    ) -> Self {
        BlockReader {
            device,
            block_size,
            extents: std::cell::RefCell::new(extents),
            dir,
        }
    }

    /// The directory's logical block `lblk`.
    pub fn read(&self, lblk: u64) -> Result<Vec<u8>, BlockError> {
        match self.read_mapped(lblk) {
            Err(BlockError::Unmapped) => {
                let Some(dir) = self.dir else {
                    return Err(BlockError::Unmapped);
                };
                match dir.map(self.block_size) {
                    Ok(Mapping::Extents(e)) => *self.extents.borrow_mut() = e,
                    Ok(Mapping::Inline) => return Err(BlockError::Unmapped),
                    Err(e) => return Err(BlockError::Io(std::io::Error::other(e.to_string()))),
                }
                self.read_mapped(lblk)
            }
            r => r,
        }
    }

    /// Asks the kernel to start reading these blocks (POSIX_FADV_WILLNEED), so that the reads that follow wait
    /// for one round trip to the disk instead of one each. Unmapped blocks and errors are left to `read`.
    pub fn prefetch(&self, lblks: impl IntoIterator<Item = u64>) {
        let bs = u64::from(self.block_size);
        for lblk in lblks {
            if let Ok(Some(at)) = self.physical(lblk) {
                // SAFETY: a plain syscall on a descriptor this reader owns; it reads no memory of ours.
                unsafe {
                    libc::posix_fadvise(
                        self.device.file.as_raw_fd(),
                        at as libc::off_t,
                        bs as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    );
                }
            }
        }
    }

    /// The device offset of logical block `lblk`; `None` for an unwritten (all-zero) block.
    fn physical(&self, lblk: u64) -> Result<Option<u64>, BlockError> {
        let bs = u64::from(self.block_size);
        let pos = lblk.checked_mul(bs).ok_or(BlockError::Unmapped)?;
        let extents = self.extents.borrow();
        let i = extents.partition_point(|e| e.logical <= pos);
        let e = i
            .checked_sub(1)
            .map(|i| extents[i])
            .filter(|e| pos + bs <= e.logical.saturating_add(e.length) && !e.unreadable)
            .ok_or(BlockError::Unmapped)?;
        if e.unwritten {
            return Ok(None);
        }
        e.physical
            .checked_add(pos - e.logical)
            .map(Some)
            .ok_or(BlockError::Unmapped)
    }

    fn read_mapped(&self, lblk: u64) -> Result<Vec<u8>, BlockError> {
        let mut buf = vec![0u8; self.block_size as usize];
        if let Some(at) = self.physical(lblk)? {
            self.device.read_at(at, &mut buf).map_err(BlockError::Io)?;
        }
        Ok(buf)
    }
}

/// For a directory on overlay: the same directory in the overlay's upper layer, through the host's mount table.
pub fn overlay_upper(host: &Host, dir: &Dir) -> Result<PathBuf, Ext4Error> {
    let shown = dir.path.display().to_string();
    let ov = |why: String| Ext4Error::Overlay {
        path: shown.clone(),
        why,
    };
    let data = procfs::mountinfo(host, 1)
        .map_err(|e| ov(format!("the host's mount table is unreadable ({e})")))?;
    let (mounts, _) = mountinfo::parse(&data);
    let path = dir.path.as_os_str().as_encoded_bytes();
    let m = covering_mount(&mounts, (dir.dev.major, dir.dev.minor), path, "overlay").ok_or_else(
        || {
            ov(format!(
                "no overlay mount of device {} covers it in the host's mount table",
                dir.dev
            ))
        },
    )?;
    let upper = m
        .super_option("upperdir")
        .ok_or_else(|| ov("the overlay has no upper directory (read-only layers only)".into()))?;
    let inner = mountinfo::path_join(m.root_path(), mountinfo::path_rest(path, &m.mount_point));
    Ok(bytes_path(&mountinfo::path_join(
        &mountinfo::unescape_overlay(upper),
        &inner,
    ))
    .to_path_buf())
}

/// The mount of device `dev` and type `fs_type` with the longest mount point above `path`.
pub fn covering_mount<'a>(
    mounts: &'a [Mount],
    dev: (u32, u32),
    path: &[u8],
    fs_type: &str,
) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.dev() == dev
                && (fs_type.is_empty() || m.fs_type == fs_type)
                && mountinfo::path_under(path, &m.mount_point)
        })
        .max_by_key(|(i, m)| (m.mount_point.len(), *i))
        .map(|(_, m)| m)
}

/// Names the filesystem a directory is on, for an error: by statfs magic, else by the host's mount table.
pub fn describe_fs(host: &Host, dir: &Dir, magic: i64) -> String {
    if let Some(n) = fs_name(magic) {
        return n.to_string();
    }
    procfs::mountinfo(host, 1)
        .ok()
        .and_then(|d| {
            let (mounts, _) = mountinfo::parse(&d);
            let path = dir.path.as_os_str().as_encoded_bytes();
            covering_mount(&mounts, (dir.dev.major, dir.dev.minor), path, "")
                .map(|m| m.fs_type.clone())
        })
        .unwrap_or_else(|| format!("a filesystem with magic {magic:#x}"))
}

pub(crate) fn is_ext4(magic: i64) -> bool {
    magic == EXT4_MAGIC
}

pub(crate) fn is_overlay(magic: i64) -> bool {
    magic == OVERLAY_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devname_from_uevent() {
        assert_eq!(
            parse_devname(b"MAJOR=7\nMINOR=3\nDEVNAME=loop3\nDEVTYPE=disk\n"),
            Some("loop3".into())
        );
        assert_eq!(parse_devname(b"DEVNAME=../etc/passwd\n"), None);
        assert_eq!(parse_devname(b"MAJOR=7\n"), None);
        assert_eq!(parse_devname(b"DEVNAME=\n"), None);
        assert_eq!(
            parse_devname(b"DEVNAME=mapper/x\n"),
            Some("mapper/x".into())
        );
    }

    #[test]
    fn overlay_upper_from_mount_table() {
        let line = b"700 600 0:77 / /run/c/k8s.io/abc/rootfs rw - overlay overlay rw,lowerdir=/s/1/fs,upperdir=/var/s/7\\,x/fs,workdir=/s/7/work";
        let m = mountinfo::parse_line(line).unwrap();
        let mounts = vec![m];
        let path = b"/run/c/k8s.io/abc/rootfs/app/tmp";
        let found = covering_mount(&mounts, (0, 77), path, "overlay").unwrap();
        assert_eq!(
            mountinfo::unescape_overlay(found.super_option("upperdir").unwrap()),
            b"/var/s/7,x/fs"
        );
        assert!(covering_mount(&mounts, (0, 78), path, "overlay").is_none());
        assert!(covering_mount(&mounts, (0, 77), b"/run/c/other", "overlay").is_none());
    }

    #[test]
    fn names_filesystems() {
        assert_eq!(fs_name(0x5846_5342), Some("xfs"));
        assert_eq!(fs_name(0x0102_1994), Some("tmpfs"));
        assert_eq!(fs_name(0x9123_683e_u32 as i64), Some("btrfs"));
        assert_eq!(fs_name(0x1234), None);
    }
}
