//! What the fleet sees: a pod's names in /metrics (`wonk_finding`'s subject label). The exposition must stay one
//! series per finding whatever bytes a pod puts in a path.

use crate::common::agent::*;
use crate::common::*;
use std::process::{Command, Stdio};

/// Attack: a pod bind-mounts a file whose name holds a quote, a backslash, a newline and what would follow as a
/// forged series (`"} 1` then `wonk_finding{pod="victim"} 1`), then lets the host replace it, so that wonk exports
/// the name as a ghost's subject. Before, no subject was exported at all (an alert could not say which mount);
/// now it is, escaped: /metrics still parses (`promtool check metrics`), holds exactly one series for the ghost
/// with the name intact, and no series names the victim.
#[test]
fn a_pod_named_path_cannot_forge_series() {
    require_root!();
    let mut s = Scratch::new("hostile-fleet");
    let name = "ev\\il\"} 1\nwonk_finding{pod=\"victim\"} 1\n日本語.txt";
    stage_ghost_named(&mut s, name);
    std::fs::create_dir_all(s.path("kubelet")).unwrap();
    let staged = staged_agent(&s, &s.path("kubelet"), &[]);
    let subject = s.s(&format!("root/{name}"));
    let escaped = subject
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let m = wait_metrics(staged.port, 30, "the ghost's wonk_finding", |m| {
        m.contains(&format!("subject=\"{escaped}\""))
    });
    let ours: Vec<&str> = m.lines().filter(|l| l.contains(&escaped)).collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert!(
        ours[0].starts_with("wonk_finding{check=\"ghosts\",kind=\"deleted\""),
        "{}",
        ours[0]
    );
    assert!(ours[0].contains("pod=\"web-0\""), "{}", ours[0]);
    assert!(
        !m.lines()
            .any(|l| l.starts_with("wonk_finding{pod=\"victim\"")),
        "{m}"
    );
    if have(
        "promtool",
        "a_pod_named_path_cannot_forge_series (promtool)",
    ) {
        let mut c = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
