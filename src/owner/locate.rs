//! Locating an owner from any target: a pid, a container id (full or a unique prefix), a host path, or
//! `DEV:INODE` (`md1:211566352`, `254:0:1234`): what is known about its owner and, for a path, which containers
//! see it and how. `wonk who` prints it; checks and the kernel-log resolver use it to name the pod behind a
//! directory, an inode or a device.

use super::{cgroup, Attributor, Owner, PrefixMatch};
use crate::host::mountinfo::{self, Mount};
use crate::host::procfs;
use crate::host::resolve::{self, DevNum, Identity};
use crate::host::BlindSpot;
use crate::host::{bytes_path, display_bytes, Host};
use anyhow::{bail, Context as _};
use serde::Serialize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Everything `who` found.
#[derive(Debug, Serialize)]
pub struct Who {
    pub target: String,
    /// `pid`, `container`, `path` or `inode`.
    pub kind: &'static str,
    pub owner: Option<Owner>,
    pub process: Option<ProcessInfo>,
    pub path: Option<PathInfo>,
    /// Live processes of a container target.
    pub pids: Vec<u32>,
    /// Containers that see a path target, and how.
    pub seen_by: Vec<Sighting>,
    pub notes: Vec<String>,
    /// What attribution could not see or trust (containerd's state, bundles).
    pub blind_spots: Vec<BlindSpot>,
}

#[derive(Debug, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    pub state: char,
    pub mount_namespace: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PathInfo {
    pub path: String,
    pub device: DevNum,
    pub inode: u64,
    pub links: u32,
    pub size: u64,
    /// How a `DEV:INODE` target was turned into a path: `open_by_handle_at` or `search`.
    pub resolved_by: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Sighting {
    /// `overlay upperdir`, `overlay lowerdir`, `bind mount`, `kubelet pod volume`, ...
    pub how: String,
    /// Where the container sees the path, when it sees it through a mount.
    pub path_in_container: Option<String>,
    pub owner: Option<Owner>,
    pub pid: Option<u32>,
}

/// Runs `who` for one target.
pub fn who(owners: &Attributor, target: &str) -> anyhow::Result<Who> {
    let mut w = investigate(owners, target)?;
    w.blind_spots = owners.blind_spots().to_vec();
    Ok(w)
}

fn investigate(owners: &Attributor, target: &str) -> anyhow::Result<Who> {
    let host = owners.host();
    let mut w = Who {
        target: target.to_string(),
        kind: "path",
        owner: None,
        process: None,
        path: None,
        pids: Vec::new(),
        seen_by: Vec::new(),
        notes: Vec::new(),
        blind_spots: Vec::new(),
    };
    if target.is_empty() {
        bail!("empty TARGET: give a pid, a container id, a host path or DEV:INODE");
    }
    if target.starts_with('/') {
        if let Err(e) = path_target(owners, target.as_bytes(), None, &mut w) {
            // `/dev/md1:211566352` is a device and an inode written as a path.
            if let Some((name, ino)) = parse_dev_inode(target)
                .and_then(|(dev, ino)| Some((dev.strip_prefix("/dev/")?, ino)))
            {
                bail!("{e:#}; for inode {ino} of device {name}, give {name}:{ino}");
            }
            return Err(e);
        }
        return Ok(w);
    }
    if let Some((dev, ino)) = parse_dev_inode(target) {
        w.kind = "inode";
        let (num, name) = (resolve_dev(host, dev)?, dev_name(dev));
        let (path, method, id) = inode_to_path(owners, num, name, ino)?;
        path_target(owners, &path, Some(id), &mut w)?;
        if let Some(p) = &mut w.path {
            p.resolved_by = Some(method);
        }
        return Ok(w);
    }
    if target.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(pid) = target.parse::<u32>() {
            if host.proc_pid(pid).exists() {
                return pid_target(owners, pid, w);
            }
        }
    }
    if target.len() >= 3 && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        let live = live_container_ids(owners);
        match owners.container_by_prefix(
            target,
            &live.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ) {
            PrefixMatch::One(id) => {
                w.kind = "container";
                let mut owner = owners.owner_of_container(&id);
                w.pids = live
                    .iter()
                    .filter(|(cid, _)| *cid == id)
                    .map(|(_, pid)| *pid)
                    .collect();
                if let Some(&pid) = w.pids.first() {
                    if let Ok(o) = owners.owner_of_pid(pid) {
                        owner = o;
                        owner.pid = None;
                    }
                } else {
                    w.notes
                        .push("no live process of this container was found".into());
                }
                w.owner = Some(owner);
                return Ok(w);
            }
            PrefixMatch::Ambiguous(ids) => {
                bail!(
                    "container id prefix {target:?} is ambiguous: it matches {}",
                    ids.join(", ")
                )
            }
            PrefixMatch::None => {}
        }
    }
    bail!(
        "{target:?} is not a live pid, a known container id prefix, an absolute path or DEV:INODE \
         (for example md1:211566352 or 254:0:1234)"
    )
}

