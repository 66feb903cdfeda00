//! Space held by deleted files: "the disk is full but `du` finds nothing". A file that was unlinked while a process
//! kept it open (a log rotated away under a container that keeps writing) has no name left for `du` to count, but
//! its blocks stay allocated until the last descriptor closes or the last mapping goes.
//!
//! For every process: each `/proc/PID/fd/N` whose link reads `... (deleted)` is statted through the magic link
//! (`statx`, which opens nothing: no FIFO or device is ever opened for IO); only regular files with 0 links count.
//! Mappings come from `/proc/PID/maps` lines that end in ` (deleted)`, statted the same way through
//! `/proc/PID/map_files/START-END`. Each inode is counted once (`st_blocks * 512`, and its size), folded per
//! process, per pod and container, and per filesystem; each filesystem is judged by `fstatvfs` of an `O_PATH`
//! handle of the first held file on it (opened through the magic link: the file itself is never opened), so no
//! path is resolved to find it, and named from the host's mount table (pid 1's) or, for a filesystem only a
//! container mounts, from the holding process's.
//!
//! Which descriptors and mappings to look at comes, with the `bpf` feature, from the kernel's BPF iterators
//! (`host::held`): they walk every file table and address space in the kernel and hand over only regular files
//! with no link left, each of which is then read as above; /proc alone (`--source proc`, or where the iterators do
//! not run) costs a `readlinkat` per descriptor and a `/proc/PID/maps` per process. Processes /proc lists and the
//! iterators did not reach are read through /proc.
//!
//! A 0-link file held by a bind mount and no descriptor is the `ghosts` check's (`deleted` kind): no descriptor
//! points at it, so it never appears here and is never counted twice.

use super::{Check, Context, Npd, Setting, Settings, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::resolve::{self, DevNum};
use crate::host::tasks::Source;
#[cfg(feature = "bpf")]
use crate::host::{bpf::CgroupPaths, held};
use crate::host::{mountinfo, procfs, vanished, Host};
use crate::metric::{self, Family, Sink};
use crate::owner::Owner;
#[cfg(feature = "bpf")]
use crate::owner::ThreadOwners;
use crate::term::{escape, fit, human_bytes, Style, WIDTH};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::OwnedFd;

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "deleted",
    about: "Find disk space held by deleted files that processes still hold open or mapped, by pod and filesystem",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(Deleted::default()),
    agent,
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "deleted-interval",
        default_secs: 300,
    },
    settings: &[Setting {
        flag: "deleted-share",
        help: "deleted: warn when deleted-but-open files hold more than this percent of a filesystem",
        unit: super::SettingUnit::Percent,
        default: DEFAULT_SHARE_PERCENT,
    }],
    metrics: &[
        Family::gauge(
            "deleted_open_bytes",
            "Bytes allocated to deleted files that processes still hold open or mapped, by owner (top N)",
        ),
        Family::gauge(
            "deleted_filesystem_held_bytes",
            "Bytes allocated to deleted-but-open files, by filesystem (device, mount_point; top N)",
        ),
        Family::gauge(
            "deleted_filesystem_held_ratio",
            "Share of a filesystem's size allocated to deleted-but-open files (top N)",
        ),
    ],
    npd: Some(Npd {
        condition: "DeletedFilesHoldSpace",
        ok_reason: "NoSpaceHeldByDeletedFiles",
        ok_message: "deleted-but-open files hold no large share of any filesystem",
    }),
};

const DEFAULT_SHARE_PERCENT: f64 = 5.0;
/// A filesystem used beyond this percent is judged nearly full.
const FULL_PERCENT: f64 = 90.0;
/// On a nearly full filesystem, deleted files that would free at least this percent of it are worth a warning.
const REAL_PART_PERCENT: f64 = 1.0;
/// Distinct deleted inodes tracked one by one; past this, bytes are added without counting an inode once, and a
/// blind spot says so (a pod can open as many deleted files as its fd limit allows).
const MAX_FILES: usize = 200_000;
/// Holders (pid and fd or mapping) kept per file, and processes named per filesystem in findings.
const MAX_HOLDERS: usize = 8;
const FINDINGS_PER_FS: usize = 10;
/// Files listed per process in a finding.
const FILES_PER_FINDING: usize = 10;
/// /proc/PID/maps of a process with very many mappings fits; anything larger is not read whole.
const MAPS_LIMIT: u64 = 16 << 20;
const DELETED: &[u8] = b" (deleted)";

/// `wonk deleted` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Warn when deleted-but-open files hold more than this percent of a filesystem.
    #[arg(long, default_value_t = DEFAULT_SHARE_PERCENT, value_name = "PERCENT")]
    share: f64,
    /// Largest files to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Where open files and mappings come from: BPF iterators that walk them in the kernel and hand over only the
    /// deleted ones (bpf), every /proc/PID/fd link and /proc/PID/maps (proc), or the iterators when this wonk has
    /// them and the kernel runs them, else /proc (auto).
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    source: Source,
}

fn from_args(m: &clap::ArgMatches, _: &super::Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    if !(a.share > 0.0 && a.share <= 100.0) {
        anyhow::bail!(
            "--share {}: give a percent above 0 and at most 100",
            a.share
        );
    }
    // With the `bpf` feature the check has one more field, the loaded iterators.
    #[allow(clippy::needless_update)]
    let d = Deleted {
        share_percent: a.share,
        top: a.top,
        source: a.source,
        ..Default::default()
    };
    Ok(Box::new(d))
}

