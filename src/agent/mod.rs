//! `wonk agent`: the long-running DaemonSet mode. It follows the kernel log in one thread, runs each other check
//! on its own interval in its own thread (so a slow htree walk never delays the ghost check), samples D-state
//! threads, and serves the results as Prometheus metrics on `/metrics` (and `/healthz`) from a small HTTP/1.1
//! server; optionally it also writes node_exporter's textfile format. A check that fails or panics is counted in
//! `wonk_check_errors_total` and retried at its next interval; the agent itself keeps running. SIGTERM and SIGINT
//! stop it within a second.
//!
//! - [`metrics`]: the metric families and how each check's output fills them;
//! - [`http`]: the server;
//! - [`npd`]: `wonk check NAME`, node-problem-detector's custom-plugin protocol.

pub mod http;
pub mod metrics;
pub mod npd;

use crate::args::Seconds;
use crate::checks::{self, Check, Context};
use crate::finding::{CheckOutput, Severity};
use crate::host::{procfs, Host};
use crate::owner::Attributor;
use metrics::{Labels, Metrics};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9808";

/// `wonk agent` flags. Each overrides the same key of `--config`; `--interval` sets every interval at once.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    /// Serve /metrics and /healthz on this address [default: 127.0.0.1:9808].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Read settings from FILE: `key = value` lines (see docs/OUTPUT.md); flags win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set every check's interval at once (for tests and demos).
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub interval: Option<Seconds>,
    /// Seconds between ghost-mount checks [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub ghosts_interval: Option<Seconds>,
    /// Seconds between shim checks [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub shims_interval: Option<Seconds>,
    /// Seconds between htree scans [default: 3600].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub htree_interval: Option<Seconds>,
    /// Time budget of one htree scan [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub htree_budget: Option<Seconds>,
    /// Seconds between layer walks [default: 3600].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub layers_interval: Option<Seconds>,
    /// Time budget of one layer walk [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub layers_budget: Option<Seconds>,
    /// Seconds between D-state samples of /proc [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub dstate_interval: Option<Seconds>,
    /// The kernel log is followed without pause; every this many seconds the follower restarts with fresh
    /// attribution (new pods) [default: 300].
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub kmsg_interval: Option<Seconds>,
    /// Export at most N htree directories and N pods' layers [default: 20].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Also write DIR/wonk.prom for node_exporter's textfile collector (atomically, after every check run).
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// Log level on stderr: error, warn, info, debug, trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Testing only: make this check panic on every run (repeatable), to show that the agent survives it.
    #[arg(long, hide = true, value_name = "CHECK")]
    pub fail_check: Vec<String>,
}

/// The agent's settings after defaults, the config file and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    pub ghosts: Duration,
    pub shims: Duration,
    pub htree: Duration,
    pub htree_budget: Duration,
    pub layers: Duration,
    pub layers_budget: Duration,
    pub dstate: Duration,
    pub kmsg: Duration,
    pub top: usize,
    pub textfile: Option<PathBuf>,
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Config {
        let s = Duration::from_secs;
        Config {
            listen: DEFAULT_LISTEN.into(),
            ghosts: s(60),
            shims: s(60),
            htree: s(3600),
            htree_budget: s(30),
            layers: s(3600),
            layers_budget: s(30),
            dstate: s(60),
            kmsg: s(300),
            top: 20,
            textfile: None,
            log_level: "info".into(),
        }
    }
}

