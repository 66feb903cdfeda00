//! Attacks on how wonk finds containerd and reads its state: a process posing as containerd or as a shim, a FIFO
//! or a device node where containerd's config or state should be, bundles that cost unbounded memory, a bundle
//! with another container's id in another containerd namespace, and a cgroup named after another container.

use crate::common::*;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run of wonk that blocks is a failure, not a hung test.
const WATCHDOG: Duration = Duration::from_secs(60);

/// What one run of wonk gave: exit code, JSON, and peak resident memory in KiB.
struct Run {
    code: i32,
    json: Value,
    max_rss_kib: i64,
}

/// Runs `wonk ARGS --json`, killed (by its pid) and failed when it runs past [`WATCHDOG`], as an open of a FIFO
/// would make it.
fn watched(s: &Scratch, args: &[&str]) -> Run {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = s.path(&format!("wonk-{n}.out"));
    let err_path = s.path(&format!("wonk-{n}.err"));
    let rss_path = s.path(&format!("wonk-{n}.rss"));
    // Its own process group, so that the watchdog kills time and wonk together.
    let child = measured(&rss_path, env!("CARGO_BIN_EXE_wonk"))
        .process_group(0)
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let t = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on the pid of a child we spawned and have not reaped.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if t.elapsed() > WATCHDOG {
            // SAFETY: kill(2) and wait4 of our own child, not yet reaped.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, std::ptr::null_mut());
            }
            panic!("wonk {args:?} did not finish within {WATCHDOG:?}: it blocked");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The child is reaped; the handle must not wait for it again.
    std::mem::forget(child);
    let out = std::fs::read(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status),
        "wonk {args:?} was killed by a signal\nstderr: {err}"
    );
    let code = libc::WEXITSTATUS(status);
    let json = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "wonk {args:?} printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {err}",
            String::from_utf8_lossy(&out)
        )
    });
    let _ = usage;
    Run {
        code,
        json,
        max_rss_kib: peak_rss_kib(&rss_path),
    }
}

/// A stand-in daemon named `name` that only waits, whatever its arguments: built here, so it is root's, mode
/// 0755, unless the test changes that.
fn stand_in(s: &Scratch, name: &str) -> PathBuf {
    let src = s.path("bin/pause.c");
    if !src.exists() {
        s.write(
            "bin/pause.c",
            "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
        );
    }
    let bin = s.path(&format!("bin/{name}"));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let ok = Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cc failed");
    bin
}