fn pid_target(owners: &Attributor, pid: u32, mut w: Who) -> anyhow::Result<Who> {
    let host = owners.host();
    w.kind = "pid";
    let st = procfs::stat(host, pid).with_context(|| format!("reading process {pid}"))?;
    w.process = Some(ProcessInfo {
        pid,
        comm: st.comm,
        ppid: st.ppid,
        state: st.state,
        mount_namespace: procfs::mnt_ns(host, pid).ok(),
    });
    let owner = owners
        .owner_of_pid(pid)
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    if owner.is_empty() {
        w.notes
            .push("this process is not in a pod or container cgroup".into());
    }
    w.owner = Some(owner);
    Ok(w)
}

/// `(container id, pid)` for every process whose cgroup names a container.
fn live_container_ids(owners: &Attributor) -> Vec<(String, u32)> {
    let host = owners.host();
    let mut out = Vec::new();
    for pid in procfs::pids(host).unwrap_or_default() {
        let Ok(data) = procfs::cgroup(host, pid) else {
            continue;
        };
        if let Some(id) = cgroup::parse_proc_cgroup(&data).and_then(|r| r.container_id) {
            out.push((id, pid));
        }
    }
    out
}

/// What is known about a host path. `id`: its identity when the caller has it already (an inode target).
fn path_target(
    owners: &Attributor,
    path: &[u8],
    id: Option<Identity>,
    w: &mut Who,
) -> anyhow::Result<()> {
    let host = owners.host();
    let id = match id {
        Some(id) => id,
        None => resolve::stat_in_root(host.root_dir(), path, true)
            .with_context(|| format!("cannot stat {} on the host", display_bytes(path)))?,
    };
    w.path = Some(PathInfo {
        path: display_bytes(path),
        device: id.dev,
        inode: id.ino,
        links: id.nlink,
        size: id.size,
        resolved_by: None,
    });
    if let Some((owner, pp)) = owners.owner_of_kubelet_path(path) {
        let how = match (&pp.plugin, &pp.volume) {
            (Some(p), Some(v)) => format!("kubelet pod volume {p}/{v}"),
            _ => format!("kubelet pod directory ({})", pp.kind),
        };
        w.owner = Some(owner.clone());
        w.seen_by.push(Sighting {
            how,
            path_in_container: None,
            owner: Some(owner),
            pid: None,
        });
    }
    let host_mounts = owners.host_mounts().unwrap_or_else(|e| {
        w.notes.push(format!(
            "the host's mount table is unreadable ({e}); bind mounts are not matched"
        ));
        &[]
    });
    let fs_rel = mountinfo::fs_path(path, host_mounts, (id.dev.major, id.dev.minor));
    let host_ns = owners.host_mnt_ns();
    let namespaces = owners
        .mount_tables()
        .map_err(|e| anyhow::anyhow!("listing processes: {e}"))?;
    for ns in namespaces {
        let is_host = Some(ns.inode) == host_ns;
        let (pid, mounts) = (ns.pid, &*ns.mounts);
        let owner = || {
            if is_host {
                None
            } else {
                owners.owner_of_pid(pid).ok().filter(|o| !o.is_empty())
            }
        };
        let own_root = root_mount(mounts) != root_mount(host_mounts);
        for m in mounts {
            if m.fs_type == "overlay" {
                // A container can mount an overlay of its own, with an upperdir written as it sees paths; only
                // the host's mount of the same overlay says where the layers are.
                let layers = if is_host {
                    Some(m)
                } else {
                    mountinfo::host_overlay(m, host_mounts)
                };
                if let Some(s) = layers.and_then(|layers| {
                    overlay_sighting(owners, layers, &m.mount_point, path, is_host)
                }) {
                    w.seen_by.push(Sighting {
                        owner: s.owner.or_else(owner),
                        pid: (!is_host).then_some(pid),
                        ..s
                    });
                }
            } else if !is_host {
                // A mount of a filesystem's root (`/` in mountinfo) counts only in a namespace with a root of its
                // own (a container's, after pivot_root): there it is a hostPath or volume that is a whole
                // filesystem (a loop or block device, a local or CSI volume). A namespace that shares the host's
                // root was cloned from it and holds such a mount of every filesystem.
                if let Some(rel) = fs_rel.as_ref().filter(|rel| {
                    m.dev() == (id.dev.major, id.dev.minor)
                        && mountinfo::path_under(rel, m.root_path())
                        && (m.root != b"/" || own_root)
                }) {
                    let inside = mountinfo::path_join(
                        &m.mount_point,
                        mountinfo::path_rest(rel, m.root_path()),
                    );
                    w.seen_by.push(Sighting {
                        how: format!("bind mount of {}", display_bytes(m.root_path())),
                        path_in_container: Some(display_bytes(&inside)),
                        owner: owner(),
                        pid: Some(pid),
                    });
                }
            }
        }
    }
    if w.owner.is_none() {
        w.owner = w.seen_by.iter().find_map(|s| s.owner.clone());
    }
    Ok(())
}

