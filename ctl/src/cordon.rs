//! `hmctl cordon` and `hmctl uncordon`: set or clear a node's `spec.unschedulable`,
//! so the scheduler stops (or resumes) placing new Instances there. Instances already
//! on the node keep running; `hmctl drain` moves them off.
//!
//! The change is an Update carrying the resource_version that was read, so a
//! concurrent writer (the agent, another hmctl) is never overwritten: on a conflict
//! the node is read again and the change retried.

use anyhow::{Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::Node;
use tonic::Code;

use crate::error::ServerError;
use crate::output::print;
use crate::{Context, Exit};

/// How many times a conflicting Update is retried before giving up.
const MAX_ATTEMPTS: usize = 10;

/// `hmctl cordon` / `hmctl uncordon`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// What [`set_unschedulable`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The flag was changed.
    Changed,
    /// The node already had it.
    Unchanged,
}

/// Runs `hmctl cordon` (`cordon` true) or `hmctl uncordon` (false).
pub async fn run(ctx: &Context, args: &NodeArgs, cordon: bool) -> Result<Exit> {
    let api = Api::<Node>::new(ctx.connect().await?);
    let change = set_unschedulable(&api, &args.node, cordon).await?;
    print(&format!("{}\n", message(&args.node, cordon, change)))?;
    Ok(Exit::Success)
}

/// `node/n1 cordoned`, `node/n1 already uncordoned`, ...
pub fn message(node: &str, cordon: bool, change: Change) -> String {
    let verb = if cordon { "cordoned" } else { "uncordoned" };
    match change {
        Change::Changed => format!("node/{node} {verb}"),
        Change::Unchanged => format!("node/{node} already {verb}"),
    }
}

/// Sets `spec.unschedulable` of node `name` to `value`: Get, then Update with the
/// resource_version read, again from the Get when the Update conflicts.
pub async fn set_unschedulable(api: &Api<Node>, name: &str, value: bool) -> Result<Change> {
    for _ in 0..MAX_ATTEMPTS {
        let mut node = api
            .get("", name)
            .await
            .map_err(|s| ServerError::for_object(&s, "nodes", name))?;
        let spec = node.spec.get_or_insert_with(Default::default);
        if spec.unschedulable == value {
            return Ok(Change::Unchanged);
        }
        spec.unschedulable = value;
        match api.update(&node).await {
            Ok(_) => return Ok(Change::Changed),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "nodes", name).into()),
        }
    }
    bail!("node/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_kubectl() {
        assert_eq!(message("n1", true, Change::Changed), "node/n1 cordoned");
        assert_eq!(
            message("n1", false, Change::Unchanged),
            "node/n1 already uncordoned"
        );
    }
}