impl Config {
    /// Applies one `key = value` setting (the config file's keys are the flags' names, with `_` or `-`).
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let value = value.trim().trim_matches('"');
        let secs = || -> anyhow::Result<Duration> {
            Seconds::positive(value)
                .map(Seconds::duration)
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))
        };
        match key.trim().replace('-', "_").as_str() {
            "listen" => self.listen = value.to_string(),
            "interval" => {
                let d = secs()?;
                for f in [
                    &mut self.ghosts,
                    &mut self.shims,
                    &mut self.htree,
                    &mut self.layers,
                    &mut self.dstate,
                    &mut self.kmsg,
                ] {
                    *f = d;
                }
            }
            "ghosts_interval" => self.ghosts = secs()?,
            "shims_interval" => self.shims = secs()?,
            "htree_interval" => self.htree = secs()?,
            "htree_budget" => self.htree_budget = secs()?,
            "layers_interval" => self.layers = secs()?,
            "layers_budget" => self.layers_budget = secs()?,
            "dstate_interval" => self.dstate = secs()?,
            "kmsg_interval" => self.kmsg = secs()?,
            "top" => {
                self.top = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("top = {value}: not a count"))?
            }
            "textfile" => self.textfile = Some(PathBuf::from(value)),
            "log_level" => self.log_level = value.to_string(),
            other => anyhow::bail!("unknown setting {other:?}"),
        }
        Ok(())
    }

    /// Reads `key = value` lines; `#` starts a comment; `interval` applies before the specific intervals.
    pub fn parse_file(&mut self, text: &str) -> anyhow::Result<()> {
        let mut pairs: Vec<(usize, &str, &str)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("line {}: expected key = value", i + 1))?;
            pairs.push((i + 1, k.trim(), v.trim()));
        }
        pairs.sort_by_key(|(_, k, _)| *k != "interval");
        for (n, k, v) in pairs {
            self.set(k, v)
                .map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
        }
        Ok(())
    }

    /// Defaults, then the file, then `--interval`, then the other flags.
    pub fn from_args(a: &Args) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(p) = &a.config {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", p.display()))?;
            c.parse_file(&text)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", p.display()))?;
        }
        if let Some(v) = a.interval {
            c.set("interval", &v.to_string())?;
        }
        let flags: [(&str, Option<Seconds>); 8] = [
            ("ghosts_interval", a.ghosts_interval),
            ("shims_interval", a.shims_interval),
            ("htree_interval", a.htree_interval),
            ("htree_budget", a.htree_budget),
            ("layers_interval", a.layers_interval),
            ("layers_budget", a.layers_budget),
            ("dstate_interval", a.dstate_interval),
            ("kmsg_interval", a.kmsg_interval),
        ];
        for (k, v) in flags {
            if let Some(v) = v {
                c.set(k, &v.to_string())?;
            }
        }
        if let Some(l) = &a.listen {
            c.listen = l.clone();
        }
        if let Some(t) = a.top {
            c.top = t;
        }
        if let Some(t) = &a.textfile {
            c.textfile = Some(t.clone());
        }
        if let Some(l) = &a.log_level {
            c.log_level = l.clone();
        }
        Ok(c)
    }
}

/// What every thread shares.
struct Shared {
    host_root: PathBuf,
    kubelet_root: PathBuf,
    containerd_state: Vec<PathBuf>,
    metrics: Arc<Metrics>,
    config: Config,
    fail: Vec<String>,
    textfile_lock: Mutex<()>,
}

/// The periodic jobs.
#[derive(Debug, Clone, Copy)]
enum Job {
    Ghosts,
    Shims,
    Htree,
    Layers,
    Dstate,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Ghosts => "ghosts",
            Job::Shims => "shims",
            Job::Htree => "htree",
            Job::Layers => "layers",
            Job::Dstate => "dstate",
        }
    }
}

fn stopped() -> bool {
    crate::stop::requested()
}

/// Sleeps until `until` or a stop, polling every 200 ms.
fn sleep_until(until: Instant) {
    while !stopped() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// Runs the agent until SIGTERM or SIGINT. Returns the exit code.
pub fn run(
    host_root: &Path,
    kubelet_root: &Path,
    containerd_state: &[PathBuf],
    args: &Args,
) -> anyhow::Result<i32> {
    let config = Config::from_args(args)?;
    let level: tracing::Level = config.log_level.parse().map_err(|_| {
        anyhow::anyhow!(
            "log level {:?}: give error, warn, info, debug or trace",
            config.log_level
        )
    })?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init();
    Host::open(host_root)?;
    let listener = std::net::TcpListener::bind(&config.listen)
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    if let Some(dir) = &config.textfile {
        if !dir.is_dir() {
            anyhow::bail!("--textfile {}: not a directory", dir.display());
        }
    }
    crate::stop::install();
    // A panicking check is logged once, as a structured line, by its loop; not as a backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::debug!(location = ?info.location().map(|l| l.to_string()), "panic");
    }));
    let metrics = Arc::new(Metrics::new(config.top));
    for c in ["kmsg", "ghosts", "shims", "htree", "layers", "dstate"] {
        metrics.declare(c);
    }
    let shared = Arc::new(Shared {
        host_root: host_root.to_path_buf(),
        kubelet_root: kubelet_root.to_path_buf(),
        containerd_state: containerd_state.to_vec(),
        metrics: metrics.clone(),
        config: config.clone(),
        fail: args.fail_check.clone(),
        textfile_lock: Mutex::new(()),
    });
    tracing::info!(
        listen = %listener.local_addr().map_or(config.listen.clone(), |a| a.to_string()),
        host_root = %host_root.display(),
        ghosts_s = config.ghosts.as_secs_f64(),
        shims_s = config.shims.as_secs_f64(),
        htree_s = config.htree.as_secs_f64(),
        layers_s = config.layers.as_secs_f64(),
        dstate_s = config.dstate.as_secs_f64(),
        top = config.top,
        "wonk agent started"
    );
    let m = metrics.clone();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || http::serve(listener, m, &stopped))?;
    let s = shared.clone();
    let kmsg = std::thread::Builder::new()
        .name("kmsg".into())
        .spawn(move || kmsg_loop(&s))?;
    for job in [
        Job::Ghosts,
        Job::Shims,
        Job::Dstate,
        Job::Htree,
        Job::Layers,
    ] {
        let s = shared.clone();
        std::thread::Builder::new()
            .name(job.name().into())
            .spawn(move || job_loop(&s, job))?;
    }
    while !stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    // The kernel-log follower checks its stop flag every 200 ms; checks in the middle of a walk are not waited for.
    let deadline = Instant::now() + Duration::from_millis(600);
    while !kmsg.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!("stopped");
    Ok(0)
}

