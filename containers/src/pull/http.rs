//! HTTP/1.1 to registries over hyper: one connection per request, plain TCP for
//! registries listed with `--insecure-registry`, TLS otherwise (rustls with the aws-lc-rs
//! provider, trusting the system roots plus `--registry-ca`). Redirects are followed,
//! sending credentials only to the origin first asked (same scheme, host and port: never
//! across an https → http redirect), and every step has a deadline, so an
//! unresponsive registry fails a pull instead of hanging it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HOST, LOCATION, USER_AGENT};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Connecting (TCP and TLS) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The response headers must arrive within this after the request is sent.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response body that sends nothing for this long is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Why an HTTP exchange with a registry failed (before any status was seen).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A URL (ours, a redirect's or a token realm's) is not absolute http(s).
    #[error("invalid URL {0:?}")]
    Url(String),
    /// The TCP connection could not be made.
    #[error("connecting to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name, plain-http server).
    #[error(
        "TLS with {host}: {source} (a plain-http registry must be listed with --insecure-registry; one with a private CA needs --registry-ca)"
    )]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The trusted roots could not be loaded (`--registry-ca` unreadable or not PEM).
    #[error("loading TLS roots: {0}")]
    Roots(String),
    /// The HTTP exchange broke (connection reset, malformed response).
    #[error("HTTP with {host}: {source}")]
    Protocol {
        host: String,
        #[source]
        source: hyper::Error,
    },
    /// A step took longer than its deadline.
    #[error("{what} {host}: no answer within {}s", .after.as_secs())]
    Timeout {
        what: &'static str,
        host: String,
        after: Duration,
    },
    /// More than `MAX_REDIRECTS` redirects.
    #[error("{0}: too many redirects")]
    Redirects(String),
    /// A body was larger than the caller allows for it.
    #[error("{what} larger than {limit} bytes")]
    TooLarge { what: String, limit: usize },
}

/// Where registries are reached and whom to trust: shared by the requests of one pull.
pub struct Transport {
    insecure: Vec<String>,
    ca_file: Option<PathBuf>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Transport {
    /// `insecure`: `host:port`s reached over plain http; `ca_file`: extra PEM roots.
    pub fn new(insecure: Vec<String>, ca_file: Option<PathBuf>) -> Transport {
        Transport {
            insecure,
            ca_file,
            tls: OnceLock::new(),
        }
    }

    /// `http` for a registry listed as insecure, `https` otherwise.
    pub fn scheme_for(&self, registry: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        }
    }

    /// GETs `url`, following redirects; `authorization` goes only to `url`'s own origin
    /// (scheme, host and port).
    /// Any status is returned: the caller decides what it means.
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, HttpError> {
        let mut uri: Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let origin = (uri.scheme().cloned(), uri.authority().cloned());
        for _ in 0..=MAX_REDIRECTS {
            // Same scheme too: an https → http redirect to the same host and port would
            // otherwise carry the credentials in plain text.
            let same_origin =
                (uri.scheme(), uri.authority()) == (origin.0.as_ref(), origin.1.as_ref());
            let response = self
                .send(&uri, accept, authorization.filter(|_| same_origin))
                .await?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(response);
            };
            uri = resolve_location(&uri, location)?;
        }
        Err(HttpError::Redirects(url.to_string()))
    }

    async fn send(
        &self,
        uri: &Uri,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, HttpError> {
        let bad = || HttpError::Url(uri.to_string());
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, authority.as_str())
            .header(ACCEPT, accept)
            .header(USER_AGENT, concat!("hm-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|_| bad())?;

        let connect = TcpStream::connect((host, port));
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| HttpError::Timeout {
                what: "connecting to",
                host: authority.to_string(),
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|source| HttpError::Connect {
                host: authority.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return exchange(tcp, request, authority.as_str()).await;
        }
        let config = self.tls_config()?;
        let name = ServerName::try_from(host.to_string()).map_err(|_| bad())?;
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| HttpError::Timeout {
                what: "TLS handshake with",
                host: authority.to_string(),
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|source| HttpError::Tls {
                host: authority.to_string(),
                source,
            })?;
        exchange(stream, request, authority.as_str()).await
    }

    /// The TLS client config, built on first use.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        self.tls
            .get_or_init(|| tls_config(self.ca_file.as_deref()).map(Arc::new))
            .clone()
            .map_err(HttpError::Roots)
    }
}

/// Sends `request` on a fresh HTTP/1.1 connection over `stream`.
async fn exchange<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    host: &str,
) -> Result<Response<Incoming>, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |source| HttpError::Protocol {
        host: host.to_string(),
        source,
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        // Drives the connection until the response body is read or dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender.send_request(request).await.map_err(protocol)
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            what: "waiting for",
            host: host.to_string(),
            after: RESPONSE_TIMEOUT,
        })?
}