fn agent(s: &Settings) -> Box<dyn Check> {
    let share = s.value("deleted-share");
    Box::new(Deleted {
        share_percent: if share > 0.0 && share <= 100.0 {
            share
        } else {
            DEFAULT_SHARE_PERCENT
        },
        ..Default::default()
    })
}

/// The check.
pub struct Deleted {
    pub share_percent: f64,
    /// Largest files listed in the output.
    pub top: usize,
    pub source: Source,
    /// The iterators, loaded at the first run that takes them and kept for the agent's next runs.
    #[cfg(feature = "bpf")]
    walker: std::sync::Mutex<Option<held::Walker>>,
}

impl Default for Deleted {
    fn default() -> Deleted {
        Deleted {
            share_percent: DEFAULT_SHARE_PERCENT,
            top: 10,
            source: Source::Auto,
            #[cfg(feature = "bpf")]
            walker: std::sync::Mutex::new(None),
        }
    }
}

/// How a process holds a deleted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// An open file descriptor (`/proc/PID/fd/N`).
    Fd,
    /// A memory mapping (`/proc/PID/maps`, statted through `/proc/PID/map_files`).
    Mmap,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Fd => "fd",
            Via::Mmap => "mmap",
        }
    }
}

/// One descriptor or mapping that holds a deleted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub pid: u32,
    pub via: Via,
    /// The descriptor number (`via: fd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
    /// The mapping's address range `START-END` (`via: mmap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

impl Hold {
    /// `fd 3` or `mmap 7f..-7f..`.
    fn label(&self) -> String {
        match (self.fd, &self.map) {
            (Some(fd), _) => format!("fd {fd}"),
            (_, Some(m)) => format!("mmap {m}"),
            _ => self.via.as_str().into(),
        }
    }
}

/// One deleted file still held.
#[derive(Debug, Clone, Serialize)]
pub struct HeldFile {
    pub device: DevNum,
    pub inode: u64,
    /// The path it had, as the holding process saw it (relative to that process's root), without ` (deleted)`.
    pub path: String,
    /// `st_size`.
    pub size_bytes: u64,
    /// `st_blocks * 512`: what deleting it frees.
    pub allocated_bytes: u64,
    /// Every descriptor and mapping found holding it.
    pub holders: u64,
    /// The first of them.
    pub held_by: Vec<Hold>,
}

/// A filesystem that deleted files are held on.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub device: DevNum,
    /// Where it is mounted on the host, else in the first holding process's mount namespace (`mounted_in_pid`);
    /// `null` for memory that is mounted nowhere (memfd, SysV shared memory).
    pub mount_point: Option<String>,
    pub mounted_in_pid: Option<u32>,
    pub fs_type: Option<String>,
    pub source: Option<String>,
    /// From `fstatvfs` of a held file: `f_blocks * f_frsize` and what is used of it (`f_blocks - f_bfree`).
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// Allocated to deleted-but-held files, each inode once.
    pub held_bytes: u64,
    pub held_size_bytes: u64,
    pub files: u64,
    pub held_percent: f64,
    pub used_percent: f64,
    /// Why it is a warning (`share`, `nearly-full`), if it is.
    pub verdict: Option<Verdict>,
}

/// Why a filesystem's deleted files are a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// They hold more than the configured share of it.
    Share,
    /// It is more than 90% full and they would free at least 1% of it.
    NearlyFull,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Share => "share",
            Verdict::NearlyFull => "nearly-full",
        }
    }
}

/// One process that holds deleted files.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub owner: Option<Owner>,
    pub files: u64,
    /// Allocated to the deleted files it holds, each inode once (another process may hold the same).
    pub allocated_bytes: u64,
    pub size_bytes: u64,
}

/// The deleted files held by one pod and container (or by no pod), each file once: a file counts for the groups of
/// its first 8 holders.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub owner: Option<Owner>,
    pub processes: u64,
    pub files: u64,
    pub allocated_bytes: u64,
}

/// One pass over every process.
#[derive(Debug, Default, Serialize)]
pub struct DeletedOutput {
    /// What listed the open files and mappings: `bpf` (the kernel's iterators) or `proc`.
    pub source: &'static str,
    /// Why `--source auto` read /proc rather than the iterators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub processes: u64,
    pub fds_read: u64,
    pub maps_read: u64,
    pub share_percent: f64,
    pub filesystems: Vec<Filesystem>,
    /// By bytes held, largest first.
    pub holders: Vec<Process>,
    pub groups: Vec<Group>,
    /// The largest files.
    pub largest: Vec<HeldFile>,
}

