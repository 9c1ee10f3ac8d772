//! Node identity (FALCON-1024) and the four consensus proofs (stake, time, space,
//! work) every Asset registration carries and the apiserver checks at admission.
//!
//! # Layout
//! - [`at_rest`]: AES-256-GCM under a key file, for secrets kept on disk or in the store.
//! - [`pki`]: the cluster CA (ECDSA P-256, key sealed at rest) and the certificates it
//!   issues: identity in the subject, groups as organisations, nodes' FALCON NodeId
//!   bound as a URI.
//! - [`tls`]: rustls configurations: TLS 1.3 only, aws-lc-rs, X25519MLKEM768 preferred;
//!   CA-pinned first contact for joining nodes.
//! - [`client_config`]: the config file clients read (server, CA, client certificate).
//! - [`identity`]: [`NodeIdentity`], the node's FALCON-1024 key pair kept in its state
//!   directory (0600), `NodeId = hex(BLAKE3(public key))`, detached signatures.
//! - [`sealing`]: [`sealing::NodeKem`], a node's ML-KEM-1024 key pair, and Secrets sealed
//!   to one node (ML-KEM-1024 + HKDF-SHA256 + AES-256-GCM, bound to node, Secret and version).
//! - [`proof`]: [`proof::prove_asset`] answers an apiserver challenge with an Asset's `spec.proof`;
//!   [`proof::ProofVerifier`] checks it (challenge, work, space openings, time, stake, per-node space
//!   ledger) and says which proof failed, with a stable reason name.

pub mod at_rest;
pub mod client_config;
pub mod identity;
pub mod pki;
pub mod proof;
pub mod sealing;
pub mod tls;

pub use identity::{
    ALGORITHM, IdentityError, NodeIdentity, PUBLIC_KEY_FILE, SECRET_KEY_FILE, node_id_of,
    verify_signature,
};
