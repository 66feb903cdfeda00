//! `wonk who`: who owns a pid, a container id (or unique prefix), a host path, or DEV:INODE. The answer is the
//! attribution layer's ([`crate::owner::locate`]); this module is the command and its table.

use crate::investigation::Investigation;
use crate::owner::locate::{who, Who};
use crate::term::{kv_block, wrap, Style, WIDTH};
use serde_json::Value;
use std::io::{self, Write};

/// `wonk who`'s registration.
pub const INVESTIGATION: Investigation = Investigation {
    name: "who",
    about: "Tell who owns a pid, a container id (or unique prefix), a host path, or DEV:INODE (md1:211566352)",
    args: |c| <Args as clap::Args>::augment_args(c),
    run: |m, env| {
        let a: Args = clap::FromArgMatches::from_arg_matches(m)?;
        let w = who(env.owners, &a.target)?;
        env.emit(&w, table)?;
        Ok(crate::finding::exit::OK)
    },
};

/// `wonk who` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// pid | container id | /host/path | DEV:INODE
    target: String,
}

/// The human rendering of `wonk who`.
pub fn table(w: &mut dyn Write, who: &Who, style: Style) -> io::Result<()> {
    writeln!(w, "{} {} ({})", style.bold("target:"), who.target, who.kind)?;
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
                o.pod_label(),
                o.container_label()
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
        writeln!(w, "{} {n}", style.dim("note:"))?;
    }
    crate::render::not_seen(w, &who.blind_spots, style)
}