/// The filesystem and directory a mount table shows at `/` (the last mount there is the visible one).
fn root_mount(mounts: &[Mount]) -> Option<((u32, u32), &[u8])> {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == b"/")
        .map(|m| (m.dev(), m.root.as_slice()))
}

/// Whether `path` lies in the upper or lower directories of `m`, an overlay in the host's mount table, seen at
/// `mount_point` (in the host's namespace, or a container's).
fn overlay_sighting(
    owners: &Attributor,
    m: &Mount,
    mount_point: &[u8],
    path: &[u8],
    is_host: bool,
) -> Option<Sighting> {
    let mut layers: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(u) = m.super_option("upperdir") {
        layers.push((
            "overlay upperdir (the container's writable layer)",
            mountinfo::unescape_overlay(u),
        ));
    }
    if let Some(l) = m.super_option("lowerdir") {
        for part in split_lowerdir(l) {
            layers.push(("overlay lowerdir (an image layer)", part));
        }
    }
    let (how, dir) = layers
        .into_iter()
        .find(|(_, d)| mountinfo::path_under(path, d))?;
    let inside = mountinfo::path_join(mount_point, mountinfo::path_rest(path, &dir));
    // In the host's namespace, a container's root is mounted at <bundle>/rootfs.
    let owner = if is_host {
        let mp = bytes_path(mount_point);
        let id = mp
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        let known = mp.file_name() == Some("rootfs".as_ref())
            && id.as_deref().is_some_and(|i| owners.bundle(i).is_some());
        if !known {
            return None;
        }
        id.map(|i| owners.owner_of_container(&i))
    } else {
        None
    };
    Some(Sighting {
        how: how.to_string(),
        path_in_container: Some(display_bytes(&inside)),
        owner,
        pid: None,
    })
}

