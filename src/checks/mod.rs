//! Checks: each judges the node and produces findings, in `wonk scan`, in its own subcommand, in the agent and as
//! a node-problem-detector plugin. A check is one module that owns its arguments, its typed output, how that
//! output becomes findings, its metrics, its NPD condition and its table view, and registers itself once: its
//! [`Unit`] in [`registry`]. Everything that runs checks (the command line, `wonk scan`, `wonk check`, the agent,
//! `/metrics`, the renderer) goes through the registry and the [`Check`] and [`Output`](crate::finding::Output)
//! traits, and names no check's fields.
//!
//! Investigations (`wonk who`, `wonk top`, `wonk enospc`) are the other kind of command: interactive, live, they
//! may run for a while and answer a question rather than judge the node. They are not checks (see
//! docs/ARCHITECTURE.md).

pub mod cgroups;
pub mod deleted;
pub mod dstate;
pub mod ghosts;
pub mod htree;
pub mod kmsg;
pub mod layers;
pub mod orphans;
pub mod pids;
pub mod pressure;
pub mod shims;

use crate::finding::{BlindSpot, CheckOutput, Finding, Report};
use crate::host::Host;
use crate::metric;
use crate::owner::Attributor;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// What every check is given.
pub struct Context<'a> {
    pub host: &'a Host,
    pub owners: &'a Attributor<'a>,
}

/// One check, configured and ready to run.
pub trait Check {
    /// The name used on the command line, in findings and in metrics: its [`Unit::name`].
    fn name(&self) -> &'static str;
    /// Looks at the node and reports. Never panics on what it reads, and never writes to the host.
    fn run(&self, ctx: &Context) -> CheckOutput;
    /// Whether this check, as configured, follows a live source until stopped (`wonk kmsg --follow`); its
    /// findings then come through [`Check::follow`] as they settle.
    fn follows(&self) -> bool {
        false
    }
    /// What the user asked for by name beyond looking (`shims --reap`), done after the run: the one way a check
    /// may change the host. `confirm(count, what, verb)` asks the user first. Returns what was done, for the
    /// report's `actions`.
    fn act(
        &self,
        _ctx: &Context,
        _confirm: &mut dyn FnMut(usize, &str, &str) -> bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(Vec::new())
    }
    /// Like [`Check::run`], handing each finding to `emit` as soon as it is complete instead of returning it.
    fn follow(&self, ctx: &Context, emit: &mut dyn FnMut(Finding)) -> CheckOutput {
        let mut out = self.run(ctx);
        for f in std::mem::take(&mut out.findings) {
            emit(f);
        }
        out
    }
}

/// How the agent runs a check.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Once every `default_secs` seconds; `wonk agent --FLAG SECONDS` (and the config file's key) changes it.
    Every {
        flag: &'static str,
        default_secs: u64,
    },
    /// It follows a live source without pause, starting again with fresh attribution every period of
    /// `default_secs` (the kernel log). The agent drives it itself.
    Follows {
        flag: &'static str,
        default_secs: u64,
    },
}

impl Schedule {
    pub fn flag(self) -> &'static str {
        match self {
            Schedule::Every { flag, .. } | Schedule::Follows { flag, .. } => flag,
        }
    }
    pub fn default_secs(self) -> u64 {
        match self {
            Schedule::Every { default_secs, .. } | Schedule::Follows { default_secs, .. } => {
                default_secs
            }
        }
    }
}

/// A setting of `wonk agent` that a check declares beyond its interval (a time budget, a threshold): a flag of the
/// agent and a key of its config file.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub flag: &'static str,
    pub help: &'static str,
    pub unit: SettingUnit,
    pub default: f64,
}

/// What a [`Setting`]'s number is, which decides how it is parsed and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingUnit {
    /// Seconds, through [`crate::args::Seconds`] (positive).
    Seconds,
    /// A percent, above 0 and at most 100.
    Percent,
    /// A whole number, at least 1.
    Count,
}

