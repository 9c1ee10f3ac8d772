//! The measurements: connecting along each path, iperf3 throughput, request/response
//! latency, connection rate and RSS.

use crate::stats::percentile;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::*;

pub(super) fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    Some(crate::procfs::memory(pid?)?.rss_kib)
}

/// A connection to `addr`, from inside the namespace of `pid` when `inside`.
pub(super) async fn connect(
    addr: SocketAddr,
    inside: bool,
    pid: u32,
) -> std::io::Result<TcpStream> {
    let stream = if inside {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })();
            let _ = tx.send(r);
        });
        let socket = rx
            .await
            .map_err(|_| std::io::Error::other("netns thread"))??;
        TcpSocket::from_std_stream(socket.into())
            .connect(addr)
            .await?
    } else {
        TcpStream::connect(addr).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

pub(super) async fn wait_echo(addr: SocketAddr, inside: bool, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut s = connect(addr, inside, pid).await?;
            s.write_all(b"ping").await?;
            let mut b = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await??;
            Ok::<_, anyhow::Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("echo at {addr}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(super) async fn iperf(v: &Variant, pid: u32, seconds: u32) -> Result<f64> {
    let secs = seconds.to_string();
    let host = v.iperf.ip().to_string();
    let port = v.iperf.port().to_string();
    let mut argv = vec!["iperf3", "-c", &host, "-p", &port, "-t", &secs, "-J"];
    let out = if v.inside {
        let net = format!("--net=/proc/{pid}/ns/net");
        let mut all = vec![net.as_str()];
        all.append(&mut argv);
        run_cmd("nsenter", &all).await?
    } else {
        run_cmd(argv[0], &argv[1..]).await?
    };
    let json: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no end.sum_received.bits_per_second in iperf3's output")
}

pub(super) async fn latency(
    v: &Variant,
    pid: u32,
    requests: usize,
) -> Result<(Duration, Duration)> {
    let mut s = connect(v.echo, v.inside, pid).await?;
    let msg = [b'x'; 64];
    let mut back = [0u8; 64];
    for _ in 0..100 {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

pub(super) async fn connection_rate(v: &Variant, pid: u32, count: usize) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        let mut s = connect(v.echo, v.inside, pid).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}
