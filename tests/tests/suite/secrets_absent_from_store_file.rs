//! A Secret's values never reach the disk in plaintext: after a create, an update and
//! a delete through a real `hm-apiserver` (TLS, redb store, audit log on), the bytes of
//! every file in its data directory (the redb file with its whole history, the audit
//! log, the CA) hold neither value, while the Secret's store key is there (the right
//! file was read); every revision of the Secret kept in history is sealed.

use hypermesh_api::Api;
use hypermesh_api::v1::{ListRequest, Secret};
use hypermesh_apiserver::store::Store;
use hypermesh_apiserver::store::redb::{RedbOptions, RedbStore};
use hypermesh_tests::ApiServerProcess;
use hypermesh_tests::fixtures;
use hypermesh_tests::secrets::{canary, contains, get_revealed, secret};
use hypermesh_trust::at_rest::EncryptionKey;

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read data dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn secret_values_are_absent_from_the_store_file_and_its_history() {
    let logs = tempfile::tempdir().expect("temp dir");
    let audit = logs.path().join("audit.log");
    let audit_arg = audit.to_str().expect("utf-8").to_string();
    let mut server = ApiServerProcess::start_tls_with_args(&["--audit-log", &audit_arg])
        .await
        .expect("hm-apiserver");
    let channel = server.channel().await.expect("admin");
    let secrets: Api<Secret> = Api::new(channel.clone());

    let first = canary("first-value");
    let second = canary("second-value");
    let kept = canary("kept-value");
    let created = secrets
        .create(&secret("default", "db", &[("password", &first)]))
        .await
        .expect("create");
    let mut next = get_revealed(channel.clone(), "default", "db")
        .await
        .expect("admin reveals");
    assert_eq!(next.spec.as_ref().expect("spec").data["password"], first);
    next.spec.as_mut().expect("spec").data = [("password".to_string(), second.clone())].into();
    secrets.update(&next).await.expect("update");
    assert_eq!(
        get_revealed(channel.clone(), "default", "db")
            .await
            .expect("reveal")
            .spec
            .expect("spec")
            .data["password"],
        second
    );
    secrets
        .delete(fixtures::delete_request("default", "db"))
        .await
        .expect("delete");
    secrets
        .create(&secret("default", "kept", &[("token", &kept)]))
        .await
        .expect("create kept");
    // Everything a user lists is withheld too.
    let (listed, _, _) = secrets.list(ListRequest::default()).await.expect("list");
    assert!(
        listed
            .iter()
            .all(|s| s.spec.as_ref().is_some_and(|s| s.data.is_empty()))
    );
    server.terminate().await.expect("clean stop");

    let store_file = server.data_dir().join("store.redb");
    let mut files = files_under(server.data_dir());
    files.push(audit.clone());
    for file in &files {
        let bytes = std::fs::read(file).expect("read file");
        for value in [&first, &second, &kept] {
            assert!(
                !contains(&bytes, value),
                "{} holds the plaintext {:?}",
                file.display(),
                String::from_utf8_lossy(value)
            );
        }
    }
    let raw = std::fs::read(&store_file).expect("store file");
    assert!(
        contains(&raw, b"/secrets/default/kept"),
        "the store file keeps Secrets under their store key"
    );
    assert!(
        std::fs::metadata(&audit).expect("audit log").len() > 0,
        "the audit log recorded the requests"
    );

    // History: the Secret at the revision it was created is kept, and sealed.
    let store = RedbStore::open(&store_file, RedbOptions::default()).expect("open redb");
    let at_create = store
        .list(
            "/secrets/default/",
            None,
            0,
            created.metadata.as_ref().expect("meta").resource_version,
        )
        .await
        .expect("list the old revision");
    let old = at_create
        .items
        .iter()
        .find(|kv| kv.key == "/secrets/default/db")
        .expect("history keeps the first revision");
    assert!(
        EncryptionKey::is_sealed(&old.value),
        "the history's copy is sealed"
    );
    let now = store.list("/secrets/", None, 0, 0).await.expect("list");
    assert!(!now.items.is_empty());
    assert!(
        now.items
            .iter()
            .all(|kv| EncryptionKey::is_sealed(&kv.value))
    );
}
