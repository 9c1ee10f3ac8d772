//! Property tests of Asset proof verification (`make fuzz` runs them with many more
//! cases): a proof made of arbitrary bytes, or a valid proof with any part changed
//! (a flipped bit, an inserted or removed byte, a field set to another value), is
//! refused with a reason, and the verifier never panics.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{AssetSpec, AssetType, PrivacyLevel, ProofChallenge};
use hypermesh_trust::identity::NodeIdentity;
use hypermesh_trust::proof::{
    ProofContext, ProofInput, ProofVerifier, SpaceCommitment, VerifierConfig, prove_asset_at,
};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;

const ASSET: &str = "disk";

/// One valid STORAGE proof, built once: FALCON key generation and the work are the
/// slow part, verification is cheap.
struct Valid {
    spec: AssetSpec,
    encoded: Vec<u8>,
    challenge: ProofChallenge,
    public_key: Vec<u8>,
    other_key: Vec<u8>,
    at: SystemTime,
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let id = NodeIdentity::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        let commitment = SpaceCommitment::open_or_create(&dir.path().join("commitment"), 64 * 1024)
            .expect("commitment");
        let at = SystemTime::now();
        let challenge = ProofChallenge {
            nonce: (0u8..32).collect(),
            node_name: "n1".into(),
            asset_name: ASSET.into(),
            expires: Some(hypermesh_api::time::from_system_time(
                at + Duration::from_secs(60),
            )),
            work_difficulty: 8,
            space_samples: 4,
        };
        let mut spec = AssetSpec {
            node_name: "n1".into(),
            r#type: AssetType::Storage as i32,
            capacity: [("storage".to_string(), "64Ki".to_string())].into(),
            privacy: PrivacyLevel::Untrusted as i32,
            ..Default::default()
        };
        let proof = prove_asset_at(
            &id,
            ProofInput {
                asset_name: ASSET,
                spec: &spec,
                location: "/dev/sda",
                committed_bytes: 0,
                challenge: &challenge,
                stake_record: "",
                commitment: Some(&commitment),
            },
            at,
        )
        .expect("prove");
        spec.proof = Some(proof);
        let valid = Valid {
            encoded: spec.encode_to_vec(),
            spec,
            challenge,
            public_key: id.public_key().to_vec(),
            other_key: NodeIdentity::generate().public_key().to_vec(),
            at,
        };
        verify(&valid.spec, &valid).expect("the unmodified proof verifies");
        valid
    })
}

/// Verifies `spec` as [`ASSET`] with a fresh verifier and the valid proof's context.
fn verify(spec: &AssetSpec, v: &Valid) -> Result<(), String> {
    verify_with(ASSET, spec, &v.public_key, &v.challenge, v.at)
}

fn verify_with(
    asset: &str,
    spec: &AssetSpec,
    public_key: &[u8],
    challenge: &ProofChallenge,
    now: SystemTime,
) -> Result<(), String> {
    ProofVerifier::new(VerifierConfig::default())
        .verify(
            asset,
            spec,
            &ProofContext {
                public_key,
                challenge: Some(challenge),
                last_accepted: None,
                stake: None,
                now,
            },
        )
        .map(|_| ())
        .map_err(|e| {
            let message = e.to_string();
            assert!(!message.is_empty() && !e.reason().is_empty());
            format!("{}: {message}", e.reason())
        })
}