fn split_lowerdir(l: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < l.len() {
        match l[i] {
            b'\\' if i + 1 < l.len() => {
                cur.push(l[i + 1]);
                i += 2;
                continue;
            }
            b':' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
        i += 1;
    }
    parts.push(cur);
    parts.retain(|p| !p.is_empty());
    parts
}

/// `md1:211566352` -> ("md1", 211566352); `254:0:1234` -> ("254:0", 1234).
pub fn parse_dev_inode(s: &str) -> Option<(&str, u64)> {
    let (dev, ino) = s.rsplit_once(':')?;
    let ino = ino.parse().ok()?;
    (!dev.is_empty()).then_some((dev, ino))
}

/// A device given as `MAJ:MIN` or a kernel name (`md1`, `vda`, `loop0`, `dm-0`).
pub fn resolve_dev(host: &Host, dev: &str) -> anyhow::Result<DevNum> {
    if let Some((a, b)) = dev.split_once(':') {
        if let (Ok(major), Ok(minor)) = (a.parse(), b.parse()) {
            return Ok(DevNum { major, minor });
        }
    }
    if dev.contains('/') || dev.starts_with('.') {
        bail!("device {dev:?} is neither MAJ:MIN nor a kernel device name such as md1 or vda");
    }
    let p = host.path(format!("/sys/class/block/{dev}/dev"));
    let text = crate::host::read_bounded(&p, 64)
        .with_context(|| format!("no block device {dev:?} ({} unreadable)", p.display()))?;
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.trim().split_once(':'))
        .and_then(|(a, b)| {
            Some(DevNum {
                major: a.parse().ok()?,
                minor: b.parse().ok()?,
            })
        })
        .with_context(|| format!("{}: unexpected content, not MAJ:MIN", p.display()))
}

/// The kernel name in a device given to [`resolve_dev`] as one (`md1`), rather than as `MAJ:MIN`.
pub fn dev_name(dev: &str) -> Option<&str> {
    (!dev.contains(':')).then_some(dev)
}

/// Turns `(device, inode)` into a host path: by file handle (instant, needs CAP_DAC_READ_SEARCH), else by a
/// bounded walk of the filesystem. Returns the path, the method, and the identity the path was checked against.
/// `name`: the device's kernel name, when the caller has it (it saves looking it up in sysfs).
pub fn inode_to_path(
    owners: &Attributor,
    dev: DevNum,
    name: Option<&str>,
    ino: u64,
) -> anyhow::Result<(Vec<u8>, &'static str, Identity)> {
    let host = owners.host();
    let mounts = owners
        .host_mounts()
        .map_err(|e| anyhow::anyhow!("reading the host's mount table: {e}"))?;
    let m = mounts
        .iter()
        .filter(|m| m.dev() == (dev.major, dev.minor) && !m.root_deleted())
        .max_by_key(|m| (m.root == b"/", std::cmp::Reverse(m.mount_point.len())))
        .with_context(|| format!("device {dev} is not mounted on the host"))?;
    let mount_dir = resolve::open_root(&host.path(bytes_path(&m.mount_point)))
        .with_context(|| format!("opening the mount point {}", display_bytes(&m.mount_point)))?;
    let verify = |p: Vec<u8>| {
        resolve::stat_in_root(host.root_dir(), &p, false)
            .ok()
            .filter(|id| id.dev == dev && id.ino == ino)
            .map(|id| (p, id))
    };
    // From a cold cache the kernel reconnects a directory to the root one parent and one read at a time; on ext4
    // wonk reads those blocks first, many at once (ext4::ancestors). A device wonk cannot read is left to the kernel.
    let device = match name {
        Some(n) => crate::ext4::read::open_named(host, dev, n.to_string()),
        None => crate::ext4::read::open_device(host, dev),
    };
    if let Ok(device) = device {
        if let Ok(sb) = device.superblock() {
            crate::ext4::ancestors::warm(&device, &sb, ino);
        }
    }
    if let Some((p, id)) = by_handle(host, &mount_dir, ino).and_then(verify) {
        return Ok((p, "open_by_handle_at", id));
    }
    let found = search_inode(&host.path(bytes_path(&m.mount_point)), dev, ino, 5_000_000)?;
    let found = found
        .and_then(|p| host.to_node_path(&p))
        .map(|p| p.into_os_string().into_encoded_bytes());
    match found.and_then(verify) {
        Some((p, id)) => Ok((p, "search", id)),
        None => bail!("inode {ino} on {dev} has no path under {} (deleted, moved, or not reachable from the host's mounts)", display_bytes(&m.mount_point)),
    }
}

