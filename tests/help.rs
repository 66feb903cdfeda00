//! Every `--help` wonk prints, against its snapshot in tests/snapshots/help/, so that help text cannot change
//! without a change to the snapshot in the same commit. After a deliberate change, regenerate them with
//! `WONK_UPDATE_SNAPSHOTS=1 cargo test --test help` and review the diff.

use std::path::PathBuf;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wonk"))
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wonk {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `wonk --help` lists.
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_help_matches_its_snapshot() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help");
    let update = std::env::var_os("WONK_UPDATE_SNAPSHOTS").is_some();
    let top = help(&["--help"]);
    let subs = subcommands(&top);
    assert!(subs.len() >= 10, "{top}");
    let mut pages = vec![("wonk".to_string(), top)];
    for s in &subs {
        pages.push((format!("wonk-{s}"), help(&[s, "--help"])));
    }
    let mut differ = Vec::new();
    for (name, text) in &pages {
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == *text => {}
            Ok(want) => differ.push(format!(
                "{name}: differs\n--- snapshot\n{want}\n--- now\n{text}"
            )),
            Err(e) => differ.push(format!("{name}: {}: {e}", path.display())),
        }
    }
    // A snapshot whose command is gone.
    if !update {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let f = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".txt")
                .to_string();
            if !pages.iter().any(|(n, _)| *n == f) {
                differ.push(format!("{f}: a snapshot of a command wonk no longer has"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "help text changed (WONK_UPDATE_SNAPSHOTS=1 to accept):\n{}",
        differ.join("\n")
    );
}
