//! The command line: flags in, calls into the library, output and exit code out. No logic lives here.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use wonk::args::Seconds;
use wonk::checks::{self, Context};
use wonk::finding::exit;
use wonk::host::Host;
use wonk::owner::Attributor;
use wonk::render::{self, ColorChoice, Style};

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The command line: the global options and one subcommand. Its clap `Command` is built by [`cli_command`].
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    global: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options every subcommand takes, before or after its name. They are not clap `global` arguments: clap
/// copies a global argument into every subcommand on every run, about 55 µs of a 0.66 ms `wonk who` here.
/// Instead the top level and each subcommand (when it is the one given) define them, and [`parse_cli`] merges
/// the two.
#[derive(clap::Args)]
struct Globals {
    /// Read the node's /proc, /sys, /dev, /run and /var/lib under DIR (as in a DaemonSet mounting the host's / at /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// Print JSON (one stable shape, see docs/OUTPUT.md) instead of a table.
    #[arg(long)]
    json: bool,
    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// kubelet's root directory, as seen on the node.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    /// Also read containerd task bundles under this state directory (repeatable). Running containerd daemons are
    /// found by themselves.
    #[arg(long, value_name = "DIR")]
    containerd_state: Vec<PathBuf>,
}

impl Globals {
    /// Takes what was given after the subcommand's name (`sub`, parsed from `matches`) over what was given before
    /// it; `--containerd-state` directories from both places add up.
    fn merge(&mut self, sub: Globals, matches: &clap::ArgMatches) {
        let given =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        if given("host_root") {
            self.host_root = sub.host_root;
        }
        self.json |= sub.json;
        if given("color") {
            self.color = sub.color;
        }
        if given("kubelet_root") {
            self.kubelet_root = sub.kubelet_root;
        }
        self.containerd_state.extend(sub.containerd_state);
    }
}

/// The subcommands. Their names and one-line help are in [`cli_command`], which builds each one's arguments only
/// when it is the one given.
#[derive(Subcommand)]
enum Command {
    Scan(NoArgs),
    Ghosts(NoArgs),
    Shims(ShimsArgs),
    Top(TopArgs),
    Enospc(EnospcArgs),
    Kmsg(KmsgArgs),
    Htree(HtreeArgs),
    Layers(LayersArgs),
    Fs(NoArgs),
    Who(WhoArgs),
    Agent(wonk::agent::Args),
    Check(CheckArgs),
}

/// The clap command for [`Cli`]. `Cli::command()` would define every subcommand's arguments on every run, a
/// fifth of the time of a `wonk who`; here each subcommand's are defined only when clap needs them
/// (`Command::defer`): for the subcommand given, or for its help.
fn cli_command() -> clap::Command {
    use clap::Args;
    fn sub<A: Args>(name: &'static str, about: &'static str) -> clap::Command {
        clap::Command::new(name).about(about).defer(|c| {
            // The subcommand's help line stays, over any doc comment of its arguments' type.
            let about = c.get_about().cloned().unwrap_or_default();
            Globals::augment_args(A::augment_args(c))
                .about(about)
                .long_about(None::<&str>)
        })
    }
    let top = clap::Command::new("wonk")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Finds the wonkeries under your containers (ghost bind mounts, ...) and names the pod behind each one")
        .long_about(
            "Finds the wonkeries under your containers (ghost bind mounts, ...) and names the pod behind each one.\n\n\
             Read-only: wonk only observes the node. Exit codes: 0 nothing at warning level or above, 1 warnings, \
             2 critical findings, 3 wonk could not do its job.",
        )
        .max_term_width(100)
        .subcommand_required(true)
        .arg_required_else_help(true);
    Globals::augment_args(top)
        .subcommand(sub::<NoArgs>(
            "scan",
            "Run every check that can run on this host",
        ))
        .subcommand(sub::<NoArgs>(
            "ghosts",
            "Find stale bind mounts: a mounted file or directory that its host path no longer holds",
        ))
        .subcommand(sub::<ShimsArgs>(
            "shims",
            "List containerd shims and find leaked ones (shims that serve no container) and orphaned workloads",
        ))
        .subcommand(sub::<TopArgs>(
            "top",
            "Sample thread states (R and D by default) and group them, like psn: who is on CPU or stuck, and where",
        ))
        .subcommand(sub::<EnospcArgs>(
            "enospc",
            "Catch the processes getting ENOSPC right now (tracefs, filtered in the kernel) and tell a full \
             directory index from a full disk. Adds a tracefs instance while it runs and removes it on exit",
        ))
        .subcommand(sub::<KmsgArgs>(
            "kmsg",
            "Turn the kernel log into findings with owners: full ext4 directory indexes, OOM kills, hung tasks, \
             I/O errors, read-only remounts, ... Reads all of /dev/kmsg the kernel still holds, or a saved \
             dmesg/journal",
        ))
        .subcommand(sub::<HtreeArgs>(
            "htree",
            "Read the htree index of ext4 directories (never their entries): fill per level, entries, the share \
             of names failing with ENOSPC now, and the creates left before the first failure",
        ))
        .subcommand(sub::<LayersArgs>(
            "layers",
            "What deleting each pod will cost: files, directories and bytes in its writable layers and emptyDirs",
        ))
        .subcommand(sub::<NoArgs>(
            "fs",
            "List the mounted ext4 filesystems and the features that decide how large a directory index can grow",
        ))
        .subcommand(sub::<WhoArgs>(
            "who",
            "Tell who owns a pid, a container id (or unique prefix), a host path, or DEV:INODE (md1:211566352)",
        ))
        .subcommand(sub::<wonk::agent::Args>(
            "agent",
            "Run until stopped: follow the kernel log, run each check on its interval, serve Prometheus /metrics",
        ))
        .subcommand(sub::<CheckArgs>(
            "check",
            "Run one check as a node-problem-detector custom plugin: exit 0 OK, 1 problem, 2 unknown; one short line",
        ))
}

