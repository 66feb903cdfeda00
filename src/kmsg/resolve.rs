//! Resolution: what a group of kernel messages names, found on the live node. A device and an inode become a host
//! path (by file handle, else a bounded search) and the containers that see it; a memory cgroup becomes a pod; a
//! pid that still runs under the logged name becomes a pod, a state and a kernel stack. Runs once per group, never
//! per line.

use super::rules::{Detail, Group, Rule, Stamp, MAX_LIST};
use crate::finding::{utc, Finding, Severity};
use crate::host::resolve::DevNum;
use crate::host::{display_bytes, procfs, read_bounded};
use crate::owner::Attributor;
use crate::owner::{cgroup, Owner};
use serde_json::{json, Value};
use std::cell::RefCell;

/// Kernel stacks hold at most this many frames in evidence.
const MAX_STACK_NOW: usize = 64;

/// Appends one piece of evidence.
fn put(f: &mut Finding, key: &str, value: impl serde::Serialize) {
    f.evidence.push((
        key.to_string(),
        serde_json::to_value(value).unwrap_or(Value::Null),
    ));
}

/// Turns groups into findings, resolving what the messages name on the live node: devices and inodes to paths,
/// cgroups and pids to pods. One resolver serves a whole run and caches the host's mount table.
pub struct Resolver<'a> {
    owners: &'a Attributor<'a>,
    /// The wall-clock time of boot in µs since the epoch, when record timestamps are from this boot.
    boot_usec: Option<i128>,
    /// Whether devices, inodes and pids named by the log may be looked up on this host: only when the log is
    /// from this host's current boot, or the user asked by name. Elsewhere a `loop1` or a pid names something else.
    here: std::cell::Cell<bool>,
    /// What could not be resolved (what, why), for the check's blind spots.
    pub unresolved: RefCell<Vec<(String, String)>>,
}

/// Why a device, inode or pid was not looked up.
const NOT_HERE: &str =
    "not looked up on this host: the log is not known to be from this host's current boot \
                        (`wonk kmsg --resolve-here` looks it up anyway)";

