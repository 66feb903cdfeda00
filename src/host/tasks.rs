//! Thread states sampled over time, from one of two sources: procfs (each thread's `stat`, kept open and re-read
//! with `pread` every round) or, with the `bpf` feature, a BPF task iterator (`tasks/bpf.rs`) that walks every
//! task in the kernel and hands over only the threads in the states asked for. `wonk top` and the `dstate` check
//! sample through [`Sampler`]; `--source auto` takes the iterator when it is built in and the kernel runs it, and
//! says why when it does not.

#[cfg(feature = "bpf")]
mod bpf;

use super::{procfs, read_bounded, vanished, Host};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Which sampler to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Source {
    // The BPF task iterator when wonk is built with it and the kernel runs it, else procfs.
    #[default]
    Auto,
    // The BPF task iterator, or an error saying why not.
    Bpf,
    // Every thread's /proc/PID/task/TID/stat.
    Proc,
}

/// What to collect beyond pid, tid, comm and state, for the threads in the states asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub syscall: bool,
    pub wchan: bool,
    pub kstack: bool,
}

/// One thread in one of the states asked for, in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// The thread group (process) id.
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The state as /proc's letter (`R`, `D`, ...).
    pub state: char,
    /// The first word of /proc/TID/syscall: `running`, a syscall number, or `-1` for none.
    pub syscall: Option<String>,
    /// The function the thread waits in.
    pub wchan: Option<String>,
    /// The kernel stack, innermost frame first, function names without offsets.
    pub kstack: Option<Vec<String>>,
    /// The thread's cgroup id on the v2 hierarchy (the BPF sampler's; procfs does not give it).
    pub cgroup_id: Option<u64>,
}

/// A file that could not be read for a reason other than the thread exiting, counted once per kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    pub file: &'static str,
    pub count: u64,
    pub example: String,
    pub error: String,
}

/// A sampler, opened once and asked for a round at a time.
pub struct Sampler {
    inner: Inner,
    /// `bpf` or `proc`: the sampler that runs.
    pub source: &'static str,
    /// Why `--source auto` runs procfs, when it does.
    pub fallback: Option<String>,
}

enum Inner {
    Proc(ProcSampler),
    #[cfg(feature = "bpf")]
    Bpf(Box<bpf::BpfSampler>),
}

impl Sampler {
    /// Opens the sampler `source` asks for, counting the threads in `states` (/proc letters). `--source bpf`
    /// fails with the reason when the iterator cannot run; `auto` falls back to procfs and keeps the reason.
    pub fn open(host: &Host, source: Source, states: &[char], want: Want) -> io::Result<Sampler> {
        let proc = |fallback| Sampler {
            inner: Inner::Proc(ProcSampler::new(states, want)),
            source: "proc",
            fallback,
        };
        if source == Source::Proc {
            return Ok(proc(None));
        }
        match Self::open_bpf(host, states, want) {
            Ok(s) => Ok(s),
            Err(why) if source == Source::Auto => Ok(proc(Some(why))),
            Err(why) => Err(io::Error::other(format!("--source bpf: {why}"))),
        }
    }

    #[cfg(feature = "bpf")]
    fn open_bpf(host: &Host, states: &[char], want: Want) -> Result<Sampler, String> {
        Ok(Sampler {
            inner: Inner::Bpf(Box::new(bpf::BpfSampler::open(host, states, want)?)),
            source: "bpf",
            fallback: None,
        })
    }

    #[cfg(not(feature = "bpf"))]
    fn open_bpf(_: &Host, _: &[char], _: Want) -> Result<Sampler, String> {
        Err("this wonk is built without the BPF sampler (cargo feature `bpf`)".into())
    }

    /// One round: the threads in the states asked for, wonk's own excepted, replacing `out`'s contents.
    pub fn round(&mut self, host: &Host, out: &mut Vec<Thread>) -> io::Result<()> {
        out.clear();
        match &mut self.inner {
            Inner::Proc(p) => p.round(host, out),
            #[cfg(feature = "bpf")]
            Inner::Bpf(b) => b.round(out),
        }
    }

    /// The threads seen: by procfs, every thread found over the run; by the iterator, the most tasks one
    /// walk visited.
    pub fn threads_seen(&self) -> u64 {
        match &self.inner {
            Inner::Proc(p) => p.seen,
            #[cfg(feature = "bpf")]
            Inner::Bpf(b) => b.seen,
        }
    }

    /// The cgroup v2 path of a cgroup id a round reported (cached).
    pub fn cgroup_path(&mut self, id: u64) -> Option<String> {
        match &mut self.inner {
            Inner::Proc(_) => {
                let _ = id;
                None
            }
            #[cfg(feature = "bpf")]
            Inner::Bpf(b) => b.cgroup_path(id),
        }
    }

    /// Files that could not be read, once per kind.
    pub fn unreadable(&self) -> Vec<Unreadable> {
        let mut u: Vec<Unreadable> = match &self.inner {
            Inner::Proc(p) => p.unreadable.values().cloned().collect(),
            #[cfg(feature = "bpf")]
            Inner::Bpf(_) => Vec::new(),
        };
        u.sort_by_key(|u| u.file);
        u
    }
}

/// The states a set of /proc letters names, as bits of their index in "RSDTtXZPI" (the kernel's
/// `task_state_array`).
pub fn state_mask(states: &[char]) -> u32 {
    states
        .iter()
        .filter_map(|&c| STATE_LETTERS.iter().position(|&l| l == c))
        .fold(0, |m, i| m | 1 << i)
}

/// /proc's state letters by the kernel's state index.
pub const STATE_LETTERS: [char; 9] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];

