//! Attacks on what wonk prints and how much it holds: control characters a pod puts in names and kernel-log lines
//! (they must not reach the terminal raw), attacker-sized input (findings, directories, depth: output and memory
//! stay bounded), and numeric flags that must be refused, not panic.

use crate::common::{root_or_skip, Scratch};
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
    if !root_or_skip("a_comm_with_escape_and_newline_is_escaped_in_who_and_top") {
        return;
    }
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
    if !root_or_skip("a_mount_point_with_a_newline_cannot_forge_a_table_line") {
        return;
    }
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
    assert_eq!(code, 1, "{err}");
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
    assert!(text.contains("pid 4242 (ev\\e[2Jil)"), "{text}");
    assert!(text.contains("ev\\e]0;x\\x07il"), "{text}");
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
    if !root_or_skip("twenty_thousand_deleted_bind_mounts_give_a_bounded_report") {
        return;
    }
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
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.len() < 1 << 20,
        "{} bytes of JSON",
        out.stdout.len()
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = r["checks"][0]["findings"].as_u64().unwrap() as usize;
    let folded = r["checks"][0]["folded"].as_u64().unwrap() as usize;
    let findings = r["findings"].as_array().unwrap();
    let listed = findings
        .iter()
        .filter(|f| f["subject"].as_str().is_some_and(ours))
        .count();
    assert_eq!(listed, 100, "{} findings listed", findings.len());
    assert!(found >= MOUNTS, "{found}");
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
    // Our group, namespace-less and of kind `deleted`: 100 listed, the other 19,900 in its fold (plus any
    // namespace-less ghost of another process on this machine, listed or folded with them).
    let ours_fold = folds
        .iter()
        .find(|f| f["kind"] == "deleted" && f["owner"].is_null())
        .expect("a fold for the deleted mounts");
    let others = found - MOUNTS;
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
    assert_eq!(code, 1, "{err}");
    assert!(table.len() < 1 << 20, "{} bytes of table", table.len());
    let table = String::from_utf8_lossy(&table);
    assert!(table.contains(&format!("{n} more deleted")), "{table}");
    drop(s);
}
