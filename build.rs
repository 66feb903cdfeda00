//! Build steps: the git revision built from, and the optional features.
//!
//! - Always: `WONK_GIT_REVISION` for `wonk_build_info` (`git rev-parse HEAD`, or "unknown" without git or outside a
//!   checkout; this never fails the build).
//! - `cri`: compiles proto/cri.proto into the CRI v1 client (needs `protoc`, from Debian's protobuf-compiler, or
//!   the path in $PROTOC).
//! - `bpf`: compiles src/host/tasks/task_walk.bpf.c and task_each.bpf.c (with task_common.h), wonk top's task
//!   iterators, and src/host/held.bpf.c, `wonk deleted`'s file and mapping iterators, with clang (`-target bpf`,
//!   or the compiler in $CLANG) against libbpf's headers (Debian: clang, libbpf-dev) into $OUT_DIR, where
//!   src/host/tasks/bpf.rs and src/host/held.rs embed them and src/host/bpf.rs loads them (no BTF or debug
//!   information: the loader needs neither).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let rev = git(&["rev-parse", "HEAD"])
        .filter(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WONK_GIT_REVISION={rev}");
    // Built again when HEAD moves: HEAD itself, and the branch it names (a file that does not exist, such as a
    // packed ref, would make cargo run this script on every build).
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &r]));
    }
    for p in watch.into_iter().flatten() {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    #[cfg(feature = "cri")]
    {
        println!("cargo:rerun-if-changed=proto/cri.proto");
        if let Err(e) = tonic_prost_build::configure()
            .build_server(false)
            .build_transport(false)
            .compile_protos(&["proto/cri.proto"], &["proto"])
        {
            panic!(
                "compiling proto/cri.proto: {e}\n(the `cri` feature needs protoc: apt-get install protobuf-compiler, \
                 or set PROTOC)"
            );
        }
    }
    #[cfg(feature = "bpf")]
    bpf();
    println!("cargo:rerun-if-changed=build.rs");
}

#[cfg(feature = "bpf")]
fn bpf() {
    println!("cargo:rerun-if-env-changed=CLANG");
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // Debian's multiarch directory of <asm/types.h>.
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("the `bpf` feature supports x86_64 and aarch64, not {other}"),
    };
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-changed=src/host/bpf_common.h");
    println!("cargo:rerun-if-changed=src/host/tasks/task_common.h");
    for (dir, name) in [
        ("src/host/tasks", "task_walk"),
        ("src/host/tasks", "task_each"),
        ("src/host", "held"),
    ] {
        let src = format!("{dir}/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&clang)
            .args(["-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", &src, "-o"])
            .arg(out_dir.join(format!("{name}.bpf.o")))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} {src}: {s}"),
            Err(e) => panic!(
                "running {clang} for {src}: {e}\n(the `bpf` feature needs clang and libbpf's headers: apt-get \
                 install clang libbpf-dev, or set CLANG)"
            ),
        }
    }
}
