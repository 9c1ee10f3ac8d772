//! The etcd side of `hm-bench api`: the same phases through `etcd-client` on the encoded
//! bytes under `/registry/workloads/NAMESPACE/NAME`, as kube-apiserver stores objects.

use crate::cli::ApiArgs;
use crate::report::{Phase, TargetResult};
use crate::workload::index_of;
use anyhow::{Context, Result, anyhow, bail, ensure};
use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use hypermesh_api::Resource;
use hypermesh_api::v1::Workload;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::*;

/// The first key after every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key: etcd's "range to the end"
}

pub(super) async fn connect_etcd(url: &str) -> Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([url], Some(options))
        .await
        .with_context(|| format!("connecting to etcd at {url}"))
}

pub(super) async fn bench_etcd(
    url: &str,
    args: &ApiArgs,
    objects: &Arc<Vec<Workload>>,
    timeout: Duration,
    version: &str,
) -> Result<TargetResult> {
    let n = objects.len();
    let prefix = format!("/registry/workloads/{}/", args.namespace);
    let encoded: Arc<Vec<Vec<u8>>> = Arc::new(objects.iter().map(Message::encode_to_vec).collect());
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        clients.push(connect_etcd(url).await?);
    }
    let mut watch_client = connect_etcd(url).await?;

    // The watcher starts right after the current revision, before any write.
    let revision = watch_client
        .get(prefix.clone(), None)
        .await
        .context("reading etcd's revision")?
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| anyhow!("etcd answered without a header"))?;
    let mut stream = watch_client
        .watch(
            prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .context("starting the etcd watch")?;
    let clock = Arc::new(WatchClock::new(n));
    let phase_start = Instant::now();
    let watch_deadline = phase_start + timeout * 2;
    let mut watcher = JoinSet::new();
    let watch_clock = Arc::clone(&clock);
    let watch_prefix = prefix.clone();
    watcher.spawn(async move {
        let mut seen = 0;
        while seen < n {
            let message = tokio::time::timeout_at(watch_deadline, stream.message())
                .await
                .map_err(|_| anyhow!("watch: {seen} of {n} events before the deadline"))?
                .context("etcd watch stream failed")?;
            let Some(response) = message else {
                bail!("etcd watch stream ended after {seen} of {n} events");
            };
            if response.canceled() {
                bail!("etcd cancelled the watch: {}", response.cancel_reason());
            }
            for event in response.events() {
                if event.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = event.kv() else { continue };
                let name = kv
                    .key_str()
                    .ok()
                    .and_then(|key| key.strip_prefix(watch_prefix.as_str()));
                if let Some(index) = name.and_then(index_of)
                    && watch_clock.receive(index)
                {
                    seen += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    });

    eprintln!("hm-bench: etcd {version} at {url}");
    let next = Arc::new(AtomicUsize::new(0));
    let create = run_phase("create", &clients, phase_start + timeout, |client| {
        let (objects, encoded, clock) = (
            Arc::clone(objects),
            Arc::clone(&encoded),
            Arc::clone(&clock),
        );
        let prefix = prefix.clone();
        each_index(client, Arc::clone(&next), n, move |mut client, i| {
            let key = format!("{prefix}{}", objects[i].meta().name);
            let value = encoded[i].clone();
            let clock = Arc::clone(&clock);
            async move {
                clock.send(i);
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, None)]);
                let response = client
                    .txn(txn)
                    .await
                    .with_context(|| format!("creating {key}"))?;
                ensure!(response.succeeded(), "{key} already exists");
                clock.ack(i);
                Ok(())
            }
        })
    })
    .await?;
    join_watcher(&mut watcher).await?;
    let watch = clock.figures(phase_start)?;

    let next = Arc::new(AtomicUsize::new(0));
    let get = run_phase("get", &clients, Instant::now() + timeout, |client| {
        let objects = Arc::clone(objects);
        let prefix = prefix.clone();
        each_index(client, Arc::clone(&next), n, move |mut client, i| {
            let name = objects[i].meta().name.clone();
            let key = format!("{prefix}{name}");
            async move {
                let response = client
                    .get(key.clone(), None)
                    .await
                    .with_context(|| format!("getting {key}"))?;
                let kv = response
                    .kvs()
                    .first()
                    .ok_or_else(|| anyhow!("{key} not found"))?;
                let got =
                    Workload::decode(kv.value()).with_context(|| format!("decoding {key}"))?;
                ensure!(
                    got.meta().name == name,
                    "get {key} returned {}",
                    got.meta().name
                );
                Ok(())
            }
        })
    })
    .await?;

    let page_size = i64::from(args.page_size);
    let list = run_phase("list", &clients, Instant::now() + timeout, |mut client| {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.clone().into_bytes();
        async move {
            let mut latencies = Vec::new();
            let mut items = 0u64;
            let mut at_revision = 0;
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(page_size);
                if at_revision > 0 {
                    options = options.with_revision(at_revision);
                }
                let started = Instant::now();
                let response = client
                    .get(start.clone(), Some(options))
                    .await
                    .context("listing a page")?;
                let page: Vec<Workload> = response
                    .kvs()
                    .iter()
                    .map(|kv| Workload::decode(kv.value()))
                    .collect::<Result<_, _>>()
                    .context("decoding a listed object")?;
                latencies.push(started.elapsed());
                items += page.len() as u64;
                if at_revision == 0 {
                    at_revision = response.header().map_or(0, |h| h.revision());
                }
                match response.kvs().last() {
                    Some(last) if response.more() => {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => break,
                }
            }
            ensure!(
                items == n as u64,
                "a full listing returned {items} of {n} objects"
            );
            Ok((items, latencies))
        }
    })
    .await?;

    Ok(TargetResult {
        label: format!("etcd {version}"),
        phases: vec![
            (Phase::Create, create),
            (Phase::Get, get),
            (Phase::List, list),
            (Phase::Watch, watch.after_send),
            (Phase::WatchAfterAck, watch.after_ack),
        ],
        watch_before_ack: watch.before_ack,
    })
}