/// Waits until `pid` runs a program whose comm is `comm` (an exec may still be under way).
fn wait_comm(pid: u32, comm: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        != comm
    {
        assert!(Instant::now() < deadline, "{pid} did not become {comm}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `argv` in a new pid namespace (`unshare -p --fork`, plus `extra` flags) and returns the host pid of the
/// process inside, once it runs a program with comm `comm`. `--kill-child` ends it when unshare, which Scratch
/// records and kills, dies.
fn in_new_pid_ns(s: &mut Scratch, extra: &[&str], argv: &[&str], comm: &str) -> u32 {
    let unshare = s.spawn_cmd(
        Command::new("unshare")
            .args(["-p", "--fork", "--kill-child"])
            .args(extra)
            .args(argv),
    );
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let list = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = list.split_whitespace().next() {
            break pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "unshare {unshare} started no child"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    wait_comm(pid, comm);
    pid
}

/// The one blind spot whose text mentions every one of `needles`; fails unless there is exactly one.
fn one_blind_spot<'a>(v: &'a Value, needles: &[&str]) -> &'a Value {
    let spots: Vec<&Value> = v["blind_spots"]
        .as_array()
        .unwrap_or_else(|| panic!("no blind_spots in {v:#}"))
        .iter()
        .filter(|b| {
            let text = format!("{} {}", b["what"], b["why"]);
            needles.iter().all(|n| text.contains(n))
        })
        .collect();
    assert_eq!(spots.len(), 1, "{needles:?} in {:#}", v["blind_spots"]);
    spots[0]
}

/// `wonk who PID [--containerd-state STATE]`, which must succeed.
fn who(s: &Scratch, pid: u32, state: Option<&str>) -> Run {
    let pid = pid.to_string();
    let state = state.map(|st| s.s(st));
    let mut args = vec!["who", &pid];
    if let Some(st) = &state {
        args.extend(["--containerd-state", st]);
    }
    let r = watched(s, &args);
    assert_eq!(r.code, 0, "{:#}", r.json);
    r
}

/// A process in a pod's cgroup (`kubepods/pod<uid>/<cid>`), and that cgroup: `who` of it reads containerd's
/// state, to name the container.
fn pod_member(s: &mut Scratch, uid: &str, cid: &str) -> (u32, String) {
    let pid = s.spawn_ns("true");
    let cg = s.cgroup(&format!("kubepods/pod{uid}/{cid}"), pid);
    (pid, cg)
}

/// A process in a pod's cgroup (`kubepods/pod<uid>/<cid>`), with a container bundle naming pod `pod` under
/// `state`. Returns its pid.
fn pod_process(s: &mut Scratch, state: &str, uid: &str, cid: &str, pod: &str) -> u32 {
    let (pid, cg) = pod_member(s, uid, cid);
    s.bundle(
        state,
        cid,
        &Pod::new("shop", pod, uid, cid)
            .container("app")
            .cgroup(&cg)
            .spec(),
    );
    pid
}

/// Stages a process named `containerd`, started by `spawn` with its argv, whose `--config` is a FIFO in what
/// could be its emptyDir and whose `--state` is a directory it filled with a bundle that renames a pod (`tag`
/// keeps ids apart). wonk must neither block on the FIFO nor believe the bundle, and must say which process it
/// did not trust and why (`reason`).
fn untrusted_containerd(
    name: &str,
    tag: &str,
    spawn: impl FnOnce(&mut Scratch, &[&str]) -> u32,
    reason: &str,
) {
    let mut s = Scratch::new(name);
    let bin = stand_in(&s, "containerd");
    let fifo = s.path("evil/config.toml");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    s.sh(&format!("mkfifo '{}'", fifo.display()));
    let uid = format!("{tag}{tag}{tag}{tag}-0000-4000-8000-000000000001");
    let cid = tag.repeat(32);
    let victim = pod_process(
        &mut s,
        "evil/state",
        &uid,
        &cid,
        "forged-by-fake-containerd",
    );
    let state = s.s("evil/state");
    let argv = [
        bin.to_str().unwrap(),
        "--config",
        fifo.to_str().unwrap(),
        "--state",
        &state,
    ];
    let fake = spawn(&mut s, &argv);
    wait_comm(fake, "containerd");
    let r = who(&s, victim, None);
    assert_ne!(
        r.json["owner"]["pod"], "forged-by-fake-containerd",
        "{:#}",
        r.json
    );
    assert_eq!(r.json["owner"]["container_id"], cid.as_str());
    let spot = one_blind_spot(&r.json, &[&format!("pid {fake}: "), reason]);
    assert!(
        spot["what"].as_str().unwrap().contains("named containerd"),
        "{spot:#}"
    );
}

/// A process named `containerd` in a pid namespace of its own (see [`untrusted_containerd`]).
#[test]
fn containerd_in_another_pid_namespace_is_not_trusted() {
    require_root!();
    untrusted_containerd(
        "hostile-ctd-pidns",
        "a1",
        |s, argv| in_new_pid_ns(s, &[], argv, "containerd"),
        "pid namespace",
    );
}

/// The same in the host's pid namespace but a mount namespace of its own, as a hostPID pod's process is.
#[test]
fn containerd_in_another_mount_namespace_is_not_trusted() {
    require_root!();
    untrusted_containerd(
        "hostile-ctd-mntns",
        "a2",
        |s, argv| {
            s.spawn_cmd(
                Command::new("unshare")
                    .args(["-m", "--propagation", "private"])
                    .args(argv),
            )
        },
        "mnt namespace",
    );
}

/// Processes named `containerd` in the host's namespaces, run from a file that is not root's, or is root's but
/// writable by its group: a container that can write such a file cannot make wonk read its `--state`.
#[test]
fn containerd_run_from_a_file_root_does_not_own_alone_is_not_trusted() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-owner");
    let uid = "a3a3a3a3-0000-4000-8000-000000000003";
    let cid = "a3".repeat(32);
    let victim = pod_process(&mut s, "evil/state", uid, &cid, "forged-by-fake-containerd");
    let mut fakes = Vec::new();
    for (dir, fix) in [("nobody", "chown 65534"), ("groupw", "chmod 0775")] {
        let bin = stand_in(&s, &format!("{dir}/containerd"));
        s.sh(&format!("{fix} '{}'", bin.display()));
        let pid = s.spawn_cmd(Command::new(&bin).args(["--state", &s.s("evil/state")]));
        wait_comm(pid, "containerd");
        fakes.push(pid);
    }
    let r = who(&s, victim, None);
    assert_ne!(
        r.json["owner"]["pod"], "forged-by-fake-containerd",
        "{:#}",
        r.json
    );
    one_blind_spot(
        &r.json,
        &[&format!("pid {}: ", fakes[0]), "owned by uid 65534"],
    );
    one_blind_spot(
        &r.json,
        &[
            &format!("pid {}: ", fakes[1]),
            "writable by group or others (mode 775)",
        ],
    );
}

/// A containerd that wonk does trust (root's executable, the host's namespaces) whose `--config` is a FIFO, or a
/// device node, and whose `--state` is a FIFO: wonk opens none of them for reading, says what each is, and takes
/// the directories from the flags or containerd's defaults.
#[test]
fn a_fifo_or_device_where_containerd_config_or_state_should_be_is_a_blind_spot() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-fifo");
    let bin = stand_in(&s, "containerd");
    let (fifo, dev, state_fifo) = (
        s.path("config.fifo"),
        s.path("config.dev"),
        s.path("state.fifo"),
    );
    s.sh(&format!(
        "mkfifo '{}' '{}' && mknod '{}' c 1 3",
        fifo.display(),
        state_fifo.display(),
        dev.display()
    ));
    let a = s.spawn_cmd(Command::new(&bin).args([
        "--config",
        fifo.to_str().unwrap(),
        "--state",
        state_fifo.to_str().unwrap(),
    ]));
    let b = s.spawn_cmd(Command::new(&bin).args([
        "--config",
        dev.to_str().unwrap(),
        "--state",
        &s.s("dev-state"),
    ]));
    wait_comm(a, "containerd");
    wait_comm(b, "containerd");
    let (pid, _) = pod_member(
        &mut s,
        "a7a7a7a7-0000-4000-8000-000000000007",
        &"a7".repeat(32),
    );
    let r = who(&s, pid, None);
    let fifo_spot = one_blind_spot(
        &r.json,
        &[&fifo.display().to_string(), "is a FIFO, not a regular file"],
    );
    assert!(fifo_spot["why"]
        .as_str()
        .unwrap()
        .contains(&format!("containerd {a}'s config")));
    one_blind_spot(
        &r.json,
        &[
            &dev.display().to_string(),
            "is a character device, not a regular file",
        ],
    );
    one_blind_spot(
        &r.json,
        &[
            &state_fifo.display().to_string(),
            "is a FIFO, not a directory",
        ],
    );
}

