//! Compiles proto/cri.proto into the CRI v1 client, only with the `cri` feature (it needs `protoc`, from
//! Debian's protobuf-compiler, or the path in $PROTOC). Without the feature this script does nothing.

fn main() {
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