struct Task {
    pid: u32,
    tid: u32,
    stat: Option<File>,
}

struct ProcSampler {
    /// How many `stat` files may stay open: the descriptor limit less a reserve for everything else (listing
    /// /proc, the other files read); threads beyond it are read by path each round.
    keep_open: u64,
    kept: u64,
    states: Vec<char>,
    want: Want,
    tasks: HashMap<u32, Task>,
    last_scan: Option<Instant>,
    buf: Vec<u8>,
    seen: u64,
    unreadable: HashMap<&'static str, Unreadable>,
}

impl ProcSampler {
    fn new(states: &[char], want: Want) -> ProcSampler {
        let limit = raise_fd_limit();
        ProcSampler {
            keep_open: limit.saturating_sub(FD_RESERVE),
            kept: 0,
            states: states.to_vec(),
            want,
            tasks: HashMap::new(),
            last_scan: None,
            buf: vec![0u8; 4096],
            seen: 0,
            unreadable: HashMap::new(),
        }
    }

    fn round(&mut self, host: &Host, out: &mut Vec<Thread>) -> io::Result<()> {
        if self
            .last_scan
            .map_or(true, |t| t.elapsed() >= Duration::from_secs(1))
        {
            self.seen += rescan(host, &mut self.tasks)?;
            self.last_scan = Some(Instant::now());
        }
        let mut gone = Vec::new();
        for (tid, t) in self.tasks.iter_mut() {
            let keep = self.kept < self.keep_open;
            let opened = t.stat.is_none();
            let read = read_stat(host, t, &mut self.buf, keep);
            if opened && t.stat.is_some() {
                self.kept += 1;
            }
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    if !vanished(&e) {
                        note(&mut self.unreadable, "stat", t, &e);
                    }
                    gone.push(*tid);
                    continue;
                }
            };
            let Some((comm, state)) = procfs::comm_state(&self.buf[..n]) else {
                continue;
            };
            if !self.states.contains(&state) {
                continue;
            }
            let mut file = |name| task_file(host, t, name, &mut self.unreadable);
            let syscall = self.want.syscall.then(|| file("syscall")).flatten();
            let wchan = self.want.wchan.then(|| file("wchan")).flatten();
            let kstack = self
                .want
                .kstack
                .then(|| file("stack"))
                .flatten()
                .map(|s| stack_frames(&s));
            out.push(Thread {
                pid: t.pid,
                tid: t.tid,
                comm: comm.to_string(),
                state,
                syscall: syscall.map(|s| s.split_whitespace().next().unwrap_or("").to_string()),
                wchan: wchan.filter(|w| !w.is_empty() && w != "0"),
                kstack,
                cgroup_id: None,
            });
        }
        for tid in gone {
            if self.tasks.remove(&tid).is_some_and(|t| t.stat.is_some()) {
                self.kept -= 1;
            }
        }
        Ok(())
    }
}

/// Adds the threads that appeared since the last scan (wonk's own excepted). Returns how many were new.
fn rescan(host: &Host, tasks: &mut HashMap<u32, Task>) -> io::Result<u64> {
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

/// Descriptors a /proc sampler leaves free for everything else.
const FD_RESERVE: u64 = 512;

/// Reads a thread's stat, keeping the file open for the next sample when `keep` (and descriptors last).
fn read_stat(host: &Host, t: &mut Task, buf: &mut [u8], keep: bool) -> io::Result<usize> {
    if t.stat.is_none() {
        let path = host.path(format!("/proc/{}/task/{}/stat", t.pid, t.tid));
        let by_path = |buf: &mut [u8]| {
            read_bounded(&path, buf.len() as u64).map(|d| {
                buf[..d.len()].copy_from_slice(&d);
                d.len()
            })
        };
        if !keep {
            return by_path(buf);
        }
        match File::open(&path) {
            Ok(f) => t.stat = Some(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return by_path(buf),
            Err(e) => return Err(e),
        }
    }
    let f = t.stat.as_ref().expect("opened above");
    f.read_at(buf, 0)
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
    e: &io::Error,
) {
    let u = unreadable.entry(file).or_insert_with(|| Unreadable {
        file,
        count: 0,
        example: format!("/proc/{}/task/{}/{file}", t.pid, t.tid),
        error: e.to_string(),
    });
    u.count += 1;
}

/// The frames of a `/proc/TID/stack`, innermost first, offsets dropped so that identical stacks compare equal:
/// `[<0>] do_syscall_64+0x5c/0xf0` becomes `do_syscall_64`.
pub fn stack_frames(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| {
            let f = l.split_once("] ").map_or(l, |(_, f)| f).trim();
            let f = f.split('+').next().unwrap_or(f).trim();
            (!f.is_empty()).then(|| f.to_string())
        })
        .collect()
}

/// Lets a sampler keep one descriptor per thread: the soft limit goes up to the hard one (this process only).
/// Returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max
            && libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit {
                    rlim_cur: rl.rlim_max,
                    ..rl
                },
            ) == 0
        {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    rl.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_innermost_first_without_offsets() {
        let s = "[<0>] wait_for_vfork_done+0x2c/0x40\n[<0>] kernel_clone+0x1b1/0x3f0\n\n";
        assert_eq!(stack_frames(s), ["wait_for_vfork_done", "kernel_clone"]);
        assert!(stack_frames("").is_empty());
    }

    #[test]
    fn state_letters_to_mask() {
        assert_eq!(state_mask(&['R', 'D']), 0b101);
        assert_eq!(state_mask(&['I', '?']), 1 << 8);
    }
}
