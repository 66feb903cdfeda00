//! Who suffers: pressure stall information (PSI) per pod and container, ranked. From cgroup v2's `io.pressure`,
//! `memory.pressure` and `cpu.pressure` of each pod's cgroup (both kubelet cgroup drivers), read twice a short
//! window apart so that the share of time stalled is now, not only the kernel's averages; the node's
//! `/proc/pressure/*` is the baseline. Where no pod has a PSI file (cgroup v1, `psi=0`), the share of D-state
//! samples per pod stands in for `some`, and the output says so.
//!
//! A node-wide IO stall is related to what wonk can see of its cause: threads in D state waiting in a
//! filesystem-wide sync (`ovl_sync_fs`, `sync_filesystem`, `__writeback_inodes_sb_nr`: a container's writable
//! layer being synced or removed), and the heaviest writers by `/proc/PID/io` over the window.

use super::{Check, Context, Invocation, Npd, Setting, Settings, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::{procfs, read_bounded, vanished, Host};
use crate::metric::{self, Family, Sink};
use crate::owner::cgroupfs::{self, Hierarchies, PodCgroup, Psi, PsiLine};
use crate::owner::Owner;
use crate::term::{fit, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "pressure",
    about: "Rank pods by pressure stall (PSI: io, memory, cpu) and relate a node-wide IO stall to its likely cause",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(Pressure::default()),
    agent,
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "pressure-interval",
        default_secs: 60,
    },
    settings: &[Setting {
        flag: "pressure-window",
        help: "Seconds between the two reads of each pressure file (the stall share is measured over it)",
        unit: super::SettingUnit::Seconds,
        default: 2.0,
    }],
    metrics: &[
        Family::gauge(
            "pressure_stall_ratio",
            "Share of the last window a pod had at least one task (some) or all its tasks (full) stalled on a \
             resource, for the top-N pods; source psi, or d-state samples where cgroups have no PSI",
        ),
        Family::gauge(
            "pressure_node_stall_ratio",
            "Share of the last window the node had tasks stalled on a resource (/proc/pressure)",
        ),
        Family::gauge(
            "pressure_sync_waiters",
            "Threads in D state waiting in a filesystem-wide sync or writeback, by kernel function",
        ),
    ],
    npd: Some(Npd {
        condition: "PodsStalled",
        ok_reason: "PodsNotStalled",
        ok_message: "no pod is stalled on io or memory",
    }),
};

/// `wonk pressure` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between the two reads of each pressure file (at most 60).
    #[arg(long, default_value = "1", value_name = "SECONDS", value_parser = crate::args::Seconds::positive)]
    window: crate::args::Seconds,
    /// kubelet's --cgroup-root: the pods' cgroups are under CGROUP/kubepods or CGROUP/kubepods.slice.
    #[arg(long, default_value = "/", value_name = "CGROUP")]
    cgroup_root: String,
    /// Where the stall comes from: psi (cgroup v2) when pods have it, else D-state samples; or d-state always.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    source: SourceChoice,
}

/// `--source`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChoice {
    Auto,
    DState,
}

fn from_args(m: &clap::ArgMatches, _: &Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    if a.window.duration() > Duration::from_secs(60) {
        anyhow::bail!("--window {}: give seconds between 0 and 60", a.window);
    }
    Ok(Box::new(Pressure {
        window: a.window.duration(),
        cgroup_root: a.cgroup_root,
        source: a.source,
    }))
}

fn agent(s: &Settings) -> Box<dyn Check> {
    Box::new(Pressure {
        window: s.seconds("pressure-window").min(Duration::from_secs(60)),
        ..Pressure::default()
    })
}

/// The check.
pub struct Pressure {
    pub window: Duration,
    pub cgroup_root: String,
    pub source: SourceChoice,
}

impl Default for Pressure {
    fn default() -> Pressure {
        Pressure {
            window: Duration::from_secs(1),
            cgroup_root: "/".into(),
            source: SourceChoice::Auto,
        }
    }
}