/// A subcommand with no arguments of its own.
#[derive(clap::Args)]
struct NoArgs {}

#[derive(clap::Args)]
struct ShimsArgs {
    /// Kill the shims classified as leaked (changes the host; asks first unless --yes).
    #[arg(long)]
    reap: bool,
    /// Do not ask before --reap.
    #[arg(long, requires = "reap")]
    yes: bool,
    /// Judge only shims at least this many seconds old (younger ones may still be starting a container).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(i64).range(0..=wonk::args::MAX_SECONDS as i64))]
    min_age: i64,
    /// Milliseconds CRI gets to answer (all calls together); wonk answers from disk without it.
    #[arg(long, default_value_t = 300, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    cri_timeout: u64,
}

#[derive(clap::Args)]
struct TopArgs {
    /// Samples per second (at most 1000).
    #[arg(long, default_value = "20", value_parser = wonk::args::hz)]
    hz: f64,
    /// Seconds to sample; 0 samples until Ctrl-C.
    #[arg(short, long, default_value = "5", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    duration: Seconds,
    /// Columns to group by, comma-separated.
    #[arg(
        short,
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "comm,state"
    )]
    group_by: Vec<wonk::top::Column>,
    /// Thread states to count, as /proc letters.
    #[arg(long, default_value = "RD")]
    states: String,
}

#[derive(clap::Args)]
struct EnospcArgs {
    /// Seconds to watch; 0 watches until Ctrl-C.
    #[arg(short, long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    duration: Seconds,
    /// Errors to catch, by name or number (repeatable): ENOSPC, EDQUOT, ...
    #[arg(long, default_value = "ENOSPC")]
    errno: Vec<String>,
}

#[derive(clap::Args)]
struct KmsgArgs {
    /// A file of `dmesg` or `journalctl -k` output, or - for standard input; default /dev/kmsg.
    file: Option<PathBuf>,
    /// Keep reading /dev/kmsg and report each burst once it has been quiet for 5 s (until Ctrl-C).
    #[arg(short, long, conflicts_with = "file")]
    follow: bool,
}

#[derive(clap::Args)]
struct HtreeArgs {
    /// Directories to read (on ext4, or on overlay with an ext4 upper layer).
    #[arg(required_unless_present = "scan")]
    paths: Vec<PathBuf>,
    /// Judge creates of names this long (default: the median of the directory's own names).
    #[arg(long, value_name = "BYTES")]
    name_len: Option<usize>,
    /// Find the directories at risk on the filesystem mounted at MOUNTPOINT instead.
    #[arg(long, value_name = "MOUNTPOINT", conflicts_with = "paths")]
    scan: Option<PathBuf>,
    /// With --scan: read the index of directories at least this large (bytes).
    #[arg(long, default_value_t = 256 << 10, value_name = "BYTES")]
    min_size: u64,
    /// With --scan: stop after this many seconds (0: no limit); what was not read is listed.
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    budget: Seconds,
}

