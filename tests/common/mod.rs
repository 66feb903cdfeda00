//! Shared harness for the integration tests: real mount namespaces, bind mounts, cgroups and loop devices,
//! each recorded when made and undone in `Drop`, even when the test fails.
#![allow(dead_code)]

pub mod agent;
pub mod enospc;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Returns from the enclosing test unless it runs as root. Without root the test is skipped with a message; with
/// `CI=true` it fails instead, since CI must run it. The test is named from the enclosing function.
#[allow(unused_macros)]
macro_rules! require_root {
    () => {
        if !crate::common::root_or_skip(crate::common::test_name(std::any::type_name_of_val(
            &|| (),
        ))) {
            return;
        }
    };
}

/// The test's path (`who::who_names_a_path`) from the type name of a closure inside it.
pub fn test_name(closure: &str) -> &str {
    closure.trim_end_matches("::{{closure}}")
}

/// A command that reports its own peak resident memory: run under GNU time (`/usr/bin/time -f %M -o FILE`), read
/// back with [`peak_rss_kib`]. A child's own `ru_maxrss` cannot tell it: the kernel keeps, across exec, the
/// high-water mark of the process it was forked from, and a test binary running many tests at once can be larger
/// than anything wonk does; time forks wonk from its own small process.
pub fn measured(rss_file: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(rss_file).arg(program);
    c
}

/// The peak resident memory in KiB that [`measured`] wrote.
pub fn peak_rss_kib(rss_file: &Path) -> i64 {
    let text = std::fs::read_to_string(rss_file).unwrap();
    text.lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS in {}: {text}", rss_file.display()))
}

/// True when the test can run. Root-only tests skip without root, except in CI, where they must run.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI=true: it must not be skipped");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// True when the test can run; otherwise, because `what` is absent from this machine, it skips, except in CI,
/// where it must run.
pub fn present_or_skip(test: &str, present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {what}, and CI=true: it must not be skipped");
    }
    eprintln!("skipping {test}: needs {what}");
    false
}

/// A scratch area and everything made in it.
pub struct Scratch {
    pub dir: PathBuf,
    children: Vec<Child>,
    extra_pids: Vec<u32>,
    host_mounts: Vec<PathBuf>,
    loops: Vec<String>,
    cgroups: Vec<PathBuf>,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wonk-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            children: Vec::new(),
            extra_pids: Vec::new(),
            host_mounts: Vec::new(),
            loops: Vec::new(),
            cgroups: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// Writes a file, making its parent directories.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Starts a process in a new private mount namespace that runs `setup` (sh), then sleeps. Returns its pid
    /// once `setup` has finished. `unshare` and `sh` exec, so the pid is the sleeping process.
    pub fn spawn_ns(&mut self, setup: &str) -> u32 {
        self.spawn(
            &["unshare", "-m", "--propagation", "private", "sh", "-c"],
            setup,
        )
    }

    /// Like [`spawn_ns`], but the process finally execs `exec` (which must not exit) instead of sleep. The pid
    /// is returned when `setup` is done; the exec may still be under way.
    pub fn spawn_ns_exec(&mut self, setup: &str, exec: &str) -> u32 {
        let script = format!("set -e\n{setup}\necho ready\nexec {exec}");
        self.spawn_script(
            &["unshare", "-m", "--propagation", "private", "sh", "-c"],
            &script,
        )
    }

    /// Copies `/bin/sleep` and the libraries it links into the directory `rel`, an image layer that can run it.
    pub fn sleep_image(&self, rel: &str) {
        self.sh(&format!(
            "mkdir -p {l}/bin && cp /bin/sleep {l}/bin/ && for x in $(ldd /bin/sleep | grep -o '/[^ ]*'); do mkdir -p {l}$(dirname $x); cp $x {l}$x; done",
            l = self.s(rel)
        ));
    }