fn job_loop(s: &Shared, job: Job) {
    let interval = match job {
        Job::Ghosts => s.config.ghosts,
        Job::Shims => s.config.shims,
        Job::Htree => s.config.htree,
        Job::Layers => s.config.layers,
        Job::Dstate => s.config.dstate,
    };
    while !stopped() {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(s, job)));
        let took = start.elapsed();
        match &result {
            Ok(Ok(out)) => {
                s.metrics.record_run(job.name(), took, Ok(out));
                if let Some(e) = &out.failed {
                    tracing::warn!(check = job.name(), error = %crate::render::escape(e), "check failed");
                } else {
                    let worst = out.findings.iter().map(|f| f.severity).max();
                    tracing::debug!(
                        check = job.name(),
                        findings = out.findings.len(),
                        problems = out.findings.iter().filter(|f| f.severity >= Severity::Warning).count(),
                        worst = ?worst,
                        blind_spots = out.blind_spots.len(),
                        ms = took.as_millis() as u64,
                        "check done"
                    );
                }
            }
            Ok(Err(e)) => {
                s.metrics.record_run(job.name(), took, Err(e));
                tracing::warn!(check = job.name(), error = %crate::render::escape(e), "check failed");
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                s.metrics.record_run(job.name(), took, Err("panicked"));
                tracing::error!(check = job.name(), panic = %crate::render::escape(&msg), "check panicked");
            }
        }
        write_textfile(s);
        sleep_until(start + interval);
    }
}

/// One run of one job, its metrics updated.
fn run_job(s: &Shared, job: Job) -> Result<CheckOutput, String> {
    if s.fail.iter().any(|f| f == job.name()) {
        panic!("--fail-check {}", job.name());
    }
    let host = Host::open(&s.host_root).map_err(|e| e.to_string())?;
    let owners = Attributor::new(&host, s.kubelet_root.clone(), &s.containerd_state);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let out = match job {
        Job::Ghosts => checks::ghosts::Ghosts.run(&ctx),
        Job::Shims => checks::shims::Shims::default().run(&ctx),
        Job::Htree => htree_scan(&ctx, s.config.htree_budget),
        Job::Layers => checks::layers::Layers {
            budget: Some(s.config.layers_budget),
            all: true,
            // The agent keeps under 20 MiB: 4 MiB of inode map holds some 30 million inodes when, as usual, a
            // layer's inode numbers cluster; past it, hard links may count twice and the output says so.
            dedup_memory: 4 << 20,
            ..Default::default()
        }
        .run(&ctx),
        Job::Dstate => {
            let (counts, out) = dstate(&ctx);
            s.metrics.dstate(&counts);
            return Ok(out);
        }
    };
    if out.failed.is_none() {
        match job {
            Job::Ghosts => s.metrics.ghosts(&out),
            Job::Shims => s.metrics.shims(&out),
            Job::Htree => s.metrics.htree(&out),
            Job::Layers => s.metrics.layers(&out),
            Job::Dstate => {}
        }
    }
    Ok(out)
}

