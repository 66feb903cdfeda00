//! PID exhaustion per pod: `pids.current` against `pids.max` of each pod's cgroup (cgroup v2, or the v1 `pids`
//! hierarchy), zombie processes and the parent that does not reap them (a container whose PID 1 never calls
//! `wait`: the missing-init problem), and thread counts by process; the node's tasks against `kernel.pid_max`
//! and `kernel.threads-max`. It warns before the limit: once a pod is at `pids.max`, every fork and thread
//! creation in it fails with EAGAIN.

use super::{CgroupRootArgs, Check, Context, Npd, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::procfs;
use crate::metric::{self, Family, Sink};
use crate::owner::cgroupfs::{self, Hierarchies};
use crate::owner::{cgroup, Owner};
use crate::term::{escape, fit, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, Write};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "pids",
    about: "Per pod: pids.current against pids.max, zombie processes and the parent that does not reap them, \
            threads by process; the node's tasks against its limits",
    args: super::args_of::<CgroupRootArgs>,
    from_args: |m, _| {
        let a: CgroupRootArgs = super::parse_args(m)?;
        Ok(Box::new(Pids {
            cgroup_root: a.cgroup_root,
        }))
    },
    scan: || Box::new(Pids::default()),
    agent: |_| Box::new(Pids::default()),
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "pids-interval",
        default_secs: 60,
    },
    settings: &[],
    metrics: &[
        Family::gauge("pids_current", "Tasks in a pod's cgroup (pids.current), for the top-N pods by use"),
        Family::gauge("pids_max", "A pod's pids.max, for the same pods when it is limited"),
        Family::gauge(
            "pids_zombies",
            "Zombie processes whose parent is in the pod (they hold a pid each until reaped)",
        ),
        Family::gauge("pids_node_tasks", "Threads on the node"),
        Family::gauge(
            "pids_node_max",
            "The node's task limit: the lower of kernel.pid_max and kernel.threads-max",
        ),
    ],
    npd: Some(Npd {
        condition: "PodPidsExhausted",
        ok_reason: "PodsHavePids",
        ok_message: "every pod is below its pids.max",
    }),
};

/// The check.
#[derive(Default)]
pub struct Pids {
    pub cgroup_root: Option<String>,
}

/// A process with zombie children it has not reaped.
#[derive(Debug, Clone, Serialize)]
pub struct Reaper {
    pub pid: u32,
    pub comm: String,
    pub zombies: u64,
    /// Whether it is PID 1 of its pid namespace (a container's init), from `NSpid` in /proc/PID/status.
    pub ns_init: bool,
    pub container: Option<String>,
}

/// A process by its thread count.
#[derive(Debug, Clone, Serialize)]
pub struct Threads {
    pub pid: u32,
    pub comm: String,
    pub threads: u64,
}

/// One pod.
#[derive(Debug, Clone, Serialize)]
pub struct PodPids {
    pub owner: Option<Owner>,
    pub cgroup: String,
    pub pids_current: Option<u64>,
    /// `None`: no limit (`max`).
    pub pids_max: Option<u64>,
    pub processes: u64,
    pub threads: u64,
    pub zombies: u64,
    /// Parents of its zombies, the most first.
    pub reapers: Vec<Reaper>,
    /// Its processes with the most threads.
    pub top_threads: Vec<Threads>,
}

impl PodPids {
    fn ratio(&self) -> Option<f64> {
        Some(self.pids_current? as f64 / self.pids_max.filter(|m| *m > 0)? as f64)
    }
}

/// The check's output.
#[derive(Debug, Default, Serialize)]
pub struct PidsOutput {
    /// Where pids.* were read: `cgroup2`, `cgroup1 pids`, or nothing.
    pub source: Option<&'static str>,
    pub tasks: u64,
    pub processes: u64,
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
    pub zombies: u64,
    /// Every pod, the closest to its limit first.
    pub pods: Vec<PodPids>,
}

/// Share of pids.max (or of the node's limit) from which a warning is given.
const WARN_RATIO: f64 = 0.8;
/// Zombies under one parent from which it is reported, and from which that is a warning.
const ZOMBIES_INFO: u64 = 5;
const ZOMBIES_WARN: u64 = 50;
/// Kept per pod.
const TOP: usize = 3;

impl Output for PidsOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        for p in self.pods.iter().take(sink.top) {
            let l = metric::pod_labels(p.owner.as_ref());
            if let Some(c) = p.pids_current {
                sink.put("pids_current", l.clone(), c as f64);
            }
            if let Some(m) = p.pids_max {
                sink.put("pids_max", l.clone(), m as f64);
            }
            sink.put("pids_zombies", l, p.zombies as f64);
        }
        sink.put("pids_node_tasks", Vec::new(), self.tasks as f64);
        if let Some(m) = node_max(self) {
            sink.put("pids_node_max", Vec::new(), m as f64);
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:>7} {:>7} {:>7} {:>7}  {}",
                "PIDS", "MAX", "THREADS", "ZOMBIES", "POD"
            ))
        )?;
        let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        for p in &self.pods {
            writeln!(
                w,
                "{:>7} {:>7} {:>7} {:>7}  {}",
                n(p.pids_current),
                p.pids_max.map_or("max".into(), |m| m.to_string()),
                p.threads,
                p.zombies,
                fit(
                    &p.owner.as_ref().map_or(p.cgroup.clone(), |o| o.pod_label()),
                    WIDTH - 34
                )
            )?;
        }
        writeln!(
            w,
            "{}",
            style.dim(&format!(
                "node: {} tasks in {} processes, {} zombies; limit {} (pid_max {}, threads-max {}); pids.* from {}",
                self.tasks,
                self.processes,
                self.zombies,
                n(node_max(self)),
                n(self.pid_max),
                n(self.threads_max),
                self.source.unwrap_or("nowhere")
            ))
        )?;
        writeln!(w)
    }
}

