//! What a cgroup path says about a process: pod uid, QoS class, container id and runtime.
//!
//! Recognised layouts, for cgroup v1 and v2 alike:
//! - cgroupfs driver: `/kubepods[/burstable|/besteffort]/pod<uid>/<container id>`;
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/
//!   cri-containerd-<id>.scope`;
//! - the runtime scopes `cri-containerd-<id>.scope`, `crio-<id>.scope`, `crio-conmon-<id>.scope` and
//!   `docker-<id>.scope`, wherever they appear.
//!
//! Only what the path shows is returned; nothing is guessed.

use serde::Serialize;

/// Kubernetes QoS class, from the cgroup level the pod sits under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl std::fmt::Display for Qos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        })
    }
}

/// What a cgroup path says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupRef {
    /// The cgroup path the facts were read from.
    pub path: String,
    pub qos: Option<Qos>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// The runtime named by a scope prefix (`containerd`, `cri-o`, `docker`).
    pub runtime: Option<&'static str>,
}

/// Reads `/proc/PID/cgroup` content and picks the most telling line: one under kubepods with a container id,
/// else any line naming a container, else the v2 (`0::`) line, else the first.
pub fn parse_proc_cgroup(data: &[u8]) -> Option<CgroupRef> {
    let text = String::from_utf8_lossy(data);
    let mut best: Option<(u8, CgroupRef)> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let r = parse_path(path);
        let rank = match (r.pod_uid.is_some(), r.container_id.is_some()) {
            (true, true) => 4,
            (true, false) => 3,
            (false, true) => 2,
            _ if controllers.is_empty() => 1,
            _ => 0,
        };
        if best.as_ref().map_or(true, |(b, _)| rank > *b) {
            best = Some((rank, r));
        }
    }
    best.map(|(_, r)| r)
}

/// Parses one cgroup path.
pub fn parse_path(path: &str) -> CgroupRef {
    let mut r = CgroupRef {
        path: path.to_string(),
        ..CgroupRef::default()
    };
    // The systemd driver's form in an OCI spec: `kubepods-burstable-pod<uid_>.slice:cri-containerd:<id>`.
    let expanded;
    let path = match path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, id] if !path.contains('/') && slice.ends_with(".slice") => {
            let qos_slice = match slice {
                s if s.starts_with("kubepods-burstable-") => "kubepods-burstable.slice/",
                s if s.starts_with("kubepods-besteffort-") => "kubepods-besteffort.slice/",
                _ => "",
            };
            expanded = format!("/kubepods.slice/{qos_slice}{slice}/{prefix}-{id}.scope");
            expanded.as_str()
        }
        _ => path,
    };
    // Read from inside a cgroup namespace, the path can start with `/../..`.
    let comps = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".." && *c != ".");
    // Below a container's own cgroup, the container may create cgroups and name them anything (another
    // container's id, `kubepods`, `burstable`): the first container id ends the walk, and below a pod only the
    // component directly under the pod's may be one.
    let mut in_kubepods = false;
    for c in comps {
        if r.pod_uid.is_some() {
            if let Some((id, runtime)) = container_component(c, true) {
                r.container_id = Some(id);
                r.runtime = runtime;
            }
            break;
        }
        match c {
            "kubepods" | "kubepods.slice" => {
                in_kubepods = true;
                continue;
            }
            "burstable" | "kubepods-burstable.slice" if in_kubepods => {
                r.qos = Some(Qos::Burstable);
                continue;
            }
            "besteffort" | "kubepods-besteffort.slice" if in_kubepods => {
                r.qos = Some(Qos::BestEffort);
                continue;
            }
            _ => {}
        }
        if in_kubepods {
            if let Some(uid) = pod_uid_component(c) {
                r.pod_uid = Some(uid);
                if r.qos.is_none() {
                    r.qos = Some(Qos::Guaranteed);
                }
                continue;
            }
        }
        if let Some((id, runtime)) = container_component(c, false) {
            r.container_id = Some(id);
            r.runtime = runtime;
            break;
        }
    }
    if r.pod_uid.is_none() {
        r.qos = None;
    }
    r
}

/// `pod<uid>` (cgroupfs) or `kubepods[-qos]-pod<uid_>.slice` (systemd).
fn pod_uid_component(c: &str) -> Option<String> {
    let raw = if let Some(s) = c.strip_suffix(".slice") {
        let i = s.rfind("-pod")?;
        s.get(i + 4..)?.replace('_', "-")
    } else {
        c.strip_prefix("pod")?.to_string()
    };
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(raw)
}

