//! `wonk top`: which threads are running (R) or stuck in uninterruptible sleep (D), where in the kernel, and
//! in which pod. A sampler of thread states from procfs, grouped like 0xtools' `psn`.
//!
//! Each thread's `stat` file is opened once and re-read with `pread` every sample, because the kernel's
//! formatting of that file dominates the cost; the task list is re-scanned once a second for new threads.
//! `syscall`, `wchan` and `stack` are read only for threads in the selected states, and only when a group
//! column needs them. Owners are cached per pid.

use crate::args::Seconds;
use crate::host::{procfs, read_bounded, vanished, Host};
use crate::investigation::Investigation;
use crate::owner::{Attributor, Owner};
use crate::term::{wrap, Style, WIDTH};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// What a sampled thread can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    Pod,
    Namespace,
    Container,
    Comm,
    State,
    Syscall,
    Wchan,
    Kstack,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Pod => "pod",
            Column::Namespace => "namespace",
            Column::Container => "container",
            Column::Comm => "comm",
            Column::State => "state",
            Column::Syscall => "syscall",
            Column::Wchan => "wchan",
            Column::Kstack => "kstack",
        }
    }
}

/// How to sample.
#[derive(Debug, Clone)]
pub struct Options {
    pub hz: f64,
    pub duration: Option<Duration>,
    pub group_by: Vec<Column>,
    /// Thread states to count, as `/proc` letters (`R`, `D`, `S`, ...).
    pub states: Vec<char>,
}

/// One group of samples.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub samples: u64,
    /// Samples divided by sampling rounds: how many threads were in this group on average.
    pub avg_threads: f64,
    /// The group's values, in the order of `group_by`.
    pub values: Vec<String>,
}

/// The result of a sampling run.
#[derive(Debug, Serialize)]
pub struct Top {
    pub hz: f64,
    pub rounds: u64,
    pub elapsed_seconds: f64,
    pub threads_seen: u64,
    pub group_by: Vec<&'static str>,
    pub states: String,
    pub rows: Vec<Row>,
    /// Files that could not be read for a reason other than the thread exiting, counted once per kind.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Serialize)]
pub struct Unreadable {
    pub file: &'static str,
    pub count: u64,
    pub example: String,
    pub error: String,
}

struct Task {
    pid: u32,
    tid: u32,
    stat: Option<File>,
}

/// Samples until the duration ends or Ctrl-C.
pub fn run(host: &Host, owners: &Attributor, opts: &Options) -> std::io::Result<Top> {
    crate::stop::install();
    raise_fd_limit();
    let period = Duration::from_secs_f64(1.0 / opts.hz.max(0.01));
    let start = Instant::now();
    let mut tasks: HashMap<u32, Task> = HashMap::new();
    let mut last_scan: Option<Instant> = None;
    let mut groups: HashMap<Vec<String>, u64> = HashMap::new();
    let mut owners_by_pid: HashMap<u32, Owner> = HashMap::new();
    let mut unreadable: HashMap<&'static str, Unreadable> = HashMap::new();
    let mut rounds = 0u64;
    let mut buf = vec![0u8; 4096];
    let mut seen = 0u64;
    loop {
        if last_scan.map_or(true, |t| t.elapsed() >= Duration::from_secs(1)) {
            seen += rescan(host, &mut tasks)?;
            last_scan = Some(Instant::now());
        }
        let round_start = Instant::now();
        let mut gone = Vec::new();
        for (tid, t) in tasks.iter_mut() {
            let n = match read_stat(host, t, &mut buf) {
                Ok(n) => n,
                Err(e) if vanished(&e) => {
                    gone.push(*tid);
                    continue;
                }
                Err(e) => {
                    note(&mut unreadable, "stat", t, &e);
                    gone.push(*tid);
                    continue;
                }
            };
            let Some((comm, state)) = procfs::comm_state(&buf[..n]) else {
                continue;
            };
            if !opts.states.contains(&state) {
                continue;
            }
            let mut key = Vec::with_capacity(opts.group_by.len());
            for &c in &opts.group_by {
                key.push(match c {
                    Column::Comm => comm.to_string(),
                    Column::State => state_name(state).to_string(),
                    Column::Syscall => task_file(host, t, "syscall", &mut unreadable)
                        .map_or("-".into(), |s| syscall_of(&s)),
                    Column::Wchan => {
                        task_file(host, t, "wchan", &mut unreadable).map_or("-".into(), |s| {
                            if s.is_empty() || s == "0" {
                                "-".into()
                            } else {
                                s
                            }
                        })
                    }
                    Column::Kstack => task_file(host, t, "stack", &mut unreadable)
                        .map_or("-".into(), |s| kstack(&s)),
                    Column::Pod | Column::Namespace | Column::Container => {
                        let o = owners_by_pid
                            .entry(t.pid)
                            .or_insert_with(|| owners.owner_of_pid(t.pid).unwrap_or_default());
                        match c {
                            Column::Pod => o
                                .pod
                                .clone()
                                .or(o.pod_uid.clone())
                                .unwrap_or_else(|| "-".into()),
                            Column::Namespace => o.namespace.clone().unwrap_or_else(|| "-".into()),
                            _ => o.container_label(),
                        }
                    }
                });
            }
            *groups.entry(key).or_default() += 1;
        }
        for tid in gone {
            tasks.remove(&tid);
        }
        rounds += 1;
        let done =
            opts.duration.is_some_and(|d| start.elapsed() + period > d) || crate::stop::requested();
        if done {
            break;
        }
        if let Some(rest) = period.checked_sub(round_start.elapsed()) {
            crate::stop::sleep(rest);
        }
        if crate::stop::requested() {
            break;
        }
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(values, samples)| Row {
            samples,
            avg_threads: samples as f64 / rounds as f64,
            values,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.samples
            .cmp(&a.samples)
            .then_with(|| a.values.cmp(&b.values))
    });
    let mut unreadable: Vec<Unreadable> = unreadable.into_values().collect();
    unreadable.sort_by_key(|u| u.file);
    Ok(Top {
        hz: opts.hz,
        rounds,
        elapsed_seconds: start.elapsed().as_secs_f64(),
        threads_seen: seen,
        group_by: opts.group_by.iter().map(|c| c.name()).collect(),
        states: opts.states.iter().collect(),
        rows,
        unreadable,
    })
}

/// Adds the threads that appeared since the last scan (wonk's own excepted). Returns how many were new.
fn rescan(host: &Host, tasks: &mut HashMap<u32, Task>) -> std::io::Result<u64> {
    let mut new = 0;
    let me = std::process::id();
    for pid in procfs::pids(host)?.into_iter().filter(|&p| p != me) {
        let Ok(dir) = std::fs::read_dir(host.proc_pid(pid).join("task")) else {
            continue;
        };
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            tasks.entry(tid).or_insert_with(|| {
                new += 1;
                Task {
                    pid,
                    tid,
                    stat: None,
                }
            });
        }
    }
    Ok(new)
}

