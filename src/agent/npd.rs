//! `wonk check NAME`: node-problem-detector's custom-plugin protocol. Exit 0 OK, 1 problem, 2 unknown (the check
//! failed or panicked, or wonk could not look at the node at all); one line on stdout of at most 80 bytes (NPD's
//! `max_output_length` counts bytes), which NPD shows as the condition's message. Errors go to stdout too: NPD
//! shows nothing else.

use crate::checks::{self, Context, Invocation};
use crate::finding::{CheckOutput, Severity};
use crate::host::Host;
use crate::owner::Attributor;
use std::path::{Path, PathBuf};

/// NPD's exit codes.
pub const OK: i32 = 0;
pub const PROBLEM: i32 = 1;
pub const UNKNOWN: i32 = 2;
/// NPD cuts longer messages (`max_output_length`, in bytes); wonk keeps within it, at a character boundary.
pub const MAX_MESSAGE: usize = 80;

/// `wonk check` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The check to run: one with a node-problem-detector condition.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(names()))]
    pub name: String,
    /// Only what the node logged in the last SECONDS (checks that read a log: kmsg). Give NPD's
    /// invoke_interval or a few times it, so that a condition clears once the events stop.
    #[arg(long, value_name = "SECONDS")]
    pub window: Option<u64>,
}

/// The node `wonk check` reads.
pub struct Node<'a> {
    pub host_root: &'a Path,
    pub kubelet_root: &'a Path,
    pub containerd_state: &'a [PathBuf],
}

/// `wonk check`: NPD's exit code and the one line to print. Whatever goes wrong (a wrong `--host-root`, a check
/// that takes no window) is an UNKNOWN with its reason in the line.
pub fn run(node: &Node, a: &CheckArgs) -> (i32, String) {
    let host = match Host::open(node.host_root) {
        Ok(h) => h,
        Err(e) => return (UNKNOWN, cut(&format!("{}: unknown: {e:#}", a.name))),
    };
    let owners = Attributor::new(
        &host,
        node.kubelet_root.to_path_buf(),
        node.containerd_state,
    );
    let ctx = Context {
        host: &host,
        owners: &owners,
    };
    match a.window {
        None => check(&ctx, &a.name),
        Some(secs) => match windowed(&ctx, &a.name, secs) {
            Ok(c) => run_one(&ctx, &a.name, c.as_ref()),
            Err(e) => (UNKNOWN, cut(&format!("{}: unknown: {e:#}", a.name))),
        },
    }
}

/// The check as its own subcommand builds it with `--since SECONDS`: only checks that read a log take one.
fn windowed(ctx: &Context, name: &str, secs: u64) -> anyhow::Result<Box<dyn checks::Check>> {
    let u = checks::unit(name).ok_or_else(|| anyhow::anyhow!("no check named {name}"))?;
    let cmd = (u.args)(clap::Command::new(u.name));
    if !cmd.get_arguments().any(|a| a.get_long() == Some("since")) {
        anyhow::bail!("--window: {name} reads no log");
    }
    let m = cmd.try_get_matches_from([u.name.to_string(), "--since".into(), secs.to_string()])?;
    (u.from_args)(
        &m,
        &Invocation {
            host_root: ctx.host.root(),
            json: false,
        },
    )
}

/// The names `wonk check` accepts: every check that declares an NPD condition.
pub fn names() -> Vec<&'static str> {
    checks::registry()
        .iter()
        .filter(|u| u.npd.is_some() || u.in_scan)
        .map(|u| u.name)
        .collect()
}

/// Runs one check and returns NPD's exit code and message.
pub fn check(ctx: &Context, name: &str) -> (i32, String) {
    let Some(u) = checks::unit(name).filter(|_| names().contains(&name)) else {
        return (UNKNOWN, cut(&format!("wonk check: no check named {name}")));
    };
    run_one(ctx, name, (u.scan)().as_ref())
}

fn run_one(ctx: &Context, name: &str, c: &dyn checks::Check) -> (i32, String) {
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.run(ctx)));
    match out {
        Ok(out) => verdict(name, &out),
        Err(_) => (UNKNOWN, cut(&format!("{name}: the check panicked"))),
    }
}

/// The verdict on one check's output.
pub fn verdict(name: &str, out: &CheckOutput) -> (i32, String) {
    if let Some(e) = &out.failed {
        return (UNKNOWN, cut(&format!("{name}: unknown: {e}")));
    }
    let mut bad: Vec<_> = out
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .collect();
    if bad.is_empty() {
        return (OK, cut(&format!("{name}: ok")));
    }
    bad.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let f = bad[0];
    let who = f
        .owner
        .as_ref()
        .filter(|o| !o.is_empty())
        .map(|o| format!(" ({})", o.pod_label()))
        .unwrap_or_default();
    let more = if bad.len() > 1 {
        format!(" +{} more", bad.len() - 1)
    } else {
        String::new()
    };
    // Escaped first, so that the cut counts what NPD will show; the tail (owner, count) matters more than the
    // middle of a long path: the subject is cut first.
    let tail = crate::term::escape(&format!("{who}{more}")).into_owned();
    let head = crate::term::escape(&format!("{name}: {} {}", f.kind, f.subject)).into_owned();
    let room = MAX_MESSAGE.saturating_sub(tail.len());
    (
        PROBLEM,
        cut_to(&format!("{}{tail}", cut_to(&head, room)), MAX_MESSAGE),
    )
}

