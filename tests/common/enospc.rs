//! Running `wonk enospc` from a test while the test makes creates fail.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Runs `wonk enospc` for `secs` while `work` runs in this process, once tracing is on.
pub fn enospc_during(secs: u32, work: impl FnOnce()) -> serde_json::Value {
    let child = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(["enospc", "-d", &secs.to_string(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let inst = Path::new(TRACEFS).join(format!("instances/wonk-enospc-{}", child.id()));
    let t = Instant::now();
    while !inst
        .join("events/syscalls/sys_exit_renameat2/enable")
        .exists()
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The events are enabled one after the other; give the last one a moment.
    std::thread::sleep(Duration::from_millis(300));
    work();
    let out = child.wait_with_output().unwrap();
    assert!(
        !inst.exists(),
        "the tracefs instance {} was not removed",
        inst.display()
    );
    let code = out.status.code().unwrap();
    assert!(
        code <= 2,
        "exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}
