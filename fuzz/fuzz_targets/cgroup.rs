//! Fuzzes the cgroup path parsers with arbitrary bytes, as found in `/proc/PID/cgroup`.
//! Only panics, hangs and runaway allocations count as failures; every result is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::owner::cgroup;

fuzz_target!(|data: &[u8]| {
    black_box(cgroup::parse_proc_cgroup(data));
    if let Ok(s) = std::str::from_utf8(data) {
        black_box(cgroup::parse_path(s));
    }
});
