//! The gRPC services: every `<Kind>Service` is implemented once, generically, by
//! identifying the caller, forwarding to that kind's [`Registry`] (which authorizes
//! and admits), and recording the request in metrics and the audit log ([`Call`]).
//! Kind-specific calls (e.g. `InstanceService.Bind`, `Logs`, `Exec`) are added per kind.

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, DeleteRequest, GetRequest, ListRequest, WatchRequest};
use tonic::{Request, Response, Status};

use crate::caller::{Caller, PeerIdentity};
use crate::metrics::RequestTimer;
use crate::registry::{EventStream, Registry};
use crate::sessions;

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
    v1::IssueRequest => |r| (String::new(), r.identity.clone());
    v1::JoinRequest => |r| (String::new(), r.node_name.clone());
    v1::RenewRequest => |_r| (String::new(), String::new());
    v1::AgentHello => |r| (String::new(), r.node_name.clone());
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
    caller: Option<Caller>,
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
    ) -> (Self, Result<Caller, Status>) {
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
                self.caller.as_ref(),
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
        let $inner = $request.into_inner();
        call.finish($body.await)
    }};
}

macro_rules! kind_service {
    ($ty:ident, $module:ident, $service:ident $(, { $($extra:tt)* })?) => {
        #[tonic::async_trait]
        impl v1::$module::$service for Registry<v1::$ty> {
            async fn create(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                call!(self, "Create", request, |caller, object| Registry::create(self, &caller, object))
            }

            async fn get(&self, request: Request<GetRequest>) -> Result<Response<v1::$ty>, Status> {
                call!(self, "Get", request, |caller, r| Registry::get(self, &caller, &r.namespace, &r.name))
            }

            async fn list(&self, request: Request<ListRequest>) -> Result<Response<<v1::$ty as hypermesh_api::Resource>::List>, Status> {
                call!(self, "List", request, |caller, r| Registry::list(self, &caller, r))
            }

            async fn update(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                call!(self, "Update", request, |caller, object| Registry::update(self, &caller, object))
            }

            async fn update_status(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                call!(self, "UpdateStatus", request, |caller, object| Registry::update_status(self, &caller, object))
            }

            async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<v1::$ty>, Status> {
                call!(self, "Delete", request, |caller, r| Registry::delete(self, &caller, r))
            }

            type WatchStream = EventStream<v1::$ty>;

            async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                call!(self, "Watch", request, |caller, r| Registry::watch(self, &caller, r))
            }

            $($($extra)*)?
        }
    };
}

kind_service!(Namespace, namespace_service_server, NamespaceService);
kind_service!(Node, node_service_server, NodeService, {
    async fn import_image(
        &self,
        request: Request<tonic::Streaming<v1::ImageImportRequest>>,
    ) -> Result<Response<v1::ImageImportResponse>, Status> {
        call!(self, "ImportImage", request, |caller, input| {
            sessions::import_image(self, &caller, self.sessions(), input)
        })
    }
});
kind_service!(Asset, asset_service_server, AssetService);
kind_service!(Workload, workload_service_server, WorkloadService);
kind_service!(Route, route_service_server, RouteService);
kind_service!(Secret, secret_service_server, SecretService);
kind_service!(Lease, lease_service_server, LeaseService);
kind_service!(Event, event_service_server, EventService);
kind_service!(Role, role_service_server, RoleService);
kind_service!(RoleBinding, role_binding_service_server, RoleBindingService);
kind_service!(JoinToken, join_token_service_server, JoinTokenService);
kind_service!(
    Certificate,
    certificate_service_server,
    CertificateService,
    {
        async fn issue(
            &self,
            request: Request<v1::IssueRequest>,
        ) -> Result<Response<v1::JoinResponse>, Status> {
            call!(self, "Issue", request, |caller, r| crate::join::issue(
                self, &caller, r
            ))
        }
    }
);
kind_service!(Instance, instance_service_server, InstanceService, {
    async fn bind(
        &self,
        request: Request<v1::BindRequest>,
    ) -> Result<Response<v1::Instance>, Status> {
        call!(self, "Bind", request, |caller, r| Registry::bind(
            self, &caller, r
        ))
    }

    type LogsStream = sessions::BoxStream<v1::LogChunk>;

    async fn logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        call!(self, "Logs", request, |caller, r| sessions::logs(
            self,
            &caller,
            self.sessions(),
            r
        ))
    }

    type ExecStream = sessions::BoxStream<v1::ExecOutput>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<v1::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        call!(self, "Exec", request, |caller, input| sessions::exec(
            self,
            &caller,
            self.sessions(),
            input
        ))
    }
});
