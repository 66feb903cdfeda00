//! Attacks on what wonk prints and how much it holds: control characters a pod puts in names and kernel-log lines
//! (they must not reach the terminal raw), attacker-sized input (findings, directories, depth: output and memory
//! stay bounded), and numeric flags that must be refused, not panic.

use crate::common::{measured, peak_rss_kib, Scratch};
use std::process::Command;

/// wonk's stdout, raw bytes, and its exit code.
fn wonk_raw(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .args(["--color", "never"])
        .output()
        .unwrap();
    (
        out.status.code().expect("wonk was killed by a signal"),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// No control byte but the line ends, and no line that begins with a severity label the attacker wrote.
fn assert_no_raw_control(out: &[u8], forged_line: &str) {
    if let Some(b) = out.iter().find(|&&b| (b < 0x20 && b != b'\n') || b == 0x7f) {
        panic!(
            "raw control byte {b:#04x} on stdout:\n{}",
            String::from_utf8_lossy(out)
        );
    }
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "a C1 control reached stdout:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(forged_line)),
        "a forged line reached stdout:\n{text}"
    );
}

/// Attack: a process renames itself (`/proc/self/comm`, as `prctl(PR_SET_NAME)` does) to a name holding ESC and
/// a newline; `who PID` and `top` print the comm. They must show `\e` and `\n`, not clear the screen or start a
/// line of the attacker's.
#[test]
fn a_comm_with_escape_and_newline_is_escaped_in_who_and_top() {
    require_root!();
    let mut s = Scratch::new("esc-comm");
    // Only a process itself may write its comm.
    let pid = s.spawn_cmd(Command::new("python3").arg("-c").arg(
        "open('/proc/self/comm', 'wb').write(b'x\\x1b[2J\\nCRIT zz')\nimport time\ntime.sleep(100000)",
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(format!("/proc/{pid}/comm")).unwrap() != b"x\x1b[2J\nCRIT zz\n" {
        assert!(std::time::Instant::now() < deadline, "comm not set");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (code, out, err) = wonk_raw(&["who", &pid.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_no_raw_control(&out, "CRIT zz");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("x\\e[2J\\nCRIT zz"), "{text}");

    let (code, out, err) = wonk_raw(&["top", "-d", "0.3", "--states", "S", "-g", "comm"]);
    assert_eq!(code, 0, "{err}");
    assert_no_raw_control(&out, "CRIT zz");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("x\\e[2J\\nCRIT zz"), "{text}");
}

/// Attack: a pod bind-mounts a file on a mount point whose name holds a newline and a whole forged table line
/// (`CRIT  ghosts    kube-system/...`), then deletes the file. The ghost finding's subject is that mount point;
/// the table must show it on one line with `\n`.
#[test]
fn a_mount_point_with_a_newline_cannot_forge_a_table_line() {
    require_root!();
    let mut s = Scratch::new("esc-mnt");
    let forged = "CRIT  ghosts    kube-system/coredns";
    let mnt = s.path(&format!("root/a\n{forged}/evil"));
    std::fs::create_dir_all(mnt.parent().unwrap()).unwrap();
    std::fs::write(&mnt, "").unwrap();
    let src = s.write("host/data.txt", "x\n");
    s.spawn_ns(&format!(
        "mount --bind '{}' '{}'",
        src.display(),
        mnt.display()
    ));
    std::fs::remove_file(&src).unwrap();
    let (code, out, err) = wonk_raw(&["ghosts"]);
    assert!(matches!(code, 1 | 2), "exit {code}: {err}");
    assert_no_raw_control(&out, forged);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(&format!("a\\n{forged}/evil")), "{text}");
}

/// Attack: a kernel-log line carries a comm with ESC sequences (a hung task, an OOM kill; here from a saved
/// dmesg, as `wonk kmsg FILE` reads it). The findings quote the comm and the line; both must be escaped.
#[test]
fn a_kernel_log_line_with_escapes_is_escaped_in_the_table() {
    let s = Scratch::new("esc-kmsg");
    let log = s.path("dmesg.txt");
    std::fs::write(
        &log,
        b"[  100.000000] INFO: task ev\x1b[2Jil:4242 blocked for more than 122 seconds.\n\
          [  100.000001] Memory cgroup out of memory: Killed process 4243 (ev\x1b]0;x\x07il) total-vm:812340kB, \
          anon-rss:100kB, file-rss:1024kB, shmem-rss:0kB, UID:33 pgtables:1200kB oom_score_adj:-997\n",
    )
    .unwrap();
    let (code, out, err) = wonk_raw(&["kmsg", &log.display().to_string()]);
    assert_eq!(code, 1, "{err}");
    assert_no_raw_control(&out, "CRIT");
    let text = String::from_utf8_lossy(&out);
    // The reader strips what `dmesg --color=always` adds (CSI sequences) before the rules see a line; whatever
    // is left of a control sequence is shown escaped.
    assert!(text.contains("pid 4242 (ev"), "{text}");
    assert!(text.contains("ev0;x\\x07il"), "{text}");
}

/// Every duration flag of every command, and the numeric flags beside them. Each value must be refused with
/// clap's error naming the flag and wonk's exit code for bad arguments (3), never a panic (101) or a run (a
/// duration of 1e-300 s rounds to 0: an agent that spins; `inf` and `1e300` panicked in `Duration`).
const DURATION_FLAGS: &[(&[&str], &str, &[&str])] = &[
    (
        &["top"],
        "--duration",
        &["inf", "nan", "-1", "1e300", "1e-300"],
    ),
    (
        &["top"],
        "--hz",
        &["inf", "nan", "-1", "0", "1e300", "1001"],
    ),
    (&["enospc"], "--duration", &["inf", "nan", "-1", "1e300"]),
    (
        &["htree", "--scan", "/tmp"],
        "--budget",
        &["inf", "nan", "-1", "1e300"],
    ),
    (&["layers"], "--budget", &["inf", "nan", "-1", "1e300"]),
    (&["shims"], "--min-age", &["inf", "nan", "-1", "1e300"]),
    (
        &["shims"],
        "--cri-timeout",
        &["inf", "-1", "1e300", "18446744073709551615"],
    ),
    (
        &["agent"],
        "--interval",
        &["inf", "nan", "-1", "0", "1e300", "1e-300"],
    ),
    (
        &["agent"],
        "--ghosts-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--shims-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--htree-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--htree-budget",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--layers-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--layers-budget",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--dstate-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (
        &["agent"],
        "--kmsg-interval",
        &["inf", "nan", "-1", "0", "1e300"],
    ),
    (&["agent"], "--top", &["inf", "-1", "1e300"]),
    (&["layers"], "--top", &["-1", "1e300"]),
    (&["layers"], "--max-files", &["-1", "1e300"]),
    (&["layers"], "--dedup-memory", &["-1", "1e300"]),
    (&["htree", "--scan", "/tmp"], "--min-size", &["-1", "1e300"]),
    (&["htree", "/tmp"], "--name-len", &["-1", "1e300"]),
];

/// `timeout` bounds a run that the old code accepted (an agent that would run for ever).
fn wonk_bounded(args: &[String]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .args(
            ["--listen", "127.0.0.1:0"]
                .iter()
                .filter(|_| args[0] == "agent"),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Attack (of a user's typo, or of a config file a pod can write into a hostPath): `inf`, `nan`, negative, zero
/// where it means nothing, and huge values on every numeric flag.
#[test]
fn every_duration_and_numeric_flag_refuses_what_would_panic() {
    let mut failures = Vec::new();
    for (cmd, flag, values) in DURATION_FLAGS {
        for v in *values {
            let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            args.push(format!("{flag}={v}"));
            let (code, err) = wonk_bounded(&args);
            if code != 3 || !err.contains(flag) || err.contains("panicked") {
                failures.push(format!("wonk {}: exit {code}: {err}", args.join(" ")));
            }
        }
    }
    // The agent's config file goes through the same parser, and its error names the line and the key.
    let s = Scratch::new("flags");
    for v in ["inf", "nan", "-1", "0", "1e300"] {
        let conf = s.write("agent.conf", &format!("htree_budget = {v}\n"));
        let args = vec!["agent".to_string(), format!("--config={}", conf.display())];
        let (code, err) = wonk_bounded(&args);
        if code != 3 || !err.contains("line 1: htree_budget") || err.contains("panicked") {
            failures.push(format!("config htree_budget = {v}: exit {code}: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Attack: a pod with CAP_SYS_ADMIN (or a user namespace) bind-mounts one file on 20,000 mount points in its
/// own mount namespace and deletes the file: 20,000 ghost bind mounts. The report must stay bounded (100 listed
/// per kind and namespace, the rest folded into one finding with their exact count), in JSON as in the table.
#[test]
fn twenty_thousand_deleted_bind_mounts_give_a_bounded_report() {
    require_root!();
    const MOUNTS: usize = 20_000;
    let mut s = Scratch::new("fold");
    let src = s.write("host/data.txt", "x\n");
    let targets = s.path("m");
    std::fs::create_dir_all(&targets).unwrap();
    for i in 0..MOUNTS {
        std::fs::write(targets.join(format!("{i:05}")), "").unwrap();
    }
    // mount(2) 20,000 times from one process: a mount(8) per bind would take a minute.
    let script = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfor i in range({MOUNTS}):\n    \
         t = b'{}/%05d' % i\n    \
         if libc.mount(b'{}', t, None, 4096, None) != 0:\n        raise OSError(ctypes.get_errno(), t)",
        targets.display(),
        src.display()
    );
    let pid = s.spawn_ns(&format!("python3 -c \"{script}\""));
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let ours = |p: &str| p.starts_with(&format!("{}/", targets.display()));
    assert_eq!(
        mountinfo
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(ours))
            .count(),
        MOUNTS
    );
    std::fs::remove_file(&src).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(["ghosts", "--json"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(1 | 2)), "{:?}", out.status);
    assert!(
        out.stdout.len() < 1 << 20,
        "{} bytes of JSON",
        out.stdout.len()
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = r["checks"][0]["findings"].as_u64().unwrap() as usize;
    let folded = r["checks"][0]["folded"].as_u64().unwrap() as usize;
    let findings = r["findings"].as_array().unwrap();
    assert!(found >= MOUNTS, "{found}");
    let others = found - MOUNTS;
    // Our group, namespace-less and of kind `deleted`: 100 listed, the other 19,900 in its fold. Other tests
    // running beside this one may add namespace-less ghosts of their own to the group, listed or folded.
    let group: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["kind"] == "deleted" && f["owner"].is_null())
        .filter(|f| !f["evidence"]["folded"].is_u64())
        .collect();
    assert_eq!(group.len(), 100, "{} findings listed", findings.len());
    let listed = group
        .iter()
        .filter(|f| f["subject"].as_str().is_some_and(ours))
        .count();
    assert!(
        listed + others >= 100,
        "{listed} of ours listed, {others} others"
    );
    // Every finding is either listed or counted in a fold, exactly once.
    let folds: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["evidence"]["folded"].is_u64())
        .collect();
    assert_eq!(
        folds
            .iter()
            .map(|f| f["evidence"]["folded"].as_u64().unwrap() as usize)
            .sum::<usize>(),
        folded
    );
    assert_eq!(findings.len() - folds.len() + folded, found);
    let ours_fold = folds
        .iter()
        .find(|f| f["kind"] == "deleted" && f["owner"].is_null())
        .expect("a fold for the deleted mounts");
    let n = ours_fold["evidence"]["folded"].as_u64().unwrap() as usize;
    assert!(
        (MOUNTS - 100..=MOUNTS - 100 + others).contains(&n),
        "{n} folded, {others} other findings"
    );
    assert!(ours_fold["summary"]
        .as_str()
        .unwrap()
        .contains(&format!("{n} more ghosts deleted findings")));

    let (code, table, err) = wonk_raw(&["ghosts"]);
    assert!(matches!(code, 1 | 2), "exit {code}: {err}");
    assert!(table.len() < 1 << 20, "{} bytes of table", table.len());
    let table = String::from_utf8_lossy(&table);
    assert!(table.contains(&format!("{n} more deleted")), "{table}");
    drop(s);
}

/// An emptyDir of a pod (uid `u1`) under a kubelet root of our own, for `wonk layers --kubelet-root`.
fn empty_dir(s: &Scratch) -> std::path::PathBuf {
    let vol = s.path("kubelet/pods/u1/volumes/kubernetes.io~empty-dir/vol");
    std::fs::create_dir_all(&vol).unwrap();
    vol
}

/// Runs wonk (stdout to a file, so that a pipe never holds it up) and returns its exit code, its JSON and its
/// peak resident memory in KiB, as GNU time measured it ([`measured`]).
#[allow(clippy::zombie_processes)] // wait4 reaps it, for its rusage
fn wonk_peak(s: &Scratch, args: &[&str]) -> (i32, serde_json::Value, i64) {
    let out = s.path("wonk.json");
    let rss = s.path("wonk.rss");
    let child = measured(&rss, env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .arg("--json")
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 on our own child, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status), "wonk was killed: {status:#x}");
    let v = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = ru;
    (libc::WEXITSTATUS(status), v, peak_rss_kib(&rss))
}

/// The one layer `wonk layers` measured in our emptyDir.
fn our_layer(r: &serde_json::Value, vol: &std::path::Path) -> serde_json::Value {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["evidence"]["layers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|l| l["path"] == vol.display().to_string())
        .unwrap_or_else(|| panic!("no layer {}: {r:#}", vol.display()))
}

/// Attack: a pod fills its emptyDir with 50,000 empty directories with 240-byte names. `layers` used to queue
/// every one of them with its full path before reading any (about 20 MB more here, 130 MB for 300,000); the queue
/// is now bounded, and the rest of a directory's subdirectories are read on from where it stopped.
#[test]
fn many_empty_directories_with_long_names_do_not_grow_the_walks_memory() {
    require_root!();
    const DIRS: usize = 50_000;
    let s = Scratch::new("wide");
    let vol = empty_dir(&s);
    let long = "x".repeat(234);
    for i in 0..DIRS {
        std::fs::create_dir(vol.join(format!("{i:06}{long}"))).unwrap();
    }
    let kubelet = s.s("kubelet");
    let (code, r, peak_kib) = wonk_peak(&s, &["layers", "--kubelet-root", &kubelet]);
    assert!(code <= 1, "exit {code}: {r:#}");
    let l = our_layer(&r, &vol);
    assert_eq!(
        (
            l["dirs"].as_u64(),
            l["files"].as_u64(),
            l["unreadable_dirs"].as_u64()
        ),
        (Some(DIRS as u64), Some(0), Some(0)),
        "{l:#}"
    );
    assert_eq!(l["lower_bound"], false);
    // The names alone are 12 MB; queued with their paths they took 30 MB of peak memory here, against 11 MB now.
    assert!(peak_kib < 20 << 10, "peak RSS {peak_kib} KiB");
}

/// Attack: a pod makes a chain of directories 20,000 deep with 255-byte names (each made from the one above, so
/// no path is ever long for the pod). A walk that builds every directory's full path copies 5 MB for the deepest
/// alone and time quadratic in depth; the walk now keeps names, not paths, and is linear in depth. Its figures
/// must be exact and it must finish (`timeout` only keeps a broken walk from hanging the test suite).
#[test]
fn a_deep_chain_of_long_names_is_walked_whole() {
    require_root!();
    const DEPTH: usize = 20_000;
    use rustix::fs::{AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let s = Scratch::new("deep");
    let vol = empty_dir(&s);
    let name = "d".repeat(255);
    let mut fd = rustix::fs::open(&vol, flags, Mode::empty()).unwrap();
    for _ in 0..DEPTH {
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, name.as_str(), flags, Mode::empty()).unwrap();
    }
    let out = Command::new("timeout")
        .args(["600", env!("CARGO_BIN_EXE_wonk"), "layers", "--json"])
        .args(["--kubelet-root", &s.s("kubelet")])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = our_layer(&r, &vol);
    assert_eq!(
        (
            l["dirs"].as_u64(),
            l["files"].as_u64(),
            l["unreadable_dirs"].as_u64()
        ),
        (Some(DEPTH as u64), Some(0), Some(0)),
        "{l:#}"
    );
    // The chain is removed from the bottom up, each level from the one above; Scratch removes the rest.
    for _ in 0..DEPTH {
        let up = rustix::fs::openat(&fd, "..", flags, Mode::empty()).unwrap();
        rustix::fs::unlinkat(&up, name.as_str(), AtFlags::REMOVEDIR).unwrap();
        fd = up;
    }
}

/// The same attack on every numeric flag wonk has now, found in each subcommand's `--help` (so that a flag added
/// later is covered without a line here): `inf`, `nan`, `-1` and `1e300` never make wonk panic, and a duration
/// (`<SECONDS>`) refuses each of them with an error naming the flag.
#[test]
fn every_numeric_flag_in_the_help_refuses_what_would_panic() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    let numeric = ["SECONDS", "N", "MIB", "BYTES", "MS", "PERCENT", "HZ"];
    let mut tried = 0;
    let mut failures = Vec::new();
    for sub in &subs {
        for line in help(&[sub, "--help"]).lines() {
            let Some((flag, value)) = line
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .and_then(|f| {
                    let v = line.split('<').nth(1)?.split('>').next()?;
                    Some((f.trim_end_matches(',').to_string(), v.to_string()))
                })
            else {
                continue;
            };
            if !numeric.contains(&value.as_str()) {
                continue;
            }
            for v in ["inf", "nan", "-1", "1e300"] {
                tried += 1;
                let args = vec![sub.clone(), format!("{flag}={v}")];
                let (code, err) = wonk_bounded(&args);
                let refused = code == 3 && err.contains(&flag);
                if err.contains("panicked") || code == 101 || (value == "SECONDS" && !refused) {
                    failures.push(format!("wonk {}: exit {code}: {err}", args.join(" ")));
                }
            }
        }
    }
    assert!(
        tried >= 100,
        "only {tried} values tried: is the help parsed?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
