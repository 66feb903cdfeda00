//! Fuzzes the kernel-log parsers and the rule engine: /dev/kmsg records, dmesg and journal lines are untrusted
//! text (any process can write to /dev/kmsg). Only panics, hangs and runaway allocations count as failures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::kmsg::record::{boot_marker, parse_kmsg, parse_line, strip_ansi, Line};
use wonk::kmsg::rules::Engine;

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new();
    if let Some(r) = parse_kmsg(data) {
        black_box(r.text());
        black_box(r.fields().count());
        engine.push(&r);
    }
    let mut plain = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        black_box(boot_marker(line));
        // Every format of record.rs, ANSI-coloured or not (the text reader strips escapes first).
        let line = if strip_ansi(line, &mut plain) {
            &plain[..]
        } else {
            line
        };
        if let Line::Record(r) = parse_line(line) {
            black_box(r.wall_text());
            engine.push(&r);
        }
    }
    black_box(engine.take_all());
});
