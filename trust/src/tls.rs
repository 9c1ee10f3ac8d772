//! TLS for every HyperMesh connection: rustls with the aws-lc-rs provider, TLS 1.3
//! only, the hybrid post-quantum key exchange `X25519MLKEM768` preferred (then X25519,
//! P-256, P-384 for peers without ML-KEM).
//!
//! - [`client_config`]: verify the server against the cluster CA, optionally present
//!   a client certificate.
//! - [`pinned_client_config`]: first contact of a joining node, which has only the
//!   CA pin (`sha256:` of the CA's SubjectPublicKeyInfo): the server's chain must
//!   contain a CA with that pin, and the server certificate must verify against it.
//! - [`server_config_parts`]: the pieces a server needs (its chain and key).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::pki::{PkiError, certificates, spki_pin};

/// The protocol versions every HyperMesh endpoint speaks.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key does not parse.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A private key does not parse.
    #[error("private key: {0}")]
    Key(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate is unusable as a trust anchor.
    #[error("CA certificate: {0}")]
    Roots(String),
    /// The verifier could not be built.
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

/// The crypto provider every endpoint uses: aws-lc-rs, whose key exchange groups start
/// with X25519MLKEM768.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs [`provider`] as the process default (binaries call this first; a second
/// call is harmless).
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A provider that offers only the classic groups (X25519, P-256, P-384): what a
/// client without ML-KEM looks like, for tests and benchmarks.
pub fn classic_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .retain(|g| !format!("{:?}", g.name()).contains("MLKEM"));
    Arc::new(provider)
}

/// The name of a negotiated key exchange group, e.g. `X25519MLKEM768`.
pub fn group_name(group: rustls::NamedGroup) -> String {
    format!("{group:?}")
}

/// A root store holding the CA certificates of `ca_pem`.
pub fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        store
            .add(cert)
            .map_err(|e| TlsError::Roots(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsError::Roots("no certificate in the CA bundle".into()));
    }
    Ok(store)
}

/// A PEM private key.
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Key(e.to_string()))
}

/// A client identity: certificate chain PEM and key PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate (and chain), PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

fn builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider).with_protocol_versions(VERSIONS)?)
}

fn finish(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let mut config = match identity {
        Some(id) => {
            builder.with_client_auth_cert(certificates(&id.cert_pem)?, private_key(&id.key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client configuration that verifies servers against `ca_pem` and presents
/// `identity` when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, TlsError> {
    let builder = builder(provider)?.with_root_certificates(roots(ca_pem)?);
    finish(builder, identity)
}

/// A client configuration for a node's first contact, trusting only a CA whose
/// SubjectPublicKeyInfo hashes to `pin` (and that the server sends in its chain).
pub fn pinned_client_config(pin: &str) -> Result<ClientConfig, TlsError> {
    let pin = crate::pki::parse_pin(pin)?;
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider.clone(),
    });
    let builder = builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    finish(builder, None)
}

/// Verifies a server whose chain includes the pinned CA, against that CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| spki_pin(c).is_ok_and(|p| p == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's CA does not match the pinned {}; check --ca-cert-hash \
                     (hmctl token create prints it)",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
