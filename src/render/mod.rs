//! Output of a report: a table for people (coloured only on a TTY, readable at 100 columns) and JSON for
//! machines. The text primitives are [`crate::term`]'s; a check's own view is its `Output::table`.

use crate::finding::{BlindSpot, Finding, Report, Severity};
pub use crate::term::{escape, fit, kv_block, wrap, ColorChoice, Style, WIDTH};
use crate::term::{scalar, Tone};
use serde_json::Value;
use std::io::{self, Write};

/// A severity as its label, coloured by how bad it is.
pub fn severity(style: Style, sev: Severity) -> String {
    let tone = match sev {
        Severity::Critical => Tone::Red,
        Severity::Warning => Tone::Yellow,
        Severity::Info => Tone::Cyan,
    };
    style.tone(tone, sev.label())
}

/// Writes any serialisable value as pretty JSON followed by a newline.
pub fn json<T: serde::Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, value)?;
    writeln!(w)
}

/// Asks on the terminal before changing the host. Without a terminal the answer is no.
pub fn confirm(n: usize, what: &str, verb: &str) -> bool {
    use std::io::{BufRead, IsTerminal};
    if !io::stdin().is_terminal() {
        eprintln!("wonk: not a terminal: refusing to {verb} {n} {what} without --yes");
        return false;
    }
    eprint!("{verb} {n} {what}? [y/N] ");
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// The human rendering of a report: a summary table, each finding's evidence, then what wonk could not see.
pub fn table(w: &mut dyn Write, report: &Report, style: Style) -> io::Result<()> {
    table_with(w, report, style, false)
}

/// [`table`], or with `wide` (`-o wide`) a summary with the kind and namespace columns and nothing cut, wider
/// than the terminal if it must be.
pub fn table_with(w: &mut dyn Write, report: &Report, style: Style, wide: bool) -> io::Result<()> {
    // A check run alone (its subcommand) shows its own view first: every shim, healthy or not.
    if let [only] = report.checks.as_slice() {
        if let Some(o) = &only.output {
            o.table(w, style)?;
        }
    }
    if report.findings.is_empty() && report.checks.iter().all(|c| c.error.is_none()) {
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        writeln!(w, "no findings ({} checked)", names.join(", "))?;
    } else if wide && !report.findings.is_empty() {
        wide_summary(w, &report.findings, style)?;
        for f in &report.findings {
            writeln!(w)?;
            finding_details(w, f, style)?;
        }
    } else if !report.findings.is_empty() {
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{:<4}  {:<8}  {:<30}  {:<14}  {}",
                "SEV", "CHECK", "POD", "CONTAINER", "SUBJECT"
            ))
        )?;
        for f in &report.findings {
            let (pod, ctr) = f.owner.as_ref().map_or(("-".into(), "-".into()), |o| {
                (o.pod_label(), o.container_label())
            });
            writeln!(
                w,
                "{}  {:<8}  {:<30}  {:<14}  {}",
                severity(style, f.severity),
                fit(f.check, 8),
                fit(&pod, 30),
                fit(&ctr, 14),
                fit(&f.subject, WIDTH - 64)
            )?;
        }
        for f in &report.findings {
            writeln!(w)?;
            finding_details(w, f, style)?;
        }
    }
    for c in report.checks.iter().filter(|c| c.error.is_some()) {
        writeln!(w)?;
        writeln!(
            w,
            "{} check {} failed: {}",
            severity(style, Severity::Critical),
            c.name,
            escape(c.error.as_deref().unwrap_or(""))
        )?;
    }
    for a in &report.actions {
        writeln!(
            w,
            "{} {}",
            style.bold("did:"),
            escape(&a.as_object().map_or(a.to_string(), |o| {
                o.values().map(scalar).collect::<Vec<_>>().join(" ")
            }))
        )?;
    }
    not_seen(w, &report.blind_spots, style)
}

