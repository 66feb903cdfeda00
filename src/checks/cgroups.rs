//! Dying cgroups: cgroups removed (`rmdir`) that the kernel cannot free yet because something still refers to
//! them: page cache charged to a memory cgroup, a zombie process, a socket. They are invisible in the tree yet
//! every cgroup walk (memory reclaim, `cat /proc/cgroups`, systemd) still visits them, and each holds kernel
//! memory. cgroup v2 counts them in `cgroup.stat` (`nr_dying_descendants`) of every ancestor, so wonk reports
//! the node and each pod's cgroup; cgroup v1 only counts every cgroup of a hierarchy in /proc/cgroups, so the
//! dying ones are that count less the directories that exist, per hierarchy and about (the tree changes while
//! it is walked).

use super::{CgroupRootArgs, Check, Context, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::{vanished, Host};
use crate::metric::{self, Family, Sink};
use crate::owner::cgroupfs::{self, Hierarchies};
use crate::owner::Owner;
use crate::term::{fit, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "cgroups",
    about: "Count dying cgroups (removed, not yet freed) on the node and per pod",
    args: super::args_of::<CgroupRootArgs>,
    from_args: |m, _| {
        let a: CgroupRootArgs = super::parse_args(m)?;
        Ok(Box::new(Cgroups {
            cgroup_root: a.cgroup_root,
        }))
    },
    scan: || Box::new(Cgroups::default()),
    agent: |_| Box::new(Cgroups::default()),
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "cgroups-interval",
        default_secs: 300,
    },
    settings: &[],
    metrics: &[
        Family::gauge(
            "cgroups_dying",
            "Dying cgroups on the node, by hierarchy (cgroup2, or a v1 hierarchy by its first controller)",
        ),
        Family::gauge(
            "cgroups_pod_dying",
            "Dying cgroups below a pod's cgroup (cgroup v2), for the top-N pods",
        ),
    ],
    npd: None,
};

/// The check.
#[derive(Default)]
pub struct Cgroups {
    pub cgroup_root: Option<String>,
}

/// One hierarchy's count.
#[derive(Debug, Clone, Serialize)]
pub struct Hierarchy {
    /// `cgroup2`, or a v1 hierarchy's controllers joined with commas.
    pub name: String,
    pub mount: String,
    pub dying: u64,
    /// v2: live descendants (`nr_descendants`); v1: the directories counted.
    pub live: u64,
    /// v1 only: /proc/cgroups' count for the hierarchy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_cgroups: Option<u64>,
}

/// One pod's cgroup.
#[derive(Debug, Clone, Serialize)]
pub struct PodDying {
    pub owner: Option<Owner>,
    pub cgroup: String,
    pub dying: u64,
    pub live: u64,
}

/// The check's output.
#[derive(Debug, Default, Serialize)]
pub struct CgroupsOutput {
    pub hierarchies: Vec<Hierarchy>,
    /// Pods with dying cgroups, the most first (cgroup v2 only).
    pub pods: Vec<PodDying>,
}

/// Dying cgroups on the node from which it is a warning; below a pod, from which it is reported, and a warning.
const NODE_WARN: u64 = 1000;
const POD_INFO: u64 = 10;
const POD_WARN: u64 = 1000;
/// Directories counted in one v1 hierarchy at most.
const MAX_DIRS: u64 = 1_000_000;

impl Output for CgroupsOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        for h in &self.hierarchies {
            let first = h.name.split(',').next().unwrap_or_default();
            sink.put(
                "cgroups_dying",
                metric::labels(&[("hierarchy", first)]),
                h.dying as f64,
            );
        }
        for p in self.pods.iter().take(sink.top) {
            let l = metric::pod_labels(p.owner.as_ref());
            sink.put("cgroups_pod_dying", l, p.dying as f64);
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:>8} {:>8}  {}",
                "DYING", "LIVE", "HIERARCHY OR POD"
            ))
        )?;
        for h in &self.hierarchies {
            writeln!(
                w,
                "{:>8} {:>8}  {}",
                h.dying,
                h.live,
                fit(&format!("{} ({})", h.name, h.mount), WIDTH - 19)
            )?;
        }
        for p in &self.pods {
            writeln!(
                w,
                "{:>8} {:>8}  {}",
                p.dying,
                p.live,
                fit(
                    &p.owner.as_ref().map_or(p.cgroup.clone(), |o| o.pod_label()),
                    WIDTH - 19
                )
            )?;
        }
        writeln!(w)
    }
}

