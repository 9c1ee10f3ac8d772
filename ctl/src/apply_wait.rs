//! `hmctl apply --wait`: after applying, waits until every applied Workload is rolled
//! out (as `rollout status`) and every applied Instance runs (phase Running, or
//! Succeeded for one that already finished), within `--timeout`. Progress: a bar on a
//! terminal, plain lines otherwise ([`crate::progress`]).

use std::time::Duration;

use anyhow::{Result, bail};
use hypermesh_api::v1::{Instance, InstancePhase, Workload};
use hypermesh_api::{Api, Resource};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::error::ServerError;
use crate::manifests::Document;
use crate::output::print;
use crate::progress::{Progress, Unit};
use crate::{Exit, POLL};

fn names(doc: &Document) -> (String, String) {
    let meta = doc.object.meta();
    let namespace = if meta.namespace.is_empty() {
        crate::DEFAULT_NAMESPACE.to_string()
    } else {
        meta.namespace.clone()
    };
    (namespace, meta.name.clone())
}

/// Waits for the Workloads and Instances among `applied`.
pub async fn wait(channel: &Channel, applied: &[Document], timeout: Duration) -> Result<Exit> {
    let deadline = Instant::now() + timeout;
    let workloads = Api::<Workload>::new(channel.clone());
    for doc in applied
        .iter()
        .filter(|d| d.object.kind() == <Workload as Resource>::KIND)
    {
        let (namespace, name) = names(doc);
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(
            left,
            crate::rollout::wait_rolled_out(&workloads, &namespace, &name),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => {
                bail!("timed out after {timeout:?} waiting for workload {name:?} to roll out")
            }
        }
        print(&format!("{} rolled out\n", doc.display_name()))?;
    }
    let instances: Vec<(String, String)> = applied
        .iter()
        .filter(|d| d.object.kind() == <Instance as Resource>::KIND)
        .map(names)
        .collect();
    if instances.is_empty() {
        return Ok(Exit::Success);
    }
    let api = Api::<Instance>::new(channel.clone());
    let progress = Progress::new("instances running", instances.len() as u64, Unit::Items);
    let count = instances.len() as u64;
    let mut waiting = instances;
    let mut last_phase = std::collections::HashMap::new();
    let mut polls = POLL.retry();
    loop {
        let mut still = Vec::new();
        for (namespace, name) in waiting {
            let instance = api
                .get(&namespace, &name)
                .await
                .map_err(|s| ServerError::for_object(&s, "instances", &name))?;
            let phase = instance.status.as_ref().map_or(0, |s| s.phase);
            let phase_name = InstancePhase::try_from(phase)
                .map_or("UNKNOWN", |p| p.as_str_name())
                .to_string();
            if phase == InstancePhase::Failed as i32 {
                progress.finish();
                bail!("instance {namespace}/{name} failed");
            }
            if phase == InstancePhase::Running as i32 || phase == InstancePhase::Succeeded as i32 {
                progress.suspend(|| {
                    print(&format!(
                        "instance.hypermesh.io/{name} {}\n",
                        phase_name.to_ascii_lowercase()
                    ))
                })?;
                continue;
            }
            if !progress.is_bar() && last_phase.get(&name) != Some(&phase_name) {
                eprintln!("waiting for instance {namespace}/{name}: {phase_name}");
            }
            last_phase.insert(name.clone(), phase_name);
            still.push((namespace, name));
        }
        waiting = still;
        progress.update(count - waiting.len() as u64, "");
        if waiting.is_empty() {
            progress.finish();
            return Ok(Exit::Success);
        }
        let now = Instant::now();
        if now >= deadline {
            progress.finish();
            let names: Vec<String> = waiting.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
            bail!(
                "timed out after {timeout:?} waiting for instance(s) to run: {}",
                names.join(", ")
            );
        }
        tokio::time::sleep(polls.next_delay().min(deadline - now)).await;
    }
}
