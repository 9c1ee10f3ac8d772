//! Real etcd for tests: an [`EtcdCluster`] of one or three `etcd` processes (Debian
//! `etcd-server`) on free loopback ports, each with a temporary data dir, that a test
//! can kill (`kill -9`) and bring back member by member. Progress notifications come
//! every 300 ms so store watches get timely progress (BOOKMARKs).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::{DEFAULT_TIMEOUT, wait_for};

/// The etcd binary: `$HM_ETCD`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("HM_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Fails with a clear message when etcd is not installed.
pub fn require_etcd() {
    let binary = etcd_binary();
    assert!(
        binary.is_file(),
        "{} is missing: install the Debian package etcd-server (bash scripts/setup.sh does), or set HM_ETCD",
        binary.display()
    );
}

fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

/// One or three etcd members on loopback, removed (killed, data deleted) on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// A single-member cluster, answering.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_members(1).await
    }

    /// A cluster of `count` members, answering (with a leader).
    pub async fn start_members(count: usize) -> anyhow::Result<Self> {
        require_etcd();
        let ports = free_ports(count * 2)?;
        let members: Vec<Member> = (0..count)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            dir: tempfile::tempdir().context("temp dir")?,
        };
        for i in 0..count {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join(&self.members[index].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[index].name)),
            )
            .context("etcd log")?;
        let member = &mut self.members[index];
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "hm-test"])
            // Quick elections on loopback, and prompt progress notifications.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--experimental-watch-progress-notify-interval", "300ms"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("etcd log")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning etcd")?;
        member.child = Some(child);
        Ok(())
    }

    /// Waits until every running member answers a linearizable read.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let url = member.client_url.clone();
            wait_for(DEFAULT_TIMEOUT, || {
                let url = url.clone();
                async move { member_answers(&url).await.then_some(()) }
            })
            .await
            .with_context(|| {
                format!("etcd member {url} never answered; log: {}", self.log_tail())
            })?;
        }
        Ok(())
    }

    /// The last lines of every member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let path = self.dir.path().join(format!("{}.log", member.name));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("\n--- {} ---\n", member.name));
            out.push_str(&lines[lines.len().saturating_sub(10)..].join("\n"));
        }
        out
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2…`, what `hm-apiserver --store` takes.
    pub fn store_url(&self) -> String {
        let hosts: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.client_url.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Client URLs, `http://127.0.0.1:PORT`.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A raw etcd client on every member.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        Ok(etcd_client::Client::connect(self.client_urls(), Some(options)).await?)
    }

    /// Kills member `index` with SIGKILL and waits for it to be gone.
    pub async fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[index].child.take() {
            child.start_kill().context("kill")?;
            child.wait().await.context("wait")?;
        }
        Ok(())
    }

    /// Starts member `index` again on its data dir and waits until it answers.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if self.members[index].child.is_some() {
            bail!("member {index} is running");
        }
        self.spawn(index)?;
        self.wait_ready().await
    }

    /// The index of the member that leads the Raft group now, once one does.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        wait_for(DEFAULT_TIMEOUT, || async {
            for (index, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let Ok(mut client) =
                    etcd_client::Client::connect([&member.client_url], Some(options)).await
                else {
                    continue;
                };
                let Ok(status) = client.status().await else {
                    continue;
                };
                let me = status.header().map(|h| h.member_id());
                if status.leader() != 0 && me == Some(status.leader()) {
                    return Some(index);
                }
            }
            None
        })
        .await
        .context("no etcd leader")
    }

    /// The store revision member `index` has applied, read from it alone
    /// (serializable), or `None` when it does not answer.
    pub async fn member_revision(&self, index: usize) -> Option<i64> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        let mut client =
            etcd_client::Client::connect([&self.members[index].client_url], Some(options))
                .await
                .ok()?;
        let get = etcd_client::GetOptions::new()
            .with_serializable()
            .with_count_only();
        let response = client.get("/", Some(get)).await.ok()?;
        response.header().map(|h| h.revision())
    }
}

async fn member_answers(url: &str) -> bool {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let Ok(mut client) = etcd_client::Client::connect([url], Some(options)).await else {
        return false;
    };
    client.get("/hm-test/ready", None).await.is_ok()
}