/// Reads a thread's stat, keeping the file open for the next sample while descriptors last.
fn read_stat(host: &Host, t: &mut Task, buf: &mut [u8]) -> std::io::Result<usize> {
    if t.stat.is_none() {
        let path = host.path(format!("/proc/{}/task/{}/stat", t.pid, t.tid));
        match File::open(&path) {
            Ok(f) => t.stat = Some(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                return read_bounded(&path, buf.len() as u64).map(|d| {
                    buf[..d.len()].copy_from_slice(&d);
                    d.len()
                })
            }
            Err(e) => return Err(e),
        }
    }
    let f = t.stat.as_ref().expect("opened above");
    f.read_at(buf, 0)
}

fn state_name(s: char) -> &'static str {
    match s {
        'R' => "Running (ON CPU)",
        'D' => "Disk (Uninterruptible)",
        'S' => "Sleeping",
        'T' | 't' => "Stopped",
        'Z' => "Zombie",
        'I' => "Idle",
        _ => "Other",
    }
}

fn task_file(
    host: &Host,
    t: &Task,
    name: &'static str,
    unreadable: &mut HashMap<&'static str, Unreadable>,
) -> Option<String> {
    let path = host.path(format!("/proc/{}/task/{}/{name}", t.pid, t.tid));
    match read_bounded(&path, 64 << 10) {
        Ok(d) => Some(String::from_utf8_lossy(&d).trim().to_string()),
        Err(e) if vanished(&e) => None,
        Err(e) => {
            note(unreadable, name, t, &e);
            None
        }
    }
}

fn note(
    unreadable: &mut HashMap<&'static str, Unreadable>,
    file: &'static str,
    t: &Task,
    e: &std::io::Error,
) {
    let u = unreadable.entry(file).or_insert_with(|| Unreadable {
        file,
        count: 0,
        example: format!("/proc/{}/task/{}/{file}", t.pid, t.tid),
        error: e.to_string(),
    });
    u.count += 1;
}

/// The syscall a thread is in, by number, from `/proc/TID/syscall` (`running` or `-1 ...` when in none).
pub fn syscall_of(s: &str) -> String {
    match s.split_whitespace().next() {
        Some("running") => "running".into(),
        Some("-1") => "-".into(),
        Some(n) => n.parse::<u32>().map_or_else(
            |_| n.to_string(),
            |nr| syscall_name(nr).map_or(nr.to_string(), str::to_string),
        ),
        None => "-".into(),
    }
}

/// Names of the x86_64 syscalls that threads are most often found blocked in.
fn syscall_name(nr: u32) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(match nr {
            0 => "read",
            1 => "write",
            2 => "open",
            3 => "close",
            4 => "stat",
            7 => "poll",
            17 => "pread64",
            18 => "pwrite64",
            23 => "select",
            35 => "nanosleep",
            57 => "fork",
            58 => "vfork",
            59 => "execve",
            61 => "wait4",
            74 => "fsync",
            75 => "fdatasync",
            82 => "rename",
            83 => "mkdir",
            84 => "rmdir",
            85 => "creat",
            87 => "unlink",
            162 => "sync",
            165 => "mount",
            166 => "umount2",
            202 => "futex",
            217 => "getdents64",
            230 => "clock_nanosleep",
            232 => "epoll_wait",
            257 => "openat",
            263 => "unlinkat",
            270 => "pselect6",
            271 => "ppoll",
            281 => "epoll_pwait",
            306 => "syncfs",
            316 => "renameat2",
            332 => "statx",
            437 => "openat2",
            _ => return None,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = nr;
        None
    }
}

