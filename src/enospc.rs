//! `wonk enospc`: who is getting ENOSPC right now, and why.
//!
//! A private tracefs instance enables the exit tracepoints of the syscalls that create names, filtered in the
//! kernel on the return value (`ret == -28`), so only failures ever reach wonk. Hits are folded per thread and
//! syscall, attributed to their pod, and explained: ext4 "index full" warnings from the kernel log in the same
//! window mean a full directory index (as when a pod fills a flat directory), a filesystem visible to the process with no free
//! blocks or inodes means a really full disk.
//!
//! The instance is the one thing wonk adds to the host here. It is removed on every exit path: normal end,
//! Ctrl-C and SIGTERM (through [`crate::stop`]), and panics (through `Drop`). Instances left by a wonk that was
//! killed outright are removed at the next start.

use crate::args::Seconds;
use crate::finding::{utc, BlindSpot, CheckOutput, Finding, Severity};
use crate::host::mountinfo;
use crate::host::{procfs, Host};
use crate::investigation::{Env, Investigation};
use crate::owner::Attributor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The syscalls that create names.
pub const SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "rename",
    "renameat",
    "renameat2",
];

const PREFIX: &str = "wonk-enospc-";

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Option<Duration>,
    /// Error numbers to catch (positive), ENOSPC by default.
    pub errnos: Vec<i32>,
}

/// One failing call, as tracefs printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub comm: String,
    pub tid: u32,
    /// Seconds since boot, from the trace clock.
    pub ts: f64,
    pub syscall: String,
    pub errno: i32,
}

/// Parses a trace_pipe line: `  php-fpm-2916472 [001] .....  3516.159767: sys_openat -> 0xffffffffffffffe4`.
///
/// The comm is up to 15 bytes of anything a process chose (`k-1 [0`, `a: sys_x -> 0x1`); everything right of it
/// is formatted by the kernel. So the fields are taken from the right: the event after the last `: sys_`, the
/// timestamp, the optional irq flags, the `[CPU]` field, and the thread id after the last `-` left of that; what
/// remains is the comm.
pub fn parse_line(line: &str) -> Option<Hit> {
    let (head, event) = line.rsplit_once(": sys_")?;
    let (syscall, ret) = event.split_once(" -> ")?;
    let ret = u64::from_str_radix(ret.trim().trim_start_matches("0x"), 16).ok()? as i64;
    let (mut rest, ts) = head.trim_end().rsplit_once(' ')?;
    let ts = ts.parse().ok()?;
    // `[CPU]` is the token left of the timestamp, or left of the flags when the irq-info option is on.
    let is_cpu = |t: &str| {
        t.strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut task = None;
    for _ in 0..2 {
        let (left, tok) = rest.trim_end().rsplit_once(' ')?;
        if is_cpu(tok) {
            task = Some(left);
            break;
        }
        rest = left;
    }
    let (comm, tid) = task?.trim_end().rsplit_once('-')?;
    Some(Hit {
        comm: comm.trim_start().to_string(),
        tid: tid.parse().ok()?,
        ts,
        syscall: syscall.to_string(),
        errno: (-ret) as i32,
    })
}

/// The errno named on the command line: a number, or a name such as `ENOSPC` or `EDQUOT`.
pub fn parse_errno(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (n > 0 && n < 4096).then_some(n);
    }
    Some(match s.to_ascii_uppercase().as_str() {
        "ENOSPC" => libc::ENOSPC,
        "EDQUOT" => libc::EDQUOT,
        "EMLINK" => libc::EMLINK,
        "ENFILE" => libc::ENFILE,
        "EMFILE" => libc::EMFILE,
        "EROFS" => libc::EROFS,
        "EIO" => libc::EIO,
        "ENOMEM" => libc::ENOMEM,
        "EFBIG" => libc::EFBIG,
        _ => return None,
    })
}

fn errno_name(n: i32) -> String {
    match n {
        libc::ENOSPC => "ENOSPC".into(),
        libc::EDQUOT => "EDQUOT".into(),
        libc::EMLINK => "EMLINK".into(),
        libc::EROFS => "EROFS".into(),
        n => format!("errno {n}"),
    }
}

