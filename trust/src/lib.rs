//! Node identity (FALCON-1024) and the four consensus proofs (stake, time, space,
//! work) every Asset registration carries and the apiserver checks at admission.
//!
//! # Layout
//! - [`identity`]: [`NodeIdentity`], the node's FALCON-1024 key pair kept in its state
//!   directory (0600), `NodeId = hex(BLAKE3(public key))`, detached signatures.
//! - [`proof`]: [`proof::prove_asset`] builds an Asset's `spec.proof`;
//!   [`proof::ProofVerifier`] checks it (skew window, replay cache, per-node space
//!   ledger) and says which proof failed, with a stable reason name.

pub mod identity;
pub mod proof;

pub use identity::{
    ALGORITHM, IdentityError, NodeIdentity, PUBLIC_KEY_FILE, SECRET_KEY_FILE, node_id_of,
    verify_signature,
};
