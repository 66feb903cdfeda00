//! Reading processes from procfs.
//!
//! Every function takes a [`Host`] and a pid and returns `io::Result`. A process can exit between any two
//! reads; callers test errors with [`super::vanished`] and skip such processes without a word.

use super::{read_bounded, Host};
use std::io;
use std::path::PathBuf;

/// mountinfo of a process with tens of thousands of mounts fits easily; anything larger is hostile.
const MOUNTINFO_LIMIT: u64 = 64 << 20;
const SMALL_LIMIT: u64 = 1 << 20;

/// The pids of all processes, ascending.
pub fn pids(host: &Host) -> io::Result<Vec<u32>> {
    use rustix::fs::{Mode, OFlags, RawDir};
    let dir = rustix::fs::open(
        host.path("/proc"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // One getdents64 call of 32 KiB lists about a thousand processes (libc's readdir asks for 2 KiB on musl).
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 << 10];
    let mut entries = RawDir::new(&dir, &mut buf);
    let mut pids = Vec::new();
    while let Some(e) = entries.next() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name.first().is_some_and(u8::is_ascii_digit) {
            if let Some(pid) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The fields of `/proc/PID/stat` that wonk uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Clock ticks after boot.
    pub start_time: u64,
    pub num_threads: u64,
    /// The kernel's per-process flags (`PF_*` in include/linux/sched.h).
    pub flags: u64,
}

/// `PF_KTHREAD`: the process is a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses `/proc/PID/stat`. comm may hold spaces and parentheses, so fields are taken after the last `)`.
pub fn parse_stat(data: &[u8]) -> Option<Stat> {
    let open = data.iter().position(|&b| b == b'(')?;
    let close = data.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(&data[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = String::from_utf8_lossy(&data[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(data.get(close + 1..)?).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After comm: state(0) ppid(1) ... flags(6) ... num_threads(17) ... starttime(19).
    Some(Stat {
        pid,
        comm,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
        num_threads: f.get(17)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

pub fn stat(host: &Host, pid: u32) -> io::Result<Stat> {
    let data = read_bounded(&host.proc_pid(pid).join("stat"), SMALL_LIMIT)?;
    parse_stat(&data).ok_or_else(|| bad_data(pid, "stat"))
}

/// The raw bytes of `/proc/PID/cgroup`.
pub fn cgroup(host: &Host, pid: u32) -> io::Result<Vec<u8>> {
    read_bounded(&host.proc_pid(pid).join("cgroup"), SMALL_LIMIT)
}

/// The raw bytes of `/proc/PID/mountinfo`.
pub fn mountinfo(host: &Host, pid: u32) -> io::Result<Vec<u8>> {
    read_bounded(&host.proc_pid(pid).join("mountinfo"), MOUNTINFO_LIMIT)
}

/// The argument vector of a process (empty for kernel threads).
pub fn cmdline(host: &Host, pid: u32) -> io::Result<Vec<Vec<u8>>> {
    let data = read_bounded(&host.proc_pid(pid).join("cmdline"), SMALL_LIMIT)?;
    let mut args: Vec<Vec<u8>> = data.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if args.last().is_some_and(Vec::is_empty) {
        args.pop();
    }
    Ok(args)
}

/// The inode number of a process's mount namespace, its identity.
pub fn mnt_ns(host: &Host, pid: u32) -> io::Result<u64> {
    ns(host, pid, "mnt")
}

/// The inode number of one of a process's namespaces (`mnt`, `pid`, ...), its identity.
pub fn ns(host: &Host, pid: u32, kind: &str) -> io::Result<u64> {
    let file = format!("ns/{kind}");
    let link = std::fs::read_link(host.proc_pid(pid).join(&file))?;
    parse_ns_link(link.as_os_str().as_encoded_bytes()).ok_or_else(|| bad_data(pid, &file))
}

/// The host's namespaces, which a daemon must run in to be trusted: pid 1's. Where pid 1's cannot be read (it may
/// hold capabilities wonk lacks), wonk's own when wonk runs on the node itself (`--host-root /`), as
/// `Attributor::host_mnt_ns` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNs {
    pub pid: Option<u64>,
    pub mnt: Option<u64>,
}

impl HostNs {
    pub fn read(host: &Host) -> HostNs {
        let own = host.root() == std::path::Path::new("/");
        let of = |kind: &str| {
            ns(host, 1, kind).ok().or_else(|| {
                own.then(|| ns(host, std::process::id(), kind).ok())
                    .flatten()
            })
        };
        HostNs {
            pid: of("pid"),
            mnt: of("mnt"),
        }
    }
}

/// Why a process is not trusted as a host daemon, or `None` when it is: its executable (the inode
/// `/proc/PID/exe` leads to, whatever path the process's own mount namespace shows) is a regular file owned by
/// root and writable by no one else, and the process runs in the host's pid namespace and, with `same_mnt`, the
/// host's mount namespace. A process in a container can name itself anything and run any file of its own.
/// `Err` is the error of a process that exited meanwhile.
pub fn why_untrusted(
    host: &Host,
    pid: u32,
    host_ns: &HostNs,
    same_mnt: bool,
) -> io::Result<Option<String>> {
    let exe = host.proc_pid(pid).join("exe");
    let st = match rustix::fs::stat(&exe) {
        Ok(st) => st,
        Err(e) if super::vanished(&e.into()) => return Err(e.into()),
        Err(e) => return Ok(Some(format!("its executable cannot be statted: {e}"))),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(Some(format!(
            "its executable is {}",
            super::file_type_name(st.st_mode)
        )));
    }
    if st.st_uid != 0 {
        return Ok(Some(format!(
            "its executable is owned by uid {}, not root",
            st.st_uid
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Ok(Some(format!(
            "its executable is writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    let mut kinds = vec![("pid", host_ns.pid)];
    if same_mnt {
        kinds.push(("mnt", host_ns.mnt));
    }
    for (kind, want) in kinds {
        let Some(want) = want else {
            return Ok(Some(format!(
                "the host's {kind} namespace (pid 1's) could not be read to compare"
            )));
        };
        match ns(host, pid, kind) {
            Ok(n) if n == want => {}
            Ok(n) => {
                return Ok(Some(format!(
                    "it runs in {kind} namespace {n}, not the host's ({want})"
                )))
            }
            Err(e) if super::vanished(&e) => return Err(e),
            Err(e) => return Ok(Some(format!("its {kind} namespace cannot be read: {e}"))),
        }
    }
    Ok(None)
}

/// `mnt:[4026531841]` -> 4026531841.
pub fn parse_ns_link(b: &[u8]) -> Option<u64> {
    let open = b.iter().position(|&c| c == b'[')?;
    let inner = b.get(open + 1..b.len().checked_sub(1)?)?;
    if b.last() != Some(&b']') {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// `stat` of every process that is still there (processes that exit meanwhile are left out).
pub fn all_stats(host: &Host) -> io::Result<Vec<Stat>> {
    Ok(pids(host)?
        .into_iter()
        .filter_map(|pid| stat(host, pid).ok())
        .collect())
}

/// One field of `/proc/PID/status` (`VmRSS`, `Tgid`, ...), its value trimmed; `None` when absent.
pub fn status_field(host: &Host, pid: u32, key: &str) -> io::Result<Option<String>> {
    let data = read_bounded(&host.proc_pid(pid).join("status"), SMALL_LIMIT)?;
    let text = String::from_utf8_lossy(&data);
    let prefix = format!("{key}:");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_string()))
}

/// Resident set size in KiB, from `/proc/PID/status` (`VmRSS`; 0 for kernel threads).
pub fn rss_kib(host: &Host, pid: u32) -> io::Result<u64> {
    Ok(status_field(host, pid, "VmRSS")?
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

/// Seconds since the epoch at which a process started, from its start time in clock ticks and the boot time.
pub fn start_epoch(host: &Host, st: &Stat) -> Option<i64> {
    let btime = boot_time(host)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + (st.start_time / hz as u64) as i64)
}

/// When the node booted, in seconds since the epoch (`btime` in `/proc/stat`).
pub fn boot_time(host: &Host) -> Option<i64> {
    let data = read_bounded(&host.path("/proc/stat"), SMALL_LIMIT).ok()?;
    String::from_utf8_lossy(&data)
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Processes whose mount namespace could not be read, and why.
pub type Unreadable = Vec<(u32, io::Error)>;

/// A mount namespace and the processes in it, lowest pid first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountNs {
    pub inode: u64,
    pub pids: Vec<u32>,
}

/// Groups all processes by mount namespace, so that each namespace's mount table is read once.
/// Returns the namespaces and the pids whose namespace could not be read for a reason other than exiting.
///
/// Kernel threads other than kthreadd itself are left out: they hold no container's mounts (all but kdevtmpfs
/// live in the initial mount namespace, which kthreadd stands for; kdevtmpfs has one with devtmpfs alone), and on
/// a node they are a third or more of all pids, each a readlink. So are the user-mode helpers kthreadd starts
/// (modprobe, core dump pipes), which run in the initial namespace too.
pub fn mount_namespaces(host: &Host) -> io::Result<(Vec<MountNs>, Unreadable)> {
    let mut by_ns: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    let mut unreadable = Vec::new();
    let pids = pids(host)?;
    let kthreads = kernel_threads(host);
    for pid in pids.into_iter().filter(|p| !kthreads.contains(p)) {
        match mnt_ns(host, pid) {
            Ok(ns) => by_ns.entry(ns).or_default().push(pid),
            Err(e) if super::vanished(&e) => {}
            Err(e) => unreadable.push((pid, e)),
        }
    }
    Ok((
        by_ns
            .into_iter()
            .map(|(inode, pids)| MountNs { inode, pids })
            .collect(),
        unreadable,
    ))
}

/// The pids of the kernel threads that kthreadd (pid 2) started, from its `children` file; empty where that is
/// unknown: pid 2 is not a kernel thread (wonk sees a pid namespace of its own) or the kernel lacks
/// CONFIG_PROC_CHILDREN.
pub fn kernel_threads(host: &Host) -> std::collections::HashSet<u32> {
    let is_kthreadd = stat(host, 2).is_ok_and(|s| s.flags & PF_KTHREAD != 0);
    if !is_kthreadd {
        return Default::default();
    }
    read_bounded(&host.proc_pid(2).join("task/2/children"), SMALL_LIMIT)
        .map(|d| parse_pid_list(&d))
        .unwrap_or_default()
}

/// Space-separated pids (a `children` file); anything else in it ends the list.
fn parse_pid_list(data: &[u8]) -> std::collections::HashSet<u32> {
    data.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map_while(|w| std::str::from_utf8(w).ok()?.parse().ok())
        .collect()
}

/// The process's root directory, as a path wonk can open (a magic link into its mount namespace).
pub fn root_dir(host: &Host, pid: u32) -> PathBuf {
    host.proc_pid(pid).join("root")
}

fn bad_data(pid: u32, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/proc/{pid}/{file}: unexpected format"),
    )
}

/// comm and state from a stat line; comm may contain spaces and parentheses.
pub fn comm_state(stat: &[u8]) -> Option<(&str, char)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = std::str::from_utf8(stat.get(open + 1..close)?).ok()?;
    let state = *stat.get(close + 2)? as char;
    Some((comm, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let s = b"4185645 (a) b (c)) S 1 4185645 4185645 0 -1 4194560 123 0 0 0 1 2 0 0 20 0 3 0 98765 1000 200";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.pid, 4185645);
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.num_threads, 3);
        assert_eq!(st.start_time, 98765);
        assert_eq!(st.flags, 4194560);
        assert!(parse_stat(b"12 (x S 1").is_none());
        assert!(parse_stat(b"").is_none());
    }

    #[test]
    fn pid_lists() {
        assert_eq!(parse_pid_list(b"3 4 10 \n"), [3, 4, 10].into());
        assert_eq!(parse_pid_list(b""), Default::default());
        assert_eq!(parse_pid_list(b"3 x 4"), [3].into());
    }

    #[test]
    fn kernel_threads_are_kernel_threads() {
        let host = Host::open(std::path::Path::new("/")).unwrap();
        if !stat(&host, 2).is_ok_and(|s| s.flags & PF_KTHREAD != 0) {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "pid 2 is not kthreadd, and CI=true"
            );
            eprintln!("skipped: pid 2 is not kthreadd (a pid namespace of our own)");
            return;
        }
        let kthreads = kernel_threads(&host);
        assert!(
            !kthreads.is_empty(),
            "kthreadd's children file lists no kernel threads"
        );
        for &pid in &kthreads {
            match stat(&host, pid) {
                // A user-mode helper (modprobe, say) is kthreadd's child too.
                Ok(s) => assert!(
                    s.flags & PF_KTHREAD != 0 || s.ppid == 2,
                    "{pid} ({}) is neither a kernel thread nor kthreadd's child",
                    s.comm
                ),
                Err(e) => assert!(super::super::vanished(&e), "{pid}: {e}"),
            }
        }
        let (namespaces, _) = mount_namespaces(&host).unwrap();
        assert!(
            namespaces.iter().any(|ns| ns.pids.contains(&2)),
            "kthreadd's namespace is left out"
        );
        assert!(!namespaces
            .iter()
            .any(|ns| ns.pids.iter().any(|p| kthreads.contains(p))));
    }

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link(b"mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse_ns_link(b"mnt:[x]"), None);
        assert_eq!(parse_ns_link(b"mnt:["), None);
        assert_eq!(parse_ns_link(b"]"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let host = Host::open(std::path::Path::new("/")).unwrap();
        let me = std::process::id();
        assert!(pids(&host).unwrap().contains(&me));
        assert_eq!(stat(&host, me).unwrap().pid, me);
        assert!(mnt_ns(&host, me).unwrap() > 0);
        assert!(!cmdline(&host, me).unwrap().is_empty());
    }
}
