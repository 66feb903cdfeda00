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

/// A directory being visited: its place in the tree, an open handle for `*at` calls, and its entries. A large
/// directory is visited in several parts of at most [`PART`] entries each, one after another on the same thread,
/// so that memory stays bounded however many entries a directory has; the last part carries the directory's
/// total.
pub struct DirVisit<'a> {
    node: &'a Node,
    pub fd: &'a OwnedFd,
    pub entries: &'a [Entry<'a>],
    /// On the directory's last part: how many entries it has in all.
    pub total: Option<u64>,
}

impl DirVisit<'_> {
    /// The directory's path, built from its ancestors' names when asked for (it costs as much as the directory
    /// is deep; building it for every directory would make a deep chain cost time quadratic in its depth).
    pub fn path(&self) -> PathBuf {
        self.node.path()
    }
}

/// Entries handed to a visitor at once.
pub const PART: usize = 4096;

/// Subdirectories waiting to be read, across the walk, beyond which a directory's further subdirectories are
/// left where they are (in the directory, found again from a getdents cookie) instead of queued: a directory of
/// a million subdirectories with long names costs the walk no more memory than one of a thousand.
const MAX_PENDING: usize = 4096;
/// Subdirectories queued from one directory at a time.
const BATCH: usize = 256;

/// Unreadable directories named in [`WalkStats::unreadable_sample`] at most.
pub const UNREADABLE_SHOWN: usize = 16;

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
    /// The most directories (and continuations) that waited at once.
    pub peak_pending: usize,
}

/// A directory's place in the tree: its name and its parent. Paths are built from it only on request.
pub struct Node {
    parent: Option<Arc<Node>>,
    /// The top's path for the top; one name below it.
    name: Box<OsStr>,
}

impl Node {
    fn path(&self) -> PathBuf {
        let mut names = vec![&*self.name];
        let mut n = self;
        while let Some(p) = &n.parent {
            names.push(&p.name);
            n = p;
        }
        names.iter().rev().collect()
    }

    /// The path below the top, for `openat2` from the top's handle.
    fn relative(&self) -> PathBuf {
        let mut names = Vec::new();
        let mut n = self;
        while let Some(p) = &n.parent {
            names.push(&*n.name);
            n = p;
        }
        names.iter().rev().collect()
    }
}

impl Drop for Node {
    /// Without this, dropping the last node of a chain 100,000 directories deep would recurse 100,000 times.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(p) = next {
            next = Arc::into_inner(p).and_then(|mut n| n.parent.take());
        }
    }
}

/// An open directory kept for its subdirectories' `openat` and for reading its further subdirectories; counted,
/// so that a wide and deep tree cannot hold more than `MAX_HELD` descriptors at once.
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

/// Work for a worker.
enum Item<'a> {
    /// A directory to read, with its parent's handle when one is held.
    Read {
        node: Arc<Node>,
        parent: Option<Arc<Held<'a>>>,
    },
    /// A directory read already, whose subdirectories from the getdents cookie `from` on are still to be queued.
    More {
        node: Arc<Node>,
        dir: Option<Arc<Held<'a>>>,
        from: u64,
    },
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
    /// `q.pending.len()`, readable without the lock.
    queued: AtomicUsize,
    cv: Condvar,
    top_fd: OwnedFd,
    dev: u64,
    held: &'a AtomicUsize,
    max_held: usize,
    max_pending: usize,
    deadline: Option<Instant>,
    visit: &'a (dyn Fn(&DirVisit) + Sync),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Walks `top` with `threads` workers until done or `deadline`. `visit` runs on the workers; it may be called
/// for different directories at once. Directories are taken depth first, and memory is bounded: at most
/// [`MAX_PENDING`] (plus a batch per worker) subdirectories wait, each as its name and its parent's node.
pub fn walk(
    top: &Path,
    threads: usize,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
) -> WalkStats {
    walk_with(top, threads, deadline, visit, MAX_HELD, MAX_PENDING)
}

fn walk_with(
    top: &Path,
    threads: usize,
    deadline: Option<Instant>,
    visit: &(dyn Fn(&DirVisit) + Sync),
    max_held: usize,
    max_pending: usize,
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
            pending: vec![Item::Read {
                node: Arc::new(Node {
                    parent: None,
                    name: top.as_os_str().into(),
                }),
                parent: None,
            }],
            active: 0,
            idle: 0,
            stats: WalkStats::default(),
        }),
        queued: AtomicUsize::new(1),
        cv: Condvar::new(),
        top_fd,
        dev: st.st_dev,
        held: &held,
        max_held,
        max_pending,
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

