//! The source side of a flow: resolve a global address to an Instance (or a Route's
//! ready Instances, retried in turn as [`balance`] orders them) and open a stream to
//! the proxy of its node.

use crate::catalog::{Endpoint, Target};
use crate::header::{Protocol, Reply, StreamHeader};
use crate::netns::containers_of;
use crate::transport::Path;
use quinn::VarInt;
use std::net::Ipv6Addr;
use tracing::{debug, warn};

use super::*;

impl Mesh {
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
                let suspects = &self.inner.suspects;
                (
                    balance::healthy_first(rotation, |node| suspects.contains(node)),
                    target_port,
                )
            }
        };
        let metrics = &self.inner.metrics;
        let result = balance::try_in_turn(
            &candidates,
            &self.inner.node,
            |endpoint| async move {
                let opened = self.open(&endpoint, port, protocol).await;
                if let Err(reply) = &opened {
                    debug!(instance = %endpoint.name, node = %endpoint.node, ?reply, "endpoint failed");
                }
                opened
            },
            || {
                metrics.retries.inc();
            },
        )
        .await;
        match result {
            Ok(flow) => {
                metrics.flow("source", "connected");
                Ok(flow)
            }
            Err(last) => {
                metrics.flow("source", reply_label(last));
                Err(last)
            }
        }
    }

    /// One attempt at one Instance.
    pub(super) async fn open(
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
        let (send, recv, path) = self
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
        Ok(Flow::Remote { send, recv, path })
    }

    /// Opens a stream to the proxy of `node` (or its relay), sends `header` and waits
    /// for the reply; returns the stream and how it reaches `node`.
    pub async fn open_stream(
        &self,
        node: &str,
        header: StreamHeader,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, Path), Reply> {
        let (connection, path) = self.connection_to(node).await.map_err(|e| {
            debug!(%node, error = %e, "no path");
            self.inner.suspects.mark(node);
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
                Reply::Connected => Ok((send, recv, path.clone())),
                other => Err(other),
            }
        };
        let mut attempt = std::pin::pin!(attempt);
        if let Ok(result) = tokio::time::timeout(LIVENESS_CHECK, &mut attempt).await {
            return self.answered(node, result);
        }
        // No reply yet. A live peer has at least acknowledged the header by now; one
        // that sent nothing at all is gone (killed, unplugged): drop its connection so
        // this flow moves on to another endpoint and the next one dials afresh.
        if connection.stats().udp_rx.datagrams == received_before {
            warn!(%node, ?path, "peer silent; dropping its connection");
            self.inner.suspects.mark(node);
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
            Ok(result) => self.answered(node, result),
            Err(_) => Err(Reply::TimedOut),
        }
    }

    /// `result` of a stream to `node`; one that connected clears `node` of suspicion.
    fn answered<T>(&self, node: &str, result: Result<T, Reply>) -> Result<T, Reply> {
        if result.is_ok() {
            self.inner.suspects.clear(node);
        }
        result
    }
}
