//! `hm-bench trust`: FALCON-1024 keygen/sign/verify and Asset proof build/verify per
//! second in this process, then Asset registrations/s end to end through a real
//! `hm-apiserver` (a Node with an identity, N storage Assets each answering a fresh
//! challenge with work, 64 KiB space commitment openings and a signature, C concurrent
//! clients). Registrations without proofs are refused now (no proof, no Asset); their
//! earlier figure is the baseline in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::{
    Asset, AssetSpec, AssetType, Node, NodeSpec, ObjectMeta, PrivacyLevel, ProofChallenge,
};
use hypermesh_trust::proof::{
    ProofContext, ProofInput, ProofVerifier, SpaceCommitment, VerifierConfig, prove_asset,
};
use hypermesh_trust::{NodeIdentity, verify_signature};
use tokio::time::Instant;

use crate::servers;
use crate::stats::{PhaseStats, format_count, format_duration};

/// Arguments of `hm-bench trust`.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// FALCON-1024 key pairs to generate.
    #[arg(long, default_value_t = 50)]
    pub keygens: u32,
    /// Signatures to make (and verify).
    #[arg(long, default_value_t = 2_000)]
    pub signatures: u32,
    /// Proofs to build and verify in process.
    #[arg(long, default_value_t = 500)]
    pub proofs: u32,
    /// Work difficulty of the in-process proofs (leading zero bits; the apiserver's
    /// default for the end-to-end phase is 14).
    #[arg(long, default_value_t = 14)]
    pub difficulty: u32,
    /// Leaves of the space commitment each proof opens (in process).
    #[arg(long, default_value_t = 8)]
    pub samples: u32,
    /// Assets to register through the apiserver (each phase).
    #[arg(long, default_value_t = 2_000)]
    pub assets: u32,
    /// Concurrent registering clients, each with its own connection. All register for
    /// one node, whose time proofs must each be later than the last one accepted, so
    /// more than 1 makes racing proofs refused (as for a real agent, which registers
    /// one Asset at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// The hm-apiserver binary.
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: PathBuf,
    /// Deadline in seconds for the server to start and each phase to finish.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// Runs `f` `n` times on a blocking thread; returns operations per second and the
/// mean time per operation.
pub(crate) async fn per_second<F>(n: u32, f: F) -> Result<(f64, Duration)>
where
    F: FnMut(u32) + Send + 'static,
{
    let mut f = f;
    let wall = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        for i in 0..n {
            f(i);
        }
        start.elapsed()
    })
    .await
    .context("benchmark thread")?;
    let n = f64::from(n.max(1));
    Ok((n / wall.as_secs_f64().max(1e-9), wall.div_f64(n)))
}

fn disk_spec(node: &str, i: u32) -> AssetSpec {
    AssetSpec {
        node_name: node.to_string(),
        r#type: AssetType::Storage as i32,
        capacity: BTreeMap::from([("storage".to_string(), "64Ki".to_string())]),
        attributes: BTreeMap::from([
            ("path".to_string(), format!("/dev/bench{i}")),
            ("rotational".to_string(), "false".to_string()),
        ]),
        privacy: PrivacyLevel::Untrusted as i32,
        ..Default::default()
    }
}