/// A config.json of `bytes` bytes that parses: a sandbox spec padded with one long annotation.
fn big_spec(bytes: usize) -> Vec<u8> {
    let mut v = Pod::new("shop", "big", "u", "x").sandbox();
    v["annotations"]["pad"] = "x".repeat(bytes.saturating_sub(400)).into();
    serde_json::to_vec(&v).unwrap()
}

/// One config.json of 900 KiB hard-linked into 200 bundle directories: read once, not 200 times (which held
/// about 180 MB), and the 199 links are counted in a blind spot.
#[test]
fn hard_linked_config_json_files_are_read_once() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-links");
    let (pid, _) = pod_member(
        &mut s,
        "a8a8a8a8-0000-4000-8000-000000000008",
        &"a8".repeat(32),
    );
    let ns = s.path("state/io.containerd.runtime.v2.task/k8s.io");
    let first = ns.join(format!("{:064x}", 0)).join("config.json");
    std::fs::create_dir_all(first.parent().unwrap()).unwrap();
    std::fs::write(&first, big_spec(900 << 10)).unwrap();
    for i in 1..200 {
        let dir = ns.join(format!("{i:064x}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::hard_link(&first, dir.join("config.json")).unwrap();
    }
    let r = who(&s, pid, Some("state"));
    assert!(
        r.max_rss_kib < 64 << 10,
        "wonk's peak RSS was {} KiB, over the DaemonSet's 64 MiB",
        r.max_rss_kib
    );
    one_blind_spot(&r.json, &["199 bundles were not read", "hard link"]);
}

/// Many bundles, and many large ones: wonk reads at most 4,096 bundles and 32 MiB of config.json, and says how
/// many it passed over.
#[test]
fn bundles_are_bounded_in_count_and_bytes() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-many");
    let (pid, _) = pod_member(
        &mut s,
        "a9a9a9a9-0000-4000-8000-000000000009",
        &"a9".repeat(32),
    );
    let small = serde_json::to_vec(&Pod::new("shop", "p", "u", "x").sandbox()).unwrap();
    let many = s.path("many/io.containerd.runtime.v2.task/k8s.io");
    for i in 0..4100 {
        let dir = many.join(format!("{i:064x}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), &small).unwrap();
    }
    let r = who(&s, pid, Some("many"));
    one_blind_spot(
        &r.json,
        &["4 bundles were not read", "at most 4096 bundles"],
    );

    let large = s.path("large/io.containerd.runtime.v2.task/k8s.io");
    for i in 0..40 {
        let dir = large.join(format!("{i:064x}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), big_spec(900 << 10)).unwrap();
    }
    let r = who(&s, pid, Some("large"));
    // 36 of 900 KiB fit in 32 MiB.
    one_blind_spot(
        &r.json,
        &["4 bundles were not read", "33554432 bytes of config.json"],
    );
    assert!(r.max_rss_kib < 64 << 10, "peak RSS {} KiB", r.max_rss_kib);
}

/// A bundle with a victim container's id in another containerd namespace (read after the victim's, under shim
/// v1's directory), naming another pod: `who` must not take its names. The container is named from neither, and
/// said so; the pod is still named from its cgroup's pod uid and its own sandbox.
#[test]
fn a_bundle_with_the_same_id_in_another_namespace_does_not_rename_the_pod() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-nsid");
    let uid = "a4a4a4a4-0000-4000-8000-000000000004";
    let (cid, sid) = ("a4".repeat(32), "b4".repeat(32));
    let (pid, cg) = pod_member(&mut s, uid, &cid);
    s.bundle(
        "state",
        &cid,
        &Pod::new("shop", "victim-0", uid, &sid)
            .container("app")
            .cgroup(&cg)
            .spec(),
    );
    s.bundle(
        "state",
        &sid,
        &Pod::new("shop", "victim-0", uid, &sid).sandbox(),
    );
    let fake = s.path(&format!(
        "state/io.containerd.runtime.v1.linux/evil/{cid}/config.json"
    ));
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    let forged = Pod::new("kube-system", "forged", "f-uid", &sid)
        .container("admin")
        .cgroup(&cg)
        .spec();
    std::fs::write(&fake, serde_json::to_vec(&forged).unwrap()).unwrap();

    let r = who(&s, pid, Some("state"));
    let o = &r.json["owner"];
    assert_eq!(o["pod"], "victim-0", "{o:#}");
    assert_eq!(o["namespace"], "shop", "{o:#}");
    assert_eq!(o["pod_uid"], uid, "{o:#}");
    assert_ne!(o["container"], "admin", "{o:#}");
    one_blind_spot(&r.json, &[&format!("container {cid}"), "k8s.io", "evil"]);
}

/// A container that creates a cgroup below its own, named after another container's id, and moves a process
/// into it: `who` names the container whose cgroup is directly under the pod, not the one the name claims.
#[test]
fn a_nested_cgroup_named_after_another_container_does_not_rename_it() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-cgroup");
    let (uid_a, uid_b) = (
        "a5a5a5a5-0000-4000-8000-00000000000a",
        "a5a5a5a5-0000-4000-8000-00000000000b",
    );
    let (cid_a, cid_b) = ("a5".repeat(32), "b5".repeat(32));
    s.bundle(
        "state",
        &cid_a,
        &Pod::new("shop", "attacker-0", uid_a, &cid_a)
            .container("app")
            .spec(),
    );
    s.bundle(
        "state",
        &cid_b,
        &Pod::new("bank", "victim-0", uid_b, &cid_b)
            .container("vault")
            .spec(),
    );
    let pid = s.spawn_ns("true");
    let cg = s.cgroup(&format!("kubepods/pod{uid_a}/{cid_a}/{cid_b}"), pid);
    assert!(cg.ends_with(&format!("{cid_a}/{cid_b}")), "{cg}");
    let r = who(&s, pid, Some("state"));
    let o = &r.json["owner"];
    assert_eq!(o["container_id"], cid_a.as_str(), "{o:#}");
    assert_eq!(o["pod"], "attacker-0", "{o:#}");
    assert_eq!(o["container"], "app", "{o:#}");
}

/// Processes posing as shims of a pod's sandbox: one run from a file that is not root's, one in a pid namespace
/// of its own. `wonk shims` must not list them as that pod's shims (nor offer to reap them), and must count and
/// name them.
#[test]
fn a_process_posing_as_a_shim_is_not_trusted() {
    require_root!();
    let mut s = Scratch::new("hostile-ctd-shim");
    let uid = "a6a6a6a6-0000-4000-8000-000000000006";
    let sid = "a6".repeat(32);
    s.bundle(
        "state",
        &sid,
        &Pod::new("shop", "victim-0", uid, &sid).sandbox(),
    );
    let sock = s.s("no.sock");
    let shim_args = |bin: &Path| {
        vec![
            bin.display().to_string(),
            "-namespace".into(),
            "k8s.io".into(),
            "-id".into(),
            sid.clone(),
            "-address".into(),
            sock.clone(),
        ]
    };
    let nobody = stand_in(&s, "nobody/containerd-shim-runc-v2");
    s.sh(&format!("chown 65534 '{}'", nobody.display()));
    let args = shim_args(&nobody);
    let a = s.spawn_cmd(Command::new(&args[0]).args(&args[1..]));
    wait_comm(a, "containerd-shim");
    let root_owned = stand_in(&s, "containerd-shim-runc-v2");
    let args = shim_args(&root_owned);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = in_new_pid_ns(&mut s, &[], &argv, "containerd-shim");

    let r = watched(
        &s,
        &[
            "shims",
            "--min-age",
            "0",
            "--containerd-state",
            &s.s("state"),
        ],
    );
    let details = r.json["checks"][0]["details"].as_array().unwrap();
    for pid in [a, b] {
        assert!(
            !details.iter().any(|d| d["pid"] == pid),
            "{pid} was taken for a shim: {:#}",
            r.json
        );
    }
    assert!(
        r.json["checks"][0]["stats"]["untrusted"].as_u64().unwrap() >= 2,
        "{:#}",
        r.json["checks"][0]["stats"]
    );
    one_blind_spot(&r.json, &[&format!("pid {a}: "), "owned by uid 65534"]);
    one_blind_spot(&r.json, &[&format!("pid {b}: "), "pid namespace"]);
    assert!(!r.json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["evidence"]["pid"] == a || f["evidence"]["pid"] == b));
}
