//! What pods left behind. Three kinds of leftovers that nobody sees until a disk or a mount table fills:
//!
//! - kubelet pod directories (`<kubelet root>/pods/<uid>/`) whose uid has no sandbox bundle in any containerd's
//!   state and no live process (no process's cgroup names the pod), with the volumes still mounted under them
//!   (kubelet's "Orphaned pod found, but volume paths are still present on disk" loop) and the mount namespaces
//!   that hold copies of those mounts;
//! - containerd task bundles that no live shim serves (a shim is trusted as `shims` trusts it), and overlay
//!   snapshots that no overlay mounts: which of those a container or an image still references is recorded only in
//!   containerd's bolt databases, which wonk does not read, and a blind spot says so;
//! - mount tables grown large, per mount namespace and on the host, with their owners.
//!
//! Sizes come from the same walk as `layers` ([`super::layers::measure`]). Nothing is ever removed: the advice
//! says what is safe to remove and how.

use super::layers::{self, Layers};
use super::{Check, Context, Npd, Setting, Settings, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::mountinfo::{self, Mount};
use crate::host::procfs;
use crate::metric::{self, Family, Sink};
use crate::owner::{bolt, cgroup, kubelet, Owner};
use crate::term::{escape, fit, human_age, human_bytes, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "orphans",
    about: "Find what pods left behind: pod directories and their mounts, bundles no shim serves, large mount tables",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(Orphans::default()),
    agent,
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "orphans-interval",
        default_secs: 300,
    },
    settings: &[
        Setting {
            flag: "orphans-max-mounts",
            help: "orphans: warn when a mount table holds more than this many mounts",
            unit: super::SettingUnit::Count,
        default: DEFAULT_MAX_MOUNTS as f64,
        },
        Setting {
            flag: "orphans-budget",
            help: "Time budget for sizing leftovers in one orphans run",
            unit: super::SettingUnit::Seconds,
        default: 10.0,
        },
    ],
    metrics: &[
        Family::gauge(
            "orphaned_pod_dirs",
            "kubelet pod directories with no sandbox and no live process (mounted: whether volumes are still mounted under them)",
        ),
        Family::gauge(
            "orphaned_bundles",
            "containerd task bundles that no live shim serves",
        ),
        Family::gauge(
            "mount_table_entries",
            "Mounts in a mount namespace's table (scope host, or namespace with its owner; top N)",
        ),
    ],
    npd: Some(Npd {
        condition: "PodLeftovers",
        ok_reason: "NoPodLeftovers",
        ok_message: "no pod volumes left mounted, no mount table over the limit",
    }),
};

const DEFAULT_MAX_MOUNTS: u64 = 10_000;
/// Mount namespaces listed in the output and findings, largest first.
const TOP_TABLES: usize = 10;
/// Mounts and holding namespaces listed per orphaned pod.
const MAX_LISTED: usize = 32;

/// `wonk orphans` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Warn when a mount table (the host's or a namespace's) holds more than this many mounts.
    #[arg(long, default_value_t = DEFAULT_MAX_MOUNTS, value_name = "N")]
    max_mounts: u64,
    /// Seconds to spend sizing leftovers (0: no limit); figures cut short are lower bounds, marked as such.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = crate::args::Seconds::or_zero)]
    budget: crate::args::Seconds,
    /// Judge only pod directories and bundles at least this many seconds old (kubelet makes a pod's directory
    /// before its sandbox, containerd a bundle before its shim).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    min_age: u64,
    /// Read containerd's bolt databases (to judge overlay snapshots) only up to this size each, in MiB.
    #[arg(long, default_value_t = BOLT_LIMIT >> 20, value_name = "MIB")]
    bolt_limit: u64,
}

fn from_args(m: &clap::ArgMatches, _: &super::Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    Ok(Box::new(Orphans {
        max_mounts: a.max_mounts,
        budget: a.budget.limit(),
        min_age: Duration::from_secs(a.min_age),
        bolt_limit: a.bolt_limit.saturating_mul(1 << 20),
    }))
}

fn agent(s: &Settings) -> Box<dyn Check> {
    Box::new(Orphans {
        max_mounts: (s.value("orphans-max-mounts") as u64).max(1),
        budget: Some(s.seconds("orphans-budget")),
        // The agent's memory limit is small: a larger database is a blind spot there.
        bolt_limit: AGENT_BOLT_LIMIT,
        ..Default::default()
    })
}

/// The check.
pub struct Orphans {
    pub max_mounts: u64,
    pub budget: Option<Duration>,
    pub min_age: Duration,
    /// The largest bolt database read whole (bytes), each of containerd's two.
    pub bolt_limit: u64,
}

impl Default for Orphans {
    fn default() -> Orphans {
        Orphans {
            max_mounts: DEFAULT_MAX_MOUNTS,
            budget: Some(Duration::from_secs(10)),
            min_age: Duration::from_secs(60),
            bolt_limit: BOLT_LIMIT,
        }
    }
}

/// A mount under an orphaned pod's directory.
#[derive(Debug, Clone, Serialize)]
pub struct PodMount {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// The path within its filesystem that is mounted (a bind mount's source).
    pub root: String,
    pub device: String,
}

