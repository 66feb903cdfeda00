//! A parallel walk of one filesystem: every directory is opened once (`O_NOFOLLOW`, from its parent's open
//! handle), read with getdents64, and handed to a visitor with its entries' names, d_types and inode numbers (in
//! parts of at most [`PART`] entries, so that a directory of millions of names costs no more memory than a small
//! one), so that the visitor stats only what it needs. The walk never crosses into another filesystem, never follows
//! symlinks, and stops at a deadline.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, ResolveFlags};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// One entry of a directory.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: Name<'a>,
    /// From getdents' d_type; a filesystem that gives `DT_UNKNOWN` costs one `statat` per entry to resolve it.
    pub kind: FileType,
    pub ino: u64,
}

/// An entry's name, borrowed from its directory's buffer of names.
#[derive(Debug, Clone, Copy)]
pub struct Name<'a>(&'a OsStr);

impl<'a> Name<'a> {
    pub fn as_os_str(&self) -> &'a OsStr {
        self.0
    }
}

impl AsRef<OsStr> for Name<'_> {
    fn as_ref(&self) -> &OsStr {
        self.0
    }
}

impl AsRef<Path> for Name<'_> {
    fn as_ref(&self) -> &Path {
        Path::new(self.0)
    }
}

/// A directory being visited: its path, an open handle for `*at` calls, and its entries. A large directory is
/// visited in several parts of at most [`PART`] entries each, one after another on the same thread, so that
/// memory stays bounded however many entries a directory has; the last part carries the directory's total.
pub struct DirVisit<'a> {
    pub path: &'a Path,
    pub fd: &'a OwnedFd,
    pub entries: &'a [Entry<'a>],
    /// On the directory's last part: how many entries it has in all.
    pub total: Option<u64>,
}

/// Unreadable directories named in [`WalkStats::unreadable_sample`] at most.
pub const UNREADABLE_SHOWN: usize = 16;

/// Entries handed to a visitor at once.
pub const PART: usize = 4096;

/// What a walk saw of its own progress.
#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    pub dirs: u64,
    pub entries: u64,
    pub unreadable: u64,
    /// The first [`UNREADABLE_SHOWN`] directories that could not be read (or not to the end), and why.
    pub unreadable_sample: Vec<(PathBuf, String)>,
    /// Directories with another filesystem mounted on them, not walked.
    pub other_fs: u64,
    /// The deadline stopped the walk: what was counted is a lower bound.
    pub stopped: bool,
}

/// An open directory kept for its subdirectories' `openat`; counted, so that a wide and deep tree cannot hold
/// more than `MAX_HELD` descriptors at once.
struct Held<'a> {
    fd: OwnedFd,
    count: &'a AtomicUsize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open parents kept at once; past it, subdirectories are opened from the top with `openat2`
/// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`).
const MAX_HELD: usize = 256;

/// A directory to read: its path, and its parent's handle when one is held.
struct Item<'a> {
    path: PathBuf,
    parent: Option<Arc<Held<'a>>>,
}

struct Queue<'a> {
    pending: Vec<Item<'a>>,
    active: usize,
    /// Workers waiting for a directory.
    idle: usize,
    stats: WalkStats,
}

/// What every worker shares.
struct Shared<'a> {
    q: Mutex<Queue<'a>>,
    cv: Condvar,
    top: &'a Path,
    top_fd: OwnedFd,
    dev: u64,
    held: &'a AtomicUsize,
    max_held: usize,
    deadline: Option<Instant>,
    visit: &'a (dyn Fn(&DirVisit) + Sync),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Walks `top` with `threads` workers until done or `deadline`. `visit` runs on the workers; it may be called
/// for different directories at once.
pub fn walk(
    top: &Path,
    threads: usize,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
) -> WalkStats {
    walk_holding(top, threads, deadline, visit, MAX_HELD)
}

