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
//!
//! The parts: this file holds the types (rules, groups, their details); `engine` matches and folds; `classify`
//! has one classifier per family of messages; `bytes` the byte helpers they share.

use crate::host::display_bytes;
use crate::kmsg::record::{num, Record};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

mod bytes;
mod classify;
mod engine;

use bytes::*;
use classify::*;
pub use engine::Engine;
use engine::*;

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
    /// `EDAC ...: N CE memory read error on ...` (and `UE`, and `memory scrubbing error`).
    MemoryError,
    /// The block layer: `blk_update_request: I/O error, dev DEV, sector N`, `print_req_error: ...`, 5.17+'s bare
    /// `I/O error, dev DEV, sector N op 0x1:(WRITE) ...`, `critical medium error`, `critical target error`,
    /// `end_request: I/O error` (3.x).
    BlockIoError,
    /// Platform hardware errors: CPER `[Hardware Error]: event severity: corrected|recoverable|fatal` (BERT
    /// records from the previous boot included), `mce: [Hardware Error]: Machine check events logged`.
    HardwareError,
    /// `rcu: INFO: rcu_sched detected stalls on CPUs/tasks:`, `INFO: rcu_preempt self-detected stall on CPU`.
    RcuStall,
    /// `nf_conntrack: table full, dropping packet` (and the expectation table, and 3.x's `ip_conntrack`).
    ConntrackFull,
    /// `XFS (DEV): Metadata corruption detected at ...`, `Corruption detected`, `Metadata CRC error`,
    /// `Internal error XFS_WANT_CORRUPTED_...`.
    XfsCorruption,
}

impl Rule {
    pub const ALL: [Rule; 17] = [
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
        Rule::BlockIoError,
        Rule::HardwareError,
        Rule::RcuStall,
        Rule::ConntrackFull,
        Rule::XfsCorruption,
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
            Rule::BlockIoError => "block-io-error",
            Rule::HardwareError => "hardware-error",
            Rule::RcuStall => "rcu-stall",
            Rule::ConntrackFull => "conntrack-full",
            Rule::XfsCorruption => "xfs-corruption",
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
            Rule::BlockIoError => "matched_block_io_error",
            Rule::HardwareError => "matched_hardware_error",
            Rule::RcuStall => "matched_rcu_stall",
            Rule::ConntrackFull => "matched_conntrack_full",
            Rule::XfsCorruption => "matched_xfs_corruption",
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
            wall: r.wall_text().map(Cow::into_owned),
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
        /// With `remounted`: how many earlier mounts of the device these warnings came from, folded into one
        /// group when taken (history about filesystems no longer mounted is one finding, not one per mount).
        earlier_mounts: u64,
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
        /// -1 is a known leak (a reference dropped once too often).
        usage_count: Option<i64>,
    },
    Memory {
        location: String,
        corrected: bool,
    },
    Hardware {
        /// `corrected`, `recoverable`, `fatal`, `info`, or `machine check` (mce).
        severity: String,
        /// The error came from a BERT record: it happened before this boot.
        previous_boot: bool,
        /// `memory error`, `PCIe error`, ... (the record's `section_type`).
        section: Option<String>,
    },
    Stall {
        /// `rcu_sched`, `rcu_preempt`, `rcu_bh`.
        flavor: String,
        self_detected: bool,
    },
    Conntrack {
        /// `nf_conntrack`, `expectation`, `ip_conntrack`.
        table: String,
    },
}

