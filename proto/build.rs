//! Generates the presswork.v1 Rust code with protox, so no system `protoc` is needed,
//! and keeps the encoded descriptor set for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "presswork/v1/auth.proto",
        "presswork/v1/jobs.proto",
        "presswork/v1/reports.proto",
        "presswork/v1/worker.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("presswork_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // No `connect` constructors: `WorkerService.Connect` would clash with them. Clients are
    // built with `XClient::new(channel)`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=presswork");
    Ok(())
}
