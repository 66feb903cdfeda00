//! Attribution: which pod and container a pid, a cgroup, a container id or a host path belongs to.
//!
//! Offline first. The facts come from `/proc/PID/cgroup` ([`cgroup`]), containerd's bundles on disk
//! ([`containerd`]) and kubelet's pod directories ([`kubelet`]). No daemon is asked, so attribution works
//! exactly when containerd is too slow to answer. When a name cannot be found, the known ids are shown and
//! nothing is guessed.

pub mod bolt;
pub mod cgroup;
pub mod cgroupfs;
pub mod containerd;
pub mod kubelet;
pub mod locate;

use crate::host::mountinfo::{self, Mount};
use crate::host::procfs::{MountNs, Unreadable};
use crate::host::BlindSpot;
use crate::host::{procfs, resolve, Host};
use cgroup::{CgroupRef, Qos};
use containerd::{Bundle, Instance};
use serde::Serialize;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// Who a thing belongs to. Every field is optional: only what was found is filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Owner {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// `container` or `sandbox` (the pod's pause container).
    pub container_type: Option<String>,
    pub runtime: Option<String>,
    pub image: Option<String>,
    pub cgroup: Option<String>,
    pub pid: Option<u32>,
}

impl Owner {
    /// True when nothing ties the thing to a pod or a container.
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none() && self.container_id.is_none() && self.pod.is_none()
    }

    /// `namespace/pod`, else `pod <uid>`, else `container <short id>`, else `-`.
    pub fn pod_label(&self) -> String {
        match (
            &self.namespace,
            &self.pod,
            &self.pod_uid,
            &self.container_id,
        ) {
            (Some(ns), Some(pod), _, _) => format!("{ns}/{pod}"),
            (_, _, Some(uid), _) => format!("pod {uid}"),
            (_, _, _, Some(id)) => format!("container {}", short_id(id)),
            _ => "-".into(),
        }
    }

    /// The container's name, else its short id, else `-`.
    pub fn container_label(&self) -> String {
        match (&self.container, &self.container_id) {
            (Some(name), _) => name.clone(),
            (None, Some(id)) => short_id(id).to_string(),
            _ => "-".into(),
        }
    }

    /// Fills the fields this owner lacks from `other`.
    fn fill_from(&mut self, other: Owner) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f; } )* };
        }
        fill!(
            namespace,
            pod,
            pod_uid,
            qos,
            container,
            container_id,
            container_type,
            runtime,
            image,
            cgroup,
            pid
        );
    }
}

/// The first 13 characters of a container id, as crictl shows them.
pub fn short_id(id: &str) -> &str {
    id.get(..13).unwrap_or(id)
}

/// The attribution layer. Build one per run; it reads the runtime's state on first need, once, and caches
/// per pid.
pub struct Attributor<'h> {
    host: &'h Host,
    pub kubelet_root: PathBuf,
    extra_state: Vec<PathBuf>,
    runtime: OnceCell<Runtime>,
    namespaces: OnceCell<Result<(Vec<MountNs>, Unreadable), String>>,
    mount_tables: OnceCell<Result<Vec<NsMounts>, String>>,
    host_mounts: OnceCell<Result<Rc<[Mount]>, String>>,
    host_mnt_ns: OnceCell<Option<u64>>,
    host_table_ns: OnceCell<Option<u64>>,
    pid_cache: RefCell<HashMap<u32, Owner>>,
}

/// A mount namespace's mount table, as one of its processes shows it.
pub struct NsMounts {
    pub inode: u64,
    pub pid: u32,
    /// Shared with [`Attributor::host_mounts`] for the host's namespace.
    pub mounts: Rc<[Mount]>,
}

/// What the container runtime's state on disk says: its instances and their containers' bundles.
///
/// Bundles are keyed by (containerd namespace, id). A container id from a cgroup names no namespace, so it
/// names a bundle only when exactly one namespace has that id: an id in two namespaces is a forgery (CRI's ids
/// are random), and wonk then names the container from neither rather than let one rename the other.
struct Runtime {
    instances: Vec<Instance>,
    bundles: Vec<Bundle>,
    by_key: HashMap<(String, String), usize>,
    /// Ids whose bundle is in exactly one namespace.
    by_id: HashMap<String, usize>,
    /// Pod uids whose sandbox bundles all agree on the pod's namespace and name.
    sandbox_by_uid: HashMap<String, usize>,
    blind_spots: Vec<BlindSpot>,
}
/// The answer to "which container is this id prefix".
#[derive(Debug, PartialEq, Eq)]
pub enum PrefixMatch {
    One(String),
    None,
    Ambiguous(Vec<String>),
}

