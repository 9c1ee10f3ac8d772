//! Encryption at rest with a key file: AES-256-GCM under a 32-byte key kept in a file
//! of its own (0600), for what the apiserver must keep secret in its data directory
//! or store (the cluster CA's private key today; Secrets later).
//!
//! Sealed blob layout: `HMAR1` magic, 12-byte random nonce, ciphertext with its tag.
//! The associated data names what the blob is (e.g. `ca.key`), so a blob cannot be
//! swapped for another one encrypted under the same key.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The magic prefix of a sealed blob.
const MAGIC: &[u8] = b"HMAR1";
/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key file or sealed blob could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    /// The key file could not be read or written.
    #[error("encryption key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte key.
    #[error(
        "encryption key file {path} holds {len} bytes; it must hold exactly {KEY_LEN} (was it truncated or replaced?)"
    )]
    KeyLength {
        /// The file.
        path: PathBuf,
        /// What it holds.
        len: usize,
    },
    /// The blob is not one this module wrote, or it was encrypted under another key,
    /// or for another purpose, or it was tampered with.
    #[error("cannot decrypt {what}: wrong encryption key file, or the data was altered")]
    Decrypt {
        /// What the blob is.
        what: String,
    },
    /// The system random generator or the cipher failed.
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// A 32-byte AES-256-GCM key loaded from its file.
pub struct EncryptionKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// Loads the key from `path`, creating the file (0600, 32 random bytes) when it
    /// does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AtRestError> {
        let io = |source| AtRestError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; KEY_LEN];
                aws_lc_rs::rand::fill(&mut bytes)
                    .map_err(|_| AtRestError::Crypto("no system randomness".into()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &bytes).map_err(io)?;
                bytes
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_bytes(&bytes, path)
    }

    fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, AtRestError> {
        if bytes.len() != KEY_LEN {
            return Err(AtRestError::KeyLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| AtRestError::Crypto("bad key".into()))?;
        Ok(EncryptionKey {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        })
    }

    /// Encrypts `plaintext`, bound to `what` (associated data).
    pub fn seal(&self, what: &str, plaintext: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| AtRestError::Crypto("no system randomness".into()))?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| AtRestError::Crypto("seal failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a blob [`seal`](Self::seal) made for `what`.
    pub fn open(&self, what: &str, blob: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let fail = || AtRestError::Decrypt {
            what: what.to_string(),
        };
        let rest = blob.strip_prefix(MAGIC).ok_or_else(fail)?;
        if rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buffer = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut buffer)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// Writes `bytes` to `path` readable by the owner only, atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = EncryptionKey::load_or_create(&path).unwrap();
        let blob = key.seal("ca.key", b"secret").unwrap();
        assert_eq!(key.open("ca.key", &blob).unwrap(), b"secret");
        assert!(key.open("other", &blob).is_err(), "bound to its purpose");
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open("ca.key", &tampered).is_err());
        // The same file gives the same key; another key cannot open the blob.
        let again = EncryptionKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("ca.key", &blob).unwrap(), b"secret");
        let other = EncryptionKey::load_or_create(&dir.path().join("other")).unwrap();
        assert!(other.open("ca.key", &blob).is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            EncryptionKey::load_or_create(&path),
            Err(AtRestError::KeyLength { len: 5, .. })
        ));
    }
}