/// What reading one directory (or more of one) gave: its subdirectories to queue, then, when it had more than
/// could be queued, where to go on; its entry count; whether it was a directory read (not a continuation) and
/// could be read.
struct Read<'a> {
    subdirs: Vec<Item<'a>>,
    more: Option<Item<'a>>,
    entries: u64,
    dirs: u64,
    unreadable: u64,
    /// Why the directory could not be read (or not to the end), when it could not.
    failed: Option<(Arc<Node>, String)>,
    /// Another filesystem is mounted on it.
    other_fs: bool,
}

impl<'a> Read<'a> {
    /// Queues `subdirs`, opened from `held`, and, from the cookie `more_from`, the rest of `node`'s.
    fn queue(
        &mut self,
        node: Arc<Node>,
        subdirs: Vec<Arc<Node>>,
        more_from: Option<u64>,
        held: Option<Arc<Held<'a>>>,
    ) {
        self.subdirs = subdirs
            .into_iter()
            .map(|node| Item::Read {
                node,
                parent: held.clone(),
            })
            .collect();
        self.more = more_from.map(|from| Item::More {
            node,
            dir: held,
            from,
        });
    }
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
                        sh.queued.store(0, Ordering::Relaxed);
                    }
                    sh.cv.notify_all();
                    if g.active == 0 {
                        return;
                    }
                }
                if let Some(d) = g.pending.pop() {
                    sh.queued.store(g.pending.len(), Ordering::Relaxed);
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
        let mut r = match item {
            Item::Read { node, parent } => read_one(sh, node, parent),
            Item::More { node, dir, from } => read_more(sh, node, dir, from),
        };
        let mut g = sh.q.lock().unwrap_or_else(|e| e.into_inner());
        g.active -= 1;
        g.stats.dirs += r.dirs;
        g.stats.entries += r.entries;
        g.stats.unreadable += r.unreadable;
        g.stats.other_fs += u64::from(r.other_fs);
        if let Some((node, why)) = r.failed.take() {
            if g.stats.unreadable_sample.len() < UNREADABLE_SHOWN {
                g.stats.unreadable_sample.push((node.path(), why));
            }
        }
        let new = r.subdirs.len() + usize::from(r.more.is_some());
        // One idle worker per new item beyond the one this worker takes next; everyone when the walk is over.
        for _ in 0..g.idle.min(new.saturating_sub(1)) {
            sh.cv.notify_one();
        }
        // The continuation goes under the subdirectories: they (and what is below them) are taken first, so
        // that what waits stays bounded.
        g.pending.extend(r.more);
        g.pending.extend(r.subdirs);
        sh.queued.store(g.pending.len(), Ordering::Relaxed);
        g.stats.peak_pending = g.stats.peak_pending.max(g.pending.len());
        if g.active == 0 && g.pending.is_empty() {
            sh.cv.notify_all();
        }
    }
}

/// Opens a directory from its parent's handle, or, for the top and when no parent is held, without following
/// any symlink below the top.
fn open_dir(sh: &Shared, node: &Node, parent: Option<&Held>) -> Option<OwnedFd> {
    if let (Some(p), Some(_)) = (parent, &node.parent) {
        return rustix::fs::openat(&p.fd, &*node.name, DIR_FLAGS, Mode::empty()).ok();
    }
    let rel = node.relative();
    if rel.as_os_str().is_empty() {
        return rustix::fs::openat(&sh.top_fd, ".", DIR_FLAGS, Mode::empty()).ok();
    }
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_XDEV
        | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&sh.top_fd, &rel, DIR_FLAGS, Mode::empty(), resolve) {
        // Before Linux 5.6: as safe as a path can be opened without openat2 (the last component not followed).
        Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::openat(&sh.top_fd, &rel, DIR_FLAGS, Mode::empty()).ok()
        }
        r => r.ok(),
    }
}

/// How many subdirectories a directory may queue now: a batch, less when the queue is near its bound.
fn room(sh: &Shared) -> usize {
    BATCH.min(
        sh.max_pending
            .saturating_sub(sh.queued.load(Ordering::Relaxed)),
    )
}