/// Whether `mutated` differs from the valid spec in a way that matters. The one part
/// the verifier may ignore is `work.digest`: an optional echo of the record digest,
/// which the verifier recomputes itself and only compares when present.
fn differs(mutated: &AssetSpec, valid: &AssetSpec) -> bool {
    let mut m = mutated.clone();
    if let (Some(work), Some(valid_work)) = (
        m.proof.as_mut().and_then(|p| p.work.as_mut()),
        valid.proof.as_ref().and_then(|p| p.work.as_ref()),
    ) && work.digest.is_empty()
    {
        work.digest = valid_work.digest.clone();
    }
    m != *valid
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Remove),
        any::<Index>().prop_map(ByteEdit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    if bytes.is_empty() {
        return;
    }
    match edit {
        ByteEdit::Flip(i, bit) => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        ByteEdit::Set(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        ByteEdit::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.insert(at, *b);
        }
        ByteEdit::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        ByteEdit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

/// Sets one field of the proof or the spec to `value`.
fn set_field(spec: &mut AssetSpec, field: u8, value: u64, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let Some(proof) = spec.proof.as_mut() else {
        return;
    };
    let (Some(stake), Some(time), Some(space), Some(work)) = (
        proof.stake.as_mut(),
        proof.time.as_mut(),
        proof.space.as_mut(),
        proof.work.as_mut(),
    ) else {
        return;
    };
    match field % 20 {
        0 => space.committed_bytes = value,
        1 => space.location = text,
        2 => space.node_id = text,
        3 => space.merkle_root = bytes.to_vec(),
        4 => {
            if let Some(o) = space.openings.get_mut(value as usize % 4) {
                *o = Default::default();
            }
        }
        5 => space.openings.truncate(value as usize % 4),
        6 => space.openings.reverse(),
        7 => work.nonce = value,
        8 => work.difficulty = value as u32,
        9 => work.challenge = bytes.to_vec(),
        10 => work.digest = bytes.to_vec(),
        11 => stake.signature = bytes.to_vec(),
        12 => stake.stake_record = text,
        13 => stake.node_id = text,
        14 => time.nonce = bytes.to_vec(),
        15 => {
            if let Some(ts) = time.timestamp.as_mut() {
                ts.seconds = ts.seconds.wrapping_add(value as i64 % 1000 - 500);
            }
        }
        16 => {
            spec.capacity.insert("storage".into(), text);
        }
        17 => spec.node_name = text,
        18 => spec.privacy = value as i32,
        _ => spec.r#type = value as i32,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_as_a_proof_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let v = valid();
        if let Ok(spec) = AssetSpec::decode(bytes.as_slice()) {
            prop_assert!(verify(&spec, v).is_err());
        }
    }

    #[test]
    fn a_valid_proof_with_edited_bytes_is_refused(edits in proptest::collection::vec(byte_edit(), 1..4)) {
        let v = valid();
        let mut bytes = v.encoded.clone();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        let Ok(spec) = AssetSpec::decode(bytes.as_slice()) else {
            return Ok(());
        };
        prop_assume!(differs(&spec, &v.spec));
        let outcome = verify(&spec, v);
        prop_assert!(outcome.is_err(), "accepted after {edits:?}");
    }

    #[test]
    fn a_valid_proof_with_a_changed_field_is_refused(
        field in any::<u8>(),
        value in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let v = valid();
        let mut spec = v.spec.clone();
        set_field(&mut spec, field, value, &bytes);
        prop_assume!(differs(&spec, &v.spec));
        let outcome = verify(&spec, v);
        prop_assert!(outcome.is_err(), "accepted with field {} set", field % 20);
    }

    #[test]
    fn a_valid_proof_in_another_context_is_refused(
        which in 0u8..5,
        key in proptest::collection::vec(any::<u8>(), 0..2000),
        name in "\\PC{0,20}",
        shift in 61u64..100_000,
    ) {
        let v = valid();
        let mut challenge = v.challenge.clone();
        let outcome = match which {
            0 => verify_with(ASSET, &v.spec, &key, &v.challenge, v.at),
            1 => verify_with(ASSET, &v.spec, &v.other_key, &v.challenge, v.at),
            2 => {
                prop_assume!(name != ASSET);
                verify_with(&name, &v.spec, &v.public_key, &v.challenge, v.at)
            }
            3 => {
                challenge.work_difficulty += 1 + (shift % 30) as u32;
                verify_with(ASSET, &v.spec, &v.public_key, &challenge, v.at)
            }
            _ => verify_with(ASSET, &v.spec, &v.public_key, &v.challenge, v.at + Duration::from_secs(shift)),
        };
        prop_assert!(outcome.is_err(), "accepted in context {which}");
    }
}
