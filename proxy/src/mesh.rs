//! The running proxy's shared state and its two halves of a flow:
//! the **source** side resolves a global address (an Instance, or a Route balanced over
//! its ready Instances with a retry on the next one) and opens a stream to the proxy of
//! the Instance's node; the **target** side reads the stream's header and connects into
//! the Instance's network namespace, or, when it is a relay, passes the stream on to
//! the NAT'd node over the connection that node keeps open to it.
//!
//! This module holds the state and the connections between proxies (dialing, accepting,
//! the relay link); `source`, `target` and `forward` hold the two halves and the byte
//! pumps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::VarInt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::header::Reply;
use crate::metrics::Metrics;
use crate::netns::{Delivery, DeliveryError};
use crate::transport::{self, DIRECT_RETRY_AFTER, Path, Peers, TransportError};

mod balance;
mod counted;
mod forward;
mod source;
mod target;

pub use counted::Counted;
pub use forward::{read_datagram, reply_label, splice, splice_tcp, write_datagram};

/// How long the source waits for the far end's reply byte (longer than the far end's
/// own connect timeout into the Instance).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(8);
/// After this long without a reply, a peer that sent no packet at all since the header
/// went out counts as gone.
pub const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// Endpoints of a Route tried for one new connection.
pub const ROUTE_ATTEMPTS: usize = 3;
/// Copy buffer per direction of a spliced flow.
const SPLICE_BUFFER: usize = 64 * 1024;
/// Largest UDP datagram carried (the length prefix is 2 bytes).
const MAX_DATAGRAM: usize = 65_507;
/// A UDP flow without traffic either way for this long ends.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// Where the proxy finds its relay when its host accepts no inbound connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayChoice {
    /// This host is reachable: no relay.
    None,
    /// The proxy at this address.
    Addr(SocketAddr),
    /// Any reachable node of the cluster (one that publishes an endpoint and has no
    /// relay itself).
    Auto,
}

/// A connected flow from the source's point of view.
#[derive(Debug)]
pub enum Flow {
    /// The Instance runs on this host: a socket inside its namespace.
    Local(TcpStream),
    /// A UDP flow to an Instance on this host: a connected socket inside its namespace.
    LocalUdp(tokio::net::UdpSocket),
    /// A QUIC stream to the proxy of its node (or its relay).
    Remote {
        /// Towards the Instance.
        send: quinn::SendStream,
        /// From the Instance.
        recv: quinn::RecvStream,
        /// How the stream reaches the Instance's node.
        path: Path,
    },
}

/// The proxy's shared state.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.inner.node)
            .finish()
    }
}

struct Inner {
    node: String,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peers: Peers,
    catalog: Catalog,
    delivery: Delivery,
    direct_failed: Mutex<HashMap<String, Instant>>,
    /// Nodes that failed recently: their Route endpoints are tried last.
    suspects: balance::Suspects,
    dial_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Node → relay node, for nodes last reached through a relay.
    relayed_via: Mutex<HashMap<String, String>>,
    /// The relay this proxy is connected to, when it has one.
    own_relay: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// A peer's path as shown in metrics and status.
#[derive(Debug, Clone, PartialEq)]
pub struct PathStatus {
    /// The peer node.
    pub peer: String,
    /// Direct or through a relay.
    pub path: Path,
    /// Round-trip time of the connection carrying it.
    pub rtt: Option<Duration>,
}

impl Mesh {
    /// State for node `node` on `endpoint`.
    pub fn new(
        node: String,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        catalog: Catalog,
        delivery: Delivery,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Mesh {
        Mesh {
            inner: Arc::new(Inner {
                node,
                endpoint,
                client,
                peers: Peers::default(),
                catalog,
                delivery,
                direct_failed: Mutex::new(HashMap::new()),
                suspects: balance::Suspects::default(),
                dial_locks: Mutex::new(HashMap::new()),
                relayed_via: Mutex::new(HashMap::new()),
                own_relay: Mutex::new(None),
                metrics,
                shutdown,
            }),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// QUIC connections to other proxies open now.
    pub fn peer_connections(&self) -> usize {
        self.inner.peers.all().len()
    }

    /// The relay node this proxy is attached to, if any.
    pub fn own_relay(&self) -> Option<String> {
        self.inner.own_relay.lock().ok().and_then(|r| r.clone())
    }

    /// Accepts connections until shutdown.
    pub async fn accept_loop(self) {
        loop {
            let incoming = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                i = self.inner.endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { return };
            let mesh = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let started = Instant::now();
                let connection = match incoming.await {
                    Ok(c) => {
                        mesh.inner.metrics.connected("accept", started.elapsed());
                        c
                    }
                    Err(e) => {
                        mesh.inner.metrics.handshake_failures.inc();
                        info!(%remote, error = %e, "refused a QUIC connection");
                        return;
                    }
                };
                let Some(peer) = crate::tls::peer_node_name(&connection) else {
                    mesh.inner.metrics.handshake_failures.inc();
                    connection.close(VarInt::from_u32(2), b"no node name in certificate");
                    return;
                };
                debug!(%peer, %remote, "accepted a peer connection");
                mesh.inner.peers.insert(&peer, connection.clone(), false);
                mesh.serve_connection(peer, connection).await;
            });
        }
    }

    /// Serves the streams a peer opens on `connection` until it closes.
    async fn serve_connection(&self, peer: String, connection: quinn::Connection) {
        loop {
            let stream = tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                s = connection.accept_bi() => s,
            };
            match stream {
                Ok((send, recv)) => {
                    let mesh = self.clone();
                    let peer = peer.clone();
                    tokio::spawn(async move { mesh.handle_inbound(&peer, send, recv).await });
                }
                Err(e) => {
                    debug!(%peer, error = %e, "peer connection ended");
                    break;
                }
            }
        }
        self.inner.peers.remove(&peer, &connection);
    }

