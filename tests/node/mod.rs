//! A real node in a box: one private containerd per test binary, and pods created through the CRI v1 API the
//! way kubelet creates them (see /work/shared/notes-node-in-a-box.md for the measured recipe).
//!
//! - [`Node::get`] starts the containerd on first use (root, state, sockets, plugin dir, runc roots: all under
//!   one temp directory), imports a tiny local busybox image (also the sandbox image), and registers a
//!   process-exit hook that tears everything down.
//! - [`Node::pod`] runs a pod sandbox and one container, with kubelet's shapes: cgroup parent
//!   `/kubepods/<qos>/pod<uid>` (cgroupfs driver), host network with an empty hostname, a hostPath file, a
//!   hostPath directory, an emptyDir under `<kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/`, and
//!   kubelet's /etc/hosts and /dev/termination-log mounts. The returned [`Pod`] removes itself when dropped,
//!   also when the test panics.
//! - Runtime handlers: [`Handler::Cgroupfs`] (runc v2, cgroupfs), [`Handler::SystemdShape`] (runc v2 through a
//!   wrapper that rewrites the bundle's cgroupsPath into the systemd driver's path shape; runc still uses
//!   cgroupfs since this VM has no systemd) and [`Handler::ShimV1`] (`io.containerd.runtime.v1.linux`).
//!
//! Teardown works from what is on disk under the node's directory (the shim pids recorded when pods started,
//! bundles' `init.pid`, `address` and `config.json` cgroupsPath), so the same sweep also cleans the directory of an earlier test run that
//! was killed before its exit hook ran. Only what this harness made is touched, by recorded pid or id.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use wonk::cri::{api, Client};

/// The image every pod runs, and the sandbox ("pause") image.
pub const IMAGE: &str = "localhost/wonk-busybox:1";
/// containerd's namespace for CRI.
pub const NS: &str = "k8s.io";
/// The deadline of one CRI call from the harness (a pod takes about 0.3 s on a 2-core VM).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// cgroup directories the harness may create above a pod, relative to a hierarchy's root. They are removed
/// at exit only if they did not exist when the node started, and only when empty.
const QOS_DIRS: &[&str] = &[
    "kubepods",
    "kubepods/burstable",
    "kubepods/besteffort",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
];

/// How a pod is run: the runtime handler named in RunPodSandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// runc through shim v2, cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>`.
    Cgroupfs,
    /// runc through shim v2 and a wrapper that rewrites cgroupsPath to
    /// `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`.
    SystemdShape,
    /// The legacy shim v1 (`containerd-shim`), as on the seed's nodes.
    ShimV1,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Cgroupfs => "runc",
            Handler::SystemdShape => "systemd-shape",
            Handler::ShimV1 => "shimv1",
        }
    }

    /// The directory of task bundles under containerd's state for this handler.
    pub fn bundle_kind(self) -> &'static str {
        match self {
            Handler::ShimV1 => "io.containerd.runtime.v1.linux",
            _ => "io.containerd.runtime.v2.task",
        }
    }
}

/// The private containerd of this test binary.
pub struct Node {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    /// The fake kubelet root: pods' directories live under `<kubelet_root>/pods/<uid>`.
    pub kubelet_root: PathBuf,
    pub containerd_pid: u32,
    child: Mutex<Option<Child>>,
    /// The pod sandboxes currently alive, for the exit sweep.
    live: Mutex<BTreeSet<String>>,
}

static NODE: OnceLock<Result<Node, String>> = OnceLock::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

extern "C" fn at_exit() {
    // A panic must not cross the C boundary (that aborts): teardown is best effort.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(node)) = NODE.get() {
            node.teardown();
        }
    });
}