/// `-o wide`'s summary: every column at the width of its longest value, control characters escaped.
fn wide_summary(w: &mut dyn Write, findings: &[Finding], style: Style) -> io::Result<()> {
    let rows: Vec<[String; 6]> = findings
        .iter()
        .map(|f| {
            let o = f.owner.as_ref();
            let get = |v: Option<&String>| {
                v.map_or("-".to_string(), |s| crate::term::escape(s).into_owned())
            };
            [
                f.check.to_string(),
                f.kind.to_string(),
                get(o.and_then(|o| o.namespace.as_ref())),
                o.map_or("-".into(), |o| {
                    crate::term::escape(&o.pod_label()).into_owned()
                }),
                o.map_or("-".into(), |o| {
                    crate::term::escape(&o.container_label()).into_owned()
                }),
                crate::term::escape(&f.subject).into_owned(),
            ]
        })
        .collect();
    let heads = ["CHECK", "KIND", "NAMESPACE", "POD", "CONTAINER", "SUBJECT"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([heads[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let mut head = format!("{:<4}", "SEV");
    for (i, h) in heads.iter().enumerate().take(5) {
        head.push_str(&format!("  {h:<0$}", widths[i]));
    }
    writeln!(w, "{}", style.bold(&format!("{head}  {}", heads[5])))?;
    for (f, r) in findings.iter().zip(&rows) {
        let mut line = severity(style, f.severity);
        for (i, v) in r.iter().enumerate().take(5) {
            line.push_str(&format!("  {v:<0$}", widths[i]));
        }
        writeln!(w, "{line}  {}", r[5])?;
    }
    Ok(())
}

/// The blind spots, under `not seen:`; nothing when there are none.
pub fn not_seen(w: &mut dyn Write, blind_spots: &[BlindSpot], style: Style) -> std::io::Result<()> {
    if !blind_spots.is_empty() {
        writeln!(w)?;
        writeln!(w, "{}", style.bold("not seen:"))?;
        for b in blind_spots {
            for (i, line) in wrap(&format!("[{}] {}: {}", b.scope, b.what, b.why), WIDTH - 4)
                .iter()
                .enumerate()
            {
                writeln!(w, "{}{}", if i == 0 { "  " } else { "    " }, line)?;
            }
        }
    }
    Ok(())
}

/// One finding's summary, owner, evidence and advice, indented under a header line.
pub fn finding_details(w: &mut dyn Write, f: &Finding, style: Style) -> io::Result<()> {
    let head = format!("{} {}: ", f.check, f.kind);
    for (i, line) in wrap(&f.subject, WIDTH - 5 - head.len()).iter().enumerate() {
        if i == 0 {
            writeln!(
                w,
                "{} {head}{}",
                severity(style, f.severity),
                style.bold(line)
            )?;
        } else {
            writeln!(
                w,
                "     {:width$}{}",
                "",
                style.bold(line),
                width = head.len()
            )?;
        }
    }
    for line in wrap(&f.summary, WIDTH - 4) {
        writeln!(w, "    {line}")?;
    }
    if let Some(o) = &f.owner {
        let v = serde_json::to_value(o).unwrap_or(Value::Null);
        kv_block(w, "owner", &v, style)?;
    }
    // `report` holds a check's whole raw report for machines; people get the lines above it.
    for (k, v) in f.evidence.iter().filter(|(k, _)| k != "report") {
        kv_block(w, k, v, style)?;
    }
    for a in &f.advice {
        for (i, line) in wrap(a, WIDTH - 12).iter().enumerate() {
            writeln!(
                w,
                "    {} {line}",
                if i == 0 {
                    style.dim("advice:")
                } else {
                    "       ".into()
                }
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_in_100_columns() {
        use crate::finding::{CheckOutput, Finding};
        let mut r = Report::new("ghosts", std::path::Path::new("/"));
        let f = Finding {
            check: "ghosts",
            kind: "deleted",
            severity: Severity::Warning,
            summary: "x ".repeat(120),
            subject: "/very/long/path/".repeat(10),
            owner: Some(crate::owner::Owner {
                namespace: Some("n".repeat(40)),
                pod: Some("p".into()),
                ..Default::default()
            }),
            evidence: vec![("host_path".into(), Value::String("/h ".repeat(60)))],
            advice: vec!["do ".repeat(50)],
        };
        r.add(
            "ghosts",
            CheckOutput {
                findings: vec![f],
                ..Default::default()
            },
            Default::default(),
        );
        let mut buf = Vec::new();
        table(&mut buf, &r, Style { color: false }).unwrap();
        for line in String::from_utf8(buf).unwrap().lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} chars: {line}",
                line.chars().count()
            );
        }
    }
}
