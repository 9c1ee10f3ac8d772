//! `hmctl node stake NAME --amount N`: an admin issues the node a stake record (a fresh
//! record id each time; amount 0 withdraws it) that its Asset proofs must cite; without
//! one its Assets are offered at the UNTRUSTED privacy level only.
//!
//! `hmctl node trust NAME`: an admin's decision that a node marked Suspect (failed
//! proofs, a changed key) is trusted again: its Suspect condition is set to False
//! and its `hypermesh.io/suspect` taint removed, so the scheduler places work there.
//!
//! The condition is cleared first (UpdateStatus), then the taint (Update): the
//! apiserver keeps the taint on a node while it is still Suspect. Both writes carry
//! the resource_version read and are retried on conflicts.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use hypermesh_api::Api;
use hypermesh_api::v1::{Condition, Node};
use tonic::Code;

use crate::error::ServerError;
use crate::output::print;
use crate::{Context, Exit};

/// The node condition Byzantine detection sets.
pub const SUSPECT_CONDITION: &str = "Suspect";
/// The taint a Suspect node carries.
pub const SUSPECT_TAINT: &str = "hypermesh.io/suspect";
/// The condition reason once an admin trusted the node.
pub const TRUSTED_REASON: &str = "TrustedByAdmin";

const MAX_ATTEMPTS: usize = 10;

/// `hmctl node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Trust a Suspect node again: clear its Suspect condition and taint
    #[command(
        after_help = "A node is marked Suspect when one of its asset proofs fails \
        (forged signature, replayed nonce, over-claimed space, ...) or its key changes; \
        `hmctl describe node NAME` shows why.\n\nExample:\n  hmctl node trust host-1"
    )]
    Trust(TrustArgs),
    /// Revoke the node's certificates: refused at once, its connections closed
    #[command(
        after_help = "The node must join again with a new token to come back.\n\n        Example:\n  hmctl node revoke host-1"
    )]
    Revoke(TrustArgs),
    /// Forget the node's FALCON key and revoke its certificates, so it can join again
    /// with a new key (a reinstalled host)
    #[command(
        after_help = "Then start the agent with an empty --state-dir and a new         token (hmctl token create).\n\nExample:\n  hmctl node rekey host-1"
    )]
    Rekey(TrustArgs),
    /// Issue the node a stake record its Asset proofs cite (amount 0 withdraws it)
    #[command(
        after_help = "Without stake a node's Assets are offered at privacy UNTRUSTED only; \
        its agent re-proves them citing the new record at its next re-detection.\n\n\
        Example:\n  hmctl node stake host-1 --amount 100"
    )]
    Stake(StakeArgs),
}

/// `hmctl node stake`.
#[derive(Debug, Args)]
pub struct StakeArgs {
    /// The node's name
    #[arg(value_name = "NODE")]
    pub node: String,
    /// The amount staked (0 withdraws the stake)
    #[arg(long)]
    pub amount: u64,
}

/// `hmctl node trust`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The node's name
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// Runs `hmctl node ...`.
pub async fn run(ctx: &Context, command: &NodeCommand) -> Result<Exit> {
    match command {
        NodeCommand::Trust(args) => {
            let api = Api::<Node>::new(ctx.connect().await?);
            let changed = trust(&api, &args.node).await?;
            let line = if changed {
                format!("node/{} trusted\n", args.node)
            } else {
                format!("node/{} was not suspect\n", args.node)
            };
            print(&line)?;
            Ok(Exit::Success)
        }
        NodeCommand::Stake(args) => {
            let api = Api::<Node>::new(ctx.connect().await?);
            let record = stake(&api, &args.node, args.amount).await?;
            let line = match record {
                Some(id) => format!("node/{} staked {} (record {id})\n", args.node, args.amount),
                None => format!("node/{} stake withdrawn\n", args.node),
            };
            print(&line)?;
            Ok(Exit::Success)
        }
        NodeCommand::Revoke(args) => {
            let revoked = crate::access::revoke(ctx, &format!("node:{}", args.node)).await?;
            print(&format!(
                "node/{}: {revoked} certificate(s) revoked\n",
                args.node
            ))?;
            Ok(Exit::Success)
        }
        NodeCommand::Rekey(args) => {
            let api = Api::<Node>::new(ctx.connect().await?);
            rekey(&api, &args.node).await?;
            let revoked = crate::access::revoke(ctx, &format!("node:{}", args.node)).await?;
            print(&format!(
                "node/{} rekeyed: its key binding is cleared and {revoked} certificate(s) revoked; \
                 join it again with a new token (hmctl token create)\n",
                args.node
            ))?;
            Ok(Exit::Success)
        }
    }
}

