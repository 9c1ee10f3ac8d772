//! The SOCKS5 listener (RFC 1928, no authentication): `CONNECT` to a global IPv6
//! address or a global name (`web.team-a.route.hypermesh`,
//! `NAME.NS.instance.hypermesh`), and `UDP ASSOCIATE`: datagrams to such destinations
//! each get a UDP flow (one QUIC stream per destination, datagrams framed on it) for as
//! long as the client's TCP connection lasts. Every message is bounded by the protocol (at most
//! 255-byte fields) and the whole handshake by [`HANDSHAKE_TIMEOUT`]; a malformed one
//! closes that client's connection only. Failures answer with the matching reply code.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::address::{is_global, parse_global_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::header::{Protocol, Reply};
use crate::mesh::{Counted, Flow, Mesh, read_datagram, splice, write_datagram};
use crate::metrics::path_label;
use prometheus_client::metrics::counter::Counter;

/// Destinations one UDP association may talk to.
pub const MAX_UDP_FLOWS: usize = 256;
/// Datagrams queued per UDP flow before new ones are dropped.
const UDP_QUEUE: usize = 256;

/// A client must finish greeting and request within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// SOCKS5 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SocksReply {
    /// Succeeded.
    Succeeded = 0x00,
    /// General failure.
    GeneralFailure = 0x01,
    /// Network unreachable.
    NetworkUnreachable = 0x03,
    /// Host unreachable: no such global address or name, or no ready endpoint.
    HostUnreachable = 0x04,
    /// Connection refused by the target.
    ConnectionRefused = 0x05,
    /// Timed out.
    TtlExpired = 0x06,
    /// Only CONNECT is supported.
    CommandNotSupported = 0x07,
    /// Only global IPv6 addresses and global names are carried.
    AddressTypeNotSupported = 0x08,
}

impl From<Reply> for SocksReply {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Connected => SocksReply::Succeeded,
            Reply::UnknownAddress => SocksReply::HostUnreachable,
            Reply::Refused => SocksReply::ConnectionRefused,
            Reply::Unreachable => SocksReply::HostUnreachable,
            Reply::TimedOut => SocksReply::TtlExpired,
        }
    }
}

/// Why a SOCKS conversation ended early.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// Reading or writing failed.
    #[error("socks: {0}")]
    Io(#[from] std::io::Error),
    /// Not within [`HANDSHAKE_TIMEOUT`].
    #[error("socks: handshake not complete within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// Not SOCKS version 5.
    #[error("socks: version {0} (only 5)")]
    Version(u8),
    /// The client offers no method we accept (only "no authentication").
    #[error("socks: no acceptable authentication method")]
    NoMethod,
    /// A reserved byte was not zero, or a field was empty.
    #[error("socks: malformed request: {0}")]
    Malformed(&'static str),
}

/// Where a request points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Ip(IpAddr),
    Name(String),
}

/// Accepts SOCKS clients until `shutdown`.
pub async fn serve(listener: TcpListener, mesh: Mesh, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let mesh = mesh.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &mesh).await {
                mesh.metrics().socks_errors.inc();
                debug!(%peer, error = %e, "socks client dropped");
            }
        });
    }
}

async fn reply(stream: &mut TcpStream, code: SocksReply) -> std::io::Result<()> {
    // Bound address: unspecified IPv6, port 0 (clients ignore it for CONNECT).
    reply_bound(stream, code, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).await
}

