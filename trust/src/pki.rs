//! The cluster CA and the X.509 certificates it issues.
//!
//! FALCON-1024 is not in X.509 tooling yet, so TLS certificates use ECDSA P-256 keys
//! (rcgen, aws-lc-rs). A certificate says who its holder is:
//! - subject common name: the identity (`user:bob`, `node:vm`, `system:scheduler`);
//! - organisations: the groups (`system:masters`, `system:nodes`);
//! - for nodes, a DNS name `<name>.node.hypermesh` (so proxies can verify each other)
//!   and a URI `urn:hypermesh:node-id:<NodeId>` binding the node's FALCON-1024 key
//!   (NodeId = BLAKE3 of it) to the certificate.
//!
//! The CA's private key is kept in the data directory sealed with the apiserver's
//! encryption key file ([`crate::at_rest`]); its certificate is public (`ca.crt`), and
//! its pin is `sha256:<hex>` of the certificate's SubjectPublicKeyInfo (kubeadm's
//! `--discovery-token-ca-cert-hash`), what a joining node checks on first contact.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::at_rest::{AtRestError, EncryptionKey, write_private};

/// DNS suffix of node certificates: `<name>.node.hypermesh`.
pub const NODE_DNS_SUFFIX: &str = "node.hypermesh";
/// URI SAN prefix binding a node's NodeId into its certificate.
pub const NODE_ID_URI_PREFIX: &str = "urn:hypermesh:node-id:";
/// The CA certificate's file name in the PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The sealed CA key's file name in the PKI directory.
pub const CA_KEY_FILE: &str = "ca.key.sealed";
/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew tolerated on `notBefore` of freshly issued certificates.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a PKI file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The sealed CA key could not be opened.
    #[error("cluster CA key: {0}")]
    AtRest(#[from] AtRestError),
    /// rcgen refused to build or parse something.
    #[error("{what}: {source}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate signing request does not parse or its signature is wrong.
    #[error("certificate signing request: {0}")]
    Csr(String),
    /// A certificate does not parse or lacks what HyperMesh needs in it.
    #[error("certificate: {0}")]
    Parse(String),
    /// A CA pin is not `sha256:` followed by 64 hex digits.
    #[error("CA pin {0:?}: expected sha256:<64 hex digits>")]
    Pin(String),
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Certificate { what, source }
}

/// A new ECDSA P-256 key pair (for a TLS identity).
pub fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("generating a key"))
}

/// Parses a PEM private key (PKCS#8).
pub fn key_from_pem(pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(rcgen_err("reading the private key"))
}

/// A certificate signing request for `key` (the subject is only informative: the CA
/// decides the identity).
pub fn make_csr(key: &KeyPair, identity: &str) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, identity);
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(rcgen_err("building the certificate signing request"))
}

/// The public key of a certificate signing request, once its signature checks out
/// (proof that the sender holds the private key).
pub fn csr_public_key(pem: &str) -> Result<rcgen::PublicKey, PkiError> {
    const MAX_CSR_BYTES: usize = 16 * 1024;
    if pem.len() > MAX_CSR_BYTES {
        return Err(PkiError::Csr(format!(
            "{} bytes; at most {MAX_CSR_BYTES} are accepted",
            pem.len()
        )));
    }
    CertificateSigningRequestParams::from_pem(pem)
        .map(|csr| csr.public_key)
        .map_err(|e| PkiError::Csr(e.to_string()))
}

/// What a joining node signs with its FALCON-1024 key:
/// `hypermesh-join\0<token name>\0<node name>\0<csr_pem>\0<ML-KEM public key>`. The
/// apiserver checks the signature with the key the request carries, which binds that
/// key (and the ML-KEM key published with it) to the name.
pub fn join_message(
    token_name: &str,
    node_name: &str,
    csr_pem: &str,
    kem_public_key: &[u8],
) -> Vec<u8> {
    let mut message = b"hypermesh-join\0".to_vec();
    for part in [token_name, node_name, csr_pem] {
        message.extend_from_slice(part.as_bytes());
        message.push(0);
    }
    message.extend_from_slice(kem_public_key);
    message
}

