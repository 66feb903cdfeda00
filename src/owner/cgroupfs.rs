//! The node's cgroup hierarchies as kubelet lays pods out in them: where each hierarchy is mounted (from the
//! host's mount table), the pod and container cgroups under `<cgroup root>/kubepods` (cgroupfs driver) or
//! `<cgroup root>/kubepods.slice` (systemd driver), and the small files the kernel keeps in each (`*.pressure`,
//! `cgroup.stat`, `pids.*`).
//!
//! A pod can create cgroups below its own container's (with a writable cgroupfs) and name them anything: the walk
//! starts only at kubelet's place and never goes below a container's cgroup, so a pod cannot add pods.

use super::cgroup::{self, CgroupRef};
use crate::host::mountinfo::Mount;
use crate::host::{read_regular, vanished, BlindSpot, Host};
use std::io;
use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted, as node paths.
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    /// The cgroup v2 hierarchy, mounted whole.
    pub v2: Option<PathBuf>,
    /// Each cgroup v1 hierarchy mounted whole, with its controllers (`pids`, `memory`, `name=systemd`).
    pub v1: Vec<(Vec<String>, PathBuf)>,
}

impl Hierarchies {
    /// From the host's mount table. Only mounts of a hierarchy's root count: a bind of a subtree shows a part.
    pub fn of(mounts: &[Mount]) -> Hierarchies {
        let mut h = Hierarchies::default();
        for m in mounts.iter().filter(|m| m.root == b"/") {
            let at = crate::host::bytes_path(&m.mount_point).to_path_buf();
            match m.fs_type.as_str() {
                "cgroup2" if h.v2.is_none() => h.v2 = Some(at),
                "cgroup" => {
                    let controllers = String::from_utf8_lossy(&m.super_options)
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                        .map(str::to_string)
                        .collect();
                    if !h.v1.iter().any(|(_, p)| *p == at) {
                        h.v1.push((controllers, at));
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// The v1 hierarchy that has `controller`.
    pub fn v1_with(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == controller))
            .map(|(_, p)| p.as_path())
    }
}

/// One pod's cgroup and its containers', as paths inside the hierarchy (`/kubepods/burstable/pod<uid>`).
#[derive(Debug, Clone)]
pub struct PodCgroup {
    pub cgroup: CgroupRef,
    pub containers: Vec<CgroupRef>,
}

/// At most this many pods are read from one hierarchy, and this many entries from one directory.
pub const MAX_PODS: usize = 4096;
const MAX_ENTRIES: usize = 8192;
/// Containers per pod.
const MAX_CONTAINERS: usize = 64;

/// The pod cgroups under `<cgroup_root>/kubepods[.slice]` of the hierarchy mounted at `mount` (a node path).
/// `cgroup_root` is kubelet's `--cgroup-root` (`/` unless changed). What could not be read is a blind spot.
pub fn pods(host: &Host, mount: &Path, cgroup_root: &str) -> (Vec<PodCgroup>, Vec<BlindSpot>) {
    let mut pods = Vec::new();
    let mut blind = Vec::new();
    let root = cgroup_root.trim_matches('/');
    for top in ["kubepods", "kubepods.slice"] {
        let rel = if root.is_empty() {
            format!("/{top}")
        } else {
            format!("/{root}/{top}")
        };
        walk(host, mount, &rel, 0, &mut pods, &mut blind);
    }
    (pods, blind)
}

/// Subdirectories of a cgroup, as names; a directory that vanished has none.
fn children(host: &Host, mount: &Path, rel: &str, blind: &mut Vec<BlindSpot>) -> Vec<String> {
    let dir = host.path(mount).join(rel.trim_start_matches('/'));
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if vanished(&e) => return Vec::new(),
        Err(e) => {
            blind.push(BlindSpot::new(
                "cgroups",
                dir.display().to_string(),
                e.to_string(),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        // d_type: a symlink or a file is never taken for a cgroup.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if out.len() >= MAX_ENTRIES {
            blind.push(BlindSpot::new(
                "cgroups",
                dir.display().to_string(),
                format!("more than {MAX_ENTRIES} cgroups in one directory; the rest were not read"),
            ));
            break;
        }
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    out
}

fn walk(
    host: &Host,
    mount: &Path,
    rel: &str,
    depth: usize,
    pods: &mut Vec<PodCgroup>,
    blind: &mut Vec<BlindSpot>,
) {
    // kubepods, then a QoS level, then pods: a pod is at most two levels below.
    if depth > 2 || pods.len() >= MAX_PODS {
        return;
    }
    for name in children(host, mount, rel, blind) {
        let path = format!("{rel}/{name}");
        let r = cgroup::parse_path(&path);
        match (&r.pod_uid, &r.container_id) {
            (Some(_), None) => {
                if pods.len() >= MAX_PODS {
                    blind.push(BlindSpot::new(
                        "cgroups",
                        host.path(mount)
                            .join(rel.trim_start_matches('/'))
                            .display()
                            .to_string(),
                        format!("more than {MAX_PODS} pod cgroups; the rest were not read"),
                    ));
                    return;
                }
                let containers = children(host, mount, &path, blind)
                    .into_iter()
                    .map(|c| cgroup::parse_path(&format!("{path}/{c}")))
                    .filter(|c| c.container_id.is_some())
                    .take(MAX_CONTAINERS)
                    .collect();
                pods.push(PodCgroup {
                    cgroup: r,
                    containers,
                });
            }
            (None, None) => walk(host, mount, &path, depth + 1, pods, blind),
            _ => {}
        }
    }
}

/// The node path of a cgroup file: `mount` + the cgroup's path + `file`.
pub fn file(host: &Host, mount: &Path, cgroup: &str, name: &str) -> PathBuf {
    host.path(mount)
        .join(cgroup.trim_start_matches('/'))
        .join(name)
}

/// Reads a small cgroup file (a regular file, never a FIFO or a device, at most 64 KiB).
pub fn read(path: &Path) -> io::Result<String> {
    let (b, _) = read_regular(path, 64 << 10)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The value of `key` in a flat keyed file (`cgroup.stat`: `nr_dying_descendants 3`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PsiLine {
    /// Percent of time stalled over the last 10, 60 and 300 seconds, as the kernel averages it.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds stalled since the cgroup was made (or boot).
    pub total_us: u64,
}

/// A pressure file (`io.pressure`, `/proc/pressure/io`): `some` (at least one task stalled) and `full` (all
/// non-idle tasks stalled at once; the node's `cpu` has it only from Linux 5.13).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// Parses a pressure file; `None` when its `some` line is missing or malformed.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let line = |want: &str| -> Option<PsiLine> {
        let l = text.lines().find(|l| l.split(' ').next() == Some(want))?;
        let mut v = [None::<f64>; 3];
        let mut total = None;
        for kv in l.split(' ').skip(1) {
            let (k, val) = kv.split_once('=')?;
            match k {
                "avg10" => v[0] = val.parse().ok().filter(|x: &f64| x.is_finite()),
                "avg60" => v[1] = val.parse().ok().filter(|x: &f64| x.is_finite()),
                "avg300" => v[2] = val.parse().ok().filter(|x: &f64| x.is_finite()),
                "total" => total = val.parse().ok(),
                _ => {}
            }
        }
        Some(PsiLine {
            avg10: v[0]?,
            avg60: v[1]?,
            avg300: v[2]?,
            total_us: total?,
        })
    };
    Some(Psi {
        some: line("some")?,
        full: line("full"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_lines() {
        let p = parse_psi(
            "some avg10=4.00 avg60=5.00 avg300=2.34 total=36765760\nfull avg10=0.00 avg60=0.07 avg300=0.08 total=8131951\n",
        )
        .unwrap();
        assert_eq!(p.some.avg60, 5.0);
        assert_eq!(p.some.total_us, 36_765_760);
        assert_eq!(p.full.unwrap().total_us, 8_131_951);
        let cpu = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert!(cpu.full.is_none());
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=1").is_none());
        assert!(parse_psi("").is_none());
        assert!(parse_psi("some avg10=1 avg60=2 avg300=3").is_none());
    }

    #[test]
    fn keyed_values() {
        let t = "nr_descendants 7\nnr_dying_descendants 3\n";
        assert_eq!(keyed(t, "nr_dying_descendants"), Some(3));
        assert_eq!(keyed(t, "nr_dying"), None);
    }

    #[test]
    fn hierarchies_from_mounts() {
        let (m, _) = crate::host::mountinfo::parse(
            b"30 24 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
              38 24 0:34 / /sys/fs/cgroup/pids rw shared:19 - cgroup cgroup rw,pids\n\
              39 24 0:35 /sub /mnt/x rw shared:19 - cgroup cgroup rw,memory\n",
        );
        let h = Hierarchies::of(&m);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(h.v1_with("pids"), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(h.v1_with("memory"), None);
    }
}
