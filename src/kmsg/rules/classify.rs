//! The rule families: one classifier per kind of kernel message, each from the message bytes to a `Hit`.

use super::*;

/// What one message turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hit<'a> {
    /// An event of its own, counted in its group.
    Event {
        rule: Rule,
        key: String,
        detail: Detail,
    },
    /// "Large directory feature is not enabled on this filesystem" on `device`.
    HtreeCompanion { device: String },
    /// "EXT4-fs (DEV): mounted filesystem ...": what follows on `device` is about a new filesystem. Borrowed: the
    /// line is a common one, and most devices are never looked up again.
    Ext4Mounted { device: Cow<'a, str> },
    /// "Killed process PID (comm) ...": detail for the `oom-kill:` summary of the same pid, or an event of its own.
    OomVictim(Detail),
    /// Kernels before 4.19 (no `oom-kill:` line): "Memory cgroup out of memory: Kill process PID (comm) score S
    /// or sacrifice child", the kill's summary; its cgroup comes from the lines before it.
    OomChosen(Detail),
    /// What an OOM report before 4.19 says of the cgroup: "Task in MEMCG killed as a result of limit of LIMIT".
    OomCgroup { memcg: String, task: bool },
    /// "Memory cgroup stats for MEMCG: ...": the first one names the cgroup whose limit was hit (read only when
    /// no "Task in" line named one, see [`stats_memcg`]).
    OomStats,
    /// "BERT: Error records from previous boot:": the hardware errors that follow happened before this boot.
    Bert,
    /// "[Hardware Error]:   section_type: memory error": detail for the CPER record before it.
    CperSection(String),
}

/// The rules proper: the first byte picks the few prefixes worth comparing; everything else is rejected at once.
pub(super) fn classify(m: &[u8]) -> Option<Hit<'_>> {
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
        b'X' => {
            if let Some(rest) = m.strip_prefix(b"XFS (") {
                xfs(rest)
            } else if m.starts_with(b"XFS: Internal error ") {
                Some(xfs_event(Rule::XfsCorruption, "?".into(), &m[5..]))
            } else {
                None
            }
        }
        b'B' => {
            if m.starts_with(b"Buffer I/O error on dev") {
                buffer_io(m)
            } else if m.starts_with(b"BUG: ") {
                if m[5..].starts_with(b"soft lockup") {
                    lockup(m)
                } else {
                    Some(oops(m))
                }
            } else if m.starts_with(b"BERT: Error records from previous boot") {
                Some(Hit::Bert)
            } else {
                None
            }
        }
        b'I' => {
            if let Some(rest) = m.strip_prefix(b"INFO: task ") {
                hung(rest)
            } else if let Some(rest) = m.strip_prefix(b"INFO: rcu") {
                rcu(rest)
            } else if m.starts_with(b"I/O error, dev ") {
                block(m)
            } else if m.starts_with(b"Internal error: Oops") {
                Some(oops(m))
            } else {
                None
            }
        }
        b't' => m.strip_prefix(b"task ").and_then(hung),
        b'o' => m.strip_prefix(b"oom-kill:").map(oom_summary),
        b'M' => {
            if let Some(rest) = m.strip_prefix(b"Memory cgroup out of memory: Killed process ") {
                killed(rest)
            } else if let Some(rest) = m.strip_prefix(b"Memory cgroup out of memory: Kill process ")
            {
                chosen(rest)
            } else if m.starts_with(b"Memory cgroup stats for ") {
                Some(Hit::OomStats)
            } else {
                None
            }
        }
        b'T' => {
            let rest = m.strip_prefix(b"Task in ")?;
            let end = find(rest, b" killed as a result of limit of ")?;
            Some(Hit::OomCgroup {
                memcg: text(&rest[..end]),
                task: true,
            })
        }
        b'O' => {
            if let Some(rest) = m.strip_prefix(b"Out of memory: Killed process ") {
                killed(rest)
            } else if let Some(rest) = m.strip_prefix(b"Out of memory: Kill process ") {
                chosen(rest)
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
        b'U' if m.starts_with(b"Unable to handle kernel ") => Some(oops(m)),
        b'u' => m
            .strip_prefix(b"unregister_netdevice: waiting for ")
            .and_then(netdev),
        b'd' if m.starts_with(b"divide error: ") => Some(oops(m)),
        b'g' if m.starts_with(b"general protection fault") => Some(oops(m)),
        b'k' if m.starts_with(b"kernel BUG at ") => Some(oops(m)),
        b'w' => m.strip_prefix(b"watchdog: ").and_then(lockup),
        b'N' => m.strip_prefix(b"NMI watchdog: ").and_then(lockup),
        b'b' => m.strip_prefix(b"blk_update_request: ").and_then(block),
        b'p' => m.strip_prefix(b"print_req_error: ").and_then(block),
        b'e' => m.strip_prefix(b"end_request: ").and_then(block),
        b'c' if m.starts_with(b"critical ") => block(m),
        b'r' => m.strip_prefix(b"rcu: INFO: rcu").and_then(rcu),
        b'n' | b'i' => conntrack(m),
        b'{' | b'[' => cper(m),
        b'm' if m.starts_with(b"mce: [Hardware Error]: Machine check events logged") => {
            Some(Hit::Event {
                rule: Rule::HardwareError,
                key: "machine check".into(),
                detail: Detail::Hardware {
                    severity: "machine check".into(),
                    previous_boot: false,
                    section: None,
                },
            })
        }
        _ => None,
    }
}