async fn reply_bound(
    stream: &mut TcpStream,
    code: SocksReply,
    bound: SocketAddr,
) -> std::io::Result<()> {
    let mut out = vec![5, code as u8, 0];
    push_addr(&mut out, bound);
    stream.write_all(&out).await
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

async fn request(
    stream: &mut TcpStream,
) -> Result<Result<(u8, Destination, u16), SocksReply>, SocksError> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(SocksError::Version(head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        stream.write_all(&[5, 0xff]).await?;
        return Err(SocksError::NoMethod);
    }
    stream.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    stream.read_exact(&mut req).await?;
    if req[0] != 5 {
        return Err(SocksError::Version(req[0]));
    }
    if req[2] != 0 {
        return Err(SocksError::Malformed("reserved byte not zero"));
    }
    let destination = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            stream.read_exact(&mut a).await?;
            Destination::Ip(IpAddr::from(a))
        }
        4 => {
            let mut a = [0u8; 16];
            stream.read_exact(&mut a).await?;
            Destination::Ip(IpAddr::from(a))
        }
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            if len[0] == 0 {
                return Err(SocksError::Malformed("empty domain name"));
            }
            let mut name = vec![0u8; usize::from(len[0])];
            stream.read_exact(&mut name).await?;
            match String::from_utf8(name) {
                Ok(n) => Destination::Name(n),
                Err(_) => return Ok(Err(SocksReply::HostUnreachable)),
            }
        }
        _ => {
            return Ok(Err(SocksReply::AddressTypeNotSupported));
        }
    };
    let mut port = [0u8; 2];
    stream.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if req[1] != 1 && req[1] != 3 {
        return Ok(Err(SocksReply::CommandNotSupported));
    }
    Ok(Ok((req[1], destination, port)))
}

async fn handle(mut stream: TcpStream, mesh: &Mesh) -> Result<(), SocksError> {
    let _ = stream.set_nodelay(true);
    let parsed = tokio::time::timeout(HANDSHAKE_TIMEOUT, request(&mut stream))
        .await
        .map_err(|_| SocksError::Timeout)??;
    let (command, destination, port) = match parsed {
        Ok(x) => x,
        Err(code) => {
            reply(&mut stream, code).await?;
            return Ok(());
        }
    };
    if command == 3 {
        return udp_associate(stream, mesh).await;
    }
    let address = match resolve(&destination, mesh) {
        Ok(a) => a,
        Err(code) => {
            reply(&mut stream, code).await?;
            return Ok(());
        }
    };
    if port == 0 {
        reply(&mut stream, SocksReply::ConnectionRefused).await?;
        return Ok(());
    }
    match mesh.connect(address, port, Protocol::Tcp).await {
        Ok(flow) => {
            reply(&mut stream, SocksReply::Succeeded).await?;
            splice(stream, flow, mesh.metrics()).await;
        }
        Err(r) => reply(&mut stream, SocksReply::from(r)).await?,
    }
    Ok(())
}

/// The global address a destination names.
fn resolve(destination: &Destination, mesh: &Mesh) -> Result<Ipv6Addr, SocksReply> {
    match destination {
        Destination::Ip(IpAddr::V6(a)) if is_global(a) => Ok(*a),
        Destination::Ip(_) => Err(SocksReply::AddressTypeNotSupported),
        Destination::Name(name) => {
            if let Ok(IpAddr::V6(a)) = name.parse::<IpAddr>()
                && is_global(&a)
            {
                return Ok(a);
            }
            parse_global_name(name)
                .and_then(|n| mesh.catalog().index().resolve(&n))
                .ok_or(SocksReply::HostUnreachable)
        }
    }
}