/// The handle a directory's subdirectories are opened from and its continuation reads, when one may be held.
fn hold<'a>(sh: &Shared<'a>, fd: OwnedFd) -> Option<Arc<Held<'a>>> {
    if sh.held.fetch_add(1, Ordering::Relaxed) < sh.max_held {
        return Some(Arc::new(Held { fd, count: sh.held }));
    }
    sh.held.fetch_sub(1, Ordering::Relaxed);
    None
}

fn child(node: &Arc<Node>, name: &[u8]) -> Arc<Node> {
    Arc::new(Node {
        parent: Some(node.clone()),
        name: OsStr::from_bytes(name).into(),
    })
}

/// The entry's type, from getdents or, where the filesystem does not say, from `statat`.
fn kind_of(fd: &OwnedFd, e: &rustix::fs::RawDirEntry) -> FileType {
    let kind = e.file_type();
    if kind != FileType::Unknown {
        return kind;
    }
    rustix::fs::statat(fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
        .map_or(kind, |st| FileType::from_raw_mode(st.st_mode))
}

/// Reads one directory: hands its entries to the visitor, queues up to [`room`] of its subdirectories, and when
/// it has more, returns where to go on reading them.
fn read_one<'a>(sh: &Shared<'a>, node: Arc<Node>, parent: Option<Arc<Held<'a>>>) -> Read<'a> {
    let mut r = Read {
        subdirs: Vec::new(),
        more: None,
        entries: 0,
        dirs: 0,
        unreadable: 1,
        failed: None,
        other_fs: false,
    };
    let Some(fd) = open_dir(sh, &node, parent.as_deref()) else {
        r.failed = Some((node, "cannot open it".into()));
        return r;
    };
    drop(parent);
    match rustix::fs::fstat(&fd) {
        Ok(st) if st.st_dev == sh.dev => {}
        Ok(_) => {
            (r.unreadable, r.other_fs) = (0, true);
            return r;
        }
        Err(e) => {
            r.failed = Some((node, format!("stat: {e}")));
            return r;
        }
    }
    (r.dirs, r.unreadable) = (1, 0);
    // One getdents64 call fills 64 KiB: a few calls for a directory of thousands of entries.
    let mut buf = Vec::<u8>::with_capacity(64 << 10);
    let mut d = RawDir::new(&fd, buf.spare_capacity_mut());
    // The names of one part in one buffer: one allocation per part, not one per name.
    let (mut names, mut found) = (Vec::new(), Vec::with_capacity(PART.min(256)));
    let (mut n, mut subdirs, mut room, mut more_from) = (0u64, Vec::new(), room(sh), None);
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
            node: &node,
            fd: &fd,
            entries: &entries,
            total,
        });
    };
    // The cookie after the last entry looked at: where a continuation starts when the queue is full.
    let mut cookie = 0;
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
        let at = std::mem::replace(&mut cookie, e.next_entry_cookie());
        if name == b"." || name == b".." {
            continue;
        }
        let kind = kind_of(&fd, &e);
        if kind == FileType::Directory && more_from.is_none() {
            if room > 0 {
                subdirs.push(child(&node, name));
                room -= 1;
            } else {
                more_from = Some(at);
            }
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
    r.entries = n;
    if let Some(why) = failed {
        (r.dirs, r.unreadable) = (0, 1);
        r.failed = Some((node.clone(), why));
    }
    if subdirs.is_empty() && more_from.is_none() {
        return r;
    }
    let held = hold(sh, fd);
    r.queue(node, subdirs, more_from, held);
    r
}

/// A directory's handle: shared with its subdirectories, or this worker's alone.
enum Handle<'a> {
    Held(Arc<Held<'a>>),
    Own(OwnedFd),
}

