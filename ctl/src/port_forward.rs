//! `hmctl port-forward instance/NAME [LOCAL:]REMOTE`: listens on a local port and
//! carries each connection to port REMOTE of an Instance (or `route/NAME`: a Route),
//! wherever it runs — also on a host behind NAT — through the SOCKS5 listener of the
//! hm-proxy on this machine (`--proxy`, default 127.0.0.1:1080), which reaches the
//! Instance's node over QUIC, directly or through its relay.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::ServerError;
use crate::logs::resolve_instance;
use crate::{Context, Exit};

/// `hmctl port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// `NAME`, `instance/NAME`, `workload/NAME` (one of its Instances) or `route/NAME`
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// `[LOCAL:]REMOTE` (LOCAL 0: a free port, printed)
    #[arg(value_name = "[LOCAL:]REMOTE")]
    pub ports: String,
    /// Local address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// The SOCKS5 listener of this machine's hm-proxy
    #[arg(long, env = "HM_PROXY_SOCKS", default_value = "127.0.0.1:1080")]
    pub proxy: SocketAddr,
}

fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let (local, remote) = spec.split_once(':').unwrap_or((spec, spec));
    let remote: u16 = remote
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("{spec:?}: REMOTE must be a port 1-65535"))?;
    let local: u16 = local
        .parse()
        .with_context(|| format!("{spec:?}: LOCAL must be a port 0-65535"))?;
    Ok((local, remote))
}

/// The global name the proxy resolves for `target`.
async fn global_name(ctx: &Context, target: &str) -> Result<String> {
    let channel = ctx.connect().await?;
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.into());
    if let Some(name) = target
        .strip_prefix("route/")
        .or_else(|| target.strip_prefix("routes/"))
    {
        Api::<Route>::new(channel)
            .get(&namespace, name)
            .await
            .map_err(|s| ServerError::for_object(&s, "routes", name))?;
        return Ok(format!("{name}.{namespace}.route.hypermesh"));
    }
    let name = resolve_instance(ctx, channel.clone(), target).await?;
    let instance = Api::<Instance>::new(channel)
        .get(&namespace, &name)
        .await
        .map_err(|s| ServerError::for_object(&s, "instances", &name))?;
    if instance
        .status
        .as_ref()
        .is_none_or(|s| s.address.is_empty())
    {
        bail!("instance {name} has no global address yet (not running on a node?)");
    }
    Ok(format!("{name}.{namespace}.instance.hypermesh"))
}

/// SOCKS5 CONNECT to `host`:`port` through `proxy`.
async fn socks_connect(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connecting to hm-proxy's SOCKS listener at {proxy}"))?;
    s.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await?;
    if method != [5, 0] {
        bail!("{proxy} is not a SOCKS5 server without authentication");
    }
    let mut request = vec![
        5,
        1,
        0,
        3,
        u8::try_from(host.len()).context("name too long")?,
    ];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).await?;
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).await?;
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        other => bail!("SOCKS reply with address type {other}"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    match reply[1] {
        0 => Ok(s),
        4 => bail!("{host}: unreachable (no such address or no ready endpoint)"),
        5 => bail!("{host}:{port}: connection refused"),
        6 => bail!("{host}:{port}: timed out"),
        code => bail!("{host}:{port}: SOCKS error {code}"),
    }
}

/// Runs until interrupted.
pub async fn run(ctx: &Context, args: &PortForwardArgs) -> Result<Exit> {
    let (local, remote) = parse_ports(&args.ports)?;
    let host = global_name(ctx, &args.target).await?;
    let listener = TcpListener::bind((args.address, local))
        .await
        .with_context(|| format!("listening on {}:{local}", args.address))?;
    let bound = listener.local_addr()?;
    crate::output::print(&format!("Forwarding from {bound} -> {host}:{remote}\n"))?;
    loop {
        let (mut client, _) = tokio::select! {
            a = listener.accept() => a?,
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Success),
        };
        let (proxy, host) = (args.proxy, host.clone());
        tokio::spawn(async move {
            match socks_connect(proxy, &host, remote).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => eprintln!("hmctl port-forward: {e:#}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_parse() {
        assert_eq!(super::parse_ports("8080").expect("one"), (8080, 8080));
        assert_eq!(super::parse_ports("0:80").expect("two"), (0, 80));
        assert!(super::parse_ports("80:0").is_err());
        assert!(super::parse_ports("x:80").is_err());
    }
}
