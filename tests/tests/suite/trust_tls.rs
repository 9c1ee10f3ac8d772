//! TLS on the apiserver's port, with real handshakes: rustls clients negotiate the
//! hybrid post-quantum group X25519MLKEM768 (the metric counts it); a client offering
//! only classic groups gets X25519 (documented: allowed, counted separately); TLS 1.2
//! is refused; no client certificate means UNAUTHENTICATED; a certificate from another
//! CA and an expired one are refused at the handshake, a revoked one with a status
//! saying so, and revoking a certificate closes the streams already open with it; a server started without
//! --insecure-dev speaks no plaintext.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::client::Target;
use hypermesh_api::v1::{Certificate, ListRequest, WatchRequest, Workload};
use hypermesh_tests::{DEFAULT_TIMEOUT, InProcessApiServer, connect_target, identities, wait_for};
use hypermesh_trust::at_rest::EncryptionKey;
use hypermesh_trust::pki::{CertificateSpec, ClusterCa};
use hypermesh_trust::tls::ClientIdentity;
use tokio::io::AsyncWriteExt;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn server_with_metrics() -> (InProcessApiServer, String) {
    let port = free_port();
    let server = InProcessApiServer::start_with(|c| {
        c.tls = Some(hypermesh_apiserver::TlsSettings::default());
        c.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    })
    .await
    .unwrap();
    (server, format!("http://127.0.0.1:{port}/metrics"))
}

async fn scrape(url: &str) -> String {
    use tokio::io::AsyncReadExt;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let Ok(mut tcp) = tokio::net::TcpStream::connect(address).await else {
        return String::new();
    };
    let _ = tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text).await;
    text
}

/// Handshakes with `config` and returns the negotiated group (or the error).
async fn handshake(
    server: &InProcessApiServer,
    config: rustls::ClientConfig,
) -> Result<String, String> {
    let address = server.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let group = tls
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    let _ = tls.shutdown().await;
    Ok(group)
}

fn admin_identity(server: &InProcessApiServer) -> (String, ClientIdentity) {
    let config =
        hypermesh_trust::client_config::ClientConfigFile::load(&server.admin_config()).unwrap();
    (
        config.certificate_authority.unwrap(),
        ClientIdentity {
            cert_pem: config.client_certificate.unwrap(),
            key_pem: config.client_key.unwrap(),
        },
    )
}

