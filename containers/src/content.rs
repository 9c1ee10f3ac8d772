//! The content store: writing blobs chunk by chunk with their digest and size checked
//! before anything is committed, reading small blobs back, and the short leases that pin
//! content while an image is being brought in.
//!
//! Archive import and registry pulls both write through [`BlobWriter`], so every blob in
//! containerd was hashed by us on the way in; a blob whose bytes do not match its
//! descriptor is aborted and never becomes visible.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::{
    AbortRequest, InfoRequest, ReadContentRequest, ReadContentResponse, WriteAction,
    WriteContentRequest, WriteContentResponse, content_client::ContentClient,
};
use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{ContainerdClient, Error};

/// The largest document (`index.json`, a manifest, an index, a config) read into memory.
pub const MAX_DOCUMENT_BYTES: u64 = 8 << 20;

/// Blobs are sent in chunks well below gRPC's default 4 MiB message limit.
const CHUNK: usize = 1 << 20;
/// How long a lease pins content if the agent dies while bringing an image in.
const LEASE_TTL: Duration = Duration::from_secs(3600);

/// Runs `work` under a fresh lease, which is deleted afterwards whatever the outcome:
/// what `work` wrote stays only if something else (an image record) references it.
pub(crate) async fn with_lease<T, E>(
    client: &ContainerdClient,
    work: impl AsyncFnOnce(&str) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<Error>,
{
    let lease = format!("hypermesh-import-{}", unique_suffix());
    client.create_lease(&lease, LEASE_TTL).await?;
    let result = work(&lease).await;
    let released = client.delete_lease(&lease).await;
    let value = result?;
    released?;
    Ok(value)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the content store already has blob `digest`.
pub(crate) async fn exists(client: &ContainerdClient, digest: &str) -> Result<bool, Error> {
    let info = ContentClient::new(client.channel())
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await;
    match info {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(status) => Err(Error::call("content.info")(status)),
    }
}

/// Writes `data` as blob `digest` (with `labels`) unless the store already has it.
pub(crate) async fn write_blob(
    client: &ContainerdClient,
    lease: &str,
    digest: &str,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), Error> {
    let size = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let Some(mut writer) = BlobWriter::open(client, lease, digest, size).await? else {
        return Ok(());
    };
    writer.write(data).await?;
    writer.commit(labels).await
}

/// An open write of one blob: bytes are hashed and counted as they arrive, sent to
/// containerd in [`CHUNK`]s, and committed only when size and digest match.
pub(crate) struct BlobWriter {
    client: ContainerdClient,
    requests: mpsc::Sender<WriteContentRequest>,
    responses: tonic::Streaming<WriteContentResponse>,
    reference: String,
    expected: String,
    total: i64,
    /// Bytes received so far (sent or buffered).
    received: i64,
    /// Bytes already sent to containerd.
    sent: i64,
    buffer: Vec<u8>,
    hasher: Sha256,
}

impl BlobWriter {
    /// Starts writing blob `digest` of `size` bytes under `lease`; `None` when the store
    /// already has it.
    pub(crate) async fn open(
        client: &ContainerdClient,
        lease: &str,
        digest: &str,
        size: i64,
    ) -> Result<Option<BlobWriter>, Error> {
        if !crate::reference::is_sha256(digest) {
            return Err(Error::UnsupportedDigest(digest.to_string()));
        }
        if exists(client, digest).await? {
            return Ok(None);
        }
        let reference = format!("hypermesh-{}-{digest}", unique_suffix());
        let (requests, receiver) = mpsc::channel(2);
        // containerd reads a first message before it answers at all, so it is queued
        // before the call: a Stat that opens the ingest.
        let _ = requests
            .send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: reference.clone(),
                total: size,
                expected: digest.to_string(),
                offset: 0,
                data: Vec::new(),
                labels: HashMap::new(),
            })
            .await;
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let opened = ContentClient::new(client.channel())
            .write(client.leased_request(stream, lease))
            .await;
        let mut responses = match opened {
            Ok(response) => response.into_inner(),
            // Written by someone else since we looked.
            Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(None),
            Err(status) => return Err(Error::call("content.write")(status)),
        };
        match responses.message().await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(None),
            Err(status) => return Err(Error::call("content.write")(status)),
        }
        Ok(Some(BlobWriter {
            client: client.clone(),
            requests,
            responses,
            reference,
            expected: digest.to_string(),
            total: size,
            received: 0,
            sent: 0,
            buffer: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
        }))
    }

    /// Adds the next bytes of the blob. More bytes than the descriptor's size abort the
    /// write with [`Error::SizeMismatch`].
    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        if self.received.saturating_add(len) > self.total {
            let error = Error::SizeMismatch {
                digest: self.expected.clone(),
                expected: self.total,
                actual: self.received.saturating_add(len),
            };
            self.abort().await;
            return Err(error);
        }
        self.hasher.update(data);
        self.received += len;
        while !data.is_empty() {
            let room = CHUNK - self.buffer.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(now);
            data = later;
            if self.buffer.len() == CHUNK
                && let Err(e) = self.send(WriteAction::Write, HashMap::new()).await
            {
                self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Checks size and digest of everything written and commits the blob with
    /// `labels`; on a mismatch the write is aborted and nothing is committed.
    pub(crate) async fn commit(mut self, labels: HashMap<String, String>) -> Result<(), Error> {
        let actual = format!("sha256:{}", hex(&self.hasher.clone().finalize()));
        let mismatch = if self.received != self.total {
            Some(Error::SizeMismatch {
                digest: self.expected.clone(),
                expected: self.total,
                actual: self.received,
            })
        } else if actual != self.expected {
            Some(Error::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            })
        } else {
            None
        };
        if let Some(error) = mismatch {
            self.abort().await;
            return Err(error);
        }
        match self.send(WriteAction::Commit, labels).await {
            Ok(()) => Ok(()),
            // The same blob was committed by another writer meanwhile.
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => Ok(()),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Gives up: ends the stream and removes the partial ingest.
    pub(crate) async fn abort(&mut self) {
        // Ending our side of the stream ends containerd's handler.
        let (closed, _) = mpsc::channel(1);
        self.requests = closed;
        let _ = ContentClient::new(self.client.channel())
            .abort(self.client.request(AbortRequest {
                r#ref: self.reference.clone(),
            }))
            .await;
    }

    /// Sends the buffered bytes with `action` and waits for containerd's answer.
    async fn send(
        &mut self,
        action: WriteAction,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let request = WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.expected.clone(),
            offset: self.sent,
            data,
            labels,
        };
        if self.requests.send(request).await.is_err() {
            // containerd ended the call: its status says why.
            return match self.responses.message().await {
                Err(status) => Err(Error::call("content.write")(status)),
                Ok(_) => Err(Error::call("content.write")(tonic::Status::aborted(
                    "write stream closed early",
                ))),
            };
        }
        match self.responses.message().await {
            Ok(Some(_)) => {
                self.sent += len;
                Ok(())
            }
            Ok(None) => Err(Error::call("content.write")(tonic::Status::aborted(
                "write stream closed early",
            ))),
            Err(status) => Err(Error::call("content.write")(status)),
        }
    }
}

/// The bytes of blob `digest` from the content store, as a stream of chunks.
pub(crate) async fn read_stream(
    client: &ContainerdClient,
    digest: &str,
) -> Result<tonic::Streaming<ReadContentResponse>, Error> {
    Ok(ContentClient::new(client.channel())
        .read(client.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(Error::call("content.read"))?
        .into_inner())
}

/// Reads a whole small blob (manifest, index, config) from the content store, refusing
/// more than [`MAX_DOCUMENT_BYTES`].
pub(crate) async fn read_blob(
    client: &ContainerdClient,
    desc: &Descriptor,
) -> Result<Vec<u8>, Error> {
    let limit = MAX_DOCUMENT_BYTES;
    let too_large = || Error::InvalidImage {
        path: desc.digest.clone().into(),
        detail: format!("blob has more than the {limit} bytes accepted for a document"),
    };
    let claimed = u64::try_from(desc.size).unwrap_or(0);
    if claimed > limit {
        return Err(too_large());
    }
    let mut stream = read_stream(client, &desc.digest).await?;
    let mut out = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(Error::call("content.read"))?
    {
        if (out.len() + chunk.data.len()) as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// A suffix that makes temporary keys unique per call.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
