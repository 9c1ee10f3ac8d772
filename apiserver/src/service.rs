//! The gRPC services: every `<Kind>Service` is implemented once, generically, by
//! identifying the caller, forwarding to that kind's [`Registry`] (which authorizes
//! and admits) and recording the request in metrics.
//! Kind-specific calls (e.g. `InstanceService.Bind`, `Logs`, `Exec`) are added per kind.

use hypermesh_api::v1::{self, DeleteRequest, GetRequest, ListRequest, WatchRequest};
use tonic::{Request, Response, Status};

use crate::registry::{EventStream, Registry};
use crate::sessions;

macro_rules! kind_service {
    ($ty:ident, $module:ident, $service:ident $(, { $($extra:tt)* })?) => {
        #[tonic::async_trait]
        impl v1::$module::$service for Registry<v1::$ty> {
            async fn create(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                let timer = self.metrics().request(stringify!($ty), "Create");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::create(self, &caller, request.into_inner()).await).map(Response::new)
            }

            async fn get(&self, request: Request<GetRequest>) -> Result<Response<v1::$ty>, Status> {
                let timer = self.metrics().request(stringify!($ty), "Get");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                let request = request.into_inner();
                timer.finish(Registry::get(self, &caller, &request.namespace, &request.name).await).map(Response::new)
            }

            async fn list(&self, request: Request<ListRequest>) -> Result<Response<<v1::$ty as hypermesh_api::Resource>::List>, Status> {
                let timer = self.metrics().request(stringify!($ty), "List");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::list(self, &caller, request.into_inner()).await).map(Response::new)
            }

            async fn update(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                let timer = self.metrics().request(stringify!($ty), "Update");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::update(self, &caller, request.into_inner()).await).map(Response::new)
            }

            async fn update_status(&self, request: Request<v1::$ty>) -> Result<Response<v1::$ty>, Status> {
                let timer = self.metrics().request(stringify!($ty), "UpdateStatus");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::update_status(self, &caller, request.into_inner()).await).map(Response::new)
            }

            async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<v1::$ty>, Status> {
                let timer = self.metrics().request(stringify!($ty), "Delete");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::delete(self, &caller, request.into_inner()).await).map(Response::new)
            }

            type WatchStream = EventStream<v1::$ty>;

            async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                let timer = self.metrics().request(stringify!($ty), "Watch");
                let caller = match self.caller_of(&request) { Ok(c) => c, Err(e) => return timer.finish(Err(e)) };
                timer.finish(Registry::watch(self, &caller, request.into_inner()).await).map(Response::new)
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
        let timer = self.metrics().request("Node", "ImportImage");
        let caller = match self.caller_of(&request) {
            Ok(c) => c,
            Err(e) => return timer.finish(Err(e)),
        };
        timer
            .finish(
                sessions::import_image(self, &caller, self.sessions(), request.into_inner()).await,
            )
            .map(Response::new)
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
            let timer = self.metrics().request("Certificate", "Issue");
            let caller = match self.caller_of(&request) {
                Ok(c) => c,
                Err(e) => return timer.finish(Err(e)),
            };
            timer
                .finish(crate::join::issue(self, &caller, request.into_inner()).await)
                .map(Response::new)
        }
    }
);
kind_service!(Instance, instance_service_server, InstanceService, {
    async fn bind(
        &self,
        request: Request<v1::BindRequest>,
    ) -> Result<Response<v1::Instance>, Status> {
        let timer = self.metrics().request("Instance", "Bind");
        let caller = match self.caller_of(&request) {
            Ok(c) => c,
            Err(e) => return timer.finish(Err(e)),
        };
        timer
            .finish(Registry::bind(self, &caller, request.into_inner()).await)
            .map(Response::new)
    }

    type LogsStream = sessions::BoxStream<v1::LogChunk>;

    async fn logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let timer = self.metrics().request("Instance", "Logs");
        let caller = match self.caller_of(&request) {
            Ok(c) => c,
            Err(e) => return timer.finish(Err(e)),
        };
        timer
            .finish(sessions::logs(self, &caller, self.sessions(), request.into_inner()).await)
            .map(Response::new)
    }

    type ExecStream = sessions::BoxStream<v1::ExecOutput>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<v1::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let timer = self.metrics().request("Instance", "Exec");
        let caller = match self.caller_of(&request) {
            Ok(c) => c,
            Err(e) => return timer.finish(Err(e)),
        };
        timer
            .finish(sessions::exec(self, &caller, self.sessions(), request.into_inner()).await)
            .map(Response::new)
    }
});
