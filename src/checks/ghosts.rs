//! Ghost mounts: bind mounts whose mounted file or directory is no longer what the host path holds.
//!
//! A bind mount pins an inode when it is made. When the host path is later replaced (`mv -f new data.txt`, or
//! kubelet's atomic writer swapping a ConfigMap's `..data`), the mount keeps showing the old inode for ever.
//! For each mount namespace (read once, through its lowest pid) and each bind mount in it, this check compares
//! the mounted inode, reached inside the namespace's root, with what the host path holds now:
//! - `deleted`: the mounted inode has no links left (mountinfo shows its root as `...//deleted`);
//! - `replaced`: the host path now resolves to another inode, though the old one still has links;
//! - `source-gone`: the host path no longer exists at all.
//!
//! The host path is the bundle's `config.json` mount source when the namespace belongs to a containerd
//! container and the source agrees with the host's mount table, else the mount's root mapped through the host's
//! own mount table. It is statted without following any symlink: a pod can swap a file it mounted from the host
//! for a symlink to `/etc/shadow`, and a symlink found is reported as such, never as its target's identity.

use super::{Check, Context, NoArgs, Npd, Unit};
use crate::finding::{utc, BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::mountinfo::{self, Mount};
use crate::host::procfs::{self, MountNs};
use crate::host::resolve::{self, Identity, NoFollow};
use crate::host::{display_bytes, vanished};
use crate::metric::{self, Family, Sink};
use crate::owner::kubelet::{self, AtomicWriterNow};
use crate::owner::Owner;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;

pub struct Ghosts;

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "ghosts",
    about: "Find stale bind mounts: a mounted file or directory that its host path no longer holds",
    args: super::args_of::<NoArgs>,
    from_args: |_, _| Ok(Box::new(Ghosts)),
    scan: || Box::new(Ghosts),
    agent: |_| Box::new(Ghosts),
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "ghosts-interval",
        default_secs: 60,
    },
    settings: &[],
    metrics: &[Family::gauge(
        "ghost_mounts",
        "Stale bind mounts (kind: deleted, replaced, source-gone) by owner",
    )],
    npd: Some(Npd {
        condition: "GhostHostPathMount",
        ok_reason: "NoGhostMounts",
        ok_message: "no stale bind mounts",
    }),
};

/// How a bind mount went stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GhostKind {
    /// The mounted inode has no links left.
    Deleted,
    /// The host path now holds another inode; the mounted one is still linked elsewhere.
    Replaced,
    /// The host path no longer exists.
    SourceGone,
}

impl GhostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GhostKind::Deleted => "deleted",
            GhostKind::Replaced => "replaced",
            GhostKind::SourceGone => "source-gone",
        }
    }
}

/// Stale bind mounts of one kind in one owner's namespaces, as the metrics count them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GhostCount {
    pub kind: GhostKind,
    pub owner: Option<Owner>,
    pub mounts: u64,
}

/// What the check looked at. Bounded whatever a pod mounts: one count per owner and kind, not one entry per mount
/// (the findings list the mounts, folded beyond a cap).
#[derive(Debug, Default, serde::Serialize)]
pub struct GhostsOutput {
    pub mount_namespaces: u64,
    pub bind_mounts_checked: u64,
    pub bind_mounts_shadowed_or_raced: u64,
    pub ghosts: Vec<GhostCount>,
}

impl GhostsOutput {
    fn count(&mut self, kind: GhostKind, owner: Option<&Owner>) {
        match self
            .ghosts
            .iter_mut()
            .find(|g| g.kind == kind && g.owner.as_ref() == owner)
        {
            Some(g) => g.mounts += 1,
            None => self.ghosts.push(GhostCount {
                kind,
                owner: owner.cloned(),
                mounts: 1,
            }),
        }
    }
}

impl Output for GhostsOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        for g in &self.ghosts {
            let mut k = metric::owner_labels(g.owner.as_ref());
            k.push(("kind".into(), g.kind.as_str().into()));
            sink.put("ghost_mounts", k, g.mounts as f64);
        }
    }
}

/// Filesystems whose mounts are not files a user bind-mounted.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "pstore",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "nsfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
];