/// Where tracefs is mounted on the node.
pub fn tracefs(host: &Host) -> anyhow::Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let dir = host.path(p);
        if dir.join("instances").is_dir() {
            return Ok(dir);
        }
    }
    anyhow::bail!(
        "tracefs is not mounted (no {}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`, then run \
         wonk enospc again",
        host.path("/sys/kernel/tracing/instances").display()
    )
}

/// A tracefs instance that disables its events and removes itself when dropped.
pub struct Instance {
    dir: PathBuf,
}

impl Instance {
    /// Creates `instances/wonk-enospc-<pid>` with every creating syscall's exit event filtered on `errnos`.
    pub fn create(tracefs: &Path, errnos: &[i32]) -> anyhow::Result<(Instance, Vec<String>)> {
        let dir = tracefs
            .join("instances")
            .join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the tracefs instance {}: {e} (wonk enospc needs root)",
                dir.display()
            )
        })?;
        let inst = Instance { dir };
        let filter = errnos
            .iter()
            .map(|e| format!("ret == -{e}"))
            .collect::<Vec<_>>()
            .join(" || ");
        let mut enabled = Vec::new();
        for sc in SYSCALLS {
            let ev = inst.dir.join(format!("events/syscalls/sys_exit_{sc}"));
            if !ev.is_dir() {
                continue;
            }
            std::fs::write(ev.join("filter"), &filter).map_err(|e| {
                anyhow::anyhow!("setting the filter {filter:?} on {}: {e}", ev.display())
            })?;
            std::fs::write(ev.join("enable"), "1")
                .map_err(|e| anyhow::anyhow!("enabling {}: {e}", ev.display()))?;
            enabled.push(sc.to_string());
        }
        if enabled.is_empty() {
            anyhow::bail!(
                "this kernel has no syscall exit tracepoints under {}/events/syscalls (CONFIG_FTRACE_SYSCALLS)",
                inst.dir.display()
            );
        }
        Ok((inst, enabled))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        remove_instance(&self.dir);
    }
}

fn remove_instance(dir: &Path) {
    let _ = std::fs::write(dir.join("events/enable"), "0");
    let _ = std::fs::remove_dir(dir);
}

/// Removes instances left by wonk processes that no longer exist. Returns their names.
pub fn clean_leftovers(host: &Host, tracefs: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(tracefs.join("instances")) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !host.proc_pid(pid).exists() {
            remove_instance(&e.path());
            removed.push(name);
        }
    }
    removed
}

/// Hits folded per thread, syscall and errno.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub tid: u32,
    pub pid: Option<u32>,
    pub comm: String,
    pub syscall: String,
    pub errno: i32,
    pub count: u64,
    pub first: String,
    pub last: String,
    #[serde(skip)]
    pub first_ts: f64,
    /// When the first calls failed (trace clock, seconds since boot), to match them with kernel warnings.
    #[serde(skip)]
    pub times: Vec<f64>,
}

/// The kernel logs an ext4 "index full" warning at the moment the create fails; this close counts as that moment.
const SAME_MOMENT: f64 = 0.05;
/// Failure times kept per group for matching.
const TIMES_KEPT: usize = 256;

