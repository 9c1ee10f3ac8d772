//! The running proxy's shared state and its two halves of a flow:
//! the **source** side resolves a global address (an Instance, or a Route balanced over
//! its ready Instances with a retry on the next one) and opens a stream to the proxy of
//! the Instance's node; the **target** side reads the stream's header and connects into
//! the Instance's network namespace, or, when it is a relay, passes the stream on to
//! the NAT'd node over the connection that node keeps open to it.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::VarInt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, Endpoint, Target};
use crate::header::{Protocol, Reply, StreamHeader, codes};
use crate::metrics::Metrics;
use crate::netns::{Delivery, DeliveryError, containers_of};
use crate::transport::{self, DIRECT_RETRY_AFTER, Path, Peers, TransportError};

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
                let connection = match incoming.await {
                    Ok(c) => c,
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
        match transport::dial(&self.inner.endpoint, &self.inner.client, addr, peer).await {
            Ok((connection, _)) => {
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

    /// Opens a flow to `address`:`port`: an Instance directly, a Route over its ready
    /// Instances (trying up to [`ROUTE_ATTEMPTS`] of them).
    pub async fn connect(
        &self,
        address: Ipv6Addr,
        port: u16,
        protocol: Protocol,
    ) -> Result<Flow, Reply> {
        let index = self.inner.catalog.index();
        let (candidates, port) = match index.target(&address) {
            None => {
                self.inner.metrics.flow("source", "unknown_address");
                return Err(Reply::UnknownAddress);
            }
            Some(Target::Instance(e)) => (vec![e.clone()], port),
            Some(Target::Route(r)) => {
                let Some(target_port) = r.target_port(port, protocol) else {
                    self.inner.metrics.flow("source", "refused");
                    return Err(Reply::Refused);
                };
                let rotation = r.rotation();
                if rotation.is_empty() {
                    self.inner.metrics.flow("source", "no_endpoints");
                    return Err(Reply::Unreachable);
                }
                (
                    rotation.into_iter().take(ROUTE_ATTEMPTS).collect(),
                    target_port,
                )
            }
        };
        let mut last = Reply::Unreachable;
        for (attempt, endpoint) in candidates.iter().enumerate() {
            if attempt > 0 {
                self.inner.metrics.retries.inc();
            }
            match self.open(endpoint, port, protocol).await {
                Ok(flow) => {
                    self.inner.metrics.flow("source", "connected");
                    return Ok(flow);
                }
                Err(reply) => {
                    debug!(instance = %endpoint.name, node = %endpoint.node, ?reply, "endpoint failed");
                    last = reply;
                }
            }
        }
        self.inner.metrics.flow("source", reply_label(last));
        Err(last)
    }

    /// One attempt at one Instance.
    async fn open(
        &self,
        endpoint: &Endpoint,
        port: u16,
        protocol: Protocol,
    ) -> Result<Flow, Reply> {
        if endpoint.node == self.inner.node {
            let instance = self
                .inner
                .catalog
                .instance(&endpoint.namespace, &endpoint.name);
            let containers = instance.map(|i| containers_of(&i)).unwrap_or_default();
            let delivery = &self.inner.delivery;
            return match protocol {
                Protocol::Tcp => delivery
                    .connect_tcp(endpoint, port, &containers)
                    .await
                    .map(Flow::Local),
                Protocol::Udp => delivery
                    .connect_udp(endpoint, port, &containers)
                    .await
                    .map(Flow::LocalUdp),
            }
            .map_err(|e| delivery_reply(&e));
        }
        let (send, recv) = self
            .open_stream(
                &endpoint.node,
                StreamHeader {
                    address: endpoint.address,
                    port,
                    protocol,
                    relayed: false,
                },
            )
            .await?;
        Ok(Flow::Remote { send, recv })
    }

    /// Opens a stream to the proxy of `node` (or its relay), sends `header` and waits
    /// for the reply.
    pub async fn open_stream(
        &self,
        node: &str,
        header: StreamHeader,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Reply> {
        let (connection, path) = self.connection_to(node).await.map_err(|e| {
            debug!(%node, error = %e, "no path");
            Reply::Unreachable
        })?;
        let received_before = connection.stats().udp_rx.datagrams;
        let attempt = async {
            let (mut send, mut recv) =
                connection.open_bi().await.map_err(|_| Reply::Unreachable)?;
            header
                .write(&mut send)
                .await
                .map_err(|_| Reply::Unreachable)?;
            let mut reply = [0u8; 1];
            recv.read_exact(&mut reply)
                .await
                .map_err(|_| Reply::Unreachable)?;
            match Reply::from_byte(reply[0]) {
                Reply::Connected => Ok((send, recv)),
                other => Err(other),
            }
        };
        let mut attempt = std::pin::pin!(attempt);
        if let Ok(result) = tokio::time::timeout(LIVENESS_CHECK, &mut attempt).await {
            return result;
        }
        // No reply yet. A live peer has at least acknowledged the header by now; one
        // that sent nothing at all is gone (killed, unplugged): drop its connection so
        // this flow moves on to another endpoint and the next one dials afresh.
        if connection.stats().udp_rx.datagrams == received_before {
            warn!(%node, ?path, "peer silent; dropping its connection");
            let peer = match &path {
                Path::Direct => node.to_string(),
                Path::Relay(r) => r.clone(),
            };
            self.inner.peers.remove(&peer, &connection);
            connection.close(VarInt::from_u32(3), b"unresponsive");
            return Err(Reply::Unreachable);
        }
        // The peer is alive, the Instance is slow: wait for its answer.
        match tokio::time::timeout(REPLY_TIMEOUT.saturating_sub(LIVENESS_CHECK), attempt).await {
            Ok(result) => result,
            Err(_) => Err(Reply::TimedOut),
        }
    }

    /// Target side of one stream a peer opened.
    async fn handle_inbound(
        &self,
        peer: &str,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let header = match StreamHeader::read(&mut recv).await {
            Ok(h) => h,
            Err(e) => {
                self.inner.metrics.bad_headers.inc();
                info!(%peer, error = %e, "closing a stream with a bad header");
                let _ = send.reset(VarInt::from_u32(codes::BAD_HEADER));
                let _ = recv.stop(VarInt::from_u32(codes::BAD_HEADER));
                return;
            }
        };
        let index = self.inner.catalog.index();
        let endpoint = match index.target(&header.address) {
            Some(Target::Instance(e)) => e.clone(),
            _ => {
                self.inner.metrics.flow("target", "unknown_address");
                let _ = send.write_all(&[Reply::UnknownAddress as u8]).await;
                let _ = send.finish();
                return;
            }
        };
        if endpoint.node != self.inner.node {
            if header.relayed {
                self.inner.metrics.flow("target", "unknown_address");
                let _ = send.write_all(&[Reply::UnknownAddress as u8]).await;
                let _ = send.finish();
                return;
            }
            return self.relay_stream(peer, &endpoint, header, send, recv).await;
        }
        let containers = self
            .inner
            .catalog
            .instance(&endpoint.namespace, &endpoint.name)
            .map(|i| containers_of(&i))
            .unwrap_or_default();
        match header.protocol {
            Protocol::Tcp => {
                match self
                    .inner
                    .delivery
                    .connect_tcp(&endpoint, header.port, &containers)
                    .await
                {
                    Ok(stream) => {
                        if send.write_all(&[Reply::Connected as u8]).await.is_err() {
                            return;
                        }
                        self.inner.metrics.flow("target", "connected");
                        splice_tcp(stream, send, recv, &self.inner.metrics).await;
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "delivery failed");
                        let reply = delivery_reply(&e);
                        self.inner.metrics.flow("target", reply_label(reply));
                        let _ = send.write_all(&[reply as u8]).await;
                        let _ = send.finish();
                    }
                }
            }
            Protocol::Udp => {
                match self
                    .inner
                    .delivery
                    .connect_udp(&endpoint, header.port, &containers)
                    .await
                {
                    Ok(socket) => {
                        if send.write_all(&[Reply::Connected as u8]).await.is_err() {
                            return;
                        }
                        self.inner.metrics.flow("target", "connected");
                        pump_udp(socket, send, recv).await;
                    }
                    Err(e) => {
                        let reply = delivery_reply(&e);
                        self.inner.metrics.flow("target", reply_label(reply));
                        let _ = send.write_all(&[reply as u8]).await;
                        let _ = send.finish();
                    }
                }
            }
        }
    }

    /// Relay side: passes a stream for an Instance on another node on over the live
    /// connection that node keeps to this proxy.
    async fn relay_stream(
        &self,
        peer: &str,
        endpoint: &Endpoint,
        header: StreamHeader,
        mut send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let Some(connection) = self.inner.peers.get(&endpoint.node) else {
            self.inner.metrics.flow("relay", "unreachable");
            let _ = send.write_all(&[Reply::Unreachable as u8]).await;
            let _ = send.finish();
            return;
        };
        let forwarded = StreamHeader {
            relayed: true,
            ..header
        };
        let attempt = async {
            let (mut s2, mut r2) = connection.open_bi().await.map_err(|_| Reply::Unreachable)?;
            forwarded
                .write(&mut s2)
                .await
                .map_err(|_| Reply::Unreachable)?;
            let mut reply = [0u8; 1];
            r2.read_exact(&mut reply)
                .await
                .map_err(|_| Reply::Unreachable)?;
            Ok::<_, Reply>((s2, r2, Reply::from_byte(reply[0])))
        };
        let Ok(Ok((s2, r2, reply))) = tokio::time::timeout(REPLY_TIMEOUT, attempt).await else {
            self.inner.metrics.flow("relay", "unreachable");
            let _ = send.write_all(&[Reply::Unreachable as u8]).await;
            let _ = send.finish();
            return;
        };
        if send.write_all(&[reply as u8]).await.is_err() || reply != Reply::Connected {
            let _ = send.finish();
            return;
        }
        self.inner.metrics.flow("relay", "connected");
        debug!(from = %peer, to = %endpoint.node, "relaying a stream");
        let mut a = tokio::io::join(recv, send);
        let mut b = tokio::io::join(r2, s2);
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER)
                .await;
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
                match transport::dial(&self.inner.endpoint, &self.inner.client, addr, &name).await {
                    Ok((connection, peer)) if peer != self.inner.node => {
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

fn delivery_reply(e: &DeliveryError) -> Reply {
    match e {
        DeliveryError::Refused { .. } => Reply::Refused,
        DeliveryError::TimedOut { .. } => Reply::TimedOut,
        _ => Reply::Unreachable,
    }
}

/// Label of a reply in the flows metric.
pub fn reply_label(reply: Reply) -> &'static str {
    match reply {
        Reply::Connected => "connected",
        Reply::UnknownAddress => "unknown_address",
        Reply::Refused => "refused",
        Reply::Unreachable => "unreachable",
        Reply::TimedOut => "timed_out",
    }
}

/// Copies both ways between a TCP socket and a QUIC stream until both ends finished.
pub async fn splice_tcp(
    mut stream: TcpStream,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    metrics: &Metrics,
) {
    metrics.open_flows.inc();
    let mut quic = tokio::io::join(recv, send);
    let result = tokio::io::copy_bidirectional_with_sizes(
        &mut stream,
        &mut quic,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await;
    if let Err(e) = result {
        debug!(error = %e, "flow ended with an error");
        let (recv, mut send) = quic.into_inner();
        let _ = send.reset(VarInt::from_u32(codes::FLOW_ABORTED));
        drop(recv);
    }
    metrics.open_flows.dec();
}

/// Copies both ways between a client socket and a flow.
pub async fn splice(mut client: TcpStream, flow: Flow, metrics: &Metrics) {
    match flow {
        Flow::Local(mut stream) => {
            metrics.open_flows.inc();
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut stream,
                SPLICE_BUFFER,
                SPLICE_BUFFER,
            )
            .await;
            metrics.open_flows.dec();
        }
        Flow::Remote { send, recv } => splice_tcp(client, send, recv, metrics).await,
        // A TCP client never gets a UDP flow (connect is called with the client's
        // protocol).
        Flow::LocalUdp(_) => {}
    }
}

/// Target side of a UDP flow: datagrams framed as `len(2) ‖ bytes` on the stream.
async fn pump_udp(
    socket: tokio::net::UdpSocket,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let socket = Arc::new(socket);
    let inbound = {
        let socket = socket.clone();
        async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let mut len = [0u8; 2];
                if recv.read_exact(&mut len).await.is_err() {
                    return;
                }
                let len = usize::from(u16::from_be_bytes(len));
                if len > MAX_DATAGRAM {
                    return;
                }
                if recv.read_exact(&mut buf[..len]).await.is_err() {
                    return;
                }
                let _ = socket.send(&buf[..len]).await;
            }
        }
    };
    let outbound = async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let n = match tokio::time::timeout(UDP_IDLE, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => break,
            };
            let Ok(len) = u16::try_from(n) else { continue };
            if send.write_all(&len.to_be_bytes()).await.is_err()
                || send.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
        let _ = send.finish();
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// Writes one UDP datagram onto a flow stream.
pub async fn write_datagram(send: &mut quinn::SendStream, datagram: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(datagram.len()).map_err(|_| std::io::Error::other("datagram too large"))?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(datagram).await?;
    Ok(())
}

/// Reads one UDP datagram from a flow stream into `buf`; `None` at the end.
pub async fn read_datagram(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Option<usize> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > buf.len() {
        return None;
    }
    recv.read_exact(&mut buf[..len]).await.ok()?;
    Some(len)
}