impl<'a> Resolver<'a> {
    pub fn new(owners: &'a Attributor<'a>, boot_usec: Option<i128>, here: bool) -> Resolver<'a> {
        Resolver {
            owners,
            boot_usec,
            here: std::cell::Cell::new(here),
            unresolved: RefCell::new(Vec::new()),
        }
    }

    /// Allows (or forbids) looking up what the log names on this host, for the findings made from now on.
    pub fn set_here(&self, here: bool) {
        self.here.set(here);
    }

    pub fn here(&self) -> bool {
        self.here.get()
    }

    fn time(&self, s: &Stamp) -> Value {
        if let (Some(boot), Some(ts)) = (self.boot_usec, s.ts_usec) {
            if let Ok(secs) = i64::try_from((boot + i128::from(ts)) / 1_000_000) {
                return Value::String(utc(secs));
            }
        }
        s.wall.clone().map_or(Value::Null, Value::String)
    }

    /// The finding for one group.
    pub fn finding(&self, g: &Group) -> Finding {
        let mut f = Finding {
            check: "kmsg",
            kind: g.rule.kind(),
            severity: Severity::Warning,
            summary: String::new(),
            subject: g.key.clone(),
            owner: None,
            evidence: Vec::new(),
            advice: Vec::new(),
        };
        put(&mut f, "count", g.count);
        put(&mut f, "bursts", g.bursts);
        put(&mut f, "first_seq", g.first.seq);
        put(&mut f, "last_seq", g.last.seq);
        put(&mut f, "first_time", self.time(&g.first));
        put(&mut f, "last_time", self.time(&g.last));
        put(&mut f, "first_ts_usec", g.first.ts_usec);
        put(&mut f, "last_ts_usec", g.last.ts_usec);
        match &g.detail {
            Detail::Htree { .. } => self.htree(&mut f, g),
            Detail::Oom { .. } => self.oom(&mut f, g),
            Detail::Hung { .. } => self.hung(&mut f, g),
            Detail::Fs { .. } => self.fs(&mut f, g),
            Detail::Oops {
                pid,
                comm,
                rip,
                logged_stack,
            } => {
                f.severity = Severity::Critical;
                f.summary = format!("kernel oops: {} ({} times)", g.key, g.count);
                let live = match (pid, comm) {
                    (Some(p), Some(c)) => self.live_task(*p, c),
                    _ => None,
                };
                f.owner = live.and_then(|l| l.owner);
                put(&mut f, "pid", pid);
                put(&mut f, "comm", comm);
                put(&mut f, "rip", rip);
                put(&mut f, "logged_stack", logged_stack);
                f.advice = vec![
                    "the kernel hit a bug and the node may be unstable: drain it and reboot".into(),
                    "keep the whole report (dmesg) for the kernel or driver vendor".into(),
                ];
            }
            Detail::Lockup {
                cpu,
                stuck_secs,
                comm,
                pid,
            } => {
                let live = match (pid, comm) {
                    (Some(p), Some(c)) => self.live_task(*p, c),
                    _ => None,
                };
                f.summary = match (comm, pid) {
                    (Some(c), Some(p)) => format!(
                        "CPU {} stuck for {}s running {c} (pid {p}), {} reports",
                        cpu.map_or("?".into(), |c| c.to_string()),
                        stuck_secs.unwrap_or(0),
                        g.count
                    ),
                    _ => format!("CPU lockup: {} ({} reports)", g.key, g.count),
                };
                put(&mut f, "cpu", cpu);
                put(&mut f, "stuck_for_secs", stuck_secs);
                put(&mut f, "comm", comm);
                put(&mut f, "pid", pid);
                put(&mut f, "alive", self.here().then_some(live.is_some()));
                f.owner = live.and_then(|l| l.owner);
                f.advice = vec![
                    "a CPU ran kernel code too long without scheduling: the logged stack names the driver or lock; storage stalls are a common cause".into(),
                ];
            }
            Detail::Hardware {
                severity,
                previous_boot,
                section,
            } => {
                f.severity = match severity.as_str() {
                    "corrected" | "info" | "informational" => Severity::Warning,
                    _ => Severity::Critical,
                };
                f.subject = format!("hardware error ({severity})");
                f.summary = format!(
                    "{} hardware errors{} ({} records{})",
                    severity,
                    section
                        .as_deref()
                        .map(|s| format!(" in {s}"))
                        .unwrap_or_default(),
                    g.count,
                    if *previous_boot {
                        ", from the previous boot"
                    } else {
                        ""
                    }
                );
                put(&mut f, "severity_reported", severity);
                put(&mut f, "section_type", section);
                put(&mut f, "previous_boot", previous_boot);
                f.advice = vec![
                    "the platform reported a hardware error: read the whole record (dmesg) and the BMC's event log; corrected errors that keep coming precede uncorrected ones".into(),
                ];
            }
            Detail::Stall {
                flavor,
                self_detected,
            } => {
                f.severity = Severity::Critical;
                f.summary = format!(
                    "RCU stall ({flavor}{}), {} reports",
                    if *self_detected {
                        ", self-detected"
                    } else {
                        ""
                    },
                    g.count
                );
                put(&mut f, "flavor", flavor);
                put(&mut f, "self_detected", self_detected);
                f.advice = vec![
                    "a CPU did not pass through a quiescent state for many seconds: the stack after the report names the code; a starved or overcommitted vCPU is a common cause".into(),
                ];
            }
            Detail::Conntrack { table } => {
                let sysctl = match table.as_str() {
                    "expectation" => "net.netfilter.nf_conntrack_expect_max",
                    "ip_conntrack" => "net.ipv4.netfilter.ip_conntrack_max",
                    _ => "net.netfilter.nf_conntrack_max",
                };
                f.summary = format!(
                    "connection tracking table {table} full: new connections are dropped ({} messages)",
                    g.count
                );
                put(&mut f, "table", table);
                put(&mut f, "sysctl", sysctl);
                f.advice = vec![
                    format!("raise {sysctl} (kube-proxy sets it from --conntrack-max-per-core), or find what opens so many connections (conntrack -S, conntrack -L)"),
                ];
            }
            Detail::Netdev {
                interface,
                usage_count,
            } => {
                f.summary = format!(
                    "network device {interface} cannot be freed (usage count {}), {} reports",
                    usage_count.map_or("?".into(), |u| u.to_string()),
                    g.count
                );
                put(&mut f, "interface", interface);
                put(&mut f, "usage_count", usage_count);
                f.advice = vec![
                    "a leaked reference keeps a deleted pod's network device alive; until it goes, its network namespace is not freed and pods may be slow to start or stop".into(),
                    "upgrade the kernel or CNI plugin that leaks the reference; a reboot clears it".into(),
                ];
            }
            Detail::Memory {
                location,
                corrected,
            } => {
                f.severity = if *corrected {
                    Severity::Warning
                } else {
                    Severity::Critical
                };
                f.subject = location.clone();
                f.summary = format!(
                    "{} memory read errors on {location} ({} reports)",
                    if *corrected {
                        "corrected"
                    } else {
                        "uncorrected"
                    },
                    g.count
                );
                put(&mut f, "location", location);
                put(&mut f, "corrected", corrected);
                f.advice = vec![
                    "replace the memory module if corrected errors keep coming; uncorrected errors corrupt data".into(),
                ];
            }
        }
        put(&mut f, "message", &g.message);
        put(&mut f, "resolved_here", self.here());
        f
    }

    fn host(&self) -> &crate::host::Host {
        self.owners.host()
    }

    fn htree(&self, f: &mut Finding, g: &Group) {
        let Detail::Htree {
            device,
            inode,
            levels,
            function,
            large_dir,
            remounted,
            earlier_mounts,
        } = &g.detail
        else {
            return;
        };
        // History: the filesystem these warnings were about is no longer the one mounted.
        f.severity = if *remounted {
            Severity::Warning
        } else {
            Severity::Critical
        };
        let large_dir = large_dir.or(match levels {
            Some(3) => Some(true),
            _ => None,
        });
        let (dev, dev_error) = match self.dev_or_error(device) {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        };
        let loc = match (inode, dev) {
            (Some(ino), Some(d)) if !remounted => Some(self.locate(d, device, *ino, true)),
            _ => None,
        };
        let path = loc.as_ref().and_then(|l| l.path.clone());
        // Unresolved, the directory is named as `wonk who` takes it.
        f.subject = path
            .clone()
            .unwrap_or_else(|| format!("{device}:{}", inode.map_or("?".into(), |i| i.to_string())));
        f.summary = format!(
            "directory index full: creating files in {} fails with ENOSPC ({} warnings)",
            f.subject, g.count
        );
        put(f, "device", device);
        put(f, "device_number", dev.map(|d| d.to_string()));
        put(f, "inode", inode);
        put(f, "path", &path);
        put(f, "resolved_by", loc.as_ref().and_then(|l| l.resolved_by));
        let remount_error = remounted.then(|| {
            format!(
                "/dev/{device} was mounted again after these warnings: they are about the filesystem mounted \
                 before, so inode {} is not looked up on the one mounted now",
                inode.map_or("?".into(), |i| i.to_string())
            )
        });
        put(
            f,
            "path_error",
            loc.as_ref()
                .and_then(|l| l.error.clone())
                .or(remount_error)
                .or(dev_error),
        );
        put(f, "remounted", remounted);
        if *remounted {
            put(f, "earlier_mounts", earlier_mounts);
            f.summary = format!(
                "directory index was full on a filesystem mounted before /dev/{device} was mounted again ({} \
                 warnings over {earlier_mounts} earlier mount(s)); the filesystem mounted now was not judged",
                g.count
            );
        }
        put(f, "htree_levels", levels);
        put(f, "large_dir", large_dir);
        // The index as it is now, not as it was when the kernel complained.
        if let Some(p) = &path {
            match crate::ext4::htree::analyze(self.host(), std::path::Path::new(p), None) {
                Ok(r) => put(f, "htree_now", htree_now(&r)),
                Err(e) => put(f, "htree_now_error", e.to_string()),
            }
        }
        put(f, "function", function);
        put(f, "ext4_warning_count", self.ext4_warning_count(device));
        put(
            f,
            "seen_by",
            loc.as_ref().map_or(json!([]), |l| l.seen_by.clone()),
        );
        f.owner = loc.and_then(|l| l.owner);
        f.advice = vec![
            "find what fills the directory (often files created and never removed) and remove them, or spread them over subdirectories".into(),
            format!(
                "or allow a third index level: tune2fs -O large_dir /dev/{device} (works mounted, cannot be undone; Linux before 5.14 can corrupt such directories and GRUB before 2.12 cannot boot from the filesystem)"
            ),
        ];
    }

    fn oom(&self, f: &mut Finding, g: &Group) {
        let Detail::Oom {
            memcg,
            oom_memcg,
            constraint,
            task,
            pid,
            pids,
            uid,
            total_vm_kb,
            anon_rss_kb,
            file_rss_kb,
            shmem_rss_kb,
            oom_score_adj,
        } = &g.detail
        else {
            return;
        };
        f.owner = memcg.as_deref().and_then(|m| {
            let r = cgroup::parse_path(m);
            (r.pod_uid.is_some() || r.container_id.is_some())
                .then(|| self.owners.owner_of_cgroup(&r))
        });
        f.subject = memcg.clone().unwrap_or_else(|| format!("process {task}"));
        let scope = match constraint.as_deref() {
            Some("CONSTRAINT_MEMCG") => "its memory cgroup's limit",
            Some("CONSTRAINT_NONE") => "the node's memory",
            _ => "memory",
        };
        f.summary = format!(
            "OOM killer: {task} (pid {}) ran out of {scope}; {} kills",
            pid.map_or("?".into(), |p| p.to_string()),
            g.count
        );
        put(f, "memcg", memcg);
        put(f, "oom_memcg", oom_memcg);
        put(f, "constraint", constraint);
        put(f, "task", task);
        put(f, "pid", pid);
        put(f, "pids", pids);
        put(f, "uid", uid);
        put(f, "total_vm_kb", total_vm_kb);
        put(f, "anon_rss_kb", anon_rss_kb);
        put(f, "file_rss_kb", file_rss_kb);
        put(f, "shmem_rss_kb", shmem_rss_kb);
        put(f, "oom_score_adj", oom_score_adj);
        f.advice = vec![
            "CONSTRAINT_MEMCG: the container reached its own memory limit; raise the limit or find what grows".into(),
            "CONSTRAINT_NONE: the whole node ran out of memory; compare the pods' requests with the node's allocatable memory".into(),
        ];
    }

    fn hung(&self, f: &mut Finding, g: &Group) {
        let Detail::Hung {
            comm,
            pid,
            blocked_secs,
            logged_stack,
        } = &g.detail
        else {
            return;
        };
        let runtime = comm.starts_with("containerd")
            || comm.starts_with("runc")
            || matches!(
                comm.as_str(),
                "dockerd" | "docker" | "kubelet" | "crio" | "conmon"
            );
        f.severity = if runtime {
            Severity::Critical
        } else {
            Severity::Warning
        };
        f.subject = format!("pid {pid} ({comm})");
        let live = self.live_task(*pid, comm);
        f.summary = format!(
            "task {comm} (pid {pid}) blocked for more than {blocked_secs}s in uninterruptible sleep, {} reports{}",
            g.count,
            if live.is_some() { "; still there" } else { "" }
        );
        put(f, "comm", comm);
        put(f, "pid", pid);
        put(f, "blocked_for_secs", blocked_secs);
        put(f, "alive", self.here().then_some(live.is_some()));
        put(f, "state_now", live.as_ref().and_then(|l| l.state));
        put(f, "stack_now", live.as_ref().and_then(|l| l.stack.clone()));
        put(
            f,
            "stack_error",
            live.as_ref().and_then(|l| l.stack_error.clone()),
        );
        put(f, "logged_stack", logged_stack);
        f.owner = live.and_then(|l| l.owner);
        f.advice = vec![
            "a task in uninterruptible sleep waits on the kernel, mostly on storage or a filesystem: the top frames of its stack name what it waits for".into(),
            "check the latency of the device behind it (iostat -x) and whether a filesystem is frozen or its storage gone".into(),
        ];
    }

    fn fs(&self, f: &mut Finding, g: &Group) {
        let Detail::Fs {
            device,
            inodes,
            details,
            blocks,
        } = &g.detail
        else {
            return;
        };
        let dev = self.dev(device);
        f.subject = format!("/dev/{device}");
        let (severity, summary, advice): (Severity, String, Vec<String>) = match g.rule {
            Rule::Ext4Error => (
                Severity::Critical,
                format!("ext4 errors on {device} ({} messages)", g.count),
                vec![
                    "the filesystem found corruption: plan an fsck (e2fsck -f) with the filesystem unmounted".into(),
                    "check the device for I/O errors (Buffer I/O error messages, SMART)".into(),
                ],
            ),
            Rule::Ext4Warning => (
                Severity::Warning,
                format!(
                    "ext4 warnings on {device} in {} ({} messages)",
                    details.join(", "),
                    g.count
                ),
                vec!["read the message: ext4 warns of conditions that can make writes fail".into()],
            ),
            Rule::FsReadOnly => (
                Severity::Critical,
                format!("{device} was remounted read-only after an error"),
                vec![
                    "every write to this filesystem now fails: move the pods away, fsck the filesystem and remount it".into(),
                ],
            ),
            Rule::BlockIoError => {
                let write = details.iter().any(|d| d.contains("WRITE"));
                let medium = details.iter().any(|d| d.starts_with("critical"));
                (
                    if write || medium {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "block I/O errors on {device}: {} ({} messages)",
                        details.join(", "),
                        g.count
                    ),
                    vec![
                        "the disk or its path failed requests: check its health (SMART, the RAID controller, the cloud volume, the SAN) and replace it".into(),
                    ],
                )
            }
            Rule::XfsCorruption => (
                Severity::Critical,
                format!("XFS metadata corruption on {device} ({} messages)", g.count),
                vec![
                    "unmount the filesystem and run xfs_repair; the kernel shuts it down when it meets the corruption on a write".into(),
                ],
            ),
            Rule::IoError => {
                let write = details.iter().any(|d| d.contains("write"));
                (
                    if write {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "I/O errors on {device} ({} messages{})",
                        g.count,
                        if write { ", writes lost" } else { "" }
                    ),
                    vec![
                        "the block device failed reads or writes: check its health (SMART, RAID, the cloud volume) and replace it".into(),
                    ],
                )
            }
            _ => (
                Severity::Critical,
                format!("XFS on {device} shut down"),
                vec![
                    "the filesystem refuses all I/O until it is unmounted: move the pods away, unmount, run xfs_repair".into(),
                ],
            ),
        };
        f.severity = severity;
        f.summary = summary;
        f.advice = advice;
        put(f, "device", device);
        put(f, "device_number", dev.map(|d| d.to_string()));
        put(
            f,
            "mount_points",
            dev.map(|d| self.mount_points(d)).unwrap_or_default(),
        );
        match g.rule {
            Rule::Ext4Error | Rule::Ext4Warning => {
                let loc = match (inodes.first(), dev) {
                    (Some(&ino), Some(d)) if g.rule == Rule::Ext4Error => {
                        Some(self.locate(d, device, ino, false))
                    }
                    _ => None,
                };
                put(f, "functions", details);
                put(f, "inodes", inodes);
                put(f, "path", loc.as_ref().and_then(|l| l.path.clone()));
                put(f, "resolved_by", loc.as_ref().and_then(|l| l.resolved_by));
                f.owner = loc.and_then(|l| l.owner);
            }
            Rule::IoError => {
                put(f, "operations", details);
                put(f, "blocks", blocks);
            }
            Rule::XfsShutdown | Rule::XfsCorruption => put(f, "reasons", details),
            Rule::BlockIoError => {
                put(f, "errors", details);
                put(f, "sectors", blocks);
            }
            _ => {}
        }
    }

    /// A device named by the kernel (`md1`, `loop0`, `dm-0`) as `MAJ:MIN`.
    fn dev(&self, device: &str) -> Option<DevNum> {
        self.dev_or_error(device).ok()
    }

    fn dev_or_error(&self, device: &str) -> Result<DevNum, String> {
        if !self.here() {
            return Err(format!("/dev/{device}: {NOT_HERE}"));
        }
        crate::owner::locate::resolve_dev(self.host(), device).map_err(|e| format!("{e:#}"))
    }

    fn mount_points(&self, dev: DevNum) -> Vec<String> {
        let mounts = self.owners.host_mounts().unwrap_or_default();
        let mut v: Vec<String> = mounts
            .iter()
            .filter(|m| m.dev() == (dev.major, dev.minor))
            .map(|m| display_bytes(&m.mount_point))
            .collect();
        v.dedup();
        v.truncate(MAX_LIST);
        v
    }

    fn ext4_warning_count(&self, device: &str) -> Option<u64> {
        if !self.here() || device.is_empty() || device.contains('/') || device.starts_with('.') {
            return None;
        }
        let p = self
            .host()
            .path(format!("/sys/fs/ext4/{device}/warning_count"));
        let b = read_bounded(&p, 64).ok()?;
        std::str::from_utf8(&b).ok()?.trim().parse().ok()
    }

    /// A file named by (device, inode), `device` as the message names it: its host path, how it was found, who sees
    /// it. With `want_dir`, an inode that is no longer a directory means the message is stale (the filesystem was
    /// recreated, or a loop device reused since), and the path is withheld.
    fn locate(&self, dev: DevNum, device: &str, ino: u64, want_dir: bool) -> Located {
        let name = crate::owner::locate::dev_name(device);
        let found = crate::owner::locate::inode_to_path(self.owners, dev, name, ino).and_then(|(path, method, id)| {
            if want_dir && !id.is_dir() {
                anyhow::bail!(
                    "inode {ino} on {dev} is now {}, not a directory: the filesystem changed since the message was logged",
                    display_bytes(&path)
                );
            }
            Ok((path, method))
        });
        match found {
            Ok((path, method)) => {
                let who = std::str::from_utf8(&path)
                    .ok()
                    .and_then(|p| crate::owner::locate::who(self.owners, p).ok());
                let (owner, seen_by) = match who {
                    Some(w) => (
                        w.owner.filter(|o| !o.is_empty()),
                        serde_json::to_value(&w.seen_by).unwrap_or(Value::Null),
                    ),
                    None => (None, json!([])),
                };
                Located {
                    path: Some(display_bytes(&path)),
                    resolved_by: Some(method),
                    error: None,
                    owner,
                    seen_by,
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                self.unresolved
                    .borrow_mut()
                    .push((format!("the path of inode {ino} on {dev}"), error.clone()));
                Located {
                    path: None,
                    resolved_by: None,
                    error: Some(error),
                    owner: None,
                    seen_by: json!([]),
                }
            }
        }
    }

    /// The task, if a process with that pid still runs under the same name: its owner, state and kernel stack.
    fn live_task(&self, pid: u64, comm: &str) -> Option<LiveTask> {
        if !self.here() {
            return None;
        }
        let host = self.host();
        let pid = u32::try_from(pid).ok()?;
        let dir = host.proc_pid(pid);
        let now = read_bounded(&dir.join("comm"), 64).ok()?;
        if display_bytes(now.strip_suffix(b"\n").unwrap_or(&now)) != comm {
            return None;
        }
        let owner = self.owners.owner_of_pid(pid).ok().filter(|o| !o.is_empty());
        let state = procfs::stat(host, pid).ok().map(|s| state_name(s.state));
        let (stack, stack_error) = match read_bounded(&dir.join("stack"), 64 << 10) {
            Ok(b) => (
                Some(
                    String::from_utf8_lossy(&b)
                        .lines()
                        .take(MAX_STACK_NOW)
                        .map(|l| match l.find("] ") {
                            Some(i) if l.starts_with("[<") => l[i + 2..].to_string(),
                            _ => l.to_string(),
                        })
                        .collect::<Vec<_>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        Some(LiveTask {
            owner,
            state,
            stack,
            stack_error,
        })
    }
}

fn state_name(c: char) -> &'static str {
    match c {
        'R' => "R (running)",
        'S' => "S (sleeping)",
        'D' => "D (uninterruptible sleep)",
        'Z' => "Z (zombie)",
        'T' => "T (stopped)",
        't' => "t (tracing stop)",
        'I' => "I (idle)",
        'X' => "X (dead)",
        _ => "other",
    }
}

struct Located {
    path: Option<String>,
    resolved_by: Option<&'static str>,
    error: Option<String>,
    owner: Option<Owner>,
    seen_by: Value,
}

struct LiveTask {
    owner: Option<Owner>,
    state: Option<&'static str>,
    stack: Option<Vec<String>>,
    stack_error: Option<String>,
}

/// The few figures of a directory's index that say how bad it is now.
fn htree_now(r: &crate::ext4::htree::HtreeReport) -> serde_json::Value {
    match &r.index {
        None => json!({"indexed": false, "large_dir": r.large_dir}),
        Some(ix) => json!({
            "indexed": true,
            "large_dir": r.large_dir,
            "levels": ix.levels + 1,
            "max_levels": ix.max_levels,
            "root": format!("{}/{}", ix.root.count, ix.root.limit),
            "entries": ix.entries.estimate,
            "failing_share": ix.create_failure.failing_share,
            "entries_left": ix.headroom.entries_left,
        }),
    }
}