/// A mount namespace other than the host's that holds copies of an orphaned pod's mounts (the same device and
/// root as one of them).
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub mnt_ns: u64,
    pub pid: u32,
    pub owner: Option<Owner>,
    pub mounts: u64,
}

/// Walked size of a leftover directory (its own filesystem only: mounted volumes are not walked).
#[derive(Debug, Clone, Serialize)]
pub struct Size {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub bytes_method: &'static str,
    pub lower_bound: bool,
}

impl From<&layers::Layer> for Size {
    fn from(l: &layers::Layer) -> Size {
        Size {
            files: l.files,
            dirs: l.dirs,
            bytes: l.bytes,
            bytes_method: l.bytes_method,
            lower_bound: l.lower_bound,
        }
    }
}

/// A pod directory with no sandbox and no process.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanPod {
    pub pod_uid: String,
    pub path: String,
    pub age_seconds: Option<u64>,
    /// Every mount at or under the directory in the host's table, the first 32.
    pub mounts: Vec<PodMount>,
    pub mounts_total: u64,
    pub holders: Vec<Holder>,
    pub size: Option<Size>,
}

/// A task bundle that no live shim serves.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanBundle {
    pub namespace: String,
    pub id: String,
    pub dir: String,
    pub container_type: Option<String>,
    pub owner: Option<Owner>,
    pub age_seconds: Option<u64>,
    /// The bundle's `rootfs` is still a mount point in the host's table.
    pub rootfs_mounted: bool,
    pub size: Option<Size>,
}

/// One containerd's overlay snapshots, read offline from its bolt databases.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshots {
    pub dir: String,
    pub total: u64,
    /// Used as an upper or lower dir by an overlay in the host's mount table.
    pub mounted: u64,
    /// Not mounted, and in containerd's metadata.
    pub known: u64,
    /// In the snapshotter's metadata but removed from containerd's: its garbage collector removes them next.
    pub pending_gc: u64,
    pub orphaned: Vec<OrphanSnapshot>,
    /// Why the databases could not be read; then nothing is called orphaned.
    pub metadata_error: Option<String>,
}

/// Why a snapshot directory is orphaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotReason {
    /// The snapshotter's metadata.db has no snapshot of this id.
    NotInMetadata,
    /// An active snapshot that no container in meta.db uses.
    ActiveUnused,
}

impl SnapshotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::NotInMetadata => "not-in-metadata",
            SnapshotReason::ActiveUnused => "active-unused",
        }
    }
}

/// Whose mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The host's (pid 1's).
    Host,
    /// Another mount namespace's.
    Namespace,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Host => "host",
            Scope::Namespace => "namespace",
        }
    }
}

/// A snapshot directory that no container uses.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanSnapshot {
    pub id: String,
    pub path: String,
    /// `not-in-metadata`: the snapshotter's metadata.db has no snapshot of this id; `active-unused`: an active
    /// snapshot that no container in meta.db uses.
    pub reason: SnapshotReason,
    pub backend_key: Option<String>,
    pub namespace: Option<String>,
    pub snapshot_key: Option<String>,
    pub age_seconds: Option<u64>,
    pub size: Option<Size>,
}

/// One mount table.
#[derive(Debug, Clone, Serialize)]
pub struct MountTable {
    /// `host`, or `namespace`.
    pub scope: Scope,
    pub mnt_ns: Option<u64>,
    pub pid: u32,
    pub owner: Option<Owner>,
    pub mounts: u64,
}

/// What the check looked at.
#[derive(Debug, Default, Serialize)]
pub struct OrphansOutput {
    pub pod_dirs: u64,
    pub orphan_pods: Vec<OrphanPod>,
    pub bundles: u64,
    pub orphan_bundles: Vec<OrphanBundle>,
    pub snapshots: Vec<Snapshots>,
    pub max_mounts: u64,
    /// The host's table first, then the largest namespaces'.
    pub mount_tables: Vec<MountTable>,
    pub mount_namespaces: u64,
}