/// Sets (or with amount 0 removes) node `name`'s stake record; returns its id.
async fn stake(api: &Api<Node>, name: &str, amount: u64) -> Result<Option<String>> {
    let record = (amount > 0).then(|| {
        let bytes: [u8; 12] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    for _ in 0..MAX_ATTEMPTS {
        let mut node = api
            .get("", name)
            .await
            .map_err(|s| ServerError::for_object(&s, "nodes", name))?;
        node.spec.get_or_insert_with(Default::default).stake =
            record.as_ref().map(|id| hypermesh_api::v1::NodeStake {
                amount,
                record_id: id.clone(),
                issued: Some(hypermesh_api::time::now()),
            });
        match api.update(&node).await {
            Ok(stored) => {
                let kept = stored.spec.and_then(|s| s.stake).map(|s| s.record_id);
                if kept != record {
                    bail!(
                        "node/{name}: the stake was not recorded (only an admin may issue stake)"
                    );
                }
                return Ok(record);
            }
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "nodes", name).into()),
        }
    }
    bail!("node/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts")
}

/// Clears node `name`'s identity (its FALCON key binding).
async fn rekey(api: &Api<Node>, name: &str) -> Result<()> {
    for _ in 0..MAX_ATTEMPTS {
        let mut node = api
            .get("", name)
            .await
            .map_err(|s| ServerError::for_object(&s, "nodes", name))?;
        node.spec.get_or_insert_with(Default::default).identity = None;
        match api.update(&node).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "nodes", name).into()),
        }
    }
    bail!("node/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts")
}

/// Clears the Suspect condition and taint of node `name`; false when it had neither.
pub async fn trust(api: &Api<Node>, name: &str) -> Result<bool> {
    let mut changed = false;
    let mut done = false;
    for _ in 0..MAX_ATTEMPTS {
        let mut node = api
            .get("", name)
            .await
            .map_err(|s| ServerError::for_object(&s, "nodes", name))?;
        let status = node.status.get_or_insert_with(Default::default);
        let Some(c) = status
            .conditions
            .iter_mut()
            .find(|c| c.r#type == SUSPECT_CONDITION && c.status == "True")
        else {
            done = true;
            break;
        };
        *c = Condition {
            r#type: SUSPECT_CONDITION.into(),
            status: "False".into(),
            reason: TRUSTED_REASON.into(),
            message: format!("trusted by an admin (was {}: {})", c.reason, c.message),
            last_transition_time: Some(hypermesh_api::time::now()),
        };
        match api.update_status(&node).await {
            Ok(_) => {
                changed = true;
                done = true;
                break;
            }
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "nodes", name).into()),
        }
    }
    if !done {
        bail!("node/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts");
    }
    for _ in 0..MAX_ATTEMPTS {
        let mut node = api
            .get("", name)
            .await
            .map_err(|s| ServerError::for_object(&s, "nodes", name))?;
        let spec = node.spec.get_or_insert_with(Default::default);
        let before = spec.taints.len();
        spec.taints.retain(|t| t.key != SUSPECT_TAINT);
        if spec.taints.len() == before {
            return Ok(changed);
        }
        match api.update(&node).await {
            Ok(_) => return Ok(true),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "nodes", name).into()),
        }
    }
    bail!("node/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts")
}
