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
use crate::checks::{self, Context, Schedule, SettingUnit, Settings, Unit};
use crate::finding::{CheckOutput, Severity};
use crate::host::Host;
use crate::owner::Attributor;
use crate::term::escape;
use metrics::Metrics;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9808";

/// The agent's own flags; every check's interval and settings (`--ghosts-interval`, `--htree-budget`, ...) are
/// added from the registry (see [`Args`]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Flags {
    /// Serve /metrics and /healthz on this address [default: 127.0.0.1:9808].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Read settings from FILE: `key = value` lines (see docs/OUTPUT.md); flags win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set every check's interval at once (for tests and demos).
    #[arg(long, value_name = "SECONDS", value_parser = Seconds::positive)]
    pub interval: Option<Seconds>,
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

/// `wonk agent` flags: its own, and each check's interval and settings, by flag name, as given (each parsed in
/// its unit).
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub flags: Flags,
    pub settings: Vec<(&'static str, String)>,
}

/// Every interval and setting the checks declare: flag, unit and help.
fn setting_flags() -> Vec<(&'static str, SettingUnit, String)> {
    let mut v = Vec::new();
    for u in checks::registry() {
        let help = match u.schedule {
            Schedule::Every { default_secs, .. } => {
                format!("Seconds between {} runs [default: {default_secs}]", u.name)
            }
            Schedule::Follows { default_secs, .. } => format!(
                "{} is followed without pause; every this many seconds it starts again with fresh attribution \
                 (new pods) [default: {default_secs}]",
                u.name
            ),
        };
        v.push((u.schedule.flag(), SettingUnit::Seconds, help));
        for s in u.settings {
            v.push((
                s.flag,
                s.unit,
                format!("{} [default: {}]", s.help, s.default),
            ));
        }
    }
    v
}

impl clap::Args for Args {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = Flags::augment_args(cmd);
        for (flag, unit, help) in setting_flags() {
            cmd = cmd.arg(
                clap::Arg::new(flag)
                    .long(flag)
                    .value_name(unit.value_name())
                    // Checked here, so that a wrong value is clap's error naming the flag; kept as text.
                    .value_parser(move |v: &str| unit.parse(v).map(|_| v.to_string()))
                    .help(help),
            );
        }
        cmd
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for Args {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = Flags::from_arg_matches(m)?;
        let settings = setting_flags()
            .into_iter()
            .filter_map(|(flag, _, _)| m.get_one::<String>(flag).map(|v| (flag, v.clone())))
            .collect();
        Ok(Args { flags, settings })
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// The agent's settings after defaults, the config file and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    /// Every check's interval and declared settings, and `top`.
    pub checks: Settings,
    pub textfile: Option<PathBuf>,
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN.into(),
            checks: Settings::defaults(),
            textfile: None,
            log_level: "info".into(),
        }
    }
}

