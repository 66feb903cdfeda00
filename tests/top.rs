//! `wonk top` against real threads in uninterruptible sleep.

#[macro_use]
mod common;

use common::*;

#[test]
fn d_state_threads_with_their_kernel_stack() {
    require_root!();
    let mut s = Scratch::new("top");
    let n = 4;
    s.d_state(n);

    let (code, v) = wonk_json(&[
        "top",
        "-d",
        "1",
        "--hz",
        "20",
        "-g",
        "comm,state,kstack,wchan",
    ]);
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