#[tokio::test]
async fn rustls_clients_negotiate_x25519mlkem768_and_classic_clients_x25519() {
    let (server, metrics) = server_with_metrics().await;
    let (ca, identity) = admin_identity(&server);
    let hybrid =
        hypermesh_trust::tls::client_config(&ca, Some(&identity), hypermesh_trust::tls::provider())
            .unwrap();
    assert_eq!(handshake(&server, hybrid).await.unwrap(), "X25519MLKEM768");
    let classic = hypermesh_trust::tls::client_config(
        &ca,
        Some(&identity),
        hypermesh_trust::tls::classic_provider(),
    )
    .unwrap();
    assert_eq!(handshake(&server, classic).await.unwrap(), "X25519");

    let text = wait_for(DEFAULT_TIMEOUT, || async {
        let text = scrape(&metrics).await;
        (text.contains("tls_handshakes_total{group=\"X25519MLKEM768\"}")
            && text.contains("tls_handshakes_total{group=\"X25519\"}"))
        .then_some(text)
    })
    .await
    .unwrap();
    assert!(
        text.contains("hypermesh_apiserver_tls_handshakes_total"),
        "{text}"
    );
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let (ca, identity) = admin_identity(&server);
    let config = rustls::ClientConfig::builder_with_provider(hypermesh_trust::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(hypermesh_trust::tls::roots(&ca).unwrap())
        .with_client_auth_cert(
            hypermesh_trust::pki::certificates(&identity.cert_pem).unwrap(),
            hypermesh_trust::tls::private_key(&identity.key_pem).unwrap(),
        )
        .unwrap();
    let err = handshake(&server, config).await.unwrap_err();
    assert!(err.to_lowercase().contains("version"), "{err}");
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_refused() {
    let server = InProcessApiServer::start_tls().await.unwrap();

    // No certificate: the connection works, every request says why it is refused.
    let anonymous = connect_target(&identities::anonymous(&server).unwrap())
        .await
        .unwrap();
    let err = Api::<Workload>::new(anonymous)
        .list(ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Another CA's certificate: refused at the handshake.
    let foreign = identities::foreign(&server).unwrap();
    let refused = match hypermesh_api::client::connect_to(&foreign).await {
        Err(e) => format!("{e:?}"),
        Ok(channel) => format!(
            "{:?}",
            Api::<Workload>::new(channel)
                .list(ListRequest::default())
                .await
                .unwrap_err()
        ),
    };
    assert!(
        refused.contains("UnknownCA") || refused.contains("unknown"),
        "{refused}"
    );

    // An expired certificate of this CA: refused at the handshake.
    let key = EncryptionKey::load_or_create(&server.data_dir().join("encryption.key")).unwrap();
    let ca = ClusterCa::load_or_create(&server.data_dir().join("pki"), &key).unwrap();
    let (issued, key_pem) = ca
        .issue_with_new_key(&CertificateSpec {
            identity: "user:late".into(),
            groups: vec!["system:masters".into()],
            validity: Duration::ZERO,
            client: true,
            ..Default::default()
        })
        .unwrap();
    wait_for(DEFAULT_TIMEOUT, || async {
        (std::time::SystemTime::now() > issued.not_after + Duration::from_secs(1)).then_some(())
    })
    .await
    .unwrap();
    let expired = identities::target_with(
        &server,
        Some(&ClientIdentity {
            cert_pem: issued.pem,
            key_pem,
        }),
    )
    .unwrap();
    let refused = match hypermesh_api::client::connect_to(&expired).await {
        Err(e) => format!("{e:?}"),
        Ok(channel) => format!(
            "{:?}",
            Api::<Workload>::new(channel)
                .list(ListRequest::default())
                .await
                .unwrap_err()
        ),
    };
    assert!(refused.to_lowercase().contains("expired"), "{refused}");
}

#[tokio::test]
async fn revoking_a_certificate_refuses_it_and_closes_its_streams() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let (target, serial) = identities::issue(&server, "user:eve", &["system:masters"])
        .await
        .unwrap();
    let workloads = Api::<Workload>::new(connect_target(&target).await.unwrap());
    let mut watch = workloads.watch(WatchRequest::default()).await.unwrap();

    let certificates = server.api::<Certificate>();
    let mut record = certificates.get("", &serial).await.unwrap();
    record.spec.as_mut().unwrap().revoked = true;
    certificates.update(&record).await.unwrap();

    // The open watch ends (an error or the end of the stream) within moments.
    let ended = tokio::time::timeout(DEFAULT_TIMEOUT, async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked client's watch stayed open");

    // A new connection gets nothing but a status saying why.
    let refused = match hypermesh_api::client::connect_to(&target).await {
        Err(e) => format!("{e:?}"),
        Ok(channel) => format!(
            "{:?}",
            Api::<Workload>::new(channel)
                .list(ListRequest::default())
                .await
                .unwrap_err()
        ),
    };
    assert!(
        refused.contains("Revoked") || refused.contains("revoked"),
        "{refused}"
    );
    // And un-revoking is not a thing.
    let mut record = certificates.get("", &serial).await.unwrap();
    record.spec.as_mut().unwrap().revoked = false;
    assert!(certificates.update(&record).await.is_err());
}

#[tokio::test]
async fn without_insecure_dev_the_server_speaks_no_plaintext() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(hypermesh_tests::bin_path("hm-apiserver"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--controllers",
            "none",
            "--data-dir",
        ])
        .arg(data.path())
        .env("HM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = lines.next_line().await.unwrap().unwrap();
    let address = line
        .strip_prefix("hm-apiserver listening on ")
        .unwrap()
        .to_string();

    let plain = Target::insecure(format!("http://{address}"));
    let outcome = match hypermesh_api::client::connect_to(&plain).await {
        Err(e) => Err(format!("{e:?}")),
        Ok(channel) => Api::<Workload>::new(channel)
            .list(ListRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    assert!(outcome.is_err(), "a plaintext client was served");
    assert!(data.path().join("admin.config").exists());
    assert!(data.path().join("pki").join("ca.crt").exists());
    child.kill().await.unwrap();
}
