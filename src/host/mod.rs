//! The node as data: every file wonk reads goes through a [`Host`], which knows where the node's root is
//! (`--host-root`), so the same code runs on the node itself and inside a DaemonSet that mounts the host's `/`
//! at `/host`.
//!
//! Submodules hold the readers for each kind of kernel-provided input: [`procfs`] for processes,
//! [`mountinfo`] for mount tables and [`resolve`] for opening paths inside an untrusted root.

pub mod mountinfo;
pub mod procfs;
pub mod resolve;
pub mod walk;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path)?;
    // procfs answers each read with at most what fits; a roomy first buffer saves many small reads.
    let mut buf = Vec::with_capacity(limit.min(16 << 10) as usize);
    f.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
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
}
