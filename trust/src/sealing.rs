//! Secrets sealed to one node: ML-KEM-1024 encapsulation to the node's public key,
//! HKDF-SHA256 from the shared secret to an AES-256-GCM key, and AES-256-GCM over the
//! data with associated data naming the node, the Secret and its resourceVersion, so a
//! sealed copy opens only with that node's ML-KEM secret key and only as that Secret.
//!
//! The node's ML-KEM key pair ([`NodeKem`]) lives beside its FALCON identity in the
//! state directory (`node-kem.key`, `node-kem.pub`, 0600); its public key is published
//! at join and in `Node.spec.identity.kemPublicKey`.

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use pqcrypto_mlkem::mlkem1024;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _};

/// The key encapsulation algorithm, as documented on `Node.spec.identity`.
pub const KEM_ALGORITHM: &str = "ml-kem-1024";
/// File (in the state dir) holding the ML-KEM secret key, mode 0600.
pub const KEM_SECRET_KEY_FILE: &str = "node-kem.key";
/// File (in the state dir) holding the ML-KEM public key, mode 0600.
pub const KEM_PUBLIC_KEY_FILE: &str = "node-kem.pub";
/// HKDF salt: names this construction and its version.
const HKDF_SALT: &[u8] = b"hypermesh/secret-seal/v1";

/// Why data could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The recipient's public key is not an ML-KEM-1024 key.
    #[error("not an ML-KEM-1024 public key ({len} bytes; expected {expected})")]
    PublicKey {
        /// Bytes given.
        len: usize,
        /// Bytes of an ML-KEM-1024 public key.
        expected: usize,
    },
    /// The sealed copy is for another key, another Secret or version, or was altered.
    #[error(
        "cannot open the sealed data: it was sealed to another node's key, for another Secret or version, or altered"
    )]
    Open,
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds bytes that are not an ML-KEM-1024 key.
    #[error("{path}: not an ML-KEM-1024 {what} ({len} bytes)")]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// `public key` or `secret key`.
        what: &'static str,
        /// Bytes it holds.
        len: usize,
    },
    /// The system random generator or the cipher failed.
    #[error("sealing failed: {0}")]
    Crypto(&'static str),
}

/// One sealed copy: the KEM ciphertext, the AES-GCM nonce and the ciphertext with tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// ML-KEM-1024 ciphertext (1,568 bytes).
    pub kem_ciphertext: Vec<u8>,
    /// AES-256-GCM nonce (12 bytes).
    pub nonce: Vec<u8>,
    /// AES-256-GCM ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The associated data a Secret's sealed copy is bound to: the node it is for, the
/// Secret's namespace and name, and the resourceVersion it was read at.
pub fn secret_aad(node: &str, namespace: &str, name: &str, resource_version: u64) -> Vec<u8> {
    let mut aad = b"hypermesh-secret\0".to_vec();
    for part in [node, namespace, name] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad.extend_from_slice(resource_version.to_string().as_bytes());
    aad
}