impl Output for DeletedOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        let mut groups: Vec<&Group> = self.groups.iter().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.allocated_bytes));
        for g in groups.into_iter().take(sink.top) {
            sink.put(
                "deleted_open_bytes",
                metric::owner_labels(g.owner.as_ref()),
                g.allocated_bytes as f64,
            );
        }
        let mut fss: Vec<&Filesystem> = self.filesystems.iter().collect();
        fss.sort_by_key(|f| std::cmp::Reverse(f.held_bytes));
        for f in fss.into_iter().take(sink.top) {
            let labels = metric::labels(&[
                ("device", &f.device.to_string()),
                ("mount_point", f.mount_point.as_deref().unwrap_or("")),
            ]);
            sink.put(
                "deleted_filesystem_held_bytes",
                labels.clone(),
                f.held_bytes as f64,
            );
            if f.size_bytes > 0 {
                sink.put(
                    "deleted_filesystem_held_ratio",
                    labels,
                    f.held_bytes as f64 / f.size_bytes as f64,
                );
            }
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:<7} {:>10} {:>6} {:>10} {:>6}  {}",
                "DEVICE", "SIZE", "USED", "HELD", "HELD%", "MOUNT"
            ))
        )?;
        for f in &self.filesystems {
            let mount = f
                .mount_point
                .as_deref()
                .map_or("(memory, not mounted)".into(), |m| {
                    format!("{} {}", escape(m), f.fs_type.as_deref().unwrap_or(""))
                });
            writeln!(
                w,
                "{:<7} {:>10} {:>5.1}% {:>10} {:>5.1}%  {}",
                f.device.to_string(),
                human_bytes(f.size_bytes),
                f.used_percent,
                human_bytes(f.held_bytes),
                f.held_percent,
                fit(&mount, WIDTH - 47)
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:>8} {:<15} {:>5} {:>10}  {}",
                "PID", "COMM", "FILES", "HELD", "POD/CONTAINER"
            ))
        )?;
        for p in &self.holders {
            let who = p.owner.as_ref().map_or("-".into(), |o| {
                format!("{}/{}", o.pod_label(), o.container_label())
            });
            writeln!(
                w,
                "{:>8} {:<15} {:>5} {:>10}  {}",
                p.pid,
                fit(&escape(&p.comm), 15),
                p.files,
                human_bytes(p.allocated_bytes),
                fit(&who, WIDTH - 43)
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:>10} {:>8} {:<12}  {}",
                "HELD", "PID", "HOW", "PATH (AS IT WAS)"
            ))
        )?;
        for f in &self.largest {
            let h = f.held_by.first();
            writeln!(
                w,
                "{:>10} {:>8} {:<12}  {}",
                human_bytes(f.allocated_bytes),
                h.map_or("-".into(), |h| h.pid.to_string()),
                fit(&h.map_or(String::new(), Hold::label), 12),
                fit(&escape(&f.path), WIDTH - 35)
            )?;
        }
        writeln!(
            w,
            "{}",
            style.dim(&format!(
                "{} processes, {} descriptors and {} mapping files read, source {}",
                self.processes, self.fds_read, self.maps_read, self.source
            ))
        )?;
        if let Some(why) = &self.fallback {
            writeln!(w, "source proc, not bpf: {}", escape(why))?;
        }
        writeln!(w)
    }
}

/// A deleted file as first seen, and its holders.
struct FileAcc {
    path: Vec<u8>,
    size: u64,
    allocated: u64,
    holders: u64,
    held_by: Vec<Hold>,
}

/// What one process holds on one filesystem.
#[derive(Default)]
struct PidFs {
    count: u64,
    allocated: u64,
    size: u64,
    /// (file, how) for each distinct inode, first hold only.
    files: Vec<((DevNum, u64), Hold)>,
}

#[derive(Default)]
struct Scan {
    /// `bpf` or `proc`: what listed the open files and mappings.
    source: &'static str,
    /// The records wonk read of a walk that had more.
    truncated: Option<usize>,
    /// Holders' names and owners the BPF walk told (from their cgroup ids), by pid; the others are read from /proc.
    known: HashMap<u32, (String, Owner)>,
    processes: u64,
    fds_read: u64,
    maps_read: u64,
    files: HashMap<(DevNum, u64), FileAcc>,
    /// Bytes of files past [`MAX_FILES`], by device (size, allocated, count): not deduplicated.
    overflow: HashMap<DevNum, (u64, u64, u64)>,
    statvfs: HashMap<DevNum, rustix::fs::StatVfs>,
    by_pid: BTreeMap<(u32, DevNum), PidFs>,
    unreadable: Vec<(u32, String)>,
    maps_unreadable: Vec<(u32, String)>,
    maps_unstatted: Vec<(u32, String)>,
}

impl Scan {
    /// Records one hold of a deleted regular file, given its open `O_PATH` handle.
    /// Records one hold of the file `id` statted; `statvfs` asks for its filesystem's numbers, once per device.
    fn hold(
        &mut self,
        id: resolve::Identity,
        statvfs: impl FnOnce() -> Option<rustix::fs::StatVfs>,
        path: &[u8],
        hold: Hold,
        seen: &mut HashSet<(DevNum, u64)>,
    ) {
        if id.nlink != 0 || u32::from(id.mode) & libc::S_IFMT != libc::S_IFREG {
            return;
        }
        let key = (id.dev, id.ino);
        let allocated = id.blocks.saturating_mul(512);
        if let std::collections::hash_map::Entry::Vacant(e) = self.statvfs.entry(id.dev) {
            if let Some(st) = statvfs() {
                e.insert(st);
            }
        }
        let pid = hold.pid;
        let room = self.files.len() < MAX_FILES;
        match self.files.get_mut(&key) {
            Some(f) => {
                f.holders += 1;
                if f.held_by.len() < MAX_HOLDERS {
                    f.held_by.push(hold.clone());
                }
            }
            None if room => {
                self.files.insert(
                    key,
                    FileAcc {
                        path: path.to_vec(),
                        size: id.size,
                        allocated,
                        holders: 1,
                        held_by: vec![hold.clone()],
                    },
                );
            }
            None => {
                let o = self.overflow.entry(id.dev).or_default();
                *o = (o.0 + id.size, o.1 + allocated, o.2 + 1);
            }
        }
        if seen.insert(key) {
            let p = self.by_pid.entry((pid, id.dev)).or_default();
            p.count += 1;
            p.allocated += allocated;
            p.size += id.size;
            if p.files.len() < 4 * FILES_PER_FINDING {
                p.files.push((key, hold));
            }
        }
    }

