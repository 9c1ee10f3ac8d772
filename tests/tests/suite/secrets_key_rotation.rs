//! `hm-apiserver rotate-encryption-key`, the real binary on a stopped server's data
//! directory: a new primary key goes first in the key file, the Secret is re-sealed
//! with it (it opens with the new key alone, not with the old one), what the old key
//! sealed in history still opens, and the restarted server reads the Secret; then
//! `--retire-previous` leaves the new key alone in the file and the Secret still reads.

use hypermesh_api::Api;
use hypermesh_api::v1::Secret;
use hypermesh_apiserver::store::Store;
use hypermesh_apiserver::store::redb::{RedbOptions, RedbStore};
use hypermesh_tests::secrets::{canary, get_revealed, secret};
use hypermesh_tests::{ApiServerProcess, bin_path};
use hypermesh_trust::at_rest::EncryptionKey;

const STORE_KEY: &str = "/secrets/default/db";

async fn rotate(data_dir: &std::path::Path, extra: &[&str]) -> String {
    let out = tokio::process::Command::new(bin_path("hm-apiserver"))
        .arg("rotate-encryption-key")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("HM_LOG", "warn")
        .output()
        .await
        .expect("run hm-apiserver rotate-encryption-key");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rotate-encryption-key failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A ring holding only `key` (32 bytes), in its own file.
fn ring_of(dir: &tempfile::TempDir, name: &str, key: &[u8]) -> EncryptionKey {
    let path = dir.path().join(name);
    std::fs::write(&path, key).expect("write key");
    EncryptionKey::load_or_create(&path).expect("load key")
}

async fn stored(data_dir: &std::path::Path, revision: u64) -> Vec<u8> {
    let store =
        RedbStore::open(&data_dir.join("store.redb"), RedbOptions::default()).expect("open redb");
    let page = store
        .list("/secrets/default/", None, 0, revision)
        .await
        .expect("list");
    store.close();
    page.items
        .into_iter()
        .find(|kv| kv.key == STORE_KEY)
        .expect("the Secret is stored")
        .value
}

#[tokio::test]
async fn rotation_reseals_secrets_and_old_data_still_reads() {
    let mut server = ApiServerProcess::start_tls_with_args(&[])
        .await
        .expect("hm-apiserver");
    let data_dir = server.data_dir().to_path_buf();
    let key_file = data_dir.join("encryption.key");
    let password = canary("rotated-password");
    let created = Api::<Secret>::new(server.channel().await.expect("admin"))
        .create(&secret("default", "db", &[("password", &password)]))
        .await
        .expect("create");
    let created_at = created.metadata.as_ref().expect("meta").resource_version;
    server.terminate().await.expect("stop");
    let old_key = std::fs::read(&key_file).expect("key file");
    assert_eq!(old_key.len(), 32, "one key before the rotation");

    let said = rotate(&data_dir, &[]).await;
    assert!(said.contains("1 Secret(s) re-sealed"), "{said}");
    let ring = std::fs::read(&key_file).expect("key file");
    assert_eq!(ring.len(), 64, "the new primary, then the old key");
    assert_eq!(&ring[32..], &old_key[..]);
    let new_key = ring[..32].to_vec();
    assert_ne!(new_key, old_key);

    // The current value is sealed with the new key: it opens with it alone.
    let keys = tempfile::tempdir().expect("temp dir");
    let new_only = ring_of(&keys, "new", &new_key);
    let old_only = ring_of(&keys, "old", &old_key);
    let now = stored(&data_dir, 0).await;
    assert!(EncryptionKey::is_sealed(&now));
    assert!(
        new_only.open(STORE_KEY, &now).is_ok(),
        "re-sealed with the new key"
    );
    assert!(
        old_only.open(STORE_KEY, &now).is_err(),
        "no longer under the old key"
    );
    // History still holds what the old key sealed; the rotated ring opens it.
    let before = stored(&data_dir, created_at).await;
    assert!(old_only.open(STORE_KEY, &before).is_ok());
    let rotated = EncryptionKey::load_or_create(&key_file).expect("ring");
    assert!(
        rotated.open(STORE_KEY, &before).is_ok(),
        "old data still reads"
    );

    server.restart().await.expect("restart");
    let read = get_revealed(server.channel().await.expect("admin"), "default", "db")
        .await
        .expect("reveal after rotation");
    assert_eq!(read.spec.expect("spec").data["password"], password);
    server.terminate().await.expect("stop");

    let said = rotate(&data_dir, &["--retire-previous"]).await;
    assert!(said.contains("the file holds 1 key(s)"), "{said}");
    assert_eq!(std::fs::read(&key_file).expect("key file"), new_key);
    server.restart().await.expect("restart");
    let read = get_revealed(server.channel().await.expect("admin"), "default", "db")
        .await
        .expect("reveal after retiring the old key");
    assert_eq!(read.spec.expect("spec").data["password"], password);
}
