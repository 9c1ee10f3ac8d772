//! Unit tests of building and checking proofs, one failing check at a time.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{AssetSpec, AssetType, NodeStake, PrivacyLevel, ProofChallenge};

use super::*;
use crate::identity::NodeIdentity;

fn spec(kind: AssetType, capacity: &str) -> AssetSpec {
    let key = if kind == AssetType::Storage {
        "storage"
    } else {
        "memory"
    };
    AssetSpec {
        node_name: "n1".into(),
        r#type: kind as i32,
        capacity: [(key.to_string(), capacity.to_string())].into(),
        privacy: PrivacyLevel::Untrusted as i32,
        ..Default::default()
    }
}

fn challenge(asset: &str) -> ProofChallenge {
    ProofChallenge {
        nonce: rand::random::<[u8; 32]>().to_vec(),
        node_name: "n1".into(),
        asset_name: asset.into(),
        expires: Some(hypermesh_api::time::from_system_time(
            SystemTime::now() + Duration::from_secs(60),
        )),
        work_difficulty: 8,
        space_samples: 4,
    }
}

struct Fixture {
    id: NodeIdentity,
    v: ProofVerifier,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            id: NodeIdentity::generate(),
            v: ProofVerifier::new(VerifierConfig::default()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn commitment(&self, bytes: u64) -> SpaceCommitment {
        SpaceCommitment::open_or_create(&self.dir.path().join(format!("c{bytes}")), bytes).unwrap()
    }

    fn prove(
        &self,
        name: &str,
        s: &AssetSpec,
        c: &ProofChallenge,
        commitment: Option<&SpaceCommitment>,
        committed: u64,
    ) -> AssetSpec {
        let mut s = s.clone();
        s.proof = Some(
            prove_asset(
                &self.id,
                ProofInput {
                    asset_name: name,
                    spec: &s,
                    location: "/dev/sda",
                    committed_bytes: committed,
                    challenge: c,
                    stake_record: "",
                    commitment,
                },
            )
            .unwrap(),
        );
        s
    }

    fn verify(
        &self,
        name: &str,
        s: &AssetSpec,
        c: &ProofChallenge,
    ) -> Result<Verified, ProofError> {
        self.v.verify(
            name,
            s,
            &ProofContext {
                public_key: self.id.public_key(),
                challenge: Some(c),
                last_accepted: None,
                stake: None,
                now: SystemTime::now(),
            },
        )
    }
}

#[test]
fn a_storage_proof_verifies_and_cannot_overclaim_its_commitment() {
    let f = Fixture::new();
    let commitment = f.commitment(64 * 1024);
    let c = challenge("disk");
    let s = f.prove(
        "disk",
        &spec(AssetType::Storage, "64Ki"),
        &c,
        Some(&commitment),
        0,
    );
    let ok = f.verify("disk", &s, &c).unwrap();
    assert_eq!(ok.committed_bytes, 64 * 1024);
    // Claiming more than the commitment holds.
    let c = challenge("big");
    let s = f.prove(
        "big",
        &spec(AssetType::Storage, "1Mi"),
        &c,
        Some(&commitment),
        0,
    );
    let err = f.verify("big", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "SpaceOverclaimed", "{err}");
}

#[test]
fn openings_must_verify_against_the_root() {
    let f = Fixture::new();
    let commitment = f.commitment(33 * 1024); // odd leaf count: promoted nodes
    let c = challenge("disk");
    let mut s = f.prove(
        "disk",
        &spec(AssetType::Storage, "33Ki"),
        &c,
        Some(&commitment),
        0,
    );
    let space = s.proof.as_mut().unwrap().space.as_mut().unwrap();
    space.openings[0].leaf[7] ^= 1;
    let err = f.verify("disk", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "SpaceInvalid", "{err}");
    // Openings for another challenge's samples do not answer this one.
    let other = challenge("disk");
    let s = f.prove(
        "disk",
        &spec(AssetType::Storage, "33Ki"),
        &other,
        Some(&commitment),
        0,
    );
    let err = f.verify("disk", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "ChallengeInvalid", "{err}");
}

#[test]
fn a_work_answer_for_one_challenge_does_not_answer_another() {
    let f = Fixture::new();
    let c1 = challenge("m");
    let s = f.prove("m", &spec(AssetType::Memory, "1Gi"), &c1, None, 1 << 30);
    // Rewrite the cited challenge: the digest changes, so the work (and signature) fail.
    let c2 = challenge("m");
    let mut replay = s.clone();
    replay
        .proof
        .as_mut()
        .unwrap()
        .work
        .as_mut()
        .unwrap()
        .challenge = c2.nonce.clone();
    replay
        .proof
        .as_mut()
        .unwrap()
        .work
        .as_mut()
        .unwrap()
        .digest
        .clear();
    let err = f.verify("m", &replay, &c2).unwrap_err();
    assert!(
        matches!(err.reason(), "WorkInsufficient" | "StakeForged"),
        "{err}"
    );
    // A difficulty other than the challenge's is refused.
    let mut easy = c1.clone();
    easy.work_difficulty = 20;
    let err = f.verify("m", &s, &easy).unwrap_err();
    assert_eq!(err.reason(), "WorkInsufficient", "{err}");
    f.verify("m", &s, &c1).unwrap();
}

#[test]
fn expired_or_foreign_challenges_are_refused() {
    let f = Fixture::new();
    let mut c = challenge("m");
    let s = f.prove("m", &spec(AssetType::Memory, "1Gi"), &c, None, 1 << 30);
    let err = f.verify("other", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "ChallengeInvalid", "{err}");
    c.expires = Some(hypermesh_api::time::from_system_time(
        SystemTime::now() - Duration::from_secs(1),
    ));
    let err = f.verify("m", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "ChallengeInvalid", "{err}");
}

#[test]
fn a_signature_by_another_key_is_forged_and_tampering_breaks_the_binding() {
    let f = Fixture::new();
    let c = challenge("m");
    let mut s = f.prove("m", &spec(AssetType::Memory, "1Gi"), &c, None, 1 << 30);
    s.capacity.insert("memory".into(), "2Gi".into());
    let err = f.verify("m", &s, &c).unwrap_err();
    assert!(
        matches!(err.reason(), "SpaceMismatch" | "SpaceOverclaimed"),
        "{err}"
    );
    let thief = Fixture::new();
    let s = thief.prove("m", &spec(AssetType::Memory, "1Gi"), &c, None, 1 << 30);
    let err = f.verify("m", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "StakeWrongNode", "{err}");
    let mut s = f.prove("m", &spec(AssetType::Memory, "1Gi"), &c, None, 1 << 30);
    s.proof.as_mut().unwrap().stake.as_mut().unwrap().signature = thief.id.sign(b"x");
    let err = f.verify("m", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "StakeForged", "{err}");
}

#[test]
fn time_must_be_fresh_and_after_the_last_accepted_proof() {
    let f = Fixture::new();
    let c = challenge("m");
    let s = f.prove("m", &spec(AssetType::Memory, "1Gi"), &c, None, 1 << 30);
    let ok = f.verify("m", &s, &c).unwrap();
    let err =
        f.v.verify(
            "m",
            &s,
            &ProofContext {
                public_key: f.id.public_key(),
                challenge: Some(&c),
                last_accepted: Some(ok.timestamp),
                stake: None,
                now: SystemTime::now(),
            },
        )
        .unwrap_err();
    assert_eq!(err.reason(), "TimeReplayed", "{err}");
    let err =
        f.v.verify(
            "m",
            &s,
            &ProofContext {
                public_key: f.id.public_key(),
                challenge: Some(&c),
                last_accepted: None,
                stake: None,
                now: SystemTime::now() + Duration::from_secs(600),
            },
        )
        .unwrap_err();
    assert_eq!(err.reason(), "ChallengeInvalid", "{err}"); // expired first
}

#[test]
fn stake_limits_privacy_and_must_be_the_nodes_record() {
    let f = Fixture::new();
    let c = challenge("m");
    let mut public = spec(AssetType::Memory, "1Gi");
    public.privacy = PrivacyLevel::PublicNetwork as i32;
    let s = f.prove("m", &public, &c, None, 1 << 30);
    let err = f.verify("m", &s, &c).unwrap_err();
    assert_eq!(err.reason(), "Unstaked", "{err}");
    let held = NodeStake {
        amount: 10,
        record_id: "r1".into(),
        issued: None,
    };
    let mut cited = public.clone();
    cited.proof = Some(
        prove_asset(
            &f.id,
            ProofInput {
                asset_name: "m",
                spec: &public,
                location: "/dev/sda",
                committed_bytes: 1 << 30,
                challenge: &c,
                stake_record: "r0",
                commitment: None,
            },
        )
        .unwrap(),
    );
    let ctx = |stake| ProofContext {
        public_key: f.id.public_key(),
        challenge: Some(&c),
        last_accepted: None,
        stake,
        now: SystemTime::now(),
    };
    let err = f.v.verify("m", &cited, &ctx(Some(&held))).unwrap_err();
    assert_eq!(err.reason(), "StakeInvalid", "{err}");
    let good = NodeStake {
        record_id: "r0".into(),
        ..held
    };
    f.v.verify("m", &cited, &ctx(Some(&good))).unwrap();
}

#[test]
fn a_location_cannot_be_claimed_twice() {
    let f = Fixture::new();
    let (ca, cb) = (challenge("a"), challenge("b"));
    let a = f.prove("a", &spec(AssetType::Memory, "1000"), &ca, None, 1000);
    f.verify("a", &a, &ca).unwrap();
    let b = f.prove("b", &spec(AssetType::Memory, "1000"), &cb, None, 1000);
    let err = f.verify("b", &b, &cb).unwrap_err();
    assert_eq!(err.reason(), "SpaceOverclaimed", "{err}");
    f.v.forget(f.id.node_id(), "a");
    f.verify("b", &b, &cb).unwrap();
    let fresh = ProofVerifier::new(VerifierConfig::default());
    fresh.seed(f.id.node_id(), [("b", &b)]);
    assert!(fresh.knows_node(f.id.node_id()));
}

#[test]
fn a_commitment_reopens_with_the_same_root() {
    let f = Fixture::new();
    let path = f.dir.path().join("space");
    let a = SpaceCommitment::open_or_create(&path, 8 * 1024).unwrap();
    let b = SpaceCommitment::open_or_create(&path, 8 * 1024).unwrap();
    assert_eq!(a.root(), b.root());
    let c = SpaceCommitment::open_or_create(&path, 16 * 1024).unwrap();
    assert_ne!(a.root(), c.root());
    assert!(SpaceCommitment::open_or_create(&path, 1000).is_err());
}