impl Output for OrphansOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        let mounted = self
            .orphan_pods
            .iter()
            .filter(|p| p.mounts_total > 0)
            .count();
        for (m, n) in [
            ("true", mounted),
            ("false", self.orphan_pods.len() - mounted),
        ] {
            sink.put(
                "orphaned_pod_dirs",
                metric::labels(&[("mounted", m)]),
                n as f64,
            );
        }
        sink.put(
            "orphaned_bundles",
            Vec::new(),
            self.orphan_bundles.len() as f64,
        );
        for t in self.mount_tables.iter().take(sink.top.max(1)) {
            let mut l = metric::labels(&[("scope", t.scope.as_str())]);
            l.extend(metric::owner_labels(t.owner.as_ref()));
            sink.put("mount_table_entries", l, t.mounts as f64);
        }
    }

    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:<36} {:>6} {:>6} {:>10}  {}",
                "ORPHANED POD DIR (UID)", "AGE", "MOUNTS", "SIZE", "HELD BY"
            ))
        )?;
        for p in &self.orphan_pods {
            let holders: Vec<String> = p.holders.iter().map(|h| format!("pid {}", h.pid)).collect();
            writeln!(
                w,
                "{:<36} {:>6} {:>6} {:>10}  {}",
                fit(&p.pod_uid, 36),
                p.age_seconds.map_or("-".into(), |a| human_age(a as i64)),
                p.mounts_total,
                p.size.as_ref().map_or("-".into(), |s| human_bytes(s.bytes)),
                fit(&holders.join(", "), WIDTH - 64)
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:<10} {:<12} {:>10}  {}",
                "NAMESPACE", "BUNDLE", "SIZE", "DIR"
            ))
        )?;
        for b in &self.orphan_bundles {
            writeln!(
                w,
                "{:<10} {:<12} {:>10}  {}",
                fit(&escape(&b.namespace), 10),
                fit(&b.id, 12),
                b.size.as_ref().map_or("-".into(), |s| human_bytes(s.bytes)),
                fit(&escape(&b.dir), WIDTH - 37)
            )?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:>8} {:<10} {:>8}  {}",
                "MOUNTS", "SCOPE", "PID", "OWNER"
            ))
        )?;
        for t in &self.mount_tables {
            let who = t.owner.as_ref().map_or("-".into(), |o| {
                format!("{}/{}", o.pod_label(), o.container_label())
            });
            writeln!(
                w,
                "{:>8} {:<10} {:>8}  {}",
                t.mounts,
                t.scope.as_str(),
                t.pid,
                fit(&who, WIDTH - 30)
            )?;
        }
        for s in &self.snapshots {
            writeln!(
                w,
                "{}",
                style.dim(&format!(
                    "{}: {} snapshots, {} mounted by an overlay",
                    escape(&s.dir),
                    s.total,
                    s.mounted
                ))
            )?;
        }
        writeln!(
            w,
            "{}",
            style.dim(&format!(
                "{} pod directories, {} bundles, {} mount namespaces read",
                self.pod_dirs, self.bundles, self.mount_namespaces
            ))
        )?;
        writeln!(w)
    }
}

impl Check for Orphans {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let deadline = self.budget.map(|b| Instant::now() + b);
        let walk = Layers {
            budget: self.budget,
            ..Default::default()
        };
        let mut o = OrphansOutput {
            max_mounts: self.max_mounts,
            ..Default::default()
        };
        let host_mounts: &[Mount] = ctx.owners.host_mounts().unwrap_or_else(|e| {
            out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                "the host's mount table",
                format!("{e}; mounts under pod directories and bundles' roots are not known"),
            ));
            &[]
        });
        let tables = match ctx.owners.mount_tables() {
            Ok(t) => t,
            Err(e) => {
                out.failed = Some(format!("cannot see mount namespaces: {e}"));
                return out;
            }
        };
        let host_ns = ctx.owners.host_mnt_ns();
        self.pods(
            ctx,
            &walk,
            deadline,
            host_mounts,
            tables,
            host_ns,
            &mut o,
            &mut out,
        );
        self.bundles(ctx, &walk, deadline, host_mounts, &mut o, &mut out);
        snapshots(
            ctx,
            &walk,
            deadline,
            self.min_age,
            self.bolt_limit,
            host_mounts,
            &mut o,
            &mut out,
        );
        // Mount tables.
        o.mount_namespaces = tables.len() as u64;
        let host_pid = tables
            .iter()
            .find(|t| Some(t.inode) == host_ns)
            .map_or(1, |t| t.pid);
        let mut list = vec![MountTable {
            scope: Scope::Host,
            mnt_ns: host_ns,
            pid: host_pid,
            owner: None,
            mounts: host_mounts.len() as u64,
        }];
        let mut others: Vec<&crate::owner::NsMounts> =
            tables.iter().filter(|t| Some(t.inode) != host_ns).collect();
        others.sort_by_key(|t| std::cmp::Reverse(t.mounts.len()));
        for t in others.into_iter().take(TOP_TABLES) {
            list.push(MountTable {
                scope: Scope::Namespace,
                mnt_ns: Some(t.inode),
                pid: t.pid,
                owner: ctx
                    .owners
                    .owner_of_pid(t.pid)
                    .ok()
                    .filter(|o| !o.is_empty()),
                mounts: t.mounts.len() as u64,
            });
        }
        for t in list.iter().filter(|t| t.mounts > self.max_mounts) {
            let whose = match (&t.owner, t.scope) {
                (_, Scope::Host) => "the host's mount table".to_string(),
                (Some(o), _) => format!("the mount table of {} (pid {})", o.pod_label(), t.pid),
                (None, _) => format!("the mount table of pid {}", t.pid),
            };
            out.findings.push(
                Finding {
                    check: UNIT.name,
                    kind: "mount-table",
                    severity: Severity::Warning,
                    summary: format!(
                        "{whose} holds {} mounts, more than {}: every mount, unmount and mountinfo reader slows down",
                        t.mounts, self.max_mounts
                    ),
                    subject: t.mnt_ns.map_or(format!("pid {}", t.pid), |n| format!("mnt:[{n}]")),
                    owner: t.owner.clone(),
                    evidence: Vec::new(),
                    advice: vec![
                        format!("See what repeats: `awk '{{print $5}}' /proc/{}/mountinfo | sort | uniq -c | sort -rn | head`", t.pid),
                        "Mounts that multiply are usually a propagation loop (a bind mount of a directory under itself, \
                         `rshared` hostPath volumes) or volumes left by orphaned pods (see this check's other findings)".into(),
                    ],
                }
                .with("scope", t.scope.as_str())
                .with("mnt_ns", t.mnt_ns)
                .with("pid", t.pid)
                .with("mounts", t.mounts)
                .with("max_mounts", self.max_mounts),
            );
        }
        o.mount_tables = list;
        out.stats = vec![
            ("pod_dirs".into(), o.pod_dirs),
            ("orphan_pods".into(), o.orphan_pods.len() as u64),
            ("bundles".into(), o.bundles),
            ("orphan_bundles".into(), o.orphan_bundles.len() as u64),
            ("mount_namespaces".into(), o.mount_namespaces),
        ];
        out.output = Some(Box::new(o));
        out
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since a directory was last changed (`mtime`), without following a symlink.
fn age_of(path: &Path) -> Option<u64> {
    let st = rustix::fs::lstat(path).ok()?;
    Some(now_secs().saturating_sub(st.st_mtime).max(0) as u64)
}

