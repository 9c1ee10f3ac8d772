//! Continue tokens of paginated lists, authenticated so a client cannot forge one:
//! `v2.<revision>.<hex of the last key examined>.<hex HMAC-SHA256>`. The MAC covers the
//! revision, the key and the listing the token was issued for (kind and namespace, as
//! the listed store prefix, and both selectors), under a key derived from the cluster's
//! encryption key file, so every apiserver of an HA cluster (they share that file)
//! accepts the others' tokens, and a token made up by hand (say, an old revision to
//! read objects deleted since, or another namespace's position) is refused.

use aws_lc_rs::hmac;
use hypermesh_api::reason::{Reason, status};
use hypermesh_trust::at_rest::EncryptionKey;
use tonic::Status;

/// What continue-token MAC keys are derived for ([`EncryptionKey::derive`]).
const PURPOSE: &str = "continue-token/v2";

/// The keys continue tokens are signed with (the first) and checked against (any, so
/// tokens issued before a key rotation still work until the old key is retired).
pub struct ContinueTokens {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for ContinueTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinueTokens")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl ContinueTokens {
    /// Keys derived from the cluster's encryption key file.
    pub fn from_encryption_key(key: &EncryptionKey) -> Self {
        ContinueTokens {
            keys: key
                .derive(PURPOSE)
                .iter()
                .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k))
                .collect(),
        }
    }

    /// A random key of this process only (registries built without a server config,
    /// e.g. in unit tests).
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 32];
        // Without system randomness nothing else in the server works either; a zero
        // key would still refuse tokens of other processes' keys.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        ContinueTokens {
            keys: vec![hmac::Key::new(hmac::HMAC_SHA256, &bytes)],
        }
    }
}

impl Default for ContinueTokens {
    fn default() -> Self {
        Self::ephemeral()
    }
}

/// The listing a token belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listing<'a> {
    /// The store prefix listed (kind and namespace).
    pub prefix: &'a str,
    /// The request's label selector, as sent.
    pub label_selector: &'a str,
    /// The request's field selector, as sent.
    pub field_selector: &'a str,
}

impl Listing<'_> {
    fn message(&self, revision: u64, key: &str) -> Vec<u8> {
        let mut m = Vec::new();
        for part in [
            self.prefix,
            self.label_selector,
            self.field_selector,
            &revision.to_string(),
            key,
        ] {
            m.extend_from_slice(&(part.len() as u64).to_be_bytes());
            m.extend_from_slice(part.as_bytes());
        }
        m
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ContinueTokens {
    /// The token resuming `listing` after `key` in the snapshot at `revision`.
    pub(super) fn issue(&self, listing: &Listing<'_>, revision: u64, key: &str) -> String {
        let tag = hmac::sign(&self.keys[0], &listing.message(revision, key));
        format!(
            "v2.{revision}.{}.{}",
            hex_encode(key.as_bytes()),
            hex_encode(tag.as_ref())
        )
    }

    /// The revision and key of `token`, if this cluster issued it for `listing`.
    pub(super) fn check(
        &self,
        token: &str,
        listing: &Listing<'_>,
    ) -> Result<(u64, String), Status> {
        let invalid = || {
            let shown: String = token.chars().take(80).collect();
            status(
                Reason::ContinueTokenInvalid,
                format!(
                    "continue_token {shown:?} is not one this cluster issued for this listing \
                     (same kind, namespace and selectors); list again without it"
                ),
            )
        };
        let rest = token.strip_prefix("v2.").ok_or_else(invalid)?;
        let mut parts = rest.split('.');
        let (Some(rev), Some(key), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let revision: u64 = rev.parse().map_err(|_| invalid())?;
        let key = String::from_utf8(hex_decode(key).ok_or_else(invalid)?).map_err(|_| invalid())?;
        let tag = hex_decode(tag).ok_or_else(invalid)?;
        let message = listing.message(revision, &key);
        if !self
            .keys
            .iter()
            .any(|k| hmac::verify(k, &message, &tag).is_ok())
        {
            return Err(invalid());
        }
        // Signed for this prefix, so this holds; checked anyway, as the store relies on it.
        if !key.starts_with(listing.prefix) {
            return Err(invalid());
        }
        Ok((revision, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(prefix: &str) -> Listing<'_> {
        Listing {
            prefix,
            label_selector: "",
            field_selector: "",
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_forgeries() {
        let tokens = ContinueTokens::ephemeral();
        let l = listing("/workloads/default/");
        let t = tokens.issue(&l, 42, "/workloads/default/web");
        assert_eq!(
            tokens.check(&t, &l).unwrap(),
            (42, "/workloads/default/web".to_string())
        );
        assert!(tokens.check(&t, &listing("/workloads/")).is_err());
        let selected = Listing {
            label_selector: "app=web",
            ..l
        };
        assert!(tokens.check(&t, &selected).is_err());
        // Another revision with the same tag.
        let forged = t.replacen("v2.42.", "v2.41.", 1);
        assert!(tokens.check(&forged, &l).is_err());
        // Another process's key.
        assert!(ContinueTokens::ephemeral().check(&t, &l).is_err());
        assert!(tokens.check("garbage", &l).is_err());
        assert!(tokens.check("v1.42.00", &l).is_err());
        assert!(tokens.check(&format!("{t}.00"), &l).is_err());
    }

    #[test]
    fn apiservers_sharing_a_key_file_accept_each_others_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = ContinueTokens::from_encryption_key(&EncryptionKey::load_or_create(&path).unwrap());
        let b = ContinueTokens::from_encryption_key(&EncryptionKey::load_or_create(&path).unwrap());
        let l = listing("/secrets/team-a/");
        let t = a.issue(&l, 7, "/secrets/team-a/db");
        assert!(b.check(&t, &l).is_ok());
        // After a rotation the old token still works until the old key is retired.
        let rotated =
            ContinueTokens::from_encryption_key(&EncryptionKey::rotate_file(&path).unwrap());
        assert!(rotated.check(&t, &l).is_ok());
        let retired = ContinueTokens::from_encryption_key(
            &EncryptionKey::retire_previous_file(&path).unwrap(),
        );
        assert!(retired.check(&t, &l).is_err());
    }
}
