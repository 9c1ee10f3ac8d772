//! Tests of the pull session against fake registries and token services on loopback:
//! media types, and which hosts the registry credentials may reach.

use super::*;

#[test]
fn media_types_come_from_the_header_or_the_document() {
    assert_eq!(
        document_media_type(Some(MANIFEST_DOCKER.into()), b"{}"),
        MANIFEST_DOCKER
    );
    let index = format!(r#"{{"mediaType":"{INDEX_DOCKER}","manifests":[]}}"#);
    assert_eq!(
        document_media_type(Some("application/json".into()), index.as_bytes()),
        INDEX_DOCKER
    );
    assert_eq!(
        document_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
        INDEX_OCI
    );
    assert_eq!(
        document_media_type(None, br#"{"schemaVersion":2,"layers":[]}"#),
        MANIFEST_OCI
    );
}

/// What a fake server saw: (path, Authorization header) per request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A fake registry (on `ip`, port 0) serving one manifest to `Bearer good-token`, a
/// 401 Bearer challenge naming `realm` (or its own `/token`) to anything else, and a
/// token service at `/token` that records its callers and hands out `good-token`.
async fn fake_registry(ip: &str, realm: Option<String>) -> (std::net::SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let realm = realm.unwrap_or_else(|| format!("http://{addr}/token"));
    let seen: Seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (record, realm) = (record.clone(), realm.clone());
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let path = request.uri().path().to_string();
                record
                    .lock()
                    .expect("record")
                    .push((path.clone(), auth.clone()));
                let manifest = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_OCI}","config":{{"digest":"sha256:00","size":1}},"layers":[]}}"#
                );
                let (status, challenge, body) = if path == "/token" {
                    (200, None, r#"{"token":"good-token"}"#.to_string())
                } else if auth.as_deref() == Some("Bearer good-token") {
                    (200, None, manifest)
                } else {
                    (
                        401,
                        Some(format!(r#"Bearer realm="{realm}",service="fake""#)),
                        String::new(),
                    )
                };
                async move {
                    let mut response = hyper::Response::builder().status(status);
                    if let Some(c) = challenge {
                        response = response.header("www-authenticate", c);
                    }
                    response.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

/// A session for `registry/app:v1`, both hosts plain http, with `alice`'s
/// credentials configured for `registry` only.
async fn session(registry: &str, token_host: &str, dir: &std::path::Path) -> Session {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let file = dir.join("config.json");
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .expect("auth file");
    let config = PullConfig {
        auth_file: Some(file),
        insecure: vec![registry.to_string(), token_host.to_string()],
        ca_file: None,
    };
    Session::open(&config, registry.into(), registry.into(), "app".into())
        .await
        .expect("session")
}

#[tokio::test]
async fn credentials_go_to_a_token_service_on_the_registry_host() {
    let dir = tempfile::tempdir().expect("dir");
    let (registry, seen) = fake_registry("127.0.0.1", None).await;
    let mut session = session(&registry.to_string(), "", dir.path()).await;
    let reference = Reference::parse(&format!("{registry}/app:v1")).expect("reference");
    session.manifest(&reference, "app").await.expect("manifest");
    let token_calls: Vec<_> = seen
        .lock()
        .expect("seen")
        .iter()
        .filter(|(p, _)| p == "/token")
        .cloned()
        .collect();
    assert_eq!(token_calls.len(), 1, "{token_calls:?}");
    let alice = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    assert_eq!(token_calls[0].1, Some(alice.basic()));
}

#[tokio::test]
async fn basic_credentials_never_go_to_a_token_service_on_another_host() {
    let dir = tempfile::tempdir().expect("dir");
    // The token service is another loopback host: 127.0.0.2.
    let (token_service, token_seen) = fake_registry("127.0.0.2", None).await;
    let realm = format!("http://{token_service}/token");
    let (registry, registry_seen) = fake_registry("127.0.0.1", Some(realm)).await;
    let mut session = session(
        &registry.to_string(),
        &token_service.to_string(),
        dir.path(),
    )
    .await;
    let reference = Reference::parse(&format!("{registry}/app:v1")).expect("reference");
    // The token service hands out tokens anonymously here: the pull goes on.
    session.manifest(&reference, "app").await.expect("manifest");
    let token_calls = token_seen.lock().expect("seen").clone();
    assert_eq!(token_calls.len(), 1, "{token_calls:?}");
    assert_eq!(
        token_calls[0],
        ("/token".to_string(), None),
        "credentials leaked"
    );
    assert!(
        registry_seen
            .lock()
            .expect("seen")
            .iter()
            .all(|(_, auth)| auth.as_deref().is_none_or(|a| a == "Bearer good-token")),
        "the registry saw only the token"
    );
}
