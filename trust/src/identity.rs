//! A node's FALCON-1024 key pair, its NodeId (hex BLAKE3 of the public key), its
//! ML-KEM-1024 key pair for sealed Secrets ([`crate::sealing::NodeKem`]) and the files
//! that keep them across restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pqcrypto_falcon::falcon1024;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};

/// The signature algorithm, as written in `NodeIdentity.algorithm` on the Node.
pub const ALGORITHM: &str = "falcon-1024";
/// File (in the state dir) holding the secret key bytes, mode 0600.
pub const SECRET_KEY_FILE: &str = "node-identity.key";
/// File (in the state dir) holding the public key bytes, mode 0600.
pub const PUBLIC_KEY_FILE: &str = "node-identity.pub";

/// Why an identity could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds bytes that are not a FALCON-1024 key.
    #[error("{path}: not a FALCON-1024 {what} ({len} bytes)")]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// `public key` or `secret key`.
        what: &'static str,
        /// How many bytes it holds.
        len: usize,
    },
    /// The ML-KEM key files could not be loaded or created.
    #[error(transparent)]
    Kem(#[from] crate::sealing::SealError),
    /// The public and secret key files do not belong together.
    #[error(
        "{dir}: the public and secret key files are not one key pair; restore them or remove both to create a new identity"
    )]
    Mismatch {
        /// The state directory.
        dir: PathBuf,
    },
    /// Only one of the two key files exists.
    #[error(
        "{present} exists but {missing} does not; restore it or remove both to create a new identity"
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
}

/// A node's FALCON-1024 key pair and NodeId, and its ML-KEM-1024 key pair.
#[derive(Clone)]
pub struct NodeIdentity {
    public: falcon1024::PublicKey,
    secret: falcon1024::SecretKey,
    node_id: String,
    kem: crate::sealing::NodeKem,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The NodeId of a public key: lowercase hex of its BLAKE3 hash (64 characters).
pub fn node_id_of(public_key: &[u8]) -> String {
    blake3::hash(public_key).to_hex().to_string()
}

/// Whether `signature` is a valid detached FALCON-1024 signature of `message` by
/// `public_key`. Malformed keys or signatures are simply not valid.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(pk) = falcon1024::PublicKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(sig) = falcon1024::DetachedSignature::from_bytes(signature) else {
        return false;
    };
    falcon1024::verify_detached_signature(&sig, message, &pk).is_ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn read_private(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let bytes = fs::read(path).map_err(io(path))?;
    // Keys must stay private even if someone loosened the mode by hand.
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(bytes)
}

impl NodeIdentity {
    /// A fresh key pair.
    pub fn generate() -> Self {
        let (public, secret) = falcon1024::keypair();
        Self::from_keys(public, secret, crate::sealing::NodeKem::generate())
    }

    fn from_keys(
        public: falcon1024::PublicKey,
        secret: falcon1024::SecretKey,
        kem: crate::sealing::NodeKem,
    ) -> Self {
        let node_id = node_id_of(public.as_bytes());
        NodeIdentity {
            public,
            secret,
            node_id,
            kem,
        }
    }

