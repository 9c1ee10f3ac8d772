//! The SOCKS5 listener (RFC 1928, no authentication): `CONNECT` to a global IPv6
//! address or a global name (`web.team-a.route.hypermesh`,
//! `NAME.NS.instance.hypermesh`). Every message is bounded by the protocol (at most
//! 255-byte fields) and the whole handshake by [`HANDSHAKE_TIMEOUT`]; a malformed one
//! closes that client's connection only. Failures answer with the matching reply code.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use hypermesh_api::address::{is_global, parse_global_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::header::{Protocol, Reply};
use crate::mesh::{Mesh, splice};

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
    let mut out = vec![5, code as u8, 0, 4];
    out.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    out.extend_from_slice(&[0, 0]);
    stream.write_all(&out).await
}

async fn request(
    stream: &mut TcpStream,
) -> Result<Result<(Destination, u16), SocksReply>, SocksError> {
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
    if req[1] != 1 {
        return Ok(Err(SocksReply::CommandNotSupported));
    }
    Ok(Ok((destination, port)))
}

async fn handle(mut stream: TcpStream, mesh: &Mesh) -> Result<(), SocksError> {
    let _ = stream.set_nodelay(true);
    let parsed = tokio::time::timeout(HANDSHAKE_TIMEOUT, request(&mut stream))
        .await
        .map_err(|_| SocksError::Timeout)??;
    let (destination, port) = match parsed {
        Ok(x) => x,
        Err(code) => {
            reply(&mut stream, code).await?;
            return Ok(());
        }
    };
    let address = match destination {
        Destination::Ip(IpAddr::V6(a)) if is_global(&a) => a,
        Destination::Ip(_) => {
            reply(&mut stream, SocksReply::AddressTypeNotSupported).await?;
            return Ok(());
        }
        Destination::Name(name) => {
            if let Ok(IpAddr::V6(a)) = name.parse::<IpAddr>()
                && is_global(&a)
            {
                a
            } else {
                let resolved =
                    parse_global_name(&name).and_then(|n| mesh.catalog().index().resolve(&n));
                match resolved {
                    Some(a) => a,
                    None => {
                        reply(&mut stream, SocksReply::HostUnreachable).await?;
                        return Ok(());
                    }
                }
            }
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