/// Catches failing creates until the duration ends or Ctrl-C. `on_hit` sees each new group as it appears.
pub fn run(
    host: &Host,
    owners: &Attributor,
    opts: &Options,
    on_hit: &mut dyn FnMut(&Group),
) -> anyhow::Result<CheckOutput> {
    crate::stop::install();
    let tfs = tracefs(host)?;
    let mut out = CheckOutput::default();
    for name in clean_leftovers(host, &tfs) {
        out.blind_spots.push(BlindSpot::new(
            "enospc",
            name,
            "removed a tracefs instance left by a wonk that was killed",
        ));
    }
    let kmsg_start = crate::kmsg::last_seq(host).ok().flatten();
    let (inst, enabled) = Instance::create(&tfs, &opts.errnos)?;
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(inst.dir().join("trace_pipe"))?;
    let boot_wall = procfs::boot_time(host);
    let start = Instant::now();
    let mut groups: BTreeMap<(u32, String, i32), Group> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut malformed = 0u64;
    let mut pipe = pipe;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some(hit) = parse_line(line.trim_end()) else {
                        if !line.trim().is_empty() {
                            malformed += 1;
                        }
                        continue;
                    };
                    let wall = boot_wall
                        .map(|b| utc(b + hit.ts as i64))
                        .unwrap_or_else(|| format!("{:.6}", hit.ts));
                    let key = (hit.tid, hit.syscall.clone(), hit.errno);
                    let new = !groups.contains_key(&key);
                    let g = groups.entry(key).or_insert_with(|| Group {
                        tid: hit.tid,
                        pid: tgid(host, hit.tid),
                        comm: hit.comm.clone(),
                        syscall: hit.syscall.clone(),
                        errno: hit.errno,
                        count: 0,
                        first: wall.clone(),
                        last: wall.clone(),
                        first_ts: hit.ts,
                        times: Vec::new(),
                    });
                    g.count += 1;
                    if g.times.len() < TIMES_KEPT {
                        g.times.push(hit.ts);
                    }
                    g.last = wall;
                    if new {
                        on_hit(g);
                    }
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if crate::stop::requested() || opts.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        crate::stop::sleep(Duration::from_millis(100));
    }
    drop(pipe);
    drop(inst);
    out.stats = vec![
        ("syscalls_traced".into(), enabled.len() as u64),
        ("hits".into(), groups.values().map(|g| g.count).sum()),
        ("groups".into(), groups.len() as u64),
        ("malformed_lines".into(), malformed),
    ];
    let index_full = index_full_warnings(owners, kmsg_start);
    let moments = index_full_moments(host, kmsg_start);
    for g in groups.values() {
        // The warnings logged at the moment this group's calls failed name its directory; other index-full
        // warnings of the window may belong to other processes.
        let mut devices: Vec<&str> = moments
            .iter()
            .filter(|(t, _)| g.times.iter().any(|h| (h - t).abs() <= SAME_MOMENT))
            .map(|(_, d)| d.as_str())
            .collect();
        devices.sort_unstable();
        devices.dedup();
        let same_moment: Vec<Finding> = index_full
            .iter()
            .filter(|f| {
                f.evidence
                    .iter()
                    .any(|(k, v)| k == "device" && v.as_str().is_some_and(|d| devices.contains(&d)))
            })
            .cloned()
            .collect();
        out.findings
            .push(explain(host, owners, g, &same_moment, &index_full));
    }
    Ok(out)
}

fn tgid(host: &Host, tid: u32) -> Option<u32> {
    procfs::status_field(host, tid, "Tgid")
        .ok()
        .flatten()?
        .parse()
        .ok()
}

/// The ext4 "index full" findings the kernel logged since `since` (a /dev/kmsg sequence number).
fn index_full_warnings(owners: &Attributor, since: Option<u64>) -> Vec<Finding> {
    let opts = crate::kmsg::Options {
        since_seq: since.map(|s| s + 1),
        ..Default::default()
    };
    let out = crate::kmsg::scan(
        owners,
        &crate::kmsg::Source::DevKmsg { follow: false },
        &opts,
    );
    out.findings
        .into_iter()
        .filter(|f| f.kind == "htree-full")
        .collect()
}

/// `(seconds since boot, device name)` of every ext4 index-full warning logged after `since`.
fn index_full_moments(host: &Host, since: Option<u64>) -> Vec<(f64, String)> {
    let opts = crate::kmsg::reader::KmsgOptions {
        since_seq: since,
        ..Default::default()
    };
    let mut stats = crate::kmsg::reader::ReadStats::default();
    let mut found = Vec::new();
    let mut sink = |r: &crate::kmsg::record::Record<'_>| {
        if r.from_userspace() {
            return;
        }
        let text = r.text();
        if !(text.contains("ext4_dx_add_entry") && text.contains("index full")) {
            return;
        }
        let dev = text
            .split_once("(device ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(d, _)| d.to_string());
        if let (Some(ts), Some(dev)) = (r.ts_usec, dev) {
            found.push((ts as f64 / 1e6, dev));
        }
    };
    let _ = crate::kmsg::reader::read_kmsg(host, &opts, &mut stats, &mut sink);
    found
}