/// The filesystems of containerd's roots and kubelet's root, scanned like `htree --scan`, every indexed
/// directory kept (info included) so that fill is exported before it becomes a warning.
fn htree_scan(ctx: &Context, budget: Duration) -> CheckOutput {
    let check = checks::htree::HtreeRisk {
        budget,
        min_severity: Severity::Info,
    };
    checks::Check::run(&check, ctx)
}

/// One pass over /proc/*/task/*/stat: threads in D state, by owner.
fn dstate(ctx: &Context) -> (BTreeMap<Labels, i64>, CheckOutput) {
    let mut out = CheckOutput::default();
    let mut counts: BTreeMap<Labels, i64> = BTreeMap::new();
    let pids = match procfs::pids(ctx.host) {
        Ok(p) => p,
        Err(e) => {
            out.failed = Some(format!("cannot list processes: {e}"));
            return (counts, out);
        }
    };
    let mut threads = 0u64;
    let mut owners: HashMap<u32, Labels> = HashMap::new();
    let mut buf = Vec::with_capacity(512);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(ctx.host.proc_pid(pid).join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            buf.clear();
            let Ok(mut f) = std::fs::File::open(t.path().join("stat")) else {
                continue;
            };
            use std::io::Read;
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            threads += 1;
            if crate::top::comm_state(&buf).map(|(_, s)| s) != Some('D') {
                continue;
            }
            let labels = owners
                .entry(pid)
                .or_insert_with(|| {
                    let o = ctx.owners.owner_of_pid(pid).ok();
                    let g = |f: fn(&crate::owner::Owner) -> &Option<String>| {
                        o.as_ref().and_then(|o| f(o).clone()).unwrap_or_default()
                    };
                    vec![
                        ("namespace".into(), g(|o| &o.namespace)),
                        ("pod".into(), g(|o| &o.pod)),
                        ("container".into(), g(|o| &o.container)),
                    ]
                })
                .clone();
            *counts.entry(labels).or_default() += 1;
        }
    }
    out.stats.push(("threads".into(), threads));
    (counts, out)
}

