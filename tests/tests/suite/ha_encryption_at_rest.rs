//! On etcd the cluster CA's key is encrypted at rest exactly as on redb: reading
//! etcd's keys directly (as someone with a copy of etcd's data would) shows the CA
//! record with its key sealed under the apiserver's key file, and no private key in
//! plaintext anywhere; only the key file opens it.

use hypermesh_apiserver::ca::CA_STORE_KEY;
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::ha::apiserver_on;
use hypermesh_trust::at_rest::EncryptionKey;
use hypermesh_trust::pki::ClusterCa;

#[tokio::test]
async fn the_ca_key_in_etcd_is_sealed_with_the_key_file() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let server = apiserver_on(&etcd, &key_file, &[]).await;

    let mut client = etcd.client().await.expect("etcd client");
    let all = client
        .get(
            "/hypermesh/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read every key");
    assert!(
        !all.kvs().is_empty(),
        "the apiserver keeps its objects under /hypermesh/"
    );
    for kv in all.kvs() {
        let text = String::from_utf8_lossy(kv.value());
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key in plaintext",
            String::from_utf8_lossy(kv.key())
        );
    }

    let record = all
        .kvs()
        .iter()
        .find(|kv| kv.key() == format!("/hypermesh{CA_STORE_KEY}").as_bytes())
        .expect("the CA record is in etcd");
    let json: serde_json::Value = serde_json::from_slice(record.value()).expect("CA record JSON");
    let certificate = json["certificate"].as_str().expect("certificate");
    let sealed_hex = json["sealedKey"].as_str().expect("sealedKey");
    let sealed: Vec<u8> = (0..sealed_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sealed_hex[i..i + 2], 16).expect("hex"))
        .collect();

    // The key file opens it, and it is the key of the CA the server serves with.
    let key = EncryptionKey::load_or_create(&key_file).expect("key file");
    let ca =
        ClusterCa::from_sealed(certificate, &sealed, &key).expect("the key file opens the CA key");
    assert_eq!(ca.pin(), server.ca_pin().expect("served CA"));

    // Another key does not.
    let other = EncryptionKey::load_or_create(&keys.path().join("other.key")).expect("other key");
    assert!(
        ClusterCa::from_sealed(certificate, &sealed, &other).is_err(),
        "a different key file opens nothing"
    );
}

#[tokio::test]
async fn an_apiserver_with_another_key_file_refuses_to_start() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let _first = apiserver_on(&etcd, &keys.path().join("a.key"), &[]).await;
    let store = etcd.store_url();
    let other = keys.path().join("b.key");
    let started = hypermesh_tests::ApiServerProcess::start_tls_with_args(&[
        "--store",
        &store,
        "--encryption-key-file",
        other.to_str().expect("utf-8"),
    ])
    .await;
    assert!(
        started.is_err(),
        "an apiserver that cannot open the shared CA must not serve"
    );
}
