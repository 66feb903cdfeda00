//! kubelet's pod directories: `<kubelet root>/pods/<uid>/...`, and the atomic writer's layout of ConfigMap,
//! Secret, downwardAPI and projected volumes.
//!
//! The atomic writer keeps each version of a volume in a timestamped directory `..2026_11_27_16_38_56.123456789`,
//! points the symlink `..data` at the current one, and points each key's symlink at `..data/<key>`. An update
//! writes a new timestamped directory, swaps `..data`, and deletes the old directory.

use crate::host::resolve::{self, Identity, NoFollow};
use serde::Serialize;

/// What a path under kubelet's pod directory is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodPath {
    pub pod_uid: String,
    /// `volume`, `volume-subpath`, `container-dir`, `etc-hosts`, `plugins` or `pod-dir`.
    pub kind: &'static str,
    /// The volume plugin directory, for example `kubernetes.io~configmap`.
    pub plugin: Option<String>,
    pub volume: Option<String>,
    pub container: Option<String>,
}

/// Parses `path` if it lies under `<kubelet_root>/pods/<uid>`.
pub fn parse_pod_path(kubelet_root: &[u8], path: &[u8]) -> Option<PodPath> {
    let root = kubelet_root.strip_suffix(b"/").unwrap_or(kubelet_root);
    let rest = path.strip_prefix(root)?.strip_prefix(b"/pods/")?;
    let comps: Vec<String> = rest
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let uid = comps.first()?.clone();
    if uid.is_empty() || uid.len() > 64 || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return None;
    }
    let get = |i: usize| comps.get(i).cloned();
    let mut pp = PodPath {
        pod_uid: uid,
        kind: "pod-dir",
        plugin: None,
        volume: None,
        container: None,
    };
    match comps.get(1).map(String::as_str) {
        Some("volumes") => {
            pp.kind = "volume";
            pp.plugin = get(2);
            pp.volume = get(3);
        }
        Some("volume-subpaths") => {
            pp.kind = "volume-subpath";
            pp.volume = get(2);
            pp.container = get(3);
        }
        Some("containers") => {
            pp.kind = "container-dir";
            pp.container = get(2);
        }
        Some("etc-hosts") => pp.kind = "etc-hosts",
        Some("plugins") => pp.kind = "plugins",
        _ => {}
    }
    Some(pp)
}

/// Whether a path component is one of the atomic writer's timestamped directories.
pub fn is_atomic_writer_dir(comp: &[u8]) -> bool {
    // ..YYYY_MM_DD_HH_MM_SS.<digits>
    let Some(rest) = comp.strip_prefix(b"..") else {
        return false;
    };
    if rest.len() < 21 {
        return false;
    }
    let (stamp, frac) = rest.split_at(19);
    let shape_ok = stamp.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 | 10 | 13 | 16 => c == b'_',
        _ => c.is_ascii_digit(),
    });
    shape_ok
        && frac.first() == Some(&b'.')
        && frac.len() > 1
        && frac[1..].iter().all(u8::is_ascii_digit)
}

/// For a path inside an atomic writer's timestamped directory, the path of the same key in the current
/// version (through `..data`).
pub fn atomic_writer_current(path: &[u8]) -> Option<Vec<u8>> {
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let i = comps.iter().rposition(|c| is_atomic_writer_dir(c))?;
    let mut out = comps[..i].join(&b'/');
    out.extend_from_slice(b"/..data");
    for c in &comps[i + 1..] {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    Some(out)
}

/// What the current version of an atomic-writer key holds: `dir/..data/rest` for `current` as
/// [`atomic_writer_current`] makes it. `..data` is read only as the atomic writer makes it, a relative symlink to
/// a sibling timestamped directory; anything else (`..data -> /etc`, `..data -> ../../x`) is reported as what it
/// is and never followed, and nothing on the way is followed either.
pub fn atomic_writer_current_now(
    host_root: &impl std::os::fd::AsFd,
    current: &[u8],
) -> std::io::Result<AtomicWriterNow> {
    let (dir, rest) = split_at_data(current).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no ..data component")
    })?;
    let data = [dir, b"/..data"].concat();
    let target = match resolve::stat_no_follow(host_root, &data)? {
        NoFollow::Symlink { at, target, .. } if at == data => target,
        NoFollow::Symlink { at, target, .. } => return Ok(AtomicWriterNow::Symlink { at, target }),
        NoFollow::Inode(_) => return Ok(AtomicWriterNow::NotAtomicWriter(data, None)),
    };
    if !is_atomic_writer_dir(&target) {
        return Ok(AtomicWriterNow::NotAtomicWriter(data, Some(target)));
    }
    let path = [dir, b"/", &target, rest].concat();
    Ok(match resolve::stat_no_follow(host_root, &path)? {
        NoFollow::Inode(id) => AtomicWriterNow::Inode(id),
        NoFollow::Symlink { at, target, .. } => AtomicWriterNow::Symlink { at, target },
    })
}