impl Orphans {
    #[allow(clippy::too_many_arguments)]
    fn pods(
        &self,
        ctx: &Context,
        walk: &Layers,
        deadline: Option<Instant>,
        host_mounts: &[Mount],
        tables: &[crate::owner::NsMounts],
        host_ns: Option<u64>,
        o: &mut OrphansOutput,
        out: &mut CheckOutput,
    ) {
        let kroot = ctx.owners.kubelet_root.clone();
        let pods_node = kroot.join("pods");
        let pods_dir = ctx.host.path(&pods_node);
        let entries = match std::fs::read_dir(&pods_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                out.blind_spots.push(BlindSpot::new(
                    UNIT.name,
                    pods_node.display().to_string(),
                    format!("{e}: orphaned pod directories are not known"),
                ));
                return;
            }
        };
        // Uids that still have a sandbox in some containerd's state, or a live process.
        let mut known: HashSet<String> = ctx
            .owners
            .bundles()
            .iter()
            .filter_map(|b| b.annotation("io.kubernetes.cri.sandbox-uid"))
            .map(str::to_string)
            .collect();
        if let Ok(pids) = procfs::pids(ctx.host) {
            for pid in pids {
                let Ok(data) = procfs::cgroup(ctx.host, pid) else {
                    continue;
                };
                if let Some(uid) = cgroup::parse_proc_cgroup(&data).and_then(|r| r.pod_uid) {
                    known.insert(uid);
                }
            }
        }
        let mut uids: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let node = pods_node.join(&name);
                // Only names kubelet would make: the same test as for any path under pods/.
                kubelet::parse_pod_path(
                    kroot.as_os_str().as_encoded_bytes(),
                    node.as_os_str().as_encoded_bytes(),
                )
                .map(|_| (name, node))
            })
            .collect();
        uids.sort();
        o.pod_dirs = uids.len() as u64;
        let age_ok = |node: &Path| {
            let age = age_of(&ctx.host.path(node));
            (!age.is_some_and(|a| a < self.min_age.as_secs())).then_some(age)
        };
        let candidates: Vec<(String, PathBuf, Option<u64>)> = uids
            .into_iter()
            .filter(|(uid, _)| !known.contains(uid) && !known.contains(&uid.replace('-', "_")))
            .filter_map(|(uid, node)| age_ok(&node).map(|age| (uid, node, age)))
            .collect();
        // A stopped sandbox that was not removed (a completed Job's pod) has no task bundle and no process, but
        // CRI still lists it.
        if !candidates.is_empty() {
            known.extend(cri_uids(ctx, out));
        }
        for (uid, node, age) in candidates {
            if known.contains(&uid) {
                continue;
            }
            let prefix = node.as_os_str().as_encoded_bytes();
            let under = |m: &Mount| mountinfo::path_under(&m.mount_point, prefix);
            let mut mounts: Vec<PodMount> = host_mounts
                .iter()
                .filter(|m| under(m))
                .map(pod_mount)
                .collect();
            // Copies of these mounts (same device and root) in other namespaces keep the volumes busy.
            let keys: HashSet<((u32, u32), &[u8])> = host_mounts
                .iter()
                .filter(|m| under(m))
                .map(|m| (m.dev(), m.root.as_slice()))
                .collect();
            let mut holders = Vec::new();
            for t in tables.iter().filter(|t| Some(t.inode) != host_ns) {
                // By device and root only: a container can mount anything at a path of its own that looks like
                // a pod directory, but not make its mount the same filesystem and root as the host's.
                let n = t
                    .mounts
                    .iter()
                    .filter(|m| keys.contains(&(m.dev(), m.root.as_slice())))
                    .count() as u64;
                if n > 0 {
                    holders.push(Holder {
                        mnt_ns: t.inode,
                        pid: t.pid,
                        owner: ctx
                            .owners
                            .owner_of_pid(t.pid)
                            .ok()
                            .filter(|o| !o.is_empty()),
                        mounts: n,
                    });
                }
            }
            let mounts_total = mounts.len() as u64;
            mounts.truncate(MAX_LISTED);
            holders.sort_by_key(|h| std::cmp::Reverse(h.mounts));
            holders.truncate(MAX_LISTED);
            let size = (!deadline.is_some_and(|d| Instant::now() >= d)).then(|| {
                Size::from(&layers::measure(
                    ctx, walk, "pod-dir", &node, None, deadline,
                ))
            });
            let p = OrphanPod {
                pod_uid: uid,
                path: node.display().to_string(),
                age_seconds: age,
                mounts,
                mounts_total,
                holders,
                size,
            };
            out.findings.push(pod_finding(&p));
            o.orphan_pods.push(p);
        }
    }

    fn bundles(
        &self,
        ctx: &Context,
        walk: &Layers,
        deadline: Option<Instant>,
        host_mounts: &[Mount],
        o: &mut OrphansOutput,
        out: &mut CheckOutput,
    ) {
        let bundles = ctx.owners.bundles();
        o.bundles = bundles.len() as u64;
        if bundles.is_empty() {
            return;
        }
        let served: HashSet<String> = match super::shims::survey(ctx, 0) {
            Ok(s) => s
                .shims
                .iter()
                .flat_map(|s| s.bundles.iter().map(|b| b.dir.clone()))
                .collect(),
            Err(e) => {
                out.blind_spots.push(BlindSpot::new(
                    UNIT.name,
                    "containerd shims",
                    format!("{e}: which bundles no shim serves is not known"),
                ));
                return;
            }
        };
        for b in bundles {
            let dir = b.dir.display().to_string();
            if served.contains(&dir) {
                continue;
            }
            let age = age_of(&ctx.host.path(&b.dir));
            if age.is_some_and(|a| a < self.min_age.as_secs()) {
                continue;
            }
            let rootfs = b.dir.join("rootfs");
            let rootfs_mounted = host_mounts
                .iter()
                .any(|m| m.mount_point == rootfs.as_os_str().as_encoded_bytes());
            let size = (!deadline.is_some_and(|d| Instant::now() >= d)).then(|| {
                Size::from(&layers::measure(
                    ctx, walk, "bundle", &b.dir, None, deadline,
                ))
            });
            let owner = Some(ctx.owners.owner_of_bundle(b)).filter(|o| !o.is_empty());
            let ob = OrphanBundle {
                namespace: b.namespace.clone(),
                id: b.id.clone(),
                dir,
                container_type: b
                    .annotation("io.kubernetes.cri.container-type")
                    .map(str::to_string),
                owner,
                age_seconds: age,
                rootfs_mounted,
                size,
            };
            out.findings.push(bundle_finding(&ob));
            o.orphan_bundles.push(ob);
        }
    }
}

