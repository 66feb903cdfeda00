//! The rules: which kernel messages are problems, how a burst of them folds into one finding, and how each finding
//! is tied to a path and a pod.
//!
//! The rules cover node-problem-detector's default kernel monitor (OOM kill, hung task, unregister_netdevice,
//! oops, ext4 error and warning, Buffer I/O error, XFS shutdown, memory read error, remount read-only), plus a full
//! ext4 directory index ("index full, reach max htree level"), soft/hard lockups and kernel panics.
//!
//! Matching is two steps. [`Engine::push`] looks at the message's first byte and one `starts_with` or two; only the
//! few records that pass are parsed. Messages that belong together fold into one [`Group`], keyed per rule (the
//! directory for a full index, the memory cgroup for OOM kills, the task for a hung task, the device for I/O
//! errors), with a count and the first and last time. Lines that only add detail to the previous event (the
//! "Large directory feature is not enabled" companion, the "Killed process" line after an `oom-kill:` summary, the
//! call trace after a hung task or an oops) are merged into it rather than counted.
//!
//! Resolution (device and inode to path, cgroup to pod, pid to pod and kernel stack) happens once per group, in
//! [`super::resolve::Resolver::finding`], never per line.

use crate::host::display_bytes;
use crate::kmsg::record::{num, Record};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One kind of kernel problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `EXT4-fs warning ... Directory (ino: N) index full, reach max htree level :2`.
    HtreeFull,
    /// `oom-kill:constraint=...,task_memcg=...` and `Killed process N (comm) ...`.
    OomKill,
    /// `INFO: task NAME:PID blocked for more than N seconds.`
    TaskHung,
    /// `EXT4-fs error (device DEV): ...`
    Ext4Error,
    /// Any other `EXT4-fs warning (device DEV): ...`
    Ext4Warning,
    /// `EXT4-fs (DEV): Remounting filesystem read-only`.
    FsReadOnly,
    /// `Buffer I/O error on dev DEV, logical block N, ...`
    IoError,
    /// `XFS (DEV): ... Shutting down filesystem` / `Filesystem has been shut down ...` / `xfs_do_force_shutdown`.
    XfsShutdown,
    /// `BUG: ...`, `Oops: ...`, `divide error: ...`, `general protection fault`, `kernel BUG at`, `Kernel panic`.
    KernelOops,
    /// `watchdog: BUG: soft lockup - CPU#N stuck for Ns! [comm:pid]`, `Watchdog detected hard LOCKUP on cpu N`.
    Lockup,
    /// `unregister_netdevice: waiting for DEV to become free. Usage count = N`.
    NetdevWait,
    /// `EDAC ...: N CE memory read error on ...` (and `UE`).
    MemoryError,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::HtreeFull,
        Rule::OomKill,
        Rule::TaskHung,
        Rule::Ext4Error,
        Rule::Ext4Warning,
        Rule::FsReadOnly,
        Rule::IoError,
        Rule::XfsShutdown,
        Rule::KernelOops,
        Rule::Lockup,
        Rule::NetdevWait,
        Rule::MemoryError,
    ];

    /// The finding's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Rule::HtreeFull => "htree-full",
            Rule::OomKill => "oom-kill",
            Rule::TaskHung => "task-hung",
            Rule::Ext4Error => "ext4-error",
            Rule::Ext4Warning => "ext4-warning",
            Rule::FsReadOnly => "fs-readonly",
            Rule::IoError => "io-error",
            Rule::XfsShutdown => "xfs-shutdown",
            Rule::KernelOops => "kernel-oops",
            Rule::Lockup => "lockup",
            Rule::NetdevWait => "netdev-unregister",
            Rule::MemoryError => "memory-error",
        }
    }

    /// The name of the rule's counter in the check's stats.
    pub fn stat(self) -> &'static str {
        match self {
            Rule::HtreeFull => "matched_htree_full",
            Rule::OomKill => "matched_oom_kill",
            Rule::TaskHung => "matched_task_hung",
            Rule::Ext4Error => "matched_ext4_error",
            Rule::Ext4Warning => "matched_ext4_warning",
            Rule::FsReadOnly => "matched_fs_readonly",
            Rule::IoError => "matched_io_error",
            Rule::XfsShutdown => "matched_xfs_shutdown",
            Rule::KernelOops => "matched_kernel_oops",
            Rule::Lockup => "matched_lockup",
            Rule::NetdevWait => "matched_netdev_unregister",
            Rule::MemoryError => "matched_memory_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where in the log a record was: whatever its format gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub seq: Option<u64>,
    /// Microseconds since boot.
    pub ts_usec: Option<u64>,
    /// Wall-clock time as the text printed it.
    pub wall: Option<String>,
}

impl Stamp {
    fn of(r: &Record<'_>) -> Stamp {
        Stamp {
            seq: r.seq,
            ts_usec: r.ts_usec,
            wall: r.wall.map(str::to_string),
        }
    }
}

/// Messages folded into one finding.
#[derive(Debug, Clone)]
pub struct Group {
    pub rule: Rule,
    /// What the messages have in common (the directory, the cgroup, the task, the device).
    pub key: String,
    /// Events: warnings for a full index, kills for OOM, reports for a hung task, messages otherwise.
    pub count: u64,
    /// Runs of events separated by more than [`BURST_GAP_USEC`] of quiet (known only from kernel timestamps).
    pub bursts: u64,
    pub first: Stamp,
    pub last: Stamp,
    /// The first message, as logged (truncated).
    pub message: String,
    pub detail: Detail,
    touched: Instant,
}

/// What the messages of a group said, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Htree {
        device: String,
        inode: Option<u64>,
        levels: Option<u64>,
        /// `ext4_dx_add_entry:2380`.
        function: String,
        /// `Some(false)` once the "Large directory feature is not enabled" companion line was seen.
        large_dir: Option<bool>,
        /// The device was mounted again after these warnings: they are about the filesystem mounted before
        /// (a loop device reused, a disk replaced), whose inode numbers mean nothing on the one there now.
        remounted: bool,
    },
    Oom {
        memcg: Option<String>,
        oom_memcg: Option<String>,
        constraint: Option<String>,
        task: String,
        /// The pid of the latest kill.
        pid: Option<u64>,
        /// The killed pids, oldest first (the first [`MAX_LIST`]).
        pids: Vec<u64>,
        uid: Option<u64>,
        total_vm_kb: Option<u64>,
        anon_rss_kb: Option<u64>,
        file_rss_kb: Option<u64>,
        shmem_rss_kb: Option<u64>,
        oom_score_adj: Option<i64>,
    },
    Hung {
        comm: String,
        pid: u64,
        blocked_secs: u64,
        /// The call trace the kernel logged after the report.
        logged_stack: Vec<String>,
    },
    /// Device-level filesystem and block problems.
    Fs {
        device: String,
        /// Inodes named by the messages (at most [`MAX_LIST`]).
        inodes: Vec<u64>,
        /// Functions (ext4), operations (Buffer I/O) or reasons (XFS), distinct (at most [`MAX_LIST`]).
        details: Vec<String>,
        /// Logical blocks (Buffer I/O), at most [`MAX_LIST`].
        blocks: Vec<u64>,
    },
    Oops {
        pid: Option<u64>,
        comm: Option<String>,
        rip: Option<String>,
        logged_stack: Vec<String>,
    },
    Lockup {
        cpu: Option<u64>,
        stuck_secs: Option<u64>,
        comm: Option<String>,
        pid: Option<u64>,
    },
    Netdev {
        interface: String,
        usage_count: Option<u64>,
    },
    Memory {
        location: String,
        corrected: bool,
    },
}