    /// Adds what another thread found (its pids are not this one's).
    fn merge(&mut self, o: Scan) {
        self.processes += o.processes;
        self.fds_read += o.fds_read;
        self.maps_read += o.maps_read;
        for (k, f) in o.files {
            let room = self.files.len() < MAX_FILES;
            match self.files.get_mut(&k) {
                Some(mine) => {
                    mine.holders += f.holders;
                    let left = MAX_HOLDERS.saturating_sub(mine.held_by.len());
                    mine.held_by.extend(f.held_by.into_iter().take(left));
                }
                None if room => {
                    self.files.insert(k, f);
                }
                None => {
                    let e = self.overflow.entry(k.0).or_default();
                    *e = (e.0 + f.size, e.1 + f.allocated, e.2 + 1);
                }
            }
        }
        for (dev, (a, b, c)) in o.overflow {
            let e = self.overflow.entry(dev).or_default();
            *e = (e.0 + a, e.1 + b, e.2 + c);
        }
        for (dev, st) in o.statvfs {
            self.statvfs.entry(dev).or_insert(st);
        }
        self.by_pid.extend(o.by_pid);
        self.unreadable.extend(o.unreadable);
        self.maps_unreadable.extend(o.maps_unreadable);
        self.maps_unstatted.extend(o.maps_unstatted);
    }

    /// Every descriptor of `pid` whose link says ` (deleted)`.
    fn fds(
        &mut self,
        host: &Host,
        pid: u32,
        seen: &mut HashSet<(DevNum, u64)>,
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> io::Result<()> {
        use rustix::fs::RawDir;
        let dir = open_dir(&host.proc_pid(pid).join("fd"))?;
        let mut entries = RawDir::new(&dir, buf);
        let mut link = Vec::with_capacity(256);
        while let Some(e) = entries.next() {
            let e = e?;
            let name = e.file_name();
            let Some(fd_num) = std::str::from_utf8(name.to_bytes())
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            self.fds_read += 1;
            self.fd(&dir, name, fd_num, pid, seen, &mut link);
        }
        Ok(())
    }

    /// Descriptor `name` of the fd directory `dir` of `pid`, if its link says ` (deleted)`.
    fn fd(
        &mut self,
        dir: &OwnedFd,
        name: &std::ffi::CStr,
        fd_num: u32,
        pid: u32,
        seen: &mut HashSet<(DevNum, u64)>,
        link: &mut Vec<u8>,
    ) {
        *link = match rustix::fs::readlinkat(dir, name, std::mem::take(link)) {
            Ok(l) => l.into_bytes(),
            Err(_) => return,
        };
        let Some(path) = link.strip_suffix(DELETED) else {
            return;
        };
        let Ok(id) = resolve::identity_through(dir, name) else {
            return;
        };
        let hold = Hold {
            pid,
            via: Via::Fd,
            fd: Some(fd_num),
            map: None,
        };
        let path = path.to_vec();
        self.hold(id, || statvfs_through(dir, name), &path, hold, seen);
    }

    /// Every mapping of `pid` whose file is deleted.
    fn maps(&mut self, host: &Host, pid: u32, seen: &mut HashSet<(DevNum, u64)>) -> io::Result<()> {
        let data = crate::host::read_bounded(&host.proc_pid(pid).join("maps"), MAPS_LIMIT)?;
        if memchr::memmem::find(&data, DELETED).is_none() {
            return Ok(());
        }
        // A file mapped in several segments is statted once: by the device and inode maps shows.
        let mut done: HashSet<(&[u8], &[u8])> = HashSet::new();
        let map_files = host.proc_pid(pid).join("map_files");
        for line in data.split(|&b| b == b'\n') {
            if !line.ends_with(DELETED) {
                continue;
            }
            // START-END PERMS OFFSET DEV INODE, padding, then the path (which may hold spaces).
            let mut fields = line.splitn(6, |&b| b == b' ');
            let (Some(range), _, _, Some(dev), Some(ino), Some(rest)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            if ino == b"0" || !done.insert((dev, ino)) {
                continue;
            }
            let path = rest[..rest.len() - DELETED.len()].trim_ascii_start();
            let range = String::from_utf8_lossy(range).into_owned();
            self.map(&map_files, range, Some(path), pid, seen);
        }
        Ok(())
    }

    /// The mapping `range` (`START-END`) of `pid`, whose `map_files` directory is `map_files`; `path` as maps
    /// shows it, or read from the map_files link.
    fn map(
        &mut self,
        map_files: &std::path::Path,
        range: String,
        path: Option<&[u8]>,
        pid: u32,
        seen: &mut HashSet<(DevNum, u64)>,
    ) {
        self.maps_read += 1;
        let entry = map_files.join(&range);
        let id = match resolve::identity_through(&rustix::fs::CWD, &entry) {
            Ok(id) => id,
            Err(e) => {
                if !vanished(&e) && self.maps_unstatted.len() < 16 {
                    self.maps_unstatted.push((pid, e.to_string()));
                }
                return;
            }
        };
        let path = match path {
            Some(p) => p.to_vec(),
            None => match rustix::fs::readlinkat(rustix::fs::CWD, &entry, Vec::new()) {
                Ok(l) => {
                    let l = l.into_bytes();
                    l.strip_suffix(DELETED).map_or(l.clone(), <[u8]>::to_vec)
                }
                Err(_) => return,
            },
        };
        let hold = Hold {
            pid,
            via: Via::Mmap,
            fd: None,
            map: Some(range),
        };
        self.hold(
            id,
            || statvfs_through(&rustix::fs::CWD, &entry),
            &path,
            hold,
            seen,
        );
    }
}

/// `fstatvfs` of the file a magic link stands for, through an `O_PATH` handle of the link: the file's own inode,
/// opened for nothing (a FIFO does not block).
fn statvfs_through<P: rustix::path::Arg>(
    dir: &impl std::os::fd::AsFd,
    name: P,
) -> Option<rustix::fs::StatVfs> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()?;
    rustix::fs::fstatvfs(&fd).ok()
}

/// A /proc directory opened to list or to resolve names in.
fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    crate::host::open_dir_at(&rustix::fs::CWD, path)
}

