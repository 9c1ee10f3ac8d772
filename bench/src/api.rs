//! The `api` benchmark: with C concurrent clients, create N Workloads, get each, list
//! them all page by page, and measure how fast a watcher started before the writes
//! sees each one — first on a real `hm-apiserver` through [`Api`], then on a real etcd
//! through `etcd-client` with the same encoded bytes under
//! `/registry/workloads/NAMESPACE/NAME` (the way Kubernetes stores objects).
//!
//! The systems run one after the other, never at once, so neither steals the other's
//! CPU. For etcd, create is a transaction that only puts when the key does not exist
//! (what kube-apiserver does), and paged lists read every page at the first page's
//! revision (what a continue token means); both sides decode what they read.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hypermesh_api::v1::{ListRequest, WatchEventType, WatchRequest, Workload};
use hypermesh_api::{Api, Resource};
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{ApiArgs, Target};
use crate::report::{self, Phase, Report, TargetResult};
use crate::servers;
use crate::stats::PhaseStats;
use crate::workload::{bench_workload, index_of};

mod etcd;

use etcd::bench_etcd;
#[cfg(test)]
use etcd::prefix_end;

/// Runs the benchmark, prints the table, and records it with `--write`.
pub async fn run(args: ApiArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let n = args.objects as usize;
    let objects: Arc<Vec<Workload>> =
        Arc::new((0..n).map(|i| bench_workload(&args.namespace, i)).collect());
    let object_bytes = objects.iter().map(Message::encoded_len).sum::<usize>() / n.max(1);

    let extra: Vec<&str> = args.apiserver_args.iter().map(String::as_str).collect();
    let mut hypermesh = None;
    if args.targets.contains(&Target::Hypermesh) {
        eprintln!("hm-bench: starting {}", args.apiserver.display());
        let server = servers::start_apiserver_args(
            &args.apiserver,
            servers::Controllers::None,
            &extra,
            timeout,
        )
        .await?;
        let result = bench_hypermesh(server.url(), &args, &objects, timeout)
            .await
            .context("HyperMesh run")?;
        server.stop().await?;
        hypermesh = Some(result);
    }

    let mut hypermesh_etcd = None;
    if args.targets.contains(&Target::HypermeshEtcd) {
        eprintln!(
            "hm-bench: starting {} and hm-apiserver --store etcd",
            args.etcd.display()
        );
        let etcd = servers::start_etcd(&args.etcd, timeout).await?;
        let store = format!("etcd://{}", etcd.url().trim_start_matches("http://"));
        let server = servers::start_apiserver_args(
            &args.apiserver,
            servers::Controllers::None,
            &[&["--store", store.as_str()], extra.as_slice()].concat(),
            timeout,
        )
        .await?;
        let mut result = bench_hypermesh(server.url(), &args, &objects, timeout)
            .await
            .context("HyperMesh on etcd run")?;
        result.label = format!("HyperMesh {} on etcd", env!("CARGO_PKG_VERSION"));
        server.stop().await?;
        etcd.stop().await?;
        hypermesh_etcd = Some(result);
    }

    let mut etcd = None;
    if args.targets.contains(&Target::Etcd) {
        let version = servers::etcd_version(&args.etcd).await;
        eprintln!("hm-bench: starting {} ({version})", args.etcd.display());
        let server = servers::start_etcd(&args.etcd, timeout).await?;
        let result = bench_etcd(server.url(), &args, &objects, timeout, &version)
            .await
            .context("etcd run")?;
        server.stop().await?;
        etcd = Some(result);
    }

    let report = Report {
        command: report::command_line(),
        date: report::today(),
        machine: report::machine_note(),
        revision: report::git_revision(),
        objects: args.objects,
        concurrency: args.concurrency,
        page_size: args.page_size,
        object_bytes,
        hypermesh,
        hypermesh_etcd,
        etcd,
    };
    println!("{}", report.section());
    if args.write {
        let path = &args.benchmarks_file;
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".into(),
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", path.display()))),
        };
        std::fs::write(path, report.upsert_into(&existing))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("hm-bench: recorded in {}", path.display());
    }
    Ok(())
}

/// When each object's create was sent and acknowledged and when its watch event
/// arrived, as nanoseconds after a common start (0 = not yet), written from many tasks.
struct WatchClock {
    start: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
}