/// The block layer's errors, after any `blk_update_request: ` prefix: `I/O error, dev sda, sector 123 op
/// 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0`, `critical medium error, dev sdb, sector 5120`, 3.x's `I/O
/// error, dev sdb, sector 123`, 4.x's `I/O error, dev sdc, sector 1098288304 flags 0`.
pub(super) fn block(m: &[u8]) -> Option<Hit<'_>> {
    let at = find(m, b", dev ")?;
    let what = &m[..at];
    if !(what.ends_with(b"error") && (what.starts_with(b"I/O") || what.starts_with(b"critical"))) {
        return None;
    }
    let r = &m[at + 6..];
    let device = text(upto(r, b','));
    if device.is_empty() || device.contains(' ') {
        return None;
    }
    let op = after(r, b":(").map(|o| text(upto(o, b')')));
    let mut details = vec![text(what)];
    details.extend(op);
    Some(Hit::Event {
        rule: Rule::BlockIoError,
        key: device.clone(),
        detail: Detail::Fs {
            device,
            inodes: Vec::new(),
            details,
            blocks: number_after(r, b"sector ").into_iter().collect(),
        },
    })
}

/// After `INFO: rcu` (or `rcu: INFO: rcu`): `_sched detected stalls on CPUs/tasks:`, `_preempt self-detected
/// stall on CPU`, 3.x's `_sched_state detected stall on CPU 0 (t=15000 jiffies)`, `_preempt detected expedited
/// stalls on CPUs/tasks: { 0-... } 6 jiffies ...`.
pub(super) fn rcu(r: &[u8]) -> Option<Hit<'_>> {
    let at = find(r, b" detected stall")
        .or_else(|| find(r, b" self-detected stall"))
        .or_else(|| find(r, b" detected expedited stall"))?;
    let mut flavor = format!("rcu{}", text(&r[..at]));
    let self_detected = find(r, b"self-detected").is_some();
    if let Some(f) = flavor.strip_suffix(" self-detected") {
        flavor = f.to_string();
    }
    if flavor.len() > 32 || flavor.contains(' ') {
        return None;
    }
    Some(Hit::Event {
        rule: Rule::RcuStall,
        key: flavor.clone(),
        detail: Detail::Stall {
            flavor,
            self_detected,
        },
    })
}

/// `nf_conntrack: table full, dropping packet`, `nf_conntrack: nf_conntrack: table full, dropping packet` (a
/// network namespace's), `nf_conntrack: expectation table full`, 3.x's `ip_conntrack: table full, dropping packet`.
pub(super) fn conntrack(m: &[u8]) -> Option<Hit<'_>> {
    let rest = m
        .strip_prefix(b"nf_conntrack: ")
        .map(|r| r.strip_prefix(b"nf_conntrack: ").unwrap_or(r));
    let table = match rest {
        Some(r) if r.starts_with(b"table full, dropping packet") => "nf_conntrack",
        Some(r) if r.starts_with(b"expectation table full") => "expectation",
        Some(_) => return None,
        None if m.starts_with(b"ip_conntrack: table full, dropping packet") => "ip_conntrack",
        None => return None,
    };
    Some(Hit::Event {
        rule: Rule::ConntrackFull,
        key: table.into(),
        detail: Detail::Conntrack {
            table: table.into(),
        },
    })
}