/// Where a stall figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// cgroup v2 pressure files.
    Psi,
    /// The share of samples in which the pod had a thread in D state: `some` for IO and locks, nothing for
    /// memory or CPU apart.
    DState,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Psi => "psi",
            Source::DState => "d-state",
        }
    }
}

/// What a task stalls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Io,
    Memory,
    Cpu,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Io, Resource::Memory, Resource::Cpu];
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Io => "io",
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
        }
    }
    fn file(self) -> &'static str {
        match self {
            Resource::Io => "io.pressure",
            Resource::Memory => "memory.pressure",
            Resource::Cpu => "cpu.pressure",
        }
    }
}

/// One pressure line over the window: the kernel's averages now and the share of the window stalled.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Line {
    #[serde(flatten)]
    pub now: PsiLine,
    /// (total now - total before) / window: 0 to 1.
    pub share: f64,
}

/// One resource's stall.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stall {
    pub resource: Resource,
    pub some: Line,
    pub full: Option<Line>,
}

fn stall(resource: Resource, before: &Psi, now: &Psi, window: Duration) -> Stall {
    let us = window.as_secs_f64() * 1e6;
    let line = |b: &PsiLine, n: &PsiLine| Line {
        now: *n,
        share: (n.total_us.saturating_sub(b.total_us) as f64 / us).min(1.0),
    };
    Stall {
        resource,
        some: line(&before.some, &now.some),
        full: match (&before.full, &now.full) {
            (Some(b), Some(n)) => Some(line(b, n)),
            _ => None,
        },
    }
}

/// A pod's or container's stall.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub owner: Option<Owner>,
    pub cgroup: String,
    /// PSI by resource (source `psi`); empty with D-state samples.
    pub stalls: Vec<Stall>,
    /// Source `d-state`: samples with a thread of it in D state, of `samples`.
    pub dstate_samples: Option<u64>,
    /// The largest `some` share over its resources (or the D-state share): what pods are ranked by.
    pub stall: f64,
    /// The resource of `stall` (`None` for D-state samples).
    pub worst: Option<Resource>,
}

impl Subject {
    fn rank(&mut self) {
        if let Some(s) = self
            .stalls
            .iter()
            .max_by(|a, b| a.some.share.total_cmp(&b.some.share))
        {
            self.stall = s.some.share;
            self.worst = Some(s.resource);
        }
    }
}

/// A pod and its containers.
#[derive(Debug, Clone, Serialize)]
pub struct PodStall {
    #[serde(flatten)]
    pub pod: Subject,
    pub containers: Vec<Subject>,
}

/// A process by its writes over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Writer {
    pub pid: u32,
    pub comm: String,
    pub owner: Option<Owner>,
    /// `write_bytes` of /proc/PID/io over the window: bytes this process caused to be sent to storage.
    pub write_bytes: u64,
    pub bytes_per_second: f64,
}

/// A thread in D state in a filesystem-wide sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncWaiter {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The first of [`SYNC_FUNCTIONS`] on its kernel stack.
    pub function: &'static str,
    pub owner: Option<Owner>,
}

/// Kernel functions in which a thread waits for a whole filesystem to be synced or written back: a container's
/// overlay being synced (`ovl_sync_fs`), `syncfs`/unmount (`sync_filesystem`), writeback of a superblock.
pub const SYNC_FUNCTIONS: [&str; 3] =
    ["ovl_sync_fs", "sync_filesystem", "__writeback_inodes_sb_nr"];

/// The check's output.
#[derive(Debug, Serialize)]
pub struct PressureOutput {
    pub source: Source,
    pub window_seconds: f64,
    /// D-state samples taken over the window (source `d-state`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The node's /proc/pressure.
    pub node: Vec<Stall>,
    /// Every pod, the most stalled first.
    pub pods: Vec<PodStall>,
    /// The heaviest writers over the window, the heaviest first.
    pub writers: Vec<Writer>,
    pub sync_waiters: Vec<SyncWaiter>,
}

