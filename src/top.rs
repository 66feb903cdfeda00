//! `wonk top`: which threads are running (R) or stuck in uninterruptible sleep (D), where in the kernel, and
//! in which pod. A sampler of thread states from procfs, grouped like 0xtools' `psn`.
//!
//! Each thread's `stat` file is opened once and re-read with `pread` every sample, because the kernel's
//! formatting of that file dominates the cost; the task list is re-scanned once a second for new threads.
//! `syscall`, `wchan` and `stack` are read only for threads in the selected states, and only when a group
//! column needs them. Owners are cached per pid.

use crate::args::Seconds;
use crate::host::tasks::{Sampler, Source, Unreadable, Want};
use crate::host::Host;
use crate::investigation::Investigation;
use crate::owner::{Attributor, ThreadOwners};
use crate::term::{escape, wrap, Style, WIDTH};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, Write};
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
    pub source: Source,
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
    /// The sampler that ran: `bpf` (the task iterator) or `proc`.
    pub source: &'static str,
    /// Why `--source auto` ran procfs rather than the task iterator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
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

/// Samples until the duration ends or Ctrl-C.
pub fn run(host: &Host, owners: &Attributor, opts: &Options) -> std::io::Result<Top> {
    crate::stop::install();
    let want = Want {
        syscall: opts.group_by.contains(&Column::Syscall),
        wchan: opts.group_by.contains(&Column::Wchan),
        kstack: opts.group_by.contains(&Column::Kstack),
    };
    let mut sampler = Sampler::open(host, opts.source, &opts.states, want)?;
    let period = Duration::from_secs_f64(1.0 / opts.hz.max(0.01));
    let start = Instant::now();
    let mut groups: HashMap<Vec<String>, u64> = HashMap::new();
    let mut owner_cache = ThreadOwners::default();
    let mut rounds = 0u64;
    let mut threads = Vec::new();
    loop {
        let round_start = Instant::now();
        sampler.round(host, &mut threads)?;
        for t in &threads {
            let mut key = Vec::with_capacity(opts.group_by.len());
            for &c in &opts.group_by {
                key.push(match c {
                    Column::Comm => t.comm.clone(),
                    Column::State => state_name(t.state).to_string(),
                    Column::Syscall => t.syscall.as_deref().map_or("-".into(), syscall_of),
                    Column::Wchan => t.wchan.clone().unwrap_or_else(|| "-".into()),
                    Column::Kstack => t.kstack.as_deref().map_or("-".into(), kstack),
                    Column::Pod | Column::Namespace | Column::Container => {
                        let o = owner_cache.of(owners, &mut sampler, t);
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
    Ok(Top {
        source: sampler.source,
        fallback: sampler.fallback.clone(),
        hz: opts.hz,
        rounds,
        elapsed_seconds: start.elapsed().as_secs_f64(),
        threads_seen: sampler.threads_seen(),
        group_by: opts.group_by.iter().map(|c| c.name()).collect(),
        states: opts.states.iter().collect(),
        rows,
        unreadable: sampler.unreadable(),
    })
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

/// A kernel stack (innermost frame first, as samplers give it) root first, joined with `->`.
pub fn kstack(frames: &[String]) -> String {
    if frames.is_empty() {
        return "-".into();
    }
    frames
        .iter()
        .rev()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("->")
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
            source: a.source,
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
    /// Where thread states come from: a BPF task iterator (bpf), every thread's /proc stat file (proc), or the
    /// iterator when this wonk has it and the kernel runs it, else /proc (auto).
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    source: Source,
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
        // wrap() escapes what threads named themselves, once.
        for (i, l) in wrap(&line, WIDTH).iter().enumerate() {
            writeln!(w, "{}{l}", if i == 0 { "" } else { "      " })?;
        }
    }
    writeln!(
        w,
        "{}",
        style.dim(&format!(
            "{} rounds at {} Hz over {:.1} s, {} threads seen, states {}, source {}",
            top.rounds, top.hz, top.elapsed_seconds, top.threads_seen, top.states, top.source
        ))
    )?;
    if let Some(why) = &top.fallback {
        writeln!(w, "source proc, not bpf: {}", escape(why))?;
    }
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
    fn stacks_are_root_first() {
        let s = "[<0>] wait_for_vfork_done+0x2c/0x40\n[<0>] kernel_clone+0x1b1/0x3f0\n[<0>] __do_sys_vfork+0x5b/0x80\n[<0>] do_syscall_64+0x5c/0xf0\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";
        assert_eq!(
            kstack(&crate::host::tasks::stack_frames(s)),
            "entry_SYSCALL_64_after_hwframe->do_syscall_64->__do_sys_vfork->kernel_clone->wait_for_vfork_done"
        );
        assert_eq!(kstack(&[]), "-");
    }

    /// A comm is the thread's to choose: its control characters are shown, not sent to the terminal.
    #[test]
    fn table_escapes_what_threads_name_themselves() {
        let top = Top {
            source: "bpf",
            fallback: None,
            hz: 20.0,
            rounds: 1,
            elapsed_seconds: 0.05,
            threads_seen: 2,
            group_by: vec!["comm"],
            states: "RD".into(),
            rows: vec![Row {
                samples: 1,
                avg_threads: 1.0,
                values: vec!["x\x1b[2J\nforged".into()],
            }],
            unreadable: Vec::new(),
        };
        let mut out = Vec::new();
        table(&mut out, &top, Style::default()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("x\\e[2J\\nforged"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn comm_and_state() {
        use crate::host::procfs;
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
