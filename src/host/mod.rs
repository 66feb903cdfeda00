//! The node as data: every file wonk reads goes through a [`Host`], which knows where the node's root is
//! (`--host-root`), so the same code runs on the node itself and inside a DaemonSet that mounts the host's `/`
//! at `/host`.
//!
//! Submodules hold the readers for each kind of kernel-provided input: [`procfs`] for processes,
//! [`mountinfo`] for mount tables and [`resolve`] for opening paths inside an untrusted root.

#[cfg(feature = "bpf")]
pub(crate) mod bpf;
#[cfg(feature = "bpf")]
pub mod held;
pub mod mountinfo;
pub mod procfs;
pub mod resolve;
pub mod tasks;
pub mod walk;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Something wonk could not see, and why. Shown to the user so that silence is never mistaken for health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlindSpot {
    /// The check or layer that was blind (`ghosts`, `attribution`, ...).
    pub scope: String,
    pub what: String,
    pub why: String,
}

impl BlindSpot {
    pub fn new(
        scope: impl Into<String>,
        what: impl Into<String>,
        why: impl Into<String>,
    ) -> BlindSpot {
        BlindSpot {
            scope: scope.into(),
            what: what.into(),
            why: why.into(),
        }
    }
}

/// The node wonk observes.
#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    root_dir: File,
}

impl Host {
    /// Opens the node rooted at `root` (`/` on the node itself, `/host` in a DaemonSet).
    pub fn open(root: &Path) -> anyhow::Result<Host> {
        let root_dir = File::open(root)
            .map_err(|e| anyhow::anyhow!("cannot open --host-root {}: {e}", root.display()))?;
        if !root_dir.metadata()?.is_dir() {
            anyhow::bail!("--host-root {} is not a directory", root.display());
        }
        let host = Host {
            root: root.to_path_buf(),
            root_dir,
        };
        if !host.path("/proc/self").exists() && !host.path("/proc/1").exists() {
            anyhow::bail!(
                "no procfs under --host-root {}: expected {} (mount the host's /proc there)",
                root.display(),
                host.path("/proc").display()
            );
        }
        Ok(host)
    }

    /// The root this host is read under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory handle for the host's `/`, for resolving host paths with [`resolve`].
    pub fn root_dir(&self) -> &File {
        &self.root_dir
    }

    /// Maps an absolute node path (`/proc/1/mountinfo`) to where wonk reads it (`/host/proc/1/mountinfo`).
    pub fn path(&self, node_path: impl AsRef<Path>) -> PathBuf {
        let p = node_path.as_ref();
        let rel = p.strip_prefix("/").unwrap_or(p);
        if self.root == Path::new("/") {
            Path::new("/").join(rel)
        } else {
            self.root.join(rel)
        }
    }

    /// The node path of a pid's directory in procfs.
    pub fn proc_pid(&self, pid: u32) -> PathBuf {
        self.path(format!("/proc/{pid}"))
    }

    /// Turns a path that wonk sees (for example from readlink of /proc/self/fd) back into a node path.
    pub fn to_node_path(&self, seen: &Path) -> Option<PathBuf> {
        if self.root == Path::new("/") {
            return Some(seen.to_path_buf());
        }
        seen.strip_prefix(&self.root)
            .ok()
            .map(|rest| Path::new("/").join(rest))
    }
}

/// Whether an error means "the thing went away" (a process exited, a mount was unmounted) rather than a fault.
/// Vanishing is normal on a live node and is never reported.
pub fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENOTDIR)
    ) || e.kind() == io::ErrorKind::NotFound
}

/// Reads at most `limit` bytes of a file; the kernel's pseudo-files and hostile on-disk files alike stay bounded.
/// Opened with `open(2)` itself: musl's `open` follows each O_CLOEXEC open with an `fcntl`, one syscall more per
/// file, and `wonk top` reads thousands of files a second.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    read_fd_bounded(&fd, limit)
}

/// Reads at most `limit` bytes from an open file.
pub fn read_fd_bounded(fd: &std::os::fd::OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // procfs answers each read with at most what fits; a roomy first buffer saves many small reads.
    let mut buf = Vec::with_capacity(limit.min(16 << 10));
    while buf.len() < limit {
        if buf.len() == buf.capacity() {
            buf.reserve((limit - buf.len()).min(buf.len().max(4096)));
        }
        let room = (buf.capacity() - buf.len()).min(limit - buf.len());
        match read_into_spare(fd, &mut buf, room) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

/// What a file mode says the file is, for errors (`a FIFO`, `a character device`).
pub fn file_type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "of an unknown type",
    }
}

fn not_a(what: &str, found: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not {what}", file_type_name(found)),
    )
}

/// Reads a node file that must be a regular file of at most `limit` bytes, from `dir` (`path` relative to it, or
/// absolute). A final symlink is not followed, and nothing else is ever opened for reading: the file is first
/// opened `O_PATH | O_NOFOLLOW`, which opens no FIFO and no device, and only once `fstat` says it is a regular
/// file is that same inode reopened (through `/proc/self/fd`) for reading, `O_NONBLOCK`. A larger file is an error
/// rather than a prefix. Returns the bytes and the file's identity (for counting hard links once).
pub fn read_regular_at(
    dir: &impl std::os::fd::AsFd,
    path: &Path,
    limit: u64,
) -> io::Result<(Vec<u8>, resolve::Identity)> {
    let (file, id) = open_regular_at(dir, path, limit)?;
    Ok((read_fd_bounded(&file, limit)?, id))
}