/// The pod uids CRI lists, in any state, on each running containerd, within [`super::shims::CRI_BUDGET`] for
/// all of them together; what did not answer is a blind spot.
#[cfg(feature = "cri")]
fn cri_uids(ctx: &Context, out: &mut CheckOutput) -> Vec<String> {
    let budget = super::shims::CRI_BUDGET;
    let deadline = Instant::now() + budget;
    let mut uids = Vec::new();
    if ctx.owners.instances().iter().all(|i| i.pid.is_none()) {
        out.blind_spots.push(BlindSpot::new(
            UNIT.name,
            "whether a stopped sandbox is still recorded for the orphaned pods",
            "no running containerd was found to ask through CRI: a stopped sandbox not yet removed (a completed \
             Job's pod) has no bundle and no process, and may be reported as orphaned",
        ));
    }
    for inst in ctx.owners.instances().iter().filter(|i| i.pid.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let sock = ctx.host.path(&inst.address);
        let r = (|| {
            if left.is_zero() {
                return Err("no time left in wonk's budget".to_string());
            }
            let mut c = crate::cri::Client::connect(&sock, left).map_err(|e| e.to_string())?;
            c.timeout = deadline.saturating_duration_since(Instant::now());
            c.list_pod_sandbox(None).map_err(|e| e.to_string())
        })();
        match r {
            Ok(list) => uids.extend(list.into_iter().filter_map(|s| s.metadata.map(|m| m.uid))),
            Err(e) => out.blind_spots.push(BlindSpot::new(
                UNIT.name,
                format!("whether CRI at {} lists the orphaned pods' sandboxes", inst.address.display()),
                format!(
                    "{e} (within {} ms): a stopped sandbox not yet removed (a completed Job's pod) has no bundle \
                     and no process, and may be reported as orphaned",
                    budget.as_millis()
                ),
            )),
        }
    }
    uids
}

/// Without the `cri` feature, CRI is not asked.
#[cfg(not(feature = "cri"))]
fn cri_uids(_: &Context, out: &mut CheckOutput) -> Vec<String> {
    out.blind_spots.push(BlindSpot::new(
        UNIT.name,
        "whether CRI lists the orphaned pods' sandboxes",
        "this wonk was built without the `cri` feature: a stopped sandbox not yet removed (a completed Job's pod) \
         has no bundle and no process, and may be reported as orphaned",
    ));
    Vec::new()
}