/// Where a device is mounted: the host's table, else that of `pid` (read at most once per pid).
struct Mounts<'a> {
    host: Option<&'a [mountinfo::Mount]>,
    per_pid: HashMap<u32, Vec<mountinfo::Mount>>,
}

impl Mounts<'_> {
    fn find(&mut self, h: &Host, dev: DevNum, pid: u32) -> Option<(mountinfo::Mount, Option<u32>)> {
        let pick = |ms: &[mountinfo::Mount]| {
            let on = |m: &&mountinfo::Mount| m.major == dev.major && m.minor == dev.minor;
            // The whole filesystem's mount before a bind of part of it.
            ms.iter()
                .filter(on)
                .find(|m| m.root == b"/")
                .or_else(|| ms.iter().find(on))
                .cloned()
        };
        if let Some(m) = self.host.and_then(pick) {
            return Some((m, None));
        }
        let ms = self.per_pid.entry(pid).or_insert_with(|| {
            procfs::mountinfo(h, pid)
                .map(|d| mountinfo::parse(&d).0)
                .unwrap_or_default()
        });
        pick(ms).map(|m| (m, Some(pid)))
    }
}

impl Check for Deleted {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let pids = match procfs::pids(ctx.host) {
            Ok(p) => p,
            Err(e) => {
                out.failed = Some(format!("cannot list processes: {e}"));
                return out;
            }
        };
        let (scan, fallback) = match self.scan_bpf(ctx, &pids) {
            Ok(Some(scan)) => (scan, None),
            Ok(None) => (scan_all(ctx.host, &pids), None),
            Err(why) if self.source == Source::Auto => (scan_all(ctx.host, &pids), Some(why)),
            Err(why) => {
                out.failed = Some(format!("--source bpf: {why}"));
                return out;
            }
        };
        self.judge(ctx, scan, fallback, &mut out);
        out
    }
}

impl Deleted {
    /// The scan through the BPF iterators, loaded at the first call; `None` for `--source proc`.
    #[cfg(feature = "bpf")]
    fn scan_bpf(&self, ctx: &Context, pids: &[u32]) -> Result<Option<Scan>, String> {
        if self.source == Source::Proc {
            return Ok(None);
        }
        let mut w = self.walker.lock().unwrap_or_else(|p| p.into_inner());
        let walker = match &mut *w {
            Some(walker) => walker,
            none => none.insert(held::Walker::open()?),
        };
        let walk = walker
            .walk()
            .map_err(|e| format!("reading the file iterators: {e}"))?;
        Ok(Some(scan_walk(ctx, pids, walk)))
    }

    #[cfg(not(feature = "bpf"))]
    fn scan_bpf(&self, _: &Context, _: &[u32]) -> Result<Option<Scan>, String> {
        if self.source == Source::Proc {
            return Ok(None);
        }
        Err("this wonk is built without the BPF iterators (cargo feature `bpf`)".into())
    }
}

