//! The target side of a flow: read a peer's stream header and connect into the
//! Instance's network namespace, or, as a relay, pass the stream on to the NAT'd node.

use crate::catalog::{Endpoint, Target};
use crate::header::{Protocol, Reply, StreamHeader, codes};
use crate::netns::containers_of;
use quinn::VarInt;
use tracing::{debug, info};

use super::counted::Counted;
use super::forward::pump_udp;
use super::*;

impl Mesh {
    /// Target side of one stream a peer opened.
    pub(super) async fn handle_inbound(
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
        // A stream a relay passed on came over the relay; any other straight from
        // its source.
        let path = if header.relayed { "relay" } else { "direct" };
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
                        splice_tcp(stream, send, recv, &self.inner.metrics, path).await;
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
                        pump_udp(socket, send, recv, &self.inner.metrics, path).await;
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
    pub(super) async fn relay_stream(
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
        let (received, sent) = self.inner.metrics.stream_bytes("relay");
        let mut a = Counted::new(tokio::io::join(recv, send), received, sent);
        let (received, sent) = self.inner.metrics.stream_bytes("relay");
        let mut b = Counted::new(tokio::io::join(r2, s2), received, sent);
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER)
                .await;
    }
}
