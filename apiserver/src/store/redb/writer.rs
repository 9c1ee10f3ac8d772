//! The single writer: write requests queued to one thread, group-committed (one
//! transaction and one fsync for every write waiting at that moment), and compaction.

use crate::store::codec::{decode_record, encode_event, encode_record};
use crate::store::{KeyValue, StoreError, StoreEvent};
use redb::{Database, ReadableTable};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

use super::*;

pub(super) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: u64,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
    Compact {
        revision: u64,
    },
}

pub(super) enum WriteOutcome {
    Revision(u64),
    Deleted(u64, KeyValue),
    Compacted,
}

pub(super) struct WriteRequest {
    pub(super) op: WriteOp,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}
pub(super) fn run_writer(
    shared: Arc<Shared>,
    requests: std::sync::mpsc::Receiver<WriteRequest>,
    mut revision: u64,
    options: RedbOptions,
) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let compacted = shared.compacted_revision.load(Ordering::Acquire);
        let auto_compact = (options.retain_revisions > 0
            && revision > compacted + options.retain_revisions + options.retain_revisions / 10)
            .then(|| revision - options.retain_revisions);
        let start_revision = revision;
        let result = commit_batch(&shared.db, &batch, &mut revision, auto_compact);
        match result {
            Ok((outcomes, events, new_compacted)) => {
                if let Some(c) = new_compacted {
                    shared.compacted_revision.store(c, Ordering::Release);
                }
                for event in events {
                    // No receivers is fine: nobody is watching.
                    let _ = shared.events.send(Arc::new(event));
                }
                shared.notified_revision.store(revision, Ordering::Release);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                revision = start_revision;
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type BatchResult = (
    Vec<Result<WriteOutcome, StoreError>>,
    Vec<StoreEvent>,
    Option<u64>,
);

pub(super) fn commit_batch(
    db: &Database,
    batch: &[WriteRequest],
    revision: &mut u64,
    auto_compact: Option<u64>,
) -> Result<BatchResult, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut compacted = None;
    {
        let mut kv = txn.open_table(KV).map_err(backend)?;
        let mut history = txn.open_table(HISTORY).map_err(backend)?;
        let mut meta = txn.open_table(META).map_err(backend)?;
        for request in batch {
            let outcome = match &request.op {
                WriteOp::Compact { revision: target } => {
                    let target = (*target).min(*revision);
                    compact_history(&mut history, &mut meta, target)?;
                    compacted = Some(target);
                    Ok(WriteOutcome::Compacted)
                }
                op => {
                    let (key, expected_state) = match op {
                        WriteOp::Create { key, .. } => (key, None),
                        WriteOp::Update { key, expected, .. } => (key, Some(Some(*expected))),
                        WriteOp::Delete { key, expected } => (key, Some(*expected)),
                        WriteOp::Compact { .. } => unreachable!("handled above"),
                    };
                    let previous = kv
                        .get(key.as_str())
                        .map_err(backend)?
                        .map(|v| decode_record(key, v.value()))
                        .transpose()?;
                    let check = match (&previous, expected_state) {
                        (Some(_), None) => Err(StoreError::AlreadyExists(key.clone())),
                        (None, Some(_)) => Err(StoreError::NotFound(key.clone())),
                        (Some(p), Some(Some(expected))) if p.mod_revision != expected => {
                            Err(StoreError::Conflict {
                                key: key.clone(),
                                expected,
                                current: p.mod_revision,
                            })
                        }
                        _ => Ok(()),
                    };
                    match check {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let next = *revision + 1;
                            let current = match op {
                                WriteOp::Create { value, .. } => Some(KeyValue {
                                    key: key.clone(),
                                    value: value.clone(),
                                    create_revision: next,
                                    mod_revision: next,
                                }),
                                WriteOp::Update { value, .. } => Some(KeyValue {
                                    key: key.clone(),
                                    value: value.clone(),
                                    create_revision: previous
                                        .as_ref()
                                        .map_or(next, |p| p.create_revision),
                                    mod_revision: next,
                                }),
                                _ => None,
                            };
                            match &current {
                                Some(c) => {
                                    kv.insert(
                                        key.as_str(),
                                        encode_record(c.create_revision, c.mod_revision, &c.value)
                                            .as_slice(),
                                    )
                                    .map_err(backend)?;
                                }
                                None => {
                                    kv.remove(key.as_str()).map_err(backend)?;
                                }
                            }
                            let event = StoreEvent {
                                revision: next,
                                key: key.clone(),
                                current,
                                previous: previous.clone(),
                            };
                            history
                                .insert(next, encode_event(&event).as_slice())
                                .map_err(backend)?;
                            events.push(event);
                            *revision = next;
                            Ok(match previous {
                                Some(p) if matches!(op, WriteOp::Delete { .. }) => {
                                    WriteOutcome::Deleted(next, p)
                                }
                                _ => WriteOutcome::Revision(next),
                            })
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        if let Some(target) = auto_compact.filter(|_| compacted.is_none()) {
            compact_history(&mut history, &mut meta, target)?;
            compacted = Some(target);
        }
        meta.insert(META_REVISION, *revision).map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    Ok((outcomes, events, compacted))
}

pub(super) fn compact_history(
    history: &mut redb::Table<'_, u64, &[u8]>,
    meta: &mut redb::Table<'_, &str, u64>,
    target: u64,
) -> Result<(), StoreError> {
    history
        .retain_in(..=target, |_, _| false)
        .map_err(backend)?;
    let old = meta
        .get(META_COMPACTED)
        .map_err(backend)?
        .map_or(0, |g| g.value());
    meta.insert(META_COMPACTED, old.max(target))
        .map_err(backend)?;
    Ok(())
}