/// Why a group of calls failed, as a finding.
fn explain(
    host: &Host,
    owners: &Attributor,
    g: &Group,
    index_full: &[Finding],
    window: &[Finding],
) -> Finding {
    let owner = g
        .pid
        .and_then(|p| owners.owner_of_pid(p).ok())
        .filter(|o| !o.is_empty());
    let full = g.pid.map(|p| full_filesystems(host, p)).unwrap_or_default();
    let who = owner
        .as_ref()
        .map(|o| format!(" in {}", o.pod_label()))
        .unwrap_or_default();
    let errno = errno_name(g.errno);
    // Without a warning at the very moment (ext4 rate-limits them), the window's warnings are the best clue,
    // unless a full filesystem explains the failure better.
    let (index_full, matched) = if !index_full.is_empty() {
        (index_full, "logged at the moment these calls failed")
    } else if full.is_empty() {
        (window, "logged in the same window, though not at the moment of these calls (ext4 rate-limits its warnings)")
    } else {
        (&[][..], "")
    };
    let (kind, severity, why) = if g.errno == libc::ENOSPC && !index_full.is_empty() {
        let dirs: Vec<String> = index_full.iter().map(|f| f.subject.clone()).collect();
        (
            "index-full",
            Severity::Critical,
            format!("index full in {}", dirs.join(", ")),
        )
    } else if !full.is_empty() {
        let fs: Vec<String> = full
            .iter()
            .map(|f| f["mount_point"].as_str().unwrap_or("?").to_string())
            .collect();
        (
            "filesystem-full",
            Severity::Critical,
            format!("filesystem full: {}", fs.join(", ")),
        )
    } else if g.errno == libc::ENOSPC {
        (
            "unexplained",
            Severity::Warning,
            "no ext4 index-full warning in the window and no full filesystem in view".into(),
        )
    } else {
        (
            "errno",
            Severity::Warning,
            format!("{errno} from {}", g.syscall),
        )
    };
    let mut f = Finding {
        check: "enospc",
        kind,
        severity,
        summary: format!(
            "{} ({}) got {errno} from {} {} times{who}: {why}",
            g.comm,
            g.pid.unwrap_or(g.tid),
            g.syscall,
            g.count
        ),
        subject: format!("pid {}", g.pid.unwrap_or(g.tid)),
        owner,
        evidence: Vec::new(),
        advice: Vec::new(),
    }
    .with("pid", g.pid)
    .with("tid", g.tid)
    .with("comm", &g.comm)
    .with("syscall", &g.syscall)
    .with("errno", g.errno)
    .with("count", g.count)
    .with("first", &g.first)
    .with("last", &g.last)
    .with("full_filesystems", &full);
    if kind == "index-full" {
        let dirs: Vec<serde_json::Value> = index_full
            .iter()
            .map(|w| serde_json::json!({"directory": w.subject, "owner": w.owner, "summary": w.summary}))
            .collect();
        f = f
            .with("index_full", dirs)
            .with("index_full_warnings", matched);
        f.advice.push("the directory's ext4 htree index is full: only names whose hash lands in a full leaf fail; \
                       run `wonk htree DIR` and shard the directory or enable large_dir"
            .into());
    } else if kind == "filesystem-full" {
        f.advice
            .push("free space or inodes on the full filesystem".into());
    }
    f
}

/// The filesystems a process sees that have no free blocks (for unprivileged users) or no free inodes.
fn full_filesystems(host: &Host, pid: u32) -> Vec<serde_json::Value> {
    let Ok(data) = procfs::mountinfo(host, pid) else {
        return Vec::new();
    };
    let (mounts, _) = mountinfo::parse(&data);
    let root = match crate::host::resolve::open_root(&procfs::root_dir(host, pid)) {
        Ok(r) => r,
        Err(_) => return Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    let mut full = Vec::new();
    for m in mounts
        .iter()
        .filter(|m| m.major != 0 || m.fs_type == "tmpfs" || m.fs_type == "overlay")
    {
        if !seen.insert(m.dev()) {
            continue;
        }
        let Ok(fd) = crate::host::resolve::open_in_root(&root, &m.mount_point, true) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstatvfs(&fd) else {
            continue;
        };
        if st.f_blocks == 0 {
            continue;
        }
        let no_blocks = st.f_bavail == 0;
        let no_inodes = st.f_files > 0 && st.f_favail == 0;
        if no_blocks || no_inodes {
            full.push(serde_json::json!({
                "mount_point": String::from_utf8_lossy(&m.mount_point),
                "device": format!("{}:{}", m.major, m.minor),
                "fs_type": m.fs_type,
                "blocks": st.f_blocks, "blocks_available": st.f_bavail, "block_size": st.f_frsize,
                "inodes": st.f_files, "inodes_available": st.f_favail,
            }));
        }
    }
    full
}

/// `wonk enospc`'s registration.
pub const INVESTIGATION: Investigation = Investigation {
    name: "enospc",
    about: "Catch the processes getting ENOSPC right now (tracefs, filtered in the kernel) and tell a full \
            directory index from a full disk. Adds a tracefs instance while it runs and removes it on exit",
    args: |c| <Args as clap::Args>::augment_args(c),
    run: run_command,
};

/// `wonk enospc` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to watch; 0 watches until Ctrl-C.
    #[arg(short, long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    duration: Seconds,
    /// Errors to catch, by name or number (repeatable): ENOSPC, EDQUOT, ...
    #[arg(long, default_value = "ENOSPC")]
    errno: Vec<String>,
}