/// Quiet time after which the next event of a group starts a new burst: the seed's "bundles of 4, every few
/// hours" are one finding per directory, with one burst per bundle.
pub const BURST_GAP_USEC: u64 = 60_000_000;
/// Lists in evidence hold at most this many entries.
pub const MAX_LIST: usize = 16;
/// Distinct groups held at once; events beyond are counted in `groups_dropped`.
pub const MAX_GROUPS: usize = 1024;
const MAX_MESSAGE: usize = 512;
const MAX_STACK: usize = 32;
/// Records after a hung task or oops that may still belong to its report.
const CAPTURE_RECORDS: u16 = 64;

impl Detail {
    fn merge(&mut self, new: Detail) {
        match (self, new) {
            (
                Detail::Htree { inode, levels, .. },
                Detail::Htree {
                    inode: i,
                    levels: l,
                    ..
                },
            ) => {
                *inode = inode.or(i);
                *levels = levels.or(l);
            }
            (
                Detail::Oom {
                    memcg,
                    oom_memcg,
                    constraint,
                    task,
                    pid,
                    pids,
                    uid,
                    ..
                },
                Detail::Oom {
                    memcg: m,
                    oom_memcg: om,
                    constraint: c,
                    task: t,
                    pid: new_pid,
                    pids: p,
                    uid: u,
                    ..
                },
            ) => {
                *memcg = memcg.take().or(m);
                *oom_memcg = om.or(oom_memcg.take());
                *constraint = c.or(constraint.take());
                *task = t;
                *uid = u.or(*uid);
                *pid = new_pid.or(*pid);
                for x in p {
                    push_bounded(pids, x);
                }
            }
            (
                Detail::Hung { blocked_secs, .. },
                Detail::Hung {
                    blocked_secs: b, ..
                },
            ) => {
                *blocked_secs = (*blocked_secs).max(b);
            }
            (
                Detail::Fs {
                    inodes,
                    details,
                    blocks,
                    ..
                },
                Detail::Fs {
                    inodes: i,
                    details: d,
                    blocks: b,
                    ..
                },
            ) => {
                for x in i {
                    push_distinct(inodes, x);
                }
                for x in d {
                    push_distinct(details, x);
                }
                for x in b {
                    push_distinct(blocks, x);
                }
            }
            (
                Detail::Lockup {
                    stuck_secs, cpu, ..
                },
                Detail::Lockup {
                    stuck_secs: s,
                    cpu: c,
                    ..
                },
            ) => {
                *stuck_secs = (*stuck_secs).max(s);
                *cpu = cpu.or(c);
            }
            (Detail::Netdev { usage_count, .. }, Detail::Netdev { usage_count: u, .. }) => {
                *usage_count = u.or(*usage_count);
            }
            _ => {}
        }
    }
}

fn push_bounded<T>(v: &mut Vec<T>, x: T) {
    if v.len() < MAX_LIST {
        v.push(x);
    }
}

fn push_distinct<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if v.len() < MAX_LIST && !v.contains(&x) {
        v.push(x);
    }
}

/// What one message turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Hit {
    /// An event of its own, counted in its group.
    Event {
        rule: Rule,
        key: String,
        detail: Detail,
    },
    /// "Large directory feature is not enabled on this filesystem" on `device`.
    HtreeCompanion { device: String },
    /// "EXT4-fs (DEV): mounted filesystem ...": what follows on `device` is about a new filesystem.
    Ext4Mounted { device: String },
    /// "Killed process PID (comm) ...": detail for the `oom-kill:` summary of the same pid, or an event of its own.
    OomVictim(Detail),
}

/// What the records that follow a report may add to it.
#[derive(Debug)]
struct Capture {
    group: usize,
    left: u16,
    /// Whether to keep the trace: only the first report of a group keeps one.
    frames: bool,
}

