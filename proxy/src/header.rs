//! The small header that opens every proxy-to-proxy QUIC stream, and the one-byte reply
//! the far end sends back before any payload.
//!
//! ```text
//! 0      2         3      4       5          6                22     24
//! | "HM" | version | kind | flags | protocol | address (16 B)  | port |
//! ```
//! Fixed size ([`HEADER_LEN`] bytes), so reading one is bounded in bytes by
//! construction; the reader also bounds it in time ([`HEADER_TIMEOUT`]). Anything
//! malformed closes that stream only, never the connection.

use std::net::Ipv6Addr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in a header.
pub const HEADER_LEN: usize = 24;
/// How long the far end waits for a complete header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAGIC: [u8; 2] = *b"HM";
const VERSION: u8 = 1;
const KIND_FLOW: u8 = 1;
/// `flags` bit: the stream was relayed once and must be delivered, not relayed again.
const FLAG_RELAYED: u8 = 0x01;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A byte stream.
    Tcp,
    /// Datagrams, each framed with a 2-byte big-endian length on the stream.
    Udp,
}

/// Where a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// Global address of the target Instance.
    pub address: Ipv6Addr,
    /// Port inside the Instance.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Already passed through a relay.
    pub relayed: bool,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The stream ended or broke before a whole header arrived.
    #[error("stream header: {0}")]
    Io(#[source] std::io::Error),
    /// Not complete within [`HEADER_TIMEOUT`].
    #[error("stream header: not complete within {HEADER_TIMEOUT:?}")]
    Timeout,
    /// Wrong magic bytes.
    #[error("stream header: bad magic {0:02x?}")]
    Magic([u8; 2]),
    /// A version this proxy does not speak.
    #[error("stream header: unsupported version {0}")]
    Version(u8),
    /// A kind this proxy does not know.
    #[error("stream header: unknown kind {0}")]
    Kind(u8),
    /// Flag bits this version does not define.
    #[error("stream header: unknown flags {0:#04x}")]
    Flags(u8),
    /// A protocol other than TCP (1) or UDP (2).
    #[error("stream header: unknown protocol {0}")]
    Protocol(u8),
    /// Port 0.
    #[error("stream header: port must not be 0")]
    Port,
}

impl StreamHeader {
    /// The wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = KIND_FLOW;
        b[4] = if self.relayed { FLAG_RELAYED } else { 0 };
        b[5] = match self.protocol {
            Protocol::Tcp => 1,
            Protocol::Udp => 2,
        };
        b[6..22].copy_from_slice(&self.address.octets());
        b[22..24].copy_from_slice(&self.port.to_be_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, HeaderError> {
        if b[..2] != MAGIC {
            return Err(HeaderError::Magic([b[0], b[1]]));
        }
        if b[2] != VERSION {
            return Err(HeaderError::Version(b[2]));
        }
        if b[3] != KIND_FLOW {
            return Err(HeaderError::Kind(b[3]));
        }
        if b[4] & !FLAG_RELAYED != 0 {
            return Err(HeaderError::Flags(b[4]));
        }
        let protocol = match b[5] {
            1 => Protocol::Tcp,
            2 => Protocol::Udp,
            other => return Err(HeaderError::Protocol(other)),
        };
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&b[6..22]);
        let port = u16::from_be_bytes([b[22], b[23]]);
        if port == 0 {
            return Err(HeaderError::Port);
        }
        Ok(StreamHeader {
            address: Ipv6Addr::from(octets),
            port,
            protocol,
            relayed: b[4] & FLAG_RELAYED != 0,
        })
    }

    /// Reads one header, within [`HEADER_TIMEOUT`].
    pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Self, HeaderError> {
        let mut b = [0u8; HEADER_LEN];
        match tokio::time::timeout(HEADER_TIMEOUT, r.read_exact(&mut b)).await {
            Err(_) => Err(HeaderError::Timeout),
            Ok(Err(e)) => Err(HeaderError::Io(e)),
            Ok(Ok(_)) => Self::decode(&b),
        }
    }

    /// Writes it.
    pub async fn write(&self, w: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        w.write_all(&self.encode()).await
    }
}

/// The far end's answer to a header: one byte, before any payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Connected; payload follows.
    Connected = 0,
    /// No Instance has that global address (or it is not on the node asked).
    UnknownAddress = 1,
    /// The Instance refused the connection (nothing listens on the port).
    Refused = 2,
    /// The Instance or its node cannot be reached (not running, relay target gone).
    Unreachable = 3,
    /// Connecting took too long.
    TimedOut = 4,
}

impl Reply {
    /// From the wire byte; unknown bytes read as [`Reply::Unreachable`].
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Reply::Connected,
            1 => Reply::UnknownAddress,
            2 => Reply::Refused,
            4 => Reply::TimedOut,
            _ => Reply::Unreachable,
        }
    }
}

/// QUIC application error codes for resetting or stopping one stream.
pub mod codes {
    /// The stream's header was malformed or late.
    pub const BAD_HEADER: u32 = 0x10;
    /// The flow ended abnormally.
    pub const FLOW_ABORTED: u32 = 0x11;
    /// The proxy is shutting down (connection close).
    pub const SHUTDOWN: u32 = 0x01;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> StreamHeader {
        StreamHeader {
            address: "fd48:4d00::1".parse().expect("addr"),
            port: 8080,
            protocol: Protocol::Tcp,
            relayed: true,
        }
    }

    #[test]
    fn round_trips() {
        let h = header();
        assert_eq!(StreamHeader::decode(&h.encode()).expect("decodes"), h);
        let u = StreamHeader {
            protocol: Protocol::Udp,
            relayed: false,
            ..h
        };
        assert_eq!(StreamHeader::decode(&u.encode()).expect("decodes"), u);
    }

    #[test]
    fn malformed_headers_are_named() {
        let good = header().encode();
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(HeaderError::Magic(_))
        ));
        let mut b = good;
        b[2] = 9;
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(HeaderError::Version(9))
        ));
        let mut b = good;
        b[3] = 7;
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(HeaderError::Kind(7))
        ));
        let mut b = good;
        b[4] = 0x80;
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(HeaderError::Flags(_))
        ));
        let mut b = good;
        b[5] = 3;
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(HeaderError::Protocol(3))
        ));
        let mut b = good;
        b[22] = 0;
        b[23] = 0;
        assert!(matches!(StreamHeader::decode(&b), Err(HeaderError::Port)));
    }

    #[tokio::test]
    async fn short_and_slow_headers_fail() {
        let mut short: &[u8] = &[b'H', b'M', 1];
        assert!(matches!(
            StreamHeader::read(&mut short).await,
            Err(HeaderError::Io(_))
        ));
        tokio::time::pause();
        let (_keep, mut slow) = tokio::io::duplex(64);
        assert!(matches!(
            StreamHeader::read(&mut slow).await,
            Err(HeaderError::Timeout)
        ));
    }
}