/// Follows /dev/kmsg for ever. One [`Follower`](crate::kmsg::Follower) reads it, on a thread of its own, from the
/// agent's start; its records go through the rules in periods of `kmsg_interval`, each with fresh attribution (so
/// that new pods are seen), the groups still open reported at each period's end. Reading never waits for a period
/// to end or for a finding to be resolved, so no record is lost between periods. If the follower fails it is
/// started again, after the last record it handed on.
fn kmsg_loop(s: &Shared) {
    let mut follower: Option<crate::kmsg::Follower> = None;
    let mut since: Option<u64> = None;
    let mut first = true;
    // The follower's totals already added to the counters.
    let published = Mutex::new((0u64, 0u64));
    let publish = |t: &crate::kmsg::reader::FollowTotals| {
        let mut p = published.lock().unwrap_or_else(|e| e.into_inner());
        let now = (
            t.records.load(Ordering::Relaxed),
            t.lost.load(Ordering::Relaxed),
        );
        s.metrics.kmsg_read(now.0 - p.0, now.1 - p.1);
        *p = now;
    };
    while !stopped() {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<CheckOutput, String> {
                if s.fail.iter().any(|f| f == "kmsg") {
                    panic!("--fail-check kmsg");
                }
                let host = Host::open(&s.host_root).map_err(|e| e.to_string())?;
                if first {
                    // Only what is logged from now on: the counters start at the agent's start.
                    since = crate::kmsg::last_seq(&host).map_err(|e| format!("/dev/kmsg: {e}"))?;
                    first = false;
                    tracing::info!(
                        since_seq = since.map_or_else(|| "none".to_string(), |s| s.to_string()),
                        "following the kernel log"
                    );
                }
                if follower.is_none() {
                    follower = Some(
                        crate::kmsg::Follower::start(&host, since, false)
                            .map_err(|e| format!("/dev/kmsg: {e}"))?,
                    );
                    *published.lock().unwrap_or_else(|e| e.into_inner()) = (0, 0);
                }
                let f = follower.as_mut().expect("started above");
                let totals = f.totals();
                let owners = Attributor::new(&host, s.kubelet_root.clone(), &s.containerd_state);
                let ctx = Context {
                    host: &host,
                    owners: &owners,
                };
                let flag = AtomicBool::new(false);
                let opts = crate::kmsg::Options {
                    stop: Some(Arc::new(AtomicBool::new(false))),
                    ..Default::default()
                };
                let period_over = opts.stop.clone().expect("set above");
                let end = start + s.config.kmsg;
                let out = std::thread::scope(|sc| {
                    // Ends the period, and meanwhile keeps the records counters current.
                    sc.spawn(|| {
                        while !flag.load(Ordering::Relaxed) && Instant::now() < end && !stopped() {
                            sleep_until((Instant::now() + Duration::from_secs(1)).min(end));
                            publish(&totals);
                        }
                        period_over.store(true, Ordering::Relaxed);
                    });
                    let mut emit = |f: crate::finding::Finding| {
                        tracing::info!(
                            reason = f.kind,
                            subject = %crate::render::escape(&f.subject),
                            summary = %crate::render::escape(&f.summary),
                            "kernel log"
                        );
                        s.metrics.kmsg_event(&f);
                    };
                    let out = crate::kmsg::follow_with(&ctx, f, &opts, &mut emit);
                    flag.store(true, Ordering::Relaxed);
                    out
                });
                publish(&totals);
                let stat = |k: &str| {
                    out.stats
                        .iter()
                        .find(|(n, _)| n == k)
                        .map_or(0, |(_, v)| *v)
                };
                if stat("records_lost") > 0 {
                    tracing::warn!(
                        lost = stat("records_lost"),
                        dropped_by_wonk = stat("records_dropped"),
                        read = stat("records_read"),
                        "kernel log records lost: overwritten by the kernel before wonk read them, or dropped \
                         because wonk's queue was full"
                    );
                }
                if out.failed.is_some() {
                    // Started again at the next period, after the last record it handed on.
                    since = f.last_seq();
                    follower = None;
                }
                Ok(out)
            },
        ));
        let took = start.elapsed();
        let failed = match &result {
            Ok(Ok(out)) => {
                s.metrics.record_run("kmsg", took, Ok(out));
                out.failed.clone()
            }
            Ok(Err(e)) => {
                s.metrics.record_run("kmsg", took, Err(e));
                Some(e.clone())
            }
            Err(_) => {
                s.metrics.record_run("kmsg", took, Err("panicked"));
                Some("panicked".into())
            }
        };
        if let Some(e) = failed {
            tracing::warn!(check = "kmsg", error = %crate::render::escape(&e), "kernel log follower failed; retrying");
            // Do not spin on a persistent failure.
            sleep_until(Instant::now() + s.config.kmsg.min(Duration::from_secs(60)));
        }
        write_textfile(s);
    }
}

/// Writes `wonk.prom` for node_exporter: a temporary file in the same directory, then a rename.
fn write_textfile(s: &Shared) {
    let Some(dir) = &s.config.textfile else {
        return;
    };
    let _g = s.textfile_lock.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = dir.join(format!(".wonk.prom.{}", std::process::id()));
    let r = std::fs::write(&tmp, s.metrics.text())
        .and_then(|_| std::fs::rename(&tmp, dir.join("wonk.prom")));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the textfile");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layers_defaults_file_interval_and_flags() {
        let dir = std::env::temp_dir().join(format!("wonk-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.conf");
        std::fs::write(
            &f,
            "# comment\nhtree_interval = 7200\ninterval = 30 # all\nlisten = \"0.0.0.0:9100\"\ntop=5\n",
        )
        .unwrap();
        let a = Args {
            config: Some(f.clone()),
            shims_interval: Some(Seconds::positive("5").unwrap()),
            ..Default::default()
        };
        let c = Config::from_args(&a).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9100");
        assert_eq!(c.top, 5);
        assert_eq!(c.htree, Duration::from_secs(7200));
        assert_eq!(c.ghosts, Duration::from_secs(30));
        assert_eq!(c.shims, Duration::from_secs(5));
        assert_eq!(c.htree_budget, Duration::from_secs(30));
        let a = Args {
            config: Some(f.clone()),
            interval: Some(Seconds::positive("1").unwrap()),
            ..Default::default()
        };
        assert_eq!(Config::from_args(&a).unwrap().htree, Duration::from_secs(1));
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Config::from_args(&a)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        for bad in ["-1", "inf", "nan", "1e300", "0"] {
            std::fs::write(&f, format!("ghosts_interval = {bad}\n")).unwrap();
            let e = Config::from_args(&a).unwrap_err().to_string();
            assert!(e.contains("line 1: ghosts_interval: "), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            Config::from_args(&Args::default()).unwrap(),
            Config::default()
        );
    }
}