fn pod_mount(m: &Mount) -> PodMount {
    PodMount {
        mount_point: String::from_utf8_lossy(&m.mount_point).into_owned(),
        fs_type: m.fs_type.clone(),
        source: String::from_utf8_lossy(&m.source).into_owned(),
        root: String::from_utf8_lossy(&m.root).into_owned(),
        device: format!("{}:{}", m.major, m.minor),
    }
}

fn pod_finding(p: &OrphanPod) -> Finding {
    let mounted = p.mounts_total > 0;
    let mut advice = Vec::new();
    if mounted {
        advice.push(format!(
            "Unmount what is still mounted under it, deepest first: `findmnt -R -n -o TARGET {} | tac | xargs -r -n1 umount`",
            p.path
        ));
        for h in &p.holders {
            advice.push(format!(
                "Mount namespace {} (pid {}) holds copies of these mounts: they stay busy until it exits, or \
                 `nsenter -t {} -m umount PATH` in it",
                h.mnt_ns, h.pid, h.pid
            ));
        }
        advice.push(
            "Then kubelet removes the directory itself; never `rm -rf` a pod directory while anything is mounted \
             under it (it would delete the volume's data)"
                .into(),
        );
    } else {
        advice.push(format!(
            "Nothing is mounted under it: kubelet removes it on its own; if it stays, `rm -rf {}` is safe once \
             `findmnt -R {}` shows nothing",
            p.path, p.path
        ));
    }
    let size = p.size.as_ref().map_or(String::new(), |s| {
        format!(", {} in {} files", human_bytes(s.bytes), s.files)
    });
    Finding {
        check: UNIT.name,
        kind: if mounted {
            "orphaned-pod-volumes"
        } else {
            "orphaned-pod-dir"
        },
        severity: if mounted {
            Severity::Warning
        } else {
            Severity::Info
        },
        summary: if mounted {
            format!(
                "pod {} is gone (no sandbox, no process) but {} mount(s) are left under {}{size}",
                p.pod_uid, p.mounts_total, p.path
            )
        } else {
            format!(
                "pod {} is gone (no sandbox, no process); its directory {} is left{size}",
                p.pod_uid, p.path
            )
        },
        subject: p.path.clone(),
        owner: Some(Owner {
            pod_uid: Some(p.pod_uid.clone()),
            ..Owner::default()
        }),
        evidence: Vec::new(),
        advice,
    }
    .with("pod_uid", &p.pod_uid)
    .with("age_seconds", p.age_seconds)
    .with("mounts_total", p.mounts_total)
    .with("mounts", &p.mounts)
    .with("holders", &p.holders)
    .with("size", &p.size)
}

fn bundle_finding(b: &OrphanBundle) -> Finding {
    let who = b
        .owner
        .as_ref()
        .map_or(String::new(), |o| format!(" of {}", o.pod_label()));
    let mut advice = vec![format!(
        "containerd removes bundles without a shim when it restarts; to remove this one by hand: `ctr -n {} task \
         delete {}` (or, with containerd stopped, `rm -rf {}`)",
        b.namespace, b.id, b.dir
    )];
    if b.rootfs_mounted {
        advice.insert(
            0,
            format!(
                "Its rootfs is still mounted: `umount {}/rootfs` first",
                b.dir
            ),
        );
    }
    Finding {
        check: UNIT.name,
        kind: "bundle-without-shim",
        severity: if b.rootfs_mounted {
            Severity::Warning
        } else {
            Severity::Info
        },
        summary: format!(
            "task bundle {}/{}{who} is served by no live shim{}",
            b.namespace,
            b.id,
            if b.rootfs_mounted {
                "; its rootfs is still mounted"
            } else {
                ""
            }
        ),
        subject: b.dir.clone(),
        owner: b.owner.clone(),
        evidence: Vec::new(),
        advice,
    }
    .with("namespace", &b.namespace)
    .with("id", &b.id)
    .with("container_type", &b.container_type)
    .with("age_seconds", b.age_seconds)
    .with("rootfs_mounted", b.rootfs_mounted)
    .with("size", &b.size)
}

/// The most of a bolt database read (containerd's meta.db grows with images and containers).
const BOLT_LIMIT: u64 = 256 << 20;
/// The same in `wonk agent`, whose memory stays small.
const AGENT_BOLT_LIMIT: u64 = 16 << 20;

