//! `AssetService.Challenge`: a fresh one-time proof challenge for an Asset, bound to
//! the node and the asset and persisted in the node's proof ledger. A node asks only
//! for its own Assets; an admin for any node's.

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use tonic::Status;

use crate::admission::Operation;
use crate::caller::Caller;
use crate::registry::Registry;

impl Registry<v1::Asset> {
    /// Issues a challenge for `request.asset_name` of `request.node_name` (default:
    /// the calling node).
    pub async fn challenge(
        &self,
        caller: &Caller,
        request: v1::ProofChallengeRequest,
    ) -> Result<v1::ProofChallenge, Status> {
        self.authorize(caller, Operation::Challenge, "", &request.asset_name)
            .await?;
        let node = match (caller.node_name(), request.node_name.as_str()) {
            (Some(own), "") => own.to_string(),
            (Some(own), asked) if asked != own => {
                return Err(status(
                    Reason::Forbidden,
                    format!("node {own:?} cannot ask for challenges of node {asked:?}"),
                ));
            }
            (_, asked) => asked.to_string(),
        };
        for (field, value) in [("node_name", &node), ("asset_name", &request.asset_name)] {
            if let Some(problem) = hypermesh_api::validation::dns_subdomain_problem(value) {
                return Err(status(Reason::FieldInvalid, format!("{field}: {problem}")));
            }
        }
        crate::proof_ledger::issue(
            self.store(),
            &node,
            &request.asset_name,
            self.proof_settings(),
        )
        .await
    }
}
