//! `hm-bench sealing`: what sealing Secrets costs, in this process on one core, for
//! 1 KiB and 64 KiB values: sealing to a node (ML-KEM-1024 encapsulation, HKDF-SHA256,
//! AES-256-GCM; what the apiserver does for every Secret a node reads) and opening that
//! copy (decapsulation and AES-256-GCM; what the agent does), side by side with the
//! baseline every Secret write and read pays anyway: AES-256-GCM at rest under the key
//! file, with no key encapsulation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hypermesh_trust::at_rest::EncryptionKey;
use hypermesh_trust::sealing::{NodeKem, Sealed, seal, secret_aad};

use crate::stats::{format_count, format_duration};
use crate::trust::per_second;

/// Arguments of `hm-bench sealing`.
#[derive(Debug, Clone, Args)]
pub struct SealingArgs {
    /// Operations of each kind per payload size.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub operations: u32,
    /// Payload sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 64 * 1024])]
    pub sizes: Vec<usize>,
}

/// One measured operation: operations per second, time each, and MiB/s of payload.
struct Measured {
    rate: f64,
    each: Duration,
    size: usize,
}

impl Measured {
    fn row(&self, what: &str) -> String {
        let mib = self.rate * self.size as f64 / (1024.0 * 1024.0);
        format!(
            "| {what} | {} | {} | {} | {mib:.0} |",
            size_label(self.size),
            format_count(self.rate),
            format_duration(self.each)
        )
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

async fn measure<F>(n: u32, size: usize, f: F) -> Result<Measured>
where
    F: FnMut(u32) + Send + 'static,
{
    let (rate, each) = per_second(n, f).await?;
    Ok(Measured { rate, each, size })
}

/// Runs `hm-bench sealing`.
pub async fn run(args: SealingArgs) -> Result<()> {
    let node = Arc::new(NodeKem::generate());
    let dir = tempfile::tempdir().context("temporary directory")?;
    let at_rest =
        Arc::new(EncryptionKey::load_or_create(&dir.path().join("key")).context("key file")?);
    let aad = Arc::new(secret_aad("bench-node", "default", "db", 42));
    let n = args.operations;
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let payload: Arc<Vec<u8>> = Arc::new((0..size).map(|i| i as u8).collect());

        let (k, a, p) = (node.clone(), aad.clone(), payload.clone());
        let sealed_seal = measure(n, size, move |_| {
            std::hint::black_box(seal(k.public_key(), &a, &p).ok());
        })
        .await?;
        let copies: Arc<Vec<Sealed>> = Arc::new(
            (0..n.min(256))
                .map(|_| seal(node.public_key(), &aad, &payload))
                .collect::<Result<_, _>>()
                .context("sealing")?,
        );
        let (k, a, c, p) = (node.clone(), aad.clone(), copies.clone(), payload.clone());
        let sealed_open = measure(n, size, move |i| {
            let plain = k.open(&a, &c[i as usize % c.len()]);
            assert!(
                plain.is_ok_and(|v| v.len() == p.len()),
                "a sealed copy failed to open"
            );
        })
        .await?;

        let (key, p) = (at_rest.clone(), payload.clone());
        let rest_seal = measure(n, size, move |_| {
            std::hint::black_box(key.seal("/secrets/default/db", &p).ok());
        })
        .await?;
        let blob = Arc::new(
            at_rest
                .seal("/secrets/default/db", &payload)
                .context("seal")?,
        );
        let (key, b) = (at_rest.clone(), blob.clone());
        let rest_open = measure(n, size, move |_| {
            assert!(
                key.open("/secrets/default/db", &b).is_ok(),
                "at-rest blob failed to open"
            );
        })
        .await?;

        rows.push(sealed_seal.row("seal to a node (ML-KEM-1024 + HKDF + AES-256-GCM)"));
        rows.push(sealed_open.row("open as the node (ML-KEM-1024 + HKDF + AES-256-GCM)"));
        rows.push(rest_seal.row("baseline: seal at rest (AES-256-GCM, key file)"));
        rows.push(rest_open.row("baseline: open at rest (AES-256-GCM, key file)"));
    }

    println!("| operation (one core) | value | ops/s | per op | MiB/s |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
