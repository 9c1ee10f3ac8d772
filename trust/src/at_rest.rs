//! Encryption at rest with a key file: AES-256-GCM under a 32-byte key kept in a file
//! of its own (0600), for what the apiserver must keep secret in its data directory
//! or store (the cluster CA's private key today; Secrets later).
//!
//! Sealed blob layout: `HMAR1` magic, 12-byte random nonce, ciphertext with its tag.
//! The associated data names what the blob is (e.g. `ca.key`, a Secret's store key),
//! so a blob cannot be swapped for another one encrypted under the same key.
//!
//! Rotation: the key file holds one or more 32-byte keys back to back. The first is
//! the primary (everything is sealed with it); the others still open what was sealed
//! before a rotation ([`EncryptionKey::rotate_file`] puts a new key first,
//! [`EncryptionKey::retire_previous_file`] drops all but the primary).

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;

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
    /// The key file does not hold whole 32-byte keys.
    #[error(
        "encryption key file {path} holds {len} bytes; it must hold one or more {KEY_LEN}-byte keys (was it truncated or replaced?)"
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

/// The AES-256-GCM keys of a key file: the primary first, then previous ones.
pub struct EncryptionKey {
    keys: Vec<LessSafeKey>,
    /// Per-key roots for [`derive`](Self::derive): HMAC-SHA256 keys made from each key.
    roots: Vec<hmac::Key>,
    path: PathBuf,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
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
                let bytes = random_key()?;
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

    /// Puts a new random key first in the key file at `path` (the old ones stay after
    /// it, so what they sealed still opens) and returns the new ring. Re-seal what the
    /// old keys sealed, then [`retire_previous_file`](Self::retire_previous_file).
    pub fn rotate_file(path: &Path) -> Result<Self, AtRestError> {
        let current = Self::load_or_create(path)?;
        let old = std::fs::read(path).map_err(|source| AtRestError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut bytes = random_key()?;
        bytes.extend_from_slice(&old);
        drop(current);
        write_private(path, &bytes).map_err(|source| AtRestError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Keeps only the primary key in the key file at `path`: what the previous keys
    /// sealed no longer opens. Returns the ring with the primary alone.
    pub fn retire_previous_file(path: &Path) -> Result<Self, AtRestError> {
        let ring = Self::load_or_create(path)?;
        let bytes = std::fs::read(path).map_err(|source| AtRestError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        if ring.keys.len() > 1 {
            write_private(path, &bytes[..KEY_LEN]).map_err(|source| AtRestError::KeyFile {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Self::from_bytes(&bytes[..KEY_LEN], path)
    }

    fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, AtRestError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(KEY_LEN) {
            return Err(AtRestError::KeyLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        let keys = bytes
            .chunks(KEY_LEN)
            .map(|chunk| {
                UnboundKey::new(&AES_256_GCM, chunk)
                    .map(LessSafeKey::new)
                    .map_err(|_| AtRestError::Crypto("bad key".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let roots = bytes
            .chunks(KEY_LEN)
            .map(|chunk| hmac::Key::new(hmac::HMAC_SHA256, chunk))
            .collect();
        Ok(EncryptionKey {
            keys,
            roots,
            path: path.to_path_buf(),
        })
    }

    /// How many keys the ring holds (the primary and the previous ones).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// A 32-byte key for `purpose` from each key of the ring, the primary's first:
    /// HMAC-SHA256(key, `hypermesh-derive/` + purpose). Every apiserver given the same
    /// key file derives the same keys; none of them reveals the ring's keys.
    pub fn derive(&self, purpose: &str) -> Vec<[u8; KEY_LEN]> {
        self.roots
            .iter()
            .map(|root| {
                let tag = hmac::sign(root, format!("hypermesh-derive/{purpose}").as_bytes());
                let mut out = [0u8; KEY_LEN];
                out.copy_from_slice(&tag.as_ref()[..KEY_LEN]);
                out
            })
            .collect()
    }

    /// The key file this ring was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts `plaintext` with the primary key, bound to `what` (associated data).
    pub fn seal(&self, what: &str, plaintext: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| AtRestError::Crypto("no system randomness".into()))?;
        let mut sealed = plaintext.to_vec();
        self.keys[0]
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

    /// Decrypts a blob [`seal`](Self::seal) made for `what` under any key of the ring.
    pub fn open(&self, what: &str, blob: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let fail = || AtRestError::Decrypt {
            what: what.to_string(),
        };
        let rest = blob.strip_prefix(MAGIC).ok_or_else(fail)?;
        if rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        for key in &self.keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
            let mut buffer = sealed.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(what.as_bytes()), &mut buffer) {
                return Ok(plain.to_vec());
            }
        }
        Err(fail())
    }

    /// True when `blob` is one [`seal`](Self::seal) made (it starts with the magic).
    pub fn is_sealed(blob: &[u8]) -> bool {
        blob.starts_with(MAGIC)
    }
}

fn random_key() -> Result<Vec<u8>, AtRestError> {
    let mut bytes = vec![0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AtRestError::Crypto("no system randomness".into()))?;
    Ok(bytes)
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
        // Rotation: a new primary seals, the old key still opens, retiring drops it.
        let rotated = EncryptionKey::rotate_file(&path).unwrap();
        assert_eq!(rotated.key_count(), 2);
        assert_eq!(rotated.open("ca.key", &blob).unwrap(), b"secret");
        let fresh = rotated.seal("ca.key", b"new").unwrap();
        assert!(
            again.open("ca.key", &fresh).is_err(),
            "sealed with the new key"
        );
        let retired = EncryptionKey::retire_previous_file(&path).unwrap();
        assert_eq!(retired.key_count(), 1);
        assert_eq!(retired.open("ca.key", &fresh).unwrap(), b"new");
        assert!(
            retired.open("ca.key", &blob).is_err(),
            "the old key is gone"
        );
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            EncryptionKey::load_or_create(&path),
            Err(AtRestError::KeyLength { len: 5, .. })
        ));
    }
}
