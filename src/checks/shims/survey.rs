//! Finding every shim on the node: its process, command line, containerd, bundles and children.

use super::*;

/// The shims on the node, and the processes that pose as shims but are not trusted as such.
pub struct Survey {
    pub shims: Vec<Shim>,
    /// Pid and why, for each process named like a shim that [`procfs::why_untrusted`] rejects.
    pub untrusted: Vec<(u32, String)>,
}

/// Finds and classifies every shim on the node.
///
/// A shim is trusted as one only when its executable is root's and it runs in the host's pid namespace: a
/// container can name a process `containerd-shim-runc-v2 -id <another pod's id>`. Its mount namespace is not
/// compared: containerd starts shim v1 in a mount namespace of its own.
pub fn survey(ctx: &Context, min_age_seconds: i64) -> std::io::Result<Survey> {
    let host = ctx.host;
    let stats = procfs::all_stats(host)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let host_ns = procfs::HostNs::read(host);
    let mut shims = Vec::new();
    let mut untrusted = Vec::new();
    for st in stats
        .iter()
        .filter(|s| s.comm.starts_with("containerd-shim"))
    {
        let Ok(args) = procfs::cmdline(host, st.pid) else {
            continue;
        };
        let Some(mut shim) = parse_shim(st, &args) else {
            continue;
        };
        match procfs::why_untrusted(host, st.pid, &host_ns, false) {
            Ok(None) => {}
            Ok(Some(why)) => {
                untrusted.push((st.pid, why));
                continue;
            }
            Err(_) => continue,
        }
        shim.children = stats
            .iter()
            .filter(|c| c.ppid == st.pid)
            .map(|c| c.pid)
            .collect();
        shim.rss_kib = procfs::rss_kib(host, st.pid).unwrap_or(0);
        let started = procfs::start_epoch(host, st);
        shim.started = started.map(utc);
        shim.age_seconds = started.map(|s| now - s);
        shim.cwd = std::fs::read_link(host.proc_pid(st.pid).join("cwd"))
            .ok()
            .and_then(|p| host.to_node_path(&p))
            .map(|p| p.display().to_string());
        shim.containerd_pid = ctx
            .owners
            .instances()
            .iter()
            .find(|i| {
                shim.address
                    .as_deref()
                    .is_some_and(|a| Path::new(a.trim_start_matches("unix://")) == i.address)
            })
            .and_then(|i| i.pid);
        let bundles: Vec<&Bundle> = ctx
            .owners
            .bundles()
            .iter()
            .filter(|b| belongs(&shim, b))
            .collect();
        shim.bundles = bundles
            .iter()
            .map(|b| bundle_state(host, b, st.pid, &stats))
            .collect();
        shim.owner = bundles
            .iter()
            .find(|b| b.annotation("io.kubernetes.cri.container-type") == Some("sandbox"))
            .or(bundles.first())
            .map(|b| {
                let mut o = ctx.owners.owner_of_bundle(b);
                o.container = None;
                o.container_id = None;
                o.container_type = None;
                o.image = None;
                o
            });
        classify(host, &mut shim, min_age_seconds);
        shims.push(shim);
    }
    Ok(Survey { shims, untrusted })
}

/// Reads the shim's flags: `-namespace`, `-id` (v2), `-workdir` (v1), `-address`.
pub(super) fn parse_shim(st: &Stat, args: &[Vec<u8>]) -> Option<Shim> {
    let argv0 = bytes_path(args.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let version = match argv0.as_str() {
        "containerd-shim" => "v1",
        a if a.starts_with("containerd-shim-") => "v2",
        _ => return None,
    };
    let flag = |name: &str| -> Option<String> {
        let dash = format!("-{name}");
        let ddash = format!("--{name}");
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.iter().enumerate().find_map(|(i, a)| {
            if *a == dash || *a == ddash {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{dash}="))
                    .or_else(|| a.strip_prefix(&format!("{ddash}=")))
                    .map(str::to_string)
            }
        })
    };
    let id = flag("id").or_else(|| {
        flag("workdir").and_then(|w| {
            Path::new(&w)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
    });
    Some(Shim {
        pid: st.pid,
        version,
        namespace: flag("namespace"),
        id,
        address: flag("address"),
        containerd_pid: None,
        cwd: None,
        bundles: Vec::new(),
        children: Vec::new(),
        started: None,
        age_seconds: None,
        rss_kib: 0,
        threads: st.num_threads,
        class: ShimClass::Unknown,
        why: String::new(),
        owner: None,
        cri_lists: None,
        containerd_log: None,
        start_time: st.start_time,
    })
}

/// Whether a bundle is served by this shim: the shim's own id, its cwd, or a container of its sandbox.
pub(super) fn belongs(shim: &Shim, b: &Bundle) -> bool {
    if shim
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != b.namespace)
    {
        return false;
    }
    let version_ok = (shim.version == "v1") == (b.shim == "v1");
    let by_id = shim.id.as_deref() == Some(b.id.as_str());
    let by_cwd = shim.cwd.as_deref().is_some_and(|c| Path::new(c) == b.dir);
    let by_sandbox = shim.version == "v2"
        && shim.id.is_some()
        && b.annotation("io.kubernetes.cri.sandbox-id") == shim.id.as_deref();
    version_ok && (by_id || by_cwd || by_sandbox)
}

pub(super) fn bundle_state(host: &Host, b: &Bundle, shim_pid: u32, stats: &[Stat]) -> BundleState {
    let dir = host.path(&b.dir);
    let init_pid = read_regular(&dir.join("init.pid"), 64)
        .ok()
        .map(|(d, _)| d)
        .and_then(|d| String::from_utf8_lossy(&d).trim().parse::<u32>().ok());
    let init_pid_alive =
        init_pid.is_some_and(|p| stats.iter().any(|s| s.pid == p && s.ppid == shim_pid));
    let in_bundle = b
        .spec
        .root
        .as_ref()
        .is_some_and(|r| r.path == "rootfs" || r.path == "rootfs/");
    let rootfs_empty = in_bundle
        .then(|| std::fs::read_dir(dir.join("rootfs")).map_or(true, |mut d| d.next().is_none()));
    BundleState {
        id: b.id.clone(),
        dir: b.dir.display().to_string(),
        container_type: b
            .annotation("io.kubernetes.cri.container-type")
            .map(str::to_string),
        init_pid,
        init_pid_alive,
        rootfs_empty,
    }
}