/// Reads a bolt database of the node, a regular file of at most `limit` bytes, again if a transaction
/// committed while it was read (the meta pages' txid then differs): bolt may reuse a freed page right after.
fn read_bolt(ctx: &Context, node: &Path, max: u64) -> Result<bolt::Db, String> {
    let path = ctx.host.path(node);
    let read = |limit: u64| -> Result<Vec<u8>, String> {
        let (fd, id) = crate::host::open_regular_at(&rustix::fs::CWD, &path, u64::MAX)
            .map_err(|e| e.to_string())?;
        if limit == max && id.size > max {
            return Err(format!(
                "{} bytes, more than the {max} wonk reads (--bolt-limit)",
                id.size
            ));
        }
        crate::host::read_fd_bounded(&fd, limit).map_err(|e| e.to_string())
    };
    for _ in 0..3 {
        let db = bolt::Db::open(read(max)?)?;
        // The meta pages again (pages 0 and 1; a page is at most 64 KiB).
        let again = read(128 << 10)
            .ok()
            .and_then(|d| bolt::Db::open(d).ok())
            .map(|d| d.txid);
        if again == Some(db.txid) {
            return Ok(db);
        }
    }
    Err("it changed while it was read, three times".into())
}

/// What containerd's databases say about its overlay snapshots: id -> (backend key, kind), and the backend keys
/// that a container of some namespace uses as its snapshot (its `snapshotKey`, through the metadata's `name`).
struct SnapshotMeta {
    by_id: HashMap<String, (String, u8)>,
    used_keys: HashSet<String>,
    /// backend key -> (containerd namespace, snapshot key), for advice.
    names: HashMap<String, (String, String)>,
}

fn snapshot_meta(ctx: &Context, root: &Path, max: u64) -> Result<SnapshotMeta, String> {
    let sdb_path = root.join("io.containerd.snapshotter.v1.overlayfs/metadata.db");
    let sdb = read_bolt(ctx, &sdb_path, max).map_err(|e| format!("{}: {e}", sdb_path.display()))?;
    let mut by_id = HashMap::new();
    if let Some(snaps) = sdb.path(&[b"v1", b"snapshots"])? {
        for e in sdb.entries(&snaps)?.into_iter().filter(|e| e.bucket) {
            let Some(b) = sdb.bucket(&snaps, &e.key)? else {
                continue;
            };
            let Some(id) = sdb.get(&b, b"id")?.and_then(|v| bolt::uvarint(&v)) else {
                continue;
            };
            let kind = sdb
                .get(&b, b"kind")?
                .and_then(|v| v.first().copied())
                .unwrap_or(0);
            by_id.insert(
                id.to_string(),
                (String::from_utf8_lossy(&e.key).into_owned(), kind),
            );
        }
    }
    let mdb_path = root.join("io.containerd.metadata.v1.bolt/meta.db");
    let mdb = read_bolt(ctx, &mdb_path, max).map_err(|e| format!("{}: {e}", mdb_path.display()))?;
    let mut used_keys = HashSet::new();
    let mut names = HashMap::new();
    if let Some(v1) = mdb.path(&[b"v1"])? {
        for ns in mdb.entries(&v1)?.into_iter().filter(|e| e.bucket) {
            let Some(nsb) = mdb.bucket(&v1, &ns.key)? else {
                continue;
            };
            let ns_name = String::from_utf8_lossy(&ns.key).into_owned();
            // snapshot key (in this namespace) -> backend key
            let mut backend: HashMap<Vec<u8>, String> = HashMap::new();
            if let Some(ov) = mdb
                .bucket(&nsb, b"snapshots")?
                .map(|s| mdb.bucket(&s, b"overlayfs"))
                .transpose()?
                .flatten()
            {
                for snap in mdb.entries(&ov)?.into_iter().filter(|e| e.bucket) {
                    let Some(sb) = mdb.bucket(&ov, &snap.key)? else {
                        continue;
                    };
                    if let Some(name) = mdb.get(&sb, b"name")? {
                        let name = String::from_utf8_lossy(&name).into_owned();
                        names.insert(
                            name.clone(),
                            (
                                ns_name.clone(),
                                String::from_utf8_lossy(&snap.key).into_owned(),
                            ),
                        );
                        backend.insert(snap.key.clone(), name);
                    }
                }
            }
            if let Some(cs) = mdb.bucket(&nsb, b"containers")? {
                for c in mdb.entries(&cs)?.into_iter().filter(|e| e.bucket) {
                    let Some(cb) = mdb.bucket(&cs, &c.key)? else {
                        continue;
                    };
                    let snapshotter = mdb.get(&cb, b"snapshotter")?;
                    if snapshotter.as_deref().is_some_and(|s| s != b"overlayfs") {
                        continue;
                    }
                    if let Some(k) = mdb.get(&cb, b"snapshotKey")? {
                        if let Some(b) = backend.get(&k) {
                            used_keys.insert(b.clone());
                        }
                    }
                }
            }
        }
    }
    Ok(SnapshotMeta {
        by_id,
        used_keys,
        names,
    })
}

/// containerd's snapshot kinds (`snapshots.Kind`).
const KIND_ACTIVE: u8 = 2;

