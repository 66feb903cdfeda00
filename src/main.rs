//! The command line: flags in, calls into the library, output and exit code out. It parses and dispatches;
//! every subcommand's arguments and run live in its own module (a check's `Unit`, an investigation's
//! `Investigation`, the agent, NPD's `wonk check`).

use clap::FromArgMatches;
use std::io::Write;
use std::path::PathBuf;
use wonk::checks::{self, Context, Invocation};
use wonk::finding::exit;
use wonk::host::Host;
use wonk::investigation::{self, Env};
use wonk::owner::Attributor;
use wonk::render::{self, ColorChoice, Style};

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The options every subcommand takes, before or after its name. They are not clap `global` arguments: clap
/// would copy those into every subcommand on every run. The top level and the subcommand given define them, and
/// [`parse_cli`] merges the two.
#[derive(clap::Args)]
struct Globals {
    /// Read the node's /proc, /sys, /dev, /run and /var/lib under DIR (as in a DaemonSet mounting the host's / at /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// Print JSON (one stable shape, see docs/OUTPUT.md) instead of a table; the same as -o json.
    #[arg(long)]
    json: bool,
    /// Output format: table, json (as --json) or wide (a table with every column, nothing cut).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    output: Option<Format>,
    /// Only findings of pods in this namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Only findings of pods of this name.
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// Findings of every namespace (the default); overrides -n.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
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

/// `-o`'s formats, as kubectl names them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Wide,
}

/// The options of `wonk agent` and `wonk check`, which print neither JSON nor a table.
#[derive(clap::Args)]
struct NodeOptions {
    /// Read the node's /proc, /sys, /dev, /run and /var/lib under DIR (as in a DaemonSet mounting the host's / at /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// kubelet's root directory, as seen on the node.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    /// Also read containerd task bundles under this state directory (repeatable). Running containerd daemons are
    /// found by themselves.
    #[arg(long, value_name = "DIR")]
    containerd_state: Vec<PathBuf>,
}

impl Globals {
    /// Which pods' findings to list.
    fn scope(&self) -> wonk::finding::Scope {
        if self.all_namespaces {
            return wonk::finding::Scope {
                namespace: None,
                pod: self.pod.clone(),
            };
        }
        wonk::finding::Scope {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
        }
    }

