//! The connection to containerd: one tonic channel over the unix socket, requests
//! stamped with the `hypermesh` namespace (and a lease while building content).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    CreateNamespaceRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, Namespace, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, version_client::VersionClient,
};
use tonic::Request;
use tonic::transport::Channel;

use crate::{Error, NAMESPACE};

/// gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC metadata key containerd reads the lease from.
const LEASE_HEADER: &str = "containerd-lease";

/// A connection to one containerd, scoped to one namespace.
#[derive(Clone, Debug)]
pub struct ContainerdClient {
    channel: Channel,
    namespace: String,
    socket: PathBuf,
}

/// The daemon's version, as containerd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonVersion {
    /// e.g. `1.6.20~ds1`.
    pub version: String,
    /// The build revision.
    pub revision: String,
}

impl ContainerdClient {
    /// Connects to the containerd socket at `socket` and makes sure the [`NAMESPACE`]
    /// namespace exists. Fails when nothing answers there.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, Error> {
        Self::connect_namespace(socket, NAMESPACE).await
    }

    /// As [`ContainerdClient::connect`], in another namespace (tests use this to isolate runs).
    pub async fn connect_namespace(
        socket: impl AsRef<Path>,
        namespace: &str,
    ) -> Result<Self, Error> {
        let socket = socket.as_ref().to_path_buf();
        let channel = containerd_client::connect(&socket)
            .await
            .map_err(|source| Error::Connect {
                socket: socket.clone(),
                source,
            })?;
        let client = ContainerdClient {
            channel,
            namespace: namespace.to_string(),
            socket,
        };
        client.ensure_namespace().await?;
        Ok(client)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The underlying channel, for service clients.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps `message` in a request carrying the namespace header.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        // A namespace name is validated by containerd to be a DNS label, so it is always
        // valid ASCII metadata; an invalid one is simply not sent and containerd rejects
        // the call with its own error.
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        request
    }

    /// As [`ContainerdClient::request`], also carrying `lease` so that content and
    /// snapshots created by the call are kept until the lease is deleted.
    pub(crate) fn leased_request<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut request = self.request(message);
        if let Ok(value) = lease.parse() {
            request.metadata_mut().insert(LEASE_HEADER, value);
        }
        request
    }

    /// The daemon's version.
    pub async fn version(&self) -> Result<DaemonVersion, Error> {
        let response = VersionClient::new(self.channel())
            .version(Request::new(()))
            .await
            .map_err(Error::call("version"))?
            .into_inner();
        Ok(DaemonVersion {
            version: response.version,
            revision: response.revision,
        })
    }

    /// Creates the namespace if it does not exist yet. (containerd 1.6's namespace `Get`
    /// answers OK with no labels for a namespace that does not exist, so this creates
    /// and treats `AlreadyExists` as success instead of looking first.)
    pub async fn ensure_namespace(&self) -> Result<(), Error> {
        let mut namespaces = NamespacesClient::new(self.channel());
        let created = namespaces
            // The namespace header too: containerd publishes the creation event in it.
            .create(self.request(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name: self.namespace.clone(),
                    labels: HashMap::new(),
                }),
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(status) => Err(Error::call("namespaces.create")(status)),
        }
    }

    /// Creates a lease that expires after `ttl` on its own if it is never deleted (so a
    /// crash mid-import leaves nothing pinned forever).
    pub(crate) async fn create_lease(
        &self,
        id: &str,
        ttl: std::time::Duration,
    ) -> Result<(), Error> {
        let mut labels = HashMap::new();
        labels.insert("containerd.io/gc.expire".to_string(), rfc3339_after(ttl));
        LeasesClient::new(self.channel())
            .create(self.request(CreateLeaseRequest {
                id: id.to_string(),
                labels,
            }))
            .await
            .map_err(Error::call("leases.create"))?;
        Ok(())
    }

    /// Deletes a lease; what it pinned becomes collectable unless referenced elsewhere.
    pub(crate) async fn delete_lease(&self, id: &str) -> Result<(), Error> {
        let result = LeasesClient::new(self.channel())
            .delete(self.request(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(Error::call("leases.delete")(status)),
        }
    }
}

/// `now + ttl` as an RFC 3339 UTC timestamp (the format containerd's gc labels use).
fn rfc3339_after(ttl: std::time::Duration) -> String {
    let at = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now() + ttl);
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_expiry_labels_are_rfc3339_utc() {
        let label = rfc3339_after(std::time::Duration::from_secs(3600));
        let parsed = chrono::DateTime::parse_from_rfc3339(&label).expect("RFC 3339");
        assert!(label.ends_with('Z'), "{label}");
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let ahead = parsed.timestamp() - now.timestamp();
        assert!((3590..=3610).contains(&ahead), "{label}");
    }
}
