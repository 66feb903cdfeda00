//! containerd shims that outlive their containers.
//!
//! Under heavy metadata IO containerd can time out while tearing a task down and forget the shim, which then
//! lives on for ever with nothing to serve (the seed's "growing amount of tasks"). Each shim process, v2
//! (`containerd-shim-runc-v2 -namespace NS -id ID -address SOCK`) and v1 (`containerd-shim -namespace NS -workdir
//! DIR ...`), is related to its containerd (by socket address), its bundle dirs (cwd, `-id`, `-workdir`, the
//! bundles' `io.kubernetes.cri.sandbox-id`), its child processes and its pod, then classified:
//! - `healthy`: it has children and at least one bundle whose `init.pid` is one of them;
//! - `leaked`: no children, and no bundle with a live `init.pid`;
//! - `orphaned-workload`: live children, but their container's snapshot (overlay upperdir) is gone;
//! - `unknown`: anything else, with what is missing.
//!
//! PPID 1 is normal for v2 shims and is never evidence.

use super::{Check, Context};
use crate::finding::{utc, BlindSpot, CheckOutput, Finding, Severity};
use crate::host::procfs::{self, Stat};
use crate::host::{bytes_path, mountinfo, read_bounded, vanished, Host};
use crate::owner::containerd::Bundle;
use crate::owner::Owner;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The check. A shim younger than `min_age_seconds` may still be starting its first container, and is not judged.
pub struct Shims {
    pub min_age_seconds: i64,
}

impl Default for Shims {
    fn default() -> Shims {
        Shims {
            min_age_seconds: 60,
        }
    }
}

/// One shim, with everything it was judged on.
#[derive(Debug, Clone, Serialize)]
pub struct Shim {
    pub pid: u32,
    /// `v1` or `v2`.
    pub version: &'static str,
    pub namespace: Option<String>,
    pub id: Option<String>,
    /// containerd's socket, from `-address`.
    pub address: Option<String>,
    pub containerd_pid: Option<u32>,
    pub cwd: Option<String>,
    pub bundles: Vec<BundleState>,
    pub children: Vec<u32>,
    pub started: Option<String>,
    pub age_seconds: Option<i64>,
    pub rss_kib: u64,
    pub threads: u64,
    /// `healthy`, `leaked`, `orphaned-workload` or `unknown`.
    pub class: &'static str,
    pub why: String,
    pub owner: Option<Owner>,
    #[serde(skip)]
    pub start_time: u64,
}

/// A bundle directory as the shim left it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleState {
    pub id: String,
    pub dir: String,
    pub container_type: Option<String>,
    pub init_pid: Option<u32>,
    /// Whether `init_pid` is alive and a child of this shim (a recycled pid is not).
    pub init_pid_alive: bool,
    /// `true` when the bundle's `rootfs` is empty or missing: the container's root was unmounted. `null` when
    /// the spec's root is elsewhere (not `rootfs` inside the bundle), so the bundle cannot tell.
    pub rootfs_empty: Option<bool>,
}

impl Check for Shims {
    fn name(&self) -> &'static str {
        "shims"
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let shims = match survey(ctx, self.min_age_seconds) {
            Ok(s) => s,
            Err(e) => {
                out.failed = Some(format!("cannot list processes: {e}"));
                return out;
            }
        };
        let count = |c: &str| shims.iter().filter(|s| s.class == c).count() as u64;
        let leaked: Vec<&Shim> = shims.iter().filter(|s| s.class == "leaked").collect();
        out.stats = vec![
            ("shims".into(), shims.len() as u64),
            ("healthy".into(), count("healthy")),
            ("leaked".into(), count("leaked")),
            ("orphaned_workload".into(), count("orphaned-workload")),
            ("unknown".into(), count("unknown")),
            (
                "leaked_rss_kib".into(),
                leaked.iter().map(|s| s.rss_kib).sum(),
            ),
            (
                "leaked_threads".into(),
                leaked.iter().map(|s| s.threads).sum(),
            ),
        ];
        for s in &shims {
            if let Some(f) = finding(s) {
                out.findings.push(f);
            }
        }
        if ctx.owners.instances.iter().all(|i| i.pid.is_none()) && !shims.is_empty() {
            out.blind_spots.push(BlindSpot::new(
                "shims",
                "containerd",
                "no running containerd was found; shims are judged from their bundles and processes only",
            ));
        }
        out.details = serde_json::to_value(&shims).ok();
        out
    }
}