#[derive(clap::Args)]
struct LayersArgs {
    /// Flag pods with at least this many files.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_files: u64,
    /// Stop walking after this many seconds (0: no limit); figures are then lower bounds, marked as such.
    #[arg(long, default_value = "0", value_name = "SECONDS", value_parser = Seconds::or_zero)]
    budget: Seconds,
    /// Largest directories to list per layer.
    #[arg(long, default_value_t = 3, value_name = "N")]
    top: usize,
    /// Read every file's size. Otherwise a directory of more than 32 files has 32 of them (per 4,096 entries),
    /// at random, read and scaled up, and the bytes are marked as estimated (`bytes_method`).
    #[arg(long)]
    exact_bytes: bool,
    /// Memory (MiB, per layer) for counting hard links once; past it they may be counted more than once, and
    /// the output says so.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    dedup_memory: usize,
}

#[derive(clap::Args)]
struct WhoArgs {
    /// pid | container id | /host/path | DEV:INODE
    target: String,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[arg(value_parser = wonk::agent::npd::NAMES)]
    name: String,
}

/// The command line from clap's matches, with the options given after the subcommand's name merged in.
fn parse_cli(matches: &clap::ArgMatches) -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut cli = Cli::from_arg_matches(matches)?;
    if let Some((_, sub)) = matches.subcommand() {
        cli.global.merge(Globals::from_arg_matches(sub)?, sub);
    }
    Ok(cli)
}