impl SettingUnit {
    /// The value name in `wonk agent --help`.
    pub fn value_name(self) -> &'static str {
        match self {
            SettingUnit::Seconds => "SECONDS",
            SettingUnit::Percent => "PERCENT",
            SettingUnit::Count => "N",
        }
    }

    /// Parses a value of this unit; the error says what was wrong, for a message that names the flag or key.
    pub fn parse(self, v: &str) -> Result<f64, String> {
        match self {
            SettingUnit::Seconds => {
                crate::args::Seconds::positive(v).map(|s| s.duration().as_secs_f64())
            }
            SettingUnit::Percent => match v.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
                _ => Err(format!("{v}: give a percent above 0 and at most 100")),
            },
            SettingUnit::Count => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n as f64),
                _ => Err(format!("{v}: give a whole number of at least 1")),
            },
        }
    }
}

/// node-problem-detector's view of a check: the condition `wonk check NAME` sets (deploy/components/npd/*.json), and its
/// reason and message while nothing is wrong.
#[derive(Debug, Clone, Copy)]
pub struct Npd {
    pub condition: &'static str,
    pub ok_reason: &'static str,
    pub ok_message: &'static str,
}

/// The settings the agent runs checks with: every interval (seconds) and declared [`Setting`] (in its unit), by
/// flag name.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    values: BTreeMap<&'static str, (SettingUnit, f64)>,
    /// How many subjects (directories, pods) a check exports per metric family.
    pub top: usize,
}

impl Settings {
    /// The defaults every check declares.
    pub fn defaults() -> Settings {
        let mut values = BTreeMap::new();
        for u in registry() {
            values.insert(
                u.schedule.flag(),
                (SettingUnit::Seconds, u.schedule.default_secs() as f64),
            );
            for s in u.settings {
                values.insert(s.flag, (s.unit, s.default));
            }
        }
        Settings { values, top: 20 }
    }

    /// An interval or a setting in seconds, by its flag name. Every name a unit declares has a value.
    pub fn seconds(&self, flag: &str) -> Duration {
        Duration::from_secs_f64(self.value(flag))
    }

    /// A setting's number (a percent, a count), by its flag name.
    pub fn value(&self, flag: &str) -> f64 {
        self.values.get(flag).map_or(0.0, |(_, v)| *v)
    }

    /// The unit of a declared setting; `None` if no check declares `flag`.
    pub fn unit(&self, flag: &str) -> Option<SettingUnit> {
        self.values.get(flag).map(|(u, _)| *u)
    }

    /// Sets a declared setting from its text, parsed in its unit; an error if no check declares `flag` or the
    /// value is not one of its unit.
    pub fn set(&mut self, flag: &str, v: &str) -> Result<(), String> {
        let Some((unit, value)) = self.values.get_mut(flag) else {
            return Err(format!("unknown setting {flag:?}"));
        };
        *value = unit.parse(v)?;
        Ok(())
    }

    /// Every interval flag, for `--interval`, which sets them all at once.
    pub fn interval_flags() -> impl Iterator<Item = &'static str> {
        registry().iter().map(|u| u.schedule.flag())
    }

    /// Every declared name, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.values.iter().map(|(k, (_, v))| (*k, *v))
    }
}

/// What a check's subcommand is told besides its own arguments.
pub struct Invocation<'a> {
    /// The node's root as given (`--host-root`), for paths given on the command line.
    pub host_root: &'a Path,
    /// Whether the output is JSON (no progress lines on stderr then).
    pub json: bool,
}

