//! containerd shims that outlive their containers.
//!
//! Under heavy metadata IO containerd can time out while tearing a task down and forget the shim, which then
//! lives on for ever with nothing to serve (containerd then reports a growing number of tasks). Each shim process, v2
//! (`containerd-shim-runc-v2 -namespace NS -id ID -address SOCK`) and v1 (`containerd-shim -namespace NS -workdir
//! DIR ...`), is related to its containerd (by socket address), its bundle dirs (cwd, `-id`, `-workdir`, the
//! bundles' `io.kubernetes.cri.sandbox-id`), its child processes and its pod, then classified:
//! - `healthy`: it has children and at least one bundle whose `init.pid` is one of them;
//! - `leaked`: no children, and no bundle with a live `init.pid`;
//! - `orphaned-workload`: live children, but their container's snapshot (overlay upperdir) is gone;
//! - `unknown`: anything else, with what is missing.
//!
//! PPID 1 is normal for v2 shims and is never evidence.
//!
//! The classification is made from disk and /proc alone. With the `cri` feature, wonk then asks each shim's
//! containerd, through CRI and within [`CRI_BUDGET`] for all calls together, whether it still lists the shim's
//! sandbox or containers (`cri_lists`). CRI can only add evidence: a `leaked` shim whose pod CRI still lists is
//! downgraded to `unknown`. When CRI does not answer in time (or wonk was built without it), `cri_lists` is
//! `null`, a blind spot says so, and everything else is exactly what disk and /proc said.

use super::{Check, Context, Npd, Unit};
use crate::finding::{utc, BlindSpot, CheckOutput, Finding, Output, Severity};
use crate::host::procfs::{self, Stat};
use crate::host::{bytes_path, mountinfo, read_regular, vanished, Host};
use crate::metric::{labels, Family, Sink};
use crate::owner::containerd::{untrusted_blind_spot, Bundle};
use crate::owner::Owner;
use crate::term::{fit, human_age, wrap, Style, WIDTH};
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod classify;
mod cri;
pub mod log;
mod reap;
mod survey;

use classify::*;
use cri::*;
pub use reap::{reap, Reaped};
#[cfg(test)]
use survey::parse_shim;
pub use survey::{survey, Survey};

/// The time CRI gets in one run, for every call to every containerd together (they are asked in parallel).
/// wonk never waits longer on a daemon: past it, shims are judged from disk alone.
pub const CRI_BUDGET: Duration = Duration::from_millis(300);

/// The containerd namespace of CRI's pods; shims of other namespaces (moby, default, ...) are not CRI's to list.
const CRI_NAMESPACE: &str = "k8s.io";

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "shims",
    about: "List containerd shims and find leaked ones (shims that serve no container) and orphaned workloads",
    args: super::args_of::<Args>,
    from_args: |m, _| {
        let a: Args = super::parse_args(m)?;
        let containerd_log = a.containerd_log.as_deref().map(log::Source::parse);
        if let Some(log::Source::File(p)) = &containerd_log {
            crate::host::open_regular_at(&rustix::fs::CWD, p, u64::MAX)
                .map_err(|e| anyhow::anyhow!("--containerd-log {}: {e}", p.display()))?;
        }
        Ok(Box::new(Shims {
            min_age_seconds: a.min_age,
            cri_budget: Duration::from_millis(a.cri_timeout),
            reap: a.reap.then_some(Reap { yes: a.yes }),
            containerd_log,
        }))
    },
    scan: || Box::new(Shims::default()),
    agent: |_| Box::new(Shims::default()),
    in_scan: true,
    schedule: super::Schedule::Every {
        flag: "shims-interval",
        default_secs: 60,
    },
    settings: &[],
    metrics: &[
        Family::gauge(
            "shims",
            "containerd shims by class (healthy, leaked, orphaned-workload, unknown)",
        ),
        Family::gauge(
            "shims_leaked_resident_bytes",
            "Resident memory of the leaked shims, summed",
        ),
        Family::gauge("shims_leaked_threads", "Threads of the leaked shims, summed"),
    ],
    npd: Some(Npd {
        condition: "LeakedContainerdShims",
        ok_reason: "NoLeakedShims",
        ok_message: "no leaked containerd shims",
    }),
};

