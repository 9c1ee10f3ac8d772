//! Node credentials for the proxy tests, in the layout an agent keeps after joining:
//! `<state-dir>/pki/ca.crt` (cluster CA), `node.crt` (ECDSA P-256, CN `node:<name>`,
//! O `system:nodes`, SAN DNS `<name>.node.hypermesh`) and `node.key` (PKCS#8 PEM).
//! Until the cluster CA and join land, tests make these with rcgen.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A cluster CA that issues node certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA (`CN=hypermesh-ca`).
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "hypermesh-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("CA certificate")?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A node certificate and key for `name`, PEM: `(cert, key)`.
    pub fn node_pem(&self, name: &str) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(vec![format!("{name}.node.hypermesh")])
            .context("node certificate names")?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("node:{name}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().context("node key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("node certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `<state_dir>/pki/{ca.crt,node.crt,node.key}` for node `name`.
    pub fn write_node(&self, state_dir: &Path, name: &str) -> anyhow::Result<()> {
        let pki = state_dir.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
        let (cert, key) = self.node_pem(name)?;
        std::fs::write(pki.join("ca.crt"), self.pem())?;
        std::fs::write(pki.join("node.crt"), cert)?;
        std::fs::write(pki.join("node.key"), key)?;
        Ok(())
    }
}
