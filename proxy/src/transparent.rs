//! The transparent path for unmodified clients: a TUN device `hm0` holds the route for
//! `fd48:4d00::/32` (so a connect to a global address leaves the socket layer at all),
//! and an nftables rule in the `output` nat hook redirects locally generated TCP to the
//! prefix into this proxy's transparent listener. The listener reads the address the
//! client dialed with `IP6T_SO_ORIGINAL_DST` and opens a flow to it; an address nobody
//! has is refused with a TCP reset.
//!
//! The device and the rules are set up with `ip` and `nft` (iproute2 and nftables,
//! both in scripts/packages.txt) when the proxy starts and removed when it stops; a
//! restarted proxy replaces what a killed one left behind.

use std::net::SocketAddr;
use std::process::Command;

use hypermesh_api::address::is_global;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::header::Protocol;
use crate::mesh::{Mesh, splice};

/// Name of the TUN device holding the prefix route.
pub const DEVICE: &str = "hm0";
/// nftables table the redirect lives in.
pub const TABLE: &str = "hypermesh_proxy";

/// Why the transparent path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    /// A setup command failed.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        reason: String,
    },
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), TransparentError> {
    use std::io::Write;
    let command = format!("{program} {}", args.join(" "));
    let err = |reason: String| TransparentError::Command {
        command: command.clone(),
        reason,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_string()))
    }
}

/// The nftables ruleset redirecting TCP to the prefix into `port`.
pub fn ruleset(port: u16) -> String {
    format!(
        "table inet {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip6 daddr fd48:4d00::/32 meta l4proto tcp redirect to :{port}\n\
         \t}}\n\
         }}\n"
    )
}

/// Creates `hm0`, routes the prefix through it and installs the redirect to `port`.
pub fn install(port: u16) -> Result<(), TransparentError> {
    // Whatever a killed proxy left behind goes first.
    let _ = run("nft", &["delete", "table", "inet", TABLE], None);
    let exists = Command::new("ip")
        .args(["link", "show", DEVICE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        run("ip", &["tuntap", "add", "dev", DEVICE, "mode", "tun"], None)?;
    }
    run("ip", &["link", "set", DEVICE, "up"], None)?;
    run(
        "ip",
        &["-6", "route", "replace", "fd48:4d00::/32", "dev", DEVICE],
        None,
    )?;
    run("nft", &["-f", "-"], Some(&ruleset(port)))?;
    Ok(())
}

/// Removes the redirect, the route and the device.
pub fn uninstall() {
    let _ = run("nft", &["delete", "table", "inet", TABLE], None);
    let _ = run("ip", &["link", "del", DEVICE], None);
}

/// Accepts redirected connections until `shutdown`, then removes the setup.
pub async fn serve(listener: TcpListener, mesh: Mesh, shutdown: CancellationToken) {
    info!(addr = ?listener.local_addr().ok(), "transparent listener for fd48:4d00::/32");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let mesh = mesh.clone();
        tokio::spawn(async move { handle(stream, &mesh).await });
    }
    uninstall();
}

/// Closes `stream` with a TCP reset.
fn reset(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let socket = socket2::Socket::from(std);
        let _ = socket.set_linger(Some(std::time::Duration::ZERO));
    }
}

async fn handle(stream: TcpStream, mesh: &Mesh) {
    let _ = stream.set_nodelay(true);
    let destination = match rustix::net::sockopt::ipv6_original_dst(&stream) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "transparent connection without an original destination");
            return reset(stream);
        }
    };
    if !is_global(destination.ip()) {
        return reset(stream);
    }
    match mesh
        .connect(*destination.ip(), destination.port(), Protocol::Tcp)
        .await
    {
        Ok(flow) => splice(stream, flow, mesh.metrics()).await,
        Err(reply) => {
            debug!(%destination, ?reply, "transparent flow refused");
            reset(stream);
        }
    }
}

/// Binds the transparent listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ruleset_redirects_the_prefix() {
        let r = super::ruleset(15001);
        assert!(r.contains("ip6 daddr fd48:4d00::/32 meta l4proto tcp redirect to :15001"));
    }
}