/// Reads on in a directory from the cookie `from`, for the subdirectories it could not queue before: queues at
/// least one, at most [`BATCH`], and returns where to go on when there are more.
fn read_more<'a>(
    sh: &Shared<'a>,
    node: Arc<Node>,
    dir: Option<Arc<Held<'a>>>,
    from: u64,
) -> Read<'a> {
    let mut r = Read {
        subdirs: Vec::new(),
        more: None,
        entries: 0,
        dirs: 0,
        unreadable: 0,
        failed: None,
        other_fs: false,
    };
    let fd = match dir {
        Some(h) => Handle::Held(h),
        None => match open_dir(sh, &node, None) {
            Some(fd) => Handle::Own(fd),
            None => {
                r.unreadable = 1;
                return r;
            }
        },
    };
    let (mut subdirs, mut more_from) = (Vec::new(), None);
    {
        let raw = match &fd {
            Handle::Held(h) => &h.fd,
            Handle::Own(f) => f,
        };
        if rustix::fs::seek(raw, rustix::fs::SeekFrom::Start(from)).is_err() {
            r.unreadable = 1;
            return r;
        }
        let mut buf = Vec::<u8>::with_capacity(64 << 10);
        let mut d = RawDir::new(raw, buf.spare_capacity_mut());
        let room = room(sh).max(1);
        let mut cookie = from;
        while let Some(Ok(e)) = d.next() {
            let name = e.file_name().to_bytes();
            let at = std::mem::replace(&mut cookie, e.next_entry_cookie());
            if name == b"." || name == b".." || kind_of(raw, &e) != FileType::Directory {
                continue;
            }
            if subdirs.len() == room {
                more_from = Some(at);
                break;
            }
            subdirs.push(child(&node, name));
        }
    }
    let held = match fd {
        Handle::Held(h) => Some(h),
        Handle::Own(f) => hold(sh, f),
    };
    r.queue(node, subdirs, more_from, held);
    r
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
            if v.path() == top {
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
        for (max_held, max_pending) in [
            (MAX_HELD, MAX_PENDING),
            (0, MAX_PENDING),
            (MAX_HELD, 0),
            (0, 0),
        ] {
            let seen = AtomicU64::new(0);
            let st = walk_with(
                &top,
                3,
                None,
                &|v: &DirVisit| {
                    assert!(v.path().starts_with(&top));
                    seen.fetch_add(1, Ordering::Relaxed);
                },
                max_held,
                max_pending,
            );
            assert_eq!((st.dirs, st.unreadable), (801, 0), "{st:?}");
            assert_eq!(seen.load(Ordering::Relaxed), 801);
        }
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_wide_directory_queues_a_bounded_number_of_subdirectories_and_reads_on_for_the_rest() {
        // 1,000 subdirectories (each with one file) under one directory, walked with a queue of at most 10: every
        // directory is read once, and the queue never holds much more than the bound.
        let top = std::env::temp_dir().join(format!("wonk-walk-wide-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        for i in 0..1000 {
            std::fs::create_dir_all(top.join(format!("d{i:04}"))).unwrap();
            std::fs::write(top.join(format!("d{i:04}/f")), b"").unwrap();
        }
        let paths = Mutex::new(std::collections::HashSet::new());
        let files = AtomicU64::new(0);
        let st = walk_with(
            &top,
            2,
            None,
            &|v: &DirVisit| {
                assert!(
                    paths.lock().unwrap().insert(v.path()),
                    "{:?} twice",
                    v.path()
                );
                files.fetch_add(
                    v.entries
                        .iter()
                        .filter(|e| e.kind == FileType::RegularFile)
                        .count() as u64,
                    Ordering::Relaxed,
                );
            },
            MAX_HELD,
            10,
        );
        assert_eq!(
            (st.dirs, st.unreadable, st.entries),
            (1001, 0, 2000),
            "{st:?}"
        );
        // The bound, plus at most one item from each worker that read while the queue was near it, plus the
        // continuation.
        assert!(st.peak_pending <= 10 + 2 + 1, "{st:?}");
        assert_eq!(files.load(Ordering::Relaxed), 1000);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_deep_chain_is_walked_whole_and_dropped_without_recursion() {
        // 20,000 levels, made with mkdirat from the level above so that no path is ever long.
        let top = std::env::temp_dir().join(format!("wonk-walk-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(&top).unwrap();
        const DEPTH: u64 = 20_000;
        let mut fd = rustix::fs::open(&top, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..DEPTH {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        let deepest = AtomicU64::new(0);
        let st = walk(&top, 3, None, &|v: &DirVisit| {
            if v.total == Some(0) {
                deepest.store(v.path().components().count() as u64, Ordering::Relaxed);
            }
        });
        assert_eq!(
            (st.dirs, st.entries, st.unreadable),
            (DEPTH + 1, DEPTH, 0),
            "{st:?}"
        );
        assert_eq!(
            deepest.load(Ordering::Relaxed),
            top.components().count() as u64 + DEPTH
        );
        // Removed from the bottom up, each level from the one above it.
        for _ in 0..DEPTH {
            let up = rustix::fs::openat(&fd, "..", DIR_FLAGS, Mode::empty()).unwrap();
            rustix::fs::unlinkat(&up, "d", AtFlags::REMOVEDIR).unwrap();
            fd = up;
        }
        std::fs::remove_dir(&top).unwrap();
    }
}