/// Parses the header of a SOCKS UDP request datagram (RSV RSV FRAG ATYP DST.ADDR
/// DST.PORT): the destination and where the payload starts. Fragments are not
/// supported (dropped, as RFC 1928 allows).
fn parse_udp(datagram: &[u8]) -> Option<(Destination, u16, usize)> {
    if datagram.len() < 4 || datagram[0] != 0 || datagram[1] != 0 || datagram[2] != 0 {
        return None;
    }
    let (destination, at) = match datagram[3] {
        1 => {
            let a: [u8; 4] = datagram.get(4..8)?.try_into().ok()?;
            (Destination::Ip(IpAddr::from(a)), 8)
        }
        4 => {
            let a: [u8; 16] = datagram.get(4..20)?.try_into().ok()?;
            (Destination::Ip(IpAddr::from(a)), 20)
        }
        3 => {
            let len = usize::from(*datagram.get(4)?);
            let name = std::str::from_utf8(datagram.get(5..5 + len)?).ok()?;
            (Destination::Name(name.to_string()), 5 + len)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(datagram.get(at..at + 2)?.try_into().ok()?);
    Some((destination, port, at + 2))
}

/// One UDP association: a UDP socket on the listener's address, relaying datagrams of
/// the client (the host of the TCP connection) until that connection closes.
async fn udp_associate(mut control: TcpStream, mesh: &Mesh) -> Result<(), SocksError> {
    let client_ip = control.peer_addr()?.ip();
    let udp = UdpSocket::bind(SocketAddr::new(control.local_addr()?.ip(), 0)).await?;
    reply_bound(&mut control, SocksReply::Succeeded, udp.local_addr()?).await?;
    let udp = Arc::new(udp);
    let (back_tx, mut back_rx) = mpsc::channel::<(Ipv6Addr, u16, Vec<u8>)>(UDP_QUEUE);
    let mut flows: HashMap<(Ipv6Addr, u16), mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_535];
    let mut ctl = [0u8; 64];
    loop {
        tokio::select! {
            r = control.read(&mut ctl) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            r = udp.recv_from(&mut buf) => {
                let (n, from) = r?;
                if from.ip() != client_ip {
                    continue;
                }
                client = Some(from);
                let Some((destination, port, at)) = parse_udp(&buf[..n]) else {
                    mesh.metrics().socks_errors.inc();
                    continue;
                };
                let Ok(address) = resolve(&destination, mesh) else { continue };
                flows.retain(|_, tx| !tx.is_closed());
                let tx = match flows.get(&(address, port)) {
                    Some(tx) => tx.clone(),
                    None if flows.len() >= MAX_UDP_FLOWS => continue,
                    None => {
                        let (tx, rx) = mpsc::channel(UDP_QUEUE);
                        tokio::spawn(udp_flow(mesh.clone(), address, port, rx, back_tx.clone()));
                        flows.insert((address, port), tx.clone());
                        tx
                    }
                };
                // A full queue drops the datagram, as a congested link would.
                let _ = tx.try_send(buf[at..n].to_vec());
            }
            Some((address, port, data)) = back_rx.recv() => {
                if let Some(client) = client {
                    let mut out = vec![0, 0, 0];
                    push_addr(&mut out, SocketAddr::from((address, port)));
                    out.extend_from_slice(&data);
                    let _ = udp.send_to(&out, client).await;
                }
            }
        }
    }
    Ok(())
}

/// One destination of a UDP association: datagrams from `rx` go out on a UDP flow,
/// answers go to `back`, until the association drops `rx` or the flow ends.
async fn udp_flow(
    mesh: Mesh,
    address: Ipv6Addr,
    port: u16,
    mut rx: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<(Ipv6Addr, u16, Vec<u8>)>,
) {
    match mesh.connect(address, port, Protocol::Udp).await {
        Ok(Flow::Remote { send, recv, path }) => {
            let (received, sent) = mesh.metrics().stream_bytes(path_label(&path));
            let mut recv = Counted::new(recv, received, Counter::default());
            let mut send = Counted::new(send, Counter::default(), sent);
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                while let Some(n) = read_datagram(&mut recv, &mut buf).await {
                    if back.send((address, port, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(datagram) = rx.recv().await {
                if write_datagram(&mut send, &datagram).await.is_err() {
                    break;
                }
            }
            let _ = send.into_inner().finish();
            reader.abort();
        }
        Ok(Flow::LocalUdp(socket)) => {
            let socket = Arc::new(socket);
            let reader = {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok(n) = socket.recv(&mut buf).await {
                        if back.send((address, port, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                })
            };
            while let Some(datagram) = rx.recv().await {
                let _ = socket.send(&datagram).await;
            }
            reader.abort();
        }
        Ok(Flow::Local(_)) | Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_headers_parse_and_bad_ones_are_dropped() {
        let mut d = vec![0, 0, 0, 4];
        d.extend_from_slice(&"fd48:4d00::1".parse::<Ipv6Addr>().expect("addr").octets());
        d.extend_from_slice(&53u16.to_be_bytes());
        d.extend_from_slice(b"payload");
        let (dest, port, at) = parse_udp(&d).expect("parses");
        assert_eq!(dest, Destination::Ip("fd48:4d00::1".parse().expect("addr")));
        assert_eq!((port, &d[at..]), (53, &b"payload"[..]));
        let mut frag = d.clone();
        frag[2] = 1;
        assert!(parse_udp(&frag).is_none(), "fragments dropped");
        assert!(parse_udp(&d[..10]).is_none(), "truncated");
        let mut name = vec![0, 0, 0, 3, 200];
        name.extend_from_slice(b"short");
        assert!(parse_udp(&name).is_none(), "name longer than the datagram");
    }
}
