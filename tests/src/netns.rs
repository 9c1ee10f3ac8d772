//! Hosts as network namespaces for multi-host tests: a [`NetLab`] creates named
//! namespaces and the links between them with `ip` and `nft`, and removes all of it on
//! drop, also when the test fails. Processes start inside a host with
//! `nsenter --net=/var/run/netns/NAME` (never `ip netns exec`, which remounts /sys and
//! breaks containerd's cgroups); the test itself opens sockets inside a host from a
//! short-lived thread that enters the namespace (a socket stays in the namespace it
//! was created in).
//!
//! Test networks use 198.51.100.0/24 and fd00:1::/64 only.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Fails with a clear message unless the test runs as root with `ip netns` and `nft`.
pub fn require_netns_tools() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test builds network namespaces and must run as root (CI does)"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("nsenter", "util-linux"),
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` not found: this test needs the Debian package `{package}`; run scripts/setup.sh"
        );
    }
    let netns = Command::new("ip").args(["netns", "list"]).output();
    assert!(
        netns.map(|o| o.status.success()).unwrap_or(false),
        "`ip netns` does not work here: network-namespace tests need it"
    );
}

/// Runs `program args…` and fails with its stderr unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A set of namespaces owned by one test; all removed on drop.
pub struct NetLab {
    tag: String,
    namespaces: Vec<String>,
}

impl NetLab {
    /// An empty lab; namespace names get a suffix unique to this process.
    pub fn new() -> NetLab {
        NetLab {
            tag: format!("{}", std::process::id() % 100_000),
            namespaces: Vec::new(),
        }
    }

    /// The full name of lab namespace `short` (e.g. `a` → `hm-a-1234`).
    pub fn name(&self, short: &str) -> String {
        format!("hm-{short}-{}", self.tag)
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self, short: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(self.name(short))
    }

    /// Creates namespace `short` with loopback up.
    pub fn add(&mut self, short: &str) -> anyhow::Result<()> {
        let name = self.name(short);
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Deletes namespace `short` now, with its links (a host that dies); the processes
    /// inside must be gone first (see [`NetLab::pids`]) or they keep it alive.
    pub fn remove(&self, short: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "del", &self.name(short)]).map(|_| ())
    }

    /// The processes whose network namespace is `short` (`ip netns pids`).
    pub fn pids(&self, short: &str) -> anyhow::Result<Vec<u32>> {
        let out = run("ip", &["netns", "pids", &self.name(short)])?;
        out.split_whitespace()
            .map(|p| p.parse().context("a pid from ip netns pids"))
            .collect()
    }

    /// `ip -n <ns> args…`.
    pub fn ip(&self, short: &str, args: &[&str]) -> anyhow::Result<String> {
        let name = self.name(short);
        let mut all = vec!["-n", name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside namespace `short` (through nsenter).
    pub fn exec(&self, short: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let net = format!("--net={}", self.path(short).display());
        let mut all = vec![net.as_str(), program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Loads an nftables ruleset inside namespace `short`.
    pub fn nft(&self, short: &str, ruleset: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path(short).display()))
            .args(["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }

    /// A `tokio::process::Command` for `program` inside namespace `short`.
    pub fn command(
        &self,
        short: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("nsenter");
        c.arg(format!("--net={}", self.path(short).display()))
            .arg(program)
            .kill_on_drop(true);
        c
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> anyhow::Result<()> {
        let b_name = self.name(b);
        self.ip(
            a,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b_name,
            ],
        )?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Connects to `addr` from inside namespace `short`.
    pub async fn connect(&self, short: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = socket_in(self.path(short), addr, socket2::Type::STREAM).await?;
        TcpSocket::from_std_stream(socket.into())
            .connect(addr)
            .await
    }

    /// A UDP socket bound to `addr` inside namespace `short`.
    pub async fn udp(
        &self,
        short: &str,
        addr: SocketAddr,
    ) -> std::io::Result<tokio::net::UdpSocket> {
        let socket = socket_in(self.path(short), addr, socket2::Type::DGRAM).await?;
        socket.bind(&addr.into())?;
        tokio::net::UdpSocket::from_std(socket.into())
    }

    /// A listener on `addr` inside namespace `short`.
    pub async fn listen(&self, short: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
        let socket = socket_in(self.path(short), addr, socket2::Type::STREAM).await?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    }

    /// Forwards TCP connections arriving at `listen` inside namespace `short` to
    /// `target` in the test's own namespace (e.g. an in-process apiserver on loopback),
    /// until the returned task is dropped or aborted.
    pub async fn forward_in(
        &self,
        short: &str,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let listener = self
            .listen(short, listen)
            .await
            .context("forward listener")?;
        Ok(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }))
    }
}

impl Default for NetLab {
    fn default() -> Self {
        NetLab::new()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace removes its links, bridge and nftables rules with it.
        for name in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// A non-blocking socket created inside the namespace at `path`.
async fn socket_in(
    path: PathBuf,
    addr: SocketAddr,
    kind: socket2::Type,
) -> std::io::Result<socket2::Socket> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let ns = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
            socket.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(socket)
        })();
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| std::io::Error::other("namespace thread ended"))?
}
