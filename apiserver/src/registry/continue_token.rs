//! Continue tokens of paginated lists: the snapshot revision and the last key, hex-
//! encoded, checked against the listed prefix when they come back.

use hypermesh_api::reason::{Reason, status};
use tonic::Status;

pub(super) fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Continue tokens: `v1.<revision>.<hex of the last key examined>`.
pub(super) fn encode_continue(revision: u64, key: &str) -> String {
    format!("v1.{revision}.{}", hex_encode(key.as_bytes()))
}

pub(super) fn decode_continue(token: &str, prefix: &str) -> Result<(u64, String), Status> {
    let invalid = || {
        status(
            Reason::ContinueTokenInvalid,
            format!(
                "continue_token {token:?} is not one this server issued for this listing; list again without it"
            ),
        )
    };
    let rest = token.strip_prefix("v1.").ok_or_else(invalid)?;
    let (rev, key) = rest.split_once('.').ok_or_else(invalid)?;
    let revision = rev.parse().map_err(|_| invalid())?;
    let key = String::from_utf8(hex_decode(key).ok_or_else(invalid)?).map_err(|_| invalid())?;
    if !key.starts_with(prefix) {
        return Err(invalid());
    }
    Ok((revision, key))
}

#[cfg(test)]
mod tests {
    use super::{decode_continue, encode_continue};

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/workloads/default/web");
        assert_eq!(
            decode_continue(&t, "/workloads/").unwrap(),
            (42, "/workloads/default/web".to_string())
        );
        assert!(decode_continue(&t, "/nodes/").is_err());
        assert!(decode_continue("garbage", "/").is_err());
        assert!(decode_continue("v1.x.00", "/").is_err());
    }
}