/// How many writers and sync waiters are kept.
const TOP_WRITERS: usize = 10;
const MAX_WAITERS: usize = 64;
/// Share of the window a pod (or the node) stalled at least one task on io or memory: information from this,
/// a warning from [`WARN_SHARE`].
const INFO_SHARE: f64 = 0.10;
const WARN_SHARE: f64 = 0.40;

impl Output for PressureOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        let src = self.source.as_str();
        for p in self.pods.iter().take(sink.top) {
            let base = metric::pod_labels(p.pod.owner.as_ref());
            let put = |sink: &mut Sink, resource: &str, kind: &str, v: f64| {
                let mut l = base.clone();
                l.extend(metric::labels(&[
                    ("resource", resource),
                    ("kind", kind),
                    ("source", src),
                ]));
                sink.put("pressure_stall_ratio", l, v);
            };
            for s in &p.pod.stalls {
                put(sink, s.resource.as_str(), "some", s.some.share);
                if let Some(f) = s.full {
                    put(sink, s.resource.as_str(), "full", f.share);
                }
            }
            if p.pod.dstate_samples.is_some() {
                put(sink, "io", "some", p.pod.stall);
            }
        }
        for s in &self.node {
            let l = |kind| metric::labels(&[("resource", s.resource.as_str()), ("kind", kind)]);
            sink.put("pressure_node_stall_ratio", l("some"), s.some.share);
            if let Some(f) = s.full {
                sink.put("pressure_node_stall_ratio", l("full"), f.share);
            }
        }
        for f in SYNC_FUNCTIONS {
            let n = self.sync_waiters.iter().filter(|w| w.function == f).count();
            sink.put(
                "pressure_sync_waiters",
                metric::labels(&[("function", f)]),
                n as f64,
            );
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let share = |s: &Subject, r: Resource| {
            s.stalls
                .iter()
                .find(|x| x.resource == r)
                .map_or("-".into(), |x| pct(x.some.share))
        };
        if self.source == Source::Psi {
            writeln!(
                w,
                "{}",
                style.bold(&format!(
                    "{:>7} {:>7} {:>7}  {:<40}  {}",
                    "IO", "MEMORY", "CPU", "POD", "CONTAINER"
                ))
            )?;
        } else {
            writeln!(
                w,
                "{}",
                style.bold(&format!("{:>7}  {:<40}  {}", "D-STATE", "POD", "CONTAINER"))
            )?;
        }
        for p in &self.pods {
            let rows = std::iter::once(&p.pod).chain(p.containers.iter());
            for (i, s) in rows.enumerate() {
                let pod = if i == 0 {
                    s.owner.as_ref().map_or(s.cgroup.clone(), |o| o.pod_label())
                } else {
                    String::new()
                };
                let ctr = if i == 0 {
                    "(pod)".to_string()
                } else {
                    s.owner.as_ref().map_or("-".into(), |o| o.container_label())
                };
                if self.source == Source::Psi {
                    writeln!(
                        w,
                        "{:>7} {:>7} {:>7}  {:<40}  {}",
                        share(s, Resource::Io),
                        share(s, Resource::Memory),
                        share(s, Resource::Cpu),
                        fit(&pod, 40),
                        fit(&ctr, WIDTH - 67)
                    )?;
                } else {
                    writeln!(
                        w,
                        "{:>7}  {:<40}  {}",
                        pct(s.stall),
                        fit(&pod, 40),
                        fit(&ctr, WIDTH - 51)
                    )?;
                }
            }
        }
        let node: Vec<String> = self
            .node
            .iter()
            .map(|s| format!("{} {}", s.resource.as_str(), pct(s.some.share)))
            .collect();
        writeln!(
            w,
            "{}",
            style.dim(&format!(
                "stall share (some) over {:.1} s, from {}; node: {}",
                self.window_seconds,
                self.source.as_str(),
                if node.is_empty() {
                    "no /proc/pressure".into()
                } else {
                    node.join(", ")
                }
            ))
        )?;
        for wr in self.writers.iter().take(3) {
            writeln!(
                w,
                "{}",
                style.dim(&format!(
                    "writer: pid {} ({}) {} wrote {} bytes/s",
                    wr.pid,
                    crate::term::escape(&wr.comm),
                    wr.owner.as_ref().map_or("-".into(), |o| o.pod_label()),
                    wr.bytes_per_second as u64
                ))
            )?;
        }
        writeln!(w)
    }
}