fn asset(name: String, spec: AssetSpec) -> Asset {
    Asset {
        metadata: Some(ObjectMeta {
            name,
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    }
}

/// A challenge as the apiserver would issue it.
fn local_challenge(asset: &str, difficulty: u32, samples: u32) -> ProofChallenge {
    ProofChallenge {
        nonce: rand::random::<[u8; 32]>().to_vec(),
        node_name: "bench".into(),
        asset_name: asset.into(),
        expires: Some(hypermesh_api::time::from_system_time(
            SystemTime::now() + Duration::from_secs(3600),
        )),
        work_difficulty: difficulty,
        space_samples: samples,
    }
}

/// Asset `bench-disk<i>` proved against `challenge`.
fn proved(
    identity: &NodeIdentity,
    commitment: &SpaceCommitment,
    i: u32,
    challenge: &ProofChallenge,
) -> Result<Asset> {
    let name = format!("bench-disk{i:06}");
    let mut spec = disk_spec("bench", i);
    spec.proof = Some(prove_asset(
        identity,
        ProofInput {
            asset_name: &name,
            spec: &spec,
            location: &format!("/dev/bench{i}"),
            committed_bytes: commitment.committed_bytes(),
            challenge,
            stake_record: "",
            commitment: Some(commitment),
        },
    )?);
    Ok(asset(name, spec))
}

/// Registers `count` storage Assets of node `node` with `concurrency` clients, each
/// asking a challenge, proving and creating; latency samples per registration.
async fn register(
    url: &str,
    node: &str,
    count: u32,
    identity: Arc<NodeIdentity>,
    commitment: Arc<SpaceCommitment>,
    concurrency: u32,
    timeout: Duration,
) -> Result<PhaseStats> {
    let queue = Arc::new(tokio::sync::Mutex::new((0..count).collect::<Vec<u32>>()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let channel = hypermesh_api::client::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (queue, identity, commitment, node) = (
            queue.clone(),
            identity.clone(),
            commitment.clone(),
            node.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let api = Api::<Asset>::new(channel);
            let mut samples = Vec::new();
            loop {
                let Some(i) = queue.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(samples);
                };
                let t = Instant::now();
                let a = asset(format!("{node}-disk{i:06}"), disk_spec(&node, i));
                crate::proven::create(&api, &identity, Some(&commitment), a).await?;
                samples.push(t.elapsed());
            }
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        let done = tokio::time::timeout_at(start + timeout, task)
            .await
            .context("registration phase timed out")?
            .context("client task")??;
        samples.extend(done);
    }
    Ok(PhaseStats::new(u64::from(count), start.elapsed(), samples))
}

/// Runs `hm-bench trust`.
pub async fn run(args: TrustArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);

    // FALCON-1024 itself.
    let (keygen, keygen_each) = per_second(args.keygens, |_| {
        std::hint::black_box(NodeIdentity::generate());
    })
    .await?;
    let identity = Arc::new(NodeIdentity::generate());
    let id = identity.clone();
    let (sign, sign_each) = per_second(args.signatures, move |i| {
        std::hint::black_box(id.sign(&i.to_be_bytes()));
    })
    .await?;
    let signatures: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.signatures)
            .map(|i| identity.sign(&i.to_be_bytes()))
            .collect(),
    );
    let (id, sigs) = (identity.clone(), signatures.clone());
    let (verify, verify_each) = per_second(args.signatures, move |i| {
        assert!(verify_signature(
            id.public_key(),
            &i.to_be_bytes(),
            &sigs[i as usize]
        ));
    })
    .await?;

    // Proofs: build (work + signature), then verify (work, signature, time, rep    // Proofs: build (work + openings + signature), then verify (challenge, work, time,
    // stake, openings, signature, ledger), against local challenges.
    let dir = tempfile::tempdir().context("temporary directory")?;
    let commitment = Arc::new(SpaceCommitment::open_or_create(
        &dir.path().join("space"),
        64 * 1024,
    )?);
    let (difficulty, samples) = (args.difficulty, args.samples);
    let (id, c) = (identity.clone(), commitment.clone());
    let (build, build_each) = per_second(args.proofs, move |i| {
        let ch = local_challenge("x", difficulty, samples);
        std::hint::black_box(proved(&id, &c, i, &ch).ok());
    })
    .await?;
    let built: Arc<Vec<(Asset, ProofChallenge)>> = Arc::new(
        (0..args.proofs)
            .map(|i| {
                let ch = local_challenge(&format!("bench-disk{i:06}"), difficulty, samples);
                proved(&identity, &commitment, i, &ch).map(|a| (a, ch))
            })
            .collect::<Result<_>>()?,
    );
    let verifier = Arc::new(ProofVerifier::new(VerifierConfig::default()));
    let (id, b, v) = (identity.clone(), built.clone(), verifier.clone());
    let (check, check_each) = per_second(args.proofs, move |i| {
        let (a, ch) = &b[i as usize];
        let name = a.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        let spec = a
            .spec
            .as_ref()
            .unwrap_or_else(|| unreachable!("built with a spec"));
        let ctx = ProofContext {
            public_key: id.public_key(),
            challenge: Some(ch),
            last_accepted: None,
            stake: None,
            now: SystemTime::now(),
        };
        if let Err(e) = v.verify(name, spec, &ctx) {
            panic!("a freshly built proof failed: {e}");
        }
    })
    .await?;

    // End to end through a real apiserver.
    let server =
        servers::start_apiserver(&args.apiserver, servers::Controllers::None, timeout).await?;
    let channel = hypermesh_api::client::connect(server.url()).await?;
    let nodes = Api::<Node>::new(channel);
    nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "trusted".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                identity: Some(identity.to_node_identity()),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .context("creating node trusted")?;
    let with_proofs = register(
        server.url(),
        "trusted",
        args.assets,
        identity.clone(),
        commitment.clone(),
        args.concurrency,
        timeout,
    )
    .await?;
    server.stop().await?;
    if with_proofs.ops != u64::from(args.assets) {
        bail!(
            "only {} of {} assets were registered",
            with_proofs.ops,
            args.assets
        );
    }

    println!("| FALCON-1024 / proofs (one core) | ops/s | per op |");
    println!("|---|---:|---:|");
    for (what, rate, each) in [
        ("keygen", keygen, keygen_each),
        ("sign", sign, sign_each),
        ("verify", verify, verify_each),
        (
            &*format!(
                "proof build (work {} bits, {} openings, sign)",
                args.difficulty, args.samples
            ),
            build,
            build_each,
        ),
        (
            "proof verify (challenge, work, time, stake, openings, signature, ledger)",
            check,
            check_each,
        ),
    ] {
        println!(
            "| {what} | {} | {} |",
            format_count(rate),
            format_duration(each)
        );
    }
    println!();
    println!(
        "| asset registrations, {} concurrent clients | assets | assets/s | p50 | p99 |",
        args.concurrency
    );
    println!("|---|---:|---:|---:|---:|");
    let s = &with_proofs;
    println!(
        "| challenge + proof + create (verified at admission) | {} | {} | {} | {} |",
        s.ops,
        format_count(s.throughput()),
        format_duration(s.p50),
        format_duration(s.p99)
    );
    Ok(())
}
