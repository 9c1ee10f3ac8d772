//! Moving bytes once a flow is open: TCP ⇄ QUIC stream splicing, UDP datagrams
//! framed on a stream, and the reply labels of the flows metric.

use crate::header::{Reply, codes};
use crate::metrics::{Metrics, path_label};
use prometheus_client::metrics::counter::Counter;
use quinn::VarInt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::counted::Counted;
use super::*;

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

/// Copies both ways between a TCP socket and a QUIC stream on `path` (`direct` or
/// `relay`, for the bytes metric) until both ends finished.
pub async fn splice_tcp(
    mut stream: TcpStream,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    metrics: &Metrics,
    path: &'static str,
) {
    metrics.open_flows.inc();
    let (received, sent) = metrics.stream_bytes(path);
    let mut quic = Counted::new(tokio::io::join(recv, send), received, sent);
    let result = tokio::io::copy_bidirectional_with_sizes(
        &mut stream,
        &mut quic,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await;
    if let Err(e) = result {
        debug!(error = %e, "flow ended with an error");
        let (recv, mut send) = quic.into_inner().into_inner();
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
        Flow::Remote { send, recv, path } => {
            splice_tcp(client, send, recv, metrics, path_label(&path)).await
        }
        // A TCP client never gets a UDP flow (connect is called with the client's
        // protocol).
        Flow::LocalUdp(_) => {}
    }
}

/// Target side of a UDP flow: datagrams framed as `len(2) ‖ bytes` on the stream
/// (counted as bytes on `path`).
pub(super) async fn pump_udp(
    socket: tokio::net::UdpSocket,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    metrics: &Metrics,
    path: &'static str,
) {
    let (received, sent) = metrics.stream_bytes(path);
    let mut recv = Counted::new(recv, received, Counter::default());
    let mut send = Counted::new(send, Counter::default(), sent);
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
        let _ = send.into_inner().finish();
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// Writes one UDP datagram onto a flow stream.
pub async fn write_datagram(
    send: &mut (impl tokio::io::AsyncWrite + Unpin),
    datagram: &[u8],
) -> std::io::Result<()> {
    let len =
        u16::try_from(datagram.len()).map_err(|_| std::io::Error::other("datagram too large"))?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(datagram).await?;
    Ok(())
}

/// Reads one UDP datagram from a flow stream into `buf`; `None` at the end.
pub async fn read_datagram(
    recv: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut [u8],
) -> Option<usize> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > buf.len() {
        return None;
    }
    recv.read_exact(&mut buf[..len]).await.ok()?;
    Some(len)
}