fn aes_key(shared: &[u8], aad: &[u8]) -> Result<LessSafeKey, SealError> {
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(shared);
    let info = [aad];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| SealError::Crypto("HKDF expand"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seals `plaintext` to the holder of the ML-KEM-1024 `public_key`, bound to `aad`.
pub fn seal(public_key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
    let pk = mlkem1024::PublicKey::from_bytes(public_key).map_err(|_| SealError::PublicKey {
        len: public_key.len(),
        expected: mlkem1024::public_key_bytes(),
    })?;
    let (shared, kem_ciphertext) = mlkem1024::encapsulate(&pk);
    let key = aes_key(shared.as_bytes(), aad)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Crypto("no system randomness"))?;
    let mut ciphertext = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut ciphertext,
    )
    .map_err(|_| SealError::Crypto("AES-GCM seal"))?;
    Ok(Sealed {
        kem_ciphertext: kem_ciphertext.as_bytes().to_vec(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// A node's ML-KEM-1024 key pair.
#[derive(Clone)]
pub struct NodeKem {
    public: mlkem1024::PublicKey,
    secret: mlkem1024::SecretKey,
}

impl std::fmt::Debug for NodeKem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKem").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NodeKem {
    /// A fresh key pair.
    pub fn generate() -> Self {
        let (public, secret) = mlkem1024::keypair();
        NodeKem { public, secret }
    }

    /// Loads the key pair kept in `state_dir`, or creates it there (0600) when neither
    /// file exists (a node that joined before nodes had one gets it on its next start).
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SealError> {
        let secret_path = state_dir.join(KEM_SECRET_KEY_FILE);
        let public_path = state_dir.join(KEM_PUBLIC_KEY_FILE);
        if !secret_path.exists() && !public_path.exists() {
            fs::create_dir_all(state_dir).map_err(io(state_dir))?;
            let kem = Self::generate();
            crate::at_rest::write_private(&public_path, kem.public.as_bytes())
                .map_err(io(&public_path))?;
            crate::at_rest::write_private(&secret_path, kem.secret.as_bytes())
                .map_err(io(&secret_path))?;
            return Ok(kem);
        }
        let secret_bytes = fs::read(&secret_path).map_err(io(&secret_path))?;
        let public_bytes = fs::read(&public_path).map_err(io(&public_path))?;
        let secret =
            mlkem1024::SecretKey::from_bytes(&secret_bytes).map_err(|_| SealError::InvalidKey {
                path: secret_path.clone(),
                what: "secret key",
                len: secret_bytes.len(),
            })?;
        let public =
            mlkem1024::PublicKey::from_bytes(&public_bytes).map_err(|_| SealError::InvalidKey {
                path: public_path.clone(),
                what: "public key",
                len: public_bytes.len(),
            })?;
        let kem = NodeKem { public, secret };
        // The two files must be one pair: a probe sealed to the public key must open.
        let probe = seal(kem.public_key(), b"probe", b"probe")?;
        kem.open(b"probe", &probe)
            .map_err(|_| SealError::InvalidKey {
                path: public_path,
                what: "public key (not the pair of node-kem.key)",
                len: public_bytes.len(),
            })?;
        Ok(kem)
    }

    /// The public key bytes (1,568 for ML-KEM-1024).
    pub fn public_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    /// Opens a copy [`seal`] made for this key pair with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let ct = mlkem1024::Ciphertext::from_bytes(&sealed.kem_ciphertext)
            .map_err(|_| SealError::Open)?;
        // ML-KEM decapsulation never fails: a wrong key gives another shared secret,
        // and then the AES-GCM tag does not verify.
        let shared = mlkem1024::decapsulate(&ct, &self.secret);
        let key = aes_key(shared.as_bytes(), aad)?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| SealError::Open)?;
        let mut buffer = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_right_key_and_binding_open_a_sealed_copy() {
        let a = NodeKem::generate();
        let b = NodeKem::generate();
        let aad = secret_aad("node-a", "default", "db", 7);
        let sealed = seal(a.public_key(), &aad, b"hunter2").unwrap();
        assert_eq!(a.open(&aad, &sealed).unwrap(), b"hunter2");
        assert!(b.open(&aad, &sealed).is_err(), "another node's key");
        for other in [
            secret_aad("node-b", "default", "db", 7),
            secret_aad("node-a", "other", "db", 7),
            secret_aad("node-a", "default", "db2", 7),
            secret_aad("node-a", "default", "db", 8),
        ] {
            assert!(a.open(&other, &sealed).is_err());
        }
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(a.open(&aad, &tampered).is_err());
        assert!(matches!(
            seal(b"short", &aad, b"x"),
            Err(SealError::PublicKey { len: 5, .. })
        ));
    }

    #[test]
    fn key_files_reload_to_the_same_pair() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKem::load_or_create(dir.path()).unwrap();
        let again = NodeKem::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        let sealed = seal(first.public_key(), b"x", b"y").unwrap();
        assert_eq!(again.open(b"x", &sealed).unwrap(), b"y");
        let other = NodeKem::generate();
        fs::write(dir.path().join(KEM_PUBLIC_KEY_FILE), other.public_key()).unwrap();
        assert!(NodeKem::load_or_create(dir.path()).is_err());
    }
}