fn finding(s: &Shim) -> Option<Finding> {
    let (severity, advice) = match s.class {
        "leaked" => (
            Severity::Warning,
            vec![
                "a leaked shim serves no container; `wonk shims --reap` kills leaked shims after re-checking each one"
                    .to_string(),
                "containerd times out tearing tasks down under heavy metadata IO (large writable layers); see \
                 what deleting pods costs before rolling out"
                    .to_string(),
            ],
        ),
        "orphaned-workload" => (
            Severity::Warning,
            vec!["processes run with no container record; find their owner with `wonk who PID` and stop them".into()],
        ),
        _ => return None,
    };
    let label = s
        .owner
        .as_ref()
        .map(|o| format!(" of {}", o.pod_label()))
        .unwrap_or_default();
    let subject = format!("pid {}", s.pid);
    let mut f = Finding {
        check: "shims",
        kind: s.class,
        severity,
        summary: format!("containerd-shim {}{label} is {}: {}", s.pid, s.class, s.why),
        subject,
        owner: s.owner.clone(),
        evidence: Vec::new(),
        advice,
    };
    f = f
        .with("pid", s.pid)
        .with("version", s.version)
        .with("namespace", &s.namespace)
        .with("id", &s.id)
        .with("address", &s.address)
        .with("containerd_pid", s.containerd_pid)
        .with("children", &s.children)
        .with("bundles", &s.bundles)
        .with("started", &s.started)
        .with("age_seconds", s.age_seconds)
        .with("rss_kib", s.rss_kib)
        .with("threads", s.threads);
    Some(f)
}

/// What `--reap` did to one leaked shim.
#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    pub action: &'static str,
    pub pid: u32,
    pub id: Option<String>,
    /// `killed`, or `skipped: <reason>`.
    pub result: String,
}

