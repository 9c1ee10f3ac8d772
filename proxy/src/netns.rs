//! Delivery on the target host: finds an Instance's containerd task (namespace
//! `hypermesh`, containers labelled with the Instance's uid) and connects to a port
//! from inside that task's own network namespace (`/proc/<pid>/ns/net`), where the
//! Instance listens on its loopback.
//!
//! A socket belongs to the network namespace of the thread that created it, so a
//! short-lived thread enters the namespace (`setns`), creates the socket and hands it
//! back; connecting and all I/O then happen on the runtime as usual. The thread exits
//! right after, so no pooled thread is ever left in another namespace.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{GetRequest, ListContainersRequest};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tonic::transport::Channel;

use crate::catalog::Endpoint;
use crate::header::Protocol;

/// containerd namespace of every HyperMesh container (the agent's).
pub const CONTAINERD_NAMESPACE: &str = "hypermesh";
/// Label carrying the owning Instance's uid on each container.
const LABEL_UID: &str = "hypermesh.io/instance-uid";
/// Label carrying the container's name within the Instance.
const LABEL_CONTAINER: &str = "hypermesh.io/container";
/// How long connecting inside the Instance may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a flow could not be delivered into an Instance.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// containerd cannot be reached.
    #[error("containerd at {socket}: {reason}")]
    Containerd {
        /// Its socket.
        socket: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The Instance has no running task here.
    #[error("instance {namespace}/{name}: no running container on this node")]
    NotRunning {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Entering the namespace or creating the socket failed.
    #[error("entering {path}: {source}")]
    Namespace {
        /// `/proc/<pid>/ns/net`.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing listens on the port (connection refused).
    #[error("port {port}: connection refused")]
    Refused {
        /// The port.
        port: u16,
    },
    /// Connecting failed otherwise.
    #[error("port {port}: {source}")]
    Connect {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than [`CONNECT_TIMEOUT`].
    #[error("port {port}: no answer within {CONNECT_TIMEOUT:?}")]
    TimedOut {
        /// The port.
        port: u16,
    },
}

/// Connects into Instances on this host.
#[derive(Clone, Debug)]
pub struct Delivery {
    socket: PathBuf,
    channel: Arc<tokio::sync::Mutex<Option<Channel>>>,
    /// uid → pid of the task last used, checked before reuse.
    pids: Arc<Mutex<HashMap<String, u32>>>,
}

impl Delivery {
    /// Delivery through the containerd at `socket` (connected on first use).
    pub fn new(socket: PathBuf) -> Self {
        Delivery {
            socket,
            channel: Arc::new(tokio::sync::Mutex::new(None)),
            pids: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn containerd_err(&self, reason: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Containerd {
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    async fn channel(&self) -> Result<Channel, DeliveryError> {
        let mut slot = self.channel.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let channel = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| self.containerd_err(e))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            tonic::metadata::MetadataValue::from_static(CONTAINERD_NAMESPACE),
        );
        request
    }

    /// The host pid of a running task of `endpoint`'s Instance: the container that
    /// declares `port` if one does, else the first by container name.
    async fn pid_of(
        &self,
        endpoint: &Endpoint,
        port: u16,
        containers: &[(String, Vec<u32>)],
    ) -> Result<u32, DeliveryError> {
        if let Some(pid) = self
            .pids
            .lock()
            .ok()
            .and_then(|p| p.get(&endpoint.uid).copied())
            && std::path::Path::new(&format!("/proc/{pid}/ns/net")).exists()
        {
            return Ok(pid);
        }
        let channel = self.channel().await?;
        let listed = ContainersClient::new(channel.clone())
            .list(Self::request(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_UID}\"=={}", endpoint.uid)],
            }))
            .await
            .map_err(|e| self.containerd_err(format!("containers.list: {}", e.message())))?
            .into_inner()
            .containers;
        let mut candidates: Vec<(bool, String, String)> = listed
            .into_iter()
            .map(|c| {
                let name = c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default();
                let declares = containers
                    .iter()
                    .any(|(n, ports)| *n == name && ports.contains(&u32::from(port)));
                (!declares, name, c.id)
            })
            .collect();
        candidates.sort();
        for (_, _, id) in candidates {
            let task = TasksClient::new(channel.clone())
                .get(Self::request(GetRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await;
            let Ok(task) = task else { continue };
            if let Some(pid) = task.into_inner().process.map(|p| p.pid).filter(|p| *p > 0) {
                if let Ok(mut pids) = self.pids.lock() {
                    pids.insert(endpoint.uid.clone(), pid);
                }
                return Ok(pid);
            }
        }
        Err(DeliveryError::NotRunning {
            namespace: endpoint.namespace.clone(),
            name: endpoint.name.clone(),
        })
    }

    fn forget(&self, uid: &str) {
        if let Ok(mut pids) = self.pids.lock() {
            pids.remove(uid);
        }
    }

    /// Connects to `port` on the loopback of `endpoint`'s Instance (IPv4 first, then
    /// IPv6). `containers` are the Instance's `(container name, declared ports)`.
    pub async fn connect_tcp(
        &self,
        endpoint: &Endpoint,
        port: u16,
        containers: &[(String, Vec<u32>)],
    ) -> Result<TcpStream, DeliveryError> {
        let pid = self.pid_of(endpoint, port, containers).await?;
        let mut last = DeliveryError::Refused { port };
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let socket = match socket_in(pid, ip, socket2::Type::STREAM).await {
                Ok(s) => s,
                Err(e) => {
                    self.forget(&endpoint.uid);
                    return Err(e);
                }
            };
            let stream: std::net::TcpStream = socket.into();
            let socket = TcpSocket::from_std_stream(stream);
            match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(SocketAddr::new(ip, port)))
                .await
            {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = DeliveryError::Refused { port };
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                Ok(Err(source)) => last = DeliveryError::Connect { port, source },
                Err(_) => return Err(DeliveryError::TimedOut { port }),
            }
        }
        Err(last)
    }

    /// A UDP socket inside `endpoint`'s Instance, connected to `port` on its loopback.
    pub async fn connect_udp(
        &self,
        endpoint: &Endpoint,
        port: u16,
        containers: &[(String, Vec<u32>)],
    ) -> Result<UdpSocket, DeliveryError> {
        let pid = self.pid_of(endpoint, port, containers).await?;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = socket_in(pid, ip, socket2::Type::DGRAM).await?;
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .map_err(|source| DeliveryError::Connect { port, source })?;
        let socket = UdpSocket::from_std(socket.into())
            .map_err(|source| DeliveryError::Connect { port, source })?;
        socket
            .connect(SocketAddr::new(ip, port))
            .await
            .map_err(|source| DeliveryError::Connect { port, source })?;
        Ok(socket)
    }
}

/// A non-blocking socket created inside the network namespace of process `pid`.
async fn socket_in(
    pid: u32,
    ip: IpAddr,
    kind: socket2::Type,
) -> Result<socket2::Socket, DeliveryError> {
    let path = format!("/proc/{pid}/ns/net");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    let spawned = std::thread::Builder::new()
        .name("hm-netns".into())
        .spawn(move || {
            let result = (|| {
                let ns = std::fs::File::open(&thread_path)?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                let domain = match ip {
                    IpAddr::V4(_) => socket2::Domain::IPV4,
                    IpAddr::V6(_) => socket2::Domain::IPV6,
                };
                let socket = socket2::Socket::new(domain, kind, None)?;
                socket.set_nonblocking(true)?;
                socket.set_cloexec(true)?;
                Ok::<_, std::io::Error>(socket)
            })();
            let _ = tx.send(result);
        });
    if let Err(source) = spawned {
        return Err(DeliveryError::Namespace { path, source });
    }
    match rx.await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(source)) => Err(DeliveryError::Namespace { path, source }),
        Err(_) => Err(DeliveryError::Namespace {
            path,
            source: std::io::Error::other("namespace thread ended without an answer"),
        }),
    }
}

/// `(container name, declared ports)` of an Instance, from its spec.
pub fn containers_of(instance: &hypermesh_api::v1::Instance) -> Vec<(String, Vec<u32>)> {
    instance
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            (
                c.name.clone(),
                c.ports.iter().map(|p| p.container_port).collect(),
            )
        })
        .collect()
}

impl Protocol {
    /// Name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}
