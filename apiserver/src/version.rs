//! `VersionService`: what this apiserver runs (its release, the API version, the
//! store), for `hmctl version`. Any authenticated caller may ask; a TLS client without
//! a certificate of this cluster gets UNAUTHENTICATED, like every call but Join.

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{self, ServerVersion, VersionRequest};
use tonic::{Request, Response, Status};

use crate::call::Call;
use crate::registry::Registry;

/// This build of the apiserver.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The service; the registry only carries the request's authentication, metrics,
/// audit log and rate limits (no object is read).
#[derive(Clone)]
pub struct VersionService {
    /// For the caller, metrics, audit and rate limits of each call.
    pub namespaces: Registry<v1::Namespace>,
    /// The store backend's name (`redb`, `etcd`).
    pub store: &'static str,
}

impl std::fmt::Debug for VersionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl v1::version_service_server::VersionService for VersionService {
    async fn get(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<ServerVersion>, Status> {
        crate::call!(&self.namespaces, "Version", request, |caller, _req| async {
            if !caller.is_authenticated() {
                return Err(status(
                    Reason::Unauthenticated,
                    "the server version needs a client certificate of this cluster",
                ));
            }
            Ok(ServerVersion {
                version: SERVER_VERSION.to_string(),
                api_version: "hypermesh.io/v1".to_string(),
                store: self.store.to_string(),
            })
        })
    }
}