impl Invocation<'_> {
    /// Whether to show progress on stderr: a terminal, and a table rather than JSON.
    pub fn progress(&self) -> bool {
        !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// A check's one registration: everything the command line, `wonk scan`, `wonk check`, the agent and `/metrics`
/// need to know of it. Each check module defines its own as `pub const UNIT`.
pub struct Unit {
    pub name: &'static str,
    /// One line for `wonk --help` and the subcommand's help.
    pub about: &'static str,
    /// Adds the subcommand's own arguments to its clap command.
    pub args: fn(clap::Command) -> clap::Command,
    /// The check as its subcommand was asked for; an error names the flag that was wrong.
    pub from_args: fn(&clap::ArgMatches, &Invocation) -> anyhow::Result<Box<dyn Check>>,
    /// The check as `wonk scan` and `wonk check` run it.
    pub scan: fn() -> Box<dyn Check>,
    /// The check as the agent runs it, with its settings. The agent builds it once and runs it at every interval
    /// (again after a panic), so a check may keep what it learns from one run for the next, behind `&self`
    /// (htree's history of each directory's entries).
    pub agent: fn(&Settings) -> Box<dyn Check>,
    /// Whether `wonk scan` runs it.
    pub in_scan: bool,
    pub schedule: Schedule,
    pub settings: &'static [Setting],
    pub metrics: &'static [metric::Family],
    pub npd: Option<Npd>,
}

/// Every check, in the order `wonk scan` runs them and `wonk --help` lists them.
pub fn registry() -> &'static [Unit] {
    &[
        ghosts::UNIT,
        shims::UNIT,
        kmsg::UNIT,
        htree::UNIT,
        layers::UNIT,
        dstate::UNIT,
        pressure::UNIT,
        pids::UNIT,
        cgroups::UNIT,
        deleted::UNIT,
        orphans::UNIT,
    ]
}

/// The check named `name`.
pub fn unit(name: &str) -> Option<&'static Unit> {
    registry().iter().find(|u| u.name == name)
}

/// [`Unit::args`] for a check whose arguments are the clap `Args` type `A`.
pub fn args_of<A: clap::Args>(cmd: clap::Command) -> clap::Command {
    A::augment_args(cmd)
}

/// Parses a subcommand's own arguments as `A`.
pub fn parse_args<A: clap::FromArgMatches>(m: &clap::ArgMatches) -> anyhow::Result<A> {
    A::from_arg_matches(m).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A path given on the command line as the node sees it: relative paths are taken from the current directory,
/// which only means something when wonk runs on the node itself.
pub fn absolute(p: &Path, host_root: &Path) -> anyhow::Result<std::path::PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if host_root != Path::new("/") {
        anyhow::bail!(
            "{}: give an absolute path on the node with --host-root",
            p.display()
        );
    }
    Ok(std::env::current_dir()?.join(p))
}

/// A subcommand with no arguments of its own.
#[derive(clap::Args, Debug, Default)]
pub struct NoArgs {}

/// A subcommand whose one argument is where kubelet puts the pods' cgroups.
#[derive(clap::Args, Debug, Default)]
pub struct CgroupRootArgs {
    /// kubelet's --cgroup-root: the pods' cgroups are under CGROUP/kubepods or CGROUP/kubepods.slice [default: /].
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_root: Option<String>,
}

/// Runs checks into one report, together with what the attribution layer could not see.
pub fn run(ctx: &Context, command: &str, checks: &[Box<dyn Check>]) -> Report {
    let mut report = Report::new(command, ctx.host.root());
    for check in checks {
        let t = Instant::now();
        let out = check.run(ctx);
        report.add(check.name(), out, t.elapsed());
    }
    attribution_gaps(ctx, &mut report);
    report
}

/// Adds what the attribution layer could not read to a report.
pub fn attribution_gaps(ctx: &Context, report: &mut Report) {
    for b in ctx.owners.blind_spots() {
        let b: BlindSpot = b.clone();
        if !report.blind_spots.contains(&b) {
            report.blind_spots.push(b);
        }
    }
}

/// Every check `wonk scan` runs.
pub fn scan_checks() -> Vec<Box<dyn Check>> {
    registry()
        .iter()
        .filter(|u| u.in_scan)
        .map(|u| (u.scan)())
        .collect()
}
