//! The etcd-backed [`Store`] (`hm-apiserver --store etcd://…`): several apiservers share
//! one etcd cluster, and etcd's Raft log is what survives the loss of a machine.
//!
//! The trait's rules are etcd's own, so the mapping is direct: a key's revisions and
//! the store revision are etcd's; create is a transaction that only puts when the key's
//! create revision is 0, update and conditional delete compare the mod revision; a
//! listing reads at one revision and pages by key; a watch starts at `after + 1` with
//! the previous values; compaction is etcd's (`StoreError::Compacted` when a revision
//! is gone). Every key lives under a prefix (`/hypermesh` by default) so HyperMesh can
//! share an etcd with other users. Watches are in `watch`, the periodic compactor in
//! `compactor`.

mod compactor;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, ResponseHeader, Txn,
    TxnOp, TxnOpResponse,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{KeyValue, ListPage, Store, StoreError, WatchStream};

/// Where the etcd cluster is and how to reach it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, `http://127.0.0.1:2379` (`https://` with TLS).
    pub endpoints: Vec<String>,
    /// CA bundle that signed etcd's serving certificates (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd (`--etcd-certfile`), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (`--etcd-keyfile`).
    pub key_file: Option<PathBuf>,
    /// Prefix of every key HyperMesh writes (`/hypermesh`).
    pub key_prefix: String,
    /// Revisions of history kept; older ones are compacted every `compaction_interval`.
    /// 0 leaves compaction to etcd (`--auto-compaction-retention`) or an operator.
    pub retain_revisions: u64,
    /// How often the compactor runs.
    pub compaction_interval: Duration,
    /// Longest time one request to etcd may take.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: Vec::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_prefix: "/hypermesh".into(),
            retain_revisions: 100_000,
            compaction_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl EtcdOptions {
    /// Endpoints from `etcd://host:2379[,host2:2379…]`: `https://` when a CA file is
    /// given, `http://` otherwise.
    pub fn with_url(mut self, url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Backend(format!("--store {url:?}: {why}"));
        let hosts = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("expected etcd://host:port[,host:port…]"))?;
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        self.endpoints.clear();
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() || host.contains('/') || !host.contains(':') {
                return Err(bad(&format!("{host:?} is not host:port")));
            }
            self.endpoints.push(format!("{scheme}://{host}"));
        }
        Ok(self)
    }
}

struct Inner {
    client: Client,
    prefix: String,
    /// The highest store revision any response showed.
    seen_revision: AtomicU64,
    /// The highest compaction this store made or was told about.
    compacted_revision: AtomicU64,
}

/// The etcd-backed [`Store`]; cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.inner.prefix)
            .field("revision", &self.current_revision())
            .finish()
    }
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Backend(format!("reading {what} {}: {e}", path.display())))
}

