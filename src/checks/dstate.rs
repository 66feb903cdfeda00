//! Threads in uninterruptible sleep (D) now, by owner: one round of `wonk top`'s sampler (`host::tasks`: the BPF
//! task iterator when built in and the kernel runs it, else every thread's `stat`). The agent samples it on its
//! interval and exports `wonk_dstate_threads`; `wonk dstate` shows one pass. A thread in D state waits
//! for IO or a lock and cannot be killed; many of them in one pod point at its storage (`wonk top -g pod,kstack`
//! shows where in the kernel they wait).

use super::{Check, Context, Unit};
use crate::finding::{CheckOutput, Finding, Output, Severity};
use crate::host::procfs;
use crate::host::tasks::{Sampler, Source, Want};
use crate::metric::{self, Family, Sink};
use crate::owner::{Owner, ThreadOwners};
use crate::term::{fit, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "dstate",
    about: "Count the threads in uninterruptible sleep (D) now, by pod and container",
    args: super::args_of::<Args>,
    from_args: |m, _| {
        let a: Args = super::parse_args(m)?;
        Ok(Box::new(Dstate { source: a.source }))
    },
    scan: || Box::new(Dstate::default()),
    agent: |_| Box::new(Dstate::default()),
    // One pass says little about a node: D state matters when it lasts (`wonk top` samples over time).
    in_scan: false,
    schedule: super::Schedule::Every {
        flag: "dstate-interval",
        default_secs: 60,
    },
    settings: &[],
    metrics: &[Family::gauge(
        "dstate_threads",
        "Threads in uninterruptible sleep (D) at the last sample, by owner",
    )],
    npd: None,
};

/// The check.
#[derive(Default)]
pub struct Dstate {
    source: Source,
}

/// `wonk dstate` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where thread states come from, as for `wonk top --source`.
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    source: Source,
}

/// One pass over the threads of `pids`: how many were read, and the (pid, tid) of each in D state now. Threads
/// that exit meanwhile are left out.
pub fn d_threads(host: &crate::host::Host, pids: Vec<u32>) -> (u64, Vec<(u32, u32)>) {
    let mut read = 0;
    let mut d = Vec::new();
    let mut buf = Vec::with_capacity(512);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(host.proc_pid(pid).join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            buf.clear();
            let got = std::fs::File::open(t.path().join("stat"))
                .and_then(|mut f| f.read_to_end(&mut buf));
            if got.is_err() {
                // Gone (vanished) or unreadable: either way not a thread whose state is known.
                continue;
            }
            read += 1;
            if procfs::comm_state(&buf).map(|(_, s)| s) == Some('D') {
                d.push((pid, tid));
            }
        }
    }
    (read, d)
}

/// The threads of one owner (or of no pod) in D state.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub owner: Option<Owner>,
    pub threads: u64,
    /// The first few of their pids (`tgid`), for `wonk who` and `wonk top`.
    pub pids: Vec<u32>,
}

/// One pass.
#[derive(Debug, Default, Serialize)]
pub struct DstateOutput {
    /// The sampler that ran: `bpf` or `proc`.
    pub source: &'static str,
    /// Why the task iterator did not run, when `auto` fell back to procfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Threads whose state was read.
    pub threads: u64,
    pub groups: Vec<Group>,
}

/// How many pids a group keeps as examples.
const EXAMPLE_PIDS: usize = 8;

impl Output for DstateOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        for g in &self.groups {
            sink.put(
                "dstate_threads",
                metric::owner_labels(g.owner.as_ref()),
                g.threads as f64,
            );
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            w,
            "{}",
            style.bold(&format!("{:>7}  {:<40}  {}", "THREADS", "POD", "CONTAINER"))
        )?;
        for g in &self.groups {
            let (pod, ctr) = g.owner.as_ref().map_or(("-".into(), "-".into()), |o| {
                (o.pod_label(), o.container_label())
            });
            writeln!(
                w,
                "{:>7}  {:<40}  {}",
                g.threads,
                fit(&pod, 40),
                fit(&ctr, WIDTH - 51)
            )?;
        }
        writeln!(
            w,
            "{}",
            style.dim(&format!(
                "{} threads read, source {}",
                self.threads, self.source
            ))
        )?;
        if let Some(why) = &self.fallback {
            writeln!(w, "source proc, not bpf: {}", crate::term::escape(why))?;
        }
        writeln!(w)
    }
}

impl Check for Dstate {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut sampler = match Sampler::open(ctx.host, self.source, &['D'], Want::default()) {
            Ok(s) => s,
            Err(e) => {
                out.failed = Some(e.to_string());
                return out;
            }
        };
        let mut threads = Vec::new();
        if let Err(e) = sampler.round(ctx.host, &mut threads) {
            out.failed = Some(format!("sampling thread states ({}): {e}", sampler.source));
            return out;
        }
        let mut o = DstateOutput {
            source: sampler.source,
            fallback: sampler.fallback.clone(),
            threads: sampler.threads_seen(),
            groups: Vec::new(),
        };
        let mut owners = ThreadOwners::default();
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for t in &threads {
            let owner = Some(owners.of(ctx.owners, &mut sampler, t)).filter(|o| !o.is_empty());
            let key = owner.as_ref().map_or(String::new(), |o| {
                format!("{}/{}", o.pod_label(), o.container_label())
            });
            let g = groups.entry(key).or_insert_with(|| Group {
                owner,
                threads: 0,
                pids: Vec::new(),
            });
            g.threads += 1;
            if g.pids.len() < EXAMPLE_PIDS && !g.pids.contains(&t.pid) {
                g.pids.push(t.pid);
            }
        }
        o.groups = groups.into_values().collect();
        o.groups.sort_by_key(|g| std::cmp::Reverse(g.threads));
        for g in &o.groups {
            let who = g.owner.as_ref().map_or("no pod".into(), |o| o.pod_label());
            out.findings.push(
                Finding {
                    check: UNIT.name,
                    kind: "d-state",
                    severity: Severity::Info,
                    summary: format!(
                        "{} thread(s) of {who} in uninterruptible sleep (D) now",
                        g.threads
                    ),
                    subject: who,
                    owner: g.owner.clone(),
                    evidence: Vec::new(),
                    advice: vec![
                        "`wonk top -g pod,kstack` samples over time and shows where in the kernel they wait".into(),
                    ],
                }
                .with("threads", g.threads)
                .with("pids", &g.pids),
            );
        }
        out.stats.push(("threads".into(), o.threads));
        out.output = Some(Box::new(o));
        out
    }
}
