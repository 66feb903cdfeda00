//! Runs the kmsg rule engine over a file of kernel log lines and prints its speed, for bench/kmsg.sh.
//!
//!     cargo run --release --example kmsg_bench -- FILE
//!
//! Two passes: `pipeline` opens the file and reads it through the text reader (line splitting, format detection, prefix
//! parsing) into the rules, as `wonk kmsg FILE` does; `rules` runs only the rules over messages already in memory.
//! Resolution (paths, pods) is not timed: it runs once per finding, not per line.

use std::time::Instant;
use wonk::kmsg::reader::{read_text, ReadStats};
use wonk::kmsg::record::{parse_line, Line, Record};
use wonk::kmsg::rules::Engine;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: kmsg_bench FILE");
        std::process::exit(2);
    };
    let fail = |e: std::io::Error| -> ! {
        eprintln!("kmsg_bench: {path}: {e}");
        std::process::exit(2);
    };

    let t = Instant::now();
    let mut engine = Engine::new();
    let mut stats = ReadStats::default();
    let file = std::fs::File::open(&path).unwrap_or_else(|e| fail(e));
    read_text(file, &mut stats, &mut |r: &Record<'_>| engine.push(r)).unwrap_or_else(|e| fail(e));
    let pipeline = t.elapsed().as_secs_f64();
    let lines = stats.records + stats.malformed + stats.not_kernel + stats.oversized;
    let matched = engine.matched();
    let groups = engine.groups().len();

    let data = std::fs::read(&path).unwrap_or_else(|e| fail(e));
    let messages: Vec<Record<'_>> = data
        .split(|&b| b == b'\n')
        .filter_map(|l| match parse_line(l) {
            Line::Record(r) => Some(r),
            _ => None,
        })
        .collect();
    let t = Instant::now();
    let mut engine = Engine::new();
    for r in &messages {
        engine.push(r);
    }
    let rules = t.elapsed().as_secs_f64();
    assert_eq!(engine.matched(), matched);

    println!(
        "lines={lines} matched={matched} groups={groups} malformed={} pipeline_secs={pipeline:.4} pipeline_lines_per_sec={:.0} rules_secs={rules:.4} rules_lines_per_sec={:.0}",
        stats.malformed,
        lines as f64 / pipeline,
        messages.len() as f64 / rules,
    );
}