    fn dial_lock(&self, peer: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .dial_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        locks.entry(peer.to_string()).or_default().clone()
    }

    /// A direct connection to `peer`: the live one, else a dial of its published
    /// endpoint (skipped for a while after one failed).
    async fn direct(&self, peer: &str) -> Result<quinn::Connection, TransportError> {
        if let Some(c) = self.inner.peers.get(peer) {
            return Ok(c);
        }
        let lock = self.dial_lock(peer);
        let _held = lock.lock().await;
        if let Some(c) = self.inner.peers.get(peer) {
            return Ok(c);
        }
        let recently_failed = self
            .inner
            .direct_failed
            .lock()
            .ok()
            .and_then(|f| f.get(peer).copied())
            .is_some_and(|t| t.elapsed() < DIRECT_RETRY_AFTER);
        let index = self.inner.catalog.index();
        let addr = index
            .peer(peer)
            .and_then(|p| p.endpoint)
            .filter(|_| !recently_failed)
            .ok_or_else(|| TransportError::NoPath(peer.to_string()))?;
        let started = Instant::now();
        match transport::dial(&self.inner.endpoint, &self.inner.client, addr, peer).await {
            Ok((connection, _)) => {
                self.inner.metrics.connected("dial", started.elapsed());
                self.inner.peers.insert(peer, connection.clone(), true);
                if let Ok(mut f) = self.inner.direct_failed.lock() {
                    f.remove(peer);
                }
                let mesh = self.clone();
                let (p, c) = (peer.to_string(), connection.clone());
                tokio::spawn(async move { mesh.serve_connection(p, c).await });
                Ok(connection)
            }
            Err(e) => {
                self.inner.metrics.dial_failures.inc();
                if let Ok(mut f) = self.inner.direct_failed.lock() {
                    f.insert(peer.to_string(), Instant::now());
                }
                Err(e)
            }
        }
    }

    /// A connection that reaches `node`, and how: direct first, then its relay.
    pub async fn connection_to(
        &self,
        node: &str,
    ) -> Result<(quinn::Connection, Path), TransportError> {
        let direct_err = match self.direct(node).await {
            Ok(c) => {
                if let Ok(mut v) = self.inner.relayed_via.lock() {
                    v.remove(node);
                }
                return Ok((c, Path::Direct));
            }
            Err(e) => e,
        };
        let relay = self
            .inner
            .catalog
            .index()
            .peer(node)
            .and_then(|p| p.relay.clone());
        match relay {
            Some(relay) if relay != node && relay != self.inner.node => {
                let c = self.direct(&relay).await?;
                if let Ok(mut v) = self.inner.relayed_via.lock() {
                    v.insert(node.to_string(), relay.clone());
                }
                Ok((c, Path::Relay(relay)))
            }
            _ => Err(direct_err),
        }
    }

    /// The paths in use to every peer this proxy has talked to.
    pub fn paths(&self) -> Vec<PathStatus> {
        let mut out: Vec<PathStatus> = self
            .inner
            .peers
            .all()
            .into_iter()
            .map(|(peer, c)| PathStatus {
                peer,
                path: Path::Direct,
                rtt: Some(c.connection.rtt()),
            })
            .collect();
        let via = self
            .inner
            .relayed_via
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        for (node, relay) in via {
            if out.iter().any(|p| p.peer == node) {
                continue;
            }
            let rtt = self.inner.peers.get(&relay).map(|c| c.rtt());
            out.push(PathStatus {
                peer: node,
                path: Path::Relay(relay),
                rtt,
            });
        }
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }
    /// Keeps an outbound connection to a relay open (a NAT'd host receives its traffic
    /// over it), replacing a lost one within seconds.
    pub async fn keep_relay(self, choice: RelayChoice) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let candidates: Vec<(String, SocketAddr)> = match &choice {
                RelayChoice::None => return,
                RelayChoice::Addr(a) => vec![(crate::tls::ANY_NODE.to_string(), *a)],
                RelayChoice::Auto => self
                    .inner
                    .catalog
                    .index()
                    .reachable_peers()
                    .into_iter()
                    .filter(|(n, _)| *n != self.inner.node)
                    .collect(),
            };
            let mut attached = None;
            for (name, addr) in candidates {
                let started = Instant::now();
                match transport::dial(&self.inner.endpoint, &self.inner.client, addr, &name).await {
                    Ok((connection, peer)) if peer != self.inner.node => {
                        self.inner.metrics.connected("dial", started.elapsed());
                        attached = Some((connection, peer));
                        break;
                    }
                    Ok((connection, _)) => connection.close(VarInt::from_u32(0), b"self"),
                    Err(e) => debug!(error = %e, "relay dial failed"),
                }
            }
            let Some((connection, relay)) = attached else {
                tokio::select! {
                    _ = self.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            };
            backoff = Duration::from_millis(200);
            info!(%relay, "attached to relay");
            self.inner.peers.insert(&relay, connection.clone(), true);
            if let Ok(mut r) = self.inner.own_relay.lock() {
                *r = Some(relay.clone());
            }
            self.inner.metrics.relay_attached.set(1);
            self.serve_connection(relay.clone(), connection).await;
            self.inner.metrics.relay_attached.set(0);
            warn!(%relay, "relay connection lost; attaching again");
        }
    }
}

/// The reply byte for a failed delivery into an Instance.
fn delivery_reply(e: &DeliveryError) -> Reply {
    match e {
        DeliveryError::Refused { .. } => Reply::Refused,
        DeliveryError::TimedOut { .. } => Reply::TimedOut,
        _ => Reply::Unreachable,
    }
}
