//! Fuzzes the readers of containerd's files that `wonk orphans` and `wonk shims --containerd-log` read: bolt
//! databases (every bucket walked) and containerd's log (plain lines or a journal export).
//! Only panics, hangs and runaway allocations count as failures; every result is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::checks::shims::log;
use wonk::owner::bolt;

fn walk(db: &bolt::Db, b: &bolt::Bucket, depth: usize) {
    if depth > 4 {
        return;
    }
    let Ok(entries) = db.entries(b) else {
        return;
    };
    for e in entries.iter().filter(|e| e.bucket).take(64) {
        if let Ok(Some(child)) = db.bucket(b, &e.key) {
            walk(db, &child, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(db) = bolt::Db::open(data.to_vec()) {
        walk(&db, &db.root(), 0);
    }
    let log = log::Log {
        records: log::parse(data),
        skipped_bytes: 0,
    };
    black_box(log::about(
        &log,
        &["4f1c0c4a8e3b2d1f00112233445566778899aabbccddeeff0011223344556677"],
    ));
});
