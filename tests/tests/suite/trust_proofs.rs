//! Asset proofs at admission: a valid proof answering a fresh challenge is accepted; a
//! forged signature, a tampered capacity, a reused work answer, a storage claim larger
//! than its commitment, over-claimed space and missing work are each rejected with
//! their own reason, and the sender is marked Suspect (condition, NoSchedule taint,
//! Event) — visible in `hmctl describe node` — until `hmctl node trust` clears it.
//! Assets of keyless nodes are refused; without stake only UNTRUSTED is offered until
//! `hmctl node stake`. An admin may change a node's key (a rekey).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{
    Asset, AssetSpec, AssetType, DeleteRequest, Event, ListRequest, Node, NodeSpec, ObjectMeta,
    PrivacyLevel, ProofChallengeRequest, TaintEffect,
};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::InProcessApiServer;
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::proof::{ProofInput, SpaceCommitment, prove_asset_at};

const SUSPECT_TAINT: &str = "hypermesh.io/suspect";

struct Cluster {
    server: InProcessApiServer,
    identity: NodeIdentity,
    nodes: Api<Node>,
    assets: Api<Asset>,
    /// Storage commitment files, one per location.
    space: tempfile::TempDir,
}

impl Cluster {
    /// A server with node `n1` registered with a fresh identity.
    async fn start() -> Self {
        let server = InProcessApiServer::start().await.unwrap();
        let identity = NodeIdentity::generate();
        let nodes = server.api::<Node>();
        nodes
            .create(&Node {
                metadata: Some(ObjectMeta {
                    name: "n1".into(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    identity: Some(identity.to_node_identity()),
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .unwrap();
        let assets = server.api::<Asset>();
        Cluster {
            server,
            identity,
            nodes,
            assets,
            space: tempfile::tempdir().unwrap(),
        }
    }

    async fn node(&self) -> Node {
        self.nodes.get("", "n1").await.unwrap()
    }

    /// (status, reason) of the Suspect condition, if any.
    async fn suspect(&self) -> Option<(String, String)> {
        let node = self.node().await;
        node.status?
            .conditions
            .into_iter()
            .find(|c| c.r#type == "Suspect")
            .map(|c| (c.status, c.reason))
    }

    async fn tainted(&self) -> bool {
        self.node()
            .await
            .spec
            .unwrap()
            .taints
            .iter()
            .any(|t| t.key == SUSPECT_TAINT && t.effect == TaintEffect::NoSchedule as i32)
    }

    /// Waits for the Suspect reaction (a controller acting on the admission finding's
    /// Event), then checks condition, taint and Event.
    async fn assert_suspect(&self, reason: Reason) {
        let want = Some(("True".to_string(), reason.as_str().to_string()));
        let seen = hypermesh_tests::wait_for(hypermesh_tests::DEFAULT_TIMEOUT, || async {
            let now = self.suspect().await;
            (now == want && self.tainted().await).then_some(())
        })
        .await;
        assert!(
            seen.is_ok(),
            "node never became Suspect with {reason}: {:?}",
            self.suspect().await
        );
        assert!(
            self.tainted().await,
            "suspect node carries the NoSchedule taint"
        );
        let (events, _, _) = self
            .server
            .api::<Event>()
            .list(ListRequest {
                field_selector: "spec.involvedObject.name=n1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.spec.as_ref().unwrap().reason == reason.as_str()),
            "an Event with reason {reason} about n1: {events:?}"
        );
    }

    async fn hmctl(&self, args: &[&str]) -> (bool, String) {
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(hypermesh_tests::bin_path("hmctl"))
            .args(["--server", self.server.url()])
            .args(args)
            .env("HOME", home.path())
            .env_remove("HYPERMESH_SERVER")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn disk_spec(capacity: &str) -> AssetSpec {
    AssetSpec {
        node_name: "n1".into(),
        r#type: AssetType::Storage as i32,
        capacity: [("storage".to_string(), capacity.to_string())].into(),
        attributes: [("path".to_string(), "/dev/sda".to_string())].into(),
        privacy: PrivacyLevel::Untrusted as i32,
        ..Default::default()
    }
}

fn asset(name: &str, spec: AssetSpec) -> Asset {
    Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    }
}

/// How a test proof is made.
struct Make<'a> {
    identity: &'a NodeIdentity,
    name: &'a str,
    location: &'a str,
    spec: AssetSpec,
    commit: u64,
    stake: &'a str,
    at: SystemTime,
}

impl Cluster {
    /// Asset `name` on `location` (a 64 KiB commitment claiming 64Ki), proved now.
    async fn disk(&self, identity: &NodeIdentity, name: &str, location: &str) -> Asset {
        self.make(Make {
            identity,
            name,
            location,
            spec: disk_spec("64Ki"),
            commit: 64 * 1024,
            stake: "",
            at: SystemTime::now(),
        })
        .await
    }

    async fn make(&self, m: Make<'_>) -> Asset {
        let challenge = self
            .assets
            .challenge(ProofChallengeRequest {
                asset_name: m.name.into(),
                node_name: m.spec.node_name.clone(),
            })
            .await
            .unwrap();
        let file = self
            .space
            .path()
            .join(blake3::hash(m.location.as_bytes()).to_hex().as_str());
        let commitment = SpaceCommitment::open_or_create(&file, m.commit).unwrap();
        let mut spec = m.spec;
        spec.proof = Some(
            prove_asset_at(
                m.identity,
                ProofInput {
                    asset_name: m.name,
                    spec: &spec,
                    location: m.location,
                    committed_bytes: m.commit,
                    challenge: &challenge,
                    stake_record: m.stake,
                    commitment: (spec.r#type == AssetType::Storage as i32).then_some(&commitment),
                },
                m.at,
            )
            .unwrap(),
        );
        asset(m.name, spec)
    }
}

async fn rejected(cluster: &Cluster, asset: &Asset) -> (Reason, String) {
    let err = cluster.assets.create(asset).await.unwrap_err();
    (reason_of(&err).unwrap(), err.message().to_string())
}

#[tokio::test]
async fn a_valid_proof_is_accepted() {
    let c = Cluster::start().await;
    let a = c.disk(&c.identity, "n1-sda", "/dev/sda").await;
    let created = c.assets.create(&a).await.unwrap();
    assert_eq!(created.spec, a.spec);
    // Another device of the same node, and a label-only update (no new proof needed).
    c.assets
        .create(&c.disk(&c.identity, "n1-sdb", "/dev/sdb").await)
        .await
        .unwrap();
    let mut relabeled = created.clone();
    relabeled
        .meta_mut()
        .labels
        .insert("tier".into(), "ssd".into());
    c.assets.update(&relabeled).await.unwrap();
    // Re-proving with a fresh proof (an agent's periodic update) is accepted too.
    let mut again = c.assets.get("", "n1-sda").await.unwrap();
    again.spec = c.disk(&c.identity, "n1-sda", "/dev/sda").await.spec;
    c.assets.update(&again).await.unwrap();
    assert_eq!(c.suspect().await, None);
    assert!(!c.tainted().await);
}

#[tokio::test]
async fn a_forged_signature_is_rejected_and_the_node_marked_suspect_until_trusted() {
    let c = Cluster::start().await;
    let mut a = c.disk(&c.identity, "n1-sda", "/dev/sda").await;
    let stake = a
        .spec
        .as_mut()
        .unwrap()
        .proof
        .as_mut()
        .unwrap()
        .stake
        .as_mut()
        .unwrap();
    let last = stake.signature.len() - 1;
    stake.signature[last] ^= 0x55;
    stake.signature[10] ^= 0x55;
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofForged, "{message}");
    assert!(message.contains("stake"), "{message}");
    c.assert_suspect(Reason::ProofForged).await;

    // `hmctl describe node` shows why.
    let (ok, text) = c.hmctl(&["describe", "node", "n1"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("Suspect"), "{text}");
    assert!(text.contains("ProofForged"), "{text}");
    assert!(text.contains(SUSPECT_TAINT), "{text}");

    // The apiserver recorded the proof rejection and the Suspect mark as Events;
    // `hmctl get events --for node/n1` lists both (from every namespace).
    let listed = hypermesh_tests::wait_for(hypermesh_tests::DEFAULT_TIMEOUT, || async {
        let (ok, text) = c.hmctl(&["get", "events", "--for", "node/n1"]).await;
        (ok && text.contains("NodeSuspect")).then_some(text)
    })
    .await
    .expect("a NodeSuspect Event about n1");
    assert!(listed.contains("ProofForged"), "{listed}");
    assert!(
        listed.contains("node marked Suspect after ProofForged"),
        "{listed}"
    );

    // The agent's own writes do not clear the mark.
    let mut node = c.node().await;
    node.status
        .as_mut()
        .unwrap()
        .conditions
        .retain(|cond| cond.r#type != "Suspect");
    c.nodes.update_status(&node).await.unwrap();
    let mut node = c.node().await;
    node.spec.as_mut().unwrap().taints.clear();
    c.nodes.update(&node).await.unwrap();
    c.assert_suspect(Reason::ProofForged).await;

    // An admin trusts the node again.
    let (ok, text) = c.hmctl(&["node", "trust", "n1"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("node/n1 trusted"), "{text}");
    assert_eq!(
        c.suspect().await,
        Some(("False".to_string(), "TrustedByAdmin".to_string()))
    );
    assert!(!c.tainted().await);
    let (ok, text) = c.hmctl(&["node", "trust", "n1"]).await;
    assert!(ok && text.contains("was not suspect"), "{text}");
    // And a valid proof goes through.
    c.assets
        .create(&c.disk(&c.identity, "n1-sda", "/dev/sda").await)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tampered_capacity_is_rejected() {
    let c = Cluster::start().await;
    let mut a = c.disk(&c.identity, "n1-sda", "/dev/sda").await;
    a.spec
        .as_mut()
        .unwrap()
        .capacity
        .insert("storage".into(), "32Ki".into());
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofSpaceMismatch, "{message}");
    c.assert_suspect(Reason::ProofSpaceMismatch).await;
}

#[tokio::test]
async fn a_storage_claim_larger_than_its_commitment_is_rejected() {
    let c = Cluster::start().await;
    // Claims 1Ti while keeping (and answering from) 64 KiB.
    let a = c
        .make(Make {
            identity: &c.identity,
            name: "n1-sda",
            location: "/dev/sda",
            spec: disk_spec("1Ti"),
            commit: 64 * 1024,
            stake: "",
            at: SystemTime::now(),
        })
        .await;
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofOverclaimed, "{message}");
    assert!(message.contains("commits only 65536"), "{message}");
    c.assert_suspect(Reason::ProofOverclaimed).await;
}

#[tokio::test]
async fn a_stale_timestamp_is_rejected() {
    let c = Cluster::start().await;
    let a = c
        .make(Make {
            identity: &c.identity,
            name: "n1-sda",
            location: "/dev/sda",
            spec: disk_spec("64Ki"),
            commit: 64 * 1024,
            stake: "",
            at: SystemTime::now() - Duration::from_secs(3600),
        })
        .await;
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofStale, "{message}");
    // A clock out of the window is not evidence of lying.
    assert_eq!(c.suspect().await, None);
}

#[tokio::test]
async fn a_reused_work_answer_is_rejected() {
    let c = Cluster::start().await;
    let a = c.disk(&c.identity, "n1-sda", "/dev/sda").await;
    c.assets.create(&a).await.unwrap();
    c.assets
        .delete(DeleteRequest {
            name: "n1-sda".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The same record, work and signature again: its challenge is spent.
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofChallengeInvalid, "{message}");
    // A fresh challenge for the asset does not revive the old answer either.
    c.assets
        .challenge(ProofChallengeRequest {
            asset_name: "n1-sda".into(),
            node_name: "n1".into(),
        })
        .await
        .unwrap();
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofChallengeInvalid, "{message}");
}

#[tokio::test]
async fn over_claimed_space_is_rejected() {
    let c = Cluster::start().await;
    c.assets
        .create(&c.disk(&c.identity, "n1-sda", "/dev/sda").await)
        .await
        .unwrap();
    // The same device again under another name: the node's claims on /dev/sda would
    // be twice what it proved.
    let again = c.disk(&c.identity, "n1-sda-again", "/dev/sda").await;
    let (reason, message) = rejected(&c, &again).await;
    assert_eq!(reason, Reason::ProofOverclaimed, "{message}");
    c.assert_suspect(Reason::ProofOverclaimed).await;
}

#[tokio::test]
async fn missing_work_is_rejected() {
    let c = Cluster::start().await;
    let mut a = c.disk(&c.identity, "n1-sda", "/dev/sda").await;
    a.spec.as_mut().unwrap().proof.as_mut().unwrap().work = None;
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::ProofWorkMissing, "{message}");
    c.assert_suspect(Reason::ProofWorkMissing).await;
}

#[tokio::test]
async fn an_asset_without_proof_is_rejected_without_blaming_the_node() {
    let c = Cluster::start().await;
    let (reason, message) = rejected(&c, &asset("n1-sda", disk_spec("1Ti"))).await;
    assert_eq!(reason, Reason::ProofMissing, "{message}");
    assert_eq!(c.suspect().await, None);
    // An Asset for a node that does not exist is refused too.
    let mut spec = disk_spec("1Ti");
    spec.node_name = "ghost".into();
    let (reason, _) = rejected(&c, &asset("ghost-sda", spec)).await;
    assert_eq!(reason, Reason::NodeNotFound);
}

#[tokio::test]
async fn assets_of_a_keyless_node_are_refused() {
    let c = Cluster::start().await;
    c.nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "keyless".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            status: None,
        })
        .await
        .unwrap();
    let mut spec = disk_spec("1Ti");
    spec.node_name = "keyless".into();
    let (reason, message) = rejected(&c, &asset("keyless-sda", spec)).await;
    assert_eq!(reason, Reason::NodeIdentityMissing, "{message}");
    // Not even with a proof by some key.
    let mut spec = disk_spec("64Ki");
    spec.node_name = "keyless".into();
    let a = c
        .make(Make {
            identity: &NodeIdentity::generate(),
            name: "keyless-sdb",
            location: "/dev/sdb",
            spec,
            commit: 64 * 1024,
            stake: "",
            at: SystemTime::now(),
        })
        .await;
    let (reason, message) = rejected(&c, &a).await;
    assert_eq!(reason, Reason::NodeIdentityMissing, "{message}");
}

#[tokio::test]
async fn without_stake_only_untrusted_is_offered_until_an_admin_stakes_the_node() {
    let c = Cluster::start().await;
    let mut public = disk_spec("64Ki");
    public.privacy = PrivacyLevel::PublicNetwork as i32;
    let make = |spec: AssetSpec, stake: &'static str| Make {
        identity: &c.identity,
        name: "n1-sda",
        location: "/dev/sda",
        spec,
        commit: 64 * 1024,
        stake,
        at: SystemTime::now(),
    };
    let (reason, message) = rejected(&c, &c.make(make(public.clone(), "")).await).await;
    assert_eq!(reason, Reason::ProofUnstaked, "{message}");
    // Citing a record the node does not hold is refused.
    let (reason, message) = rejected(&c, &c.make(make(public.clone(), "made-up")).await).await;
    assert_eq!(reason, Reason::ProofStakeInvalid, "{message}");
    // The node cannot stake itself: only an admin's write sets spec.stake. Here the
    // admin issues one with hmctl; the proof cites it.
    let (ok, text) = c.hmctl(&["node", "stake", "n1", "--amount", "100"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("node/n1 staked"), "{text}");
    let node = c.node().await;
    let stake = node.spec.as_ref().unwrap().stake.clone().unwrap();
    assert_eq!(stake.amount, 100);
    let record: &'static str = Box::leak(stake.record_id.into_boxed_str());
    c.assets
        .create(&c.make(make(public, record)).await)
        .await
        .unwrap();
    assert_eq!(c.suspect().await, None);
}

/// The key is fixed at join: an admin may change it (a rekey) without making the node
/// Suspect; the node itself may not (`trust_boundary_*` tests that over mTLS).
#[tokio::test]
async fn an_admin_rekey_changes_the_node_key() {
    let c = Cluster::start().await;
    // A NodeId that is not the hash of the key is refused outright.
    let mut node = c.node().await;
    node.spec
        .as_mut()
        .unwrap()
        .identity
        .as_mut()
        .unwrap()
        .node_id = "00".repeat(32);
    let err = c.nodes.update(&node).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::NodeIdentityInvalid));

    let new_identity = NodeIdentity::generate();
    let mut node = c.node().await;
    node.spec.as_mut().unwrap().identity = Some(new_identity.to_node_identity());
    c.nodes.update(&node).await.unwrap();
    assert_eq!(c.suspect().await, None);
    assert!(!c.tainted().await);
    // Proofs by the old key no longer verify; the new key's do.
    let (reason, _) = rejected(&c, &c.disk(&c.identity, "n1-sda", "/dev/sda").await).await;
    assert_eq!(reason, Reason::ProofWrongNode);
    c.assets
        .create(&c.disk(&new_identity, "n1-sdb", "/dev/sdb").await)
        .await
        .unwrap();
}
