//! The audit log (`--audit-log PATH`): one JSON line per request — when, who
//! (identity, groups, address), what (verb, resource, namespace, name) and the result
//! code — rotated by size (`PATH.1` … `PATH.<max-files - 1>`).
//!
//! Requests never wait for the disk: records go through a bounded queue to a writer
//! task; when the queue is full (the disk is slower than the API) records are dropped
//! and counted, and the next written record says how many were lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::caller::Caller;

/// Records queued before new ones are dropped.
const QUEUE: usize = 8192;

/// Where and how the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The log file.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Files kept, the live one included.
    pub max_files: u32,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339 time the request finished.
    pub time: String,
    /// `user:bob`, `node:vm`, … (`system:anonymous` without a certificate).
    pub identity: String,
    /// The caller's groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The gRPC method: `Create`, `List`, `Watch`, `Bind`, `Exec`, …
    pub verb: String,
    /// The kind's plural: `workloads`.
    pub resource: String,
    /// The namespace, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `OK` or the gRPC code name (`PermissionDenied`, …).
    pub code: String,
    /// Records dropped before this one because the writer fell behind.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_before: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The audit log's sending side; cheap to share.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Record>,
    dropped: AtomicU64,
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens (appends to) the log and starts its writer.
    pub fn open(settings: AuditSettings) -> Result<Arc<Self>, AuditError> {
        let mut writer = Writer::open(settings)?;
        let (tx, mut rx) = mpsc::channel::<Record>(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Some(record) = rx.blocking_recv() {
                    if let Err(e) = writer.write(&record) {
                        tracing::warn!(error = %e, "cannot write the audit log");
                    }
                }
                let _ = writer.file.flush();
            })
            .map_err(|source| AuditError {
                path: PathBuf::from("audit-log thread"),
                source,
            })?;
        Ok(Arc::new(AuditLog {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Records one finished request.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        caller: Option<&Caller>,
        remote: Option<std::net::SocketAddr>,
        verb: &str,
        resource: &str,
        namespace: &str,
        name: &str,
        code: &str,
    ) {
        let record = Record {
            time: hypermesh_api::time::rfc3339(std::time::SystemTime::now(), true),
            identity: caller.map_or_else(|| "unknown".to_string(), |c| c.name.clone()),
            groups: caller.map(|c| c.groups.clone()).unwrap_or_default(),
            remote: remote.map(|r| r.to_string()),
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            code: code.to_string(),
            dropped_before: self.dropped.swap(0, Ordering::Relaxed),
        };
        if let Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) =
            self.tx.try_send(record)
        {
            self.dropped
                .fetch_add(1 + r.dropped_before, Ordering::Relaxed);
        }
    }
}

/// The file side: appends lines, rotates by size.
struct Writer {
    settings: AuditSettings,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl Writer {
    fn open(settings: AuditSettings) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: settings.path.clone(),
            source,
        };
        if let Some(dir) = settings.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let (file, size) = open_append(&settings.path).map_err(err)?;
        Ok(Writer {
            settings,
            file: std::io::BufWriter::new(file),
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.settings.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let keep = self.settings.max_files.max(1);
        if keep == 1 {
            std::fs::remove_file(&self.settings.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.rotated(keep - 1)).or_else(ignore_missing)?;
            for n in (1..keep - 1).rev() {
                std::fs::rename(self.rotated(n), self.rotated(n + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.settings.path, self.rotated(1)).or_else(ignore_missing)?;
        }
        let (file, size) = open_append(&self.settings.path)?;
        self.file = std::io::BufWriter::new(file);
        self.size = size;
        Ok(())
    }

    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.settings.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        // Audit lines are flushed as they come: a crash loses at most the one in flight.
        self.file.flush()
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut writer = Writer::open(AuditSettings {
            path: path.clone(),
            max_bytes: 400,
            max_files: 3,
        })
        .unwrap();
        let record = Record {
            time: "2026-01-01T00:00:00Z".into(),
            identity: "user:bob".into(),
            groups: vec![],
            remote: None,
            verb: "Create".into(),
            resource: "workloads".into(),
            namespace: "team-a".into(),
            name: "web".into(),
            code: "PermissionDenied".into(),
            dropped_before: 0,
        };
        for _ in 0..20 {
            writer.write(&record).unwrap();
        }
        let live = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(live.lines().next().unwrap()).unwrap();
        assert_eq!(first["identity"], "user:bob");
        assert_eq!(first["code"], "PermissionDenied");
        assert!(live.len() <= 400, "{}", live.len());
        assert!(writer.rotated(1).exists());
        assert!(writer.rotated(2).exists());
        assert!(!writer.rotated(3).exists(), "only max_files are kept");
    }
}