/// `s` in at most `n` bytes, cut at a character boundary and marked with `...`.
fn cut_to(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    format!("{}...", crate::term::cut_bytes(s, n.saturating_sub(3)))
}

/// NPD shows the message as the condition's text: control characters escaped, one line, within the limit.
fn cut(s: &str) -> String {
    cut_to(&crate::term::escape(s), MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    #[test]
    fn messages_fit_80_bytes() {
        let f = Finding {
            check: "ghosts",
            kind: "deleted",
            severity: Severity::Warning,
            summary: String::new(),
            subject: format!("/very/{}/data.txt", "long/".repeat(40)),
            owner: None,
            evidence: vec![],
            advice: vec![],
        };
        let out = CheckOutput {
            findings: vec![f.clone(), f],
            ..Default::default()
        };
        let (code, msg) = verdict("ghosts", &out);
        assert_eq!(code, PROBLEM);
        assert!(msg.len() <= 80, "{msg}");
        assert!(
            msg.starts_with("ghosts: deleted /very/") && msg.ends_with(" +1 more"),
            "{msg}"
        );
        let (code, msg) = verdict("ghosts", &CheckOutput::default());
        assert_eq!((code, msg.as_str()), (OK, "ghosts: ok"));
        let failed = CheckOutput {
            failed: Some("x".repeat(200)),
            ..Default::default()
        };
        let (code, msg) = verdict("htree", &failed);
        assert_eq!(code, UNKNOWN);
        assert_eq!(msg.len(), 80);
    }

    /// A Japanese file name (three bytes a character) is cut to 80 bytes, between characters, the owner kept.
    #[test]
    fn a_japanese_subject_is_cut_at_a_character_boundary() {
        let f = Finding {
            check: "ghosts",
            kind: "deleted",
            severity: Severity::Warning,
            summary: String::new(),
            subject: format!("/data/{}.txt", "設定ファイル".repeat(10)),
            owner: Some(crate::owner::Owner {
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                ..Default::default()
            }),
            evidence: vec![],
            advice: vec![],
        };
        let out = CheckOutput {
            findings: vec![f],
            ..Default::default()
        };
        let (code, msg) = verdict("ghosts", &out);
        assert_eq!(code, PROBLEM);
        assert!(msg.len() <= MAX_MESSAGE, "{} bytes: {msg}", msg.len());
        assert!(msg.len() > MAX_MESSAGE - 3, "uses the room: {msg}");
        assert!(
            msg.starts_with("ghosts: deleted /data/設定ファイル"),
            "{msg}"
        );
        assert!(msg.contains("... (shop/web-0"), "{msg}");
        assert_eq!(cut_to("日本語", 8), "日...");
        assert_eq!(cut_to("日本", 6), "日本");
    }

    /// A wrong --host-root is an UNKNOWN whose reason is the one line NPD shows.
    #[test]
    fn a_wrong_host_root_is_unknown_with_the_reason() {
        let a = CheckArgs {
            name: "ghosts".into(),
            window: None,
        };
        let node = Node {
            host_root: Path::new("/nonexistent/wonk-host"),
            kubelet_root: Path::new("/var/lib/kubelet"),
            containerd_state: &[],
        };
        let (code, msg) = run(&node, &a);
        assert_eq!(code, UNKNOWN);
        assert!(
            msg.starts_with("ghosts: unknown: cannot open --host-root /nonexistent/wonk-host"),
            "{msg}"
        );
        assert!(msg.len() <= MAX_MESSAGE);
    }

    #[test]
    fn control_characters_are_escaped_in_the_message() {
        let f = Finding {
            check: "ghosts",
            kind: "deleted",
            severity: Severity::Warning,
            summary: String::new(),
            subject: "/a\x1b[2J\nCRIT x".into(),
            owner: None,
            evidence: vec![],
            advice: vec![],
        };
        let out = CheckOutput {
            findings: vec![f],
            ..Default::default()
        };
        let (_, msg) = verdict("ghosts", &out);
        assert_eq!(msg, "ghosts: deleted /a\\e[2J\\nCRIT x");
        let failed = CheckOutput {
            failed: Some("bad\x07\tname".into()),
            ..Default::default()
        };
        assert_eq!(
            verdict("ghosts", &failed).1,
            "ghosts: unknown: bad\\x07\\tname"
        );
    }
}