/// The rules engine: feed it records, then take the folded groups.
#[derive(Debug)]
pub struct Engine {
    groups: Vec<Group>,
    /// Per rule: key -> position in `groups`.
    index: [HashMap<String, usize>; Rule::ALL.len()],
    matched: [u64; Rule::ALL.len()],
    companions: u64,
    from_userspace: u64,
    dropped: u64,
    capture: Option<Capture>,
    /// (pid, group) of recent `oom-kill:` summaries, for their "Killed process" line.
    recent_oom: Vec<(u64, usize)>,
    /// (device, group) of the last full-index warning, for its companion line.
    last_htree: Option<(String, usize)>,
    /// Mounts of each ext4 device seen so far, so that warnings from different filesystems on one device do not
    /// fold together.
    mounts: HashMap<String, u32>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            groups: Vec::new(),
            index: Default::default(),
            matched: [0; Rule::ALL.len()],
            companions: 0,
            from_userspace: 0,
            dropped: 0,
            capture: None,
            recent_oom: Vec::new(),
            last_htree: None,
            mounts: HashMap::new(),
        }
    }

    /// Looks at one record.
    pub fn push(&mut self, r: &Record<'_>) {
        let msg: &[u8] = &r.message;
        if self.capture.is_some() {
            self.follow_report(msg);
        }
        let Some(hit) = classify(msg) else {
            return;
        };
        if r.from_userspace() {
            self.from_userspace += 1;
        }
        match hit {
            Hit::Event {
                rule,
                mut key,
                detail,
            } => {
                self.matched[rule.index()] += 1;
                if let Detail::Htree { device, .. } = &detail {
                    if let Some(n) = self.mounts.get(device) {
                        key = format!("{key}@{n}");
                    }
                }
                let in_oops = self.capture.as_ref().is_some_and(|c| {
                    self.groups
                        .get(c.group)
                        .is_some_and(|g| g.rule == Rule::KernelOops)
                });
                if rule == Rule::KernelOops && msg.starts_with(b"Oops: ") && in_oops {
                    // The "Oops: 0000 [#1] SMP" line of a report already counted by its "BUG: ..." line.
                    return;
                }
                let device = match &detail {
                    Detail::Htree { device, .. } => Some(device.clone()),
                    _ => None,
                };
                let pid = match &detail {
                    Detail::Oom { pid, .. } => *pid,
                    _ => None,
                };
                let Some(g) = self.fold(rule, key, detail, r) else {
                    return;
                };
                match rule {
                    Rule::TaskHung | Rule::KernelOops => {
                        let frames = match &self.groups[g].detail {
                            Detail::Hung { logged_stack, .. }
                            | Detail::Oops { logged_stack, .. } => logged_stack.is_empty(),
                            _ => false,
                        };
                        self.capture = Some(Capture {
                            group: g,
                            left: CAPTURE_RECORDS,
                            frames,
                        })
                    }
                    Rule::HtreeFull => self.last_htree = device.map(|d| (d, g)),
                    Rule::OomKill => {
                        if let Some(pid) = pid {
                            if self.recent_oom.len() >= MAX_LIST {
                                self.recent_oom.remove(0);
                            }
                            self.recent_oom.push((pid, g));
                        }
                    }
                    _ => {}
                }
            }
            Hit::Ext4Mounted { device } => {
                for g in &mut self.groups {
                    if let Detail::Htree {
                        device: d,
                        remounted,
                        ..
                    } = &mut g.detail
                    {
                        if *d == device {
                            *remounted = true;
                        }
                    }
                }
                if self.last_htree.as_ref().is_some_and(|(d, _)| *d == device) {
                    self.last_htree = None;
                }
                if self.mounts.len() < MAX_GROUPS || self.mounts.contains_key(&device) {
                    *self.mounts.entry(device).or_default() += 1;
                }
            }
            Hit::HtreeCompanion { device } => {
                self.companions += 1;
                if let Some((d, g)) = &self.last_htree {
                    if *d == device {
                        if let Some(Detail::Htree { large_dir, .. }) =
                            self.groups.get_mut(*g).map(|g| &mut g.detail)
                        {
                            *large_dir = Some(false);
                        }
                    }
                }
            }
            Hit::OomVictim(detail) => {
                self.matched[Rule::OomKill.index()] += 1;
                let Detail::Oom { pid, task, .. } = &detail else {
                    return;
                };
                let pid = *pid;
                let summary = self
                    .recent_oom
                    .iter()
                    .position(|(p, _)| Some(*p) == pid)
                    .map(|i| self.recent_oom.remove(i).1);
                match summary.and_then(|g| self.groups.get_mut(g)) {
                    Some(g) => {
                        if let (
                            Detail::Oom {
                                total_vm_kb,
                                anon_rss_kb,
                                file_rss_kb,
                                shmem_rss_kb,
                                oom_score_adj,
                                uid,
                                ..
                            },
                            Detail::Oom {
                                total_vm_kb: tv,
                                anon_rss_kb: ar,
                                file_rss_kb: fr,
                                shmem_rss_kb: sr,
                                oom_score_adj: adj,
                                uid: u,
                                ..
                            },
                        ) = (&mut g.detail, detail)
                        {
                            *total_vm_kb = tv;
                            *anon_rss_kb = ar;
                            *file_rss_kb = fr;
                            *shmem_rss_kb = sr;
                            *oom_score_adj = adj;
                            *uid = uid.or(u);
                        }
                    }
                    None => {
                        let key = format!("task:{task}");
                        self.fold(Rule::OomKill, key, detail, r);
                    }
                }
            }
        }
    }

    /// Adds an event to its group, or starts one. `None` when the group table is full.
    fn fold(&mut self, rule: Rule, key: String, detail: Detail, r: &Record<'_>) -> Option<usize> {
        let now = Instant::now();
        if let Some(&i) = self.index[rule.index()].get(key.as_str()) {
            let g = &mut self.groups[i];
            g.count += 1;
            if let (Some(prev), Some(ts)) = (g.last.ts_usec, r.ts_usec) {
                if ts.saturating_sub(prev) > BURST_GAP_USEC {
                    g.bursts += 1;
                }
            }
            g.last = Stamp::of(r);
            g.touched = now;
            g.detail.merge(detail);
            return Some(i);
        }
        if self.groups.len() >= MAX_GROUPS {
            self.dropped += 1;
            return None;
        }
        let stamp = Stamp::of(r);
        let mut message = r.text().into_owned();
        truncate(&mut message, MAX_MESSAGE);
        self.groups.push(Group {
            rule,
            key: key.clone(),
            count: 1,
            bursts: 1,
            first: stamp.clone(),
            last: stamp,
            message,
            detail,
            touched: now,
        });
        let i = self.groups.len() - 1;
        self.index[rule.index()].insert(key, i);
        Some(i)
    }

    /// Takes what the lines after a hung-task or oops report add: the call trace, the oopsing task, RIP.
    fn follow_report(&mut self, msg: &[u8]) {
        let Some(cap) = &mut self.capture else {
            return;
        };
        cap.left = cap.left.saturating_sub(1);
        let t = trim_start(msg);
        let end = cap.left == 0
            || t.starts_with(b"</TASK>")
            || t.starts_with(b"---[ end trace")
            || !report_line(msg);
        let (g, frames) = (cap.group, cap.frames);
        if end {
            self.capture = None;
        }
        let Some(g) = self.groups.get_mut(g) else {
            return;
        };
        let frame = || {
            let mut s = display_bytes(t);
            truncate(&mut s, 160);
            s
        };
        match &mut g.detail {
            Detail::Hung { logged_stack, .. }
                if frames && is_frame(t) && logged_stack.len() < MAX_STACK =>
            {
                logged_stack.push(frame());
            }
            Detail::Oops {
                pid,
                comm,
                rip,
                logged_stack,
            } => {
                if t.starts_with(b"CPU: ") && pid.is_none() {
                    // "CPU: 1 UID: 0 PID: 123 Comm: foo Not tainted 6.18 #1" (older kernels have no UID).
                    *pid = after(t, b" PID: ").and_then(|r| digits(r).map(|(n, _)| n));
                    *comm = after(t, b" Comm: ").map(|r| {
                        let end = find(r, b" Not tainted")
                            .or_else(|| find(r, b" Tainted"))
                            .unwrap_or(r.len());
                        display_bytes(&r[..end])
                    });
                } else if t.starts_with(b"RIP: ") && rip.is_none() {
                    *rip = Some(display_bytes(&t[5..]));
                } else if frames && is_frame(t) && logged_stack.len() < MAX_STACK {
                    logged_stack.push(frame());
                }
            }
            _ => {}
        }
    }

    /// Groups that have been quiet for `quiet`: taken out, for a follower to report.
    pub fn take_settled(&mut self, quiet: Duration) -> Vec<Group> {
        let now = Instant::now();
        if !self
            .groups
            .iter()
            .any(|g| now.duration_since(g.touched) >= quiet)
        {
            return Vec::new();
        }
        let (done, keep): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| now.duration_since(g.touched) >= quiet);
        self.groups = keep;
        self.reindex();
        done
    }

    /// Every group, taken out.
    pub fn take_all(&mut self) -> Vec<Group> {
        let all = std::mem::take(&mut self.groups);
        self.reindex();
        all
    }

    /// The groups so far.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn reindex(&mut self) {
        for m in &mut self.index {
            m.clear();
        }
        for (i, g) in self.groups.iter().enumerate() {
            self.index[g.rule.index()].insert(g.key.clone(), i);
        }
        self.capture = None;
        self.recent_oom.clear();
        self.last_htree = None;
    }

    /// Counters: messages matched per rule, companion lines, user-space records, groups dropped.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Rule::ALL
            .iter()
            .map(|r| (r.stat().to_string(), self.matched[r.index()]))
            .collect();
        v.push(("matched_htree_companion".into(), self.companions));
        v.push(("matched_from_userspace".into(), self.from_userspace));
        v.push(("groups_dropped".into(), self.dropped));
        v
    }

    /// Messages matched by all rules (companions and merged lines included).
    pub fn matched(&self) -> u64 {
        self.matched.iter().sum::<u64>() + self.companions
    }
}