impl Runtime {
    fn load(host: &Host, extra_state: &[PathBuf]) -> Runtime {
        let found = containerd::discover(host, extra_state);
        let (bundles, bad) = containerd::load_bundles(host, &found.instances);
        let mut blind_spots = found.blind_spots;
        blind_spots.extend(
            bad.into_iter()
                .map(|b| BlindSpot::new("attribution", b.path.display().to_string(), b.error)),
        );
        let mut by_key = HashMap::new();
        let mut ids: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut sandboxes: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, b) in bundles.iter().enumerate() {
            by_key.insert((b.namespace.clone(), b.id.clone()), i);
            ids.entry(&b.id).or_default().push(i);
            if b.annotation("io.kubernetes.cri.container-type") == Some("sandbox") {
                if let Some(uid) = b.annotation("io.kubernetes.cri.sandbox-uid") {
                    sandboxes.entry(uid).or_default().push(i);
                }
            }
        }
        let mut by_id = HashMap::new();
        for (id, at) in &ids {
            if let [i] = at[..] {
                by_id.insert(id.to_string(), i);
            } else {
                let nss: Vec<&str> = at.iter().map(|&i| bundles[i].namespace.as_str()).collect();
                blind_spots.push(BlindSpot::new(
                    "attribution",
                    format!("container {id}"),
                    format!(
                        "bundles with this id are in containerd namespaces {}; it is named from none of them",
                        nss.join(", ")
                    ),
                ));
            }
        }
        let mut sandbox_by_uid = HashMap::new();
        for (uid, at) in &sandboxes {
            let names = |i: usize| {
                let b = &bundles[i];
                (
                    b.annotation("io.kubernetes.cri.sandbox-namespace"),
                    b.annotation("io.kubernetes.cri.sandbox-name"),
                )
            };
            if at.iter().all(|&i| names(i) == names(at[0])) {
                sandbox_by_uid.insert(uid.to_string(), at[0]);
            } else {
                let dirs: Vec<String> = at
                    .iter()
                    .map(|&i| bundles[i].dir.display().to_string())
                    .collect();
                blind_spots.push(BlindSpot::new(
                    "attribution",
                    format!("pod {uid}"),
                    format!(
                        "sandbox bundles that name this pod differently: {}; it is named from none of them",
                        dirs.join(", ")
                    ),
                ));
            }
        }
        Runtime {
            instances: found.instances,
            bundles,
            by_key,
            by_id,
            sandbox_by_uid,
            blind_spots,
        }
    }
}

/// Owners of sampled threads (`host::tasks`), kept for a sampling run: by cgroup id when the thread's cgroup v2
/// path names a pod or container (the BPF sampler gives the id), else by pid from /proc/PID/cgroup (on cgroup v1
/// and hybrid nodes the v2 path of a container is often `/`).
#[derive(Default)]
pub struct ThreadOwners {
    by_cgroup: HashMap<u64, Option<Owner>>,
    by_pid: HashMap<u32, Owner>,
}

impl ThreadOwners {
    pub fn of(
        &mut self,
        owners: &Attributor,
        sampler: &mut crate::host::tasks::Sampler,
        t: &crate::host::tasks::Thread,
    ) -> Owner {
        self.of_cgroup(owners, t.pid, t.cgroup_id, |id| sampler.cgroup_path(id))
    }

    /// The owner of process `pid` whose cgroup id a BPF program read (`cgroup_path` turns it into its v2 path).
    pub fn of_cgroup(
        &mut self,
        owners: &Attributor,
        pid: u32,
        cgroup_id: Option<u64>,
        cgroup_path: impl FnOnce(u64) -> Option<String>,
    ) -> Owner {
        if let Some(id) = cgroup_id {
            let o = self.by_cgroup.entry(id).or_insert_with(|| {
                let r = cgroup::parse_path(&cgroup_path(id)?);
                (r.pod_uid.is_some() || r.container_id.is_some())
                    .then(|| owners.owner_of_cgroup(&r))
            });
            if let Some(o) = o {
                return o.clone();
            }
        }
        self.by_pid
            .entry(pid)
            .or_insert_with(|| owners.owner_of_pid(pid).unwrap_or_default())
            .clone()
    }
}