/// Each pod's cgroups and the pressure files to read.
struct Target {
    pod: PodCgroup,
}

fn read_psi(host: &Host, mount: &Path, cgroup: &str, r: Resource) -> io::Result<Option<Psi>> {
    let p = cgroupfs::file(host, mount, cgroup, r.file());
    match cgroupfs::read(&p) {
        Ok(t) => Ok(cgroupfs::parse_psi(&t)),
        Err(e) => Err(e),
    }
}

/// Every pressure file of every pod and container, in one pass.
type PsiPass = HashMap<(String, Resource), Psi>;

fn psi_pass(host: &Host, mount: &Path, targets: &[Target], blind: &mut Vec<BlindSpot>) -> PsiPass {
    let mut out = HashMap::new();
    for t in targets {
        let cgroups = std::iter::once(&t.pod.cgroup).chain(t.pod.containers.iter());
        for c in cgroups {
            for r in Resource::ALL {
                match read_psi(host, mount, &c.path, r) {
                    Ok(Some(p)) => {
                        out.insert((c.path.clone(), r), p);
                    }
                    Ok(None) => blind.push(BlindSpot::new(
                        UNIT.name,
                        cgroupfs::file(host, mount, &c.path, r.file()).display().to_string(),
                        "not a pressure file the kernel writes: no `some` line with avg10, avg60, avg300 and total",
                    )),
                    // A pod or container that went meanwhile, or a resource without PSI here.
                    Err(e) if vanished(&e) => {}
                    Err(e) => blind.push(BlindSpot::new(
                        UNIT.name,
                        cgroupfs::file(host, mount, &c.path, r.file()).display().to_string(),
                        e.to_string(),
                    )),
                }
            }
        }
    }
    out
}

fn node_pass(host: &Host) -> HashMap<Resource, Psi> {
    Resource::ALL
        .into_iter()
        .filter_map(|r| {
            let t = cgroupfs::read(&host.path(format!("/proc/pressure/{}", r.as_str()))).ok()?;
            Some((r, cgroupfs::parse_psi(&t)?))
        })
        .collect()
}

/// `write_bytes` of every process now.
fn write_bytes(host: &Host, pids: &[u32]) -> HashMap<u32, u64> {
    pids.iter()
        .filter_map(|&pid| {
            let b = read_bounded(&host.proc_pid(pid).join("io"), 4096).ok()?;
            let t = String::from_utf8_lossy(&b);
            let v = t
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))?
                .trim()
                .parse()
                .ok()?;
            Some((pid, v))
        })
        .collect()
}

fn owner(ctx: &Context, pid: u32) -> Option<Owner> {
    ctx.owners.owner_of_pid(pid).ok().filter(|o| !o.is_empty())
}

fn comm(host: &Host, pid: u32) -> String {
    procfs::stat(host, pid).map(|s| s.comm).unwrap_or_default()
}

/// The first of [`SYNC_FUNCTIONS`] from the top of a kernel stack (`[<0>] func+0x1/0x2` lines): the one it
/// waits in.
fn sync_function(stack: &str) -> Option<&'static str> {
    stack.lines().find_map(|l| {
        let f = l.split_once("] ").map_or(l, |(_, f)| f);
        let f = f.split('+').next().unwrap_or(f);
        SYNC_FUNCTIONS.into_iter().find(|s| *s == f)
    })
}