/// CPER records: `{37}[Hardware Error]: event severity: corrected` (the `{N}` is the record number) and their
/// `section_type:` lines.
pub(super) fn cper(m: &[u8]) -> Option<Hit<'_>> {
    // "{37}" is the record's number.
    let m = match m.strip_prefix(b"{") {
        Some(r) => &r[memchr::memchr(b'}', &r[..r.len().min(12)])? + 1..],
        None => m,
    };
    let rest = trim_start(m.strip_prefix(b"[Hardware Error]: ")?);
    if let Some(sev) = rest.strip_prefix(b"event severity: ") {
        let severity = text(sev.trim_ascii_end());
        return Some(Hit::Event {
            rule: Rule::HardwareError,
            key: severity.clone(),
            detail: Detail::Hardware {
                severity,
                previous_boot: false,
                section: None,
            },
        });
    }
    rest.strip_prefix(b"section_type: ")
        .map(|s| Hit::CperSection(text(s.trim_ascii_end())))
}

/// The cgroup of a `Memory cgroup stats for MEMCG: cache:...` line.
pub(super) fn stats_memcg(m: &[u8]) -> Option<String> {
    let rest = m.strip_prefix(b"Memory cgroup stats for ")?;
    let end = find(rest, b": ").or_else(|| rest.ends_with(b":").then(|| rest.len() - 1))?;
    Some(text(&rest[..end]))
}

/// After `Kill process `: `PID (comm) score S or sacrifice child`.
pub(super) fn chosen(r: &[u8]) -> Option<Hit<'_>> {
    let (pid, used) = digits(r)?;
    let rest = r[used..].strip_prefix(b" (")?;
    let end = find(rest, b") score ").or_else(|| memchr::memrchr(b')', rest))?;
    Some(Hit::OomChosen(Detail::Oom {
        memcg: None,
        oom_memcg: None,
        constraint: None,
        task: text(&rest[..end]),
        pid: Some(pid),
        pids: vec![pid],
        uid: None,
        total_vm_kb: None,
        anon_rss_kb: None,
        file_rss_kb: None,
        shmem_rss_kb: None,
        oom_score_adj: None,
    }))
}

