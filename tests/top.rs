//! `wonk top` against real threads in uninterruptible sleep.

#[macro_use]
mod common;

use common::*;

/// A parent blocked in vfork() sits in D state until its child execs or exits; the child sleeps first.
const VFORK_HELPER: &str = r#"
#include <unistd.h>
int main(void) {
    if (vfork() == 0) { pause(); _exit(0); }
    return 0;
}
"#;

/// Threads that sleep in pause() (state S): the idle population.
const IDLE_HELPER: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static void *idle(void *a) { (void)a; for (;;) pause(); return 0; }
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    for (int i = 1; i < n; i++) { pthread_t t; pthread_create(&t, 0, idle, 0); }
    for (;;) pause();
}
"#;

fn compile(s: &Scratch, name: &str, src: &str, extra: &[&str]) -> std::path::PathBuf {
    let c = s.write(&format!("{name}.c"), src);
    let bin = s.path(name);
    let ok = std::process::Command::new("cc")
        .arg("-O")
        .args(extra)
        .arg("-o")
        .arg(&bin)
        .arg(&c)
        .status()
        .expect("cc")
        .success();
    assert!(ok, "cc {name}");
    bin
}

/// Starts `n` vfork parents (comm `name`), each in D state until its paused child is killed, and
/// returns their pids once all are in D.
fn start_d_helpers(s: &mut Scratch, n: usize, name: &str) -> Vec<u32> {
    let bin = compile(s, name, VFORK_HELPER, &[]);
    let mut parents = Vec::new();
    for _ in 0..n {
        let pid = s.spawn_cmd(&mut std::process::Command::new(&bin));
        parents.push(pid);
    }
    // The vfork children are not ours to spawn, but we record them to kill them.
    for &p in &parents {
        let child: u32 = s
            .sh(&format!("for i in $(seq 100); do c=$(cat /proc/{p}/task/{p}/children 2>/dev/null); [ -n \"$c\" ] && echo $c && break; sleep 0.02; done"))
            .trim()
            .parse()
            .expect("vfork child");
        s.record_pid(child);
        s.sh(&format!("for i in $(seq 100); do [ \"$(cut -d' ' -f3 /proc/{p}/stat)\" = D ] && break; sleep 0.02; done"));
    }
    parents
}

/// Starts one process of `n` threads sleeping in pause() (comm `name`) and waits until all exist.
fn start_idle(s: &mut Scratch, n: usize, name: &str) -> u32 {
    let bin = compile(s, name, IDLE_HELPER, &["-pthread"]);
    let pid = s.spawn_cmd(std::process::Command::new(&bin).arg(n.to_string()));
    s.sh(&format!("for i in $(seq 250); do [ \"$(ls /proc/{pid}/task | wc -l)\" = {n} ] && break; sleep 0.02; done"));
    pid
}

