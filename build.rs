// Compiles Reef's own API. protoc comes from the protoc-bin-vendored crate so that no system package is needed for it.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/reef/v1");
    tonic_prost_build::configure().compile_protos(&["proto/reef/v1/reef.proto"], &["proto"])?;
    Ok(())
}