/// After `EXT4-fs `: `warning (device DEV): FUNC:LINE: text`, `error (device DEV): FUNC:LINE: text`,
/// `error (device DEV) in FUNC:LINE: text`, or `(DEV): text`.
pub(super) fn ext4(rest: &[u8]) -> Option<Hit<'_>> {
    let (is_error, r) = if let Some(r) = rest.strip_prefix(b"warning (device ") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix(b"error (device ") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix(b"(") {
        let close = memchr::memchr(b')', r)?;
        let msg = r[close + 1..].strip_prefix(b": ")?;
        if msg.starts_with(b"mounted filesystem") {
            return Some(Hit::Ext4Mounted {
                device: text_cow(&r[..close]),
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
                    earlier_mounts: 0,
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
pub(super) fn inode_in(msg: &[u8]) -> Option<u64> {
    number_after(msg, b"(ino: ").or_else(|| {
        msg.strip_prefix(b"inode #")
            .and_then(|r| digits(r).map(|(n, _)| n))
    })
}

/// After `XFS (`: `DEV): text`. A shut-down filesystem fails every log force (`xfs_log_force: error -5
/// returned.`, every 30 s): those fold into its shutdown.
pub(super) fn xfs(r: &[u8]) -> Option<Hit<'_>> {
    let close = memchr::memchr(b')', r)?;
    let msg = r[close + 1..].strip_prefix(b": ")?;
    let shutdown = contains(msg, b"Shutting down filesystem")
        || contains(msg, b"shut down")
        || msg.starts_with(b"xfs_do_force_shutdown")
        || msg.starts_with(b"xfs_log_force: error");
    let corruption = !shutdown
        && (msg.starts_with(b"Metadata corruption detected")
            || msg.starts_with(b"Corruption detected")
            || msg.starts_with(b"Metadata CRC error detected")
            || msg.starts_with(b"Corruption warning")
            || msg.starts_with(b"Internal error XFS_WANT_CORRUPTED"));
    let rule = match (shutdown, corruption) {
        (true, _) => Rule::XfsShutdown,
        (_, true) => Rule::XfsCorruption,
        _ => return None,
    };
    Some(xfs_event(rule, text(&r[..close]), msg))
}

/// An XFS event on `device`: the detail is the message up to its code address (`at xfs_buf_ioend+0x162/0x570`).
pub(super) fn xfs_event(rule: Rule, device: String, msg: &[u8]) -> Hit<'static> {
    let detail = match find(msg, b"+0x") {
        Some(i) if rule == Rule::XfsCorruption => {
            let start = memchr::memrchr(b' ', &msg[..i]).map_or(0, |s| s + 1);
            &msg[..start]
        }
        _ => msg,
    };
    Hit::Event {
        rule,
        key: device.clone(),
        detail: Detail::Fs {
            device,
            inodes: Vec::new(),
            details: vec![text(detail.trim_ascii_end())],
            blocks: Vec::new(),
        },
    }
}

/// `Buffer I/O error on dev DEV, logical block N, lost async page write` (older kernels: `on device DEV`).
pub(super) fn buffer_io(m: &[u8]) -> Option<Hit<'_>> {
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
pub(super) fn hung(r: &[u8]) -> Option<Hit<'_>> {
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
pub(super) fn oom_summary(s: &[u8]) -> Hit<'static> {
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
pub(super) fn killed(r: &[u8]) -> Option<Hit<'_>> {
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
pub(super) fn netdev(r: &[u8]) -> Option<Hit<'_>> {
    let at = find(r, b" to become free")?;
    let interface = text(&r[..at]);
    Some(Hit::Event {
        rule: Rule::NetdevWait,
        key: interface.clone(),
        detail: Detail::Netdev {
            interface,
            usage_count: signed_after(&r[at..], b"Usage count = "),
        },
    })
}

/// Oopses and BUGs, keyed by what went wrong without the addresses: `BUG: kernel NULL pointer dereference`.
pub(super) fn oops(m: &[u8]) -> Hit<'static> {
    // 6.x: "Oops: general protection fault, probably for ...: 0000 [#1] ..." names the fault; older "Oops: 0000
    // [#1] SMP" and arm64's "Internal error: Oops: 96000004 [#1]" do not.
    let m = match m.strip_prefix(b"Oops: ") {
        Some(rest) if !rest.first().is_some_and(u8::is_ascii_digit) => rest,
        _ => m,
    };
    let key = if m.starts_with(b"Oops: ") || m.starts_with(b"Internal error: Oops") {
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
pub(super) fn lockup(m: &[u8]) -> Option<Hit<'_>> {
    let soft = find(m, b"soft lockup").is_some();
    if !soft && find(m, b"hard LOCKUP").is_none() {
        return None;
    }
    let cpu = number_after(m, b"CPU#").or_else(|| number_after(m, b"on cpu "));
    // "! [comm:pid]", where comm may hold brackets and colons ("[runc:[1:CHILD]:185318]").
    let open = find(m, b"! [")
        .map(|i| i + 2)
        .or_else(|| memchr::memrchr(b'[', m));
    let (comm, pid) = match (open, memchr::memrchr(b']', m)) {
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

/// `EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 ...)`, and the same for
/// `UE` and for errors the memory controller's patrol scrubber found (`CE memory scrubbing error on ...`); a driver
/// that gives no message prints none (`EDAC MC0: 4 CE error on CPU#0Channel#2_DIMM#0 (channel:2 ...)`, i7core).
pub(super) fn edac(m: &[u8]) -> Option<Hit<'_>> {
    let on = find(m, b" error on ")?;
    let what = &m[..on];
    let what = what
        .strip_suffix(b" memory read")
        .or_else(|| what.strip_suffix(b" memory scrubbing"))
        .unwrap_or(what);
    let corrected = if what.ends_with(b" CE") {
        true
    } else if what.ends_with(b" UE") {
        false
    } else {
        return None;
    };
    let controller = text(upto(&m[5..], b':'));
    let r = &m[on + b" error on ".len()..];
    let location = text(find(r, b" (").map_or(r, |i| &r[..i]));
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
