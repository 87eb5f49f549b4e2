//! Compiles proto/arcface.proto with the protoc binary shipped in the `protoc-bin-vendored`
//! crate, so no system protoc is needed; also writes the descriptor set that server
//! reflection serves.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/arcface.proto";
    println!("cargo:rerun-if-changed={proto}");
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out.join("arcface_descriptor.bin"))
        .compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}