fn truncate(s: &mut String, max: usize) {
    let end = crate::term::cut_bytes(s, max).len();
    s.truncate(end);
}

/// A line that can belong to a hung-task or oops report: indented, or a `Header:` line.
fn report_line(msg: &[u8]) -> bool {
    match msg.first() {
        None => true,
        Some(b' ' | b'\t' | b'<' | b'#' | b'"') => true,
        Some(_) => {
            const HEADERS: [&[u8]; 5] = [
                b"Call Trace:",
                b"Call trace:",
                b"Hardware name:",
                b"Modules linked in:",
                b"PGD ",
            ];
            if HEADERS.iter().any(|h| msg.starts_with(h)) {
                return true;
            }
            // "task:sleep state:D ...", "CPU: 1 PID: ...", "RIP: 0010:...", "Oops: 0000 [#1]", "x29: ..."
            match memchr::memchr(b':', &msg[..msg.len().min(17)]) {
                Some(c) => !msg[..c].contains(&b' '),
                None => false,
            }
        }
    }
}

/// A call-trace frame: `__schedule+0x3a0/0xb40` or `? foo+0x1/0x2 [ext4]`.
fn is_frame(t: &[u8]) -> bool {
    find(t, b"+0x").is_some() && !t.starts_with(b"RIP:") && !t.starts_with(b"Code:")
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(h, needle)
}

/// The bytes after the first occurrence of `needle`.
fn after<'a>(h: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    find(h, needle).map(|i| &h[i + needle.len()..])
}

/// Leading decimal digits: (value, bytes used).
fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    num(&b[..n]).map(|v| (v, n))
}

fn number_after(h: &[u8], needle: &[u8]) -> Option<u64> {
    after(h, needle).and_then(|r| digits(r).map(|(n, _)| n))
}

fn signed_after(h: &[u8], needle: &[u8]) -> Option<i64> {
    let r = after(h, needle)?;
    match r.strip_prefix(b"-") {
        Some(neg) => digits(neg).and_then(|(n, _)| i64::try_from(n).ok().map(|v| -v)),
        None => digits(r).and_then(|(n, _)| i64::try_from(n).ok()),
    }
}

/// The bytes up to `end` (or all).
fn upto(b: &[u8], end: u8) -> &[u8] {
    memchr::memchr(end, b).map_or(b, |i| &b[..i])
}

fn text(b: &[u8]) -> String {
    let mut s = display_bytes(b);
    truncate(&mut s, 256);
    s
}

/// The rules proper: the first byte picks the few prefixes worth comparing; everything else is rejected at once.
fn classify(m: &[u8]) -> Option<Hit> {
    match *m.first()? {
        b'E' => {
            if let Some(rest) = m.strip_prefix(b"EXT4-fs ") {
                ext4(rest)
            } else if m.starts_with(b"EDAC ") {
                edac(m)
            } else {
                None
            }
        }
        b'X' => m.strip_prefix(b"XFS (").and_then(xfs),
        b'B' => {
            if m.starts_with(b"Buffer I/O error on dev") {
                buffer_io(m)
            } else if m.starts_with(b"BUG: ") {
                if m[5..].starts_with(b"soft lockup") {
                    lockup(m)
                } else {
                    Some(oops(m))
                }
            } else {
                None
            }
        }
        b'I' => m.strip_prefix(b"INFO: task ").and_then(hung),
        b't' => m.strip_prefix(b"task ").and_then(hung),
        b'o' => m.strip_prefix(b"oom-kill:").map(oom_summary),
        b'M' => m
            .strip_prefix(b"Memory cgroup out of memory: Killed process ")
            .and_then(killed),
        b'O' => {
            if let Some(rest) = m.strip_prefix(b"Out of memory: Killed process ") {
                killed(rest)
            } else if m.starts_with(b"Oops: ") {
                Some(oops(m))
            } else {
                None
            }
        }
        b'K' => {
            if let Some(rest) = m.strip_prefix(b"Killed process ") {
                killed(rest)
            } else if m.starts_with(b"Kernel panic - not syncing") {
                Some(oops(m))
            } else {
                None
            }
        }
        b'u' => m
            .strip_prefix(b"unregister_netdevice: waiting for ")
            .and_then(netdev),
        b'd' if m.starts_with(b"divide error: ") => Some(oops(m)),
        b'g' if m.starts_with(b"general protection fault") => Some(oops(m)),
        b'k' if m.starts_with(b"kernel BUG at ") => Some(oops(m)),
        b'w' => m.strip_prefix(b"watchdog: ").and_then(lockup),
        b'N' => m.strip_prefix(b"NMI watchdog: ").and_then(lockup),
        _ => None,
    }
}