/// A container id, with the runtime its scope prefix names. A bare id is only accepted below a pod.
fn container_component(c: &str, below_pod: bool) -> Option<(String, Option<&'static str>)> {
    let base = c.strip_suffix(".scope").unwrap_or(c);
    let prefixes: [(&str, &'static str); 4] = [
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ];
    for (prefix, runtime) in prefixes {
        if let Some(id) = base.strip_prefix(prefix) {
            return is_container_id(id).then(|| (id.to_ascii_lowercase(), Some(runtime)));
        }
    }
    (below_pod && c == base && is_container_id(c)).then(|| (c.to_ascii_lowercase(), None))
}

/// A full container id: 64 hex digits. Shorter ids are never used as cgroup names by the runtimes.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "41b8343f32f8623c7d20942813b4a48c72cc0d34ae74aaaabbbbccccdddd0000";

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn cgroupfs_v1_burstable() {
        let r = parse_proc_cgroup(&fixture("cgroupfs-v1-burstable")).unwrap();
        assert_eq!(r.qos, Some(Qos::Burstable));
        assert_eq!(
            r.pod_uid.as_deref(),
            Some("0f8a8c8e-5a44-4c9b-9d3e-0a4b7f0e2d11")
        );
        assert_eq!(
            r.container_id.as_deref(),
            Some("7b3e5f0c1a2d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7")
        );
        assert_eq!(r.runtime, None);
    }

    #[test]
    fn systemd_v2_burstable_containerd() {
        let r = parse_proc_cgroup(&fixture("systemd-v2-burstable")).unwrap();
        assert_eq!(r.qos, Some(Qos::Burstable));
        assert_eq!(
            r.pod_uid.as_deref(),
            Some("834b7b00-d731-4186-803c-8c4a35a84627")
        );
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(r.runtime, Some("containerd"));
    }

    #[test]
    fn systemd_v1_guaranteed_crio() {
        let r = parse_proc_cgroup(&fixture("systemd-v1-guaranteed-crio")).unwrap();
        assert_eq!(r.qos, Some(Qos::Guaranteed));
        assert_eq!(
            r.pod_uid.as_deref(),
            Some("5e3c2a1b-0000-4111-8222-933344445555")
        );
        assert_eq!(r.runtime, Some("cri-o"));
    }

    #[test]
    fn cgroupfs_v2_besteffort_in_a_cgroup_namespace() {
        let r = parse_proc_cgroup(&fixture("cgroupfs-v2-besteffort-nsroot")).unwrap();
        assert_eq!(r.qos, Some(Qos::BestEffort));
        assert_eq!(
            r.pod_uid.as_deref(),
            Some("aa11bb22-cc33-dd44-ee55-ff6677889900")
        );
        assert!(r.container_id.is_some());
    }

    #[test]
    fn docker_outside_kubernetes() {
        let r = parse_proc_cgroup(&fixture("docker-systemd-v1")).unwrap();
        assert_eq!(r.pod_uid, None);
        assert_eq!(r.qos, None);
        assert_eq!(r.runtime, Some("docker"));
        assert!(r.container_id.is_some());
    }

    #[test]
    fn host_process_has_no_owner() {
        let r = parse_proc_cgroup(b"0::/system.slice/kubelet.service\n").unwrap();
        assert_eq!(
            r,
            CgroupRef {
                path: "/system.slice/kubelet.service".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn guaranteed_pod_slice_and_pause_sandbox() {
        let r = parse_path(&format!(
            "/kubepods.slice/kubepods-pod1234abcd_ef.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(r.qos, Some(Qos::Guaranteed));
        assert_eq!(r.pod_uid.as_deref(), Some("1234abcd-ef"));
        let r = parse_path("/kubepods/pod1234/");
        assert_eq!(r.pod_uid.as_deref(), Some("1234"));
        assert_eq!(r.container_id, None);
    }

    #[test]
    fn systemd_colon_form_from_an_oci_spec() {
        let r = parse_path(&format!(
            "kubepods-burstable-pod834b7b00_d731.slice:cri-containerd:{ID}"
        ));
        assert_eq!(r.qos, Some(Qos::Burstable));
        assert_eq!(r.pod_uid.as_deref(), Some("834b7b00-d731"));
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(r.runtime, Some("containerd"));
        assert_eq!(
            r.path,
            format!("kubepods-burstable-pod834b7b00_d731.slice:cri-containerd:{ID}")
        );
        let r = parse_path(&format!("kubepods-pod1234.slice:crio:{ID}"));
        assert_eq!((r.qos, r.runtime), (Some(Qos::Guaranteed), Some("cri-o")));
        assert_eq!(parse_path("a:b:c").pod_uid, None);
    }

    /// A container that creates cgroups below its own cannot take another container's id, pod or QoS.
    #[test]
    fn nested_cgroups_do_not_rename_the_container() {
        let victim = "f".repeat(64);
        let r = parse_path(&format!("/kubepods/besteffort/pod1234/{ID}/{victim}"));
        assert_eq!(r.container_id.as_deref(), Some(ID));
        let r = parse_path(&format!(
            "/kubepods/besteffort/pod1234/{ID}/kubepods/burstable/pod99/{victim}"
        ));
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(
            (r.qos, r.pod_uid.as_deref()),
            (Some(Qos::BestEffort), Some("1234"))
        );
        let r = parse_path(&format!("/kubepods/pod1234/notanid/{victim}"));
        assert_eq!(r.container_id, None);
        let r = parse_path(&format!(
            "/system.slice/docker-{ID}.scope/docker-{victim}.scope"
        ));
        assert_eq!(r.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn junk_is_not_an_id() {
        let r = parse_path("/kubepods/burstable/podxyz/notanid");
        assert_eq!(r.pod_uid, None);
        assert_eq!(r.container_id, None);
        assert_eq!(parse_path("/a/0123").container_id, None);
        assert!(parse_proc_cgroup(b"garbage").is_none());
    }
}