    /// Loads the identity kept in `state_dir`, or creates one there (key files with
    /// mode 0600, the directory created if missing). The same directory always gives
    /// the same NodeId. The ML-KEM key pair is kept beside it (created when missing).
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let secret_path = state_dir.join(SECRET_KEY_FILE);
        let public_path = state_dir.join(PUBLIC_KEY_FILE);
        match (secret_path.exists(), public_path.exists()) {
            (true, true) => Self::load(state_dir, &secret_path, &public_path),
            (false, false) => {
                fs::create_dir_all(state_dir).map_err(io(state_dir))?;
                let (public, secret) = falcon1024::keypair();
                let kem = crate::sealing::NodeKem::load_or_create(state_dir)?;
                let identity = Self::from_keys(public, secret, kem);
                write_private(&public_path, identity.public.as_bytes())?;
                write_private(&secret_path, identity.secret.as_bytes())?;
                Ok(identity)
            }
            (true, false) => Err(IdentityError::Incomplete {
                present: secret_path,
                missing: public_path,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                present: public_path,
                missing: secret_path,
            }),
        }
    }

    fn load(dir: &Path, secret_path: &Path, public_path: &Path) -> Result<Self, IdentityError> {
        let secret_bytes = read_private(secret_path)?;
        let public_bytes = read_private(public_path)?;
        let secret = falcon1024::SecretKey::from_bytes(&secret_bytes).map_err(|_| {
            IdentityError::InvalidKey {
                path: secret_path.to_path_buf(),
                what: "secret key",
                len: secret_bytes.len(),
            }
        })?;
        let public = falcon1024::PublicKey::from_bytes(&public_bytes).map_err(|_| {
            IdentityError::InvalidKey {
                path: public_path.to_path_buf(),
                what: "public key",
                len: public_bytes.len(),
            }
        })?;
        let kem = crate::sealing::NodeKem::load_or_create(dir)?;
        let identity = Self::from_keys(public, secret, kem);
        let probe = b"hypermesh/identity-check";
        if !verify_signature(identity.public_key(), probe, &identity.sign(probe)) {
            return Err(IdentityError::Mismatch {
                dir: dir.to_path_buf(),
            });
        }
        Ok(identity)
    }

    /// Lowercase hex BLAKE3 of the public key.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The public key bytes (1,793 bytes for FALCON-1024).
    pub fn public_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    /// The node's ML-KEM-1024 key pair, which opens Secrets sealed to it.
    pub fn kem(&self) -> &crate::sealing::NodeKem {
        &self.kem
    }

    /// A detached signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        falcon1024::detached_sign(message, &self.secret)
            .as_bytes()
            .to_vec()
    }

    /// The identity as it goes into `Node.spec.identity`.
    pub fn to_node_identity(&self) -> hypermesh_api::v1::NodeIdentity {
        hypermesh_api::v1::NodeIdentity {
            node_id: self.node_id.clone(),
            public_key: self.public_key().to_vec(),
            algorithm: ALGORITHM.to_string(),
            kem_public_key: self.kem.public_key().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = NodeIdentity::generate();
        let b = NodeIdentity::generate();
        let sig = a.sign(b"hello");
        assert!(verify_signature(a.public_key(), b"hello", &sig));
        assert!(!verify_signature(a.public_key(), b"hellO", &sig));
        assert!(!verify_signature(b.public_key(), b"hello", &sig));
        assert!(!verify_signature(b"short", b"hello", &sig));
        assert!(!verify_signature(a.public_key(), b"hello", b"garbage"));
        assert_eq!(a.node_id(), node_id_of(a.public_key()));
        assert_eq!(a.node_id().len(), 64);
        assert_ne!(a.node_id(), b.node_id());
    }

    #[test]
    fn identity_files_are_private_and_reload_to_the_same_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = NodeIdentity::load_or_create(&state).unwrap();
        for file in [SECRET_KEY_FILE, PUBLIC_KEY_FILE] {
            let mode = fs::metadata(state.join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let again = NodeIdentity::load_or_create(&state).unwrap();
        assert_eq!(first.node_id(), again.node_id());
        assert!(verify_signature(
            first.public_key(),
            b"m",
            &again.sign(b"m")
        ));
    }

    #[test]
    fn a_missing_or_mismatched_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        NodeIdentity::load_or_create(dir.path()).unwrap();
        let other = NodeIdentity::generate();
        fs::write(dir.path().join(PUBLIC_KEY_FILE), other.public_key()).unwrap();
        assert!(matches!(
            NodeIdentity::load_or_create(dir.path()),
            Err(IdentityError::Mismatch { .. })
        ));
        fs::remove_file(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert!(matches!(
            NodeIdentity::load_or_create(dir.path()),
            Err(IdentityError::Incomplete { .. })
        ));
    }
}
