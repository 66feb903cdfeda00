//! The floor for `wonk top`: the least work a procfs thread-state sampler can do.
//!
//!     cargo build --release --example top_floor
//!     target/release/examples/top_floor [HZ [SECONDS]]      (defaults 20 and 5)
//!
//! Lists every task once, opens every `/proc/PID/task/TID/stat`, then for SECONDS at HZ `pread`s each open
//! file once per sample and looks at the state byte (counting R and D), nothing else: no rescans, no
//! grouping, no allocation in the loop. Prints one line:
//! `threads=N samples=S r_avg=X d_avg=Y elapsed=E`.
//! Used by bench/top.sh.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let hz: f64 = args
        .next()
        .map_or(20.0, |s| s.parse().expect("HZ: a number"));
    let secs: f64 = args
        .next()
        .map_or(5.0, |s| s.parse().expect("SECONDS: a number"));
    assert!(hz > 0.0 && secs > 0.0, "HZ and SECONDS must be positive");

    // One descriptor per thread: raise the soft limit to the hard one, as wonk does.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }

    let me = std::process::id().to_string();
    let mut files: Vec<File> = Vec::new();
    for p in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let pid = p.file_name();
        let Some(pid) = pid.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let tid = t.file_name();
            let Some(tid) = tid.to_str() else { continue };
            if let Ok(f) = File::open(format!("/proc/{pid}/task/{tid}/stat")) {
                files.push(f);
            }
        }
    }

    let period = Duration::from_secs_f64(1.0 / hz);
    let duration = Duration::from_secs_f64(secs);
    let mut buf = [0u8; 4096];
    let (mut samples, mut r, mut d) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    loop {
        let round = Instant::now();
        for f in &files {
            let Ok(n) = f.read_at(&mut buf, 0) else {
                continue;
            };
            // The state is the byte after ") " that ends comm (comm may itself contain ')').
            if let Some(close) = buf[..n].iter().rposition(|&b| b == b')') {
                match buf.get(close + 2) {
                    Some(b'R') => r += 1,
                    Some(b'D') => d += 1,
                    _ => {}
                }
            }
        }
        samples += 1;
        if start.elapsed() + period > duration {
            break;
        }
        if let Some(rest) = period.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    println!(
        "threads={} samples={} r_avg={:.2} d_avg={:.2} elapsed={:.3}",
        files.len(),
        samples,
        r as f64 / samples as f64,
        d as f64 / samples as f64,
        start.elapsed().as_secs_f64()
    );
}
