//! `wonk enospc` against a process that names itself to shift the fields of the trace line it causes.

use crate::common::enospc::*;
use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Attack: a process names itself `k-1 [0` (its comm, which it controls) and fails creates with ENOSPC on a full
/// filesystem. Its trace line reads `k-1 [0-PID [CPU] ...`; before, the comm was cut at the first ` [` and the
/// thread id read as 1, so its failures were charged to pid 1 (and to pid 1's pod, if any). Now the fields are
/// read from the right, where the kernel formats them: the finding names its real pid and its whole comm.
#[test]
fn a_comm_shaped_like_trace_fields_does_not_change_the_pid() {
    require_root!();
    let mut s = Scratch::new("hostile-enospc");
    if !Path::new(TRACEFS).join("instances").is_dir() {
        s.host_mount("-t tracefs nodev", Path::new(TRACEFS));
    }
    // No inodes left: every create fails with ENOSPC.
    let (full, _) = s.ext4("full", "8M", "-b 1024 -N 64");
    for i in 0.. {
        if let Err(e) = std::fs::File::create(full.join(format!("f{i}"))) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // The shell renames itself and fails its own creates (redirections are opened by the shell), then stays alive
    // (waiting on sleep) while wonk reads its thread group id.
    let mut pid = 0;
    let r = enospc_during(4, || {
        pid = s.spawn_cmd(Command::new("sh").arg("-c").arg(format!(
            "printf 'k-1 [0' > /proc/self/comm; for i in 1 2 3; do : > '{}/x'$i; done 2>/dev/null; sleep 6",
            full.display()
        )))
    });
    let findings = r["findings"].as_array().unwrap();
    let mine: Vec<_> = findings
        .iter()
        .filter(|f| f["evidence"]["comm"] == "k-1 [0")
        .collect();
    assert_eq!(mine.len(), 1, "{r:#}");
    assert_eq!(mine[0]["evidence"]["pid"], pid, "{:#}", mine[0]);
    assert_eq!(mine[0]["evidence"]["tid"], pid, "{:#}", mine[0]);
    assert_eq!(mine[0]["evidence"]["errno"], 28);
    assert!(
        !findings.iter().any(|f| f["evidence"]["pid"] == 1),
        "a failure was charged to pid 1: {r:#}"
    );
    s.kill(pid);
}
