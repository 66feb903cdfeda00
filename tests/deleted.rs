//! `wonk deleted` on real objects: a process in a pod's cgroup holding an fd on a deleted 50 MB file on a small
//! loop-mounted ext4.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;

/// The ways `wonk deleted` can list open files: the BPF walk and the per-object BPF iterators (what kernels
/// before 6.7 run, forced with WONK_BPF_PER_TASK=1) when built with the `bpf` feature, and /proc. Each is
/// (label, --source, per-object).
fn sources() -> Vec<(&'static str, &'static str, bool)> {
    let mut v = vec![("proc", "proc", false)];
    if cfg!(feature = "bpf") {
        v.push(("bpf walk", "bpf", false));
        v.push(("bpf per-object", "bpf", true));
    }
    v
}

/// `wonk deleted ARGS --source SOURCE --json`: exit code and report; checks that the source asked for ran.
fn deleted(source: (&str, &str, bool), args: &[&str]) -> (i32, Value) {
    let (label, src, per_object) = source;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wonk"));
    cmd.arg("deleted")
        .args(args)
        .args(["--source", src, "--json"]);
    if per_object {
        cmd.env("WONK_BPF_PER_TASK", "1");
    }
    let out = cmd.output().unwrap();
    let code = out.status.code().expect("wonk was killed by a signal");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{label}: no JSON ({e}); exit {code}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(r["checks"][0]["details"]["source"], src, "{label}: {r:#}");
    (code, r)
}

#[test]
fn a_pods_fd_on_a_deleted_50mb_file_is_a_warning_with_pid_fd_bytes_and_owner() {
    require_root!();
    let mut s = Scratch::new("deleted");
    let uid = "5d5d5d5d-1111-4222-8333-444444444444";
    let cid = "d0d0".repeat(16);
    // 200 MB: 50 MB held is a quarter of it, far above the 5% default.
    let (mnt, dev) = s.ext4("fs", "200M", "");
    let log = mnt.join("app.log");
    s.sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=50 status=none && sync",
        log.display()
    ));
    let pid = s.spawn_ns(&format!("exec 7>>'{}'", log.display()));
    let cg = s.cgroup(&format!("kubepods/burstable/pod{uid}/{cid}"), pid);
    s.bundle(
        "state",
        &cid,
        &Pod::new("shop", "logger-0", uid, &cid)
            .container("app")
            .cgroup(&cg)
            .spec(),
    );
    std::fs::remove_file(&log).unwrap();

    let state = s.s("state");
    for source in sources() {
        let (code, r) = deleted(source, &["--containerd-state", &state]);
        assert_eq!(code, 1, "{}: {r:#}", source.0);
        let pid_s = pid as u64;
        let f = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["evidence"]["pid"] == pid_s)
            .unwrap_or_else(|| panic!("no finding for pid {pid}: {r:#}"));
        assert_eq!(f["check"], "deleted");
        assert_eq!(f["kind"], "share");
        assert_eq!(f["severity"], "warning");
        assert_eq!(f["owner"]["namespace"], "shop");
        assert_eq!(f["owner"]["pod"], "logger-0");
        assert_eq!(f["owner"]["container"], "app");
        let ev = &f["evidence"];
        assert_eq!(ev["size_bytes"], 50u64 << 20);
        assert_eq!(ev["allocated_bytes"], 50u64 << 20, "{ev:#}");
        assert_eq!(ev["mount_point"], mnt.display().to_string());
        assert_eq!(ev["fs_type"], "ext4");
        let file = &ev["files"][0];
        assert_eq!(file["via"], "fd");
        assert_eq!(file["fd"], 7);
        assert_eq!(file["path"], log.display().to_string());
        assert_eq!(file["size_bytes"], 50u64 << 20);
        let held = ev["held_percent"].as_f64().unwrap();
        assert!(held > 20.0 && held < 30.0, "{held}");
        assert!(
            f["advice"].as_array().unwrap().iter().any(|a| a
                .as_str()
                .unwrap()
                .contains(&format!(": > /proc/{pid}/fd/7"))),
            "{f:#}"
        );
        // The filesystem's fold, and the owner's.
        let details = r["checks"][0]["details"].clone();
        let fs = details["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["mount_point"] == mnt.display().to_string())
            .unwrap();
        assert_eq!(fs["held_bytes"], 50u64 << 20);
        assert_eq!(fs["verdict"], "share");
        let major_minor = s.sh(&format!("stat -c '%t:%T' {dev}"));
        let (ma, mi) = major_minor.split_once(':').unwrap();
        let want = format!(
            "{}:{}",
            u32::from_str_radix(ma, 16).unwrap(),
            u32::from_str_radix(mi, 16).unwrap()
        );
        assert_eq!(fs["device"], want);
        assert!(details["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["owner"]["pod"] == "logger-0" && g["allocated_bytes"] == (50u64 << 20)));

        // Above the share asked for, no finding.
        let (code, r) = deleted(source, &["--share", "40", "--containerd-state", &state]);
        assert!(
            !r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["evidence"]["pid"] == pid_s),
            "{r:#}"
        );
        assert!(code == 0 || code == 1);
    }
}

