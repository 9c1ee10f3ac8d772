//! Detection re-runs periodically: a disk that appears gets an Asset, and when it is
//! removed its Asset is deleted. The disk is a sysfs-shaped fixture directory (the
//! agent's `/sys/block` path pointed at it), since a test cannot hot-plug hardware.

use hypermesh_tests::agent;

use std::time::Duration;

use agent::{Agent, TIMEOUT, assets_of, config};
use hypermesh_api::Resource;
use hypermesh_api::v1::{Asset, AssetType};
use hypermesh_tests::{InProcessApiServer, wait_for};

fn add_disk(sys_block: &std::path::Path, name: &str, sectors: u64) {
    let dir = sys_block.join(name);
    std::fs::create_dir_all(dir.join("device")).expect("device dir");
    std::fs::create_dir_all(dir.join("queue")).expect("queue dir");
    std::fs::write(dir.join("size"), format!("{sectors}\n")).expect("size");
    std::fs::write(dir.join("queue/rotational"), "0\n").expect("rotational");
}

async fn storage_assets(api: &hypermesh_api::Api<Asset>) -> Vec<(String, String)> {
    assets_of(api, "worker-d")
        .await
        .into_iter()
        .filter(|a| {
            a.spec
                .as_ref()
                .is_some_and(|s| s.r#type == AssetType::Storage as i32)
        })
        .map(|a| {
            let cap = a
                .spec
                .as_ref()
                .and_then(|s| s.capacity.get("storage").cloned())
                .unwrap_or_default();
            (a.meta().name.clone(), cap)
        })
        .collect()
}

#[tokio::test]
async fn added_and_removed_disks_update_assets() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let state = tempfile::tempdir().expect("state dir");
    let sys_block = state.path().join("sys-block");
    add_disk(&sys_block, "sdx", 2048);
    let mut cfg = config(
        server.url(),
        "worker-d",
        state.path(),
        state.path().join("none.sock"),
    );
    cfg.paths.sys_block = sys_block.clone();
    cfg.detect_interval = Duration::from_millis(300);
    let agent = Agent::start(cfg);
    let assets = server.api::<Asset>();

    wait_for(TIMEOUT, || async {
        let s = storage_assets(&assets).await;
        (s == vec![("worker-d-storage-sdx".to_string(), "1024Ki".to_string())]).then_some(())
    })
    .await
    .expect("the disk's Asset, 2048 sectors of 512 bytes = 1024Ki");

    add_disk(&sys_block, "sdy", 4096);
    std::fs::remove_dir_all(sys_block.join("sdx")).expect("remove sdx");
    wait_for(TIMEOUT, || async {
        let s = storage_assets(&assets).await;
        (s == vec![("worker-d-storage-sdy".to_string(), "2048Ki".to_string())]).then_some(())
    })
    .await
    .expect("new disk registered, removed disk's Asset deleted");
    let node = server
        .api::<hypermesh_api::v1::Node>()
        .get("", "worker-d")
        .await
        .expect("node");
    let suspect = agent::condition(&node, "Suspect").map(|c| c.status.clone());
    assert_ne!(
        suspect.as_deref(),
        Some("True"),
        "hardware changes are not Byzantine"
    );
    agent.stop().await;
}