/// Kills the shims classified as leaked, after `confirm` agrees. Each one is re-checked just before the kill
/// through a pidfd, so a pid that was recycled meanwhile, or a shim that gained children, is never hit.
pub fn reap(
    ctx: &Context,
    min_age_seconds: i64,
    confirm: &mut dyn FnMut(&[Shim]) -> bool,
) -> std::io::Result<Vec<Reaped>> {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    let leaked: Vec<Shim> = survey(ctx, min_age_seconds)?
        .into_iter()
        .filter(|s| s.class == "leaked")
        .collect();
    if leaked.is_empty() || !confirm(&leaked) {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for s in &leaked {
        let mut r = Reaped {
            action: "kill leaked shim",
            pid: s.pid,
            id: s.id.clone(),
            result: String::new(),
        };
        let fd = Pid::from_raw(s.pid as i32).map(|p| pidfd_open(p, PidfdFlags::empty()));
        r.result = match fd {
            Some(Ok(fd)) => {
                // With the pidfd held, the pid cannot be reused; check that it is still the same, still leaked.
                let again = survey(ctx, min_age_seconds)?
                    .into_iter()
                    .find(|n| n.pid == s.pid);
                match again {
                    Some(n)
                        if n.start_time == s.start_time
                            && n.class == "leaked"
                            && n.children.is_empty() =>
                    {
                        match pidfd_send_signal(&fd, Signal::KILL) {
                            Ok(()) => "killed".to_string(),
                            Err(e) => format!("skipped: kill failed: {e}"),
                        }
                    }
                    Some(n) if n.start_time == s.start_time => {
                        format!("skipped: now {} ({})", n.class, n.why)
                    }
                    _ => {
                        "skipped: it exited, or its pid now belongs to another process".to_string()
                    }
                }
            }
            _ => "skipped: it exited".to_string(),
        };
        done.push(r);
    }
    Ok(done)
}

/// Finds and classifies every shim on the node.
pub fn survey(ctx: &Context, min_age_seconds: i64) -> std::io::Result<Vec<Shim>> {
    let host = ctx.host;
    let stats = procfs::all_stats(host)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut shims = Vec::new();
    for st in stats
        .iter()
        .filter(|s| s.comm.starts_with("containerd-shim"))
    {
        let Ok(args) = procfs::cmdline(host, st.pid) else {
            continue;
        };
        let Some(mut shim) = parse_shim(st, &args) else {
            continue;
        };
        shim.children = stats
            .iter()
            .filter(|c| c.ppid == st.pid)
            .map(|c| c.pid)
            .collect();
        shim.rss_kib = procfs::rss_kib(host, st.pid).unwrap_or(0);
        let started = procfs::start_epoch(host, st);
        shim.started = started.map(utc);
        shim.age_seconds = started.map(|s| now - s);
        shim.cwd = std::fs::read_link(host.proc_pid(st.pid).join("cwd"))
            .ok()
            .and_then(|p| host.to_node_path(&p))
            .map(|p| p.display().to_string());
        shim.containerd_pid = ctx
            .owners
            .instances
            .iter()
            .find(|i| {
                shim.address
                    .as_deref()
                    .is_some_and(|a| Path::new(a.trim_start_matches("unix://")) == i.address)
            })
            .and_then(|i| i.pid);
        let bundles: Vec<&Bundle> = ctx
            .owners
            .bundles()
            .iter()
            .filter(|b| belongs(&shim, b))
            .collect();
        shim.bundles = bundles
            .iter()
            .map(|b| bundle_state(host, b, st.pid, &stats))
            .collect();
        shim.owner = bundles
            .iter()
            .find(|b| b.annotation("io.kubernetes.cri.container-type") == Some("sandbox"))
            .or(bundles.first())
            .map(|b| {
                let mut o = ctx.owners.owner_of_container(&b.id);
                o.container = None;
                o.container_id = None;
                o.container_type = None;
                o.image = None;
                o
            });
        classify(host, &mut shim, min_age_seconds);
        shims.push(shim);
    }
    Ok(shims)
}

/// Reads the shim's flags: `-namespace`, `-id` (v2), `-workdir` (v1), `-address`.
fn parse_shim(st: &Stat, args: &[Vec<u8>]) -> Option<Shim> {
    let argv0 = bytes_path(args.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let version = match argv0.as_str() {
        "containerd-shim" => "v1",
        a if a.starts_with("containerd-shim-") => "v2",
        _ => return None,
    };
    let flag = |name: &str| -> Option<String> {
        let dash = format!("-{name}");
        let ddash = format!("--{name}");
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.iter().enumerate().find_map(|(i, a)| {
            if *a == dash || *a == ddash {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{dash}="))
                    .or_else(|| a.strip_prefix(&format!("{ddash}=")))
                    .map(str::to_string)
            }
        })
    };
    let id = flag("id").or_else(|| {
        flag("workdir").and_then(|w| {
            Path::new(&w)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
    });
    Some(Shim {
        pid: st.pid,
        version,
        namespace: flag("namespace"),
        id,
        address: flag("address"),
        containerd_pid: None,
        cwd: None,
        bundles: Vec::new(),
        children: Vec::new(),
        started: None,
        age_seconds: None,
        rss_kib: 0,
        threads: st.num_threads,
        class: "unknown",
        why: String::new(),
        owner: None,
        start_time: st.start_time,
    })
}

/// Whether a bundle is served by this shim: the shim's own id, its cwd, or a container of its sandbox.
fn belongs(shim: &Shim, b: &Bundle) -> bool {
    if shim
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != b.namespace)
    {
        return false;
    }
    let version_ok = (shim.version == "v1") == (b.shim == "v1");
    let by_id = shim.id.as_deref() == Some(b.id.as_str());
    let by_cwd = shim.cwd.as_deref().is_some_and(|c| Path::new(c) == b.dir);
    let by_sandbox = shim.version == "v2"
        && shim.id.is_some()
        && b.annotation("io.kubernetes.cri.sandbox-id") == shim.id.as_deref();
    version_ok && (by_id || by_cwd || by_sandbox)
}

fn bundle_state(host: &Host, b: &Bundle, shim_pid: u32, stats: &[Stat]) -> BundleState {
    let dir = host.path(&b.dir);
    let init_pid = read_bounded(&dir.join("init.pid"), 64)
        .ok()
        .and_then(|d| String::from_utf8_lossy(&d).trim().parse::<u32>().ok());
    let init_pid_alive =
        init_pid.is_some_and(|p| stats.iter().any(|s| s.pid == p && s.ppid == shim_pid));
    let in_bundle = b
        .spec
        .root
        .as_ref()
        .is_some_and(|r| r.path == "rootfs" || r.path == "rootfs/");
    let rootfs_empty = in_bundle
        .then(|| std::fs::read_dir(dir.join("rootfs")).map_or(true, |mut d| d.next().is_none()));
    BundleState {
        id: b.id.clone(),
        dir: b.dir.display().to_string(),
        container_type: b
            .annotation("io.kubernetes.cri.container-type")
            .map(str::to_string),
        init_pid,
        init_pid_alive,
        rootfs_empty,
    }
}

fn classify(host: &Host, s: &mut Shim, min_age: i64) {
    let live_inits = s.bundles.iter().filter(|b| b.init_pid_alive).count();
    let young = s.age_seconds.is_some_and(|a| a < min_age);
    if s.children.is_empty() {
        if young {
            s.class = "unknown";
            s.why = format!("no children yet, but it started less than {min_age} s ago");
        } else if s.bundles.is_empty() {
            s.class = "leaked";
            s.why = "no child processes and no bundle dir in containerd's state".into();
        } else if live_inits == 0 && s.bundles.iter().all(|b| b.rootfs_empty == Some(true)) {
            s.class = "leaked";
            let dead: Vec<String> = s
                .bundles
                .iter()
                .filter_map(|b| b.init_pid.map(|p| p.to_string()))
                .collect();
            s.why = format!(
                "no child processes; {} bundle dir(s) remain with their rootfs unmounted, init.pid {}",
                s.bundles.len(),
                if dead.is_empty() { "missing".to_string() } else { format!("{} dead", dead.join(", ")) }
            );
        } else if live_inits == 0 {
            s.class = "unknown";
            s.why = "no child processes, but not every bundle's rootfs is known to be unmounted: possibly a \
                     stopped task that was not deleted yet, which containerd may still list"
                .into();
        } else {
            s.class = "unknown";
            s.why = "no child processes, yet a bundle's init.pid is alive".into();
        }
        return;
    }
    let gone: Vec<String> = s
        .children
        .iter()
        .filter_map(|&c| missing_upperdir(host, c))
        .collect();
    if !gone.is_empty() {
        s.class = "orphaned-workload";
        s.why = format!(
            "live children, but the snapshot behind their root is gone ({})",
            gone.join(", ")
        );
    } else if live_inits > 0 {
        s.class = "healthy";
        s.why = format!("serves {live_inits} live container(s)");
    } else if s.bundles.is_empty() {
        s.class = "orphaned-workload";
        s.why = "live children, but no bundle dir in containerd's state".into();
    } else {
        s.class = "unknown";
        s.why = "live children, but no bundle's init.pid is one of them".into();
    }
}

/// The upperdir of a process's overlay root, if it no longer exists on the host.
fn missing_upperdir(host: &Host, pid: u32) -> Option<String> {
    let data = procfs::mountinfo(host, pid).ok()?;
    let (mounts, _) = mountinfo::parse(&data);
    let root = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == b"/" && m.fs_type == "overlay")?;
    let upper = PathBuf::from(String::from_utf8_lossy(root.super_option("upperdir")?).into_owned());
    match std::fs::symlink_metadata(host.path(&upper)) {
        Err(e) if vanished(&e) => Some(upper.display().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: u32) -> Stat {
        Stat {
            pid,
            comm: "containerd-shim".into(),
            state: 'S',
            ppid: 1,
            start_time: 0,
            num_threads: 13,
        }
    }

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn v2_and_v1_command_lines() {
        let s = parse_shim(&stat(7), &args("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id abc -address /run/containerd/containerd.sock")).unwrap();
        assert_eq!(
            (s.version, s.namespace.as_deref(), s.id.as_deref()),
            ("v2", Some("k8s.io"), Some("abc"))
        );
        assert_eq!(
            s.address.as_deref(),
            Some("/run/containerd/containerd.sock")
        );
        let s = parse_shim(
            &stat(8),
            &args("containerd-shim -namespace k8s.io -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/k8s.io/513f9b55e96a -address /run/containerd/containerd.sock -containerd-binary /usr/bin/containerd -systemd-cgroup"),
        )
        .unwrap();
        assert_eq!((s.version, s.id.as_deref()), ("v1", Some("513f9b55e96a")));
        assert!(parse_shim(&stat(9), &args("containerd --config x")).is_none());
        assert!(parse_shim(&stat(9), &[]).is_none());
    }
}