impl Config {
    /// Applies one `key = value` setting (the config file's keys are the flags' names, with `_` or `-`).
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let value = value.trim().trim_matches('"');
        let fail = |e: String| anyhow::anyhow!("{key}: {e}");
        match key.trim().replace('_', "-").as_str() {
            "listen" => self.listen = value.to_string(),
            "interval" => {
                SettingUnit::Seconds.parse(value).map_err(fail)?;
                for f in Settings::interval_flags() {
                    self.checks.set(f, value).map_err(fail)?;
                }
            }
            "top" => {
                self.checks.top = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("top = {value}: not a count"))?
            }
            "textfile" => self.textfile = Some(PathBuf::from(value)),
            "log-level" => self.log_level = value.to_string(),
            other => self.checks.set(other, value).map_err(fail)?,
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
        let f = &a.flags;
        let mut c = Config::default();
        if let Some(p) = &f.config {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", p.display()))?;
            c.parse_file(&text)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", p.display()))?;
        }
        if let Some(v) = f.interval {
            c.set("interval", &v.to_string())?;
        }
        for (k, v) in &a.settings {
            c.set(k, v)?;
        }
        if let Some(l) = &f.listen {
            c.listen = l.clone();
        }
        if let Some(t) = f.top {
            c.checks.top = t;
        }
        if let Some(t) = &f.textfile {
            c.textfile = Some(t.clone());
        }
        if let Some(l) = &f.log_level {
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
    /// `--textfile DIR`, opened at start; the lock keeps two writers from racing their renames.
    textfile: Option<Mutex<Textfile>>,
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
    let textfile = match &config.textfile {
        Some(dir) => Some(Mutex::new(Textfile::open(dir)?)),
        None => None,
    };
    crate::stop::install();
    // A panicking check is logged once, as a structured line, by its loop; not as a backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::debug!(location = ?info.location().map(|l| l.to_string()), "panic");
    }));
    let metrics = Arc::new(Metrics::new(config.checks.top));
    for u in checks::registry() {
        metrics.declare(u.name);
    }
    let shared = Arc::new(Shared {
        host_root: host_root.to_path_buf(),
        kubelet_root: kubelet_root.to_path_buf(),
        containerd_state: containerd_state.to_vec(),
        metrics: metrics.clone(),
        config: config.clone(),
        fail: args.flags.fail_check.clone(),
        textfile,
    });
    let settings: Vec<String> = config
        .checks
        .iter()
        .map(|(k, v)| format!("{k}={}", v))
        .collect();
    tracing::info!(
        listen = %listener.local_addr().map_or(config.listen.clone(), |a| a.to_string()),
        host_root = %host_root.display(),
        settings = %settings.join(" "),
        top = config.checks.top,
        "wonk agent started"
    );
    let m = metrics.clone();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || http::serve(listener, m, &stopped))?;
    let mut followers = Vec::new();
    for unit in checks::registry() {
        let s = shared.clone();
        let t = std::thread::Builder::new().name(unit.name.into());
        match unit.schedule {
            Schedule::Every { .. } => {
                t.spawn(move || job_loop(&s, unit))?;
            }
            Schedule::Follows { .. } => followers.push(t.spawn(move || kmsg_loop(&s, unit))?),
        }
    }
    while !stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    // The kernel-log follower checks its stop flag every 200 ms; checks in the middle of a walk are not waited for.
    let deadline = Instant::now() + Duration::from_millis(600);
    while followers.iter().any(|f| !f.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!("stopped");
    Ok(0)
}

/// Runs one check at its interval. The check is built once and run again at every interval, so that it may keep
/// what it learns between runs (htree's history of each directory); after a panic it is built afresh.
fn job_loop(s: &Shared, unit: &'static Unit) {
    let interval = s.config.checks.seconds(unit.schedule.flag());
    let mut check: Option<Box<dyn checks::Check>> = None;
    while !stopped() {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(s, unit, &mut check)
        }));
        if result.is_err() {
            check = None;
        }
        let took = start.elapsed();
        match &result {
            Ok(Ok(out)) => {
                s.metrics.record_run(unit.name, took, Ok(out));
                if let Some(e) = &out.failed {
                    tracing::warn!(check = unit.name, error = %escape(e), "check failed");
                } else {
                    let worst = out.findings.iter().map(|f| f.severity).max();
                    tracing::debug!(
                        check = unit.name,
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
                s.metrics.record_run(unit.name, took, Err(e));
                tracing::warn!(check = unit.name, error = %escape(e), "check failed");
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                s.metrics.record_run(unit.name, took, Err("panicked"));
                tracing::error!(check = unit.name, panic = %escape(&msg), "check panicked");
            }
        }
        write_textfile(s);
        sleep_until(start + interval);
    }
}

/// One run of one check (built on first need), its metrics updated.
fn run_job(
    s: &Shared,
    unit: &Unit,
    check: &mut Option<Box<dyn checks::Check>>,
) -> Result<CheckOutput, String> {
    if s.fail.iter().any(|f| f == unit.name) {
        panic!("--fail-check {}", unit.name);
    }
    let host = Host::open(&s.host_root).map_err(|e| e.to_string())?;
    let owners = Attributor::new(&host, s.kubelet_root.clone(), &s.containerd_state);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let out = check
        .get_or_insert_with(|| (unit.agent)(&s.config.checks))
        .run(&ctx);
    if out.failed.is_none() {
        let mut sink = s.metrics.sink();
        if let Some(o) = &out.output {
            o.metrics(&mut sink);
        }
        s.metrics.apply(unit, sink);
    }
    Ok(out)
}

/// How long a kernel-log finding stays in `wonk_finding` after it settled (a kmsg period, if that is longer):
/// an event is not a state, and an alert on it must see it in a few scrapes and evaluations.
pub const EVENT_HOLD: Duration = Duration::from_secs(600);
/// At most this many kernel-log findings are held.
const RECENT_EVENTS: usize = 1000;