impl Check for Ghosts {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let (namespaces, unreadable) = match ctx.owners.namespaces() {
            Ok(r) => r,
            Err(e) => {
                out.failed = Some(format!("cannot see mount namespaces: {e}"));
                return out;
            }
        };
        let host_ns = ctx.owners.host_mnt_ns();
        let host_mounts = ctx.owners.host_mounts().unwrap_or_else(|e| {
            out.blind_spots.push(BlindSpot::new(
                "ghosts",
                "the host's mount table",
                format!(
                    "{e}; no host path can be found or checked, so only deleted mounts are reported"
                ),
            ));
            &[]
        });
        if !unreadable.is_empty() {
            out.blind_spots.push(BlindSpot::new(
                "ghosts",
                format!(
                    "the mount namespace of {} process(es) (first: pid {})",
                    unreadable.len(),
                    unreadable[0].0
                ),
                if rustix::process::geteuid().is_root() {
                    format!("{} (even as root: such a process holds capabilities wonk lacks, or an LSM denies it)", unreadable[0].1)
                } else {
                    format!("{} (run as root to see every mount namespace)", unreadable[0].1)
                },
            ));
        }
        let mut o = GhostsOutput::default();
        let host_stats = HostStats::default();
        for ns in namespaces {
            let scan = NsScan {
                ctx,
                ns,
                host_ns,
                host_mounts,
                host_stats: &host_stats,
            };
            match scan.run(&mut out, &mut o) {
                Ok(Some(stats)) => {
                    o.mount_namespaces += 1;
                    o.bind_mounts_checked += stats.0;
                    o.bind_mounts_shadowed_or_raced += stats.1;
                }
                Ok(None) => {}
                Err(e) => out.blind_spots.push(BlindSpot::new(
                    "ghosts",
                    format!("mount namespace {} (pid {})", ns.inode, ns.pids[0]),
                    e.to_string(),
                )),
            }
        }
        out.stats = vec![
            ("mount_namespaces".into(), o.mount_namespaces),
            ("bind_mounts_checked".into(), o.bind_mounts_checked),
            (
                "bind_mounts_shadowed_or_raced".into(),
                o.bind_mounts_shadowed_or_raced,
            ),
        ];
        out.output = Some(Box::new(o));
        out
    }
}

/// One mount namespace being checked.
struct NsScan<'a> {
    ctx: &'a Context<'a>,
    ns: &'a MountNs,
    host_ns: Option<u64>,
    host_mounts: &'a [Mount],
    host_stats: &'a HostStats,
}

/// Host paths already statted in this run. Many namespaces mount the same sources (every pod of a DaemonSet,
/// every container's /etc/hosts), so each host path is resolved once. A pod can reach into many host paths (a
/// hostPath, its volumes) and swap a file or a directory for a symlink to `/etc/shadow`: no symlink is followed,
/// one found is itself the answer.
#[derive(Default)]
struct HostStats(RefCell<HashMap<Vec<u8>, Result<NoFollow, i32>>>);

impl HostStats {
    fn get(&self, host_root: &std::fs::File, path: &[u8]) -> io::Result<NoFollow> {
        if let Some(r) = self.0.borrow().get(path) {
            return r.clone().map_err(io::Error::from_raw_os_error);
        }
        let r = resolve::stat_no_follow(host_root, path);
        let stored = r
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        self.0.borrow_mut().insert(path.to_vec(), stored);
        r
    }
}

