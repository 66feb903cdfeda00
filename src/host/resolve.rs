//! Opening and statting paths inside a root that wonk does not trust.
//!
//! A container owns everything below its root. It can turn any path into a symlink to `/etc/shadow` or
//! `../../..`. Through `/proc/PID/root`, an absolute symlink would resolve against wonk's own root, which is the
//! host. So every path inside a container (and every host path under `--host-root`) is opened with `openat2` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: the kernel resolves `..` and symlinks as if the root were `/`.

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use serde::Serialize;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// What identifies a file and what a user compares: device, inode, links, size, mtime, and the mount it was
/// reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub dev: DevNum,
    pub ino: u64,
    pub nlink: u32,
    pub size: u64,
    /// 512-byte blocks allocated (`st_blocks`).
    #[serde(skip)]
    pub blocks: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub mtime_nsec: u32,
    #[serde(skip)]
    pub mode: u16,
    #[serde(skip)]
    pub mnt_id: u64,
}

/// A device number, shown as `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// The numbers in a `dev_t` (`st_dev`, `st_rdev`).
    pub fn from_dev_t(d: u64) -> DevNum {
        DevNum {
            major: rustix::fs::major(d),
            minor: rustix::fs::minor(d),
        }
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl Serialize for DevNum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Identity {
    pub fn is_dir(&self) -> bool {
        u32::from(self.mode) & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        u32::from(self.mode) & libc::S_IFMT == libc::S_IFLNK
    }

    /// Whether two identities name the same inode.
    pub fn same_inode(&self, other: &Identity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Opens a directory to serve as a root, for example `/proc/PID/root`.
pub fn open_root(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` (absolute or relative, both taken from `root`) as an `O_PATH` handle without ever leaving
/// `root`. With `follow_final` false, a final symlink is opened as the link itself.
pub fn open_in_root(root: &impl AsFd, path: &[u8], follow_final: bool) -> io::Result<OwnedFd> {
    let rel = relative(path)?;
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow_final {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    openat2_retrying(root, super::bytes_path(rel), flags, resolve)
}

/// What a host path holds, read without following a symlink in any of its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFollow {
    /// The path leads to this inode through real directories only.
    Inode(Identity),
    /// The component ending at `at` (the whole path, or a directory on the way) is a symlink to `target`, on
    /// the filesystem `dev`; nothing past it was looked at.
    Symlink {
        at: Vec<u8>,
        target: Vec<u8>,
        dev: DevNum,
    },
}

/// Opens `path` below `root` as an `O_PATH` handle, refusing every symlink on the way (`RESOLVE_NO_SYMLINKS`);
/// a final symlink is opened as the link itself. `..` cannot leave `root`.
fn open_no_symlinks(root: &impl AsFd, path: &[u8]) -> io::Result<OwnedFd> {
    let rel = relative(path)?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    openat2_retrying(root, super::bytes_path(rel), flags, resolve)
}

/// Statx of `path` below `root` without following any symlink: a host path that a pod can reach into (a hostPath
/// or a volume) may have been swapped for a symlink to `/etc/shadow`, and its identity is not the path's. A
/// symlink is reported as one, with where it points, and not followed.
pub fn stat_no_follow(root: &impl AsFd, path: &[u8]) -> io::Result<NoFollow> {
    match open_no_symlinks(root, path) {
        Ok(fd) => {
            let id = identity(&fd)?;
            if id.is_symlink() {
                return Ok(NoFollow::Symlink {
                    at: path.to_vec(),
                    target: read_link(&fd)?,
                    dev: id.dev,
                });
            }
            Ok(NoFollow::Inode(id))
        }
        // A directory on the way is a symlink: find the first one, component by component.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let mut at = Vec::with_capacity(path.len());
            for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                at.push(b'/');
                at.extend_from_slice(comp);
                let fd = open_no_symlinks(root, &at)?;
                let id = identity(&fd)?;
                if id.is_symlink() {
                    let target = read_link(&fd)?;
                    return Ok(NoFollow::Symlink {
                        at,
                        target,
                        dev: id.dev,
                    });
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The target of a symlink opened with `O_PATH | O_NOFOLLOW`.
pub fn read_link(link: &impl AsFd) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(link, "", Vec::new())?.into_bytes())
}

/// `path` without its leading slashes (`.` for the root itself), refused if it holds a NUL byte.
fn relative(path: &[u8]) -> io::Result<&[u8]> {
    let mut rel = path;
    while let Some(r) = rel.strip_prefix(b"/") {
        rel = r;
    }
    if rel.is_empty() {
        rel = b".";
    }
    if rel.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a NUL byte",
        ));
    }
    Ok(rel)
}

/// `openat2`, tried again when a rename raced the lookup (the kernel answers EAGAIN; a few tries settle it).
fn openat2_retrying(
    dir: &impl AsFd,
    rel: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            Err(rustix::io::Errno::NOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this kernel lacks openat2 (Linux 5.6+), which wonk needs to look inside container roots safely",
                ))
            }
            r => return r.map_err(io::Error::from),
        }
    }
}

/// statx of an open handle.
pub fn identity(fd: &impl AsFd) -> io::Result<Identity> {
    statx_identity(fd, "", AtFlags::EMPTY_PATH).map(|(id, _)| id)
}

/// The file a /proc magic link (`/proc/PID/fd/N`, `/proc/PID/map_files/START-END`) at `name` in `dir` stands for,
/// statted through the link without opening anything (a FIFO or a device behind it is never opened).
pub fn identity_through<P: rustix::path::Arg>(dir: &impl AsFd, name: P) -> io::Result<Identity> {
    statx_identity(dir, name, AtFlags::NO_AUTOMOUNT).map(|(id, _)| id)
}

/// The root of the mount with id `mnt_id`, reached at `path` inside `root`; `None` when `path` does not lead to
/// that mount's root (another mount covers it, or it changed since the mount table was read).
///
/// One plain statx does the work in the common case. It may follow a hostile symlink out of the root, but its
/// answer is only used when it is the root of that very mount: mount ids are unique across all namespaces and
/// `STATX_ATTR_MOUNT_ROOT` says the inode is a mount's root, so nothing outside the mount can pass. Any other
/// answer is settled by [`open_in_root`].
pub fn stat_mount_root(root: &impl AsFd, path: &[u8], mnt_id: u64) -> io::Result<Option<Identity>> {
    let is_it = |id: &Identity, attrs: rustix::fs::StatxAttributes| {
        id.mnt_id == mnt_id && attrs.contains(rustix::fs::StatxAttributes::MOUNT_ROOT)
    };
    let mut rel = path;
    while let Some(r) = rel.strip_prefix(b"/") {
        rel = r;
    }
    if !rel.is_empty() && !rel.contains(&0) {
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        if let Ok((id, attrs)) = statx_identity(root, super::bytes_path(rel), flags) {
            if is_it(&id, attrs) {
                return Ok(Some(id));
            }
        }
    }
    let fd = open_in_root(root, path, false)?;
    let (id, attrs) = statx_identity(&fd, "", AtFlags::EMPTY_PATH)?;
    Ok(is_it(&id, attrs).then_some(id))
}

fn statx_identity<P: rustix::path::Arg>(
    dir: &impl AsFd,
    path: P,
    flags: AtFlags,
) -> io::Result<(Identity, rustix::fs::StatxAttributes)> {
    let mask = StatxFlags::BASIC_STATS | StatxFlags::MNT_ID;
    let st = rustix::fs::statx(dir, path, flags, mask)?;
    let id = Identity {
        dev: DevNum {
            major: st.stx_dev_major,
            minor: st.stx_dev_minor,
        },
        ino: st.stx_ino,
        nlink: st.stx_nlink,
        size: st.stx_size,
        blocks: st.stx_blocks,
        mtime: st.stx_mtime.tv_sec,
        mtime_nsec: st.stx_mtime.tv_nsec,
        mode: st.stx_mode,
        mnt_id: st.stx_mnt_id,
    };
    Ok((id, st.stx_attributes & st.stx_attributes_mask))
}

/// [`open_in_root`] then [`identity`].
pub fn stat_in_root(root: &impl AsFd, path: &[u8], follow_final: bool) -> io::Result<Identity> {
    identity(&open_in_root(root, path, follow_final)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = std::env::temp_dir().join(format!("wonk-resolve-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("inside"), b"in").unwrap();
        std::fs::write(dir.join("outside"), b"out").unwrap();
        std::os::unix::fs::symlink("/outside", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("sub/rel")).unwrap();
        std::os::unix::fs::symlink("/inside", root.join("good")).unwrap();
        let rootf = open_root(&root).unwrap();
        let outside = identity(&File::open(dir.join("outside")).unwrap()).unwrap();
        let inside = identity(&File::open(root.join("inside")).unwrap()).unwrap();

        for p in [&b"/abs"[..], b"sub/rel", b"../outside", b"/../../outside"] {
            match stat_in_root(&rootf, p, true) {
                Ok(id) => assert!(
                    !id.same_inode(&outside),
                    "{:?} escaped",
                    String::from_utf8_lossy(p)
                ),
                Err(e) => assert!(super::super::vanished(&e), "{e}"),
            }
        }
        assert!(stat_in_root(&rootf, b"/good", true)
            .unwrap()
            .same_inode(&inside));
        assert!(stat_in_root(&rootf, b"/good", false).unwrap().is_symlink());

        // Without following: a final symlink and a directory symlink on the way are named, with their targets.
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"f").unwrap();
        std::os::unix::fs::symlink("d", root.join("dl")).unwrap();
        let f = identity(&File::open(root.join("d/f")).unwrap()).unwrap();
        assert_eq!(stat_no_follow(&rootf, b"/d/f").unwrap(), NoFollow::Inode(f));
        let link = |at: &[u8], target: &[u8]| match stat_no_follow(&rootf, at).unwrap() {
            NoFollow::Symlink {
                at: a, target: t, ..
            } => assert_eq!((&a[..], &t[..]), (at, target)),
            other => panic!("{other:?}"),
        };
        link(b"/abs", b"/outside");
        link(b"/good", b"/inside");
        match stat_no_follow(&rootf, b"/dl/f").unwrap() {
            NoFollow::Symlink { at, target, .. } => {
                assert_eq!((&at[..], &target[..]), (&b"/dl"[..], &b"d"[..]))
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