/// `wonk shims` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kill the shims classified as leaked (changes the host; asks first unless --yes).
    #[arg(long)]
    reap: bool,
    /// Do not ask before --reap.
    #[arg(long, requires = "reap")]
    yes: bool,
    /// Judge only shims at least this many seconds old (younger ones may still be starting a container).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(i64).range(0..=crate::args::MAX_SECONDS as i64))]
    min_age: i64,
    /// Milliseconds CRI gets to answer (all calls together); wonk answers from disk without it.
    #[arg(long, default_value_t = 300, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    cri_timeout: u64,
    /// containerd's log (plain lines, or `journalctl -o export`; `-` for standard input): attach to each leaked
    /// shim the failures it logged about the shim's ids, with their times.
    #[arg(long, value_name = "FILE|-")]
    containerd_log: Option<PathBuf>,
}

/// The check. A shim younger than `min_age_seconds` may still be starting its first container, and is not judged.
pub struct Shims {
    pub min_age_seconds: i64,
    /// The time CRI gets to answer, for all calls together ([`CRI_BUDGET`] by default).
    pub cri_budget: Duration,
    /// `--reap`: kill the leaked shims after the run ([`reap`]), asking first unless `yes`.
    pub reap: Option<Reap>,
    /// `--containerd-log`: where to read why shims leaked.
    pub containerd_log: Option<log::Source>,
}

/// How `--reap` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Reap {
    pub yes: bool,
}

impl Default for Shims {
    fn default() -> Shims {
        Shims {
            min_age_seconds: 60,
            cri_budget: CRI_BUDGET,
            reap: None,
            containerd_log: None,
        }
    }
}

/// How a shim was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShimClass {
    /// It has children and at least one bundle whose `init.pid` is one of them.
    Healthy,
    /// No children, and no bundle with a live `init.pid`: it serves no container.
    Leaked,
    /// Live children, but their container's snapshot is gone.
    OrphanedWorkload,
    /// Anything else; `why` says what is missing.
    Unknown,
}

impl ShimClass {
    pub const ALL: [ShimClass; 4] = [
        ShimClass::Healthy,
        ShimClass::Leaked,
        ShimClass::OrphanedWorkload,
        ShimClass::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShimClass::Healthy => "healthy",
            ShimClass::Leaked => "leaked",
            ShimClass::OrphanedWorkload => "orphaned-workload",
            ShimClass::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ShimClass {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every shim the check saw, healthy or not.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ShimsOutput {
    pub shims: Vec<Shim>,
}

impl ShimsOutput {
    fn count(&self, c: ShimClass) -> usize {
        self.shims.iter().filter(|s| s.class == c).count()
    }
    fn leaked(&self) -> impl Iterator<Item = &Shim> {
        self.shims.iter().filter(|s| s.class == ShimClass::Leaked)
    }
}

impl Output for ShimsOutput {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn metrics(&self, sink: &mut Sink) {
        for c in ShimClass::ALL {
            sink.put(
                "shims",
                labels(&[("class", c.as_str())]),
                self.count(c) as f64,
            );
        }
        let rss: u64 = self.leaked().map(|s| s.rss_kib).sum();
        let threads: u64 = self.leaked().map(|s| s.threads).sum();
        sink.put("shims_leaked_resident_bytes", vec![], (rss * 1024) as f64);
        sink.put("shims_leaked_threads", vec![], threads as f64);
    }

    /// A summary line, then every shim, one line each.
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let sum = |f: fn(&Shim) -> u64| self.shims.iter().map(f).sum::<u64>();
        let line = format!(
            "{} shims ({} MiB RSS, {} threads), {} pod sandboxes running; {} healthy, {} leaked (holding {} MiB \
             RSS, {} threads), {} orphaned workloads, {} unknown",
            self.shims.len(),
            sum(|s| s.rss_kib) / 1024,
            sum(|s| s.threads),
            running_sandboxes(&self.shims),
            self.count(ShimClass::Healthy),
            self.count(ShimClass::Leaked),
            self.leaked().map(|s| s.rss_kib).sum::<u64>() / 1024,
            self.leaked().map(|s| s.threads).sum::<u64>(),
            self.count(ShimClass::OrphanedWorkload),
            self.count(ShimClass::Unknown),
        );
        for l in wrap(&line, WIDTH) {
            writeln!(w, "{l}")?;
        }
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:<8} {:<3} {:<18} {:>8} {:>8} {:>4}  {}",
                "PID", "VER", "CLASS", "AGE", "RSS", "THR", "POD"
            ))
        )?;
        for s in &self.shims {
            let pod = s.owner.as_ref().map_or("-".to_string(), |o| o.pod_label());
            writeln!(
                w,
                "{:<8} {:<3} {:<18} {:>8} {:>7}M {:>4}  {}",
                s.pid,
                s.version,
                s.class.as_str(),
                s.age_seconds.map_or("-".into(), human_age),
                s.rss_kib / 1024,
                s.threads,
                fit(&pod, WIDTH - 60)
            )?;
        }
        writeln!(w)
    }
}

