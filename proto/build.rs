//! Generates the Rust types, gRPC clients/servers and canonical-JSON serde impls
//! from `hypermesh/v1/*.proto`, with a vendored `protoc` so a fresh machine needs
//! nothing installed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "hypermesh/v1/meta.proto",
    "hypermesh/v1/namespace.proto",
    "hypermesh/v1/node.proto",
    "hypermesh/v1/asset.proto",
    "hypermesh/v1/instance.proto",
    "hypermesh/v1/workload.proto",
    "hypermesh/v1/route.proto",
    "hypermesh/v1/secret.proto",
    "hypermesh/v1/lease.proto",
    "hypermesh/v1/event.proto",
    "hypermesh/v1/session.proto",
    "hypermesh/v1/rbac.proto",
    "hypermesh/v1/pki.proto",
    "hypermesh/v1/usage.proto",
    "hypermesh/v1/version.proto",
    "hypermesh/v1/access.proto",
    "hypermesh/v1/services.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("hypermesh_descriptor.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();
    // Ordered maps: deterministic encoding (so "unchanged" is a byte comparison) and
    // stable YAML output.
    config.btree_map(["."]);

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(
            config,
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from("."), well_known],
        )?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map(["."])
        .build(&[".hypermesh"])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