/// open_by_handle_at with a FILEID_INO32_GEN handle and generation 0; ext4 then skips the generation check.
fn by_handle(host: &Host, mount_dir: &std::fs::File, ino: u64) -> Option<Vec<u8>> {
    let ino32 = u32::try_from(ino).ok()?;
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    handle[4..8].copy_from_slice(&1i32.to_ne_bytes());
    handle[8..12].copy_from_slice(&ino32.to_ne_bytes());
    // SAFETY: the handle buffer is a valid struct file_handle with 8 bytes of f_handle; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_dir.as_raw_fd(),
            handle.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let seen = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    host.to_node_path(&seen)
        .map(|p| p.into_os_string().into_encoded_bytes())
}

/// A depth-first walk of the filesystem mounted at `top` (which must be device `dev`) that stays on it and stops
/// after `budget` entries. `None` when every directory was read and none holds the inode.
fn search_inode(top: &Path, dev: DevNum, ino: u64, budget: u64) -> anyhow::Result<Option<PathBuf>> {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let top_md = std::fs::symlink_metadata(top)
        .with_context(|| format!("searching for inode {ino}: {}", top.display()))?;
    let devno = top_md.dev();
    let top_dev = DevNum::from_dev_t(devno);
    if top_dev != dev {
        bail!(
            "searching for inode {ino} of {dev}: {} is on {top_dev} (mounted over?)",
            top.display()
        );
    }
    if top_md.ino() == ino {
        return Ok(Some(top.to_path_buf()));
    }
    let mut stack = vec![top.to_path_buf()];
    let (mut seen, mut unreadable) = (0u64, Vec::new());
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if crate::host::vanished(&e) => continue,
            Err(e) => {
                unreadable.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > budget {
                bail!(
                    "inode {ino} not found in the first {budget} entries under {}",
                    top.display()
                );
            }
            if e.ino() == ino && e.metadata().is_ok_and(|m| m.dev() == devno) {
                return Ok(Some(e.path()));
            }
            if e.file_type().is_ok_and(|t| t.is_dir())
                && e.metadata().is_ok_and(|m| m.dev() == devno)
            {
                stack.push(e.path());
            }
        }
    }
    if let Some(first) = unreadable.first() {
        bail!(
            "inode {ino} not found under {}, where {} directories could not be read (first: {first})",
            top.display(),
            unreadable.len()
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_finds_an_inode_within_its_budget() {
        use std::os::unix::fs::MetadataExt;
        let top = std::env::temp_dir().join(format!("wonk-search-{}", std::process::id()));
        let deep = top.join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(top.join("a/f"), b"").unwrap();
        let md = std::fs::metadata(&top).unwrap();
        let dev = DevNum::from_dev_t(md.dev());
        let ino = std::fs::metadata(&deep).unwrap().ino();
        let found = search_inode(&top, dev, ino, 100);
        let over_budget = search_inode(&top, dev, ino, 2);
        let absent = search_inode(&top, dev, u64::MAX, 100);
        let other = DevNum {
            major: dev.major,
            minor: dev.minor.wrapping_add(1),
        };
        let wrong_dev = search_inode(&top, other, ino, 100);
        std::fs::remove_dir_all(&top).unwrap();
        assert_eq!(found.unwrap(), Some(deep));
        assert!(over_budget
            .unwrap_err()
            .to_string()
            .contains("first 2 entries"));
        assert_eq!(absent.unwrap(), None);
        assert!(wrong_dev.unwrap_err().to_string().contains("mounted over"));
    }

    #[test]
    fn dev_inode_targets() {
        assert_eq!(parse_dev_inode("md1:211566352"), Some(("md1", 211566352)));
        assert_eq!(parse_dev_inode("254:0:1234"), Some(("254:0", 1234)));
        assert_eq!(parse_dev_inode("md1:"), None);
        assert_eq!(parse_dev_inode(":5"), None);
        assert_eq!(parse_dev_inode("abc"), None);
    }

    #[test]
    fn overlay_option_paths() {
        assert_eq!(
            split_lowerdir(b"/a/1:/b\\:c/2"),
            vec![b"/a/1".to_vec(), b"/b:c/2".to_vec()]
        );
        assert_eq!(mountinfo::unescape_overlay(b"/x\\,y"), b"/x,y");
    }
}