/// Quiet time after which the next event of a group starts a new burst: the "bundles of 4, every few
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
            (
                Detail::Hardware {
                    previous_boot,
                    section,
                    ..
                },
                Detail::Hardware {
                    previous_boot: p,
                    section: s,
                    ..
                },
            ) => {
                *previous_boot |= p;
                *section = section.take().or(s);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_agrees_with_memmem() {
        let long = "shut ".repeat(100) + "shut down";
        for h in [
            "",
            "s",
            "shut",
            "shut down",
            "xshut down",
            "shushut down",
            "shut dow",
            &long,
            &long[..300],
        ] {
            for needle in ["", "s", "shut down", "Shutting down filesystem"] {
                assert_eq!(
                    contains(h.as_bytes(), needle.as_bytes()),
                    h.contains(needle),
                    "{h:?} {needle:?}"
                );
            }
        }
        assert_eq!(text_cow(b"dm-0"), Cow::Borrowed("dm-0"));
        assert_eq!(text_cow(b"d\xffm"), text(b"d\xffm"));
        assert_eq!(
            text_cow("x".repeat(300).as_bytes()),
            text("x".repeat(300).as_bytes())
        );
    }

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

    /// One real line (or report) per rule family added for issue 14, with what each must give.
    #[test]
    fn issue_14_rule_families() {
        let e = run(&[
            "blk_update_request: I/O error, dev sda, sector 28751848",
            "print_req_error: I/O error, dev sdc, sector 1098288304 flags 0",
            "I/O error, dev nvme0n1, sector 167431176 op 0x1:(WRITE) flags 0x4000 phys_seg 128 prio class 0",
            "blk_update_request: critical medium error, dev sdb, sector 5120",
            "critical target error, dev sdd, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0",
            "BERT: Error records from previous boot:",
            "[Hardware Error]: event severity: fatal",
            "{37}[Hardware Error]: event severity: corrected",
            "{37}[Hardware Error]:   section_type: memory error",
            "EDAC MC1: 1 CE memory scrubbing error on CPU_SrcID#1_Ha#0_Chan#0_DIMM#0 (channel:0 slot:0 page:0xee30a0 offset:0x0 grain:32 syndrome:0x0 -  area:DRAM err_code:0008:00c2 socket:1 ha:0 channel_mask:1 rank:0)",
            "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            "INFO: rcu_sched self-detected stall on CPU { 0} (t=81782271 jiffies g=123789 c=123788 q=21698007)",
            "nf_conntrack: nf_conntrack: table full, dropping packet",
            "nf_conntrack: expectation table full",
            "XFS (vda4): Metadata corruption detected at xfs_buf_ioend+0x162/0x570 [xfs], xfs_inode block 0x2fc4e0 xfs_inode_buf_verify",
            "XFS (dm-0): xfs_log_force: error -5 returned.",
            "XFS (dm-0): xfs_log_force: error -5 returned.",
            "unregister_netdevice: waiting for lo to become free. Usage count = -1",
            "NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [runc:[1:CHILD]:358270]",
        ]);
        let got: Vec<(Rule, &str, u64)> = e
            .groups()
            .iter()
            .map(|g| (g.rule, g.key.as_str(), g.count))
            .collect();
        assert_eq!(
            got,
            [
                (Rule::BlockIoError, "sda", 1),
                (Rule::BlockIoError, "sdc", 1),
                (Rule::BlockIoError, "nvme0n1", 1),
                (Rule::BlockIoError, "sdb", 1),
                (Rule::BlockIoError, "sdd", 1),
                (Rule::HardwareError, "fatal (previous boot)", 1),
                (Rule::HardwareError, "corrected (previous boot)", 1),
                (
                    Rule::MemoryError,
                    "CE MC1 CPU_SrcID#1_Ha#0_Chan#0_DIMM#0",
                    1
                ),
                (Rule::RcuStall, "rcu_sched", 2),
                (Rule::ConntrackFull, "nf_conntrack", 1),
                (Rule::ConntrackFull, "expectation", 1),
                (Rule::XfsCorruption, "vda4", 1),
                (Rule::XfsShutdown, "dm-0", 2),
                (Rule::NetdevWait, "lo", 1),
                (Rule::Lockup, "soft runc:[1:CHILD]:358270", 1),
            ]
        );
        let g = e.groups();
        assert_eq!(
            g[2].detail,
            Detail::Fs {
                device: "nvme0n1".into(),
                inodes: vec![],
                details: vec!["I/O error".into(), "WRITE".into()],
                blocks: vec![167431176],
            }
        );
        assert!(
            matches!(&g[6].detail, Detail::Hardware { section: Some(s), previous_boot: true, .. } if s == "memory error")
        );
        assert!(matches!(
            &g[13].detail,
            Detail::Netdev {
                usage_count: Some(-1),
                ..
            }
        ));
        assert!(
            matches!(&g[14].detail, Detail::Lockup { comm: Some(c), pid: Some(358270), .. } if c == "runc:[1:CHILD]")
        );
    }

    /// 3.10's memcg OOM report has no `oom-kill:` line: the pod's cgroup is in "Task in ... killed" (or the first
    /// "Memory cgroup stats for" line), and the kill is "Kill process N ... or sacrifice child" then "Killed
    /// process M" (a child's pid, maybe).
    #[test]
    fn old_kernel_memcg_oom_names_its_cgroup() {
        let memcg = "/kubepods/pod95387fa4-da9c-11e7-9d36-5254b24cbf5e/6895a3e13439535852d3184ac2aadd26d7363cc035f171545ec7d4ce74073b0b";
        let stats =
            format!("Memory cgroup stats for {memcg}: cache:32KB rss:524188KB rss_huge:370688KB");
        let e = run(&[
            "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=-998",
            &stats,
            "[28438]     0 28438  5063909   119961    1661   136409          -998 java",
            "Memory cgroup out of memory: Kill process 24572 (java) score 0 or sacrifice child",
            "Killed process 28438 (java) total-vm:20255636kB, anon-rss:466160kB, file-rss:13684kB",
        ]);
        let g = e.groups();
        assert_eq!(g.len(), 1, "{g:#?}");
        assert_eq!(
            (g[0].rule, g[0].key.as_str(), g[0].count),
            (Rule::OomKill, memcg, 1)
        );
        assert!(matches!(
            &g[0].detail,
            Detail::Oom {
                anon_rss_kb: Some(466160),
                ..
            }
        ));
    }

    /// Before 5.10 the hung task's state line (`comm D 0 PID PPID 0x...`) comes before its call trace.
    #[test]
    fn hung_task_before_5_10_keeps_its_trace() {
        let e = run(&[
            "INFO: task logrotate:17344 blocked for more than 120 seconds.",
            "      Not tainted 4.16.2-1.el7.elrepo.x86_64 #1",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "logrotate       D    0 17344  17342 0x00000080",
            "Call Trace:",
            " __schedule+0x293/0x8a0",
            " schedule+0x36/0x80",
        ]);
        let Detail::Hung { logged_stack, .. } = &e.groups()[0].detail else {
            panic!()
        };
        assert_eq!(
            logged_stack,
            &["__schedule+0x293/0x8a0", "schedule+0x36/0x80"]
        );
    }

    /// An expedited RCU stall (github.com/lkrg-org/lkrg/issues/189), an oops whose CPU line says "Kdump: loaded"
    /// between the comm and the taint (github.com/datto/dattobd/issues/365), and an EDAC error with no message
    /// (github.com/openstreetmap/operations/issues/300).
    #[test]
    fn expedited_rcu_stall_and_kdump_comm() {
        let e = run(&[
            "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 0-... } 6 jiffies s: 85 root: 0x1/.",
            "BUG: unable to handle kernel NULL pointer dereference at           (null)",
            "IP: [<ffffffffc01222c7>] handle_bdev_mount_event+0x67/0x1b0 [dattobd]",
            "Oops: 0000 [#1] SMP ",
            "CPU: 0 PID: 2629 Comm: dockerd Kdump: loaded Tainted: G           OE  ------------ T 3.10.0-957.el7.x86_64 #1",
            "EDAC MC0: 4 CE error on CPU#0Channel#2_DIMM#0 (channel:2 slot:0 page:0x0 offset:0x0 grain:8 syndrome:0x0)",
        ]);
        let g = e.groups();
        assert_eq!(
            (g[0].rule, g[0].key.as_str()),
            (Rule::RcuStall, "rcu_preempt")
        );
        assert!(
            matches!(&g[1].detail, Detail::Oops { pid: Some(2629), comm: Some(c), .. } if c == "dockerd")
        );
        assert_eq!(
            (g[2].rule, g[2].key.as_str()),
            (Rule::MemoryError, "CE MC0 CPU#0Channel#2_DIMM#0")
        );
    }

    /// 6.x names the fault after "Oops: ", and oopses fold by fault and task; arm64's report is one oops.
    #[test]
    fn oopses_fold_by_fault_and_task() {
        let gpf = |comm: &str| {
            [
                "Oops: general protection fault, probably for non-canonical address 0xbfff93fcd9822a28: 0000 [#1] PREEMPT SMP NOPTI".to_string(),
                format!("CPU: 6 UID: 0 PID: 687 Comm: {comm} Tainted: P S      W  OE      6.12.4-100.fc40.x86_64 #1"),
                "RIP: 0010:__list_del_entry_valid_or_report+0x43/0x80".to_string(),
            ]
        };
        let mut lines: Vec<String> = Vec::new();
        lines.extend(gpf("dbu_evict"));
        lines.extend(gpf("dbu_evict"));
        lines.extend(gpf("kworker/0:1"));
        lines.extend([
            "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000",
            "Mem abort info:",
            "  ESR = 0x96000004",
            "[0000000000000000] pgd=0000000000000000, p4d=0000000000000000",
            "Internal error: Oops: 96000004 [#1] PREEMPT SMP",
            "Modules linked in:",
            "CPU: 0 PID: 1 Comm: swapper/0 Not tainted 5.8.0-rc4-05952-g9f40e8abeb1b #78",
        ]
        .map(String::from));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let e = run(&refs);
        let got: Vec<(&str, u64)> = e
            .groups()
            .iter()
            .map(|g| (g.key.as_str(), g.count))
            .collect();
        assert_eq!(
            got,
            [
                ("general protection fault in dbu_evict", 2),
                ("general protection fault in kworker/0:1", 1),
                (
                    "Unable to handle kernel NULL pointer dereference in swapper/0",
                    1
                ),
            ]
        );
    }

    /// md1 mounted again (a new mount: later warnings start new groups).
    const MOUNTED: &str = "EXT4-fs (md1): mounted filesystem 4676fb13-04cf-4104-9c90-8a622e07bf1d r/w with ordered data mode. Quota mode: none.";
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
                earlier_mounts: 0,
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
    fn warnings_from_earlier_mounts_fold_into_one_group_when_taken() {
        let mut e = run(&[
            SEED_A, SEED_B, MOUNTED, SEED_A, SEED_B, MOUNTED, SEED_A, SEED_B, MOUNTED, SEED_A,
        ]);
        let got: Vec<(String, u64, bool, u64)> = e
            .take_all()
            .iter()
            .map(|g| match &g.detail {
                Detail::Htree {
                    remounted,
                    earlier_mounts,
                    ..
                } => (g.key.clone(), g.count, *remounted, *earlier_mounts),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("md1:211566352".to_string(), 3, true, 3),
                ("md1:211566352@3".to_string(), 1, false, 0),
            ]
        );
    }

    #[test]
    fn a_device_mounted_again_starts_new_groups() {
        let e = run(&[
            SEED_A, SEED_B, SEED_A, MOUNTED, SEED_A, SEED_B, MOUNTED, SEED_A,
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
                (
                    Rule::KernelOops,
                    "BUG: kernel NULL pointer dereference in kworker/1:2",
                    1
                ),
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
