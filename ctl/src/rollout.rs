//! `hmctl rollout status|history|undo` for workloads. The workload controller keeps
//! the revisions in `status.history` (newest last) and the replica counts in the
//! status; `status` follows them over a watch until the rollout is done, `undo`
//! copies an old revision's template back into the spec.

use std::time::Duration;

use anyhow::{Result, bail};
use hypermesh_api::v1::{InstanceTemplate, WatchEventType, WatchRequest, Workload, WorkloadStatus};
use hypermesh_api::{Api, Resource};

use crate::cli::{
    RolloutCommand, RolloutHistoryArgs, RolloutStatusArgs, RolloutTarget, RolloutUndoArgs,
};
use crate::error::ServerError;
use crate::kinds::{display_name, request_namespace, resolve_with_names};
use crate::output::print;
use crate::progress::{Progress as Bar, Unit};
use crate::scale::{modify_workload, require_workload};
use crate::table::Table;
use crate::{Context, Exit};

/// Pause before re-opening a watch that failed.
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// Runs `hmctl rollout ...`.
pub async fn run(ctx: &Context, command: &RolloutCommand) -> Result<Exit> {
    match command {
        RolloutCommand::Status(args) => status(ctx, args).await,
        RolloutCommand::History(args) => history(ctx, args).await,
        RolloutCommand::Undo(args) => undo(ctx, args).await,
    }
}

/// The workload named by `target`: its namespace and name, and a client.
async fn connect(ctx: &Context, target: &RolloutTarget) -> Result<(Api<Workload>, String, String)> {
    let names: Vec<String> = target.name.iter().cloned().collect();
    let (info, names) = resolve_with_names(&target.kind, &names)?;
    require_workload(info, "rollout")?;
    let name = match names.as_slice() {
        [name] => name.clone(),
        [] => bail!("give the name of the workload"),
        _ => bail!("give one workload, as KIND NAME or KIND/NAME"),
    };
    let namespace = request_namespace(info, ctx.namespace.as_deref(), false);
    Ok((Api::new(ctx.connect().await?), namespace, name))
}

/// Where a rollout stands: done, or the line to print while waiting (as kubectl
/// words it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every replica runs the current template and is available.
    Done,
    /// Still going, with what it waits for.
    Waiting(String),
    /// Stalled past `progressDeadlineSeconds`: why.
    Failed(String),
}