/// Follows /dev/kmsg for ever. One [`Follower`](crate::kmsg::Follower) reads it, on a thread of its own, from the
/// agent's start; its records go through the rules in periods of `kmsg_interval`, each with fresh attribution (so
/// that new pods are seen), the groups still open reported at each period's end. Reading never waits for a period
/// to end or for a finding to be resolved, so no record is lost between periods. If the follower fails it is
/// started again, after the last record it handed on.
fn kmsg_loop(s: &Shared, unit: &Unit) {
    let mut follower: Option<crate::kmsg::Follower> = None;
    let mut since: Option<u64> = None;
    let mut first = true;
    // Kernel-log findings of the last EVENT_HOLD (or period), newest last: the check's current findings.
    let mut recent: Vec<(Instant, crate::finding::Finding)> = Vec::new();
    // The follower's totals already added to the counters.
    let published = Mutex::new((0u64, 0u64));
    let publish = |t: &crate::kmsg::reader::FollowTotals| {
        let mut p = published.lock().unwrap_or_else(|e| e.into_inner());
        let now = (
            t.records.load(Ordering::Relaxed),
            t.lost.load(Ordering::Relaxed),
        );
        let mut sink = s.metrics.sink();
        checks::kmsg::read_metrics(now.0 - p.0, now.1 - p.1, &mut sink);
        s.metrics.add_events(unit, sink);
        *p = now;
    };
    while !stopped() {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<CheckOutput, String> {
                if s.fail.iter().any(|f| f == unit.name) {
                    panic!("--fail-check {}", unit.name);
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
                let end = start + s.config.checks.seconds(unit.schedule.flag());
                let mut period_findings = Vec::new();
                let hold = EVENT_HOLD.max(s.config.checks.seconds(unit.schedule.flag()));
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
                        let o = f.owner.as_ref();
                        let of = |g: fn(&crate::owner::Owner) -> &Option<String>| {
                            escape(o.and_then(|o| g(o).as_deref()).unwrap_or("")).into_owned()
                        };
                        tracing::info!(
                            reason = f.kind,
                            subject = %escape(&f.subject),
                            namespace = %of(|o| &o.namespace),
                            pod = %of(|o| &o.pod),
                            container = %of(|o| &o.container),
                            summary = %escape(&f.summary),
                            "kernel log"
                        );
                        let mut sink = s.metrics.sink();
                        checks::kmsg::event_metrics(&f, &mut sink);
                        s.metrics.add_events(unit, sink);
                        s.metrics.add_findings(unit.name, std::slice::from_ref(&f));
                        period_findings.push(f);
                    };
                    let mut out = crate::kmsg::follow_with(ctx.owners, f, &opts, &mut emit);
                    flag.store(true, Ordering::Relaxed);
                    let now = Instant::now();
                    recent.retain(|(t, _)| now.duration_since(*t) < hold);
                    recent.extend(period_findings.into_iter().map(|f| (now, f)));
                    // Bounded whatever the kernel logs: the oldest go first.
                    let over = recent.len().saturating_sub(RECENT_EVENTS);
                    recent.drain(..over);
                    out.findings = recent.iter().map(|(_, f)| f.clone()).collect();
                    out
                });
                publish(&totals);
                checks::kmsg::log_period(&out);
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
                s.metrics.record_run(unit.name, took, Ok(out));
                out.failed.clone()
            }
            Ok(Err(e)) => {
                s.metrics.record_run(unit.name, took, Err(e));
                Some(e.clone())
            }
            Err(_) => {
                s.metrics.record_run(unit.name, took, Err("panicked"));
                Some("panicked".into())
            }
        };
        if let Some(e) = failed {
            tracing::warn!(check = unit.name, error = %escape(&e), "kernel log follower failed; retrying");
            // Do not spin on a persistent failure.
            let period = s.config.checks.seconds(unit.schedule.flag());
            sleep_until(Instant::now() + period.min(Duration::from_secs(60)));
        }
        write_textfile(s);
    }
}

/// `--textfile DIR`: the directory, opened once at start, where `wonk.prom` is written for node_exporter.
///
/// DIR is resolved once, as the user named it (a symlink the user gave is followed), and must be a directory.
/// From then on every write is relative to that open directory: replacing DIR or one of its parents with a
/// symlink later does not move the writes. The temporary file has an unpredictable name and is created
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, so a file or symlink planted in DIR is never written through; `rename` then
/// replaces `wonk.prom` itself, even when it is a symlink, never what it points at.
struct Textfile {
    dir: PathBuf,
    fd: rustix::fd::OwnedFd,
}

