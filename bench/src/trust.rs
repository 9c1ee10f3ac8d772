//! `hm-bench trust`: FALCON-1024 keygen/sign/verify and Asset proof build/verify per
//! second in this process, then Asset registrations/s end to end through a real
//! `hm-apiserver` (a Node with an identity, N Assets with proofs, C concurrent
//! clients), next to the same registrations without proofs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::{Asset, AssetSpec, AssetType, Node, NodeSpec, ObjectMeta};
use hypermesh_trust::proof::{ProofParams, ProofVerifier, VerifierConfig, prove_asset};
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
    /// Work difficulty of the proofs (leading zero bits).
    #[arg(long, default_value_t = ProofParams::default().work_difficulty)]
    pub difficulty: u32,
    /// Assets to register through the apiserver (each phase).
    #[arg(long, default_value_t = 2_000)]
    pub assets: u32,
    /// Concurrent registering clients, each with its own connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
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
async fn per_second<F>(n: u32, f: F) -> Result<(f64, Duration)>
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
        capacity: BTreeMap::from([("storage".to_string(), "1Ti".to_string())]),
        attributes: BTreeMap::from([
            ("path".to_string(), format!("/dev/bench{i}")),
            ("rotational".to_string(), "false".to_string()),
        ]),
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

/// Assets `prefix-i` of node `node`, with proofs by `identity` when given.
fn assets(
    node: &str,
    count: u32,
    identity: Option<&NodeIdentity>,
    params: &ProofParams,
) -> Vec<Asset> {
    (0..count)
        .map(|i| {
            let name = format!("{node}-disk{i:06}");
            let mut spec = disk_spec(node, i);
            if let Some(id) = identity {
                spec.proof = Some(prove_asset(
                    id,
                    &name,
                    &spec,
                    &format!("/dev/bench{i}"),
                    1 << 40,
                    params,
                ));
            }
            asset(name, spec)
        })
        .collect()
}

/// Creates `assets` with `concurrency` clients; latency samples per create.
async fn register(
    url: &str,
    assets: Vec<Asset>,
    concurrency: u32,
    timeout: Duration,
) -> Result<PhaseStats> {
    let total = assets.len() as u64;
    let queue = Arc::new(tokio::sync::Mutex::new(assets));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let channel = hypermesh_api::client::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let api = Api::<Asset>::new(channel);
            let mut samples = Vec::new();
            loop {
                let Some(a) = queue.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(samples);
                };
                let t = Instant::now();
                api.create(&a).await.with_context(|| {
                    format!(
                        "creating asset {}",
                        a.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
                    )
                })?;
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
    Ok(PhaseStats::new(total, start.elapsed(), samples))
}

/// Runs `hm-bench trust`.
pub async fn run(args: TrustArgs) -> Result<()> {
    let params = ProofParams {
        work_difficulty: args.difficulty,
    };
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

    // Proofs: build (work + signature), then verify (work, signature, time, replay, ledger).
    let (id, p) = (identity.clone(), params.clone());
    let (build, build_each) = per_second(args.proofs, move |i| {
        std::hint::black_box(assets("bench", 1, Some(&id), &p));
        let _ = i;
    })
    .await?;
    let built = Arc::new(assets("bench", args.proofs, Some(&identity), &params));
    let verifier = Arc::new(ProofVerifier::new(VerifierConfig {
        min_work_difficulty: args
            .difficulty
            .min(VerifierConfig::default().min_work_difficulty),
        ..VerifierConfig::default()
    }));
    let (id, b, v) = (identity.clone(), built.clone(), verifier.clone());
    let (check, check_each) = per_second(args.proofs, move |i| {
        let a = &b[i as usize];
        let name = a.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        let spec = a
            .spec
            .as_ref()
            .unwrap_or_else(|| unreachable!("built with a spec"));
        if let Err(e) = v.verify(name, spec, id.public_key(), SystemTime::now()) {
            panic!("a freshly built proof failed: {e}");
        }
    })
    .await?;

    // End to end through a real apiserver.
    let server =
        servers::start_apiserver(&args.apiserver, servers::Controllers::None, timeout).await?;
    let channel = hypermesh_api::client::connect(server.url()).await?;
    let nodes = Api::<Node>::new(channel);
    for (name, identity) in [("trusted", Some(&identity)), ("plain", None)] {
        nodes
            .create(&Node {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec {
                    identity: identity.map(|i| i.to_node_identity()),
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .with_context(|| format!("creating node {name}"))?;
    }
    let proved = {
        let (id, p, n) = (identity.clone(), params.clone(), args.assets);
        tokio::task::spawn_blocking(move || assets("trusted", n, Some(&id), &p)).await?
    };
    let with_proofs = register(server.url(), proved, args.concurrency, timeout).await?;
    let plain = register(
        server.url(),
        assets("plain", args.assets, None, &params),
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
            &*format!("proof build (work {} bits + sign)", args.difficulty),
            build,
            build_each,
        ),
        (
            "proof verify (work, signature, time, replay, space)",
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
    for (what, s) in [
        ("with proofs (verified at admission)", &with_proofs),
        ("without proofs (node without identity)", &plain),
    ] {
        println!(
            "| {what} | {} | {} | {} | {} |",
            s.ops,
            format_count(s.throughput()),
            format_duration(s.p50),
            format_duration(s.p99)
        );
    }
    Ok(())
}