    /// Like [`spawn_ns_exec`], then `chroot ROOTFS /bin/sleep` (see [`sleep_image`]); returns the pid once its
    /// root is `rootfs`.
    pub fn spawn_chrooted(&mut self, setup: &str, rootfs: &Path) -> u32 {
        let pid = self.spawn_ns_exec(
            setup,
            &format!("chroot {} /bin/sleep 100000", rootfs.display()),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/root")).map_or(true, |l| l != rootfs) {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} did not chroot to {} within 10 s",
                rootfs.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        pid
    }

    fn spawn(&mut self, argv: &[&str], setup: &str) -> u32 {
        let pid = self.spawn_script(
            argv,
            &format!("set -e\n{setup}\necho ready\nexec sleep 100000"),
        );
        // "ready" comes before the exec: wait for it, so that tests see sleep and not sh.
        let comm = format!("/proc/{pid}/comm");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} did not exec sleep within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        pid
    }

    fn spawn_script(&mut self, argv: &[&str], script: &str) -> u32 {
        let setup = script;
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.children.push(child);
        assert_eq!(line.trim(), "ready", "setup failed: {setup}");
        pid
    }

    /// Starts a plain process, recorded for Drop.
    pub fn spawn_cmd(&mut self, cmd: &mut Command) -> u32 {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts `n` processes (named `wonk-vfork-d`) that sit in D state until killed: each is a parent blocked in
    /// vfork() while its child pauses. Returns the parents' pids, once each is in D state; the children are
    /// recorded too.
    pub fn d_state(&mut self, n: usize) -> Vec<u32> {
        const HELPER: &str = "#include <unistd.h>\nint main(void) {\n    if (vfork() == 0) { pause(); _exit(0); }\n    return 0;\n}\n";
        let src = self.write("vfork_d.c", HELPER);
        let bin = self.path("wonk-vfork-d");
        if !bin.exists() {
            let cc = Command::new("cc")
                .arg("-O")
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .status()
                .expect("cc");
            assert!(cc.success());
        }
        let mut parents = Vec::new();
        for _ in 0..n {
            parents.push(self.spawn_cmd(&mut Command::new(&bin)));
        }
        // The vfork children are not ours to spawn, but we record them to kill them.
        for &p in &parents {
            let child: u32 = self
                .sh(&format!("for i in $(seq 100); do c=$(cat /proc/{p}/task/{p}/children 2>/dev/null); [ -n \"$c\" ] && echo $c && break; sleep 0.02; done"))
                .trim()
                .parse()
                .expect("vfork child");
            self.record_pid(child);
            self.sh(&format!("for i in $(seq 100); do [ \"$(cut -d' ' -f3 /proc/{p}/stat)\" = D ] && break; sleep 0.02; done"));
        }
        parents
    }

    /// Records a process that we did not spawn ourselves but caused, so that Drop kills it (SIGKILL, by pid).
    pub fn record_pid(&mut self, pid: u32) {
        self.extra_pids.push(pid);
    }

    /// Kills one of our processes (by the pid we recorded) and reaps it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a shell command in wonk's namespace and asserts it succeeded.
    pub fn sh(&self, cmd: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Bind-mounts in wonk's own (the host's) namespace; undone in Drop.
    pub fn host_bind(&mut self, src: &Path, dst: &Path) {
        self.sh(&format!(
            "mount --bind '{}' '{}'",
            src.display(),
            dst.display()
        ));
        self.host_mounts.push(dst.to_path_buf());
    }

    /// Runs `mount ARGS DST` in wonk's own (the host's) namespace, making DST first; undone in Drop.
    pub fn host_mount(&mut self, args: &str, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        self.sh(&format!("mount {args} '{}'", dst.display()));
        self.host_mounts.push(dst.to_path_buf());
    }

    /// Mounts a fresh ext4 image on a loop device; both are undone in Drop.
    pub fn ext4(&mut self, name: &str, size: &str, mkfs_opts: &str) -> (PathBuf, String) {
        let img = self.path(&format!("{name}.img"));
        let mnt = self.path(name);
        std::fs::create_dir_all(&mnt).unwrap();
        self.sh(&format!(
            "truncate -s {size} '{}' && mkfs.ext4 -q {mkfs_opts} '{}'",
            img.display(),
            img.display()
        ));
        let dev = self.sh(&format!("losetup --find --show '{}'", img.display()));
        self.loops.push(dev.clone());
        self.sh(&format!("mount '{dev}' '{}'", mnt.display()));
        self.host_mounts.push(mnt.clone());
        (mnt, dev)
    }

    /// Creates `rel` (slash-separated) under a private directory of the cgroup v1 memory hierarchy, moves `pid`
    /// into it, and returns the cgroup path as /proc/PID/cgroup shows it.
    pub fn cgroup(&mut self, rel: &str, pid: u32) -> String {
        self.cgroup_in("memory", rel, Some(pid))
    }

    /// The private directory this test's cgroups are made under, as a cgroup path (`/wonk-test-NAME-PID`): what
    /// kubelet calls its --cgroup-root.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.dir.file_name().unwrap().to_str().unwrap())
    }