impl Node {
    /// The node of this test binary, started on first use. Panics (failing the test) if it cannot start.
    pub fn get() -> &'static Node {
        let r = NODE.get_or_init(|| {
            sweep_stale_nodes();
            let started = Node::start();
            if started.is_ok() {
                // SAFETY: registers a plain extern "C" function; it runs once, when the test binary exits.
                unsafe { libc::atexit(at_exit) };
            }
            started
        });
        match r {
            Ok(n) => n,
            Err(e) => panic!("the containerd node did not start: {e}"),
        }
    }

    fn start() -> Result<Node, String> {
        let t0 = Instant::now();
        let dir = std::env::temp_dir().join(format!("wonk-node-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["bin", "kubelet/pods", "host", "cni/bin", "cni/net.d", "opt"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let node = |rel: &str| dir.join(rel);
        // Which QoS-level cgroup directories existed before us, so that teardown leaves those alone.
        let pre: Vec<String> = cgroup_mounts()
            .iter()
            .flat_map(|m| QOS_DIRS.iter().map(move |q| m.join(q)))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        write(&node("preexisting-cgroups"), &pre.join("\n"))?;
        write_exec(&node("bin/runc-systemd-shape"), RUNC_SYSTEMD_SHAPE)?;
        let config = node("config.toml");
        write(&config, &containerd_config(&dir))?;
        build_image(&node("image"))?;

        let log = std::fs::File::create(node("containerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run containerd (apt-get install containerd runc): {e}"))?;
        let pid = child.id();
        write(&node("containerd.pid"), &pid.to_string())?;
        let n = Node {
            socket: node("containerd.sock"),
            root: node("root"),
            state: node("state"),
            kubelet_root: node("kubelet"),
            config,
            dir: dir.clone(),
            containerd_pid: pid,
            child: Mutex::new(Some(child)),
            live: Mutex::new(BTreeSet::new()),
        };
        // From here on, a failure (or a panic) must still stop what was started.
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(c) = Client::connect(&n.socket, Duration::from_secs(2)) {
                    if c.version().is_ok() {
                        break;
                    }
                }
                if n.child
                    .lock()
                    .unwrap()
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return Err(format!("containerd exited:\n{}", n.log_tail()));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "containerd's socket never answered:\n{}",
                        n.log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = Command::new("ctr")
                .arg("-a")
                .arg(&n.socket)
                .args(["-n", NS, "images", "import"])
                .arg(node("image/image.tar"))
                .output()
                .map_err(|e| format!("ctr: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ctr images import: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        }))
        .unwrap_or_else(|_| Err("panicked while starting (see above)".into()));
        if let Err(e) = ready {
            n.teardown();
            return Err(e);
        }
        eprintln!(
            "node: containerd pid {pid} ready in {} ms under {}",
            t0.elapsed().as_millis(),
            dir.display()
        );
        Ok(n)
    }

    /// A CRI client on this node's socket.
    pub fn cri(&self) -> Client {
        Client::connect(&self.socket, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("CRI: {e}\n{}", self.log_tail()))
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Runs a pod with one container named `app`, the way kubelet would. See [`PodOpts`].
    /// Leaks `victim`'s shim the way the seed's were (containerd's own PR 9004 reproduction): strace delays the
    /// shim's umount2 while the pod is stopped and removed through CRI, so that containerd's task deletion times
    /// out and forgets the shim, which lives on. Returns a guard that kills the shim (by its pid, if it is still a
    /// shim) when dropped.
    pub fn leak_shim(&'static self, victim: &Pod) -> KillOnDrop {
        assert_eq!(
            victim.shim_pids.len(),
            1,
            "one v2 shim per pod: {:?}",
            victim.shim_pids
        );
        let shim = victim.shim_pids[0];
        let guard = KillOnDrop {
            pid: shim,
            cmdline_has: "containerd-shim",
            child: None,
        };
        let log = self.dir.join(format!("strace-{shim}.log"));
        let strace = Command::new("strace")
            .args([
                "-p",
                &shim.to_string(),
                "-f",
                "--detach-on=execve",
                "--trace=umount2",
            ])
            .args(["-e", "inject=umount2:delay_enter=12s", "-o"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace");
        let strace = KillOnDrop {
            pid: strace.id(),
            cmdline_has: "strace",
            child: Some(strace),
        };
        std::thread::sleep(Duration::from_millis(500));
        let cri = self.cri();
        let t = Instant::now();
        while cri.stop_pod_sandbox(&victim.sandbox_id).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "StopPodSandbox never succeeded\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        while cri.remove_pod_sandbox(&victim.sandbox_id).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "RemovePodSandbox never succeeded\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        drop(strace);
        assert!(
            Path::new(&format!("/proc/{shim}")).exists(),
            "the shim did not leak this time"
        );
        guard
    }

    pub fn pod(&'static self, opts: PodOpts) -> Pod {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            std::process::id(),
            seq,
            opts.handler as u32,
            seq & 0xfff,
            nanos()
        );
        let name = opts.name.clone();
        let pod_dir = self.kubelet_root.join("pods").join(&uid);
        let host_dir = self.dir.join("host").join(&uid);
        let empty_dir = pod_dir.join("volumes/kubernetes.io~empty-dir/cache");
        let etc_hosts = pod_dir.join("etc-hosts");
        let term_log = pod_dir.join(format!("containers/app/{:08x}", nanos() as u32));
        // The `/shared` hostPath: a directory of the caller's (left as it is), or `<host_dir>/shared`.
        let shared_dir = opts
            .shared_dir
            .clone()
            .unwrap_or_else(|| host_dir.join("shared"));
        for d in [&empty_dir, &host_dir, &shared_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(term_log.parent().unwrap()).unwrap();
        std::fs::write(host_dir.join("data.txt"), "version2\n").unwrap();
        if opts.shared_dir.is_none() {
            std::fs::write(shared_dir.join("inner.txt"), "inner\n").unwrap();
        }
        std::fs::write(empty_dir.join("blob"), "cached\n").unwrap();
        std::fs::write(&etc_hosts, "127.0.0.1 localhost\n").unwrap();
        std::fs::write(&term_log, "").unwrap();
        std::fs::create_dir_all(pod_dir.join("logs")).unwrap();

        // Recorded before anything is made for the pod, so that the exit sweep finds its cgroups whatever
        // happens next.
        append_line(&self.dir.join("pod-uids"), &uid);
        let cgroup_parent = match opts.qos {
            "guaranteed" => format!("/kubepods/pod{uid}"),
            q => format!("/kubepods/{q}/pod{uid}"),
        };
        let node_ns = Some(api::NamespaceOption {
            network: api::NamespaceMode::Node as i32,
            pid: api::NamespaceMode::Container as i32,
            ipc: api::NamespaceMode::Pod as i32,
            target_id: String::new(),
        });
        let labels = [
            ("io.kubernetes.pod.name", name.as_str()),
            ("io.kubernetes.pod.namespace", opts.namespace.as_str()),
            ("io.kubernetes.pod.uid", uid.as_str()),
            ("app", "wonk-test"),
        ];
        let sandbox_config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: opts.namespace.clone(),
                attempt: 0,
            }),
            // Host network: kubelet sends an empty hostname.
            hostname: String::new(),
            log_directory: pod_dir.join("logs").display().to_string(),
            dns_config: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("kubernetes.io/config.source", "api")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: node_ns.clone(),
                    privileged: false,
                }),
            }),
        };
        let mount = |container: &str, host: &Path, ro: bool| api::Mount {
            container_path: container.to_string(),
            host_path: host.display().to_string(),
            readonly: ro,
            selinux_relabel: false,
            propagation: api::MountPropagation::PropagationPrivate as i32,
        };
        let container_config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: IMAGE.into(),
                annotations: Default::default(),
            }),
            mounts: vec![
                mount("/data.txt", &host_dir.join("data.txt"), true),
                mount("/shared", &shared_dir, false),
                mount("/cache", &empty_dir, false),
                mount("/etc/hosts", &etc_hosts, false),
                mount("/dev/termination-log", &term_log, false),
            ],
            labels: [
                ("io.kubernetes.container.name", "app"),
                ("io.kubernetes.pod.name", name.as_str()),
                ("io.kubernetes.pod.namespace", opts.namespace.as_str()),
                ("io.kubernetes.pod.uid", uid.as_str()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            log_path: "app/0.log".into(),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    privileged: false,
                    namespace_options: node_ns,
                }),
            }),
            ..Default::default()
        };

        let cri = self.cri();
        let sandbox_id = cri
            .run_pod_sandbox(sandbox_config.clone(), opts.handler.name())
            .unwrap_or_else(|e| {
                panic!(
                    "RunPodSandbox ({:?}): {e}\n{}",
                    opts.handler,
                    self.log_tail()
                )
            });
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox_id.clone());
        let mut pod = Pod {
            node: self,
            handler: opts.handler,
            uid,
            name,
            namespace: opts.namespace,
            qos: opts.qos,
            cgroup_parent,
            sandbox_id,
            container_id: String::new(),
            pid: 0,
            sandbox_pid: 0,
            shim_pids: Vec::new(),
            pod_dir,
            host_dir,
            shared_dir,
            empty_dir,
        };
        pod.sandbox_pid = pod.init_pid(&pod.sandbox_id.clone());
        pod.container_id = cri
            .create_container(&pod.sandbox_id, container_config, sandbox_config)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log_tail()));
        cri.start_container(&pod.container_id)
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.log_tail()));
        pod.pid = pod.init_pid(&pod.container_id.clone());
        pod
    }

    /// Removes every pod, stops containerd, and removes every process, mount, cgroup, socket and directory
    /// this node made. Runs at exit; safe to run more than once.
    pub fn teardown(&self) {
        // Pods first, through CRI, while containerd runs: that stops the shims and unmounts the roots cleanly.
        if let Ok(cri) = Client::connect(&self.socket, Duration::from_secs(2)) {
            let mut ids: BTreeSet<String> =
                std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
            if let Ok(all) = cri.list_pod_sandbox(None) {
                ids.extend(all.into_iter().map(|s| s.id));
            }
            for id in ids {
                let _ = cri.stop_pod_sandbox(&id);
                let _ = cri.remove_pod_sandbox(&id);
            }
        }
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stop_process(&mut child);
        }
        sweep_dir(&self.dir);
    }
}