/// After `EXT4-fs `: `warning (device DEV): FUNC:LINE: text`, `error (device DEV): FUNC:LINE: text`,
/// `error (device DEV) in FUNC:LINE: text`, or `(DEV): text`.
fn ext4(rest: &[u8]) -> Option<Hit> {
    let (is_error, r) = if let Some(r) = rest.strip_prefix(b"warning (device ") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix(b"error (device ") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix(b"(") {
        let close = memchr::memchr(b')', r)?;
        let msg = r[close + 1..].strip_prefix(b": ")?;
        if msg.starts_with(b"mounted filesystem") {
            return Some(Hit::Ext4Mounted {
                device: text(&r[..close]),
            });
        }
        if msg.starts_with(b"Remounting filesystem read-only") {
            let device = text(&r[..close]);
            return Some(Hit::Event {
                rule: Rule::FsReadOnly,
                key: device.clone(),
                detail: Detail::Fs {
                    device,
                    inodes: Vec::new(),
                    details: Vec::new(),
                    blocks: Vec::new(),
                },
            });
        }
        return None;
    } else {
        return None;
    };
    let close = memchr::memchr(b')', r)?;
    let device = text(&r[..close]);
    let tail = &r[close + 1..];
    let tail = tail
        .strip_prefix(b": ")
        .or_else(|| tail.strip_prefix(b" in "))?;
    let (function, msg) = match find(tail, b": ") {
        Some(i) => (&tail[..i], &tail[i + 2..]),
        None => (tail, &[][..]),
    };
    let function_name = text(upto(function, b':'));
    if !is_error {
        if find(msg, b"index full").is_some() {
            let inode = inode_in(msg);
            return Some(Hit::Event {
                rule: Rule::HtreeFull,
                key: format!(
                    "{device}:{}",
                    inode.map_or_else(|| "?".to_string(), |i| i.to_string())
                ),
                detail: Detail::Htree {
                    device,
                    inode,
                    levels: number_after(msg, b"level :"),
                    function: text(function),
                    large_dir: None,
                    remounted: false,
                },
            });
        }
        if msg.starts_with(b"Large directory feature is not enabled") {
            return Some(Hit::HtreeCompanion { device });
        }
    }
    let (rule, key) = if is_error {
        (Rule::Ext4Error, device.clone())
    } else {
        (Rule::Ext4Warning, format!("{device} {function_name}"))
    };
    Some(Hit::Event {
        rule,
        key,
        detail: Detail::Fs {
            device,
            inodes: inode_in(msg).into_iter().collect(),
            details: vec![function_name],
            blocks: number_after(msg, b"block ").into_iter().collect(),
        },
    })
}

/// `Directory (ino: 211566352) ...` (since 4.13) or `inode #211566352: comm ...`.
fn inode_in(msg: &[u8]) -> Option<u64> {
    number_after(msg, b"(ino: ").or_else(|| {
        msg.strip_prefix(b"inode #")
            .and_then(|r| digits(r).map(|(n, _)| n))
    })
}

/// After `XFS (`: `DEV): text`.
fn xfs(r: &[u8]) -> Option<Hit> {
    let close = memchr::memchr(b')', r)?;
    let msg = r[close + 1..].strip_prefix(b": ")?;
    let shutdown = find(msg, b"Shutting down filesystem").is_some()
        || find(msg, b"shut down").is_some()
        || msg.starts_with(b"xfs_do_force_shutdown");
    if !shutdown {
        return None;
    }
    let device = text(&r[..close]);
    Some(Hit::Event {
        rule: Rule::XfsShutdown,
        key: device.clone(),
        detail: Detail::Fs {
            device,
            inodes: Vec::new(),
            details: vec![text(msg)],
            blocks: Vec::new(),
        },
    })
}

/// `Buffer I/O error on dev DEV, logical block N, lost async page write` (older kernels: `on device DEV`).
fn buffer_io(m: &[u8]) -> Option<Hit> {
    let r = &m[b"Buffer I/O error on dev".len()..];
    let r = r.strip_prefix(b"ice").unwrap_or(r).strip_prefix(b" ")?;
    let device = text(upto(r, b','));
    if device.is_empty() {
        return None;
    }
    let block = number_after(r, b"logical block ");
    let op = after(r, b"logical block ")
        .and_then(|b| after(b, b", "))
        .map(text);
    Some(Hit::Event {
        rule: Rule::IoError,
        key: device.clone(),
        detail: Detail::Fs {
            device,
            inodes: Vec::new(),
            details: op.into_iter().collect(),
            blocks: block.into_iter().collect(),
        },
    })
}

/// After `INFO: task `: `NAME:PID blocked for more than N seconds.` NAME may hold spaces and colons.
fn hung(r: &[u8]) -> Option<Hit> {
    let at = find(r, b" blocked for more than ")?;
    let who = &r[..at];
    let colon = memchr::memrchr(b':', who)?;
    let pid = num(&who[colon + 1..])?;
    let comm = text(&who[..colon]);
    let secs = number_after(&r[at..], b"more than ").unwrap_or(0);
    Some(Hit::Event {
        rule: Rule::TaskHung,
        key: format!("{comm}:{pid}"),
        detail: Detail::Hung {
            comm,
            pid,
            blocked_secs: secs,
            logged_stack: Vec::new(),
        },
    })
}

/// After `oom-kill:`: `constraint=C,nodemask=N,cpuset=S,mems_allowed=M,oom_memcg=P,task_memcg=P,task=T,pid=N,uid=N`.
/// The order of the middle fields changed between kernels, so each is found by its name; the task name may hold
/// commas, so it runs to the last `,pid=`.
fn oom_summary(s: &[u8]) -> Hit {
    let field = |name: &[u8]| after(s, name).map(|v| text(upto(v, b',')));
    let memcg_at = find(s, b",task_memcg=").map(|i| i + b",task_memcg=".len());
    let pid_at = memchr::memmem::rfind(s, b",pid=");
    let task_at = find(&s[memcg_at.unwrap_or(0)..], b",task=").map(|i| i + memcg_at.unwrap_or(0));
    let memcg = memcg_at.map(|a| {
        let end = task_at.filter(|&t| t >= a).unwrap_or(s.len());
        text(&s[a..end])
    });
    let task = match (task_at, pid_at) {
        (Some(t), Some(p)) if p > t + 6 => text(&s[t + 6..p]),
        (Some(t), _) => text(upto(&s[t + 6..], b',')),
        _ => String::new(),
    };
    let pid = pid_at.and_then(|p| digits(&s[p + 5..]).map(|(n, _)| n));
    let memcg = memcg.filter(|m| !m.is_empty());
    let key = match &memcg {
        Some(m) => m.clone(),
        None => format!("task:{task}"),
    };
    Hit::Event {
        rule: Rule::OomKill,
        key,
        detail: Detail::Oom {
            memcg,
            oom_memcg: after(s, b",oom_memcg=").map(|v| {
                let end = find(v, b",task_memcg=").unwrap_or_else(|| upto(v, b',').len());
                text(&v[..end])
            }),
            constraint: field(b"constraint="),
            task,
            pid,
            pids: pid.into_iter().collect(),
            uid: memchr::memmem::rfind(s, b",uid=")
                .and_then(|u| digits(&s[u + 5..]).map(|(n, _)| n)),
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            oom_score_adj: None,
        },
    }
}