    /// Creates `rel` under [`Scratch::cgroup_parent`] of the hierarchy mounted at /sys/fs/cgroup/HIERARCHY
    /// (`unified` is cgroup v2 on the test machine, `pids` and `memory` v1), moves `pid` into it when given, and
    /// returns the cgroup path as /proc/PID/cgroup shows it. Removed in Drop, deepest first.
    pub fn cgroup_in(&mut self, hierarchy: &str, rel: &str, pid: Option<u32>) -> String {
        let mount = Path::new("/sys/fs/cgroup").join(hierarchy);
        let base = mount.join(self.dir.file_name().unwrap());
        let mut p = base.clone();
        for comp in std::iter::once("").chain(rel.split('/')) {
            if !comp.is_empty() {
                p.push(comp);
            }
            if !p.exists() {
                std::fs::create_dir(&p).unwrap();
                self.cgroups.push(p.clone());
            }
        }
        if let Some(pid) = pid {
            std::fs::write(p.join("cgroup.procs"), pid.to_string()).unwrap();
        }
        Path::new("/")
            .join(p.strip_prefix(&mount).unwrap())
            .display()
            .to_string()
    }

    /// Whether cgroup v2 is mounted at /sys/fs/cgroup/unified with pressure files (a hybrid layout).
    pub fn has_unified_psi() -> bool {
        Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
            && Path::new("/sys/fs/cgroup/unified/io.pressure").exists()
    }

    /// Writes a containerd task bundle's config.json under `state` (shim v2 layout).
    pub fn bundle(&self, state: &str, id: &str, spec: &Value) {
        self.bundle_in(state, "io.containerd.runtime.v2.task", id, spec)
    }