#[test]
fn a_deleted_file_mapped_and_not_open_counts_as_mmap() {
    require_root!();
    let present = std::process::Command::new("python3")
        .arg("-c")
        .arg("import ctypes")
        .status()
        .is_ok_and(|s| s.success());
    if !present_or_skip(
        "a_deleted_file_mapped_and_not_open_counts_as_mmap",
        present,
        "python3",
    ) {
        return;
    }
    let mut s = Scratch::new("deleted-mmap");
    let (mnt, _) = s.ext4("fs", "64M", "");
    let f = mnt.join("blob");
    s.sh(&format!(
        "dd if=/dev/urandom of='{}' bs=1M count=8 status=none",
        f.display()
    ));
    // Maps the file with mmap(2) itself (Python's mmap module keeps a dup of the fd), closes the fd, deletes the file, then waits.
    let script = format!(
        "import ctypes,os,sys,time\nfd=os.open('{p}',os.O_RDONLY)\nlibc=ctypes.CDLL(None,use_errno=True)\n\
         libc.mmap.restype=ctypes.c_void_p\nlibc.mmap.argtypes=[ctypes.c_void_p,ctypes.c_size_t,ctypes.c_int,ctypes.c_int,ctypes.c_int,ctypes.c_long]\n\
         a=libc.mmap(None,8<<20,1,1,fd,0)\nassert a not in (None,ctypes.c_void_p(-1).value)\nos.close(fd)\n\
         os.unlink('{p}')\nsys.stdout.write('ready\\n');sys.stdout.flush()\ntime.sleep(100000)\n",
        p = f.display()
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    s.record_pid(pid);
    assert_eq!(line.trim(), "ready");
    for source in sources() {
        let (_, r) = deleted(source, &["--share", "1"]);
        let f = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["evidence"]["pid"] == pid as u64)
            .unwrap_or_else(|| panic!("no finding for pid {pid}: {r:#}"));
        let file = &f["evidence"]["files"][0];
        assert_eq!(file["via"], "mmap");
        assert_eq!(file["fd"], serde_json::Value::Null);
        assert_eq!(file["size_bytes"], 8u64 << 20);
        assert!(f["advice"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("SIGBUS")));
    }
    drop(s);
    let _ = child.wait();
}

/// `auto` takes the BPF iterators where they run (as root on this kernel), and says so.
#[cfg(feature = "bpf")]
#[test]
fn auto_takes_the_bpf_iterators() {
    require_root!();
    let (_, r) = wonk_json(&["deleted"]);
    let d = &r["checks"][0]["details"];
    assert_eq!(d["source"], "bpf", "{d:#}");
    assert!(d.get("fallback").is_none(), "{d:#}");
    assert!(d["fds_read"].as_u64().unwrap() > 0 && d["processes"].as_u64().unwrap() > 1);
}

/// Without the `bpf` feature, `--source bpf` fails with the reason, and `auto` reads /proc and says why.
#[cfg(not(feature = "bpf"))]
#[test]
fn without_the_bpf_feature_source_bpf_is_refused_and_auto_reads_proc() {
    let (code, r) = wonk_json(&["deleted", "--source", "bpf"]);
    assert_eq!(code, 3, "{r:#}");
    assert!(r["checks"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("cargo feature `bpf`")));
    let (_, r) = wonk_json(&["deleted"]);
    let d = &r["checks"][0]["details"];
    assert_eq!(d["source"], "proc");
    assert!(d["fallback"]
        .as_str()
        .unwrap()
        .contains("cargo feature `bpf`"));
}
