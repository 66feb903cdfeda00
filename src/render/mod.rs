//! Output: a table for people (coloured only on a TTY, readable at 100 columns) and JSON for machines.

use crate::finding::{Finding, Report, Severity};
use serde_json::Value;
use std::io::{self, Write};

/// Whether to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// `auto` colours only a terminal, and never when `NO_COLOR` is set.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Styles text with ANSI colour when enabled.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn severity(&self, sev: Severity) -> String {
        let code = match sev {
            Severity::Critical => "1;31",
            Severity::Warning => "33",
            Severity::Info => "36",
        };
        self.paint(code, sev.label())
    }
}

/// Writes any serialisable value as pretty JSON followed by a newline.
pub fn json<T: serde::Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, value)?;
    writeln!(w)
}

/// The width tables are laid out for.
pub const WIDTH: usize = 100;

/// Makes text safe to print on a terminal: what a pod controls (a comm, a mount point, a kernel-log line) must
/// not move the cursor, recolour the screen or start a line of its own. C0 controls, DEL and C1 controls are
/// shown as escapes (`\e` for ESC, `\n`, `\t`, `\r`, others `\xNN`), and a backslash as `\\`, so that
/// an escape shown is never ambiguous with text that looks like one. Everything wonk prints for people passes
/// through here once: [`fit`] and [`wrap`] call it, and so must any other line printed raw. Bidirectional
/// overrides, which reorder what follows them on screen, are shown as `\u{NNNN}`. Bytes that were not UTF-8
/// reach here as U+FFFD (every reader decodes lossily), which is visible as it is.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let unsafe_char = |c: char| c.is_control() || c == '\\' || bidi(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if bidi(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Cuts a string to at most `max` characters, marking the cut with `…`; control characters escaped ([`escape`]).
pub fn fit(s: &str, max: usize) -> String {
    let s = &*escape(s);
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

/// Wraps text at spaces to `width` columns; a word longer than the width (a long path) is cut into pieces.
/// Control characters are escaped first ([`escape`]), so a newline in the text never starts a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let text = &*escape(text);
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let words = text.split(' ').flat_map(|w| {
        let chars: Vec<char> = w.chars().collect();
        if chars.is_empty() {
            return vec![String::new()];
        }
        chars
            .chunks(width)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
    });
    for word in words {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
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

/// The shims check's own view: every shim, healthy or not, one line each.
fn shims_table(w: &mut dyn Write, details: &Value, style: Style) -> io::Result<()> {
    let Some(shims) = details.as_array() else {
        return Ok(());
    };
    writeln!(
        w,
        "{}",
        style.bold(&format!(
            "{:<8} {:<3} {:<18} {:>8} {:>8} {:>4}  {}",
            "PID", "VER", "CLASS", "AGE", "RSS", "THR", "POD"
        ))
    )?;
    for s in shims {
        let pod = s["owner"].as_object().map_or("-".to_string(), |_| {
            serde_json::from_value::<crate::owner::Owner>(s["owner"].clone())
                .map_or("-".into(), |o| o.pod_label())
        });
        let age = s["age_seconds"].as_i64().map_or("-".into(), human_age);
        writeln!(
            w,
            "{:<8} {:<3} {:<18} {:>8} {:>7}M {:>4}  {}",
            s["pid"].as_u64().unwrap_or(0),
            fit(s["version"].as_str().unwrap_or("-"), 3),
            fit(s["class"].as_str().unwrap_or("-"), 18),
            age,
            s["rss_kib"].as_u64().unwrap_or(0) / 1024,
            s["threads"].as_u64().unwrap_or(0),
            fit(&pod, WIDTH - 60)
        )?;
    }
    writeln!(w)
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The human rendering of a report: a summary table, each finding's evidence, then what wonk could not see.
pub fn table(w: &mut dyn Write, report: &Report, style: Style) -> io::Result<()> {
    if report.command == "shims" {
        if let Some(c) = report.checks.iter().find(|c| c.name == "shims") {
            let st = |k: &str| c.stats.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
            let line = format!(
                "{} shims ({} MiB RSS, {} threads), {} pod sandboxes running; {} healthy, {} leaked (holding {} MiB \
                 RSS, {} threads), {} orphaned workloads, {} unknown",
                st("shims"),
                st("rss_kib") / 1024,
                st("threads"),
                st("running_sandboxes"),
                st("healthy"),
                st("leaked"),
                st("leaked_rss_kib") / 1024,
                st("leaked_threads"),
                st("orphaned_workload"),
                st("unknown")
            );
            for l in wrap(&line, WIDTH) {
                writeln!(w, "{l}")?;
            }
        }
        if let Some(d) = report
            .checks
            .iter()
            .find(|c| c.name == "shims")
            .and_then(|c| c.details.as_ref())
        {
            shims_table(w, d, style)?;
        }
    }
    if report.findings.is_empty() {
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        writeln!(w, "no findings ({} checked)", names.join(", "))?;
    } else {
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
                style.severity(f.severity),
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
            style.severity(Severity::Critical),
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
    if !report.blind_spots.is_empty() {
        writeln!(w)?;
        writeln!(w, "{}", style.bold("not seen:"))?;
        for b in &report.blind_spots {
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
                style.severity(f.severity),
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

/// `key: value`, with objects flattened one level (`mounted: inode=12 links=0 ...`); nulls are skipped.
pub fn kv_block(w: &mut dyn Write, key: &str, v: &Value, style: Style) -> io::Result<()> {
    let text = match v {
        Value::Null => return Ok(()),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    };
    let lines = wrap(&text, WIDTH - 8 - key.len().min(24));
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            writeln!(w, "    {}: {line}", style.dim(key))?;
        } else {
            writeln!(w, "    {:width$}  {line}", "", width = key.len())?;
        }
    }
    Ok(())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human rendering of `wonk top`: samples, avg_threads, then the group columns; kstack last and wrapped.
pub fn top(w: &mut dyn Write, top: &crate::top::Top, style: Style) -> io::Result<()> {
    let mut header = format!("{:>8} | {:>11}", "samples", "avg_threads");
    for c in &top.group_by {
        header.push_str(&format!(" | {c}"));
    }
    writeln!(w, "{}", style.bold(&header))?;
    for r in &top.rows {
        let mut line = format!("{:>8} | {:>11.2}", r.samples, r.avg_threads);
        for v in &r.values {
            line.push_str(" | ");
            line.push_str(v);
        }
        for (i, l) in wrap(&line, WIDTH).iter().enumerate() {
            writeln!(w, "{}{l}", if i == 0 { "" } else { "      " })?;
        }
    }
    writeln!(
        w,
        "{}",
        style.dim(&format!(
            "{} rounds at {} Hz over {:.1} s, {} threads seen, states {}",
            top.rounds, top.hz, top.elapsed_seconds, top.threads_seen, top.states
        ))
    )?;
    for u in &top.unreadable {
        writeln!(
            w,
            "not seen: {} {} file(s), e.g. {}: {}",
            u.count,
            u.file,
            escape(&u.example),
            escape(&u.error)
        )?;
    }
    Ok(())
}

/// The human rendering of `wonk fs`.
pub fn filesystems(
    w: &mut dyn Write,
    fss: &[crate::ext4::htree::FsInfo],
    style: Style,
) -> io::Result<()> {
    writeln!(
        w,
        "{}",
        style.bold(&format!(
            "{:<10} {:<7} {:>5}  {:<9} {:<9} {:<9} {:<8}  {}",
            "DEVICE", "MAJ:MIN", "BLOCK", "dir_index", "large_dir", "csum", "casefold", "MOUNT"
        ))
    )?;
    for f in fss {
        let v = serde_json::to_value(f).unwrap_or(Value::Null);
        let feat = |k: &str| {
            if v["features"][k].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        };
        writeln!(
            w,
            "{:<10} {:<7} {:>5}  {:<9} {:<9} {:<9} {:<8}  {}",
            fit(v["device_name"].as_str().unwrap_or("-"), 10),
            scalar(&v["device"]),
            v["block_size"]
                .as_u64()
                .map_or("-".to_string(), |b| b.to_string()),
            feat("dir_index"),
            feat("large_dir"),
            feat("metadata_csum"),
            feat("casefold"),
            escape(v["mount_point"].as_str().unwrap_or("-"))
        )?;
        if let Some(e) = v["error"].as_str() {
            writeln!(w, "    {} {}", style.dim("error:"), escape(e))?;
        }
    }
    Ok(())
}

/// The human rendering of `wonk who`.
pub fn who(w: &mut dyn Write, who: &crate::who::Who, style: Style) -> io::Result<()> {
    writeln!(
        w,
        "{} {} ({})",
        style.bold("target:"),
        escape(&who.target),
        who.kind
    )?;
    if let Some(p) = &who.process {
        kv_block(
            w,
            "process",
            &serde_json::to_value(p).unwrap_or(Value::Null),
            style,
        )?;
    }
    if let Some(p) = &who.path {
        kv_block(
            w,
            "path",
            &serde_json::to_value(p).unwrap_or(Value::Null),
            style,
        )?;
    }
    match &who.owner {
        Some(o) if !o.is_empty() => {
            writeln!(
                w,
                "{} {}  container {}",
                style.bold("pod:"),
                escape(&o.pod_label()),
                escape(&o.container_label())
            )?;
            kv_block(
                w,
                "owner",
                &serde_json::to_value(o).unwrap_or(Value::Null),
                style,
            )?;
        }
        _ => writeln!(w, "{} none known", style.bold("pod:"))?,
    }
    if !who.pids.is_empty() {
        let pids: Vec<String> = who.pids.iter().map(u32::to_string).collect();
        kv_block(w, "pids", &Value::String(pids.join(" ")), style)?;
    }
    if !who.seen_by.is_empty() {
        writeln!(w, "{}", style.bold("seen by:"))?;
        for s in &who.seen_by {
            let owner = s.owner.as_ref().filter(|o| !o.is_empty()).map_or(
                s.pid
                    .map_or("(no pod)".to_string(), |p| format!("pid {p} (no pod)")),
                |o| format!("{} ({})", o.pod_label(), o.container_label()),
            );
            let inside = s
                .path_in_container
                .as_deref()
                .map(|p| format!(" as {p}"))
                .unwrap_or_default();
            for (i, line) in wrap(&format!("{owner}{inside}: {}", s.how), WIDTH - 6)
                .iter()
                .enumerate()
            {
                writeln!(w, "{}{line}", if i == 0 { "  - " } else { "    " })?;
            }
        }
    }
    for n in &who.notes {
        writeln!(w, "{} {}", style.dim("note:"), escape(n))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_and_wrap() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(
            wrap("averyverylongword x", 5),
            vec!["avery", "veryl", "ongwo", "rd x"]
        );
    }

    #[test]
    fn control_characters_are_shown_as_escapes() {
        assert_eq!(escape("plain /path"), "plain /path");
        assert_eq!(
            escape("a\x1b[31mb\nc\td\re\x7ff\u{9b}g\\h\x00"),
            "a\\e[31mb\\nc\\td\\re\\x7ff\\x9bg\\\\h\\x00"
        );
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(fit("a\nb", 10), "a\\nb");
        assert_eq!(wrap("one\ntwo", 100), vec!["one\\ntwo"]);
    }

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