    /// Takes what was given after the subcommand's name over what was given before it; `--containerd-state`
    /// directories from both places add up. `sub` holds the subcommand's matches.
    fn merge(&mut self, sub: &clap::ArgMatches) -> Result<(), clap::Error> {
        let given = |id: &str| {
            sub.try_get_raw(id).is_ok_and(|v| v.is_some())
                && sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        if given("host_root") {
            self.host_root = sub
                .get_one::<PathBuf>("host_root")
                .cloned()
                .unwrap_or_default();
        }
        if sub.try_get_one::<bool>("json").ok().flatten() == Some(&true) {
            self.json = true;
        }
        if let Ok(Some(f)) = sub.try_get_one::<Format>("output") {
            self.output = Some(*f);
        }
        if let Ok(Some(n)) = sub.try_get_one::<String>("namespace") {
            self.namespace = Some(n.clone());
        }
        if let Ok(Some(p)) = sub.try_get_one::<String>("pod") {
            self.pod = Some(p.clone());
        }
        if sub.try_get_one::<bool>("all_namespaces").ok().flatten() == Some(&true) {
            self.all_namespaces = true;
        }
        // --json and -o json are one thing; -o table after --json wins.
        match self.output {
            Some(Format::Json) => self.json = true,
            Some(_) if given("output") => self.json = false,
            _ => {}
        }
        if self.json {
            self.output = Some(Format::Json);
        }
        if given("color") {
            if let Some(c) = sub.get_one::<ColorChoice>("color") {
                self.color = *c;
            }
        }
        if given("kubelet_root") {
            self.kubelet_root = sub
                .get_one::<PathBuf>("kubelet_root")
                .cloned()
                .unwrap_or_default();
        }
        if let Ok(Some(dirs)) = sub.try_get_many::<PathBuf>("containerd_state") {
            self.containerd_state.extend(dirs.cloned());
        }
        Ok(())
    }
}

/// What `wonk --help` says after the list of commands.
const AFTER_HELP: &str = "\
Checks judge the node and run in `wonk scan`, the agent and node-problem-detector; investigations answer one \
question, live. Read-only: wonk only observes the node, except where asked by name (`shims --reap`; the tracefs \
instance `enospc` adds while it runs).

Exit codes: 0 nothing at warning level or above, 1 warnings, 2 critical findings, 3 wonk could not do its job \
(`wonk check` speaks node-problem-detector's: 0 ok, 1 problem, 2 unknown).";

/// The clap command. Each subcommand's arguments are defined only when clap needs them (`Command::defer`): for
/// the subcommand given, or for its help.
fn cli_command() -> clap::Command {
    use clap::Args;
    fn sub(name: &'static str, about: &'static str) -> clap::Command {
        clap::Command::new(name).about(about).defer(arguments)
    }
    // The arguments first: their type's doc comment would otherwise replace the command's help line.
    let mut top = Globals::augment_args(clap::Command::new("wonk"))
            .version(env!("CARGO_PKG_VERSION"))
            .about(
                "Finds the wonkeries under your containers (stale bind mounts, full ext4 directory indexes, leaked \
                 containerd shims, kernel-log events) and names the pod behind each one",
            )
            .after_help(AFTER_HELP)
            .max_term_width(100)
            .subcommand_required(true)
            .arg_required_else_help(true);
    top = top.subcommand(sub("scan", "Run every check that can run on this host"));
    for u in checks::registry() {
        top = top.subcommand(sub(u.name, u.about));
    }
    for i in investigation::registry() {
        top = top.subcommand(sub(i.name, i.about));
    }
    top.subcommand(sub(
        "agent",
        "Run until stopped: follow the kernel log, run each check on its interval, serve Prometheus /metrics",
    ))
    .subcommand(sub(
        "check",
        "Run one check as a node-problem-detector custom plugin: exit 0 OK, 1 problem, 2 unknown; one short line",
    ))
    .subcommand(sub(
        "install",
        "Copy this binary to DIR/wonk (atomically, mode 0755), for node-problem-detector's initContainer",
    ))
    .subcommand(sub(
        "completions",
        "Print shell completions: wonk completions bash|zsh|fish (e.g. >/etc/bash_completion.d/wonk)",
    ))
}

/// `wonk completions` arguments.
#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// A subcommand's arguments, found by its name in the registries: its own first, then the common options.
fn arguments(c: clap::Command) -> clap::Command {
    use clap::Args;
    // The subcommand's one-line help stays, over any doc comment of its arguments' type.
    let about = c.get_about().cloned().unwrap_or_default();
    let name = c.get_name().to_string();
    let c = if let Some(u) = checks::unit(&name) {
        Globals::augment_args((u.args)(c))
    } else if let Some(i) = investigation::registry().iter().find(|i| i.name == name) {
        Globals::augment_args((i.args)(c))
    } else {
        match name.as_str() {
            "agent" => NodeOptions::augment_args(wonk::agent::Args::augment_args(c)),
            "check" => NodeOptions::augment_args(wonk::agent::npd::CheckArgs::augment_args(c)),
            "install" => wonk::install::Args::augment_args(c),
            "completions" => CompletionsArgs::augment_args(c),
            _ => Globals::augment_args(c),
        }
    };
    c.about(about).long_about(None::<&str>)
}

/// The global options, with those given after the subcommand's name merged in, and the subcommand.
fn parse_cli(
    matches: &clap::ArgMatches,
) -> Result<(Globals, &str, &clap::ArgMatches), clap::Error> {
    let mut g = Globals::from_arg_matches(matches)?;
    let (name, sub) = matches
        .subcommand()
        .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
    g.merge(sub)?;
    Ok((g, name, sub))
}

fn main() {
    let matches = match cli_command().try_get_matches() {
        Ok(m) => m,
        Err(e) => exit_on_clap_error(e),
    };
    let (globals, name, sub) = match parse_cli(&matches) {
        Ok(p) => p,
        Err(e) => exit_on_clap_error(e),
    };
    let code = match run(&globals, name, sub) {
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

fn exit_on_clap_error(e: clap::Error) -> ! {
    let code = if e.use_stderr() {
        exit::FAILED
    } else {
        exit::OK
    };
    let _ = e.print();
    std::process::exit(code);
}

fn run(g: &Globals, name: &str, sub: &clap::ArgMatches) -> anyhow::Result<i32> {
    if name == "agent" {
        let a = wonk::agent::Args::from_arg_matches(sub)?;
        return wonk::agent::run(&g.host_root, &g.kubelet_root, &g.containerd_state, &a);
    }
    if name == "install" {
        let a = wonk::install::Args::from_arg_matches(sub)?;
        let p = wonk::install::install(&a.to)?;
        println!("installed {}", p.display());
        return Ok(exit::OK);
    }
    if name == "completions" {
        let a = CompletionsArgs::from_arg_matches(sub)?;
        let mut cmd = cli_command();
        // Every subcommand's arguments, which are otherwise defined only when used.
        cmd.build();
        for s in cmd.get_subcommands_mut() {
            s.build();
        }
        clap_complete::generate(a.shell, &mut cmd, "wonk", &mut std::io::stdout());
        return Ok(exit::OK);
    }
    if name == "check" {
        // Before the node is opened: NPD shows stdout only, so even a wrong --host-root is a line there.
        let a = wonk::agent::npd::CheckArgs::from_arg_matches(sub)?;
        let node = wonk::agent::npd::Node {
            host_root: &g.host_root,
            kubelet_root: &g.kubelet_root,
            containerd_state: &g.containerd_state,
        };
        let (code, message) = wonk::agent::npd::run(&node, &a);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{message}")?;
        out.flush()?;
        return Ok(code);
    }
    let host = Host::open(&g.host_root)?;
    let owners = Attributor::new(&host, g.kubelet_root.clone(), &g.containerd_state);
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    let style = Style {
        color: g.color.enabled(),
    };
    // One write at the end rather than one per line: output to a pipe costs a syscall per write.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    if let Some(i) = investigation::registry().iter().find(|i| i.name == name) {
        let mut env = Env {
            host: &host,
            owners: &owners,
            json: g.json,
            style,
            host_root: &g.host_root,
            scope: g.scope(),
            out: &mut out,
        };
        let code = (i.run)(sub, &mut env)?;
        out.flush()?;
        return Ok(code);
    }
    let selected = if name == "scan" {
        checks::scan_checks()
    } else {
        let unit = checks::unit(name).ok_or_else(|| anyhow::anyhow!("no command {name}"))?;
        let inv = Invocation {
            host_root: &g.host_root,
            json: g.json,
        };
        vec![(unit.from_args)(sub, &inv)?]
    };
    let scope = g.scope();
    if let [check] = selected.as_slice() {
        if check.follows() {
            return follow(&ctx, check.as_ref(), g.json, style, &scope);
        }
    }
    let mut report = checks::run(&ctx, name, &selected);
    report.narrow(&scope);
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
    for check in &selected {
        report
            .actions
            .extend(check.act(&ctx, &mut render::confirm)?);
    }
    if g.json {
        render::json(&mut out, &report)?;
    } else {
        render::table_with(&mut out, &report, style, g.output == Some(Format::Wide))?;
    }
    out.flush()?;
    Ok(report.exit_code)
}

/// Runs a check that follows a live source: each finding is printed when it settles (a JSON object per line with
/// `--json`).
fn follow(
    ctx: &Context,
    check: &dyn checks::Check,
    json: bool,
    style: Style,
    scope: &wonk::finding::Scope,
) -> anyhow::Result<i32> {
    let t = std::time::Instant::now();
    let mut emit = |f: wonk::finding::Finding| {
        if !scope.selects(&f) {
            return;
        }
        let mut o = std::io::stdout().lock();
        let _ = if json {
            serde_json::to_writer(&mut o, &f)
                .map_err(std::io::Error::from)
                .and_then(|_| writeln!(o))
        } else {
            render::finding_details(&mut o, &f, style).and_then(|_| writeln!(o))
        };
        let _ = o.flush();
    };
    let output = check.follow(ctx, &mut emit);
    let mut report = wonk::finding::Report::new(check.name(), ctx.host.root());
    report.add(check.name(), output, t.elapsed());
    report.narrow(scope);
    Ok(report.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Globals, String), clap::Error> {
        let m = cli_command().try_get_matches_from(args)?;
        let (g, name, _) = parse_cli(&m)?;
        Ok((g, name.to_string()))
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
        let (g, name) = parse(&["wonk", "--json", "who", "md1:2", "--host-root", "/host"]).unwrap();
        assert_eq!(name, "who");
        assert!(g.json);
        assert_eq!(g.host_root, PathBuf::from("/host"));
        assert_eq!(g.kubelet_root, PathBuf::from("/var/lib/kubelet"));
        let (g, _) = parse(&[
            "wonk",
            "--host-root=/a",
            "--color=never",
            "--containerd-state=/s1",
            "ghosts",
            "--host-root=/b",
            "--containerd-state=/s2",
        ])
        .unwrap();
        assert_eq!(g.host_root, PathBuf::from("/b"), "the later one wins");
        assert!(matches!(g.color, ColorChoice::Never), "given before, kept");
        assert!(!g.json);
        assert_eq!(
            g.containerd_state,
            [PathBuf::from("/s1"), PathBuf::from("/s2")]
        );
        let (g, name) = parse(&["wonk", "agent", "--host-root", "/h"]).unwrap();
        assert_eq!((name.as_str(), g.host_root), ("agent", PathBuf::from("/h")));
        assert!(parse(&["wonk", "htree", "--scan", "/var", "--min-size", "4096"]).is_ok());
        assert!(parse(&["wonk", "fs"]).is_ok());
        assert!(
            parse(&["wonk", "shims", "--yes"]).is_err(),
            "--yes requires --reap"
        );
        assert!(parse(&["wonk", "kmsg", "f", "--follow"]).is_err());
        assert!(parse(&["wonk", "check", "nonesuch"]).is_err());
        assert!(
            parse(&["wonk", "agent", "--json"]).is_err(),
            "the agent prints no JSON: it does not take --json"
        );
    }

    #[test]
    fn kubectl_habits_namespace_pod_all_and_output() {
        let (g, _) = parse(&[
            "wonk", "-n", "shop", "ghosts", "--pod", "web-0", "-o", "wide",
        ])
        .unwrap();
        assert_eq!(
            g.scope(),
            wonk::finding::Scope {
                namespace: Some("shop".into()),
                pod: Some("web-0".into())
            }
        );
        assert_eq!((g.output, g.json), (Some(Format::Wide), false));
        let (g, _) = parse(&["wonk", "scan", "-n", "shop", "-A"]).unwrap();
        assert!(g.scope().is_all(), "-A overrides -n");
        let (g, _) = parse(&["wonk", "shims", "-o", "json"]).unwrap();
        assert!(g.json, "-o json is --json");
        let (g, _) = parse(&["wonk", "--json", "htree", "--scan", "/x", "-o", "table"]).unwrap();
        assert!(!g.json, "the later -o table wins over --json");
        let (g, _) = parse(&["wonk", "--namespace=kube-system", "layers"]).unwrap();
        assert_eq!(g.scope().namespace.as_deref(), Some("kube-system"));
        assert!(parse(&["wonk", "scan", "-o", "yaml"]).is_err());
        assert!(parse(&["wonk", "completions", "fish"]).is_ok());
        assert!(parse(&["wonk", "install", "--to", "/opt/wonk"]).is_ok());
        assert!(parse(&["wonk", "install"]).is_err(), "--to is required");
    }

    #[test]
    fn every_check_and_investigation_is_a_subcommand() {
        let cmd = cli_command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        for u in checks::registry() {
            assert!(names.contains(&u.name), "{} is not a subcommand", u.name);
        }
        for i in investigation::registry() {
            assert!(names.contains(&i.name), "{} is not a subcommand", i.name);
        }
    }
}
