//! Hostile image archives through `hmctl image import`: a tar header claiming 2^62 bytes
//! used to abort the agent (`Vec::with_capacity` of the claimed size) and the user saw
//! only "h2 protocol error". Now the import fails with an error naming the entry and its
//! impossible size, and the same agent goes on importing a good archive afterwards.
//! An archive larger than the apiserver's upload limit for a node is refused with an
//! error naming the limit, and the agent keeps running.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use node_env::Env;

/// A GNU tar header for `name` whose size field (base-256) claims `size` bytes.
fn header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124] = 0x80;
    h[128..136].copy_from_slice(&size.to_be_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[tokio::test]
async fn a_tar_header_claiming_2_62_bytes_is_a_clear_import_error() {
    let env = Env::start_with(|config| config.image_dir = None).await;
    let hmctl = Hmctl::new(env.server.url());

    let mut evil = header("blobs/sha256/0000", 1 << 62).to_vec();
    evil.extend_from_slice(&[0x41; 4096]);
    evil.extend_from_slice(&[0; 1024]);
    let path = hmctl.home().join("evil.tar");
    std::fs::write(&path, &evil).expect("write archive");
    let evil_arg = path.to_string_lossy().into_owned();
    let refused = hmctl
        .run(&["image", "import", &evil_arg, "--node", node_env::NODE])
        .await
        .failed();
    assert!(
        refused
            .stderr
            .contains("evil.tar: invalid OCI image archive")
            && refused.stderr.contains("blobs/sha256/0000")
            && refused.stderr.contains("claims 4611686018427387904 bytes"),
        "{refused:#?}"
    );
    assert!(
        !refused.stderr.contains("h2 protocol error"),
        "{refused:#?}"
    );

    // The agent is alive and imports a good archive on the same session path.
    let archive = env.containerd.build_test_image();
    let archive_arg = archive.to_string_lossy().into_owned();
    let imported = hmctl
        .run(&["image", "import", &archive_arg, "--node", node_env::NODE])
        .await
        .ok();
    assert_eq!(
        imported.stdout,
        format!("image {TEST_IMAGE} imported on node {}\n", node_env::NODE)
    );
    env.stop().await;
}

#[tokio::test]
async fn an_archive_over_the_upload_limit_is_refused_with_the_limit_named() {
    let env = Env::start_with_server(
        |server| server.max_image_upload_bytes = 64 * 1024,
        |config| config.image_dir = None,
    )
    .await;
    let hmctl = Hmctl::new(env.server.url());
    let archive = env.containerd.build_test_image();
    let size = std::fs::metadata(&archive).expect("archive").len();
    assert!(size > 64 * 1024, "the test image is only {size} bytes");
    let archive_arg = archive.to_string_lossy().into_owned();
    let refused = hmctl
        .run(&["image", "import", &archive_arg, "--node", node_env::NODE])
        .await
        .failed();
    assert!(
        refused.stderr.contains("exceeds 65536 bytes")
            && refused.stderr.contains("--max-image-upload-mib"),
        "{refused:#?}"
    );
    // The agent is still there: its Node answers and it keeps heartbeating.
    hmctl.run(&["get", "nodes"]).await.ok();
    env.stop().await;
}