/// Counts the cgroup directories of a v1 hierarchy (itself included), without following symlinks.
fn count_dirs(dir: &Path, blind: &mut Vec<BlindSpot>) -> u64 {
    let mut n = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += 1;
        if n >= MAX_DIRS {
            blind.push(BlindSpot::new(
                UNIT.name,
                dir.display().to_string(),
                format!("more than {MAX_DIRS} cgroups: counting stopped"),
            ));
            break;
        }
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if vanished(&e) => {
                n -= 1;
                continue;
            }
            Err(e) => {
                blind.push(BlindSpot::new(
                    UNIT.name,
                    d.display().to_string(),
                    e.to_string(),
                ));
                continue;
            }
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

/// /proc/cgroups: (controller, hierarchy id, num_cgroups) of each enabled controller.
fn proc_cgroups(host: &Host) -> io::Result<Vec<(String, u64, u64)>> {
    Ok(parse_proc_cgroups(&cgroupfs::read(
        &host.path("/proc/cgroups"),
    )?))
}

fn parse_proc_cgroups(t: &str) -> Vec<(String, u64, u64)> {
    t.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [name, hier, num, "1"] => {
                    Some((name.to_string(), hier.parse().ok()?, num.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

impl Check for Cgroups {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let h = match ctx.owners.host_mounts() {
            Ok(m) => Hierarchies::of(m),
            Err(e) => {
                out.failed = Some(format!("cannot read the host's mount table: {e}"));
                return out;
            }
        };
        let mut o = CgroupsOutput::default();
        if let Some(v2) = &h.v2 {
            let stat = |cg: &str| cgroupfs::read(&cgroupfs::file(ctx.host, v2, cg, "cgroup.stat"));
            match stat("/") {
                Ok(t) => o.hierarchies.push(Hierarchy {
                    name: "cgroup2".into(),
                    mount: v2.display().to_string(),
                    dying: cgroupfs::keyed(&t, "nr_dying_descendants").unwrap_or(0),
                    live: cgroupfs::keyed(&t, "nr_descendants").unwrap_or(0),
                    num_cgroups: None,
                }),
                Err(e) => out.blind_spots.push(BlindSpot::new(
                    UNIT.name,
                    cgroupfs::file(ctx.host, v2, "/", "cgroup.stat")
                        .display()
                        .to_string(),
                    e.to_string(),
                )),
            }
            let (pods, blind) =
                cgroupfs::pods(ctx.host, v2, self.cgroup_root.as_deref().unwrap_or("/"));
            out.blind_spots.extend(blind);
            for p in pods {
                let Ok(t) = stat(&p.cgroup.path) else {
                    continue;
                };
                let dying = cgroupfs::keyed(&t, "nr_dying_descendants").unwrap_or(0);
                if dying == 0 {
                    continue;
                }
                let owner = ctx.owners.owner_of_cgroup(&p.cgroup);
                o.pods.push(PodDying {
                    owner: (!owner.is_empty()).then_some(owner),
                    cgroup: p.cgroup.path.clone(),
                    dying,
                    live: cgroupfs::keyed(&t, "nr_descendants").unwrap_or(0),
                });
            }
            o.pods
                .sort_by(|a, b| b.dying.cmp(&a.dying).then(a.cgroup.cmp(&b.cgroup)));
        }
        if !h.v1.is_empty() {
            match proc_cgroups(ctx.host) {
                Ok(counts) => {
                    for (controllers, mount) in &h.v1 {
                        // A named hierarchy (name=systemd) has no controller, and no count in /proc/cgroups.
                        let Some(&(_, _, num)) = counts
                            .iter()
                            .find(|(c, id, _)| *id > 0 && controllers.contains(c))
                        else {
                            continue;
                        };
                        let dirs = count_dirs(&ctx.host.path(mount), &mut out.blind_spots);
                        o.hierarchies.push(Hierarchy {
                            name: controllers.join(","),
                            mount: mount.display().to_string(),
                            dying: num.saturating_sub(dirs),
                            live: dirs,
                            num_cgroups: Some(num),
                        });
                    }
                }
                Err(e) => {
                    out.blind_spots
                        .push(BlindSpot::new(UNIT.name, "/proc/cgroups", e.to_string()))
                }
            }
        }
        if h.v2.is_none() && h.v1.is_empty() {
            out.failed = Some("the host mounts no cgroup hierarchy".into());
            return out;
        }
        out.findings = findings(&o);
        out.stats = vec![
            ("hierarchies".into(), o.hierarchies.len() as u64),
            ("pods_with_dying".into(), o.pods.len() as u64),
        ];
        out.output = Some(Box::new(o));
        out
    }
}

const ADVICE: &str = "dying memory cgroups are held by page cache charged to them: it goes as memory is reclaimed \
                      (`echo 1 > /proc/sys/vm/drop_caches` frees the clean part at once); cgroups held by zombies go \
                      when they are reaped (`wonk pids`); a count that only grows is a kernel leak: note the kernel \
                      version";

fn findings(o: &CgroupsOutput) -> Vec<Finding> {
    let mut v = Vec::new();
    for h in o.hierarchies.iter().filter(|h| h.dying >= NODE_WARN) {
        let mut f = Finding {
            check: UNIT.name,
            kind: "dying-cgroups",
            severity: Severity::Warning,
            summary: format!(
                "node: {}{} dying cgroups in {} ({} live): every cgroup walk visits them and each holds kernel memory",
                if h.num_cgroups.is_some() { "about " } else { "" },
                h.dying,
                h.name,
                h.live
            ),
            subject: h.mount.clone(),
            owner: None,
            evidence: Vec::new(),
            advice: vec![ADVICE.into()],
        }
        .with("hierarchy", &h.name)
        .with("dying", h.dying)
        .with("live", h.live);
        if let Some(n) = h.num_cgroups {
            f = f.with("proc_cgroups_num_cgroups", n);
        }
        v.push(f);
    }
    for p in o.pods.iter().filter(|p| p.dying >= POD_INFO) {
        let who = p.owner.as_ref().map_or(p.cgroup.clone(), |o| o.pod_label());
        v.push(
            Finding {
                check: UNIT.name,
                kind: "pod-dying-cgroups",
                severity: if p.dying >= POD_WARN {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                summary: format!(
                    "{who}: {} dying cgroups below its cgroup ({} live)",
                    p.dying, p.live
                ),
                subject: who,
                owner: p.owner.clone(),
                evidence: Vec::new(),
                advice: vec![ADVICE.into()],
            }
            .with("cgroup", &p.cgroup)
            .with("dying", p.dying)
            .with("live", p.live),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_cgroups_lines() {
        let c = super::parse_proc_cgroups(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t8\t1\nmemory\t4\t43\t1\nnet_cls\t0\t8\t1\nbad\nrdma\t9\t1\t0\n",
        );
        assert_eq!(
            c,
            vec![
                ("cpuset".into(), 3, 8),
                ("memory".into(), 4, 43),
                ("net_cls".into(), 0, 8)
            ]
        );
    }
}