/// A kernel stack from `/proc/TID/stack`, root first, joined with `->`, offsets dropped so that identical
/// stacks group together: `[<0>] do_syscall_64+0x5c/0xf0` becomes `do_syscall_64`.
pub fn kstack(s: &str) -> String {
    let frames: Vec<&str> = s
        .lines()
        .filter_map(|l| {
            let f = l.split_once("] ").map_or(l, |(_, f)| f).trim();
            let f = f.split('+').next().unwrap_or(f).trim();
            (!f.is_empty()).then_some(f)
        })
        .collect();
    if frames.is_empty() {
        return "-".into();
    }
    frames.iter().rev().copied().collect::<Vec<_>>().join("->")
}

/// Lets a sampler keep one descriptor per thread: the soft limit goes up to the hard one (this process only).
fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// `wonk top`'s registration.
pub const INVESTIGATION: Investigation = Investigation {
    name: "top",
    about: "Sample thread states (R and D by default) and group them, like psn: who is on CPU or stuck, and where",
    args: |c| <Args as clap::Args>::augment_args(c),
    run: |m, env| {
        let a: Args = clap::FromArgMatches::from_arg_matches(m)?;
        let opts = Options {
            hz: a.hz,
            duration: a.duration.limit(),
            group_by: a.group_by,
            states: a.states.chars().collect(),
        };
        let top = run(env.host, env.owners, &opts)?;
        env.emit(&top, table)?;
        Ok(crate::finding::exit::OK)
    },
};

/// `wonk top` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Samples per second (at most 1000).
    #[arg(long, default_value = "20", value_parser = crate::args::hz)]
    hz: f64,
    /// Seconds to sample; 0 samples until Ctrl-C.
    #[arg(short, long, default_value = "5", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    duration: Seconds,
    /// Columns to group by, comma-separated.
    #[arg(
        short,
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "comm,state"
    )]
    group_by: Vec<Column>,
    /// Thread states to count, as /proc letters.
    #[arg(long, default_value = "RD")]
    states: String,
}

/// The human rendering of `wonk top`: samples, avg_threads, then the group columns; kstack last and wrapped.
pub fn table(w: &mut dyn Write, top: &Top, style: Style) -> io::Result<()> {
    let mut header = format!("{:>8} | {:>11}", "samples", "avg_threads");
    for c in &top.group_by {
        header.push_str(&format!(" | {c}"));
    }
    writeln!(w, "{}", style.bold(&header))?;
    for r in &top.rows {
        let mut line = format!("{:>8} | {:>11.2}", r.samples, r.avg_threads);
        for v in &r.values {
            line.push_str(" | ");
            line.push_str(v);
        }
        for (i, l) in wrap(&line, WIDTH).iter().enumerate() {
            writeln!(w, "{}{l}", if i == 0 { "" } else { "      " })?;
        }
    }
    writeln!(
        w,
        "{}",
        style.dim(&format!(
            "{} rounds at {} Hz over {:.1} s, {} threads seen, states {}",
            top.rounds, top.hz, top.elapsed_seconds, top.threads_seen, top.states
        ))
    )?;
    for u in &top.unreadable {
        writeln!(
            w,
            "not seen: {} {} file(s), e.g. {}: {}",
            u.count,
            u.file,
            crate::term::escape(&u.example),
            crate::term::escape(&u.error)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_root_first_without_offsets() {
        let s = "[<0>] wait_for_vfork_done+0x2c/0x40\n[<0>] kernel_clone+0x1b1/0x3f0\n[<0>] __do_sys_vfork+0x5b/0x80\n[<0>] do_syscall_64+0x5c/0xf0\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";
        assert_eq!(
            kstack(s),
            "entry_SYSCALL_64_after_hwframe->do_syscall_64->__do_sys_vfork->kernel_clone->wait_for_vfork_done"
        );
        assert_eq!(kstack(""), "-");
    }

    #[test]
    fn comm_and_state() {
        assert_eq!(procfs::comm_state(b"12 (a) b) D 1 2"), Some(("a) b", 'D')));
        assert_eq!(procfs::comm_state(b"12 (x"), None);
        assert_eq!(procfs::comm_state(b"12 (x)"), None);
    }

    #[test]
    fn syscalls() {
        assert_eq!(syscall_of("running"), "running");
        assert_eq!(syscall_of("-1 0x0 0x0"), "-");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_of("166 0x1 0x2"), "umount2");
        assert_eq!(syscall_of("9999 0x1"), "9999");
    }
}
