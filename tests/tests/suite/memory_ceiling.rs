//! The apiserver's memory stays under the ceiling docs/limits.md states, computed
//! here from the same formula and the flags the server runs with: many large objects,
//! many watchers that never read, every large object rewritten twice through a small
//! watch window, and Lists without a limit — while the server keeps answering, and the
//! stalled watchers end with a status instead of holding memory.

use hypermesh_tests::fixtures;

use std::time::Duration;

use fixtures::{next_change, workload};
use hypermesh_api::v1::{ListRequest, WatchEventType, WatchRequest, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{ApiServerProcess, connect};
use tonic::Code;

const MIB: u64 = 1024 * 1024;
const OBJECTS: usize = 40;
const OBJECT_KIB: usize = 1000;
const WATCHERS: usize = 100;

/// docs/limits.md: base + store cache + 3 × stored objects (the watch cache) + one
/// more 3 × stored objects held by watches still sending their snapshot + every
/// kind's window + per open watch 0.5 MiB plus its largest event in flight (here
/// one ~1 MiB object; at most `max_object_bytes`) + 2 × the write queue + 60 MiB per
/// concurrent List.
fn ceiling(stored: u64, kinds: u64, window: u64, store_cache: u64, queue: u64) -> u64 {
    64 * MIB
        + store_cache
        + 6 * stored
        + kinds * window
        + WATCHERS as u64 * (MIB / 2 + 2 * (OBJECT_KIB as u64) * 1024)
        + 2 * queue
        + 60 * MIB
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

fn big(name: &str, round: usize) -> Workload {
    let mut w = workload("default", name, 1);
    let spec = w.spec.as_mut().expect("spec");
    let template = spec.template.as_mut().expect("template");
    let container = template.containers.first_mut().expect("container");
    for k in 0..4 {
        container.env.push(hypermesh_api::v1::EnvVar {
            name: format!("PAD{k}"),
            value: format!("{round}").repeat(OBJECT_KIB * 1024 / 4),
            secret_key_ref: None,
        });
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_under_the_documented_ceiling() {
    let server = ApiServerProcess::start_with_args(&[
        "--watch-cache-window-mib",
        "4",
        "--watch-lag-mib",
        "2",
        "--store-cache-mib",
        "16",
        "--write-queue-mib",
        "16",
    ])
    .await
    .expect("hm-apiserver");
    let pid = server.pid().expect("pid");
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));

    let mut objects = Vec::new();
    for i in 0..OBJECTS {
        objects.push(
            api.create(&big(&format!("big-{i}"), 0))
                .await
                .expect("create"),
        );
    }
    let stored: u64 = objects
        .iter()
        .map(|o| prost::Message::encoded_len(o) as u64)
        .sum();

    // Watchers that take the whole snapshot (40 MiB each) and never read a byte; the
    // first on a connection of its own, so reading it later is not blocked by the
    // others' share of their connection's flow-control window.
    let lonely = Api::<Workload>::new(connect(server.url()).await.expect("channel"))
        .watch(WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("watch");
    let mut stalled = vec![lonely];
    debug_assert_eq!(1 + 11 * 9, WATCHERS);
    // 11 connections of 9 streams: 100 watchers with the lonely one.
    for _ in 0..11 {
        let channel = connect(server.url()).await.expect("channel");
        for _ in 0..9 {
            stalled.push(
                Api::<Workload>::new(channel.clone())
                    .watch(WatchRequest {
                        namespace: "default".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("watch"),
            );
        }
    }

    // Every large object rewritten twice: 80 MiB of changes through a 4 MiB window.
    for round in 1..=2 {
        for o in &mut objects {
            let mut next = big(&o.meta().name, round);
            next.metadata.as_mut().expect("meta").resource_version = o.meta().resource_version;
            *o = api.update(&next).await.expect("update");
        }
    }

    // A List without a limit comes back in pages, each under one message.
    let (items, _, token) = api
        .list(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(
        items.len() < OBJECTS,
        "one page held {} objects",
        items.len()
    );
    assert!(!token.is_empty(), "the page must say where to continue");
    let (all, _) = api
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list all");
    assert_eq!(all.len(), OBJECTS);

    // The server keeps answering: a new watch sees a new change promptly.
    let latest = api.list(ListRequest {
        namespace: "default".into(),
        limit: 1,
        ..Default::default()
    });
    let (_, revision, _) = latest.await.expect("list");
    let mut fresh = api
        .watch(WatchRequest {
            namespace: "default".into(),
            resource_version: revision,
            ..Default::default()
        })
        .await
        .expect("watch");
    api.create(&workload("default", "small", 1))
        .await
        .expect("create while stalled watchers hang on");
    let (kind, obj) =
        tokio::time::timeout(Duration::from_secs(5), next_change::<Workload>(&mut fresh))
            .await
            .expect("prompt delivery");
    assert_eq!(
        (kind, obj.meta().name.as_str()),
        (WatchEventType::Added, "small")
    );

    let peak = peak_rss(pid);
    let limit = ceiling(
        stored,
        hypermesh_api::resource::KIND_INFOS.len() as u64,
        4 * MIB,
        16 * MIB,
        16 * MIB,
    );
    eprintln!(
        "memory ceiling: stored {} MiB, peak RSS {} MiB, documented ceiling {} MiB",
        stored / MIB,
        peak / MIB,
        limit / MIB
    );
    assert!(
        peak < limit,
        "peak RSS {} MiB over the documented ceiling {} MiB",
        peak / MIB,
        limit / MIB
    );

    // A stalled watcher that reads again finds it was closed, with a status saying why.
    let mut first = stalled.swap_remove(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        match tokio::time::timeout_at(deadline, first.message())
            .await
            .expect("the stalled watch ends before the deadline")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stalled watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );
    assert!(
        status.message().contains("list again"),
        "{}",
        status.message()
    );
}
