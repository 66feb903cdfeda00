//! Fuzzes the OCI config.json reader and the containerd TOML config reader with arbitrary bytes.
//! Only panics, hangs and runaway allocations count as failures; every result is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use wonk::owner::containerd;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = containerd::parse_spec(data) {
        for m in &spec.mounts {
            black_box(m.is_bind());
        }
        black_box(&spec);
    }
    black_box(containerd::parse_config(&String::from_utf8_lossy(data)));
});