/// What a certificate should say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateSpec {
    /// The identity (subject common name): `user:bob`, `node:vm`, `system:scheduler`.
    pub identity: String,
    /// Groups (subject organisations).
    pub groups: Vec<String>,
    /// DNS names (servers, and nodes' `<name>.node.hypermesh`).
    pub dns_names: Vec<String>,
    /// IP addresses (servers).
    pub ip_addresses: Vec<IpAddr>,
    /// The NodeId to bind (nodes).
    pub node_id: Option<String>,
    /// How long the certificate is valid from now.
    pub validity: Duration,
    /// Usable as a TLS server certificate.
    pub server: bool,
    /// Usable as a TLS client certificate.
    pub client: bool,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM of the certificate.
    pub pem: String,
    /// DER of the certificate.
    pub der: CertificateDer<'static>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// The cluster certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn random_serial() -> Result<(SerialNumber, String), PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PkiError::Parse("no system randomness".into()))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    Ok((
        SerialNumber::from_slice(&bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

impl ClusterCa {
    /// A new CA named `name`, in memory.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "HyperMesh");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + CA_VALIDITY);
        params.serial_number = Some(random_serial()?.0);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-signing the CA"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir` (`ca.crt`, `ca.key.sealed`), creating both on first
    /// start. The key is sealed with `key`; the directory is created 0700.
    pub fn load_or_create(dir: &Path, key: &EncryptionKey) -> Result<Self, PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let sealed = std::fs::read(&key_path).map_err(io(&key_path))?;
            let key_pem = String::from_utf8(key.open(CA_KEY_FILE, &sealed)?)
                .map_err(|_| PkiError::Parse("the CA key is not PEM".into()))?;
            return Self::from_pem(&cert_pem, &key_pem);
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        let ca = Self::generate("hypermesh-cluster-ca")?;
        let sealed = key.seal(CA_KEY_FILE, ca.issuer.key().serialize_pem().as_bytes())?;
        write_private(&key_path, &sealed).map_err(io(&key_path))?;
        std::fs::write(&cert_path, &ca.cert_pem).map_err(io(&cert_path))?;
        Ok(ca)
    }

    /// The CA's private key sealed with `key` (what `ca.key.sealed` holds, and what
    /// the apiserver keeps in its store).
    pub fn sealed_key(&self, key: &EncryptionKey) -> Result<Vec<u8>, PkiError> {
        Ok(key.seal(CA_KEY_FILE, self.issuer.key().serialize_pem().as_bytes())?)
    }

    /// A CA from its certificate and a key [`sealed_key`](Self::sealed_key) made.
    pub fn from_sealed(
        cert_pem: &str,
        sealed: &[u8],
        key: &EncryptionKey,
    ) -> Result<Self, PkiError> {
        let key_pem = String::from_utf8(key.open(CA_KEY_FILE, sealed)?)
            .map_err(|_| PkiError::Parse("the CA key is not PEM".into()))?;
        Self::from_pem(cert_pem, &key_pem)
    }

    /// A CA from its certificate and private key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = key_from_pem(key_pem)?;
        let cert_der = first_certificate(cert_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(rcgen_err("reading the CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo.
    pub fn pin(&self) -> String {
        spki_pin(&self.cert_der).unwrap_or_default()
    }

    /// Issues a certificate for `public_key` saying what `spec` says.
    pub fn issue(
        &self,
        spec: &CertificateSpec,
        public_key: &impl PublicKeyData,
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.identity.as_str());
        for group in &spec.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group.as_str());
        }
        for name in &spec.dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(rcgen_err("a DNS name of the certificate"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if let Some(node_id) = &spec.node_id {
            let uri = format!("{NODE_ID_URI_PREFIX}{node_id}")
                .try_into()
                .map_err(rcgen_err("the NodeId URI of the certificate"))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = SystemTime::now();
        let not_before = now - BACKDATE;
        let not_after = now + spec.validity;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.use_authority_key_identifier_extension = true;
        let (serial_number, serial) = random_serial()?;
        params.serial_number = Some(serial_number);
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(rcgen_err("signing the certificate"))?;
        Ok(Issued {
            pem: cert.pem(),
            der: cert.der().clone(),
            serial,
            not_before,
            not_after,
        })
    }

    /// Issues a certificate together with a new key pair (PEM of the key).
    pub fn issue_with_new_key(&self, spec: &CertificateSpec) -> Result<(Issued, String), PkiError> {
        let key = new_key()?;
        let issued = self.issue(spec, &key)?;
        Ok((issued, key.serialize_pem()))
    }
}

/// The first certificate of a PEM bundle.
pub fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    certificates(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Parse("no CERTIFICATE block in the PEM".into()))
}

/// Every certificate of a PEM bundle.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Parse(format!("PEM: {e}")))
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo.
pub fn spki_pin(cert: &[u8]) -> Result<String, PkiError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| PkiError::Parse(e.to_string()))?;
    let digest = Sha256::digest(parsed.tbs_certificate.subject_pki.raw);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// Checks that `pin` reads `sha256:<64 hex digits>` and returns it lower-cased.
pub fn parse_pin(pin: &str) -> Result<String, PkiError> {
    let hex = pin
        .strip_prefix("sha256:")
        .ok_or_else(|| PkiError::Pin(pin.to_string()))?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::Pin(pin.to_string()));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name.
    pub identity: String,
    /// The subject's organisations.
    pub groups: Vec<String>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The NodeId bound into a node certificate.
    pub node_id: Option<String>,
    /// DNS names.
    pub dns_names: Vec<String>,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Reads who a (chain-verified) certificate names.
pub fn read_identity(cert: &[u8]) -> Result<CertIdentity, PkiError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| PkiError::Parse(e.to_string()))?;
    let subject = parsed.subject();
    let identity = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| PkiError::Parse("no subject common name".into()))?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let mut node_id = None;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => {
                    if let Some(id) = uri.strip_prefix(NODE_ID_URI_PREFIX) {
                        node_id = Some(id.to_string());
                    }
                }
                GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                _ => {}
            }
        }
    }
    let serial = parsed
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect();
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
    Ok(CertIdentity {
        identity,
        groups,
        serial,
        node_id,
        dns_names,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_node_certificates_that_name_the_node_and_bind_its_key() {
        let ca = ClusterCa::generate("test-ca").unwrap();
        let key = new_key().unwrap();
        let csr = make_csr(&key, "node:vm").unwrap();
        let public = csr_public_key(&csr).unwrap();
        let spec = CertificateSpec {
            identity: "node:vm".into(),
            groups: vec!["system:nodes".into()],
            dns_names: vec![format!("vm.{NODE_DNS_SUFFIX}")],
            node_id: Some("ab".repeat(32)),
            validity: Duration::from_secs(3600),
            client: true,
            server: true,
            ..Default::default()
        };
        let issued = ca.issue(&spec, &public).unwrap();
        let who = read_identity(&issued.der).unwrap();
        assert_eq!(who.identity, "node:vm");
        assert_eq!(who.groups, vec!["system:nodes".to_string()]);
        assert_eq!(who.node_id.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(who.serial, issued.serial);
        assert_eq!(who.dns_names, vec!["vm.node.hypermesh".to_string()]);
        assert!(ca.pin().starts_with("sha256:"));
        assert_eq!(parse_pin(&ca.pin()).unwrap(), ca.pin());
        assert!(parse_pin("sha256:abc").is_err());
    }

    #[test]
    fn join_messages_separate_their_parts() {
        assert_ne!(
            join_message("ab", "c", "d", b""),
            join_message("a", "bc", "d", b"")
        );
        assert_ne!(
            join_message("a", "b", "c", b""),
            join_message("a", "b", "c", b"k")
        );
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let key = new_key().unwrap();
        let csr = make_csr(&key, "node:vm").unwrap();
        let der = first_der_block(&csr);
        let mut bad = der.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x01;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_lines(&bad)
        );
        assert!(csr_public_key(&pem).is_err());
        assert!(csr_public_key("garbage").is_err());
    }

    #[test]
    fn the_ca_survives_a_restart_with_its_key_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let key = EncryptionKey::load_or_create(&dir.path().join("enc.key")).unwrap();
        let ca = ClusterCa::load_or_create(&dir.path().join("pki"), &key).unwrap();
        let again = ClusterCa::load_or_create(&dir.path().join("pki"), &key).unwrap();
        assert_eq!(ca.pin(), again.pin());
        let sealed = std::fs::read(dir.path().join("pki").join(CA_KEY_FILE)).unwrap();
        assert!(
            !String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"),
            "the key is not stored in the clear"
        );
        let other = EncryptionKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(ClusterCa::load_or_create(&dir.path().join("pki"), &other).is_err());
    }

    fn first_der_block(pem: &str) -> Vec<u8> {
        use rustls_pki_types::CertificateSigningRequestDer;
        use rustls_pki_types::pem::PemObject;
        CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn base64_lines(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