/// Overlay snapshots per containerd: those an overlay in the host's table uses, and, from containerd's bolt
/// databases, the directories containerd no longer knows and the active snapshots no container uses.
#[allow(clippy::too_many_arguments)]
fn snapshots(
    ctx: &Context,
    walk: &Layers,
    deadline: Option<Instant>,
    min_age: Duration,
    bolt_limit: u64,
    host_mounts: &[Mount],
    o: &mut OrphansOutput,
    out: &mut CheckOutput,
) {
    let mut used: HashSet<Vec<u8>> = HashSet::new();
    for m in host_mounts.iter().filter(|m| m.fs_type == "overlay") {
        for key in ["upperdir", "lowerdir"] {
            let Some(v) = m.super_option(key) else {
                continue;
            };
            for dir in v.split(|&b| b == b':') {
                let dir = mountinfo::unescape_overlay(dir);
                // .../snapshots/<id>/fs
                if let Some(snap) = dir.strip_suffix(b"/fs") {
                    used.insert(snap.to_vec());
                }
            }
        }
    }
    let roots: BTreeSet<PathBuf> = ctx
        .owners
        .instances()
        .iter()
        .map(|i| i.root.clone())
        .collect();
    for root in &roots {
        let node = root.join("io.containerd.snapshotter.v1.overlayfs/snapshots");
        let Ok(entries) = std::fs::read_dir(ctx.host.path(&node)) else {
            continue;
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        let meta = snapshot_meta(ctx, root, bolt_limit);
        let mut s = Snapshots {
            dir: node.display().to_string(),
            total: ids.len() as u64,
            mounted: 0,
            known: 0,
            pending_gc: 0,
            orphaned: Vec::new(),
            metadata_error: meta.as_ref().err().cloned(),
        };
        for id in ids {
            let p = node.join(&id);
            if used.contains(p.as_os_str().as_encoded_bytes()) {
                s.mounted += 1;
                continue;
            }
            let Ok(meta) = &meta else {
                continue;
            };
            let (reason, key) = match meta.by_id.get(&id) {
                None => (SnapshotReason::NotInMetadata, None),
                // Removed from containerd's metadata already: its garbage collector removes the directory next.
                Some((k, _)) if !meta.names.contains_key(k) => {
                    s.pending_gc += 1;
                    continue;
                }
                Some((k, kind)) if *kind == KIND_ACTIVE && !meta.used_keys.contains(k) => {
                    (SnapshotReason::ActiveUnused, Some(k.clone()))
                }
                Some(_) => {
                    s.known += 1;
                    continue;
                }
            };
            s.known += u64::from(key.is_some());
            let age = age_of(&ctx.host.path(&p));
            if age.is_some_and(|a| a < min_age.as_secs()) {
                continue;
            }
            let size = (!deadline.is_some_and(|d| Instant::now() >= d))
                .then(|| Size::from(&layers::measure(ctx, walk, "snapshot", &p, None, deadline)));
            let (namespace, snapshot_key) = key
                .as_ref()
                .and_then(|k| meta.names.get(k).cloned())
                .map_or((None, None), |(n, k)| (Some(n), Some(k)));
            let orphan = OrphanSnapshot {
                id,
                path: p.display().to_string(),
                reason,
                backend_key: key,
                namespace,
                snapshot_key,
                age_seconds: age,
                size,
            };
            out.findings.push(snapshot_finding(&orphan));
            s.orphaned.push(orphan);
        }
        if let Err(e) = &meta {
            let unmounted = s.total - s.mounted;
            if unmounted > 0 {
                out.blind_spots.push(BlindSpot::new(
                    UNIT.name,
                    format!("{unmounted} overlay snapshots under {} that no overlay mounts", node.display()),
                    format!(
                        "whether a container or an image still references them is recorded in containerd's bolt \
                         databases, which wonk could not read ({e}); none is reported as orphaned"
                    ),
                ));
            }
        }
        o.snapshots.push(s);
    }
}

fn snapshot_finding(s: &OrphanSnapshot) -> Finding {
    let (summary, advice) = match s.reason {
        SnapshotReason::NotInMetadata => (
            format!("overlay snapshot directory {} is not in containerd's snapshotter metadata", s.path),
            vec![format!(
                "containerd will never use it again; `rm -rf {}` is safe (no overlay in the host's mount table uses it)",
                s.path
            )],
        ),
        _ => (
            format!(
                "active overlay snapshot {} ({}) is used by no container",
                s.path,
                s.snapshot_key.as_deref().or(s.backend_key.as_deref()).unwrap_or("?")
            ),
            vec![match (&s.namespace, &s.snapshot_key) {
                (Some(n), Some(k)) => format!(
                    "remove it through containerd, which also forgets it: `ctr -n {n} snapshots rm {k}`"
                ),
                _ => "remove it through containerd (`ctr snapshots rm`), never by hand while containerd knows it".into(),
            }],
        ),
    };
    let size = s.size.as_ref().map_or(String::new(), |z| {
        format!(", {} in {} files", human_bytes(z.bytes), z.files)
    });
    Finding {
        check: UNIT.name,
        kind: "orphaned-snapshot",
        severity: Severity::Info,
        summary: format!("{summary}{size}"),
        subject: s.path.clone(),
        owner: None,
        evidence: Vec::new(),
        advice,
    }
    .with("id", &s.id)
    .with("reason", s.reason.as_str())
    .with("backend_key", &s.backend_key)
    .with("namespace", &s.namespace)
    .with("snapshot_key", &s.snapshot_key)
    .with("age_seconds", s.age_seconds)
    .with("size", &s.size)
}
