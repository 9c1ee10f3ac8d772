//! `AccessReviewService`: "may I do this?" answered for the caller by the apiserver's
//! own authorize phase ([`crate::admission::Admission::authorize`]), without doing
//! anything. `hmctl dashboard` asks it before offering scale, delete or cordon, so a
//! viewer's page shows no write actions; the writes themselves are authorized again
//! when they come.

use hypermesh_api::resource::{KIND_INFOS, KindInfo};
use hypermesh_api::v1::{self, AccessCheck, AccessReviewRequest, AccessReviewResponse};
use tonic::{Code, Request, Response, Status};

use crate::admission::Operation;
use crate::call::Call;
use crate::caller::Caller;
use crate::registry::Registry;

/// Most questions one request may ask.
pub const MAX_CHECKS: usize = 64;

/// The service; the registry is only the way to the authorize phase and the store.
#[derive(Clone)]
pub struct AccessReviewService {
    /// Any registry: its kind is not used.
    pub nodes: Registry<v1::Node>,
}

impl std::fmt::Debug for AccessReviewService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessReviewService")
            .finish_non_exhaustive()
    }
}

/// The operation and kind a question names, or the field that is wrong.
fn parse(check: &AccessCheck, at: usize) -> Result<(Operation, &'static KindInfo), Status> {
    let field = |f: &str| format!("checks[{at}].{f}");
    let (plural, sub) = match check.resource.split_once('/') {
        Some((plural, sub)) => (plural, Some(sub)),
        None => (check.resource.as_str(), None),
    };
    let kind = KIND_INFOS
        .iter()
        .find(|k| k.plural == plural)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{}: unknown resource {plural:?} (a plural kind name such as \"workloads\")",
                field("resource")
            ))
        })?;
    let operation = match (check.verb.as_str(), sub) {
        ("get", None) => Operation::Get,
        ("get", Some("logs")) => Operation::Logs,
        ("get", Some("data")) => Operation::Reveal,
        ("list", None) => Operation::List,
        ("watch", None) => Operation::Watch,
        ("create", None) => Operation::Create,
        ("create", Some("exec")) => Operation::Exec,
        ("create", Some("bind")) => Operation::Bind,
        ("create", Some("import")) => Operation::ImportImage,
        ("update", None) => Operation::Update,
        ("update", Some("status")) => Operation::UpdateStatus,
        ("delete", None) => Operation::Delete,
        (verb @ ("get" | "list" | "watch" | "create" | "update" | "delete"), Some(sub)) => {
            return Err(Status::invalid_argument(format!(
                "{}: {verb:?} does not apply to the subresource {sub:?}",
                field("resource")
            )));
        }
        (verb, _) => {
            return Err(Status::invalid_argument(format!(
                "{}: {verb:?} is not one of get, list, watch, create, update, delete",
                field("verb")
            )));
        }
    };
    Ok((operation, kind))
}

impl AccessReviewService {
    async fn check(
        &self,
        caller: &Caller,
        request: AccessReviewRequest,
    ) -> Result<AccessReviewResponse, Status> {
        if request.checks.len() > MAX_CHECKS {
            return Err(Status::invalid_argument(format!(
                "checks: {} questions, at most {MAX_CHECKS}",
                request.checks.len()
            )));
        }
        let mut allowed = Vec::with_capacity(request.checks.len());
        for (at, check) in request.checks.iter().enumerate() {
            let (operation, kind) = parse(check, at)?;
            let namespace = if kind.namespaced {
                check.namespace.as_str()
            } else {
                ""
            };
            match self
                .nodes
                .authorize_kind(caller, operation, kind, namespace, &check.name)
                .await
            {
                Ok(()) => allowed.push(true),
                Err(e) if e.code() == Code::PermissionDenied => allowed.push(false),
                Err(e) => return Err(e),
            }
        }
        Ok(AccessReviewResponse {
            identity: caller.name.clone(),
            allowed,
        })
    }
}

#[tonic::async_trait]
impl v1::access_review_service_server::AccessReviewService for AccessReviewService {
    async fn check(
        &self,
        request: Request<AccessReviewRequest>,
    ) -> Result<Response<AccessReviewResponse>, Status> {
        crate::call!(&self.nodes, "AccessReview", request, |caller, req| async {
            self.check(&caller, req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(verb: &str, resource: &str) -> AccessCheck {
        AccessCheck {
            verb: verb.into(),
            resource: resource.into(),
            ..Default::default()
        }
    }

    #[test]
    fn questions_name_an_operation_and_a_kind() {
        let (op, kind) = parse(&check("update", "workloads"), 0).unwrap();
        assert_eq!((op, kind.plural), (Operation::Update, "workloads"));
        let (op, _) = parse(&check("get", "instances/logs"), 0).unwrap();
        assert_eq!(op, Operation::Logs);
        let err = parse(&check("scale", "workloads"), 3).unwrap_err();
        assert!(err.message().starts_with("checks[3].verb: "), "{err:?}");
        let err = parse(&check("get", "widgets"), 1).unwrap_err();
        assert!(err.message().starts_with("checks[1].resource: "), "{err:?}");
        let err = parse(&check("delete", "instances/logs"), 0).unwrap_err();
        assert!(err.message().contains("subresource"), "{err:?}");
    }
}