impl NsScan<'_> {
    /// Returns `(bind mounts checked, mounts that could not be verified)`, or `None` if every process of the
    /// namespace vanished.
    fn run(
        &self,
        out: &mut CheckOutput,
        counts: &mut GhostsOutput,
    ) -> io::Result<Option<(u64, u64)>> {
        let host = self.ctx.host;
        let Some((pid, data)) = self.read_mountinfo()? else {
            return Ok(None);
        };
        let root = match resolve::open_root(&procfs::root_dir(host, pid)) {
            Ok(f) => f,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (mounts, bad) = mountinfo::parse(&data);
        if let Some(b) = bad.first() {
            out.blind_spots.push(BlindSpot::new(
                "ghosts",
                format!(
                    "{} lines of /proc/{pid}/mountinfo (first: line {})",
                    bad.len(),
                    b.line
                ),
                b.reason,
            ));
        }
        let is_host_ns = Some(self.ns.inode) == self.host_ns;
        // The owner is read only when it matters: to find the bundle's mount sources, or for a finding.
        let owner = std::cell::OnceCell::new();
        let owner_of_ns = || {
            owner
                .get_or_init(|| {
                    let o = (!is_host_ns).then(|| self.ctx.owners.owner_of_pid(pid).ok());
                    o.flatten().filter(|o| !o.is_empty())
                })
                .as_ref()
        };
        let bundle = if self.ctx.owners.bundles().is_empty() {
            None
        } else {
            owner_of_ns()
                .and_then(|o| o.container_id.as_deref())
                .and_then(|id| self.ctx.owners.bundle(id))
        };
        let (mut checked, mut unverified) = (0, 0);
        for m in &mounts {
            if m.root == b"/" || PSEUDO_FS.contains(&m.fs_type.as_str()) {
                continue;
            }
            // What we reach must be the root of this very mount; otherwise another mount covers it, or it
            // changed since mountinfo was read (a container can race us), and nothing can be said about it.
            let mounted = match resolve::stat_mount_root(&root, &m.mount_point, u64::from(m.id)) {
                Ok(Some(id)) => id,
                Err(e) if vanished(&e) => continue,
                Ok(None) | Err(_) => {
                    unverified += 1;
                    continue;
                }
            };
            checked += 1;
            let bundle_source = bundle
                .and_then(|b| {
                    b.spec.mounts.iter().find(|sm| {
                        sm.is_bind() && sm.destination.as_bytes() == m.mount_point.as_slice()
                    })
                })
                .and_then(|sm| sm.source.clone())
                .map(String::into_bytes);
            let (source, disowned) = match bundle_source {
                Some(s) if source_agrees(&s, m, self.host_mounts) => {
                    (Some((s, "config.json")), None)
                }
                other => {
                    let exclude = is_host_ns.then_some(m.id);
                    let p = host_path_of(m, self.host_mounts, exclude).map(|p| (p, "mountinfo"));
                    (p, other)
                }
            };
            let owner = || {
                if is_host_ns {
                    let kubelet = self.ctx.owners.owner_of_kubelet_path(&m.mount_point);
                    kubelet.map(|(o, _)| o)
                } else {
                    owner_of_ns().cloned()
                }
            };
            if let Some((kind, mut f)) = self.judge(pid, m, &mounted, source, owner) {
                if let Some(d) = disowned {
                    f = f.with("bundle_source_disagrees", display_bytes(&d));
                }
                counts.count(kind, f.owner.as_ref());
                out.findings.push(f);
            }
        }
        Ok(Some((checked, unverified)))
    }

    /// The mountinfo of the first process of the namespace that is still there.
    fn read_mountinfo(&self) -> io::Result<Option<(u32, Vec<u8>)>> {
        let mut last_err = None;
        for &pid in &self.ns.pids {
            match procfs::mountinfo(self.ctx.host, pid) {
                Ok(d) => return Ok(Some((pid, d))),
                Err(e) if vanished(&e) => continue,
                Err(e) => last_err = Some(e),
            }
        }
        last_err.map_or(Ok(None), Err)
    }

    /// Compares the mounted inode with the host path and makes a finding if they disagree.
    fn judge(
        &self,
        pid: u32,
        m: &Mount,
        mounted: &Identity,
        source: Option<(Vec<u8>, &'static str)>,
        owner: impl FnOnce() -> Option<Owner>,
    ) -> Option<(GhostKind, Finding)> {
        let host_root = self.ctx.host.root_dir();
        let now = source
            .as_ref()
            .map(|(p, _)| self.host_stats.get(host_root, p));
        let from_mountinfo = source.as_ref().is_some_and(|s| s.1 == "mountinfo");
        let (kind, why) = match &now {
            _ if mounted.nlink == 0 => (
                GhostKind::Deleted,
                "the mounted inode has 0 links: its host path was replaced or removed",
            ),
            Some(Ok(NoFollow::Inode(cur))) if !cur.same_inode(mounted) => {
                // A host path derived from mountinfo that now lands on another filesystem is covered by some
                // other mount; it says nothing about this one.
                if from_mountinfo && cur.dev != mounted.dev {
                    return None;
                }
                (
                    GhostKind::Replaced,
                    "the host path now holds another inode; the old one is still linked elsewhere",
                )
            }
            Some(Ok(NoFollow::Symlink { dev, .. })) => {
                if from_mountinfo && *dev != mounted.dev {
                    return None;
                }
                (
                    GhostKind::Replaced,
                    "the host path now is, or leads through, a symlink, which wonk does not follow",
                )
            }
            Some(Err(e)) if vanished(e) => {
                (GhostKind::SourceGone, "the host path no longer exists")
            }
            _ => return None,
        };
        let mp = display_bytes(&m.mount_point);
        let host_path = source.as_ref().map(|(p, _)| display_bytes(p));
        let now_text = match &now {
            Some(Ok(NoFollow::Inode(cur))) => format!("now inode {}", cur.ino),
            Some(Ok(NoFollow::Symlink { at, target, .. })) => format!(
                "now a symlink ({} -> {}), not followed",
                display_bytes(at),
                display_bytes(target)
            ),
            Some(Err(e)) if vanished(e) => "now gone".to_string(),
            _ => "host path unknown".to_string(),
        };
        let owner = owner();
        let who = owner
            .as_ref()
            .map(|o| format!(" in {}", o.pod_label()))
            .unwrap_or_default();
        let summary = match &host_path {
            Some(hp) => format!(
                "{mp}{who} shows inode {} ({} links); {hp} is {now_text}",
                mounted.ino, mounted.nlink
            ),
            None => format!(
                "{mp}{who} shows inode {} with {} links",
                mounted.ino, mounted.nlink
            ),
        };
        let mut f = Finding {
            check: "ghosts",
            kind: kind.as_str(),
            severity: Severity::Warning,
            summary,
            subject: mp,
            owner,
            evidence: Vec::new(),
            advice: vec![
                "restart the pod to pick up the current content of the host path".into(),
                if mounted.is_dir() {
                    "a bind mount pins the directory's inode for the life of the container: replace files inside \
                     the directory, never the directory itself"
                        .into()
                } else {
                    "mount the parent directory instead of the file, and replace files inside it; a file bind mount \
                     pins one inode for the life of the container"
                        .into()
                },
            ],
        }
        .with("reason", why)
        .with("pid", pid)
        .with("mount_namespace", self.ns.inode)
        .with("mount_id", m.id)
        .with("mountinfo_root", display_bytes(&m.root))
        .with("fs_type", &m.fs_type)
        .with("device", format!("{}:{}", m.major, m.minor))
        .with("mount_source", display_bytes(&m.source))
        .with("host_path", &host_path)
        .with("host_path_from", source.as_ref().map(|s| s.1))
        .with("mounted", facts(mounted))
        .with(
            "host_now",
            match &now {
                Some(Ok(now)) => no_follow_facts(now),
                Some(Err(e)) if vanished(e) => json!("gone"),
                Some(Err(e)) => json!(format!("unreadable: {e}")),
                None => Value::Null,
            },
        );
        if let Some(cur_path) = host_path
            .as_ref()
            .and_then(|p| kubelet::atomic_writer_current(p.as_bytes()))
        {
            let cur = kubelet::atomic_writer_current_now(host_root, &cur_path);
            f = f
                .with("atomic_writer_current", display_bytes(&cur_path))
                .with(
                    "atomic_writer_current_now",
                    match &cur {
                        Ok(AtomicWriterNow::Inode(id)) => facts(id),
                        Ok(AtomicWriterNow::Symlink { at, target }) => symlink_facts(at, target),
                        Ok(AtomicWriterNow::NotAtomicWriter(data, target)) => json!({
                            "not_atomic_writer": display_bytes(data),
                            "symlink_to": target.as_deref().map(display_bytes),
                            "followed": false,
                        }),
                        Err(e) if vanished(e) => json!("gone"),
                        Err(e) => json!(format!("unreadable: {e}")),
                    },
                );
            f.advice.insert(
                0,
                "this is a ConfigMap/Secret/projected volume mounted with subPath: kubelet never updates subPath \
                 mounts; mount the whole volume to receive updates"
                    .into(),
            );
        }
        Some((kind, f))
    }
}

/// The raw numbers a user compares, as evidence.
fn facts(id: &Identity) -> Value {
    json!({
        "device": id.dev.to_string(),
        "inode": id.ino,
        "links": id.nlink,
        "size": id.size,
        "mtime": utc(id.mtime),
    })
}

/// What a host path holds now, as evidence: an inode's facts, or the symlink found where it was expected.
fn no_follow_facts(now: &NoFollow) -> Value {
    match now {
        NoFollow::Inode(id) => facts(id),
        NoFollow::Symlink { at, target, .. } => symlink_facts(at, target),
    }
}

fn symlink_facts(at: &[u8], target: &[u8]) -> Value {
    json!({
        "symlink": display_bytes(at),
        "target": display_bytes(target),
        "followed": false,
    })
}

/// Whether a bundle's mount source agrees with what the kernel says was mounted: through the host's mount table
/// (by names, following no symlink) it lies on the mount's filesystem, at the mount's root or beside it in the
/// same directory (a file renamed aside and recreated: the kernel's root follows the rename, the source does not).
/// A source that names another file (`/etc/shadow` for a pod's own hostPath file) is not taken for its host path.
fn source_agrees(source: &[u8], m: &Mount, host_mounts: &[Mount]) -> bool {
    let Some(fs) = mountinfo::fs_path(source, host_mounts, m.dev()) else {
        return false;
    };
    let parent = |p: &[u8]| p.iter().rposition(|&b| b == b'/').map(|i| p[..i].to_vec());
    fs == m.root_path() || parent(&fs) == parent(m.root_path())
}

/// Maps a bind mount's root to the host path that shows the same file now, through a host mount of the same
/// device whose root contains it. Prefers whole-filesystem mounts, then the deepest root.
pub fn host_path_of(m: &Mount, host_mounts: &[Mount], exclude_id: Option<u32>) -> Option<Vec<u8>> {
    let root = m.root_path();
    host_mounts
        .iter()
        .filter(|h| Some(h.id) != exclude_id && h.dev() == m.dev() && !h.root_deleted())
        .filter(|h| mountinfo::path_under(root, &h.root))
        .max_by_key(|h| {
            (
                h.root == b"/",
                h.root.len(),
                std::cmp::Reverse(h.mount_point.len()),
            )
        })
        .map(|h| mountinfo::path_join(&h.mount_point, mountinfo::path_rest(root, &h.root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(line: &str) -> Mount {
        mountinfo::parse_line(line.as_bytes()).unwrap()
    }

    #[test]
    fn host_paths_map_through_the_host_mount_table() {
        let host = vec![
            m("22 1 254:0 / / rw - ext4 /dev/vda rw"),
            m("30 22 254:0 /srv/kube /var/lib/kubelet rw - ext4 /dev/vda rw"),
            m("31 22 0:40 / /tmp rw - tmpfs tmpfs rw"),
        ];
        let bind = m("905 880 254:0 /data/x.txt//deleted /data.txt ro - ext4 /dev/vda rw");
        assert_eq!(host_path_of(&bind, &host, None).unwrap(), b"/data/x.txt");
        let t = m("906 880 0:40 /a/b /b rw - tmpfs tmpfs rw");
        assert_eq!(host_path_of(&t, &host, None).unwrap(), b"/tmp/a/b");
        let other = m("907 880 0:99 /a /a rw - tmpfs tmpfs rw");
        assert_eq!(host_path_of(&other, &host, None), None);
        // Without the whole-filesystem mount, the deepest containing root wins.
        let host2 = vec![host[1].clone()];
        let k = m("908 880 254:0 /srv/kube/pods/u/volumes/v /v rw - ext4 /dev/vda rw");
        assert_eq!(
            host_path_of(&k, &host2, None).unwrap(),
            b"/var/lib/kubelet/pods/u/volumes/v"
        );
        assert_eq!(host_path_of(&k, &host2, Some(30)), None);
    }
}
