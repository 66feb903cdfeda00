//! Fuzzes the mountinfo parser with arbitrary bytes: mountinfo is read from processes wonk does not trust.
//! Only panics, hangs and runaway allocations count as failures; every result is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::host::mountinfo;

fuzz_target!(|data: &[u8]| {
    let (mounts, bad) = mountinfo::parse(data);
    for m in &mounts {
        black_box(m.root_deleted());
        black_box(m.root_path());
        black_box(m.super_option("upperdir"));
        black_box(m.dev());
    }
    black_box(&bad);
    black_box(mountinfo::unescape(data));
});