fn run_command(m: &clap::ArgMatches, env: &mut Env) -> anyhow::Result<i32> {
    let a: Args = clap::FromArgMatches::from_arg_matches(m)?;
    let errnos = a
        .errno
        .iter()
        .map(|e| {
            parse_errno(e).ok_or_else(|| {
                anyhow::anyhow!("--errno {e}: not an errno name (ENOSPC, EDQUOT, ...) or number")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = Options {
        duration: a.duration.limit(),
        errnos,
    };
    let json = env.json;
    // Each failing call is shown on stderr as it comes; the report follows at the end.
    let mut live = |g: &Group| {
        if !json {
            eprintln!(
                "{} {} ({}) {} -> errno {}",
                g.first,
                crate::term::escape(&g.comm),
                g.pid.unwrap_or(g.tid),
                g.syscall,
                g.errno
            );
        }
    };
    let t = std::time::Instant::now();
    let output = run(env.host, env.owners, &opts, &mut live)?;
    let mut report = crate::finding::Report::new(INVESTIGATION.name, env.host.root());
    report.add(INVESTIGATION.name, output, t.elapsed());
    report.narrow(&env.scope);
    env.emit(&report, crate::render::table)?;
    Ok(report.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines() {
        let h = parse_line(
            "         php-fpm-2916472   [001] .....  3516.159767: sys_openat -> 0xffffffffffffffe4",
        )
        .unwrap();
        assert_eq!(
            h,
            Hit {
                comm: "php-fpm".into(),
                tid: 2916472,
                ts: 3516.159767,
                syscall: "openat".into(),
                errno: 28
            }
        );
        let h =
            parse_line("  a b-c-42 [000] d..1. 1.000001: sys_mkdir -> 0xffffffffffffff86").unwrap();
        assert_eq!((h.comm.as_str(), h.tid, h.errno), ("a b-c", 42, 122));
        // A comm shaped like the fields after it does not move them.
        let h = parse_line(
            "          k-1 [0-4242    [003] ..... 12.500000: sys_openat -> 0xffffffffffffffe4",
        )
        .unwrap();
        assert_eq!((h.comm.as_str(), h.tid, h.errno), ("k-1 [0", 4242, 28));
        let h = parse_line(
            " a: sys_x -> 0x1-77      [000] d..1. 9.000001: sys_mkdir -> 0xffffffffffffffe4",
        )
        .unwrap();
        assert_eq!(
            (h.comm.as_str(), h.tid, h.syscall.as_str()),
            ("a: sys_x -> 0x1", 77, "mkdir")
        );
        let h = parse_line("  x [7]-9 [001] 2.0: sys_open -> 0xffffffffffffffe4").unwrap();
        assert_eq!((h.comm.as_str(), h.tid), ("x [7]", 9));
        assert!(parse_line("# tracer: nop").is_none());
        assert!(parse_line("x-1 [0] : sys_open -> zz").is_none());
    }

    #[test]
    fn errnos() {
        assert_eq!(parse_errno("ENOSPC"), Some(28));
        assert_eq!(parse_errno("edquot"), Some(122));
        assert_eq!(parse_errno("28"), Some(28));
        assert_eq!(parse_errno("0"), None);
        assert_eq!(parse_errno("EWHAT"), None);
    }
}