/// The rollout progress of `workload`, from its generation and status.
pub fn progress(workload: &Workload) -> Progress {
    let replicas = workload.spec.as_ref().map_or(0, |s| s.replicas);
    let status = workload.status.clone().unwrap_or_default();
    let WorkloadStatus {
        observed_generation,
        replicas: current,
        updated_replicas: updated,
        available_replicas: available,
        ..
    } = status;
    if observed_generation < workload.meta().generation {
        return Progress::Waiting("Waiting for workload spec update to be observed...".into());
    }
    // As kubectl: a rollout past its progress deadline fails with the reason.
    if let Some(stalled) = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded")
    {
        return Progress::Failed(format!(
            "workload {:?} exceeded its progress deadline: {}",
            workload.meta().name,
            stalled.message
        ));
    }
    if updated < replicas {
        return Progress::Waiting(format!(
            "Waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated..."
        ));
    }
    if current > updated {
        return Progress::Waiting(format!(
            "Waiting for rollout to finish: {} old replicas are pending termination...",
            current - updated
        ));
    }
    if available < updated {
        return Progress::Waiting(format!(
            "Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Progress::Done
}

async fn status(ctx: &Context, args: &RolloutStatusArgs) -> Result<Exit> {
    let (api, namespace, name) = connect(ctx, &args.target).await?;
    let wait = wait_rolled_out(&api, &namespace, &name);
    if args.timeout.is_zero() {
        wait.await?;
    } else {
        match tokio::time::timeout(args.timeout, wait).await {
            Ok(result) => result?,
            Err(_) => bail!(
                "timed out after {} waiting for workload {name:?} to roll out",
                humantime(args.timeout)
            ),
        }
    }
    print(&format!("workload {name:?} successfully rolled out\n"))?;
    Ok(Exit::Success)
}

/// `90s`, `2m30s`, `500ms`: a timeout as the user would type it.
fn humantime(d: Duration) -> String {
    if d.subsec_millis() != 0 && d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    hypermesh_api::time::format_duration_short(d.as_secs())
}

/// Prints each new progress line (on a terminal: moves a bar of the replicas updated
/// and available) until the rollout is done.
pub async fn wait_rolled_out(api: &Api<Workload>, namespace: &str, name: &str) -> Result<()> {
    let mut last = String::new();
    let mut bar = Bar::new(&format!("rolling out workload/{name}"), 0, Unit::Items);
    let mut report = |workload: &Workload| -> Result<bool> {
        match progress(workload) {
            Progress::Done => {
                bar.finish();
                Ok(true)
            }
            Progress::Failed(why) => {
                bar.finish();
                bail!("{why}")
            }
            Progress::Waiting(line) if bar.is_bar() => {
                let replicas = workload.spec.as_ref().map_or(0, |s| s.replicas);
                let status = workload.status.clone().unwrap_or_default();
                // Each replica counts once updated and once available.
                bar.set_total(u64::try_from(replicas).unwrap_or(0) * 2);
                let done = status.updated_replicas.min(replicas)
                    + status.available_replicas.min(status.updated_replicas);
                bar.update(u64::try_from(done).unwrap_or(0), line);
                Ok(false)
            }
            Progress::Waiting(line) => {
                if line != last {
                    print(&format!("{line}\n"))?;
                    last = line;
                }
                Ok(false)
            }
        }
    };
    loop {
        let workload = api
            .get(namespace, name)
            .await
            .map_err(|s| ServerError::for_object(&s, "workloads", name))?;
        if report(&workload)? {
            return Ok(());
        }
        let request = WatchRequest {
            namespace: namespace.to_string(),
            field_selector: format!("metadata.name={name}"),
            resource_version: workload.meta().resource_version,
            ..Default::default()
        };
        let mut stream = match api.watch(request).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(REWATCH_PAUSE).await;
                continue;
            }
        };
        // Until the stream ends or breaks; then read again and watch again.
        while let Ok(Some(event)) = stream.message().await {
            let (kind, workload) = Workload::split_event(event);
            match kind {
                WatchEventType::Deleted => bail!("workload {name:?} was deleted"),
                WatchEventType::Added | WatchEventType::Modified => {
                    if report(&workload)? {
                        return Ok(());
                    }
                }
                WatchEventType::Bookmark | WatchEventType::Unspecified => {}
            }
        }
    }
}

/// `main=registry/web:1.2,side=envoy:1`.
fn images(template: Option<&InstanceTemplate>) -> String {
    let text = template
        .map(|t| {
            t.containers
                .iter()
                .map(|c| format!("{}={}", c.name, c.image))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    crate::columns::or_none(text)
}

async fn history(ctx: &Context, args: &RolloutHistoryArgs) -> Result<Exit> {
    let (api, namespace, name) = connect(ctx, &args.target).await?;
    let workload = api
        .get(&namespace, &name)
        .await
        .map_err(|s| ServerError::for_object(&s, "workloads", &name))?;
    let history = workload.status.unwrap_or_default().history;
    let title = display_name("Workload", &name);
    if let Some(n) = args.revision {
        let Some(revision) = history.iter().find(|r| r.revision == n) else {
            bail!("revision {n} not found in the history of workload {name:?}");
        };
        let template = revision
            .template
            .as_ref()
            .map(serde_json::to_value)
            .transpose()?
            .and_then(|v| serde_saphyr::to_string(&v).ok())
            .unwrap_or_default();
        let mut out = format!(
            "{title} with revision #{n}\nTemplate hash: {}\nCreated:       {}\nTemplate:\n",
            revision.template_hash,
            crate::describe::timestamp_text(revision.created.as_ref())
        );
        for line in template.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        print(&out)?;
        return Ok(Exit::Success);
    }
    if history.is_empty() {
        print(&format!("{title}\nNo rollout history found.\n"))?;
        return Ok(Exit::Success);
    }
    let mut table = Table::new(["REVISION", "TEMPLATE-HASH", "AGE", "IMAGES"]);
    for r in &history {
        table.push(vec![
            r.revision.to_string(),
            r.template_hash.clone(),
            hypermesh_api::time::age(r.created.as_ref()),
            images(r.template.as_ref()),
        ]);
    }
    print(&format!("{title}\n{}", table.render()))?;
    Ok(Exit::Success)
}

async fn undo(ctx: &Context, args: &RolloutUndoArgs) -> Result<Exit> {
    let (api, namespace, name) = connect(ctx, &args.target).await?;
    let mut target_revision = 0;
    let mut skipped = false;
    modify_workload(&api, &namespace, &name, |workload| {
        let history = workload
            .status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default();
        let target = match args.to_revision {
            Some(n) => history.iter().find(|r| r.revision == n).ok_or_else(|| {
                anyhow::anyhow!("revision {n} not found in the history of workload {name:?}")
            })?,
            None => match history.as_slice() {
                [.., previous, _current] => previous,
                _ => bail!("workload {name:?} has no earlier revision to go back to"),
            },
        };
        target_revision = target.revision;
        let Some(template) = target.template.clone() else {
            bail!(
                "revision {} of workload {name:?} has no template",
                target.revision
            );
        };
        let spec = workload.spec.get_or_insert_with(Default::default);
        if spec.template.as_ref() == Some(&template) {
            skipped = true;
            return Ok(false);
        }
        spec.template = Some(template);
        skipped = false;
        Ok(true)
    })
    .await?;
    let title = display_name("Workload", &name);
    if skipped {
        print(&format!(
            "{title} skipped rollback (current template already matches revision {target_revision})\n"
        ))?;
    } else {
        print(&format!(
            "{title} rolled back to revision {target_revision}\n"
        ))?;
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{ObjectMeta, WorkloadSpec};

    fn workload(generation: i64, observed: i64, counts: [i32; 3]) -> Workload {
        let [replicas, updated, available] = counts;
        Workload {
            metadata: Some(ObjectMeta {
                generation,
                ..Default::default()
            }),
            spec: Some(WorkloadSpec {
                replicas: 3,
                ..Default::default()
            }),
            status: Some(WorkloadStatus {
                observed_generation: observed,
                replicas,
                updated_replicas: updated,
                available_replicas: available,
                ..Default::default()
            }),
        }
    }

    fn waiting(w: &Workload) -> String {
        match progress(w) {
            Progress::Waiting(line) => line,
            Progress::Done => "done".into(),
            Progress::Failed(why) => format!("failed: {why}"),
        }
    }

    #[test]
    fn progress_reads_like_kubectl() {
        assert_eq!(
            waiting(&workload(2, 1, [3, 3, 3])),
            "Waiting for workload spec update to be observed..."
        );
        assert_eq!(
            waiting(&workload(2, 2, [4, 1, 1])),
            "Waiting for rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            waiting(&workload(2, 2, [4, 3, 3])),
            "Waiting for rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            waiting(&workload(2, 2, [3, 3, 1])),
            "Waiting for rollout to finish: 1 of 3 updated replicas are available..."
        );
        assert_eq!(progress(&workload(2, 2, [3, 3, 3])), Progress::Done);
    }
}
