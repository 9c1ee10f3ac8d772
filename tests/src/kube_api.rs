//! A fake Kubernetes API server on loopback for the agent's Node mirroring: HTTPS with
//! a CA of its own (what a pod finds in its service account's `ca.crt`), the bearer
//! token checked against a token file (the pod's `token`), and `GET
//! /api/v1/nodes/NAME` answered with a recorded response from
//! `tests/fixtures/kubernetes/` that the test swaps to play a change in Kubernetes.
//! Anything else is a 404 Status, a wrong token a recorded 401.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hypermesh_agent::kube_node::KubernetesApi;
use rcgen::{CertificateParams, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The most bytes of a request head the fake reads.
const MAX_HEAD: usize = 64 * 1024;

/// A recorded API response: `tests/fixtures/kubernetes/NAME`.
pub fn recorded(name: &str) -> String {
    let path = crate::containerd::workspace_root()
        .join("tests/fixtures/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fake API server; stops on drop.
pub struct FakeKubeApi {
    url: String,
    dir: tempfile::TempDir,
    node: Arc<Mutex<(String, String)>>,
    gets: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl FakeKubeApi {
    /// Starts serving the Node `name` as `body` (a recorded response).
    pub async fn start(name: &str, body: String) -> FakeKubeApi {
        hypermesh_trust::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("service account dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .expect("names")
        .signed_by(&key, &ca)
        .expect("server cert");
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("ca.crt");
        let token: String = (0..32)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        std::fs::write(dir.path().join("token"), &token).expect("token");

        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let node = Arc::new(Mutex::new((name.to_string(), body)));
        let gets = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (served, counted, stop) = (node.clone(), gets.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (acceptor, served, counted, token) = (
                    acceptor.clone(),
                    served.clone(),
                    counted.clone(),
                    token.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Some((path, auth)) = read_head(&mut tls).await else {
                        return;
                    };
                    let (status, body) = if auth.as_deref() != Some(&format!("Bearer {token}")) {
                        ("401 Unauthorized", recorded("unauthorized.json"))
                    } else {
                        let (name, body) = served.lock().expect("node").clone();
                        if path == format!("/api/v1/nodes/{name}") {
                            counted.fetch_add(1, Ordering::SeqCst);
                            ("200 OK", body)
                        } else {
                            ("404 Not Found", not_found(&path))
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        FakeKubeApi {
            url,
            dir,
            node,
            gets,
            shutdown,
        }
    }

    /// What a pod's agent would find: the URL, the token and CA files.
    pub fn kubernetes_api(&self) -> KubernetesApi {
        KubernetesApi {
            url: self.url.clone(),
            token_file: self.token_file(),
            ca_file: self.dir.path().join("ca.crt"),
        }
    }

    /// The service-account token file (a test may overwrite it, as a kubelet rotates it).
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Serves `body` for the Node from now on.
    pub fn serve(&self, body: String) {
        self.node.lock().expect("node").1 = body;
    }

    /// Authorized GETs of the Node served so far.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads a request head; its path and Authorization header (`None`: not a GET, or
/// over [`MAX_HEAD`]).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<(String, Option<String>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    if request.next()? != "GET" {
        return None;
    }
    let target = request.next()?;
    let path = target.split('?').next()?.to_string();
    let auth = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    });
    Some((path, auth))
}

fn not_found(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or_default();
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"nodes \"{name}\" not found","reason":"NotFound","details":{{"name":"{name}","kind":"nodes"}},"code":404}}"#
    )
}