    /// Writes a bundle under `state/<runtime dir>/k8s.io/<id>/` (`io.containerd.runtime.v1.linux` for shim v1).
    pub fn bundle_in(&self, state: &str, runtime_dir: &str, id: &str, spec: &Value) {
        let p = self.path(&format!("{state}/{runtime_dir}/k8s.io/{id}/config.json"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let killed: Vec<u32> = self.extra_pids.drain(..).collect();
        for &pid in &killed {
            // SAFETY: kill(2) with a pid this test recorded.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed process holds its files and mappings until it has exited (a zombie holds none): wait for that,
        // or the filesystems they are on cannot be unmounted yet.
        for pid in killed {
            for _ in 0..250 {
                let gone_or_zombie =
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                        st.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    });
                if gone_or_zombie {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        for m in self.host_mounts.drain(..).rev() {
            // Busy for a moment after its last user exits (a lazy close, a reaped process's last reference).
            let unmounted = (0..50).any(|i| {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Command::new("umount")
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !unmounted {
                eprintln!("scratch: {} is still mounted (busy)", m.display());
            }
        }
        for l in self.loops.drain(..) {
            let _ = Command::new("losetup").arg("-d").arg(&l).status();
        }
        for c in self.cgroups.drain(..).rev() {
            // A killed process leaves its cgroup once it is reaped, and its orphans once init reaps them.
            for _ in 0..50 {
                if std::fs::remove_dir(&c).is_ok() || !c.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A counter of a check's output, by name (panics when the check has none of that name).
pub fn stat(out: &wonk::finding::CheckOutput, name: &str) -> u64 {
    out.stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}: {:?}", out.stats))
        .1
}

/// The pod with `uid` in a check's `details.pods` (pressure, pids, cgroups).
pub fn pod_by_uid<'a>(details: &'a Value, uid: &str) -> &'a Value {
    details["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["owner"]["pod_uid"] == uid)
        .unwrap_or_else(|| panic!("pod {uid} not in {details:#}"))
}

/// Runs wonk with `--json` and returns its exit code and parsed output.
pub fn wonk_json(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let code = out.status.code().expect("wonk was killed by a signal");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wonk {args:?} printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

/// Runs wonk and returns exit code, stdout and stderr.
pub fn wonk(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().expect("wonk was killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shim with `pid` in a `wonk shims --json` report.
pub fn shim_by_pid(report: &Value, pid: u32) -> Value {
    report["checks"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("no shim {pid} in {report:#}"))
}

/// The findings whose subject is `subject`.
pub fn findings_for<'a>(report: &'a Value, subject: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["subject"] == subject)
        .collect()
}

/// The inode number of a path.
pub fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

/// A kernel setting under /proc/sys (or /sys), changed for the length of a test and restored in Drop: on every
/// exit path, a failed assertion included.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Sets `path` (for example /proc/sys/kernel/printk_devkmsg) to `value`.
    pub fn set(path: &str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string();
        let guard = Sysctl {
            path: PathBuf::from(path),
            old,
        };
        // Some handlers (printk_devkmsg) insist on the trailing newline that `echo` writes.
        std::fs::write(path, format!("{value}\n"))
            .unwrap_or_else(|e| panic!("{path} = {value}: {e}"));
        guard
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, format!("{}\n", self.old)) {
            eprintln!(
                "could not restore {} to {:?}: {e}",
                self.path.display(),
                self.old
            );
        }
    }
}

/// A CRI-style config.json for a container or a sandbox.
#[allow(clippy::too_many_arguments)] // one argument per field a test varies
/// A pod as containerd's CRI plugin records it in its bundles' annotations, to stage bundles with.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
}

impl Pod {
    pub fn new(namespace: &str, name: &str, uid: &str, sandbox_id: &str) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            sandbox_id: sandbox_id.into(),
        }
    }

    /// The sandbox's config.json.
    pub fn sandbox(&self) -> Value {
        self.bundle("sandbox", None, "", serde_json::json!([]))
    }

    /// One of its containers, to finish with [`Container::spec`].
    pub fn container(&self, name: &str) -> Container {
        Container {
            pod: self.clone(),
            name: name.into(),
            cgroup: String::new(),
            mounts: serde_json::json!([]),
        }
    }

    fn bundle(&self, kind: &str, container: Option<&str>, cgroup: &str, mounts: Value) -> Value {
        let mut ann = serde_json::json!({
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": self.sandbox_id,
            "io.kubernetes.cri.sandbox-name": self.name,
            "io.kubernetes.cri.sandbox-namespace": self.namespace,
            "io.kubernetes.cri.sandbox-uid": self.uid,
        });
        if let Some(name) = container {
            ann["io.kubernetes.cri.container-name"] = name.into();
            ann["io.kubernetes.cri.image-name"] = "localhost/wonk-busybox:1".into();
        }
        serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "root": {"path": "rootfs"},
            "mounts": mounts,
            "annotations": ann,
            "linux": {"cgroupsPath": cgroup},
        })
    }
}

/// A container of a [`Pod`], as its bundle's config.json says.
#[derive(Debug, Clone)]
pub struct Container {
    pod: Pod,
    name: String,
    cgroup: String,
    mounts: Value,
}

impl Container {
    /// `linux.cgroupsPath`.
    pub fn cgroup(mut self, cgroup: &str) -> Container {
        self.cgroup = cgroup.into();
        self
    }

    /// The OCI `mounts` array.
    pub fn mounts(mut self, mounts: Value) -> Container {
        self.mounts = mounts;
        self
    }

    pub fn spec(&self) -> Value {
        self.pod.bundle(
            "container",
            Some(&self.name),
            &self.cgroup,
            self.mounts.clone(),
        )
    }
}

/// The device byte offset of directory-logical block `lblk` of `rel` (a path inside the filesystem), by
/// `debugfs -R "bmap REL LBLK" DEV`.
pub fn physical(dev: &str, rel: &str, lblk: u32, bs: u64) -> u64 {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("bmap {rel} {lblk}"))
        .arg(dev)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("debugfs bmap {rel} {lblk}: {text:?}"))
        * bs
}

/// Writes `bytes` at byte offset `off` of device `dev` (through its page cache).
pub fn poke(dev: &str, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(bytes, off).unwrap();
}