/// After `Killed process `: `PID (comm) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, UID:N
/// pgtables:NkB oom_score_adj:N`.
fn killed(r: &[u8]) -> Option<Hit> {
    let (pid, used) = digits(r)?;
    let rest = r[used..].strip_prefix(b" (")?;
    let end = find(rest, b") total-vm:").or_else(|| memchr::memrchr(b')', rest))?;
    let comm = text(&rest[..end]);
    let f = &rest[end..];
    Some(Hit::OomVictim(Detail::Oom {
        memcg: None,
        oom_memcg: None,
        constraint: None,
        task: comm,
        pid: Some(pid),
        pids: vec![pid],
        uid: number_after(f, b"UID:"),
        total_vm_kb: number_after(f, b"total-vm:"),
        anon_rss_kb: number_after(f, b"anon-rss:"),
        file_rss_kb: number_after(f, b"file-rss:"),
        shmem_rss_kb: number_after(f, b"shmem-rss:"),
        oom_score_adj: signed_after(f, b"oom_score_adj:"),
    }))
}

/// After `unregister_netdevice: waiting for `: `DEV to become free. Usage count = N`.
fn netdev(r: &[u8]) -> Option<Hit> {
    let at = find(r, b" to become free")?;
    let interface = text(&r[..at]);
    Some(Hit::Event {
        rule: Rule::NetdevWait,
        key: interface.clone(),
        detail: Detail::Netdev {
            interface,
            usage_count: number_after(&r[at..], b"Usage count = "),
        },
    })
}

/// Oopses and BUGs, keyed by what went wrong without the addresses: `BUG: kernel NULL pointer dereference`.
fn oops(m: &[u8]) -> Hit {
    let key = if m.starts_with(b"Oops: ") {
        "Oops".to_string()
    } else if m.starts_with(b"kernel BUG at ") || m.starts_with(b"Kernel panic") {
        text(&m[..m.len().min(120)])
    } else {
        let mut end = m.len();
        for cut in [
            &b", "[..],
            b" at ",
            b" - ",
            b" in process ",
            b" for address",
            b" address",
        ] {
            if let Some(i) = find(m, cut) {
                end = end.min(i);
            }
        }
        if let Some(i) = find(m.get(5..).unwrap_or_default(), b": ") {
            end = end.min(i + 5);
        }
        text(&m[..end.min(120)])
    };
    Hit::Event {
        rule: Rule::KernelOops,
        key,
        detail: Detail::Oops {
            pid: None,
            comm: None,
            rip: None,
            logged_stack: Vec::new(),
        },
    }
}

