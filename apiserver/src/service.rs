//! The gRPC services: every `<Kind>Service` is implemented once, generically, by
//! identifying the caller, forwarding to that kind's [`Registry`] (which authorizes
//! and admits), and recording the request in metrics and the audit log ([`Call`]).
//! Kind-specific calls (e.g. `InstanceService.Bind`, `Logs`, `Exec`) are added per kind.

use hypermesh_api::v1::{self, DeleteRequest, GetRequest, ListRequest, WatchRequest};
use tonic::{Request, Response, Status};

use crate::call::Call;
use crate::registry::{EventStream, Registry};
use crate::sessions;

macro_rules! kind_service {
    ($ty:ident, $module:ident, $service:ident $(, { $($extra:tt)* })?) => {
        #[tonic::async_trait]
        impl v1::$module::$service for Registry<v1::$ty> {
            async fn create(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                crate::call!(self, "Create", request, |caller, object| Registry::create(self, &caller, object))
            }

            async fn get(&self, request: Request<GetRequest>) -> Result<Response<v1::$ty>, Status> {
                crate::call!(self, "Get", request, |caller, r| Registry::get(self, &caller, &r.namespace, &r.name))
            }

            async fn list(&self, request: Request<ListRequest>) -> Result<Response<<v1::$ty as hypermesh_api::Resource>::List>, Status> {
                crate::call!(self, "List", request, |caller, r| Registry::list(self, &caller, r))
            }

            async fn update(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                crate::call!(self, "Update", request, |caller, object| Registry::update(self, &caller, object))
            }

            async fn update_status(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                crate::call!(self, "UpdateStatus", request, |caller, object| Registry::update_status(self, &caller, object))
            }

            async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<v1::$ty>, Status> {
                crate::call!(self, "Delete", request, |caller, r| Registry::delete(self, &caller, r))
            }

            type WatchStream = EventStream<v1::$ty>;

            async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                crate::call!(self, "Watch", request, |caller, r| Registry::watch(self, &caller, r))
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
        crate::call!(self, "ImportImage", request, |caller, input| {
            sessions::import_image(self, &caller, self.sessions(), input)
        })
    }
});
kind_service!(Asset, asset_service_server, AssetService, {
    async fn challenge(
        &self,
        request: Request<v1::ProofChallengeRequest>,
    ) -> Result<Response<v1::ProofChallenge>, Status> {
        crate::call!(self, "Challenge", request, |caller, r| Registry::challenge(
            self, &caller, r
        ))
    }
});
kind_service!(Workload, workload_service_server, WorkloadService);
kind_service!(Route, route_service_server, RouteService);
// SecretService is written out in `crate::secrets`: what a reader gets depends on who asks.
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
            crate::call!(self, "Issue", request, |caller, r| crate::join::issue(
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
        crate::call!(self, "Bind", request, |caller, r| Registry::bind(
            self, &caller, r
        ))
    }

    type LogsStream = sessions::BoxStream<v1::LogChunk>;

    async fn logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        crate::call!(self, "Logs", request, |caller, r| sessions::logs(
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
        crate::call!(self, "Exec", request, |caller, input| sessions::exec(
            self,
            &caller,
            self.sessions(),
            input
        ))
    }
});
