//! TLS on the apiserver's gRPC port: TLS 1.3 only, X25519MLKEM768 preferred, client
//! certificates of the cluster CA (optional at the handshake: a client without one is
//! `system:anonymous` and may only join).
//!
//! Handshakes run off the accept loop, each bounded in time; each accepted connection
//! carries the [`PeerIdentity`] its certificate proved into every request (tonic's
//! `ConnectInfo`), and is closed at once when its certificate is revoked.
//!
//! # Layout
//! - [`revocation`]: the revoked serials, kept current from the store's Certificate
//!   records, and the open connections each serial has.
//! - [`stream`]: [`AuthenticatedStream`], a TLS connection with its identity.
//! - [`verifier`]: the client certificate verifier (chain, then revocation).

pub mod revocation;
pub mod stream;
pub mod verifier;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_trust::pki::{CertificateSpec, ClusterCa, read_identity};
use hypermesh_trust::tls::{TlsError, VERSIONS, provider, roots};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use revocation::Revocations;
pub use stream::AuthenticatedStream;

use crate::caller::{Caller, PeerIdentity};
use crate::metrics::Metrics;

/// How long a client gets to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Validity of the serving certificate the apiserver issues itself at each start.
pub const SERVING_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The serving certificate's subject alternative names: the listen address (when it
/// is not a wildcard), loopback, `localhost`, this host's name, and `extra`.
pub fn serving_names(
    listen: Option<SocketAddr>,
    extra: &[String],
) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut dns = vec!["localhost".to_string()];
    let mut ips: Vec<std::net::IpAddr> = vec![
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    if let Some(addr) = listen
        && !addr.ip().is_unspecified()
        && !ips.contains(&addr.ip())
    {
        ips.push(addr.ip());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_string();
        if !host.is_empty() && !dns.contains(&host) {
            dns.push(host);
        }
    }
    for name in extra {
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.contains(name) => dns.push(name.clone()),
            Err(_) => {}
        }
    }
    (dns, ips)
}

/// The rustls server configuration: a fresh serving certificate from `ca` (sent with
/// the CA certificate, so a joining node can check its pin), client certificates of
/// `ca` verified (revocation is checked once the handshake is done, in [`incoming`]).
pub fn server_config(
    ca: &ClusterCa,
    names: (Vec<String>, Vec<std::net::IpAddr>),
) -> Result<ServerConfig, TlsError> {
    let (dns_names, ip_addresses) = names;
    let spec = CertificateSpec {
        identity: "system:apiserver".into(),
        groups: Vec::new(),
        dns_names,
        ip_addresses,
        node_id: None,
        validity: SERVING_CERT_VALIDITY,
        server: true,
        client: false,
    };
    let (issued, key_pem) = ca.issue_with_new_key(&spec)?;
    let chain = vec![issued.der, ca.certificate_der().clone()];
    let provider = provider();
    let verifier =
        verifier::ClientVerifier::new(Arc::new(roots(ca.certificate_pem())?), provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, hypermesh_trust::tls::private_key(&key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts TCP connections on `listener`, runs their handshakes concurrently (each
/// within [`HANDSHAKE_TIMEOUT`]) and yields the authenticated connections, until
/// `shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<AuthenticatedStream>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, revocations, metrics) = (
                acceptor.clone(),
                tx.clone(),
                revocations.clone(),
                metrics.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failed();
                        debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failed();
                        debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let (_, connection) = tls.get_ref();
                if let Some(group) = connection.negotiated_key_exchange_group() {
                    metrics.tls_handshake(&hypermesh_trust::tls::group_name(group.name()));
                }
                let caller = match connection.peer_certificates().and_then(|c| c.first()) {
                    None => Caller::anonymous(),
                    Some(cert) => match read_identity(cert) {
                        Ok(id) => Caller {
                            name: id.identity,
                            groups: id.groups,
                            serial: Some(id.serial),
                            node_id: id.node_id,
                        },
                        Err(e) => {
                            debug!(%remote, error = %e, "client certificate without an identity");
                            return;
                        }
                    },
                };
                let revoked = caller
                    .serial
                    .as_deref()
                    .is_some_and(|s| revocations.is_revoked(s));
                let closed = match &caller.serial {
                    Some(serial) if !revoked => revocations.track(serial),
                    _ => CancellationToken::new(),
                };
                let peer = PeerIdentity {
                    caller: Arc::new(caller),
                    remote: Some(remote),
                    revoked,
                };
                let _ = tx
                    .send(Ok(AuthenticatedStream::new(tls, peer, closed)))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}
