//! `wonk shims --reap`: the one function in wonk that changes the host, and only when asked for by name.

use super::{ask_cri, survey, Shim, ShimClass};
use crate::checks::Context;
use serde::Serialize;
use std::time::Duration;

/// What `--reap` did to one leaked shim.
#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    pub action: &'static str,
    pub pid: u32,
    pub id: Option<String>,
    /// `killed`, or `skipped: <reason>`.
    pub result: String,
}

/// Kills the shims classified as leaked, after `confirm` agrees. Each one is re-checked just before the kill
/// through a pidfd, so a pid that was recycled meanwhile, or a shim that gained children, is never hit.
pub fn reap(
    ctx: &Context,
    min_age_seconds: i64,
    cri_budget: Duration,
    confirm: &mut dyn FnMut(&[Shim]) -> bool,
) -> std::io::Result<Vec<Reaped>> {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    // A shim whose pod CRI still lists is never reaped: CRI is asked first (within the budget; no answer
    // leaves the judgement from disk as it is).
    let mut all = survey(ctx, min_age_seconds)?.shims;
    ask_cri(ctx, &mut all, cri_budget);
    let leaked: Vec<Shim> = all
        .into_iter()
        .filter(|s| s.class == ShimClass::Leaked)
        .collect();
    if leaked.is_empty() || !confirm(&leaked) {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for s in &leaked {
        let mut r = Reaped {
            action: "kill leaked shim",
            pid: s.pid,
            id: s.id.clone(),
            result: String::new(),
        };
        let fd = Pid::from_raw(s.pid as i32).map(|p| pidfd_open(p, PidfdFlags::empty()));
        r.result = match fd {
            Some(Ok(fd)) => {
                // With the pidfd held, the pid cannot be reused; check that it is still the same, still leaked.
                let again = survey(ctx, min_age_seconds)?
                    .shims
                    .into_iter()
                    .find(|n| n.pid == s.pid);
                match again {
                    Some(n)
                        if n.start_time == s.start_time
                            && n.class == ShimClass::Leaked
                            && n.children.is_empty() =>
                    {
                        match pidfd_send_signal(&fd, Signal::KILL) {
                            Ok(()) => "killed".to_string(),
                            Err(e) => format!("skipped: kill failed: {e}"),
                        }
                    }
                    Some(n) if n.start_time == s.start_time => {
                        format!("skipped: now {} ({})", n.class, n.why)
                    }
                    _ => {
                        "skipped: it exited, or its pid now belongs to another process".to_string()
                    }
                }
            }
            _ => "skipped: it exited".to_string(),
        };
        done.push(r);
    }
    Ok(done)
}
