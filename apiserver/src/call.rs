//! [`Call`]: one gRPC request on its way through the apiserver — its caller, its
//! metrics timer, and what the audit log records of it — and the `call!` macro every
//! handler runs its body in. [`Names`] says what a request names.

use std::sync::Arc;

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, DeleteRequest, GetRequest, ListRequest, WatchRequest};
use tonic::{Request, Response, Status};

use crate::caller::{Caller, PeerIdentity};
use crate::metrics::RequestTimer;
use crate::registry::Registry;

/// What a request names, for the audit log: namespace and name.
pub trait Names {
    /// `(namespace, name)`; empty when the request names none.
    fn names(&self) -> (String, String);
}

macro_rules! names_of_requests {
    ($($ty:ty => |$r:ident| $body:expr;)*) => {
        $(impl Names for $ty {
            fn names(&self) -> (String, String) {
                let $r = self;
                $body
            }
        })*
    };
}

names_of_requests! {
    GetRequest => |r| (r.namespace.clone(), r.name.clone());
    DeleteRequest => |r| (r.namespace.clone(), r.name.clone());
    ListRequest => |r| (r.namespace.clone(), String::new());
    WatchRequest => |r| (r.namespace.clone(), String::new());
    v1::BindRequest => |r| (r.namespace.clone(), r.name.clone());
    v1::LogsRequest => |r| (r.namespace.clone(), r.name.clone());
    v1::ProofChallengeRequest => |r| (String::new(), r.asset_name.clone());
    v1::IssueRequest => |r| (String::new(), r.identity.clone());
    v1::JoinRequest => |r| (String::new(), r.node_name.clone());
    v1::RenewRequest => |_r| (String::new(), String::new());
    v1::AgentHello => |r| (String::new(), r.node_name.clone());
    v1::NodeUsageReport => |r| (String::new(), r.node_name.clone());
    v1::UsageListRequest => |r| (r.namespace.clone(), String::new());
    v1::VersionRequest => |_r| (String::new(), String::new());
    v1::AccessReviewRequest => |_r| (String::new(), String::new());
    tonic::Streaming<v1::SessionFrame> => |_r| (String::new(), String::new());
    tonic::Streaming<v1::ExecInput> => |_r| (String::new(), String::new());
    tonic::Streaming<v1::ImageImportRequest> => |_r| (String::new(), String::new());
}

macro_rules! names_of_objects {
    ($($ty:ident),*) => {
        $(impl Names for v1::$ty {
            fn names(&self) -> (String, String) {
                (self.meta().namespace.clone(), self.meta().name.clone())
            }
        })*
    };
}

names_of_objects!(
    Namespace,
    Node,
    Asset,
    Workload,
    Route,
    Secret,
    Lease,
    Event,
    Role,
    RoleBinding,
    JoinToken,
    Certificate,
    Instance
);

/// One request on its way through: its metrics timer and what the audit log records.
pub struct Call<'a> {
    timer: RequestTimer<'a>,
    audit: Option<&'a crate::audit::AuditLog>,
    caller: Option<Arc<Caller>>,
    remote: Option<std::net::SocketAddr>,
    verb: &'static str,
    resource: &'static str,
    names: (String, String),
}

impl<'a> Call<'a> {
    /// Starts a call of `verb` on `resource` (a kind's plural).
    pub fn start<T: Names, K: crate::admission::Kind>(
        registry: &'a Registry<K>,
        verb: &'static str,
        request: &Request<T>,
    ) -> (Self, Result<Arc<Caller>, Status>) {
        let caller = registry.caller_of(request);
        let call = Call {
            timer: registry.metrics().request(K::KIND, verb),
            audit: registry.audit_log(),
            caller: caller.as_ref().ok().cloned(),
            remote: request
                .extensions()
                .get::<PeerIdentity>()
                .and_then(|p| p.remote)
                .or_else(|| request.remote_addr()),
            verb,
            resource: K::PLURAL,
            names: request.get_ref().names(),
        };
        (call, caller)
    }

    /// Records the outcome (metrics, audit) and returns it.
    pub fn finish<T>(self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        if let Some(audit) = self.audit {
            let code = match &result {
                Ok(_) => "OK".to_string(),
                Err(s) => format!("{:?}", s.code()),
            };
            audit.record(
                self.caller.as_deref(),
                self.remote,
                self.verb,
                self.resource,
                &self.names.0,
                &self.names.1,
                &code,
            );
        }
        self.timer.finish(result).map(Response::new)
    }
}

/// Runs `$body` (with `caller` bound) as one audited, timed call of `$verb`.
#[macro_export]
#[doc(hidden)]
macro_rules! call {
    ($registry:expr, $verb:literal, $request:ident, |$caller:ident, $inner:ident| $body:expr) => {{
        let (call, caller) = Call::start($registry, $verb, &$request);
        let $caller = match caller {
            Ok(c) => c,
            Err(e) => return call.finish(Err(e)),
        };
        if let Err(e) = $registry.rate_limit(&$caller) {
            return call.finish(Err(e));
        }
        let $inner = $request.into_inner();
        call.finish($body.await)
    }};
}