/// `BUG: soft lockup - CPU#1 stuck for 22s! [stress-ng:1234]` or `Watchdog detected hard LOCKUP on cpu 1`.
fn lockup(m: &[u8]) -> Option<Hit> {
    let soft = find(m, b"soft lockup").is_some();
    if !soft && find(m, b"hard LOCKUP").is_none() {
        return None;
    }
    let cpu = number_after(m, b"CPU#").or_else(|| number_after(m, b"on cpu "));
    let (comm, pid) = match (memchr::memrchr(b'[', m), memchr::memrchr(b']', m)) {
        (Some(o), Some(c)) if c > o => {
            let inner = &m[o + 1..c];
            match memchr::memrchr(b':', inner) {
                Some(col) => (Some(text(&inner[..col])), num(&inner[col + 1..])),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    let key = match (&comm, pid, cpu) {
        (Some(c), Some(p), _) if soft => format!("soft {c}:{p}"),
        (_, _, Some(cpu)) => format!("{} cpu {cpu}", if soft { "soft" } else { "hard" }),
        _ => if soft { "soft" } else { "hard" }.to_string(),
    };
    Some(Hit::Event {
        rule: Rule::Lockup,
        key,
        detail: Detail::Lockup {
            cpu,
            stuck_secs: number_after(m, b"stuck for "),
            comm,
            pid,
        },
    })
}

/// `EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 ...)`.
fn edac(m: &[u8]) -> Option<Hit> {
    let corrected = if find(m, b" CE memory read error").is_some() {
        true
    } else if find(m, b" UE memory read error").is_some() {
        false
    } else {
        return None;
    };
    let controller = text(upto(&m[5..], b':'));
    let location = after(m, b"memory read error on ")
        .map(|r| text(find(r, b" (").map_or(r, |i| &r[..i])))
        .unwrap_or_default();
    Some(Hit::Event {
        rule: Rule::MemoryError,
        key: format!(
            "{} {controller} {location}",
            if corrected { "CE" } else { "UE" }
        ),
        detail: Detail::Memory {
            location,
            corrected,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rec(seq: u64, msg: &str) -> Record<'_> {
        Record {
            facility: Some(0),
            level: Some(4),
            seq: Some(seq),
            ts_usec: Some(seq * 1000),
            message: Cow::Borrowed(msg.as_bytes()),
            ..Record::default()
        }
    }

    fn run(lines: &[&str]) -> Engine {
        let mut e = Engine::new();
        for (i, l) in lines.iter().enumerate() {
            e.push(&rec(i as u64 + 1, l));
        }
        e
    }

    const SEED_A: &str = "EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2";
    const SEED_B: &str = "EXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem";

    #[test]
    fn seed_bundle_of_four_pairs_is_one_group_of_four() {
        let e = run(&[
            SEED_A, SEED_B, SEED_A, SEED_B, SEED_A, SEED_B, SEED_A, SEED_B,
        ]);
        let g = e.groups();
        assert_eq!(g.len(), 1, "{g:#?}");
        assert_eq!(g[0].rule, Rule::HtreeFull);
        assert_eq!(g[0].count, 4);
        assert_eq!((g[0].first.seq, g[0].last.seq), (Some(1), Some(7)));
        assert_eq!(
            g[0].detail,
            Detail::Htree {
                device: "md1".into(),
                inode: Some(211566352),
                levels: Some(2),
                function: "ext4_dx_add_entry:2380".into(),
                large_dir: Some(false),
                remounted: false,
            }
        );
        let st: HashMap<String, u64> = e.stats().into_iter().collect();
        assert_eq!(st["matched_htree_full"], 4);
        assert_eq!(st["matched_htree_companion"], 4);
        assert_eq!(e.matched(), 8);
    }

    #[test]
    fn bundles_hours_apart_are_bursts_of_one_group() {
        let mut e = Engine::new();
        let hour = 3_600_000_000;
        for (seq, ts) in [(1, 0), (2, 10), (3, hour), (4, hour + 10), (5, 2 * hour)] {
            let mut r = rec(seq, if seq % 2 == 1 { SEED_A } else { SEED_B });
            r.ts_usec = Some(ts);
            e.push(&r);
            let mut r = rec(seq, SEED_A);
            r.ts_usec = Some(ts + 1);
            e.push(&r);
        }
        let g = &e.groups()[0];
        assert_eq!((g.count, g.bursts), (8, 3));
    }

    #[test]
    fn a_device_mounted_again_starts_new_groups() {
        let mounted = "EXT4-fs (md1): mounted filesystem 4676fb13-04cf-4104-9c90-8a622e07bf1d r/w with ordered data mode. Quota mode: none.";
        let e = run(&[
            SEED_A, SEED_B, SEED_A, mounted, SEED_A, SEED_B, mounted, SEED_A,
        ]);
        let got: Vec<(&str, u64, bool, Option<bool>)> = e
            .groups()
            .iter()
            .map(|g| match &g.detail {
                Detail::Htree {
                    remounted,
                    large_dir,
                    ..
                } => (g.key.as_str(), g.count, *remounted, *large_dir),
                other => panic!("{other:?}"),
            })
            .collect();
        // A companion line goes to the group of the warning just before it, never across a mount.
        assert_eq!(
            got,
            vec![
                ("md1:211566352", 2, true, Some(false)),
                ("md1:211566352@1", 1, true, Some(false)),
                ("md1:211566352@2", 1, false, None),
            ]
        );
    }

    #[test]
    fn older_kernels_name_the_inode_differently() {
        let e = run(&["EXT4-fs warning (device sda1): ext4_dx_add_entry:2235: inode #1234: comm php: Directory index full!"]);
        let Detail::Htree { inode, levels, .. } = &e.groups()[0].detail else {
            panic!()
        };
        assert_eq!((*inode, *levels), (Some(1234), None));
    }

    #[test]
    fn oom_summary_and_victim_are_one_kill() {
        let memcg = "/kubepods/burstable/pod834b7b00-d731-4186-803c-8c4a35a84627/41b8343f32f8623c7d20942813b4a48c72cc0d34ae74aaaaaaaaaaaaaaaaaaaa";
        let summary = format!("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=41b8343f32f8,mems_allowed=0,oom_memcg={memcg},task_memcg={memcg},task=php-fpm,pid=2916472,uid=33");
        let victim = "Memory cgroup out of memory: Killed process 2916472 (php-fpm) total-vm:812340kB, anon-rss:524288kB, file-rss:1024kB, shmem-rss:0kB, UID:33 pgtables:1200kB oom_score_adj:-997";
        let summary2 = summary.replace("2916472", "2916480");
        let victim2 = victim.replace("2916472", "2916480");
        let e = run(&[&summary, victim, &summary2, &victim2]);
        let g = e.groups();
        assert_eq!(g.len(), 1, "{g:#?}");
        assert_eq!(g[0].count, 2);
        assert_eq!(g[0].key, memcg);
        let Detail::Oom {
            memcg: m,
            constraint,
            task,
            pid,
            pids,
            uid,
            anon_rss_kb,
            oom_score_adj,
            ..
        } = &g[0].detail
        else {
            panic!()
        };
        assert_eq!(m.as_deref(), Some(memcg));
        assert_eq!(constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(task, "php-fpm");
        assert_eq!(pids, &[2916472, 2916480]);
        assert_eq!(*pid, Some(2916480));
        assert_eq!(*uid, Some(33));
        assert_eq!(*anon_rss_kb, Some(524288));
        assert_eq!(*oom_score_adj, Some(-997));
    }

    #[test]
    fn a_victim_without_summary_counts_on_its_own() {
        let e = run(&[
            "Out of memory: Killed process 77 (java (x)) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
            "Killed process 78 (java (x)) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB",
        ]);
        let g = e.groups();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].count, g[0].key.as_str()), (2, "task:java (x)"));
    }

    #[test]
    fn hung_task_folds_and_keeps_its_logged_stack() {
        let lines = [
            "INFO: task php fpm:worker:4242 blocked for more than 122 seconds.",
            "      Not tainted 6.18.44 #1",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "task:php fpm:worker state:D stack:0     pid:4242  tgid:4242  ppid:1      flags:0x00004002",
            "Call Trace:",
            " <TASK>",
            " __schedule+0x3a0/0xb40",
            " schedule+0x27/0xf0",
            " ? ext4_sync_fs+0x1a/0x2a0 [ext4]",
            " </TASK>",
            " after_the_end+0x1/0x2",
            "INFO: task php fpm:worker:4242 blocked for more than 245 seconds.",
            "Call Trace:",
            " <TASK>",
            " second_report_frame+0x1/0x2",
            " </TASK>",
        ];
        let e = run(&lines);
        let g = e.groups();
        assert_eq!(g.len(), 1, "{g:#?}");
        assert_eq!(g[0].count, 2);
        assert_eq!(g[0].key, "php fpm:worker:4242");
        assert_eq!(
            g[0].detail,
            Detail::Hung {
                comm: "php fpm:worker".into(),
                pid: 4242,
                blocked_secs: 245,
                logged_stack: vec![
                    "__schedule+0x3a0/0xb40".into(),
                    "schedule+0x27/0xf0".into(),
                    "? ext4_sync_fs+0x1a/0x2a0 [ext4]".into()
                ],
            }
        );
    }

    #[test]
    fn device_rules() {
        let e = run(&[
            "EXT4-fs error (device sdb1): ext4_lookup:1855: inode #131074: comm ls: deleted inode referenced: 131075",
            "EXT4-fs error (device sdb1) in ext4_free_blocks:6112: Corrupt filesystem",
            "EXT4-fs (sdb1): Remounting filesystem read-only",
            "EXT4-fs (sdb1): mounted filesystem with ordered data mode",
            "EXT4-fs warning (device sdb1): ext4_end_bio:343: I/O error 10 writing to inode 12 starting block 99)",
            "Buffer I/O error on dev sdc, logical block 0, async page read",
            "Buffer I/O error on dev sdc, logical block 8, lost async page write",
            "Buffer I/O error on device sdd1, logical block 12",
            "XFS (dm-0): Filesystem has been shut down due to log error (0x2).",
            "XFS (dm-0): Please unmount the filesystem and rectify the problem(s).",
            "XFS (dm-1): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x1/0x2 (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
        ]);
        let got: Vec<(Rule, &str, u64)> = e
            .groups()
            .iter()
            .map(|g| (g.rule, g.key.as_str(), g.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (Rule::Ext4Error, "sdb1", 2),
                (Rule::FsReadOnly, "sdb1", 1),
                (Rule::Ext4Warning, "sdb1 ext4_end_bio", 1),
                (Rule::IoError, "sdc", 2),
                (Rule::IoError, "sdd1", 1),
                (Rule::XfsShutdown, "dm-0", 1),
                (Rule::XfsShutdown, "dm-1", 1),
            ]
        );
        let Detail::Fs {
            inodes, details, ..
        } = &e.groups()[0].detail
        else {
            panic!()
        };
        assert_eq!(inodes, &[131074]);
        assert_eq!(details, &["ext4_lookup", "ext4_free_blocks"]);
        let Detail::Fs {
            details, blocks, ..
        } = &e.groups()[3].detail
        else {
            panic!()
        };
        assert_eq!(details, &["async page read", "lost async page write"]);
        assert_eq!(blocks, &[0, 8]);
    }

    #[test]
    fn oops_lockup_netdev_memory() {
        let e = run(&[
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "#PF: supervisor read access in kernel mode",
            "Oops: 0000 [#1] PREEMPT SMP NOPTI",
            "CPU: 1 UID: 0 PID: 4321 Comm: kworker/1:2 Not tainted 6.18.44 #1",
            "RIP: 0010:dev_hard_start_xmit+0x2b/0x1c0",
            "Call Trace:",
            " <TASK>",
            " __dev_queue_xmit+0x2d5/0xd70",
            " </TASK>",
            "BUG: unable to handle kernel NULL pointer dereference at 0000000000000010",
            "divide error: 0000 [#1] SMP",
            "general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP",
            "kernel BUG at mm/slub.c:321!",
            "watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [stress-ng:999]",
            "watchdog: BUG: soft lockup - CPU#3 stuck for 48s! [stress-ng:999]",
            "watchdog: Watchdog detected hard LOCKUP on cpu 2",
            "unregister_netdevice: waiting for eth0 to become free. Usage count = 2",
            "unregister_netdevice: waiting for eth0 to become free. Usage count = 1",
            "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x1)",
        ]);
        let got: Vec<(Rule, &str, u64)> = e
            .groups()
            .iter()
            .map(|g| (g.rule, g.key.as_str(), g.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (Rule::KernelOops, "BUG: kernel NULL pointer dereference", 1),
                (
                    Rule::KernelOops,
                    "BUG: unable to handle kernel NULL pointer dereference",
                    1
                ),
                (Rule::KernelOops, "divide error", 1),
                (Rule::KernelOops, "general protection fault", 1),
                (Rule::KernelOops, "kernel BUG at mm/slub.c:321!", 1),
                (Rule::Lockup, "soft stress-ng:999", 2),
                (Rule::Lockup, "hard cpu 2", 1),
                (Rule::NetdevWait, "eth0", 2),
                (
                    Rule::MemoryError,
                    "CE MC0 CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
                    1
                ),
            ]
        );
        assert_eq!(
            e.groups()[0].detail,
            Detail::Oops {
                pid: Some(4321),
                comm: Some("kworker/1:2".into()),
                rip: Some("0010:dev_hard_start_xmit+0x2b/0x1c0".into()),
                logged_stack: vec!["__dev_queue_xmit+0x2d5/0xd70".into()],
            }
        );
        let Detail::Lockup {
            stuck_secs, cpu, ..
        } = &e.groups()[5].detail
        else {
            panic!()
        };
        assert_eq!((*stuck_secs, *cpu), (Some(48), Some(3)));
        let Detail::Netdev { usage_count, .. } = &e.groups()[7].detail else {
            panic!()
        };
        assert_eq!(*usage_count, Some(1));
    }

    #[test]
    fn unrelated_and_hostile_messages_match_nothing() {
        let e = run(&[
            "",
            "E",
            "EXT4-fs",
            "EXT4-fs (",
            "EXT4-fs warning (device ",
            "EXT4-fs warning (device x)",
            "EXT4-fs error (device x) in",
            "XFS (",
            "XFS (sda): Mounting V5 Filesystem",
            "Buffer I/O error on dev",
            "Buffer I/O error on dev , x",
            "INFO: task ",
            "INFO: task x blocked for more than 1 seconds.",
            "INFO: task x:y blocked for more than 1 seconds.",
            "Killed process ",
            "Killed process x (y)",
            "Memory cgroup out of memory: Killed process 12",
            "unregister_netdevice: waiting for ",
            "watchdog: Delayed init of the lockup detector skipped",
            "EDAC MC0: Giving out device to module",
            "e1000e: eth0 NIC Link is Up",
            "audit: type=1400 apparmor=\"DENIED\"",
        ]);
        assert!(e.groups().is_empty(), "{:#?}", e.groups());
        let e = run(&[
            "oom-kill:",
            "oom-kill:,task=,pid=",
            "oom-kill:task_memcg=,task=",
        ]);
        assert!(e.groups().iter().all(|g| g.rule == Rule::OomKill));
    }

    #[test]
    fn groups_are_bounded() {
        let mut e = Engine::new();
        for i in 0..(MAX_GROUPS + 10) {
            let m = format!(
                "unregister_netdevice: waiting for veth{i} to become free. Usage count = 1"
            );
            e.push(&rec(i as u64, &m));
        }
        assert_eq!(e.groups().len(), MAX_GROUPS);
        let st: HashMap<String, u64> = e.stats().into_iter().collect();
        assert_eq!(st["groups_dropped"], 10);
        assert_eq!(e.take_all().len(), MAX_GROUPS);
        assert!(e.groups().is_empty());
    }

    #[test]
    fn settled_groups_are_taken_and_new_ones_start_fresh() {
        let mut e = run(&[SEED_A, SEED_B]);
        assert!(e.take_settled(Duration::from_secs(3600)).is_empty());
        let taken = e.take_settled(Duration::ZERO);
        assert_eq!(taken.len(), 1);
        e.push(&rec(10, SEED_A));
        assert_eq!(e.groups()[0].count, 1);
        assert_eq!(e.groups()[0].first.seq, Some(10));
    }
}