fn walk_holding(
    top: &Path,
    threads: usize,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
    max_held: usize,
) -> WalkStats {
    let unreadable = WalkStats {
        unreadable: 1,
        ..WalkStats::default()
    };
    let Ok(top_fd) = rustix::fs::open(top, DIR_FLAGS, Mode::empty()) else {
        return unreadable;
    };
    let Ok(st) = rustix::fs::fstat(&top_fd) else {
        return unreadable;
    };
    let held = AtomicUsize::new(0);
    let sh = Shared {
        q: Mutex::new(Queue {
            pending: vec![Item {
                path: top.to_path_buf(),
                parent: None,
            }],
            active: 0,
            idle: 0,
            stats: WalkStats::default(),
        }),
        cv: Condvar::new(),
        top,
        top_fd,
        dev: st.st_dev,
        held: &held,
        max_held,
        deadline,
        visit,
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| worker(&sh));
        }
    });
    let q = sh.q.into_inner().unwrap_or_else(|e| e.into_inner());
    q.stats
}

fn worker(sh: &Shared) {
    loop {
        let item = {
            let mut g = sh.q.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if sh.deadline.is_some_and(|d| Instant::now() >= d) {
                    if !g.pending.is_empty() {
                        g.stats.stopped = true;
                        g.pending.clear();
                    }
                    sh.cv.notify_all();
                    if g.active == 0 {
                        return;
                    }
                }
                if let Some(d) = g.pending.pop() {
                    g.active += 1;
                    break d;
                }
                if g.active == 0 {
                    sh.cv.notify_all();
                    return;
                }
                g.idle += 1;
                g = sh.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                g.idle -= 1;
            }
        };
        let (subdirs, n, failed) = read_one(sh, item);
        let mut g = sh.q.lock().unwrap_or_else(|e| e.into_inner());
        g.active -= 1;
        g.stats.entries += n;
        match failed {
            Outcome::Read => g.stats.dirs += 1,
            Outcome::OtherFs => g.stats.other_fs += 1,
            Outcome::Failed(path, why) => {
                g.stats.unreadable += 1;
                if g.stats.unreadable_sample.len() < UNREADABLE_SHOWN {
                    g.stats.unreadable_sample.push((path, why));
                }
            }
        }
        // One idle worker per new directory beyond the one this worker takes next; everyone when the walk is over.
        for _ in 0..g.idle.min(subdirs.len().saturating_sub(1)) {
            sh.cv.notify_one();
        }
        g.pending.extend(subdirs);
        if g.active == 0 && g.pending.is_empty() {
            sh.cv.notify_all();
        }
    }
}

/// Opens a directory from its parent's handle, or, for the top and when no parent is held, without following
/// any symlink below the top.
fn open_dir(sh: &Shared, item: &Item) -> Option<OwnedFd> {
    if let (Some(p), Some(name)) = (&item.parent, item.path.file_name()) {
        return rustix::fs::openat(&p.fd, name, DIR_FLAGS, Mode::empty()).ok();
    }
    let rel = item.path.strip_prefix(sh.top).ok()?;
    if rel.as_os_str().is_empty() {
        return rustix::fs::openat(&sh.top_fd, ".", DIR_FLAGS, Mode::empty()).ok();
    }
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_XDEV
        | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&sh.top_fd, rel, DIR_FLAGS, Mode::empty(), resolve) {
        // Before Linux 5.6: as safe as a path can be opened without openat2 (the last component not followed).
        Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::openat(&sh.top_fd, rel, DIR_FLAGS, Mode::empty()).ok()
        }
        r => r.ok(),
    }
}

/// How reading a directory went.
enum Outcome {
    Read,
    /// Another filesystem is mounted on it.
    OtherFs,
    /// It could not be opened or listed to the end: its path, and why.
    Failed(PathBuf, String),
}