/// Threads in D state now whose kernel stack holds one of [`SYNC_FUNCTIONS`].
fn sync_waiters(ctx: &Context, pids: Vec<u32>, blind: &mut Vec<BlindSpot>) -> Vec<SyncWaiter> {
    let (_, d) = super::dstate::d_threads(ctx.host, pids);
    let mut out = Vec::new();
    let mut unreadable = 0;
    for (pid, tid) in d {
        let p = ctx
            .host
            .proc_pid(pid)
            .join("task")
            .join(tid.to_string())
            .join("stack");
        let stack = match read_bounded(&p, 16 << 10) {
            Ok(s) => String::from_utf8_lossy(&s).into_owned(),
            Err(e) if vanished(&e) => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let Some(function) = sync_function(&stack) else {
            continue;
        };
        if out.len() >= MAX_WAITERS {
            break;
        }
        out.push(SyncWaiter {
            pid,
            tid,
            comm: comm(ctx.host, pid),
            function,
            owner: owner(ctx, pid),
        });
    }
    if unreadable > 0 {
        blind.push(BlindSpot::new(
            UNIT.name,
            "/proc/PID/task/TID/stack",
            format!("the kernel stacks of {unreadable} thread(s) in D state could not be read (root and CONFIG_STACKTRACE are needed)"),
        ));
    }
    out
}

impl Pressure {
    /// Pods from the v2 hierarchy when it has them, else from the first v1 hierarchy that does.
    fn pods(
        &self,
        ctx: &Context,
        h: &Hierarchies,
        blind: &mut Vec<BlindSpot>,
    ) -> (Option<PathBuf>, bool, Vec<PodCgroup>) {
        if let Some(v2) = &h.v2 {
            let (pods, b) = cgroupfs::pods(ctx.host, v2, &self.cgroup_root);
            blind.extend(b);
            if !pods.is_empty() {
                return (Some(v2.clone()), true, pods);
            }
        }
        for (_, m) in &h.v1 {
            let (pods, b) = cgroupfs::pods(ctx.host, m, &self.cgroup_root);
            blind.extend(b);
            if !pods.is_empty() {
                return (Some(m.clone()), false, pods);
            }
        }
        (None, false, Vec::new())
    }
}

impl Check for Pressure {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mounts = match ctx.owners.host_mounts() {
            Ok(m) => m,
            Err(e) => {
                out.failed = Some(format!("cannot read the host's mount table: {e}"));
                return out;
            }
        };
        let h = Hierarchies::of(mounts);
        let mut blind = Vec::new();
        let (mount, v2, pods) = self.pods(ctx, &h, &mut blind);
        let targets: Vec<Target> = pods.into_iter().map(|pod| Target { pod }).collect();
        let pids = procfs::pids(ctx.host).unwrap_or_default();

        let node0 = node_pass(ctx.host);
        let writes0 = write_bytes(ctx.host, &pids);
        let use_psi = self.source == SourceChoice::Auto
            && v2
            && mount.as_ref().is_some_and(|m| {
                targets.first().is_some_and(|t| {
                    read_psi(ctx.host, m, &t.pod.cgroup.path, Resource::Io)
                        .is_ok_and(|p| p.is_some())
                })
            });
        let start = Instant::now();
        let mut samples = None;
        let mut dstate: HashMap<String, u64> = HashMap::new();
        let psi0 = match (&mount, use_psi) {
            (Some(m), true) => Some(psi_pass(ctx.host, m, &targets, &mut Vec::new())),
            _ => None,
        };
        if psi0.is_some() {
            std::thread::sleep(self.window);
        } else {
            // D-state samples across the window, attributed by pod uid and container id.
            let mut n = 0u64;
            let step = self.window / 20;
            while n == 0 || start.elapsed() < self.window {
                let t = Instant::now();
                let (_, d) = super::dstate::d_threads(ctx.host, pids.clone());
                let mut seen = std::collections::HashSet::new();
                for (pid, _) in d {
                    if let Some(o) = owner(ctx, pid) {
                        if let Some(uid) = &o.pod_uid {
                            seen.insert(uid.clone());
                        }
                        if let Some(id) = &o.container_id {
                            seen.insert(id.clone());
                        }
                    }
                }
                for k in seen {
                    *dstate.entry(k).or_default() += 1;
                }
                n += 1;
                std::thread::sleep(step.saturating_sub(t.elapsed()));
            }
            samples = Some(n);
        }
        let window = start.elapsed().max(Duration::from_millis(1));
        let psi1 = match (&mount, &psi0) {
            (Some(m), Some(_)) => Some(psi_pass(ctx.host, m, &targets, &mut blind)),
            _ => None,
        };
        let node1 = node_pass(ctx.host);
        let writes1 = write_bytes(ctx.host, &pids);

        let source = if psi0.is_some() {
            Source::Psi
        } else {
            Source::DState
        };
        let subject = |c: &crate::owner::cgroup::CgroupRef, key: Option<&String>| -> Subject {
            let o = ctx.owners.owner_of_cgroup(c);
            let mut s = Subject {
                owner: (!o.is_empty()).then_some(o),
                cgroup: c.path.clone(),
                stalls: Vec::new(),
                dstate_samples: None,
                stall: 0.0,
                worst: None,
            };
            match (&psi0, &psi1) {
                (Some(a), Some(b)) => {
                    for r in Resource::ALL {
                        if let (Some(x), Some(y)) =
                            (a.get(&(c.path.clone(), r)), b.get(&(c.path.clone(), r)))
                        {
                            s.stalls.push(stall(r, x, y, window));
                        }
                    }
                    s.rank();
                }
                _ => {
                    let k = key.and_then(|k| dstate.get(k)).copied().unwrap_or(0);
                    s.dstate_samples = Some(k);
                    s.stall = k as f64 / samples.unwrap_or(1).max(1) as f64;
                }
            }
            s
        };
        let mut pods: Vec<PodStall> = targets
            .iter()
            .map(|t| {
                let mut containers: Vec<Subject> = t
                    .pod
                    .containers
                    .iter()
                    .map(|c| subject(c, c.container_id.as_ref()))
                    .collect();
                containers.sort_by(|a, b| b.stall.total_cmp(&a.stall));
                PodStall {
                    pod: subject(&t.pod.cgroup, t.pod.cgroup.pod_uid.as_ref()),
                    containers,
                }
            })
            .collect();
        pods.sort_by(|a, b| b.pod.stall.total_cmp(&a.pod.stall));

        let node: Vec<Stall> = Resource::ALL
            .into_iter()
            .filter_map(|r| Some(stall(r, node0.get(&r)?, node1.get(&r)?, window)))
            .collect();
        if node.is_empty() {
            blind.push(BlindSpot::new(
                UNIT.name,
                "/proc/pressure",
                "no pressure files: the kernel lacks CONFIG_PSI or was booted with psi=0",
            ));
        }
        let mut writers: Vec<Writer> = writes1
            .iter()
            .filter_map(|(pid, b)| {
                let d = b.checked_sub(*writes0.get(pid)?)?;
                (d > 0).then_some((*pid, d))
            })
            .map(|(pid, d)| Writer {
                pid,
                comm: String::new(),
                owner: None,
                write_bytes: d,
                bytes_per_second: d as f64 / window.as_secs_f64(),
            })
            .collect();
        writers.sort_by(|a, b| b.write_bytes.cmp(&a.write_bytes).then(a.pid.cmp(&b.pid)));
        writers.truncate(TOP_WRITERS);
        for w in &mut writers {
            w.comm = comm(ctx.host, w.pid);
            w.owner = owner(ctx, w.pid);
        }
        let waiters = sync_waiters(ctx, pids, &mut blind);

        if mount.is_none() {
            blind.push(BlindSpot::new(
                UNIT.name,
                format!("{}/kubepods", self.cgroup_root.trim_end_matches('/')),
                "no pod cgroups in any cgroup hierarchy the host mounts",
            ));
        } else if source == Source::DState && self.source == SourceChoice::Auto {
            blind.push(BlindSpot::new(
                UNIT.name,
                "pod cgroups",
                "no per-cgroup pressure files (cgroup v1, or PSI off): the stall is the share of D-state samples, \
                 IO and locks only",
            ));
        }

        let o = PressureOutput {
            source,
            window_seconds: window.as_secs_f64(),
            samples,
            node,
            pods,
            writers,
            sync_waiters: waiters,
        };
        out.findings = findings(&o);
        out.stats = vec![
            ("pods".into(), o.pods.len() as u64),
            ("writers".into(), o.writers.len() as u64),
            ("sync_waiters".into(), o.sync_waiters.len() as u64),
        ];
        out.blind_spots = blind;
        out.output = Some(Box::new(o));
        out
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// A pod stalled on io or memory (CPU contention is the scheduler's ordinary business; it is shown, not judged),
/// and the node's IO stall with what may cause it.
fn findings(o: &PressureOutput) -> Vec<Finding> {
    let mut v = Vec::new();
    let src = o.source.as_str();
    for p in &o.pods {
        let s = &p.pod;
        let (share, what) = match o.source {
            Source::Psi => {
                let Some(w) = s
                    .stalls
                    .iter()
                    .filter(|x| x.resource != Resource::Cpu)
                    .max_by(|a, b| a.some.share.total_cmp(&b.some.share))
                else {
                    continue;
                };
                (
                    w.some.share,
                    format!(
                        "{} stalled {} of the last {:.1} s (some; full {}; avg10 {:.1}%)",
                        w.resource.as_str(),
                        pct(w.some.share),
                        o.window_seconds,
                        w.full.map_or("-".into(), |f| pct(f.share)),
                        w.some.now.avg10
                    ),
                )
            }
            Source::DState => (
                s.stall,
                format!(
                    "a thread in D state in {} of {} samples over {:.1} s",
                    s.dstate_samples.unwrap_or(0),
                    o.samples.unwrap_or(0),
                    o.window_seconds
                ),
            ),
        };
        if share < INFO_SHARE {
            continue;
        }
        let who = s.owner.as_ref().map_or(s.cgroup.clone(), |o| o.pod_label());
        let worst_ctr = p
            .containers
            .first()
            .filter(|c| c.stall > 0.0)
            .and_then(|c| c.owner.as_ref())
            .map(|o| o.container_label());
        let mut f = Finding {
            check: UNIT.name,
            kind: "pod-stalled",
            severity: if share >= WARN_SHARE {
                Severity::Warning
            } else {
                Severity::Info
            },
            summary: format!("{who}: {what}"),
            subject: who,
            owner: s.owner.clone(),
            evidence: Vec::new(),
            advice: vec![
                "`wonk top -g pod,kstack` shows where its threads wait; compare with the node's stall (a pod \
                 stalled while the node is not is limited by its own cgroup: io.max, memory.high)"
                    .into(),
            ],
        }
        .with("source", src)
        .with("cgroup", &s.cgroup)
        .with("share", s.stall);
        if !s.stalls.is_empty() {
            f = f.with("stalls", &s.stalls);
        }
        if let Some(c) = worst_ctr {
            f = f.with("most_stalled_container", c);
        }
        v.push(f);
    }
    if let Some(io) = o.node.iter().find(|s| s.resource == Resource::Io) {
        if io.some.share >= INFO_SHARE {
            let mut cause = Vec::new();
            let mut by_fn: Vec<(&str, usize, Vec<String>)> = Vec::new();
            for f in SYNC_FUNCTIONS {
                let ws: Vec<&SyncWaiter> =
                    o.sync_waiters.iter().filter(|w| w.function == f).collect();
                if ws.is_empty() {
                    continue;
                }
                let mut pods: Vec<String> = ws
                    .iter()
                    .map(|w| w.owner.as_ref().map_or("no pod".into(), |o| o.pod_label()))
                    .collect();
                pods.sort();
                pods.dedup();
                cause.push(format!(
                    "{} thread(s) in D state in {f} ({})",
                    ws.len(),
                    pods.join(", ")
                ));
                by_fn.push((f, ws.len(), pods));
            }
            if let Some(w) = o.writers.first() {
                cause.push(format!(
                    "the heaviest writer is pid {} ({}) of {}: {} bytes/s",
                    w.pid,
                    crate::term::escape(&w.comm),
                    w.owner.as_ref().map_or("no pod".into(), |o| o.pod_label()),
                    w.bytes_per_second as u64
                ));
            }
            let summary = format!(
                "node: io stalled {} of the last {:.1} s (some; full {}; avg10 {:.1}%){}",
                pct(io.some.share),
                o.window_seconds,
                io.full.map_or("-".into(), |f| pct(f.share)),
                io.some.now.avg10,
                if cause.is_empty() {
                    "; no sync waiter or writer seen".to_string()
                } else {
                    format!("; {}", cause.join("; "))
                }
            );
            v.push(
                Finding {
                    check: UNIT.name,
                    kind: "node-io-stalled",
                    severity: if io.some.share >= WARN_SHARE {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    summary,
                    subject: "node".into(),
                    owner: None,
                    evidence: Vec::new(),
                    advice: vec![
                        "a filesystem-wide sync (a container's writable layer being removed or synced) stalls every \
                         writer on that filesystem: `wonk layers` shows the large layers, `wonk who PID` a waiter's \
                         pod"
                            .into(),
                    ],
                }
                .with("io", io)
                .with("sync_waiters", &o.sync_waiters)
                .with("writers", &o.writers),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_function_from_the_top_of_the_stack() {
        let stack =
            "[<0>] wb_wait_for_completion+0x5a/0x90\n[<0>] __writeback_inodes_sb_nr+0x9d/0xc0\n\
                     [<0>] sync_filesystem+0x3c/0xa0\n[<0>] ovl_sync_fs+0x52/0x80 [overlay]\n";
        assert_eq!(sync_function(stack), Some("__writeback_inodes_sb_nr"));
        assert_eq!(
            sync_function("[<0>] ovl_sync_fs+0x1/0x2 [overlay]\n"),
            Some("ovl_sync_fs")
        );
        assert_eq!(
            sync_function("[<0>] io_schedule+0x1/0x2\n[<0>] sync_filesystem_x+0x1/0x2\n"),
            None
        );
        assert_eq!(sync_function(""), None);
    }

    #[test]
    fn share_over_the_window() {
        let l = |t| PsiLine {
            avg10: 1.0,
            avg60: 1.0,
            avg300: 1.0,
            total_us: t,
        };
        let a = Psi {
            some: l(1_000_000),
            full: None,
        };
        let b = Psi {
            some: l(1_500_000),
            full: Some(l(0)),
        };
        let s = stall(Resource::Io, &a, &b, Duration::from_secs(2));
        assert_eq!(s.some.share, 0.25);
        assert!(s.full.is_none(), "full only when both reads have it");
        // A counter that went back (a cgroup made again under the same name) is no stall, never negative.
        assert_eq!(
            stall(Resource::Io, &b, &a, Duration::from_secs(1))
                .some
                .share,
            0.0
        );
    }
}
