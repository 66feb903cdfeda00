//! Compiles proto/cri.proto into the CRI v1 client, only with the `cri` feature (it needs `protoc`, from
//! Debian's protobuf-compiler, or the path in $PROTOC); and records the git revision built from for
//! `wonk_build_info` (`WONK_GIT_REVISION`: `git rev-parse HEAD`, or "unknown" without git or outside a checkout;
//! this never fails the build).

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
    println!("cargo:rerun-if-changed=build.rs");
}