/// What kind of pod [`Node::pod`] runs.
#[derive(Debug, Clone)]
pub struct PodOpts {
    pub name: String,
    pub namespace: String,
    /// `burstable`, `besteffort` or `guaranteed`.
    pub qos: &'static str,
    pub handler: Handler,
    /// The host directory mounted at `/shared`; `None`: a fresh `<host_dir>/shared` holding `inner.txt`.
    pub shared_dir: Option<PathBuf>,
}

impl PodOpts {
    pub fn new(name: &str, namespace: &str, handler: Handler) -> PodOpts {
        PodOpts {
            name: name.into(),
            namespace: namespace.into(),
            qos: "burstable",
            handler,
            shared_dir: None,
        }
    }

    /// Mounts this existing host directory at `/shared` (as a hostPath directory), instead of a fresh one. Mount
    /// what you need there (a loop-mounted filesystem) before the pod is made: mounts made on the host later do
    /// not propagate into the container. The pod neither writes to it nor removes it.
    pub fn shared_dir(mut self, dir: &Path) -> PodOpts {
        self.shared_dir = Some(dir.to_path_buf());
        self
    }
}

/// Kills a process we started (strace) or caused (a leaked shim) by pid, if it is still the one we mean.
pub struct KillOnDrop {
    pub pid: u32,
    cmdline_has: &'static str,
    child: Option<Child>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(self.cmdline_has) {
            // SAFETY: kill(2) of a pid we recorded and just checked.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
    }
}