/// One shim, with everything it was judged on.
#[derive(Debug, Clone, Serialize)]
pub struct Shim {
    pub pid: u32,
    /// `v1` or `v2`.
    pub version: &'static str,
    pub namespace: Option<String>,
    pub id: Option<String>,
    /// containerd's socket, from `-address`.
    pub address: Option<String>,
    pub containerd_pid: Option<u32>,
    pub cwd: Option<String>,
    pub bundles: Vec<BundleState>,
    pub children: Vec<u32>,
    pub started: Option<String>,
    pub age_seconds: Option<i64>,
    pub rss_kib: u64,
    pub threads: u64,
    pub class: ShimClass,
    pub why: String,
    pub owner: Option<Owner>,
    /// Whether CRI still lists the shim's sandbox or one of its containers; `None` when CRI was not asked or
    /// did not answer in time (see the blind spots), or the shim is not in CRI's namespace.
    pub cri_lists: Option<bool>,
    /// What containerd's log (`--containerd-log`) says about its ids, for a leaked or orphaned shim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd_log: Option<log::ShimLog>,
    #[serde(skip)]
    pub start_time: u64,
}

/// A bundle directory as the shim left it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleState {
    pub id: String,
    pub dir: String,
    pub container_type: Option<String>,
    pub init_pid: Option<u32>,
    /// Whether `init_pid` is alive and a child of this shim (a recycled pid is not).
    pub init_pid_alive: bool,
    /// `true` when the bundle's `rootfs` is empty or missing: the container's root was unmounted. `null` when
    /// the spec's root is elsewhere (not `rootfs` inside the bundle), so the bundle cannot tell.
    pub rootfs_empty: Option<bool>,
}

impl Check for Shims {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let mut out = CheckOutput::default();
        let Survey {
            mut shims,
            untrusted,
        } = match survey(ctx, self.min_age_seconds) {
            Ok(s) => s,
            Err(e) => {
                out.failed = Some(format!("cannot list processes: {e}"));
                return out;
            }
        };
        out.blind_spots
            .extend(ask_cri(ctx, &mut shims, self.cri_budget));
        if let Some(src) = &self.containerd_log {
            match log::read(src) {
                Ok(l) => {
                    if l.skipped_bytes > 0 {
                        out.blind_spots.push(BlindSpot::new(
                            "shims",
                            format!("the first {} bytes of {}", l.skipped_bytes, src.name()),
                            format!(
                                "only the last {} bytes of containerd's log are read",
                                log::LOG_LIMIT
                            ),
                        ));
                    }
                    for s in shims.iter_mut().filter(|s| {
                        matches!(s.class, ShimClass::Leaked | ShimClass::OrphanedWorkload)
                    }) {
                        let ids: Vec<&str> =
                            s.id.iter()
                                .map(String::as_str)
                                .chain(s.bundles.iter().map(|b| b.id.as_str()))
                                .collect();
                        s.containerd_log = log::about(&l, &ids);
                    }
                }
                Err(e) => {
                    out.failed = Some(format!("--containerd-log {}: {e}", src.name()));
                    return out;
                }
            }
        }
        let o = ShimsOutput { shims };
        let leaked_sum = |f: fn(&Shim) -> u64| o.leaked().map(f).sum::<u64>();
        out.stats = vec![
            ("shims".into(), o.shims.len() as u64),
            ("healthy".into(), o.count(ShimClass::Healthy) as u64),
            ("leaked".into(), o.count(ShimClass::Leaked) as u64),
            (
                "orphaned_workload".into(),
                o.count(ShimClass::OrphanedWorkload) as u64,
            ),
            ("unknown".into(), o.count(ShimClass::Unknown) as u64),
            ("leaked_rss_kib".into(), leaked_sum(|s| s.rss_kib)),
            ("leaked_threads".into(), leaked_sum(|s| s.threads)),
            ("running_sandboxes".into(), running_sandboxes(&o.shims)),
            ("rss_kib".into(), o.shims.iter().map(|s| s.rss_kib).sum()),
            ("threads".into(), o.shims.iter().map(|s| s.threads).sum()),
            ("untrusted".into(), untrusted.len() as u64),
        ];
        out.blind_spots
            .extend(untrusted_blind_spot("shims", "containerd-shim", &untrusted));
        let shims = &o.shims;
        for s in shims {
            if let Some(f) = finding(s) {
                out.findings.push(f);
            }
        }
        if ctx.owners.instances().iter().all(|i| i.pid.is_none()) && !shims.is_empty() {
            out.blind_spots.push(BlindSpot::new(
                "shims",
                "containerd",
                "no running containerd was found; shims are judged from their bundles and processes only",
            ));
        }
        out.output = Some(Box::new(o));
        out
    }

    fn act(
        &self,
        ctx: &Context,
        confirm: &mut dyn FnMut(usize, &str, &str) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let Some(Reap { yes }) = self.reap else {
            return Ok(Vec::new());
        };
        let mut ask = |leaked: &[Shim]| yes || confirm(leaked.len(), "leaked shim(s)", "kill");
        let done = reap::reap(ctx, self.min_age_seconds, self.cri_budget, &mut ask)?;
        Ok(done
            .into_iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect())
    }
}

