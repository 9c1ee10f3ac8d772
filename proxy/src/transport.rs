//! The QUIC side: one quinn endpoint (one UDP socket) that both accepts and dials, one
//! connection per peer node kept in [`Peers`], keep-alives, and the choice of path to a
//! node: an existing connection, else a direct dial of the endpoint it publishes, else
//! its relay (a NAT'd node keeps an outbound connection to the relay, and the relay
//! passes streams on over it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::tls::{self, NodeCredentials, TlsError};

/// Interval of QUIC keep-alive pings.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection without any packet for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a direct dial may take before the relay is used instead.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed direct dial, how long new flows go straight to the relay.
pub const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// Why no connection to a peer could be had.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The endpoint could not be set up.
    #[error("QUIC endpoint on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS material problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Dialing failed.
    #[error("dialing {peer} at {addr}: {reason}")]
    Dial {
        /// Node name (or address).
        peer: String,
        /// Address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Neither a direct endpoint nor a relay is known, or both failed.
    #[error("node {0}: no path (no reachable endpoint and no relay)")]
    NoPath(String),
}

/// How a flow reaches a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Over a connection between the two proxies (whichever side dialed it).
    Direct,
    /// Through the proxy of the named relay node.
    Relay(String),
}

/// A live connection to a peer.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    /// The connection.
    pub connection: quinn::Connection,
    /// When it was established.
    pub since: Instant,
    /// Whether this side dialed it.
    pub outbound: bool,
}

/// Live connections by peer node name (one per peer: a newer one replaces the older).
#[derive(Debug, Default, Clone)]
pub struct Peers {
    inner: Arc<Mutex<HashMap<String, PeerConnection>>>,
}

impl Peers {
    /// The live connection to `peer`, if any.
    pub fn get(&self, peer: &str) -> Option<quinn::Connection> {
        let peers = self.inner.lock().ok()?;
        let c = peers.get(peer)?;
        c.connection
            .close_reason()
            .is_none()
            .then(|| c.connection.clone())
    }

    /// Records `connection` as the one to `peer`; an older one is closed.
    pub fn insert(&self, peer: &str, connection: quinn::Connection, outbound: bool) {
        let Ok(mut peers) = self.inner.lock() else {
            return;
        };
        let old = peers.insert(
            peer.to_string(),
            PeerConnection {
                connection: connection.clone(),
                since: Instant::now(),
                outbound,
            },
        );
        if let Some(old) = old
            && old.connection.stable_id() != connection.stable_id()
        {
            // Let streams in flight on the old one finish: close it only once idle.
            let old = old.connection;
            tokio::spawn(async move {
                tokio::time::sleep(IDLE_TIMEOUT).await;
                old.close(VarInt::from_u32(0), b"replaced");
            });
        }
    }

    /// Forgets `connection` for `peer` (if it is still the recorded one).
    pub fn remove(&self, peer: &str, connection: &quinn::Connection) {
        if let Ok(mut peers) = self.inner.lock()
            && peers
                .get(peer)
                .is_some_and(|c| c.connection.stable_id() == connection.stable_id())
        {
            peers.remove(peer);
        }
    }

    /// Every live connection: `(peer, connection)`.
    pub fn all(&self) -> Vec<(String, PeerConnection)> {
        self.inner
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|(_, c)| c.connection.close_reason().is_none())
                    .map(|(n, c)| (n.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The transport parameters of every proxy connection.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.max_concurrent_bidi_streams(VarInt::from_u32(16_384));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Room for a fast stream on a low-latency link (the defaults suit the internet).
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t
}

/// A quinn endpoint bound to `addr` that accepts and dials with the node's credentials.
pub fn endpoint(
    credentials: &NodeCredentials,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::ClientConfig), TransportError> {
    let (server_crypto, client_crypto) = credentials.quic_configs()?;
    let transport = Arc::new(transport_config());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    // Connection migration: a peer whose address changes (NAT rebinding) keeps its
    // connection.
    server.migration(true);
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| TransportError::Bind { addr, source })?;
    Ok((endpoint, client))
}

/// Dials `addr` expecting node `peer` (or any node for [`tls::ANY_NODE`]); returns the
/// connection and the peer's node name from its certificate.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    peer: &str,
) -> Result<(quinn::Connection, String), TransportError> {
    let server_name = if peer == tls::ANY_NODE {
        peer.to_string()
    } else {
        tls::server_name_for(peer)
    };
    let err = |reason: String| TransportError::Dial {
        peer: peer.to_string(),
        addr,
        reason,
    };
    let connecting = endpoint
        .connect_with(client.clone(), addr, &server_name)
        .map_err(|e| err(e.to_string()))?;
    let connection = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| err(format!("no handshake within {DIAL_TIMEOUT:?}")))?
        .map_err(|e| err(e.to_string()))?;
    let name = tls::peer_node_name(&connection)
        .ok_or_else(|| err("peer certificate names no node".into()))?;
    Ok((connection, name))
}