/// What [`atomic_writer_current_now`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtomicWriterNow {
    /// The key's inode in the timestamped directory `..data` names.
    Inode(Identity),
    /// `..data` (the path) is not a symlink to a sibling timestamped directory: it points at the target shown,
    /// or (`None`) it is no symlink at all.
    NotAtomicWriter(Vec<u8>, Option<Vec<u8>>),
    /// A component on the way (`at`) is a symlink to `target`, not followed.
    Symlink { at: Vec<u8>, target: Vec<u8> },
}

/// `(dir, rest)` of `dir/..data` + `rest` (`rest` empty or starting with `/`), at the last `..data` component.
fn split_at_data(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = path.len();
    while let Some(j) = path[..i].windows(7).rposition(|w| w == b"/..data") {
        let end = j + 7;
        if end == path.len() || path[end] == b'/' {
            return Some((&path[..j], &path[end..]));
        }
        i = j + 6;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths() {
        let p = parse_pod_path(
            b"/var/lib/kubelet",
            b"/var/lib/kubelet/pods/0f8a8c8e-5a44/volumes/kubernetes.io~empty-dir/cache/a/b",
        )
        .unwrap();
        assert_eq!(p.pod_uid, "0f8a8c8e-5a44");
        assert_eq!(p.kind, "volume");
        assert_eq!(p.plugin.as_deref(), Some("kubernetes.io~empty-dir"));
        assert_eq!(p.volume.as_deref(), Some("cache"));
        let p = parse_pod_path(
            b"/var/lib/kubelet/",
            b"/var/lib/kubelet/pods/abc/volume-subpaths/cfg/app/0",
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.volume.as_deref(), p.container.as_deref()),
            ("volume-subpath", Some("cfg"), Some("app"))
        );
        assert!(parse_pod_path(b"/var/lib/kubelet", b"/var/lib/kubeletx/pods/abc").is_none());
        assert!(parse_pod_path(b"/var/lib/kubelet", b"/var/lib/kubelet/pods/../etc").is_none());
        assert!(parse_pod_path(b"/var/lib/kubelet", b"/var/lib/kubelet/pods/").is_none());
    }

    #[test]
    fn atomic_writer_paths() {
        assert!(is_atomic_writer_dir(b"..2026_11_27_16_38_56.123456789"));
        assert!(!is_atomic_writer_dir(b"..data"));
        assert!(!is_atomic_writer_dir(b"..2026_11_27_16_38_56."));
        assert!(!is_atomic_writer_dir(b"..2026-11-27_16_38_56.1"));
        assert_eq!(
            atomic_writer_current(b"/v/cfg/..2026_11_27_16_38_56.123456789/key").unwrap(),
            b"/v/cfg/..data/key"
        );
        assert_eq!(atomic_writer_current(b"/v/cfg/key"), None);
        assert_eq!(
            split_at_data(b"/v/..data/cfg/..data/a/b"),
            Some((&b"/v/..data/cfg"[..], &b"/a/b"[..]))
        );
        assert_eq!(
            split_at_data(b"/v/cfg/..data"),
            Some((&b"/v/cfg"[..], &b""[..]))
        );
        assert_eq!(split_at_data(b"/v/cfg/..datax/a"), None);
    }
}