impl<'h> Attributor<'h> {
    pub fn new(host: &'h Host, kubelet_root: PathBuf, extra_state: &[PathBuf]) -> Attributor<'h> {
        Attributor {
            host,
            kubelet_root,
            extra_state: extra_state.to_vec(),
            runtime: OnceCell::new(),
            namespaces: OnceCell::new(),
            mount_tables: OnceCell::new(),
            host_mounts: OnceCell::new(),
            host_mnt_ns: OnceCell::new(),
            host_table_ns: OnceCell::new(),
            pid_cache: RefCell::new(HashMap::new()),
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .get_or_init(|| Runtime::load(self.host, &self.extra_state))
    }

    /// The container runtime instances found on the node (containerd, from its processes and `--config`).
    pub fn instances(&self) -> &[Instance] {
        &self.runtime().instances
    }

    /// Every mount namespace and its processes ([`procfs::mount_namespaces`]), listed on first need and then kept
    /// for this run, with the processes whose namespace could not be read. The error is that of listing processes.
    pub fn namespaces(&self) -> Result<(&[MountNs], &Unreadable), &str> {
        self.namespaces
            .get_or_init(|| {
                procfs::mount_namespaces(self.host).map_err(|e| {
                    format!(
                        "listing processes in {}: {e}",
                        self.host.path("/proc").display()
                    )
                })
            })
            .as_ref()
            .map(|(namespaces, unreadable)| (namespaces.as_slice(), unreadable))
            .map_err(String::as_str)
    }

    /// A process's mount namespace, from [`Self::namespaces`] (read directly where that failed).
    fn mnt_ns_of(&self, pid: u32) -> Option<u64> {
        match self.namespaces() {
            Ok((namespaces, _)) => namespaces
                .iter()
                .find(|ns| ns.pids.binary_search(&pid).is_ok())
                .map(|ns| ns.inode),
            Err(_) => procfs::mnt_ns(self.host, pid).ok(),
        }
    }

    /// Every mount namespace's mount table, read on first need and then kept for this run, so that judging
    /// many paths (`wonk htree --scan`) reads them once. Namespaces whose processes all exit meanwhile are left
    /// out; the error is that of listing processes.
    pub fn mount_tables(&self) -> Result<&[NsMounts], &str> {
        self.mount_tables
            .get_or_init(|| {
                let (namespaces, _) = self.namespaces().map_err(str::to_string)?;
                let host_table = self.host_table_ns().zip(self.host_table().ok());
                Ok(namespaces
                    .iter()
                    .filter_map(|ns| {
                        if let Some((_, mounts)) = host_table.filter(|(n, _)| *n == ns.inode) {
                            return Some(NsMounts {
                                inode: ns.inode,
                                pid: *ns.pids.first()?,
                                mounts: Rc::clone(mounts),
                            });
                        }
                        ns.pids.iter().find_map(|&pid| {
                            procfs::mountinfo(self.host, pid).ok().map(|d| NsMounts {
                                inode: ns.inode,
                                pid,
                                mounts: mountinfo::parse(&d).0.into(),
                            })
                        })
                    })
                    .collect())
            })
            .as_deref()
            .map_err(String::as_str)
    }

    /// The host's mount table (pid 1's), read on first need and then kept for this run.
    pub fn host_mounts(&self) -> Result<&[Mount], &str> {
        self.host_table().map(|mounts| &**mounts)
    }

    fn host_table(&self) -> Result<&Rc<[Mount]>, &str> {
        self.host_mounts
            .get_or_init(|| {
                procfs::mountinfo(self.host, 1)
                    .map(|d| mountinfo::parse(&d).0.into())
                    .map_err(|e| {
                        format!("{}: {e}", self.host.proc_pid(1).join("mountinfo").display())
                    })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The mount namespace whose table [`Self::host_mounts`] is, when wonk can tell, so that it is not read twice:
    /// pid 1's; where pid 1's namespace link is unreadable, wonk's own if wonk's root is one of the mounts in pid
    /// 1's table (a mount belongs to one namespace, and its id is unique).
    fn host_table_ns(&self) -> Option<u64> {
        *self.host_table_ns.get_or_init(|| self.find_host_table_ns())
    }

    fn find_host_table_ns(&self) -> Option<u64> {
        if let Some(ns) = self.mnt_ns_of(1) {
            return Some(ns);
        }
        if self.host.root() != std::path::Path::new("/") {
            return None;
        }
        let own_root = resolve::stat_in_root(self.host.root_dir(), b"/", false)
            .ok()?
            .mnt_id;
        self.host_mounts()
            .ok()?
            .iter()
            .any(|m| u64::from(m.id) == own_root)
            .then(|| self.mnt_ns_of(std::process::id()))
            .flatten()
    }

    /// The host's mount namespace: pid 1's. Where pid 1's is unreadable (it may hold capabilities wonk lacks), wonk's
    /// own when it runs on the node itself. Found once per run.
    pub fn host_mnt_ns(&self) -> Option<u64> {
        *self.host_mnt_ns.get_or_init(|| {
            self.mnt_ns_of(1).or_else(|| {
                (self.host.root() == std::path::Path::new("/"))
                    .then(|| self.mnt_ns_of(std::process::id()))
                    .flatten()
            })
        })
    }

    /// What attribution could not read. Empty when it never needed the runtime's state.
    pub fn blind_spots(&self) -> &[BlindSpot] {
        self.runtime.get().map_or(&[], |r| &r.blind_spots)
    }

    pub fn host(&self) -> &Host {
        self.host
    }

    pub fn bundles(&self) -> &[Bundle] {
        &self.runtime().bundles
    }

    /// The bundle of a container id, when exactly one containerd namespace has one with that id.
    pub fn bundle(&self, container_id: &str) -> Option<&Bundle> {
        let r = self.runtime();
        r.by_id.get(container_id).map(|&i| &r.bundles[i])
    }

    /// The bundle `id` in containerd namespace `namespace`.
    pub fn bundle_in(&self, namespace: &str, id: &str) -> Option<&Bundle> {
        let r = self.runtime();
        r.by_key
            .get(&(namespace.to_string(), id.to_string()))
            .map(|&i| &r.bundles[i])
    }

    /// The owner of a process, from its cgroup and the bundle of the container it names. Cached per pid.
    pub fn owner_of_pid(&self, pid: u32) -> std::io::Result<Owner> {
        if let Some(o) = self.pid_cache.borrow().get(&pid) {
            return Ok(o.clone());
        }
        let data = procfs::cgroup(self.host, pid)?;
        let mut owner = match cgroup::parse_proc_cgroup(&data) {
            Some(r) => self.owner_of_cgroup(&r),
            None => Owner::default(),
        };
        owner.pid = Some(pid);
        self.pid_cache.borrow_mut().insert(pid, owner.clone());
        Ok(owner)
    }

    /// The owner named by a cgroup path.
    pub fn owner_of_cgroup(&self, r: &CgroupRef) -> Owner {
        let mut owner = match &r.container_id {
            Some(id) => self.owner_of_container(id),
            None => Owner::default(),
        };
        owner.cgroup = Some(r.path.clone());
        owner.fill_from(Owner {
            pod_uid: r.pod_uid.clone(),
            qos: r.qos,
            runtime: r.runtime.map(str::to_string),
            ..Owner::default()
        });
        if let Some(uid) = owner.pod_uid.clone() {
            owner.fill_from(self.owner_of_pod_uid(&uid));
        }
        owner
    }

    /// The owner of a container id, from its bundle's annotations.
    pub fn owner_of_container(&self, id: &str) -> Owner {
        match self.bundle(id) {
            Some(b) => self.owner_of_bundle(b),
            None => Owner {
                container_id: Some(id.to_string()),
                ..Owner::default()
            },
        }
    }

    /// The owner of a bundle, from its annotations and those of its sandbox's bundle in the same containerd
    /// namespace.
    pub fn owner_of_bundle(&self, b: &Bundle) -> Owner {
        let id = b.id.as_str();
        let mut owner = Owner {
            container_id: Some(id.to_string()),
            ..Owner::default()
        };
        let a = |k: &str| b.annotation(k).map(str::to_string);
        owner.namespace = a("io.kubernetes.cri.sandbox-namespace");
        owner.pod = a("io.kubernetes.cri.sandbox-name");
        owner.pod_uid = a("io.kubernetes.cri.sandbox-uid");
        owner.container = a("io.kubernetes.cri.container-name");
        owner.container_type = a("io.kubernetes.cri.container-type");
        owner.image = a("io.kubernetes.cri.image-name");
        owner.runtime = Some(format!(
            "containerd (shim {}, namespace {})",
            b.shim, b.namespace
        ));
        if let Some(cg) = b.spec.linux.as_ref().and_then(|l| l.cgroups_path.clone()) {
            owner.qos = cgroup::parse_path(&cg).qos;
            owner.cgroup = Some(cg);
        }
        if let Some(sid) = a("io.kubernetes.cri.sandbox-id") {
            if sid != id {
                if let Some(sb) = self.bundle_in(&b.namespace, &sid) {
                    owner.namespace = owner.namespace.or(sb
                        .annotation("io.kubernetes.cri.sandbox-namespace")
                        .map(str::to_string));
                    owner.pod = owner.pod.or(sb
                        .annotation("io.kubernetes.cri.sandbox-name")
                        .map(str::to_string));
                }
            }
        }
        owner
    }

    /// The owner of a pod uid: its names from the pod sandbox's bundle.
    pub fn owner_of_pod_uid(&self, uid: &str) -> Owner {
        let mut owner = Owner {
            pod_uid: Some(uid.to_string()),
            ..Owner::default()
        };
        let r = self.runtime();
        if let Some(&i) = r.sandbox_by_uid.get(uid) {
            let b = &r.bundles[i];
            owner.namespace = b
                .annotation("io.kubernetes.cri.sandbox-namespace")
                .map(str::to_string);
            owner.pod = b
                .annotation("io.kubernetes.cri.sandbox-name")
                .map(str::to_string);
            if let Some(cg) = b
                .spec
                .linux
                .as_ref()
                .and_then(|l| l.cgroups_path.as_deref())
            {
                owner.qos = cgroup::parse_path(cg).qos;
            }
        }
        owner
    }

    /// The container whose id starts with `prefix`, among the bundles and the ids in live processes' cgroups.
    pub fn container_by_prefix(&self, prefix: &str, live_ids: &[String]) -> PrefixMatch {
        let prefix = prefix.to_ascii_lowercase();
        let mut hits: Vec<String> = self
            .bundles()
            .iter()
            .map(|b| b.id.clone())
            .chain(live_ids.iter().cloned())
            .filter(|id| id.starts_with(&prefix))
            .collect();
        hits.sort();
        hits.dedup();
        match hits.len() {
            0 => PrefixMatch::None,
            1 => PrefixMatch::One(hits.remove(0)),
            _ => PrefixMatch::Ambiguous(hits),
        }
    }

    /// The owner of a path under kubelet's pod directories, with how the path relates to the pod.
    pub fn owner_of_kubelet_path(&self, path: &[u8]) -> Option<(Owner, kubelet::PodPath)> {
        let pp = kubelet::parse_pod_path(self.kubelet_root.as_os_str().as_encoded_bytes(), path)?;
        let mut owner = self.owner_of_pod_uid(&pp.pod_uid);
        if let Some(c) = &pp.container {
            owner.container = Some(c.clone());
        }
        Some((owner, pp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_namespace_has_our_mount_table() {
        let host = Host::open(std::path::Path::new("/")).unwrap();
        let owners = Attributor::new(&host, PathBuf::from("/var/lib/kubelet"), &[]);
        let own_ns = procfs::mnt_ns(&host, std::process::id()).unwrap();
        let root_of = |mounts: &[Mount]| {
            mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == b"/")
                .map(|m| m.id)
        };
        let own = mountinfo::parse(&procfs::mountinfo(&host, std::process::id()).unwrap()).0;
        let tables = owners.mount_tables().unwrap();
        let ours = tables
            .iter()
            .find(|t| t.inode == own_ns)
            .expect("our namespace");
        assert!(root_of(&own).is_some());
        assert_eq!(root_of(&ours.mounts), root_of(&own));
        assert!(tables.iter().all(|t| !t.mounts.is_empty()));
    }

    #[test]
    fn labels_show_ids_when_names_are_unknown() {
        let id = "7b3e5f0c1a2d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
        let o = Owner {
            container_id: Some(id.into()),
            ..Owner::default()
        };
        assert_eq!(o.pod_label(), "container 7b3e5f0c1a2d4");
        assert_eq!(o.container_label(), "7b3e5f0c1a2d4");
        let o = Owner {
            pod_uid: Some("u1".into()),
            ..Owner::default()
        };
        assert_eq!(o.pod_label(), "pod u1");
        assert_eq!(Owner::default().pod_label(), "-");
    }
}
