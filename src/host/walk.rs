//! A parallel walk of one filesystem: every directory is opened once (`O_NOFOLLOW`), read with getdents64, and
//! handed to a visitor with its entries' names, d_types and inode numbers, so that the visitor stats only what it
//! needs. The walk never crosses into another filesystem, never follows symlinks, and stops at a deadline.

use rustix::fs::{FileType, Mode, OFlags, RawDir};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub kind: FileType,
    pub ino: u64,
}

/// A directory being visited: its path, an open handle for `*at` calls, and its entries.
pub struct DirVisit<'a> {
    pub path: &'a Path,
    pub fd: &'a OwnedFd,
    pub entries: &'a [Entry],
}

/// What a walk saw of its own progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalkStats {
    pub dirs: u64,
    pub entries: u64,
    pub unreadable: u64,
    /// The deadline stopped the walk: what was counted is a lower bound.
    pub stopped: bool,
}

struct Queue {
    pending: Vec<PathBuf>,
    active: usize,
    stats: WalkStats,
}

/// Walks `top` with `threads` workers until done or `deadline`. `visit` runs on the workers; it may be called
/// for different directories at once.
pub fn walk(
    top: &Path,
    threads: usize,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
) -> WalkStats {
    let dev = match std::fs::symlink_metadata(top) {
        Ok(m) => std::os::unix::fs::MetadataExt::dev(&m),
        Err(_) => {
            return WalkStats {
                unreadable: 1,
                ..WalkStats::default()
            }
        }
    };
    let q = Mutex::new(Queue {
        pending: vec![top.to_path_buf()],
        active: 0,
        stats: WalkStats::default(),
    });
    let cv = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| worker(&q, &cv, dev, deadline, visit));
        }
    });
    q.into_inner().unwrap_or_else(|e| e.into_inner()).stats
}

fn worker(
    q: &Mutex<Queue>,
    cv: &Condvar,
    dev: u64,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
) {
    loop {
        let dir = {
            let mut g = q.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if !g.pending.is_empty() {
                        g.stats.stopped = true;
                        g.pending.clear();
                    }
                    cv.notify_all();
                    if g.active == 0 {
                        return;
                    }
                }
                if let Some(d) = g.pending.pop() {
                    g.active += 1;
                    break d;
                }
                if g.active == 0 {
                    cv.notify_all();
                    return;
                }
                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        };
        let (subdirs, n, ok) = read_one(&dir, dev, visit);
        let mut g = q.lock().unwrap_or_else(|e| e.into_inner());
        g.active -= 1;
        if ok {
            g.stats.dirs += 1;
            g.stats.entries += n;
        } else {
            g.stats.unreadable += 1;
        }
        g.pending.extend(subdirs);
        cv.notify_all();
    }
}

/// Reads one directory; returns its subdirectories on the same device, its entry count, and whether it could be
/// read.
fn read_one(dir: &Path, dev: u64, visit: &(dyn Fn(&DirVisit) + Sync)) -> (Vec<PathBuf>, u64, bool) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open(dir, flags, Mode::empty()) else {
        return (Vec::new(), 0, false);
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if st.st_dev == dev => {}
        _ => return (Vec::new(), 0, false),
    }
    // One getdents64 call fills 64 KiB: a few calls for a directory of thousands of entries.
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 << 10];
    let mut d = RawDir::new(&fd, &mut buf);
    let mut entries = Vec::new();
    while let Some(e) = d.next() {
        let Ok(e) = e else {
            break;
        };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        entries.push(Entry {
            name: OsString::from_vec(name.to_vec()),
            kind: e.file_type(),
            ino: e.ino(),
        });
    }
    visit(&DirVisit {
        path: dir,
        fd: &fd,
        entries: &entries,
    });
    let subdirs = entries
        .iter()
        .filter(|e| e.kind == FileType::Directory)
        .map(|e| dir.join(&e.name))
        .collect();
    (subdirs, entries.len() as u64, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn counts_every_entry_once_and_stays_out_of_symlinks() {
        let top = std::env::temp_dir().join(format!("wonk-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        for i in 0..20 {
            std::fs::create_dir_all(top.join(format!("d{i}/sub"))).unwrap();
            for j in 0..5 {
                std::fs::write(top.join(format!("d{i}/sub/f{j}")), b"x").unwrap();
            }
        }
        std::os::unix::fs::symlink("/", top.join("root-link")).unwrap();
        let files = AtomicU64::new(0);
        let st = walk(&top, 2, None, &|v: &DirVisit| {
            files.fetch_add(
                v.entries
                    .iter()
                    .filter(|e| e.kind == FileType::RegularFile)
                    .count() as u64,
                Ordering::Relaxed,
            );
        });
        assert_eq!(files.load(Ordering::Relaxed), 100);
        assert_eq!(st.dirs, 41);
        assert_eq!(st.entries, 20 + 20 + 100 + 1);
        assert!(!st.stopped);
        let st = walk(&top, 2, Some(Instant::now()), &|_: &DirVisit| {});
        assert!(st.stopped || st.dirs <= 1);
        std::fs::remove_dir_all(&top).unwrap();
    }
}