/// The next data of a response body (`None` at its end), within `IDLE_TIMEOUT`.
pub async fn next_chunk(body: &mut Incoming, host: &str) -> Result<Option<Bytes>, HttpError> {
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| HttpError::Timeout {
                what: "reading from",
                host: host.to_string(),
                after: IDLE_TIMEOUT,
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(source)) => {
                return Err(HttpError::Protocol {
                    host: host.to_string(),
                    source,
                });
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A whole (small) body, refusing more than `limit` bytes.
pub async fn read_body(
    body: &mut Incoming,
    host: &str,
    what: &str,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body, host).await? {
        if out.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve_location(base: &Uri, location: &str) -> Result<Uri, HttpError> {
    let bad = || HttpError::Url(location.to_string());
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().map_err(|_| bad());
    }
    let mut parts = base.clone().into_parts();
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        // Relative to the base path's directory.
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    parts.path_and_query = Some(path.parse().map_err(|_| bad())?);
    Uri::from_parts(parts).map_err(|_| bad())
}

/// A client config trusting the system's roots and those in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for cert in system.certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--registry-ca {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--registry-ca {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--registry-ca {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--registry-ca {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted roots: no system certificates and no --registry-ca".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_absolute_and_relative_locations() {
        let base: Uri = "http://127.0.0.1:5000/v2/app/blobs/sha256:aa"
            .parse()
            .expect("uri");
        let abs = resolve_location(&base, "https://s3.example.com/x?sig=1").expect("absolute");
        assert_eq!(abs.to_string(), "https://s3.example.com/x?sig=1");
        let root = resolve_location(&base, "/storage/blob?x=1").expect("root-relative");
        assert_eq!(root.to_string(), "http://127.0.0.1:5000/storage/blob?x=1");
        let rel = resolve_location(&base, "other").expect("relative");
        assert_eq!(rel.to_string(), "http://127.0.0.1:5000/v2/app/blobs/other");
    }

    #[test]
    fn insecure_registries_use_plain_http() {
        let t = Transport::new(vec!["127.0.0.1:5000".into()], None);
        assert_eq!(t.scheme_for("127.0.0.1:5000"), "http");
        assert_eq!(t.scheme_for("127.0.0.1:5001"), "https");
    }

    /// A server on one loopback port speaking TLS (with a fresh self-signed certificate
    /// for 127.0.0.1) or plain HTTP, whichever the client starts with: https requests are
    /// redirected to the same host and port over http, http requests are recorded with
    /// their Authorization header. Returns its address, the certificate's PEM and what
    /// the http side saw.
    async fn downgrading_server() -> (
        std::net::SocketAddr,
        String,
        std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    ) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
        let pem = certified.cert.pem();
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    if stream.peek(&mut first).await.is_err() {
                        return;
                    }
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let response = if first[0] == 0x16 {
                                Response::builder()
                                    .status(302)
                                    .header("location", format!("http://{addr}/plain"))
                            } else {
                                let auth = request
                                    .headers()
                                    .get(AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string);
                                record.lock().expect("record").push(auth);
                                Response::builder().status(200)
                            };
                            response.body(http_body_util::Full::new(Bytes::from("ok")))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    if first[0] == 0x16 {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                    } else {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                });
            }
        });
        (addr, pem, seen)
    }

    #[tokio::test]
    async fn credentials_never_follow_an_https_to_http_redirect() {
        let (addr, pem, seen) = downgrading_server().await;
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pem).expect("ca file");
        let transport = Transport::new(Vec::new(), Some(ca));
        let response = transport
            .get(
                &format!("https://{addr}/v2/app/blobs/sha256:aa"),
                "*/*",
                Some("Basic YWxpY2U6czNjcmV0"),
            )
            .await
            .expect("followed");
        assert_eq!(response.status(), 200);
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen, vec![None], "credentials sent over plain http");
    }
}