fn finding(s: &Shim) -> Option<Finding> {
    let (severity, advice) = match s.class {
        ShimClass::Leaked => (
            Severity::Warning,
            vec![
                "a leaked shim serves no container; `wonk shims --reap` kills leaked shims after re-checking each one"
                    .to_string(),
                "containerd times out tearing tasks down under heavy metadata IO (large writable layers); see \
                 what deleting pods costs before rolling out"
                    .to_string(),
            ],
        ),
        ShimClass::OrphanedWorkload => (
            Severity::Warning,
            vec!["processes run with no container record; find their owner with `wonk who PID` and stop them".into()],
        ),
        _ => return None,
    };
    let label = s
        .owner
        .as_ref()
        .map(|o| format!(" of {}", o.pod_label()))
        .unwrap_or_default();
    let subject = format!("pid {}", s.pid);
    let mut f = Finding {
        check: "shims",
        kind: s.class.as_str(),
        severity,
        summary: format!("containerd-shim {}{label} is {}: {}", s.pid, s.class, s.why),
        subject,
        owner: s.owner.clone(),
        evidence: Vec::new(),
        advice,
    };
    f = f
        .with("pid", s.pid)
        .with("version", s.version)
        .with("namespace", &s.namespace)
        .with("id", &s.id)
        .with("address", &s.address)
        .with("containerd_pid", s.containerd_pid)
        .with("children", &s.children)
        .with("bundles", &s.bundles)
        .with("started", &s.started)
        .with("age_seconds", s.age_seconds)
        .with("rss_kib", s.rss_kib)
        .with("threads", s.threads)
        .with("cri_lists", s.cri_lists);
    if let Some(l) = &s.containerd_log {
        // The first line that tells of a timeout, else the first failure: the cause; later lines repeat it.
        if let Some(first) = l.lines.iter().find(|x| x.timeout).or(l.lines.first()) {
            f.advice.insert(
                0,
                format!(
                    "containerd logged about it ({}, {}): {}",
                    first.time.as_deref().unwrap_or("time unknown"),
                    first.kind.as_str(),
                    crate::term::escape(&first.line)
                ),
            );
        }
        f = f.with("containerd_log", l);
    }
    Some(f)
}

