//! What CRI adds, within its budget: whether it still lists each shim's sandbox or containers. It can only
//! downgrade a `leaked` judgement to `unknown`, never make one.

use super::*;

/// The socket a shim's containerd serves CRI on: the address of the running containerd it was matched to, else
/// the shim's own `-address`. `None` for a shim outside CRI's namespace.
pub(super) fn cri_socket(ctx: &Context, s: &Shim) -> Option<PathBuf> {
    if s.namespace.as_deref() != Some(CRI_NAMESPACE) {
        return None;
    }
    ctx.owners
        .instances()
        .iter()
        .find(|i| i.pid.is_some() && i.pid == s.containerd_pid)
        .map(|i| i.address.clone())
        .or_else(|| {
            s.address
                .as_deref()
                .map(|a| PathBuf::from(a.trim_start_matches("unix://")))
        })
}

/// Records CRI's answer for a shim: `cri_lists`, and for a shim judged leaked from disk, CRI's view in `why`. A
/// "leaked" shim whose sandbox or containers CRI still lists is not known to be leaked: it becomes `unknown`.
#[cfg_attr(not(feature = "cri"), allow(dead_code))]
pub(super) fn apply_cri(s: &mut Shim, listed: &std::collections::HashSet<String>) {
    let lists =
        s.id.iter()
            .chain(s.bundles.iter().map(|b| &b.id))
            .any(|id| listed.contains(id));
    s.cri_lists = Some(lists);
    if s.class != ShimClass::Leaked {
        return;
    }
    if lists {
        s.class = ShimClass::Unknown;
        s.why = format!(
            "{}; but CRI still lists its sandbox or containers, so containerd has not forgotten it",
            s.why
        );
    } else {
        s.why.push_str("; CRI lists it: no");
    }
}

/// Asks CRI, within `budget` for all calls together, whether it still lists each shim's pod, and records the
/// answers with [`apply_cri`]. Every containerd is asked in parallel, on its own thread; wonk waits for none of
/// them past the budget. Returns what could not be asked.
#[cfg(feature = "cri")]
pub(super) fn ask_cri(ctx: &Context, shims: &mut [Shim], budget: Duration) -> Vec<BlindSpot> {
    use std::collections::HashSet;
    use std::time::Instant;
    let deadline = Instant::now() + budget;
    let mut sockets: Vec<PathBuf> = Vec::new();
    for s in shims.iter() {
        if let Some(p) = cri_socket(ctx, s) {
            if !sockets.contains(&p) {
                sockets.push(p);
            }
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, sock) in sockets.iter().enumerate() {
        let path = ctx.host.path(sock);
        let sender = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("wonk-cri".into())
            .spawn(move || {
                let _ = sender.send((i, cri_ids(&path, deadline, budget)));
            });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(format!("CRI client thread: {e}"))));
        }
    }
    drop(tx);
    let mut answers: Vec<Option<Result<HashSet<String>, String>>> =
        sockets.iter().map(|_| None).collect();
    // Each call is bounded by the deadline already; the grace only covers tearing the client down.
    let hard_stop = deadline + Duration::from_millis(50);
    while answers.iter().any(Option::is_none) {
        let left = hard_stop.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => answers[i] = Some(r),
            Err(_) => break,
        }
    }
    let mut spots = Vec::new();
    for (sock, answer) in sockets.iter().zip(answers) {
        let mine = |s: &Shim| cri_socket(ctx, s).as_ref() == Some(sock);
        match answer.unwrap_or_else(|| {
            Err(format!(
                "no answer within wonk's {} ms budget",
                budget.as_millis()
            ))
        }) {
            Ok(listed) => shims
                .iter_mut()
                .filter(|s| mine(s))
                .for_each(|s| apply_cri(s, &listed)),
            Err(e) => {
                let n = shims.iter().filter(|s| mine(s)).count();
                spots.push(BlindSpot::new(
                    "shims",
                    format!(
                        "whether CRI at {} still lists the pods of {n} shim(s) (cri_lists)",
                        sock.display()
                    ),
                    format!(
                        "CRI did not answer in time ({e}); those shims are judged from disk and /proc alone"
                    ),
                ));
            }
        }
    }
    spots
}

/// Every sandbox and container id CRI lists on `socket`, or why not, all before `deadline`.
#[cfg(feature = "cri")]
pub(super) fn cri_ids(
    socket: &Path,
    deadline: std::time::Instant,
    budget: Duration,
) -> Result<std::collections::HashSet<String>, String> {
    use crate::cri::{Client, Error};
    let left = |what: &str| {
        let d = deadline.saturating_duration_since(std::time::Instant::now());
        if d.is_zero() {
            Err(format!(
                "{what}: no answer within wonk's {} ms budget",
                budget.as_millis()
            ))
        } else {
            Ok(d)
        }
    };
    let explain = |e: Error| match e {
        Error::Timeout { what, .. } => format!(
            "{what}: no answer within wonk's {} ms budget",
            budget.as_millis()
        ),
        e => e.to_string(),
    };
    let mut c = Client::connect(socket, left("connect")?).map_err(explain)?;
    c.timeout = left("ListPodSandbox")?;
    let mut ids: std::collections::HashSet<String> = c
        .list_pod_sandbox(None)
        .map_err(explain)?
        .into_iter()
        .map(|s| s.id)
        .collect();
    c.timeout = left("ListContainers")?;
    ids.extend(
        c.list_containers(None)
            .map_err(explain)?
            .into_iter()
            .map(|c| c.id),
    );
    Ok(ids)
}

/// Without the `cri` feature nothing is asked: the shims CRI could have spoken for are a blind spot.
#[cfg(not(feature = "cri"))]
pub(super) fn ask_cri(ctx: &Context, shims: &mut [Shim], _budget: Duration) -> Vec<BlindSpot> {
    let n = shims
        .iter()
        .filter(|s| cri_socket(ctx, s).is_some())
        .count();
    if n == 0 {
        return Vec::new();
    }
    vec![BlindSpot::new(
        "shims",
        format!("whether CRI still lists the pods of {n} shim(s) (cri_lists)"),
        "this wonk was built without the `cri` feature, so CRI was not asked; those shims are judged from \
         disk and /proc alone",
    )]
}