fn main() {
    let parsed = cli_command().try_get_matches().and_then(|m| parse_cli(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::FAILED
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            exit::OK
        }
        Err(e) => {
            eprintln!("wonk: error: {}", render::escape(&format!("{e:#}")));
            exit::FAILED
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let host = Host::open(&cli.global.host_root)?;
    let owners = Attributor::new(
        &host,
        cli.global.kubelet_root.clone(),
        &cli.global.containerd_state,
    );
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let style = Style {
        color: cli.global.color.enabled(),
    };
    // One write at the end rather than one per line: output to a pipe costs a syscall per write.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let (name, selected) = match &cli.command {
        Command::Scan(_) => ("scan", checks::registry()),
        Command::Ghosts(_) => (
            "ghosts",
            checks::registry()
                .into_iter()
                .filter(|c| c.name() == "ghosts")
                .collect(),
        ),
        Command::Shims(ShimsArgs {
            min_age,
            cri_timeout,
            ..
        }) => {
            let check: Box<dyn checks::Check> = Box::new(checks::shims::Shims {
                min_age_seconds: *min_age,
                cri_budget: std::time::Duration::from_millis(*cri_timeout),
            });
            ("shims", vec![check])
        }
        Command::Top(TopArgs {
            hz,
            duration,
            group_by,
            states,
        }) => {
            let opts = wonk::top::Options {
                hz: *hz,
                duration: duration.limit(),
                group_by: group_by.clone(),
                states: states.chars().collect(),
            };
            let top = wonk::top::run(&host, &owners, &opts)?;
            if cli.global.json {
                render::json(&mut out, &top)?;
            } else {
                render::top(&mut out, &top, style)?;
            }
            return Ok(exit::OK);
        }
        Command::Enospc(EnospcArgs { duration, errno }) => {
            let errnos = errno
                .iter()
                .map(|e| {
                    wonk::enospc::parse_errno(e).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--errno {e}: not an errno name (ENOSPC, EDQUOT, ...) or number"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let opts = wonk::enospc::Options {
                duration: duration.limit(),
                errnos,
            };
            let json = cli.global.json;
            let mut live = |g: &wonk::enospc::Group| {
                if !json {
                    eprintln!(
                        "{} {} ({}) {} -> errno {}",
                        g.first,
                        render::escape(&g.comm),
                        g.pid.unwrap_or(g.tid),
                        g.syscall,
                        g.errno
                    );
                }
            };
            let t = std::time::Instant::now();
            let output = wonk::enospc::run(&host, &owners, &opts, &mut live)?;
            let mut report = wonk::finding::Report::new("enospc", host.root());
            report.add("enospc", output, t.elapsed());
            if cli.global.json {
                render::json(&mut out, &report)?;
            } else {
                render::table(&mut out, &report, style)?;
            }
            return Ok(report.exit_code);
        }
        Command::Kmsg(KmsgArgs { file, follow }) => {
            let source = match file.as_deref() {
                None => wonk::kmsg::Source::DevKmsg { follow: *follow },
                Some(p) if p == std::path::Path::new("-") => wonk::kmsg::Source::Stdin,
                Some(p) => {
                    std::fs::metadata(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                    wonk::kmsg::Source::File(p.to_path_buf())
                }
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let opts = wonk::kmsg::Options {
                stop: Some(stop.clone()),
                ..Default::default()
            };
            let t = std::time::Instant::now();
            let output = if *follow {
                wonk::stop::install();
                let flag = stop.clone();
                std::thread::spawn(move || {
                    while !wonk::stop::requested() {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                // Following, each finding is printed when its burst settles: a JSON object per line with --json.
                let mut emit = |f: wonk::finding::Finding| {
                    let mut o = std::io::stdout().lock();
                    let _ = if cli.global.json {
                        serde_json::to_writer(&mut o, &f)
                            .map_err(std::io::Error::from)
                            .and_then(|_| writeln!(o))
                    } else {
                        render::finding_details(&mut o, &f, style).and_then(|_| writeln!(o))
                    };
                    let _ = o.flush();
                };
                wonk::kmsg::scan_with(&ctx, &source, &opts, &mut emit)
            } else {
                wonk::kmsg::scan(&ctx, &source, &opts)
            };
            let mut report = wonk::finding::Report::new("kmsg", host.root());
            report.add("kmsg", output, t.elapsed());
            if *follow {
                return Ok(report.exit_code);
            }
            if cli.global.json {
                render::json(&mut out, &report)?;
            } else {
                render::table(&mut out, &report, style)?;
            }
            return Ok(report.exit_code);
        }
        Command::Htree(HtreeArgs {
            paths,
            name_len,
            scan,
            min_size,
            budget,
        }) => {
            let t = std::time::Instant::now();
            let mut output = wonk::finding::CheckOutput::default();
            if let Some(mount) = scan {
                use std::io::IsTerminal;
                let opts = checks::htree::ScanOptions {
                    min_dir_size: *min_size,
                    budget: budget.limit(),
                    progress: !cli.global.json && std::io::stderr().is_terminal(),
                    min_severity: wonk::finding::Severity::Info,
                };
                output = checks::htree::scan_mount(
                    &ctx,
                    &absolute(mount, &cli.global.host_root)?,
                    &opts,
                );
            } else {
                for p in paths {
                    let p = &absolute(p, &cli.global.host_root)?;
                    match wonk::ext4::htree::analyze(&host, p, *name_len) {
                        Ok(r) => output.findings.push(checks::htree::judge(&ctx, &r)),
                        Err(e) => output.blind_spots.push(wonk::finding::BlindSpot::new(
                            "htree",
                            p.display().to_string(),
                            e.to_string(),
                        )),
                    }
                }
                if output.findings.is_empty() {
                    output.failed = Some(format!(
                        "no directory could be read: {}",
                        output
                            .blind_spots
                            .iter()
                            .map(|b| format!("{}: {}", b.what, b.why))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
            }
            let mut report = wonk::finding::Report::new("htree", host.root());
            report.add("htree", output, t.elapsed());
            if cli.global.json {
                render::json(&mut out, &report)?;
            } else {
                render::table(&mut out, &report, style)?;
            }
            return Ok(report.exit_code);
        }
        Command::Layers(LayersArgs {
            max_files,
            budget,
            top,
            exact_bytes,
            dedup_memory,
        }) => {
            let check: Box<dyn checks::Check> = Box::new(checks::layers::Layers {
                max_files: *max_files,
                budget: budget.limit(),
                top: *top,
                all: true,
                progress: !cli.global.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                exact_bytes: *exact_bytes,
                dedup_memory: dedup_memory.saturating_mul(1 << 20),
                ..Default::default()
            });
            ("layers", vec![check])
        }
        Command::Fs(_) => {
            let fss = wonk::ext4::htree::filesystems(&host)?;
            if cli.global.json {
                render::json(&mut out, &fss)?;
            } else {
                render::filesystems(&mut out, &fss, style)?;
            }
            return Ok(exit::OK);
        }
        Command::Agent(args) => {
            return wonk::agent::run(
                &cli.global.host_root,
                &cli.global.kubelet_root,
                &cli.global.containerd_state,
                args,
            )
        }
        Command::Check(CheckArgs { name }) => {
            let (code, message) = wonk::agent::npd::check(&ctx, name);
            writeln!(out, "{message}")?;
            return Ok(code);
        }
        Command::Who(WhoArgs { target }) => {
            let w = wonk::who::who(&owners, target)?;
            if cli.global.json {
                render::json(&mut out, &w)?;
            } else {
                render::who(&mut out, &w, style)?;
            }
            return Ok(exit::OK);
        }
    };
    let mut report = checks::run(&ctx, name, &selected);
    if !rustix::process::geteuid().is_root() {
        report.blind_spots.insert(
            0,
            wonk::finding::BlindSpot::new(
                name,
                "other users' processes",
                "wonk is not running as root; run it with sudo to see every process and mount namespace",
            ),
        );
    }
    if let Command::Shims(ShimsArgs {
        reap: true,
        yes,
        min_age,
        cri_timeout,
    }) = cli.command
    {
        let mut confirm = |leaked: &[checks::shims::Shim]| {
            yes || render::confirm(leaked.len(), "leaked shim(s)", "kill")
        };
        let budget = std::time::Duration::from_millis(cri_timeout);
        for r in checks::shims::reap(&ctx, min_age, budget, &mut confirm)? {
            report.actions.push(serde_json::to_value(r)?);
        }
    }
    if cli.global.json {
        render::json(&mut out, &report)?;
    } else {
        render::table(&mut out, &report, style)?;
    }
    out.flush()?;
    Ok(report.exit_code)
}

/// A path given on the command line as the node sees it: relative paths are taken from the current directory,
/// which only means something when wonk runs on the node itself.
fn absolute(p: &std::path::Path, host_root: &std::path::Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if host_root != std::path::Path::new("/") {
        anyhow::bail!(
            "{}: give an absolute path on the node with --host-root",
            p.display()
        );
    }
    Ok(std::env::current_dir()?.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        cli_command()
            .try_get_matches_from(args)
            .and_then(|m| parse_cli(&m))
    }

    #[test]
    fn the_command_line_is_consistent() {
        let mut cmd = cli_command();
        cmd.build();
        for sub in cmd.get_subcommands_mut() {
            sub.build();
        }
        cmd.debug_assert();
    }

    #[test]
    fn deferred_subcommands_parse_with_global_options_anywhere() {
        let cli = parse(&["wonk", "--json", "who", "md1:2", "--host-root", "/host"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.host_root, PathBuf::from("/host"));
        assert_eq!(cli.global.kubelet_root, PathBuf::from("/var/lib/kubelet"));
        assert!(matches!(&cli.command, Command::Who(WhoArgs { target }) if target == "md1:2"));
        let cli = parse(&[
            "wonk",
            "--host-root=/a",
            "--color=never",
            "--containerd-state=/s1",
            "ghosts",
            "--host-root=/b",
            "--containerd-state=/s2",
        ])
        .unwrap();
        assert_eq!(
            cli.global.host_root,
            PathBuf::from("/b"),
            "the later one wins"
        );
        assert!(
            matches!(cli.global.color, ColorChoice::Never),
            "given before, kept"
        );
        assert!(!cli.global.json);
        assert_eq!(
            cli.global.containerd_state,
            [PathBuf::from("/s1"), PathBuf::from("/s2")]
        );
        let cli = parse(&["wonk", "htree", "--scan", "/var", "--min-size", "4096"]).unwrap();
        assert!(
            matches!(&cli.command, Command::Htree(HtreeArgs { scan: Some(s), min_size: 4096, .. }) if s == &PathBuf::from("/var"))
        );
        assert!(matches!(
            parse(&["wonk", "fs"]).unwrap().command,
            Command::Fs(_)
        ));
        assert!(
            parse(&["wonk", "shims", "--yes"]).is_err(),
            "--yes requires --reap"
        );
        assert!(parse(&["wonk", "kmsg", "f", "--follow"]).is_err());
        assert!(parse(&["wonk", "check", "nonesuch"]).is_err());
    }
}