/// Pod sandboxes whose pause process is alive under its shim.
fn running_sandboxes(shims: &[Shim]) -> u64 {
    let bundles = shims.iter().flat_map(|s| &s.bundles);
    bundles
        .filter(|b| b.container_type.as_deref() == Some("sandbox") && b.init_pid_alive)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: u32) -> Stat {
        Stat {
            pid,
            comm: "containerd-shim".into(),
            state: 'S',
            ppid: 1,
            start_time: 0,
            num_threads: 13,
            flags: 0,
        }
    }

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn v2_and_v1_command_lines() {
        let s = parse_shim(&stat(7), &args("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id abc -address /run/containerd/containerd.sock")).unwrap();
        assert_eq!(
            (s.version, s.namespace.as_deref(), s.id.as_deref()),
            ("v2", Some("k8s.io"), Some("abc"))
        );
        assert_eq!(
            s.address.as_deref(),
            Some("/run/containerd/containerd.sock")
        );
        let s = parse_shim(
            &stat(8),
            &args("containerd-shim -namespace k8s.io -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/k8s.io/513f9b55e96a -address /run/containerd/containerd.sock -containerd-binary /usr/bin/containerd -systemd-cgroup"),
        )
        .unwrap();
        assert_eq!((s.version, s.id.as_deref()), ("v1", Some("513f9b55e96a")));
        assert!(parse_shim(&stat(9), &args("containerd --config x")).is_none());
        assert!(parse_shim(&stat(9), &[]).is_none());
    }

    fn leaked_shim(address: &str) -> Shim {
        let mut s = parse_shim(
            &stat(7),
            &args(&format!(
                "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id sb1 -address {address}"
            )),
        )
        .unwrap();
        s.class = ShimClass::Leaked;
        s.why = "no child processes".into();
        s.bundles = vec![BundleState {
            id: "c1".into(),
            dir: "/run/x/c1".into(),
            container_type: Some("container".into()),
            init_pid: None,
            init_pid_alive: false,
            rootfs_empty: Some(true),
        }];
        s
    }

    /// CRI only adds evidence: "not listed" keeps a leaked shim leaked and says so; "listed" (by the sandbox or
    /// by a container) makes it unknown; other classes keep their class.
    #[test]
    fn cri_answers_only_add_evidence() {
        let set = |ids: &[&str]| ids.iter().map(|i| i.to_string()).collect();
        let mut s = leaked_shim("/x.sock");
        apply_cri(&mut s, &set(&["other"]));
        assert_eq!((s.class, s.cri_lists), (ShimClass::Leaked, Some(false)));
        assert!(s.why.ends_with("CRI lists it: no"), "{}", s.why);
        for ids in [&["sb1"][..], &["c1"][..]] {
            let mut s = leaked_shim("/x.sock");
            apply_cri(&mut s, &set(ids));
            assert_eq!((s.class, s.cri_lists), (ShimClass::Unknown, Some(true)));
            assert!(s.why.contains("CRI still lists"), "{}", s.why);
        }
        let mut s = leaked_shim("/x.sock");
        s.class = ShimClass::Healthy;
        s.why = "serves 1 live container(s)".into();
        apply_cri(&mut s, &set(&[]));
        assert_eq!((s.class, s.cri_lists), (ShimClass::Healthy, Some(false)));
        assert_eq!(s.why, "serves 1 live container(s)");
    }

    /// A containerd that never answers (a listener that accepts and stays silent) or is gone leaves the shim as
    /// disk judged it, with `cri_lists` null and a blind spot; a shim outside CRI's namespace is not asked.
    #[cfg(feature = "cri")]
    #[test]
    fn silent_or_absent_cri_is_a_blind_spot() {
        let dir = std::env::temp_dir().join(format!("wonk-shims-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let silent = dir.join("silent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        let host = Host::open(Path::new("/")).unwrap();
        let owners = crate::owner::Attributor::new(&host, dir.join("kubelet"), &[]);
        let ctx = Context {
            host: &host,
            owners: &owners,
        };
        let mut other_ns = leaked_shim(&dir.join("silent.sock").display().to_string());
        other_ns.namespace = Some("moby".into());
        let mut shims = vec![
            leaked_shim(&silent.display().to_string()),
            leaked_shim(&dir.join("absent.sock").display().to_string()),
            other_ns,
        ];
        let spots = ask_cri(&ctx, &mut shims, Duration::from_millis(300));
        assert_eq!(spots.len(), 2, "{spots:?}");
        for sp in &spots {
            assert_eq!(sp.scope, "shims");
            assert!(sp.why.starts_with("CRI did not answer in time"), "{sp:?}");
        }
        assert!(spots[0].what.contains("silent.sock"), "{spots:?}");
        assert!(spots[0].why.contains("300 ms budget"), "{spots:?}");
        for s in &shims {
            assert_eq!((s.class, s.cri_lists), (ShimClass::Leaked, None), "{s:?}");
            assert_eq!(s.why, "no child processes");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
