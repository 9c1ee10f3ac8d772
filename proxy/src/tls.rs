//! The node's credentials (cluster CA, node certificate and key from the agent's state
//! dir) and the rustls configurations both ends of a proxy-to-proxy QUIC connection use:
//! TLS 1.3 only, the aws-lc-rs provider with `X25519MLKEM768` preferred, and mutual
//! authentication against the cluster CA. A peer's node name is read from its verified
//! certificate (SAN `<name>.node.hypermesh`), never from anything it says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// ALPN of the proxy-to-proxy protocol.
pub const ALPN: &[u8] = b"hm-proxy/1";

/// DNS suffix of node names in certificates: `<name>.node.hypermesh`.
pub const NODE_DNS_SUFFIX: &str = ".node.hypermesh";

/// The server name a dialer presents when it does not know the peer's node name yet
/// (dialing a relay by address): the chain is still verified against the cluster CA
/// and the name is then read from the certificate.
pub const ANY_NODE: &str = "any.node.hypermesh";

/// Why the credentials could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node certificate names no node (`<name>.node.hypermesh` SAN).
    #[error("{path}: no DNS name ending in .node.hypermesh: not a node certificate")]
    NotANodeCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (e.g. key and certificate do not match).
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The configuration cannot carry QUIC (no TLS 1.3 suite).
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// The node's own credentials as the agent keeps them in `<state-dir>/pki/`.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// The node's name, from its certificate.
    pub node_name: String,
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

/// The PEM files of a state dir: `(ca.crt, node.crt, node.key)`.
pub fn pki_paths(state_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pki = state_dir.join("pki");
    (
        pki.join("ca.crt"),
        pki.join("node.crt"),
        pki.join("node.key"),
    )
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

impl NodeCredentials {
    /// Reads `ca.crt`, `node.crt` and `node.key` from `<state_dir>/pki/`.
    pub fn load(state_dir: &Path) -> Result<Self, TlsError> {
        let (ca_path, cert_path, key_path) = pki_paths(state_dir);
        let ca = certs(&ca_path)?;
        let chain = certs(&cert_path)?;
        let key_bytes = read(&key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let node_name = node_name_of(&chain[0]).ok_or(TlsError::NotANodeCertificate {
            path: cert_path.clone(),
        })?;
        Ok(NodeCredentials {
            node_name,
            ca,
            chain,
            key: Arc::new(key),
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone()).map_err(TlsError::Config)?;
        }
        Ok(Arc::new(roots))
    }

    /// The server half: TLS 1.3, client certificates required and verified against the
    /// cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The client half: TLS 1.3, the node certificate as client certificate, the server
    /// verified against the cluster CA for the node name dialed (or any node name for
    /// [`ANY_NODE`]).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeServerVerifier { inner }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Both halves as quinn configurations.
    pub fn quic_configs(
        &self,
    ) -> Result<
        (
            quinn::crypto::rustls::QuicServerConfig,
            quinn::crypto::rustls::QuicClientConfig,
        ),
        TlsError,
    > {
        let server = quinn::crypto::rustls::QuicServerConfig::try_from(self.server_config()?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(self.client_config()?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        Ok((server, client))
    }
}

/// The crypto provider every proxy connection uses: aws-lc-rs with `X25519MLKEM768`
/// first, then X25519 and P-256 for peers without ML-KEM.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ];
    Arc::new(provider)
}

/// Installs [`provider`] as the process default (once; later calls are no-ops), so
/// every rustls user in the binary agrees on aws-lc-rs.
pub fn install_default_provider() {
    let _ = Arc::unwrap_or_clone(provider()).install_default();
}

/// The node name a (verified) certificate is for: its SAN `<name>.node.hypermesh`.
pub fn node_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut names = cert.valid_dns_names().filter_map(|dns| {
        dns.strip_suffix(NODE_DNS_SUFFIX)
            .filter(|n| !n.is_empty() && !n.contains('.'))
            .map(str::to_string)
    });
    let name = names.next()?;
    // A certificate naming two nodes names none.
    names.next().is_none().then_some(name)
}

/// The server name a dialer presents for node `node`.
pub fn server_name_for(node: &str) -> String {
    format!("{node}{NODE_DNS_SUFFIX}")
}

/// Verifies the server's chain against the cluster CA, for the dialed node's name, or
/// for the name in the certificate itself when the dialer asked for [`ANY_NODE`].
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let any = matches!(server_name, ServerName::DnsName(d) if d.as_ref() == ANY_NODE);
        if !any {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let name = node_name_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ))?;
        let name = ServerName::try_from(server_name_for(&name)).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The node name of the peer of an established QUIC connection (from its verified
/// certificate).
pub fn peer_node_name(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_name_of(certs.first()?)
}