/// The rows of a `wonk top --json` run whose comm (first value) starts with `prefix`, by values.
fn helper_rows(
    v: &serde_json::Value,
    prefix: &str,
) -> std::collections::BTreeMap<Vec<String>, f64> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["values"][0]
                .as_str()
                .is_some_and(|c| c.starts_with(prefix))
        })
        .map(|r| {
            let values = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            (values, r["avg_threads"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn d_state_threads_with_their_kernel_stack() {
    require_root!();
    let mut s = Scratch::new("top");
    let n = 4;
    start_d_helpers(&mut s, n, "wonk-vfork-d");

    let (code, v) = wonk_json(&[
        "top",
        "--source",
        "proc",
        "-d",
        "1",
        "--hz",
        "20",
        "-g",
        "comm,state,kstack,wchan",
    ]);
    assert_eq!(v["source"], "proc");
    assert_eq!(code, 0, "{v:#}");
    assert!(v["rounds"].as_u64().unwrap() >= 15, "{v:#}");
    let rows: Vec<_> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["values"][0] == "wonk-vfork-d")
        .collect();
    assert_eq!(rows.len(), 1, "one group for the helper: {v:#}");
    let r = rows[0];
    assert_eq!(r["values"][1], "Disk (Uninterruptible)");
    let kstack = r["values"][2].as_str().unwrap();
    let wchan = r["values"][3].as_str().unwrap();
    assert!(kstack.contains("vfork"), "{kstack}");
    assert!(
        kstack.ends_with(wchan),
        "kstack {kstack} should end in the wait function {wchan}"
    );
    assert!(!kstack.contains('+'), "offsets must be dropped: {kstack}");
    let avg = r["avg_threads"].as_f64().unwrap();
    assert!(
        (avg - n as f64).abs() <= 0.5,
        "avg_threads {avg}, expected about {n}"
    );
    assert_eq!(
        r["samples"].as_u64().unwrap() as f64,
        (avg * v["rounds"].as_f64().unwrap()).round()
    );

    // Grouped by the default columns, as psn shows them.
    let (_, table, _) = wonk(&["top", "-d", "0.5", "--color", "never"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .contains("samples | avg_threads | comm | state"),
        "{table}"
    );
    assert!(
        table.contains("wonk-vfork-d | Disk (Uninterruptible)"),
        "{table}"
    );
}

#[test]
fn bad_rates_are_refused() {
    for (args, named) in [
        (&["top", "--hz", "0"][..], "'0' for '--hz"),
        (&["top", "--hz=-3", "-d", "1"][..], "'-3' for '--hz"),
        (
            &["top", "--duration=-1", "--hz", "5"][..],
            "'-1' for '--duration",
        ),
    ] {
        let (code, _, err) = wonk(args);
        assert_eq!(code, 3, "{args:?}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

/// The BPF task iterator and /proc report the same threads: the same D-state helpers with the same comm, state,
/// syscall, wait function and kernel stack, and (with `--states S`) the same idle threads; with the open-coded
/// walk and with the per-task program (`WONK_BPF_PER_TASK=1`, what kernels before 6.7 run).
#[cfg(feature = "bpf")]
#[test]
fn bpf_and_proc_samplers_report_the_same_threads() {
    require_root!();
    let (_, probe) = wonk_json(&["top", "--source", "auto", "-d", "0.1"]);
    if !present_or_skip(
        "bpf_and_proc_samplers_report_the_same_threads",
        probe["source"] == "bpf",
        &format!("the BPF task iterator ({})", probe["fallback"]),
    ) {
        return;
    }
    let mut s = Scratch::new("top-bpf");
    let n = 3;
    let parents = start_d_helpers(&mut s, n, "wonkcmp-d");
    let idle = 40;
    start_idle(&mut s, idle, "wonkcmp-idle");

    // With `per_task`, the per-task program (what kernels before 6.7 run) where the walk would run.
    let per_task = std::cell::Cell::new(false);
    let run = |source: &str, states: &str, group: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wonk"));
        cmd.args([
            "top", "--source", source, "--states", states, "-d", "0.5", "--hz", "20", "-g", group,
            "--json",
        ]);
        if per_task.get() {
            cmd.env("WONK_BPF_PER_TASK", "1");
        }
        let out = cmd.output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(v["source"], source, "{v:#}");
        assert!(v["fallback"].is_null(), "{v:#}");
        v
    };
    let group = "comm,state,syscall,wchan,kstack";
    for each in [false, true] {
        per_task.set(each);
        let (bpf, proc) = (run("bpf", "RD", group), run("proc", "RD", group));
        let (b, p) = (
            helper_rows(&bpf, "wonkcmp-"),
            helper_rows(&proc, "wonkcmp-"),
        );
        assert_eq!(
            b.keys().collect::<Vec<_>>(),
            p.keys().collect::<Vec<_>>(),
            "bpf {bpf:#}\nproc {proc:#}"
        );
        let d = b
            .iter()
            .find(|(k, _)| k[0] == "wonkcmp-d")
            .expect("the D-state helpers");
        assert_eq!(d.0[1], "Disk (Uninterruptible)");
        assert!(d.0[4].contains("vfork"), "{:?}", d.0);
        for (k, avg) in &b {
            assert!((avg - p[k]).abs() <= 0.5, "{k:?}: bpf {avg}, proc {}", p[k]);
        }
        assert!((d.1 - n as f64).abs() <= 0.5, "{d:?}");
        assert!(
            !b.keys().any(|k| k[0] == "wonkcmp-idle"),
            "idle threads are not R or D: {bpf:#}"
        );

        // The idle threads, asked for by state: the same count from both.
        let (bs, ps) = (
            run("bpf", "S", "comm,state"),
            run("proc", "S", "comm,state"),
        );
        let key = vec!["wonkcmp-idle".to_string(), "Sleeping".to_string()];
        let (bi, pi) = (
            helper_rows(&bs, "wonkcmp-")[&key],
            helper_rows(&ps, "wonkcmp-")[&key],
        );
        assert!(
            (bi - idle as f64).abs() <= 0.5,
            "bpf: {bi} idle threads, expected {idle}"
        );
        assert!(
            (pi - idle as f64).abs() <= 0.5,
            "proc: {pi} idle threads, expected {idle}"
        );
    }

    // The D-state check over both samplers: the same helpers.
    let pids_of = |source: &str| {
        let (_, v) = wonk_json(&["dstate", "--source", source]);
        let out = &v["checks"][0]["details"];
        assert_eq!(out["source"], source, "{v:#}");
        let mut pids: Vec<u64> = out["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| {
                g["pids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
            })
            .filter(|p| parents.contains(&(*p as u32)))
            .collect();
        pids.sort();
        pids
    };
    let mut want: Vec<u64> = parents.iter().map(|&p| u64::from(p)).collect();
    want.sort();
    assert_eq!(pids_of("bpf"), want);
    assert_eq!(pids_of("proc"), want);
}

/// With fewer descriptors than threads, the /proc sampler keeps a reserve and reads the rest by path: every
/// idle thread is still counted, and nothing fails for want of a descriptor.
#[test]
fn proc_sampler_reads_every_thread_past_the_descriptor_limit() {
    require_root!();
    let mut s = Scratch::new("top-fds");
    let idle = 1500;
    start_idle(&mut s, idle, "wonkfds-idle");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1000 && exec {} top --source proc --states S -g comm -d 0.3 --json",
            env!("CARGO_BIN_EXE_wonk")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = helper_rows(&v, "wonkfds-");
    assert_eq!(
        rows[&vec!["wonkfds-idle".to_string()]],
        idle as f64,
        "{v:#}"
    );
    assert_eq!(v["unreadable"], serde_json::json!([]), "{v:#}");
}

/// Without the `bpf` feature, `--source bpf` is refused with the reason and `auto` runs /proc and says why.
#[cfg(not(feature = "bpf"))]
#[test]
fn without_bpf_auto_says_why_it_runs_proc() {
    let (code, _, err) = wonk(&["top", "--source", "bpf", "-d", "0.1"]);
    assert_ne!(code, 0);
    assert!(err.contains("built without the BPF sampler"), "{err}");
    let (code, v) = wonk_json(&["top", "-d", "0.1"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["source"], "proc");
    assert!(
        v["fallback"]
            .as_str()
            .unwrap()
            .contains("built without the BPF sampler"),
        "{v:#}"
    );
}