/// Reads one directory; returns its subdirectories on the same device, its entry count, and how it went.
fn read_one<'a>(sh: &Shared<'a>, item: Item<'a>) -> (Vec<Item<'a>>, u64, Outcome) {
    let Some(fd) = open_dir(sh, &item) else {
        let why = "cannot open it".to_string();
        return (Vec::new(), 0, Outcome::Failed(item.path, why));
    };
    drop(item.parent);
    let dir = item.path;
    match rustix::fs::fstat(&fd) {
        Ok(st) if st.st_dev == sh.dev => {}
        Ok(_) => return (Vec::new(), 0, Outcome::OtherFs),
        Err(e) => return (Vec::new(), 0, Outcome::Failed(dir, format!("stat: {e}"))),
    }
    // One getdents64 call fills 64 KiB: a few calls for a directory of thousands of entries.
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 << 10];
    let mut d = RawDir::new(&fd, &mut buf);
    // The names of one part in one buffer: one allocation per part, not one per name.
    let (mut names, mut found) = (Vec::new(), Vec::with_capacity(PART.min(256)));
    let (mut n, mut subdirs) = (0u64, Vec::new());
    let visit = |names: &[u8], found: &[(usize, usize, FileType, u64)], total: Option<u64>| {
        let entries: Vec<Entry> = found
            .iter()
            .map(|&(at, len, kind, ino)| Entry {
                name: Name(OsStr::from_bytes(&names[at..at + len])),
                kind,
                ino,
            })
            .collect();
        (sh.visit)(&DirVisit {
            path: &dir,
            fd: &fd,
            entries: &entries,
            total,
        });
    };
    let mut failed = None;
    while let Some(e) = d.next() {
        let e = match e {
            Ok(e) => e,
            // A corrupt directory block fails getdents part-way (EUCLEAN, EBADMSG, EIO).
            Err(err) => {
                failed = Some(format!("reading its entries: {err}"));
                break;
            }
        };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = e.file_type();
        if kind == FileType::Unknown {
            if let Ok(st) = rustix::fs::statat(&fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                kind = FileType::from_raw_mode(st.st_mode);
            }
        }
        if kind == FileType::Directory {
            subdirs.push(dir.join(OsStr::from_bytes(name)));
        }
        found.push((names.len(), name.len(), kind, e.ino()));
        names.extend_from_slice(name);
        n += 1;
        if found.len() >= PART {
            visit(&names, &found, None);
            names.clear();
            found.clear();
        }
    }
    visit(&names, &found, Some(n));
    let failed = match failed {
        None => Outcome::Read,
        Some(why) => Outcome::Failed(dir.clone(), why),
    };
    if subdirs.is_empty() {
        return (Vec::new(), n, failed);
    }
    let parent = (sh.held.fetch_add(1, Ordering::Relaxed) < sh.max_held)
        .then(|| Arc::new(Held { fd, count: sh.held }));
    if parent.is_none() {
        sh.held.fetch_sub(1, Ordering::Relaxed);
    }
    let subdirs = subdirs
        .into_iter()
        .map(|path| Item {
            path,
            parent: parent.clone(),
        })
        .collect();
    (subdirs, n, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

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

    #[test]
    fn a_large_directory_is_visited_in_bounded_parts_with_its_total_last() {
        let top = std::env::temp_dir().join(format!("wonk-walk-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(&top).unwrap();
        let files = 2 * PART + 5;
        for i in 0..files {
            std::fs::File::create(top.join(format!("f{i}"))).unwrap();
        }
        for i in 0..3 {
            std::fs::create_dir(top.join(format!("d{i}"))).unwrap();
        }
        let parts = Mutex::new(Vec::new());
        let st = walk(&top, 2, None, &|v: &DirVisit| {
            if v.path == top {
                parts.lock().unwrap().push((v.entries.len(), v.total));
            }
        });
        let parts = parts.into_inner().unwrap();
        let n = (files + 3) as u64;
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts.iter().all(|&(len, _)| len <= PART));
        assert_eq!(parts.iter().map(|p| p.0 as u64).sum::<u64>(), n);
        assert_eq!(
            parts.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![None, None, Some(n)]
        );
        assert_eq!((st.dirs, st.entries), (4, n));
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_deep_tree_is_walked_whole_from_parents_or_from_the_top() {
        // 400 levels of two subdirectories, walked holding parents, then holding none (every directory below the
        // top opened from the top with openat2).
        let top = std::env::temp_dir().join(format!("wonk-walk-deep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let mut d = top.clone();
        for _ in 0..400 {
            std::fs::create_dir_all(d.join("b")).unwrap();
            d = d.join("a");
        }
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(&top, top.join("a/a/loop")).unwrap();
        for max_held in [MAX_HELD, 0] {
            let seen = AtomicU64::new(0);
            let st = walk_holding(
                &top,
                3,
                None,
                &|v: &DirVisit| {
                    assert!(v.path.starts_with(&top));
                    seen.fetch_add(1, Ordering::Relaxed);
                },
                max_held,
            );
            assert_eq!((st.dirs, st.unreadable), (801, 0), "{st:?}");
            assert_eq!(seen.load(Ordering::Relaxed), 801);
        }
        std::fs::remove_dir_all(&top).unwrap();
    }
}