/// A running pod: its sandbox and its one container `app`. Stopped and removed on drop.
pub struct Pod {
    node: &'static Node,
    pub handler: Handler,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub qos: &'static str,
    pub cgroup_parent: String,
    pub sandbox_id: String,
    pub container_id: String,
    /// The container's init process (busybox `sleep`), as the shim recorded it.
    pub pid: u32,
    pub sandbox_pid: u32,
    /// The shims of the pod (shim v2: one per pod; shim v1: one per container).
    pub shim_pids: Vec<u32>,
    /// `<kubelet root>/pods/<uid>`.
    pub pod_dir: PathBuf,
    /// The directory holding the hostPath sources: `data.txt` (mounted as the file `/data.txt`, read-only) and
    /// `shared/` (mounted as the directory `/shared`).
    pub host_dir: PathBuf,
    /// The host directory mounted at `/shared`: `<host_dir>/shared`, or [`PodOpts::shared_dir`].
    pub shared_dir: PathBuf,
    /// The emptyDir `cache`, mounted at `/cache`.
    pub empty_dir: PathBuf,
}

impl Pod {
    /// The bundle directory of a container of this pod.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.node
            .state
            .join(self.handler.bundle_kind())
            .join(NS)
            .join(id)
    }

    /// The init pid of a container (from its bundle's `init.pid`). Its parent, the shim, is recorded for the
    /// exit sweep (containerd 1.6 writes no `shim.pid`).
    fn init_pid(&mut self, id: &str) -> u32 {
        let p = self.bundle(id).join("init.pid");
        let pid = read_pid(&p).unwrap_or_else(|| panic!("no pid in {}", p.display()));
        // StartContainer can return while runc's init is still about to exec the container's command (its comm
        // is then `runc:[2:INIT]`): wait for the exec, so that tests see the container's own process.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.starts_with("runc:"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "container {id}: pid {pid} did not exec its command within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ppid = ppid(pid).unwrap_or_else(|| panic!("container {id}: its pid {pid} is gone"));
        append_line(&self.node.dir.join("shim-pids"), &format!("{ppid} {id}"));
        if !self.shim_pids.contains(&ppid) {
            self.shim_pids.push(ppid);
        }
        pid
    }

    /// The container's /proc/PID/mountinfo.
    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap()
    }

    /// The upperdir of the container's overlay root, from its mountinfo.
    pub fn upperdir(&self) -> PathBuf {
        let mi = self.mountinfo();
        let line = mi
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/") && l.contains(" - overlay "))
            .unwrap_or_else(|| panic!("no overlay root in\n{mi}"));
        let opts = line.rsplit(' ').next().unwrap();
        let up = opts
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir="))
            .unwrap_or_else(|| panic!("no upperdir in {line}"));
        PathBuf::from(up)
    }

    /// The container's cgroup path as /proc/PID/cgroup shows it for the memory controller.
    pub fn cgroup(&self) -> String {
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).unwrap();
        cg.lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .unwrap_or_else(|| panic!("no memory cgroup in\n{cg}"))
    }

    /// The expected cgroup path of a container of this pod, in the handler's layout.
    pub fn expected_cgroup(&self, id: &str) -> String {
        match self.handler {
            Handler::SystemdShape => {
                let uid_ = self.uid.replace('-', "_");
                match self.qos {
                    "guaranteed" => format!(
                        "/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope"
                    ),
                    q => format!(
                        "/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid_}.slice/cri-containerd-{id}.scope"
                    ),
                }
            }
            _ => format!("{}/{id}", self.cgroup_parent),
        }
    }

    /// Runs a command in the container (through nsenter into all of its namespaces; no CRI exec needed).
    pub fn exec(&self, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-m",
                "-u",
                "-i",
                "-p",
                "-r",
                "-w",
                "--",
                "/bin/sh",
                "-c",
                cmd,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd} in pod {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The cgroup directories of this pod, relative to a hierarchy's root, deepest first.
    fn cgroup_dirs(&self) -> Vec<String> {
        let mut dirs = vec![
            self.expected_cgroup(&self.container_id),
            self.expected_cgroup(&self.sandbox_id),
        ];
        let pod = Path::new(&dirs[0]).parent().unwrap().display().to_string();
        dirs.push(pod);
        dirs
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Ok(cri) = Client::connect(&self.node.socket, CALL_TIMEOUT) {
            let stopped = cri.stop_pod_sandbox(&self.sandbox_id);
            let removed = cri.remove_pod_sandbox(&self.sandbox_id);
            if stopped.is_ok() && removed.is_ok() {
                self.node
                    .live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.sandbox_id);
            }
        }
        // kubelet removes the pod's cgroup; runc removed the containers' own.
        for m in cgroup_mounts() {
            for d in self.cgroup_dirs() {
                let _ = std::fs::remove_dir(m.join(d.trim_start_matches('/')));
            }
        }
        let _ = std::fs::remove_dir_all(&self.pod_dir);
        let _ = std::fs::remove_dir_all(&self.host_dir);
    }
}