fn node_max(o: &PidsOutput) -> Option<u64> {
    match (o.pid_max, o.threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn sysctl(ctx: &Context, name: &str) -> Option<u64> {
    cgroupfs::read(&ctx.host.path(format!("/proc/sys/kernel/{name}")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a process is PID 1 of its own pid namespace: the last `NSpid` field is 1 (and there is more than one).
fn ns_init(ctx: &Context, pid: u32) -> bool {
    procfs::status_field(ctx.host, pid, "NSpid")
        .ok()
        .flatten()
        .is_some_and(|v| {
            let f: Vec<&str> = v.split_whitespace().collect();
            f.len() > 1 && f.last() == Some(&"1")
        })
}

impl Check for Pids {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let stats = match procfs::all_stats(ctx.host) {
            Ok(s) => s,
            Err(e) => {
                out.failed = Some(format!("cannot list processes: {e}"));
                return out;
            }
        };
        let root = self.cgroup_root.as_deref().unwrap_or("/");
        let h = ctx
            .owners
            .host_mounts()
            .map(Hierarchies::of)
            .unwrap_or_default();
        // pids.* live where the pids controller is: cgroup v2 when its root lists it, else the v1 hierarchy.
        let v2_pids = h.v2.as_ref().filter(|m| {
            cgroupfs::read(&cgroupfs::file(ctx.host, m, "/", "cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        });
        let (source, mount) = match (v2_pids, h.v1_with("pids")) {
            (Some(m), _) => (Some("cgroup2"), Some(m.clone())),
            (None, Some(m)) => (Some("cgroup1 pids"), Some(m.to_path_buf())),
            (None, None) => (None, None),
        };
        let mut o = PidsOutput {
            source,
            pid_max: sysctl(ctx, "pid_max"),
            threads_max: sysctl(ctx, "threads-max"),
            ..Default::default()
        };
        let mut pods: Vec<PodPids> = Vec::new();
        let mut by_uid: HashMap<String, usize> = HashMap::new();
        match &mount {
            Some(m) => {
                let (found, blind) = cgroupfs::pods(ctx.host, m, root);
                out.blind_spots.extend(blind);
                for pc in found {
                    let num = |name: &str| {
                        cgroupfs::read(&cgroupfs::file(ctx.host, m, &pc.cgroup.path, name))
                            .ok()
                            .map(|t| t.trim().to_string())
                    };
                    let owner = ctx.owners.owner_of_cgroup(&pc.cgroup);
                    if let Some(uid) = &pc.cgroup.pod_uid {
                        by_uid.insert(uid.clone(), pods.len());
                    }
                    pods.push(PodPids {
                        owner: Some(owner),
                        cgroup: pc.cgroup.path.clone(),
                        pids_current: num("pids.current").and_then(|t| t.parse().ok()),
                        pids_max: num("pids.max").and_then(|t| t.parse().ok()),
                        processes: 0,
                        threads: 0,
                        zombies: 0,
                        reapers: Vec::new(),
                        top_threads: Vec::new(),
                    });
                }
            }
            None => out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                "pids controller",
                "neither cgroup v2 nor a v1 hierarchy has the pids controller: no pod's pids.max is known",
            )),
        }
        // Every process once: its pod (by its cgroup path), threads, and zombies by parent.
        let mut pod_of: HashMap<u32, (usize, Option<String>)> = HashMap::new();
        let mut zombies_of: HashMap<u32, u64> = HashMap::new();
        for s in &stats {
            o.processes += 1;
            o.tasks += s.num_threads.max(1);
            if s.state == 'Z' {
                o.zombies += 1;
                *zombies_of.entry(s.ppid).or_default() += 1;
            }
            let Ok(cg) = procfs::cgroup(ctx.host, s.pid) else {
                continue;
            };
            let Some(r) = cgroup::parse_proc_cgroup(&cg) else {
                continue;
            };
            let Some(&i) = r.pod_uid.as_ref().and_then(|u| by_uid.get(u)) else {
                continue;
            };
            pod_of.insert(s.pid, (i, r.container_id.clone()));
            let p = &mut pods[i];
            p.processes += 1;
            p.threads += s.num_threads;
            p.top_threads.push(Threads {
                pid: s.pid,
                comm: s.comm.clone(),
                threads: s.num_threads,
            });
        }
        let comm: HashMap<u32, &str> = stats.iter().map(|s| (s.pid, s.comm.as_str())).collect();
        for (ppid, n) in zombies_of {
            let Some((i, cid)) = pod_of.get(&ppid) else {
                continue;
            };
            let p = &mut pods[*i];
            p.zombies += n;
            p.reapers.push(Reaper {
                pid: ppid,
                comm: comm.get(&ppid).copied().unwrap_or_default().to_string(),
                zombies: n,
                ns_init: ns_init(ctx, ppid),
                container: cid
                    .as_ref()
                    .map(|id| ctx.owners.owner_of_container(id).container_label()),
            });
        }
        for p in &mut pods {
            p.reapers
                .sort_by(|a, b| b.zombies.cmp(&a.zombies).then(a.pid.cmp(&b.pid)));
            p.reapers.truncate(TOP);
            p.top_threads
                .sort_by(|a, b| b.threads.cmp(&a.threads).then(a.pid.cmp(&b.pid)));
            p.top_threads.truncate(TOP);
        }
        pods.sort_by(|a, b| {
            b.ratio()
                .unwrap_or(0.0)
                .total_cmp(&a.ratio().unwrap_or(0.0))
                .then(b.zombies.cmp(&a.zombies))
                .then(b.pids_current.cmp(&a.pids_current))
        });
        o.pods = pods;
        out.findings = findings(&o);
        out.stats = vec![
            ("pods".into(), o.pods.len() as u64),
            ("processes".into(), o.processes),
            ("zombies".into(), o.zombies),
        ];
        out.output = Some(Box::new(o));
        out
    }
}

fn findings(o: &PidsOutput) -> Vec<Finding> {
    let mut v = Vec::new();
    for p in &o.pods {
        let who = p.owner.as_ref().map_or(p.cgroup.clone(), |o| o.pod_label());
        let reaper = p.reapers.first().map(|r| {
            format!(
                "{} zombie(s) of pid {} ({}){}{}",
                r.zombies,
                r.pid,
                escape(&r.comm),
                r.container
                    .as_ref()
                    .map_or(String::new(), |c| format!(" in container {c}")),
                if r.ns_init {
                    ", PID 1 of its pid namespace: it never reaps its children"
                } else {
                    ""
                }
            )
        });
        let base = |kind, severity, summary: String| {
            Finding {
                check: UNIT.name,
                kind,
                severity,
                summary,
                subject: who.clone(),
                owner: p.owner.clone(),
                evidence: Vec::new(),
                advice: Vec::new(),
            }
            .with("cgroup", &p.cgroup)
            .with("pids_current", p.pids_current)
            .with("pids_max", p.pids_max)
            .with("processes", p.processes)
            .with("threads", p.threads)
            .with("zombies", p.zombies)
            .with("reapers", &p.reapers)
            .with("top_threads", &p.top_threads)
        };
        if let (Some(r), Some(cur), Some(max)) = (p.ratio(), p.pids_current, p.pids_max) {
            if r >= WARN_RATIO {
                let mut f = base(
                    "pids-limit",
                    if cur >= max {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "{who}: {cur} of {max} pids used ({:.0}%){}{}",
                        r * 100.0,
                        if cur >= max {
                            "; forks and new threads fail with EAGAIN now"
                        } else {
                            ""
                        },
                        reaper.as_ref().map_or(String::new(), |z| format!("; {z}"))
                    ),
                );
                f.advice.push(
                    "zombies hold pids until their parent reaps them: run the container with an init that reaps \
                     (tini, `shareProcessNamespace`, docker's --init); many threads in one process point at a \
                     leak in it; raise the pod pids limit only for a real need"
                        .into(),
                );
                v.push(f);
                continue;
            }
        }
        if let Some(r) = p.reapers.first().filter(|r| r.zombies >= ZOMBIES_INFO) {
            let mut f = base(
                "zombies",
                if r.zombies >= ZOMBIES_WARN {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                format!("{who}: {}", reaper.unwrap_or_default()),
            );
            f.advice.push(
                "a parent that never calls wait() keeps every exited child as a zombie, each holding a pid: give the \
                 container an init that reaps (tini, docker's --init, `shareProcessNamespace: true`)"
                    .into(),
            );
            v.push(f);
        }
    }
    if let Some(max) = node_max(o) {
        let r = o.tasks as f64 / max.max(1) as f64;
        if r >= WARN_RATIO {
            v.push(
                Finding {
                    check: UNIT.name,
                    kind: "node-tasks",
                    severity: Severity::Warning,
                    summary: format!(
                        "node: {} tasks of a limit of {max} ({:.0}%)",
                        o.tasks,
                        r * 100.0
                    ),
                    subject: "node".into(),
                    owner: None,
                    evidence: Vec::new(),
                    advice: vec![
                        "the pods with the most threads and zombies are listed by `wonk pids`"
                            .into(),
                    ],
                }
                .with("tasks", o.tasks)
                .with("pid_max", o.pid_max)
                .with("threads_max", o.threads_max)
                .with("zombies", o.zombies),
            );
        }
    }
    v
}
