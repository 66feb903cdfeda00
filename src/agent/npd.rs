//! `wonk check NAME`: node-problem-detector's custom-plugin protocol. Exit 0 OK, 1 problem, 2 unknown (the check
//! failed or panicked); one line on stdout of at most 80 characters, which NPD shows as the condition's message.

use crate::checks::{self, Context};
use crate::finding::{CheckOutput, Severity};

/// NPD's exit codes.
pub const OK: i32 = 0;
pub const PROBLEM: i32 = 1;
pub const UNKNOWN: i32 = 2;
/// NPD truncates longer messages; wonk keeps within it.
pub const MAX_MESSAGE: usize = 80;

/// `wonk check` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The check to run: one with a node-problem-detector condition.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(names()))]
    pub name: String,
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
    let c = (u.scan)();
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
    // The tail (owner, count) matters more than the middle of a long path: cut the subject first.
    let tail = crate::term::escape(&format!("{who}{more}")).into_owned();
    let head = crate::term::escape(&format!("{name}: {} {}", f.kind, f.subject)).into_owned();
    let room = MAX_MESSAGE.saturating_sub(tail.chars().count());
    let message = format!("{}{tail}", cut_to(&head, room));
    (PROBLEM, cut_to(&message, MAX_MESSAGE))
}

fn cut_to(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(3)).collect();
    t.push_str("...");
    t
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
    fn messages_fit_80_characters() {
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
        assert!(msg.chars().count() <= 80, "{msg}");
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
        assert_eq!(msg.chars().count(), 80);
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