/// Rewrites the cgroupsPath of the bundle runc is about to create into the systemd driver's path shape, then
/// runs the real runc (still with its cgroupfs driver: there is no systemd here to create slices and scopes).
const RUNC_SYSTEMD_SHAPE: &str = r##"#!/bin/sh
bundle=
prev=
for a in "$@"; do
    case "$prev" in --bundle|-b) bundle=$a ;; esac
    case "$a" in --bundle=*) bundle=${a#--bundle=} ;; esac
    prev=$a
done
cfg="$bundle/config.json"
if [ -n "$bundle" ] && [ -f "$cfg" ]; then
    cur=$(sed -n 's/.*"cgroupsPath":"\([^"]*\)".*/\1/p' "$cfg")
    rest=${cur#/kubepods/}
    if [ "$rest" != "$cur" ]; then
        id=${rest##*/}
        rest=${rest%/*}
        pod=${rest##*/}
        uid=$(printf '%s' "${pod#pod}" | tr - _)
        case "$rest" in
            */*) qos=${rest%%/*}; new="/kubepods.slice/kubepods-$qos.slice/kubepods-$qos-pod$uid.slice/cri-containerd-$id.scope" ;;
            *) new="/kubepods.slice/kubepods-pod$uid.slice/cri-containerd-$id.scope" ;;
        esac
        sed -i "s#\"cgroupsPath\":\"$cur\"#\"cgroupsPath\":\"$new\"#" "$cfg"
    fi
fi
exec runc "$@"
"##;

fn containerd_config(d: &Path) -> String {
    let d = d.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
temp = "{d}/tmp"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.runtime.v1.linux"]
  shim = "containerd-shim"
  runtime = "runc"
  runtime_root = "{d}/runc-v1"
  no_shim = false
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: without this, sandboxes fail with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.systemd-shape]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.systemd-shape.options]
        SystemdCgroup = false
        Root = "{d}/runc"
        BinaryName = "{d}/bin/runc-systemd-shape"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.shimv1]
      runtime_type = "io.containerd.runtime.v1.linux"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.shimv1.options]
        Runtime = "runc"
        RuntimeRoot = "{d}/runc-v1"
"#
    )
}

/// A docker-archive tarball (`image.tar`) of busybox-static with every applet as a symlink, whose command
/// sleeps for ever. Built with tar and sha256sum; no registry.
fn build_image(dir: &Path) -> Result<(), String> {
    let script = format!(
        r#"set -e
cd '{d}'
mkdir -p root/bin root/etc root/tmp root/proc root/sys root/dev root/root root/var out
cp /bin/busybox root/bin/busybox
for a in $(root/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "root/bin/$a"; done
tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C root -cf layer.tar .
l=$(sha256sum layer.tar | cut -d' ' -f1)
mkdir "out/$l" && mv layer.tar "out/$l/layer.tar"
printf '{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sleep","2147483647"],"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' "$l" > config.json
c=$(sha256sum config.json | cut -d' ' -f1)
mv config.json "out/$c.json"
printf '[{{"Config":"%s.json","RepoTags":["{IMAGE}"],"Layers":["%s/layer.tar"]}}]' "$c" "$l" > out/manifest.json
tar -C out -cf image.tar .
rm -rf root out
"#,
        d = dir.display()
    );
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "building the image (needs busybox-static): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Cleans the node directories of earlier runs of any test binary whose process is gone (killed before its
/// exit hook ran).
fn sweep_stale_nodes() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wonk-node-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            // Its containerd, if it outlived the test binary, is found by its recorded pid.
            let dir = e.path();
            if let Some(cpid) = std::fs::read_to_string(dir.join("containerd.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                if cmdline(cpid).contains(&dir.join("config.toml").display().to_string()) {
                    kill_and_wait(cpid, rustix::process::Signal::TERM);
                }
            }
            sweep_dir(&dir);
        }
    }
}

/// Removes what a node directory's containerd left behind: shims and container processes (by the pids their
/// bundles recorded, after checking who they are), shim sockets named in the bundles' `address` files, runc
/// state of our ids under /run/containerd, cgroups named by our bundles' cgroupsPath, mounts under the
/// directory, and finally the directory. containerd itself must be stopped already.
fn sweep_dir(dir: &Path) {
    let state = dir.join("state");
    let mut cgroups: BTreeSet<String> = BTreeSet::new();
    for kind in [
        "io.containerd.runtime.v2.task",
        "io.containerd.runtime.v1.linux",
    ] {
        let Ok(nss) = std::fs::read_dir(state.join(kind)) else {
            continue;
        };
        for ns in nss.flatten() {
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for b in ids.flatten() {
                let bundle = b.path();
                let id = b.file_name().to_string_lossy().into_owned();
                if let Some(pid) = read_pid(&bundle.join("init.pid")) {
                    let cg =
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    // A container's init (pid 1 of its namespace) ignores SIGTERM: kill it.
                    if cg.contains(&id) {
                        kill_and_wait(pid, rustix::process::Signal::KILL);
                    }
                }
                if let Ok(addr) = std::fs::read_to_string(bundle.join("address")) {
                    let sock = addr.trim().trim_start_matches("unix://");
                    if sock.starts_with("/run/containerd/s/") {
                        let _ = std::fs::remove_file(sock);
                    }
                }
                let _ = std::fs::remove_dir_all(
                    Path::new("/run/containerd/runc")
                        .join(ns.file_name())
                        .join(&id),
                );
                if let Ok(cfg) = std::fs::read(bundle.join("config.json")) {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&cfg) {
                        if let Some(p) = v["linux"]["cgroupsPath"].as_str() {
                            cgroups.insert(p.to_string());
                        }
                    }
                }
            }
        }
    }
    // Shims, by the pids recorded when their pods started, if they still are those shims.
    let shims = std::fs::read_to_string(dir.join("shim-pids")).unwrap_or_default();
    for line in shims.lines() {
        if let Some((pid, id)) = line.split_once(' ') {
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let cmd = cmdline(pid);
            if cmd.contains("containerd-shim") && cmd.contains(id) {
                kill_and_wait(pid, rustix::process::Signal::KILL);
            }
        }
    }
    // Mounts under our directory (container roots, the shm of sandboxes), deepest first.
    let prefix = format!("{}/", dir.display());
    for _ in 0..3 {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        if points.is_empty() {
            break;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    // Container cgroups, then their pod's, then the QoS levels this run created (only if empty).
    let pre = std::fs::read_to_string(dir.join("preexisting-cgroups")).unwrap_or_default();
    let pre: BTreeSet<&str> = pre.lines().collect();
    let uids = std::fs::read_to_string(dir.join("pod-uids")).unwrap_or_default();
    for m in cgroup_mounts() {
        for cg in &cgroups {
            let leaf = m.join(cg.trim_start_matches('/'));
            let _ = std::fs::remove_dir(&leaf);
            if let Some(pod) = leaf.parent() {
                let _ = std::fs::remove_dir(pod);
            }
        }
        // Pod cgroups of our pod uids, in either layout, with any (empty) container cgroups left in them.
        for uid in uids.lines().filter(|u| !u.is_empty() && !u.contains('/')) {
            for pod in pod_cgroup_dirs(uid) {
                let p = m.join(pod);
                if let Ok(rd) = std::fs::read_dir(&p) {
                    for e in rd.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            let _ = std::fs::remove_dir(e.path());
                        }
                    }
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
        for q in QOS_DIRS.iter().rev() {
            let p = m.join(q);
            if !pre.contains(p.display().to_string().as_str()) {
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Where a pod's cgroup may be, relative to a hierarchy's root: every QoS class, both drivers' layouts.
fn pod_cgroup_dirs(uid: &str) -> Vec<String> {
    let u_ = uid.replace('-', "_");
    let mut v = vec![
        format!("kubepods/pod{uid}"),
        format!("kubepods.slice/kubepods-pod{u_}.slice"),
    ];
    for q in ["burstable", "besteffort"] {
        v.push(format!("kubepods/{q}/pod{uid}"));
        v.push(format!(
            "kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u_}.slice"
        ));
    }
    v
}

fn append_line(p: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    writeln!(f, "{line}").unwrap();
}

/// The mount points of every cgroup hierarchy (v1 controllers, named hierarchies, v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_pid(p: &Path) -> Option<u32> {
    std::fs::read_to_string(p)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 1)
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `first`, then SIGKILL after 5 s, for a process that is not our child (waits for /proc/PID to go, or to
/// become a zombie of someone else).
fn kill_and_wait(pid: u32, first: rustix::process::Signal) {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let gone = || !alive(pid);
    let _ = rustix::process::kill_process(p, first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone() {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// SIGTERM to our child, then SIGKILL after 10 s; always reaped.
fn stop_process(child: &mut Child) {
    if let Some(p) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}

fn write_exec(p: &Path, s: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o755)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(s.as_bytes()).map_err(|e| e.to_string())
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        & 0xffff_ffff_ffff
}
