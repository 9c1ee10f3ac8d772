//! Watch delivery under the fleet's load: a probe Lease in `default` whose
//! `spec.renewTime` is set to the send time on every Update (every `period`), watched by
//! K watchers on the admin prober's connection. Each MODIFIED event a watcher receives
//! is one sample: receipt time − `renewTime`, i.e. write sent → committed → fanned out
//! from the Lease watch cache (the same cache the N/2 heartbeat writes/s go through) →
//! delivered. Samples land in the prober's [`ProbeSamples`], so every window reports
//! its own p50/p99.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{Lease, LeaseSpec, ObjectMeta, WatchEventType, WatchRequest};
use hypermesh_api::{Api, Resource};
use tokio_util::sync::CancellationToken;

use super::measure::ProbeSamples;

/// Name of the probe Lease (namespace `default`; node Leases live in `hypermesh-system`).
pub const PROBE_LEASE: &str = "hm-bench-watch-probe";

/// Starts the probe writer and `watchers` watchers, adding delivery samples (and
/// failures) to `samples` until `stop`.
pub fn start(
    channel: tonic::transport::Channel,
    watchers: usize,
    period: Duration,
    samples: Arc<Mutex<ProbeSamples>>,
    stop: CancellationToken,
) {
    if watchers == 0 {
        return;
    }
    let api: Api<Lease> = Api::new(channel);
    for _ in 0..watchers {
        tokio::spawn(watch(api.clone(), samples.clone(), stop.clone()));
    }
    tokio::spawn(write(api, period, samples, stop));
}

/// Updates the probe Lease's `renewTime` to now every `period`.
async fn write(
    api: Api<Lease>,
    period: Duration,
    samples: Arc<Mutex<ProbeSamples>>,
    stop: CancellationToken,
) {
    let mut lease = Lease {
        metadata: Some(ObjectMeta {
            name: PROBE_LEASE.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: "hm-bench".into(),
            lease_duration_seconds: 10,
            renew_time: Some(hypermesh_api::time::now()),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&lease).await {
        Ok(created) => lease = created,
        Err(_) => match api.get("default", PROBE_LEASE).await {
            Ok(existing) => lease = existing,
            Err(_) => {
                note_error(&samples);
                return;
            }
        },
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(hypermesh_api::time::now());
        }
        match api.update(&lease).await {
            Ok(updated) => lease = updated,
            Err(_) => {
                note_error(&samples);
                if let Ok(fresh) = api.get("default", PROBE_LEASE).await {
                    lease = fresh;
                }
            }
        }
    }
}

/// Watches Leases in `default` from now, re-opening the watch when it ends.
async fn watch(api: Api<Lease>, samples: Arc<Mutex<ProbeSamples>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let request = WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        };
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            s = api.watch_from_now(request) => s,
        };
        let Ok(mut stream) = opened else {
            note_error(&samples);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.message() => m,
            };
            let message = match message {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    note_error(&samples);
                    break;
                }
            };
            let received = SystemTime::now();
            let (kind, lease) = Lease::split_event(message);
            if kind != WatchEventType::Modified || lease.meta().name != PROBE_LEASE {
                continue;
            }
            let Some(sent) = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()) else {
                continue;
            };
            let took = received
                .duration_since(hypermesh_api::time::to_system_time(sent))
                .unwrap_or_default();
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delivery
                .push(took);
        }
    }
}

fn note_error(samples: &Mutex<ProbeSamples>) {
    samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .delivery_errors += 1;
}