impl Textfile {
    fn open(dir: &Path) -> anyhow::Result<Textfile> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| anyhow::anyhow!("--textfile {}: {e}", dir.display()))?;
        Ok(Textfile {
            dir: dir.to_path_buf(),
            fd,
        })
    }

    /// Writes `text` to a new temporary file in the directory, then renames it to `wonk.prom`.
    fn write(&self, text: &str) -> std::io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        use std::io::Write;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // A name someone planted first (EEXIST) is left alone; another random name is tried.
        let (tmp, fd) = (0..8)
            .find_map(|_| {
                let tmp = format!(".wonk.prom.{}.{:016x}", std::process::id(), random_u64());
                match rustix::fs::openat(&self.fd, &tmp, flags, Mode::from_raw_mode(0o644)) {
                    Err(rustix::io::Errno::EXIST) => None,
                    r => Some(r.map(|fd| (tmp, fd))),
                }
            })
            .unwrap_or(Err(rustix::io::Errno::EXIST))?;
        let r = std::fs::File::from(fd)
            .write_all(text.as_bytes())
            .and_then(|_| Ok(rustix::fs::renameat(&self.fd, &tmp, &self.fd, "wonk.prom")?));
        if r.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, rustix::fs::AtFlags::empty());
        }
        r
    }
}

/// 64 random bits from the kernel, for names no one can guess in advance.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom(2) fills at most `b.len()` bytes of our own buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Without the kernel's randomness, the clock: still unknown in advance to the nanosecond, and O_EXCL holds.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64;
    }
    u64::from_ne_bytes(b)
}

/// Writes `wonk.prom` for node_exporter: a temporary file in the same directory, then a rename.
fn write_textfile(s: &Shared) {
    let Some(tf) = &s.textfile else {
        return;
    };
    let tf = tf.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = tf.write(&s.metrics.text()) {
        tracing::warn!(dir = %tf.dir.display(), error = %e, "cannot write the textfile");
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
            flags: Flags {
                config: Some(f.clone()),
                ..Default::default()
            },
            settings: vec![("shims-interval", "5".into())],
        };
        let c = Config::from_args(&a).unwrap();
        let s = |k| c.checks.seconds(k);
        assert_eq!(c.listen, "0.0.0.0:9100");
        assert_eq!(c.checks.top, 5);
        assert_eq!(s("htree-interval"), Duration::from_secs(7200));
        assert_eq!(s("ghosts-interval"), Duration::from_secs(30));
        assert_eq!(s("shims-interval"), Duration::from_secs(5));
        assert_eq!(s("htree-budget"), Duration::from_secs(30));
        let a = Args {
            flags: Flags {
                config: Some(f.clone()),
                interval: Some(Seconds::positive("1").unwrap()),
                ..Default::default()
            },
            settings: vec![],
        };
        assert_eq!(
            Config::from_args(&a)
                .unwrap()
                .checks
                .seconds("htree-interval"),
            Duration::from_secs(1)
        );
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

    #[test]
    fn settings_are_parsed_in_their_unit() {
        let mut c = Config::default();
        c.set("deleted_share", "12.5").unwrap();
        assert_eq!(c.checks.value("deleted-share"), 12.5);
        c.set("orphans-max-mounts", "20000").unwrap();
        assert_eq!(c.checks.value("orphans-max-mounts"), 20000.0);
        for (k, bad) in [
            ("deleted_share", "0"),
            ("deleted_share", "101"),
            ("deleted_share", "inf"),
            ("orphans_max_mounts", "1.5"),
            ("orphans_max_mounts", "0"),
            ("htree_budget", "nan"),
        ] {
            let e = c.set(k, bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{k}: {bad}: ")), "{e}");
        }
        let units: Vec<(&str, SettingUnit)> = setting_flags()
            .into_iter()
            .map(|(f, u, _)| (f, u))
            .collect();
        assert!(units.contains(&("deleted-share", SettingUnit::Percent)));
        assert!(units.contains(&("orphans-max-mounts", SettingUnit::Count)));
    }

    #[test]
    fn every_check_has_an_interval_flag() {
        let flags: Vec<&str> = setting_flags().into_iter().map(|(f, _, _)| f).collect();
        for u in checks::registry() {
            assert!(flags.contains(&u.schedule.flag()), "{}", u.name);
        }
        for f in [
            "ghosts-interval",
            "shims-interval",
            "htree-interval",
            "htree-budget",
            "layers-interval",
            "layers-budget",
            "dstate-interval",
            "kmsg-interval",
        ] {
            assert!(
                flags.contains(&f),
                "{f} is gone: scripts and configs use it"
            );
        }
    }
}