/// What the watcher measured.
struct WatchFigures {
    /// Create sent → event received, and events/s from the first create to the last event.
    after_send: PhaseStats,
    /// Create acknowledged → event received (0 when the event came first).
    after_ack: PhaseStats,
    /// Events that arrived before their create's acknowledgement.
    before_ack: usize,
}

impl WatchClock {
    fn new(n: usize) -> Self {
        WatchClock {
            start: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.acked.len()
    }

    fn now(&self) -> u64 {
        // +1 so that a time of exactly 0 still reads as "set".
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    fn send(&self, index: usize) {
        if let Some(slot) = self.sent.get(index) {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    fn ack(&self, index: usize) {
        if let Some(slot) = self.acked.get(index) {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Records the first event for `index`; false for repeats and unknown indexes.
    fn receive(&self, index: usize) -> bool {
        self.received.get(index).is_some_and(|slot| {
            slot.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Delivery latencies after send and after ack, with the phase's wall time measured
    /// from `phase_start` to the last event.
    fn figures(&self, phase_start: Instant) -> Result<WatchFigures> {
        let mut after_send = Vec::with_capacity(self.len());
        let mut after_ack = Vec::with_capacity(self.len());
        let mut before_ack = 0;
        let mut last = 0;
        for i in 0..self.len() {
            let load = |v: &[AtomicU64]| v[i].load(Ordering::Relaxed);
            let (s, a, r) = (load(&self.sent), load(&self.acked), load(&self.received));
            ensure!(
                s != 0 && a != 0 && r != 0,
                "object {i}: no send, ack or watch event recorded"
            );
            if r < a {
                before_ack += 1;
            }
            after_send.push(Duration::from_nanos(r.saturating_sub(s)));
            after_ack.push(Duration::from_nanos(r.saturating_sub(a)));
            last = last.max(r);
        }
        let end = self.start + Duration::from_nanos(last);
        let wall = end.saturating_duration_since(phase_start);
        let n = self.len() as u64;
        Ok(WatchFigures {
            after_send: PhaseStats::new(n, wall, after_send),
            after_ack: PhaseStats::new(n, wall, after_ack),
            before_ack,
        })
    }
}

/// Runs `work` once per client, concurrently, until all finish or `deadline` passes.
/// Each run reports the items it handled and the latency of each request it made.
async fn run_phase<C, F, Fut>(
    what: &str,
    clients: &[C],
    deadline: Instant,
    work: F,
) -> Result<PhaseStats>
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: Future<Output = Result<(u64, Vec<Duration>)>> + Send + 'static,
{
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(work(client.clone()));
    }
    let mut items = 0;
    let mut samples = Vec::new();
    loop {
        let joined = tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .map_err(|_| anyhow!("{what}: not finished before the deadline"))?;
        let Some(joined) = joined else { break };
        let (n, latencies) = joined.with_context(|| format!("{what}: a client task failed"))??;
        items += n;
        samples.extend(latencies);
    }
    let stats = PhaseStats::new(items, start.elapsed(), samples);
    eprintln!(
        "hm-bench:   {what}: {items} in {:.2} s",
        stats.wall.as_secs_f64()
    );
    Ok(stats)
}

/// Takes indexes from `next` until `n` and runs `op` on each, timing every call.
async fn each_index<C, Op, OpFut>(
    client: C,
    next: Arc<AtomicUsize>,
    n: usize,
    op: Op,
) -> Result<(u64, Vec<Duration>)>
where
    C: Clone,
    Op: Fn(C, usize) -> OpFut,
    OpFut: Future<Output = Result<()>>,
{
    let mut latencies = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= n {
            return Ok((latencies.len() as u64, latencies));
        }
        let started = Instant::now();
        op(client.clone(), index).await?;
        latencies.push(started.elapsed());
    }
}

async fn bench_hypermesh(
    url: &str,
    args: &ApiArgs,
    objects: &Arc<Vec<Workload>>,
    timeout: Duration,
) -> Result<TargetResult> {
    let n = objects.len();
    let namespace = args.namespace.clone();
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        let channel = hypermesh_api::client::connect(url).await?;
        clients.push(Api::<Workload>::new(channel));
    }
    let watch_api = Api::<Workload>::new(hypermesh_api::client::connect(url).await?);

    // The watcher starts at the namespace's current version, before any write.
    let mut stream = watch_api
        .watch_from_now(WatchRequest {
            namespace: namespace.clone(),
            ..Default::default()
        })
        .await
        .context("starting the watch")?;
    let clock = Arc::new(WatchClock::new(n));
    let phase_start = Instant::now();
    let watch_deadline = phase_start + timeout * 2;
    let mut watcher = JoinSet::new();
    let watch_clock = Arc::clone(&clock);
    watcher.spawn(async move {
        let mut seen = 0;
        while seen < n {
            let message = tokio::time::timeout_at(watch_deadline, stream.message())
                .await
                .map_err(|_| anyhow!("watch: {seen} of {n} events before the deadline"))?
                .context("watch stream failed")?;
            let Some(event) = message else {
                bail!("watch stream ended after {seen} of {n} events");
            };
            let (kind, object) = Workload::split_event(event);
            if kind == WatchEventType::Added
                && let Some(index) = index_of(&object.meta().name)
                && watch_clock.receive(index)
            {
                seen += 1;
            }
        }
        Ok::<_, anyhow::Error>(())
    });

    eprintln!("hm-bench: HyperMesh at {url}");
    let next = Arc::new(AtomicUsize::new(0));
    let create = run_phase("create", &clients, phase_start + timeout, |api| {
        let (objects, clock) = (Arc::clone(objects), Arc::clone(&clock));
        each_index(api, Arc::clone(&next), n, move |api, i| {
            let (objects, clock) = (Arc::clone(&objects), Arc::clone(&clock));
            async move {
                clock.send(i);
                api.create(&objects[i])
                    .await
                    .with_context(|| format!("creating object {i}"))?;
                clock.ack(i);
                Ok(())
            }
        })
    })
    .await?;
    join_watcher(&mut watcher).await?;
    let watch = clock.figures(phase_start)?;

    let next = Arc::new(AtomicUsize::new(0));
    let get = run_phase("get", &clients, Instant::now() + timeout, |api| {
        let (objects, namespace) = (Arc::clone(objects), namespace.clone());
        each_index(api, Arc::clone(&next), n, move |api, i| {
            let name = objects[i].meta().name.clone();
            let namespace = namespace.clone();
            async move {
                let got = api
                    .get(&namespace, &name)
                    .await
                    .with_context(|| format!("getting {name}"))?;
                ensure!(
                    got.meta().name == name,
                    "get {name} returned {}",
                    got.meta().name
                );
                Ok(())
            }
        })
    })
    .await?;

    let page_size = args.page_size;
    let list = run_phase("list", &clients, Instant::now() + timeout, |api| {
        let namespace = namespace.clone();
        async move {
            let mut latencies = Vec::new();
            let mut items = 0u64;
            let mut continue_token = String::new();
            loop {
                let started = Instant::now();
                let (page, _, next) = api
                    .list(ListRequest {
                        namespace: namespace.clone(),
                        limit: page_size,
                        continue_token,
                        ..Default::default()
                    })
                    .await
                    .context("listing a page")?;
                latencies.push(started.elapsed());
                items += page.len() as u64;
                if next.is_empty() {
                    break;
                }
                continue_token = next;
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
        label: format!("HyperMesh {} (redb)", env!("CARGO_PKG_VERSION")),
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

async fn join_watcher(watcher: &mut JoinSet<Result<()>>) -> Result<()> {
    match watcher.join_next().await {
        Some(joined) => joined.context("the watch task failed")?,
        None => bail!("the watch task is missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(
            prefix_end(b"/registry/workloads/default/"),
            b"/registry/workloads/default0"
        );
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn watch_clock_measures_from_send_and_ack_to_event() {
        let clock = WatchClock::new(2);
        let start = clock.start;
        clock.send(0);
        clock.send(1);
        clock.ack(0);
        assert!(clock.receive(0));
        assert!(!clock.receive(0), "a repeated event is not counted twice");
        assert!(clock.receive(1));
        clock.ack(1); // the event beat the ack
        assert!(!clock.receive(7), "unknown indexes are ignored");
        let figures = clock
            .figures(start)
            .expect("every object sent, acked and seen");
        assert_eq!(figures.after_send.ops, 2);
        assert_eq!(figures.before_ack, 1);
        assert!(figures.after_send.max >= figures.after_ack.max);
    }

    #[test]
    fn watch_clock_reports_missing_events() {
        let clock = WatchClock::new(1);
        clock.send(0);
        clock.ack(0);
        assert!(clock.figures(clock.start).is_err());
    }
}
