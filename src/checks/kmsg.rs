//! The kernel-log check: `wonk kmsg [FILE|-] [--follow]`, the kernel log in `wonk scan` and `wonk check kmsg`, and
//! the agent's follower. The parser, the rules and the resolution of each group into a finding are
//! [`crate::kmsg`]'s; this module is what makes them a check.

use super::{Check, Context, Invocation, Unit};
use crate::finding::{BlindSpot, CheckOutput, Finding};
use crate::kmsg::{self, Options, Source};
use crate::metric::{labels, Family, Sink};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The check's registration.
pub const UNIT: Unit = Unit {
    name: "kmsg",
    about: "Turn the kernel log into findings with owners: full ext4 directory indexes, OOM kills, hung tasks, I/O \
            errors, read-only remounts, ... Reads all of /dev/kmsg the kernel still holds, or a saved \
            dmesg/journal",
    args: super::args_of::<Args>,
    from_args,
    scan: || Box::new(Kmsg::default()),
    // The agent follows the log itself (`Schedule::Follows`) and never runs this.
    agent: |_| Box::new(Kmsg::default()),
    in_scan: true,
    schedule: super::Schedule::Follows {
        flag: "kmsg-interval",
        default_secs: 300,
    },
    settings: &[],
    metrics: &[
        Family::counter(
            "kmsg_events",
            "Kernel-log events by reason (htree-full, oom-kill, task-hung, ...), counting every folded message; \
             the subject and pod of each are in wonk_finding{check=\"kmsg\"} and the agent's log",
        ),
        Family::counter("kmsg_records_read", "Kernel-log records read"),
        Family::counter(
            "kmsg_records_lost",
            "Kernel-log records lost: overwritten by the kernel before wonk read them, or dropped because wonk's \
             queue of records read was full",
        ),
    ],
    npd: None,
};

/// `wonk kmsg` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A file of `dmesg` or `journalctl -k` output, or - for standard input; default /dev/kmsg.
    file: Option<PathBuf>,
    /// Keep reading /dev/kmsg and report each burst once it has been quiet for 5 s (until Ctrl-C).
    #[arg(short, long, conflicts_with = "file")]
    follow: bool,
    /// With FILE: look up the devices, inodes and pids the saved log names on this host, even when nothing shows
    /// that the log is from this host's current boot.
    #[arg(long, requires = "file")]
    resolve_here: bool,
    /// Only records the kernel logged in the last SECONDS (/dev/kmsg only; its clock, like CLOCK_MONOTONIC,
    /// stops during suspend). `wonk check kmsg --window SECONDS` uses it.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["file", "follow"])]
    since: Option<u64>,
}

fn from_args(m: &clap::ArgMatches, _: &Invocation) -> anyhow::Result<Box<dyn Check>> {
    let a: Args = super::parse_args(m)?;
    // A missing or unreadable file is the check's failure, reported like any other (JSON included).
    let source = match a.file {
        None => Source::DevKmsg { follow: a.follow },
        Some(p) if p == std::path::Path::new("-") => Source::Stdin,
        Some(p) => Source::File(p),
    };
    Ok(Box::new(Kmsg {
        source,
        resolve_here: a.resolve_here,
        window: a.since.map(std::time::Duration::from_secs),
    }))
}

/// The check: the log `source` holds, as findings.
pub struct Kmsg {
    pub source: Source,
    /// Look up what a saved log names on this host even without evidence that it is this boot's.
    pub resolve_here: bool,
    /// Only records of this last stretch of time (/dev/kmsg).
    pub window: Option<std::time::Duration>,
}

impl Kmsg {
    fn options(&self) -> Options {
        Options {
            resolve_here: self.resolve_here,
            min_ts_usec: self.window.map(kmsg::usec_since_boot_before),
            ..Default::default()
        }
    }
}

impl Default for Kmsg {
    /// Everything /dev/kmsg still holds.
    fn default() -> Kmsg {
        Kmsg {
            source: Source::DevKmsg { follow: false },
            resolve_here: false,
            window: None,
        }
    }
}

impl Check for Kmsg {
    fn name(&self) -> &'static str {
        UNIT.name
    }

    fn run(&self, ctx: &Context) -> CheckOutput {
        let (mut out, err) = kmsg::scan_all(ctx.owners, &self.source, &self.options());
        // Without root (kernel.dmesg_restrict) or without the host's /dev mounted, the rest of a scan still runs.
        let may_not_read = |e: &std::io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::ENOENT)
            )
        };
        if let (Source::DevKmsg { .. }, Some(e)) = (&self.source, err.filter(may_not_read)) {
            out.failed = None;
            out.blind_spots.push(BlindSpot::new(
                "kmsg",
                format!("the kernel log ({})", ctx.host.path("/dev/kmsg").display()),
                format!("{e}: reading it needs CAP_SYSLOG (root) and the host's /dev/kmsg"),
            ));
        }
        out
    }

    fn follows(&self) -> bool {
        matches!(self.source, Source::DevKmsg { follow: true })
    }

    /// Follows /dev/kmsg until Ctrl-C or SIGTERM, each finding handed over when its burst settles.
    fn follow(&self, ctx: &Context, emit: &mut dyn FnMut(Finding)) -> CheckOutput {
        crate::stop::install();
        let stop = Arc::new(AtomicBool::new(false));
        let opts = Options {
            stop: Some(stop.clone()),
            ..self.options()
        };
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !crate::stop::requested() && !done.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                stop.store(true, Ordering::Relaxed);
            });
            let out = kmsg::scan_with(ctx.owners, &self.source, &opts, emit);
            done.store(true, Ordering::Relaxed);
            out
        })
    }
}

/// The counters one settled kernel-log finding adds to: its `count` folded messages, by reason only (a counter
/// never forgets a label set, so it names no pod).
pub fn event_metrics(f: &Finding, sink: &mut Sink) {
    let n = f
        .evidence
        .iter()
        .find(|(k, _)| k == "count")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(1);
    sink.put("kmsg_events", labels(&[("reason", f.kind)]), n as f64);
}

/// The reading counters since the last call.
pub fn read_metrics(records: u64, lost: u64, sink: &mut Sink) {
    sink.put("kmsg_records_read", vec![], records as f64);
    sink.put("kmsg_records_lost", vec![], lost as f64);
}

/// The agent's log lines about one period of following: records lost, and records dropped because a process,
/// not the kernel, wrote them.
pub fn log_period(out: &CheckOutput) {
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
            "kernel log records lost: overwritten by the kernel before wonk read them, or dropped because wonk's \
             queue was full"
        );
    }
    if stat("dropped_from_userspace") > 0 {
        tracing::warn!(
            dropped = stat("dropped_from_userspace"),
            "kernel log records written from user space (not the kernel's) dropped"
        );
    }
}