/// What the iterators found, read through /proc as [`scan_pids`] reads it (each file's path, `statx` of it); then
/// the processes /proc lists that neither walk reached (one that started meanwhile, or one the kernel keeps from
/// the iterators), through /proc alone.
#[cfg(feature = "bpf")]
fn scan_walk(ctx: &Context, pids: &[u32], walk: held::Walk) -> Scan {
    let host = ctx.host;
    let own = std::process::id();
    let mut scan = Scan {
        source: "bpf",
        fds_read: walk.fds_visited,
        truncated: walk.truncated,
        ..Scan::default()
    };
    let mut by_tgid: BTreeMap<u32, Vec<&held::Held>> = BTreeMap::new();
    for h in walk.held.iter().filter(|h| h.tgid != own) {
        by_tgid.entry(h.tgid).or_default().push(h);
    }
    // A process whose mappings the walk could not read (its memory map was locked) has them read from /proc.
    for &b in walk.busy.iter().filter(|&&b| b != own) {
        by_tgid.entry(b).or_default();
    }
    let mut link = Vec::with_capacity(256);
    for (tgid, holds) in by_tgid {
        let mut seen = HashSet::new();
        let mut dirs: HashMap<u32, Option<OwnedFd>> = HashMap::new();
        let mut mapped: HashSet<(u32, u64)> = HashSet::new();
        let proc_dir = host.proc_pid(tgid);
        for h in holds {
            match h.how {
                held::How::Fd(n) => {
                    let dir = dirs.entry(h.tid).or_insert_with(|| {
                        // A thread with a file table of its own (clone without CLONE_FILES) has its own fd directory.
                        let at = if h.tid == tgid {
                            proc_dir.join("fd")
                        } else {
                            proc_dir.join(format!("task/{}/fd", h.tid))
                        };
                        open_dir(&at).ok()
                    });
                    let (Some(dir), Ok(name)) =
                        (dir.as_ref(), std::ffi::CString::new(n.to_string()))
                    else {
                        continue;
                    };
                    scan.fd(dir, &name, n, tgid, &mut seen, &mut link);
                }
                held::How::Map { start, end } => {
                    if mapped.insert((h.dev, h.ino)) {
                        let range = format!("{start:08x}-{end:08x}");
                        scan.map(&proc_dir.join("map_files"), range, None, tgid, &mut seen);
                    }
                }
            }
        }
        if walk.busy.contains(&tgid) {
            if let Err(e) = scan.maps(host, tgid, &mut seen) {
                if !vanished(&e) {
                    scan.maps_unreadable.push((tgid, e.to_string()));
                }
            }
        }
    }
    scan.processes = walk.processes.keys().filter(|&&p| p != own).count() as u64;
    // The holders' names and owners from what the walk read (their cgroup ids, one lookup per cgroup).
    // The host's mount table the attribution layer already read (judging reads it from there too).
    let mut cgroups =
        CgroupPaths::with_mounts(ctx.host, ctx.owners.host_mounts().unwrap_or_default());
    let mut owners = ThreadOwners::default();
    let holders: std::collections::BTreeSet<u32> =
        scan.by_pid.keys().map(|&(pid, _)| pid).collect();
    for pid in holders {
        if let Some(p) = walk.processes.get(&pid) {
            let mut o = owners.of_cgroup(
                ctx.owners,
                pid,
                Some(p.cgroup_id).filter(|&id| id > 0),
                |id| cgroups.path(id),
            );
            o.pid = Some(pid);
            scan.known.insert(pid, (p.comm.clone(), o));
        }
    }
    let rest = pids
        .iter()
        .copied()
        .filter(|p| !walk.processes.contains_key(p));
    scan.merge(scan_pids(ctx.host, rest));
    scan
}

/// Threads that read processes' descriptors: the work is the kernel's, one `readlinkat` per descriptor, and
/// processes are independent.
const MAX_THREADS: usize = 4;

/// Every process but wonk itself, on up to [`MAX_THREADS`] threads (each takes every n-th pid).
fn scan_all(host: &Host, pids: &[u32]) -> Scan {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(pids.len() / 64 + 1);
    if threads <= 1 {
        return scan_pids(host, pids.iter().copied());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || scan_pids(host, pids.iter().copied().skip(t).step_by(threads)))
            })
            .collect();
        let mut all = Scan {
            source: "proc",
            ..Scan::default()
        };
        for h in handles {
            match h.join() {
                Ok(part) => all.merge(part),
                Err(_) => all
                    .unreadable
                    .push((0, "a thread reading descriptors failed".into())),
            }
        }
        all
    })
}

fn scan_pids(host: &Host, pids: impl Iterator<Item = u32>) -> Scan {
    let own = std::process::id();
    let mut scan = Scan {
        source: "proc",
        ..Scan::default()
    };
    // One getdents64 of 32 KiB lists about 1,500 descriptors.
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 << 10];
    for pid in pids {
        if pid == own {
            continue;
        }
        let mut seen = HashSet::new();
        match scan.fds(host, pid, &mut seen, &mut buf) {
            Ok(()) => scan.processes += 1,
            Err(e) if vanished(&e) => continue,
            Err(e) => {
                scan.unreadable.push((pid, e.to_string()));
                continue;
            }
        }
        if let Err(e) = scan.maps(host, pid, &mut seen) {
            if !vanished(&e) {
                scan.maps_unreadable.push((pid, e.to_string()));
            }
        }
    }
    scan
}