/// What a failed etcd call means; `requested` is the revision it asked for, if any.
fn etcd_error(e: etcd_client::Error, requested: u64) -> StoreError {
    if let etcd_client::Error::GRpcStatus(status) = &e {
        let message = status.message();
        if message.contains("required revision has been compacted") {
            return StoreError::Compacted {
                requested,
                compacted: 0,
            };
        }
        if message.contains("required revision is a future revision") {
            return StoreError::FutureRevision {
                requested,
                current: 0,
            };
        }
    }
    StoreError::Backend(format!("etcd: {e}"))
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn revision_of(header: Option<&ResponseHeader>) -> u64 {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

fn to_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// Connects to the cluster and checks it answers.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(ca) = &options.ca_file {
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(
                etcd_client::Certificate::from_pem(read_file(ca, "--etcd-cafile")?),
            );
            match (&options.cert_file, &options.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read_file(cert, "--etcd-certfile")?,
                        read_file(key, "--etcd-keyfile")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Backend(
                        "--etcd-certfile and --etcd-keyfile go together".into(),
                    ));
                }
            }
            connect = connect.with_tls(tls);
        } else if options.cert_file.is_some() || options.key_file.is_some() {
            return Err(StoreError::Backend(
                "--etcd-certfile/--etcd-keyfile need --etcd-cafile (TLS to etcd)".into(),
            ));
        }
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot connect to etcd at {}: {e}",
                    options.endpoints.join(",")
                ))
            })?;
        let store = EtcdStore {
            inner: Arc::new(Inner {
                client,
                prefix: options.key_prefix.trim_end_matches('/').to_string(),
                seen_revision: AtomicU64::new(0),
                compacted_revision: AtomicU64::new(0),
            }),
        };
        store.refresh_revision().await.map_err(|e| {
            StoreError::Backend(format!(
                "etcd at {} does not answer: {e}",
                options.endpoints.join(",")
            ))
        })?;
        if options.retain_revisions > 0 {
            tokio::spawn(compactor::run(
                Arc::downgrade(&store.inner),
                options.retain_revisions,
                options.compaction_interval,
            ));
        }
        Ok(store)
    }

    fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The etcd key of store key `key`.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Notes the revision a response carried and returns it.
    fn note(&self, header: Option<&ResponseHeader>) -> u64 {
        note_revision(&self.inner, header)
    }

    /// Reads the store revision from etcd.
    async fn refresh_revision(&self) -> Result<u64, StoreError> {
        refresh_revision(&self.inner).await
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        convert(&self.inner.prefix, kv)
    }

    /// Fails with `Compacted` or `FutureRevision` unless history after `after` can be
    /// read (a count-only read at that revision).
    async fn check_revision(&self, prefix: &str, after: u64) -> Result<(), StoreError> {
        let at = after.max(1);
        let key = self.full(prefix);
        let end = prefix_end(key.as_bytes());
        let options = GetOptions::new()
            .with_range(end)
            .with_count_only()
            .with_revision(to_i64(at));
        match self.client().get(key, Some(options)).await {
            Ok(response) => {
                self.note(response.header());
                Ok(())
            }
            Err(e) => Err(self.revision_error(etcd_error(e, after)).await),
        }
    }

    /// Fills in the revisions a `Compacted`/`FutureRevision` error left at 0.
    async fn revision_error(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Compacted { requested, .. } => {
                let compacted = self.inner.compacted_revision.load(Ordering::Acquire);
                StoreError::Compacted {
                    requested,
                    compacted: compacted.max(requested.saturating_add(1)),
                }
            }
            StoreError::FutureRevision { requested, .. } => StoreError::FutureRevision {
                requested,
                current: self.refresh_revision().await.unwrap_or(0),
            },
            other => other,
        }
    }

    async fn get_now(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .client()
            .get(self.full(key), None)
            .await
            .map_err(|e| etcd_error(e, 0))?;
        self.note(response.header());
        response
            .kvs()
            .first()
            .map(|kv| self.convert(kv))
            .transpose()
    }

    /// The key as a failed transaction's `or_else` get saw it.
    fn failed_read(&self, ops: &[TxnOpResponse]) -> Result<Option<KeyValue>, StoreError> {
        match ops.first() {
            Some(TxnOpResponse::Get(get)) => {
                get.kvs().first().map(|kv| self.convert(kv)).transpose()
            }
            _ => Err(StoreError::Backend(
                "etcd: unexpected transaction response".into(),
            )),
        }
    }
}

fn note_revision(inner: &Inner, header: Option<&ResponseHeader>) -> u64 {
    let revision = revision_of(header);
    inner.seen_revision.fetch_max(revision, Ordering::AcqRel);
    revision
}

async fn refresh_revision(inner: &Inner) -> Result<u64, StoreError> {
    let key = format!("{}/", inner.prefix);
    let options = GetOptions::new().with_count_only();
    let response = inner
        .client
        .clone()
        .get(key, Some(options))
        .await
        .map_err(|e| etcd_error(e, 0))?;
    Ok(note_revision(inner, response.header()))
}

fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv
        .key_str()
        .map_err(|e| StoreError::Backend(format!("etcd key is not UTF-8: {e}")))?;
    let key = key
        .strip_prefix(prefix)
        .ok_or_else(|| StoreError::Backend(format!("etcd key {key:?} is outside {prefix:?}")))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: u64::try_from(kv.create_revision()).unwrap_or(0),
        mod_revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
    })
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.get_now(key).boxed()
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let full = self.full(key);
            let txn = Txn::new()
                .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(full.clone(), value, None)])
                .or_else([TxnOp::get(full, None)]);
            let response = self.client().txn(txn).await.map_err(|e| etcd_error(e, 0))?;
            let revision = self.note(response.header());
            if response.succeeded() {
                Ok(revision)
            } else {
                Err(StoreError::AlreadyExists(key.to_string()))
            }
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let full = self.full(key);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    to_i64(expected),
                )])
                .and_then([TxnOp::put(full.clone(), value, None)])
                .or_else([TxnOp::get(full, None)]);
            let response = self.client().txn(txn).await.map_err(|e| etcd_error(e, 0))?;
            let revision = self.note(response.header());
            if response.succeeded() {
                return Ok(revision);
            }
            match self.failed_read(&response.op_responses())? {
                None => Err(StoreError::NotFound(key.to_string())),
                Some(kv) => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: kv.mod_revision,
                }),
            }
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>> {
        async move {
            let full = self.full(key);
            let compare = match expected {
                Some(rev) => Compare::mod_revision(full.clone(), CompareOp::Equal, to_i64(rev)),
                None => Compare::create_revision(full.clone(), CompareOp::Greater, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::delete(
                    full.clone(),
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(full, None)]);
            let response = self.client().txn(txn).await.map_err(|e| etcd_error(e, 0))?;
            let revision = self.note(response.header());
            let ops = response.op_responses();
            if response.succeeded() {
                let last = match ops.first() {
                    Some(TxnOpResponse::Delete(d)) => {
                        d.prev_kvs().first().map(|kv| self.convert(kv))
                    }
                    _ => None,
                };
                return match last {
                    Some(kv) => Ok((revision, kv?)),
                    None => Err(StoreError::NotFound(key.to_string())),
                };
            }
            match (self.failed_read(&ops)?, expected) {
                (Some(kv), Some(expected)) => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: kv.mod_revision,
                }),
                _ => Err(StoreError::NotFound(key.to_string())),
            }
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
        async move {
            let full_prefix = self.full(prefix);
            let end = prefix_end(full_prefix.as_bytes());
            let start = match start_after {
                // The first key sorting after `after`.
                Some(after) => {
                    let mut key = self.full(after).into_bytes();
                    key.push(0);
                    key
                }
                None => full_prefix.into_bytes(),
            };
            let mut options = GetOptions::new()
                .with_range(end)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            if revision > 0 {
                options = options.with_revision(to_i64(revision));
            }
            let response = match self.client().get(start, Some(options)).await {
                Ok(r) => r,
                Err(e) => return Err(self.revision_error(etcd_error(e, revision)).await),
            };
            let read_at = self.note(response.header());
            let items = response
                .kvs()
                .iter()
                .map(|kv| self.convert(kv))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ListPage {
                items,
                revision: if revision > 0 { revision } else { read_at },
                more: response.more(),
            })
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        progress_every: Option<Duration>,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        async move {
            self.check_revision(prefix, after).await?;
            watch::start(self, prefix, after, progress_every.is_some()).await
        }
        .boxed()
    }

    fn current_revision(&self) -> u64 {
        self.inner.seen_revision.load(Ordering::Acquire)
    }

    fn fresh_revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.refresh_revision().boxed()
    }

    /// etcd's on-demand progress request can overtake events still queued for the
    /// watcher (see [`watch`]), so watches report at etcd's own interval.
    fn request_progress(&self) -> bool {
        false
    }

    fn compacted_revision(&self) -> u64 {
        self.inner.compacted_revision.load(Ordering::Acquire)
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { compactor::compact(&self.inner, revision).await }.boxed()
    }
}
