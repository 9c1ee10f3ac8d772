//! Time: the record's timestamp is within the skew window of the verifier's clock and
//! strictly after the node's last accepted proof. The last accepted time is the
//! caller's to keep (the apiserver persists it in the store), so a record replayed
//! after a restart, or to another apiserver, is refused like one replayed at once.

use std::time::{Duration, SystemTime};

use hypermesh_api::v1::TimeProof;

use super::{MAX_NONCE_BYTES, ProofError};

fn rfc3339(t: SystemTime) -> String {
    hypermesh_api::time::rfc3339(t, true)
}

/// Checks the time part; returns the record's timestamp.
pub fn check(
    time: &TimeProof,
    now: SystemTime,
    skew: Duration,
    last_accepted: Option<SystemTime>,
) -> Result<SystemTime, ProofError> {
    let Some(ts) = time.timestamp.as_ref() else {
        return Err(ProofError::ProofMalformed(
            "time.timestamp is missing".into(),
        ));
    };
    if !hypermesh_api::time::is_representable(ts) {
        return Err(ProofError::ProofMalformed(
            "time.timestamp is out of range".into(),
        ));
    }
    if time.nonce.is_empty() || time.nonce.len() > MAX_NONCE_BYTES {
        return Err(ProofError::ProofMalformed(format!(
            "time.nonce must hold 1 to {MAX_NONCE_BYTES} bytes"
        )));
    }
    let at = hypermesh_api::time::to_system_time(ts);
    let offset = match now.duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if offset > skew {
        return Err(ProofError::TimeStale {
            offset_secs: offset.as_secs(),
            skew_secs: skew.as_secs(),
        });
    }
    if let Some(last) = last_accepted
        && at <= last
    {
        return Err(ProofError::TimeReplayed {
            at: rfc3339(at),
            last: rfc3339(last),
        });
    }
    Ok(at)
}