impl Deleted {
    fn judge(&self, ctx: &Context, scan: Scan, fallback: Option<String>, out: &mut CheckOutput) {
        if let Some(n) = scan.truncated {
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!("deleted files held past the first {n} records of the BPF iterators"),
                "they are not counted; `--source proc` reads every process through /proc"
                    .to_string(),
            ));
        }
        if let Some((pid, e)) = scan.unreadable.first() {
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!(
                    "the open files of {} process(es) (first: pid {pid})",
                    scan.unreadable.len()
                ),
                format!("{e}; run as root to read every /proc/PID/fd"),
            ));
        }
        if let Some((pid, e)) = scan.maps_unreadable.first() {
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!(
                    "the memory mappings of {} process(es) (first: pid {pid})",
                    scan.maps_unreadable.len()
                ),
                format!("{e}: deleted files they map and no descriptor holds are not counted"),
            ));
        }
        if let Some((pid, e)) = scan.maps_unstatted.first() {
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!(
                    "deleted mapped files of {} process(es) (first: pid {pid})",
                    scan.maps_unstatted.len()
                ),
                format!(
                    "{e}; /proc/PID/map_files needs CAP_SYS_ADMIN, so their sizes are not counted"
                ),
            ));
        }
        if !scan.overflow.is_empty() {
            let n: u64 = scan.overflow.values().map(|o| o.2).sum();
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!("{n} deleted files past the first {MAX_FILES}"),
                "their bytes are added to their filesystem's without counting each inode once: a file held by two \
                 processes counts twice"
                    .to_string(),
            ));
        }
        let mut mounts = Mounts {
            host: ctx.owners.host_mounts().ok(),
            per_pid: HashMap::new(),
        };
        // Per filesystem.
        let mut fs: BTreeMap<DevNum, Filesystem> = BTreeMap::new();
        for (&(dev, _), f) in &scan.files {
            let e = fs.entry(dev).or_insert_with(|| new_fs(dev));
            e.held_bytes += f.allocated;
            e.held_size_bytes += f.size;
            e.files += 1;
        }
        for (&dev, &(size, allocated, n)) in &scan.overflow {
            let e = fs.entry(dev).or_insert_with(|| new_fs(dev));
            e.held_bytes += allocated;
            e.held_size_bytes += size;
            e.files += n;
        }
        for (dev, f) in fs.iter_mut() {
            if let Some(st) = scan.statvfs.get(dev) {
                f.size_bytes = st.f_blocks.saturating_mul(st.f_frsize);
                f.used_bytes = st
                    .f_blocks
                    .saturating_sub(st.f_bfree)
                    .saturating_mul(st.f_frsize);
                f.available_bytes = st.f_bavail.saturating_mul(st.f_frsize);
            }
            let pid = scan
                .by_pid
                .keys()
                .find(|(_, d)| d == dev)
                .map_or(1, |(p, _)| *p);
            if let Some((m, in_pid)) = mounts.find(ctx.host, *dev, pid) {
                f.mount_point = Some(String::from_utf8_lossy(&m.mount_point).into_owned());
                f.fs_type = Some(m.fs_type.clone());
                f.source = Some(String::from_utf8_lossy(&m.source).into_owned());
                f.mounted_in_pid = in_pid;
            }
            if f.size_bytes > 0 {
                f.held_percent = 100.0 * f.held_bytes as f64 / f.size_bytes as f64;
                f.used_percent = 100.0 * f.used_bytes as f64 / f.size_bytes as f64;
            }
            // Memory mounted nowhere (memfd, SysV shm) is not a filesystem to judge.
            if f.mount_point.is_some() && f.size_bytes > 0 {
                f.verdict = if f.held_percent > self.share_percent {
                    Some(Verdict::Share)
                } else if f.used_percent > FULL_PERCENT && f.held_percent >= REAL_PART_PERCENT {
                    Some(Verdict::NearlyFull)
                } else {
                    None
                };
            }
        }
        // Per process, and per owner.
        let mut procs: BTreeMap<u32, Process> = BTreeMap::new();
        for (&(pid, _), p) in &scan.by_pid {
            let known = scan.known.get(&pid);
            let e = procs.entry(pid).or_insert_with(|| Process {
                pid,
                comm: known.map_or_else(
                    || {
                        procfs::stat(ctx.host, pid)
                            .map(|s| s.comm)
                            .unwrap_or_default()
                    },
                    |k| k.0.clone(),
                ),
                owner: known
                    .map_or_else(|| ctx.owners.owner_of_pid(pid).ok(), |k| Some(k.1.clone()))
                    .filter(|o| !o.is_empty()),
                files: 0,
                allocated_bytes: 0,
                size_bytes: 0,
            });
            e.files += p.count;
            e.allocated_bytes += p.allocated;
            e.size_bytes += p.size;
        }
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut group_of: HashMap<u32, String> = HashMap::new();
        for p in procs.values() {
            let key = p.owner.as_ref().map_or(String::new(), |o| {
                format!("{}/{}", o.pod_label(), o.container_label())
            });
            group_of.insert(p.pid, key.clone());
            let g = groups.entry(key).or_insert_with(|| Group {
                owner: p.owner.as_ref().map(|o| Owner {
                    pid: None,
                    ..o.clone()
                }),
                processes: 0,
                files: 0,
                allocated_bytes: 0,
            });
            g.processes += 1;
        }
        // A file counts once per group, whichever of the group's processes (among its first holders) hold it.
        for f in scan.files.values() {
            let keys: HashSet<&String> = f
                .held_by
                .iter()
                .filter_map(|h| group_of.get(&h.pid))
                .collect();
            for k in keys {
                if let Some(g) = groups.get_mut(k) {
                    g.files += 1;
                    g.allocated_bytes += f.allocated;
                }
            }
        }
        // Findings: on each filesystem judged a warning, its largest holders.
        for f in fs.values().filter(|f| f.verdict.is_some()) {
            let mut on: Vec<(&(u32, DevNum), &PidFs)> = scan
                .by_pid
                .iter()
                .filter(|((_, d), _)| *d == f.device)
                .collect();
            on.sort_by_key(|(_, p)| std::cmp::Reverse(p.allocated));
            let others = on.len().saturating_sub(FINDINGS_PER_FS);
            for (&(pid, _), p) in on.into_iter().take(FINDINGS_PER_FS) {
                let proc_ = &procs[&pid];
                out.findings
                    .push(self.finding(f, proc_, p, &scan.files, others));
            }
        }
        let mut o = DeletedOutput {
            source: scan.source,
            fallback,
            processes: scan.processes,
            fds_read: scan.fds_read,
            maps_read: scan.maps_read,
            share_percent: self.share_percent,
            filesystems: fs.into_values().collect(),
            holders: procs.into_values().collect(),
            groups: groups.into_values().collect(),
            largest: Vec::new(),
        };
        o.filesystems
            .sort_by_key(|f| std::cmp::Reverse(f.held_bytes));
        o.holders
            .sort_by_key(|p| std::cmp::Reverse(p.allocated_bytes));
        o.groups
            .sort_by_key(|g| std::cmp::Reverse(g.allocated_bytes));
        let mut largest: Vec<(&(DevNum, u64), &FileAcc)> = scan.files.iter().collect();
        largest.sort_by_key(|(_, f)| std::cmp::Reverse(f.allocated.max(f.size)));
        o.largest = largest
            .into_iter()
            .take(self.top)
            .map(|(&(device, inode), f)| held_file(device, inode, f))
            .collect();
        out.stats = vec![
            ("processes".into(), o.processes),
            ("fds_read".into(), o.fds_read),
            ("deleted_files".into(), scan.files.len() as u64),
        ];
        out.output = Some(Box::new(o));
    }

    fn finding(
        &self,
        f: &Filesystem,
        p: &Process,
        on: &PidFs,
        files: &HashMap<(DevNum, u64), FileAcc>,
        others: usize,
    ) -> Finding {
        let mount = f.mount_point.clone().unwrap_or_default();
        let mut held: Vec<(&Hold, &FileAcc)> = on
            .files
            .iter()
            .filter_map(|(k, h)| files.get(k).map(|f| (h, f)))
            .collect();
        held.sort_by_key(|(_, f)| std::cmp::Reverse(f.allocated));
        let list: Vec<Value> = held
            .iter()
            .take(FILES_PER_FINDING)
            .map(|(h, file)| {
                json!({
                    "via": h.via.as_str(), "fd": h.fd, "map": h.map,
                    "path": String::from_utf8_lossy(&file.path),
                    "size_bytes": file.size, "allocated_bytes": file.allocated,
                    "holders": file.holders,
                })
            })
            .collect();
        let who = p.owner.as_ref().map_or_else(
            || format!("pid {} ({})", p.pid, p.comm),
            |o| format!("pid {} ({}) of {}", p.pid, p.comm, o.pod_label()),
        );
        let why = match f.verdict {
            Some(Verdict::NearlyFull) => format!(
                "{mount} is {:.1}% full, and deleted files still open hold {} ({:.1}%) of it",
                f.used_percent,
                human_bytes(f.held_bytes),
                f.held_percent
            ),
            _ => format!(
                "deleted files still open hold {} ({:.1}%) of {mount}, more than {}%",
                human_bytes(f.held_bytes),
                f.held_percent,
                self.share_percent
            ),
        };
        let mut advice = vec![format!(
            "Restart {who} (or have it reopen its files): the space is freed when its last descriptor closes"
        )];
        let fds: Vec<String> = held
            .iter()
            .filter_map(|(h, _)| h.fd)
            .take(3)
            .map(|fd| format!("/proc/{}/fd/{fd}", p.pid))
            .collect();
        if !fds.is_empty() {
            advice.push(format!(
                "Or free it now by truncating through the descriptor, e.g. `: > {}` (wonk never does this; the \
                 process keeps writing at its offset into a sparse file)",
                fds[0]
            ));
        }
        if held.iter().any(|(h, _)| h.via == Via::Mmap) {
            advice.push(
                "Never truncate a mapped file: the process would get SIGBUS on its next access; restart it".into(),
            );
        }
        Finding {
            check: UNIT.name,
            kind: f.verdict.map_or("share", Verdict::as_str),
            severity: Severity::Warning,
            summary: format!(
                "{who} holds {} in {} deleted file(s) on {mount}; {why}",
                human_bytes(on.allocated),
                on.count
            ),
            subject: format!("{mount} pid {}", p.pid),
            owner: p.owner.clone(),
            evidence: Vec::new(),
            advice,
        }
        .with("pid", p.pid)
        .with("comm", &p.comm)
        .with("allocated_bytes", on.allocated)
        .with("size_bytes", on.size)
        .with("files", list)
        .with("device", f.device)
        .with("mount_point", &f.mount_point)
        .with("mounted_in_pid", f.mounted_in_pid)
        .with("fs_type", &f.fs_type)
        .with("fs_size_bytes", f.size_bytes)
        .with("fs_used_bytes", f.used_bytes)
        .with("fs_held_bytes", f.held_bytes)
        .with("held_percent", round1(f.held_percent))
        .with("used_percent", round1(f.used_percent))
        .with("share_percent", self.share_percent)
        .with("other_holders_on_fs", others)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn new_fs(device: DevNum) -> Filesystem {
    Filesystem {
        device,
        mount_point: None,
        mounted_in_pid: None,
        fs_type: None,
        source: None,
        size_bytes: 0,
        used_bytes: 0,
        available_bytes: 0,
        held_bytes: 0,
        held_size_bytes: 0,
        files: 0,
        held_percent: 0.0,
        used_percent: 0.0,
        verdict: None,
    }
}

fn held_file(device: DevNum, inode: u64, f: &FileAcc) -> HeldFile {
    HeldFile {
        device,
        inode,
        path: String::from_utf8_lossy(&f.path).into_owned(),
        size_bytes: f.size,
        allocated_bytes: f.allocated,
        holders: f.holders,
        held_by: f.held_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_file_held_here_is_found_with_its_fd_and_size() {
        let dir = std::env::temp_dir().join(format!("wonk-deleted-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("gone.log");
        std::fs::write(&p, vec![7u8; 100_000]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let host = Host::open(std::path::Path::new("/")).unwrap();
        let mut scan = Scan::default();
        let mut seen = HashSet::new();
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 4096];
        scan.fds(&host, std::process::id(), &mut seen, &mut buf)
            .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f) as u32;
        let (_, acc) = scan
            .files
            .iter()
            .find(|(_, a)| a.held_by.iter().any(|h| h.fd == Some(fd)))
            .expect("the deleted file is found");
        assert_eq!(acc.size, 100_000);
        assert!(acc.allocated >= 100_000, "{}", acc.allocated);
        assert_eq!(acc.path, p.as_os_str().as_encoded_bytes());
        drop(f);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