/// The open half of [`read_regular_at`], for a caller that decides from the identity whether to read, with
/// [`read_fd_bounded`].
pub fn open_regular_at(
    dir: &impl std::os::fd::AsFd,
    path: &Path,
    limit: u64,
) -> io::Result<(std::os::fd::OwnedFd, resolve::Identity)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, path, flags, Mode::empty())?;
    let id = resolve::identity(&fd)?;
    if u32::from(id.mode) & libc::S_IFMT != libc::S_IFREG {
        return Err(not_a("a regular file", id.mode.into()));
    }
    if id.size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {} bytes, more than the {limit} wonk reads", id.size),
        ));
    }
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = rustix::fs::open(reopen.as_str(), flags, Mode::empty())
        .map_err(|e| io::Error::other(format!("reopening it through {reopen}: {e}")))?;
    Ok((file, id))
}

/// [`read_regular_at`] of an absolute path as wonk sees it.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<(Vec<u8>, resolve::Identity)> {
    read_regular_at(&rustix::fs::CWD, path, limit)
}

/// Opens a node directory without following a final symlink. `O_DIRECTORY` makes the kernel refuse anything else
/// before opening it, so a FIFO or a device node at the path is never opened; the error then says what it is.
pub fn open_dir_at(dir: &impl std::os::fd::AsFd, path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, path, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(e @ (rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)) => {
            match rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
                    Err(not_a("a directory", st.st_mode))
                }
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// One `read(2)` of at most `room` bytes appended to `buf` (which has that much spare capacity); the bytes read.
fn read_into_spare(
    fd: &std::os::fd::OwnedFd,
    buf: &mut Vec<u8>,
    room: usize,
) -> rustix::io::Result<usize> {
    let (filled, _) = rustix::io::read(fd, &mut buf.spare_capacity_mut()[..room])?;
    let n = filled.len();
    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Bytes to a `Path` without loss (paths on Linux are bytes, not UTF-8).
pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Renders bytes that should be text for display, escaping what is not valid UTF-8.
pub fn display_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_map_under_root() {
        let h = Host {
            root: PathBuf::from("/host"),
            root_dir: File::open("/").unwrap(),
        };
        assert_eq!(
            h.path("/proc/1/cgroup"),
            PathBuf::from("/host/proc/1/cgroup")
        );
        assert_eq!(
            h.to_node_path(Path::new("/host/var/lib/x")),
            Some(PathBuf::from("/var/lib/x"))
        );
        assert_eq!(h.to_node_path(Path::new("/elsewhere")), None);
        let h = Host {
            root: PathBuf::from("/"),
            root_dir: File::open("/").unwrap(),
        };
        assert_eq!(h.path("/proc/1/cgroup"), PathBuf::from("/proc/1/cgroup"));
    }

    /// Nothing but a regular file is opened for reading, no final symlink is followed, and nothing larger than
    /// the limit is read; each refusal says what the file is.
    #[test]
    fn regular_files_only() {
        let dir = std::env::temp_dir().join(format!("wonk-read-regular-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink(dir.join("f"), dir.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = |p: &str, limit| read_regular(&dir.join(p), limit).unwrap_err().to_string();
        let (data, id) = read_regular(&dir.join("f"), 5).unwrap();
        let results = (
            data,
            id.size,
            err("f", 4),
            err("link", 10),
            err("fifo", 10),
            open_dir_at(&rustix::fs::CWD, &dir.join("fifo")).map(drop),
            open_dir_at(&rustix::fs::CWD, &dir).map(drop),
            read_regular(&dir.join("missing"), 10).map(drop),
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(results.0, b"hello");
        assert_eq!(results.1, 5);
        assert_eq!(results.2, "is 5 bytes, more than the 4 wonk reads");
        assert_eq!(results.3, "is a symbolic link, not a regular file");
        assert_eq!(results.4, "is a FIFO, not a regular file");
        assert_eq!(
            results.5.unwrap_err().to_string(),
            "is a FIFO, not a directory"
        );
        assert!(results.6.is_ok());
        assert!(vanished(&results.7.unwrap_err()));
    }

    #[test]
    fn bounded_reads_stop_at_the_limit_or_the_end() {
        let dir = std::env::temp_dir().join(format!("wonk-read-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let whole = read_bounded(&p, 1 << 20);
        let head = read_bounded(&p, 17_000);
        let none = read_bounded(&p, 0);
        let missing = read_bounded(&dir.join("missing"), 10);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(whole.unwrap(), data);
        assert_eq!(head.unwrap(), &data[..17_000]);
        assert!(none.unwrap().is_empty());
        assert!(vanished(&missing.unwrap_err()));
        // A pseudo-file that is generated as it is read, longer than the first buffer on a busy node.
        let own = read_bounded(Path::new("/proc/self/stat"), 1 << 20).unwrap();
        assert!(own.starts_with(std::process::id().to_string().as_bytes()));
    }
}
