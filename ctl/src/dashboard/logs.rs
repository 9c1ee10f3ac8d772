//! An Instance's log for the page: read once (`/api/logs`, text), or followed live
//! (`/api/logs?follow=true`, server-sent events) from the same `InstanceService.Logs`
//! stream with `follow` that `hmctl logs -f` reads. A followed log ends when the
//! container's output ends, or when the page goes away: the event stream's connection
//! closes, the task below sees it, and dropping the gRPC stream cancels the follow on
//! the apiserver and on the agent.
//!
//! Each event is one line of JSON: `{"text": "..."}` (output, as UTF-8; a character
//! split across chunks is kept until it is whole), `{"error": "..."}`, then
//! `{"end": true}` as the last one, so the page closes the stream instead of letting
//! the browser reconnect.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use hypermesh_api::v1::LogsRequest;
use hypermesh_api::v1::instance_service_client::InstanceServiceClient;
use serde_json::json;
use tokio::sync::mpsc;

use super::routes::{Body, Dashboard, event_stream, param, text};
use crate::error::ServerError;

/// Largest log answered at once; longer logs are cut to their end (ask with `tail`).
const MAX_LOG: usize = 1 << 20;
/// How long reading a log (or opening a followed one) may take.
const LOG_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of log shown when the page asks for none in particular.
const DEFAULT_TAIL: u64 = 500;
/// Events a followed log may have queued before reading from the apiserver waits.
const QUEUE: usize = 64;
/// A comment this often keeps an idle followed log open and finds a page that left.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `name`, `container` and `tail` of the query, and the namespace the route resolved,
/// as a request; `follow` as asked.
fn request(namespace: String, query: Option<&str>, follow: bool) -> anyhow::Result<LogsRequest> {
    if namespace.is_empty() {
        anyhow::bail!("namespace: an Instance's log needs its namespace");
    }
    let name = param(query, "name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("name: the Instance whose log to show is required"))?;
    let tail = match param(query, "tail") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| anyhow::anyhow!("tail: {t:?} is not a number of lines"))?,
        None => DEFAULT_TAIL,
    };
    Ok(LogsRequest {
        namespace,
        name: name.to_string(),
        container: param(query, "container").unwrap_or_default().to_string(),
        follow,
        tail_lines: Some(tail),
        previous: false,
        timestamps: false,
    })
}

/// `GET /api/logs`: the log as text, or followed as server-sent events.
pub async fn logs(
    d: &Dashboard,
    namespace: String,
    query: Option<&str>,
) -> anyhow::Result<Response<Body>> {
    let follow = match param(query, "follow") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => anyhow::bail!("follow: {other:?} is not true or false"),
    };
    let request = request(namespace, query, follow)?;
    if follow {
        return Ok(followed(d, request));
    }
    let name = request.name.clone();
    let read = async {
        let mut stream = InstanceServiceClient::new(d.channel.clone())
            .logs(request)
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
            if out.len() > MAX_LOG {
                out.drain(..out.len() - MAX_LOG);
            }
        }
        Ok::<_, tonic::Status>(out)
    };
    let out = tokio::time::timeout(LOG_TIMEOUT, read)
        .await
        .map_err(|_| anyhow::anyhow!("the log of {name:?} took longer than {LOG_TIMEOUT:?}"))?
        .map_err(|s| ServerError::for_object(&s, "instances", &name))?;
    Ok(text(
        StatusCode::OK,
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

fn event(value: serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The followed log as an event stream (errors, e.g. no such Instance, are events too,
/// so the page can show them).
fn followed(d: &Dashboard, request: LogsRequest) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let channel = d.channel.clone();
    tokio::spawn(async move {
        let name = request.name.clone();
        let mut client = InstanceServiceClient::new(channel);
        let open = client.logs(request);
        let opened = tokio::select! {
            () = tx.closed() => return,
            opened = tokio::time::timeout(LOG_TIMEOUT, open) => opened,
        };
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let error = ServerError::for_object(&status, "instances", &name);
                let _ = tx.send(event(json!({"error": error.to_string()}))).await;
                let _ = tx.send(event(json!({"end": true}))).await;
                return;
            }
            Err(_) => {
                let error = format!("the log of {name:?} took longer than {LOG_TIMEOUT:?} to open");
                let _ = tx.send(event(json!({"error": error}))).await;
                let _ = tx.send(event(json!({"end": true}))).await;
                return;
            }
        };
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        let mut pending = Vec::new();
        loop {
            let frame = tokio::select! {
                // The page left: returning drops the stream, which cancels the follow.
                () = tx.closed() => return,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                chunk = stream.message() => match chunk {
                    Ok(Some(chunk)) => {
                        pending.extend_from_slice(&chunk.data);
                        event(json!({"text": take_utf8(&mut pending)}))
                    }
                    Ok(None) => {
                        if !pending.is_empty() {
                            let rest = String::from_utf8_lossy(&pending).into_owned();
                            let _ = tx.send(event(json!({"text": rest}))).await;
                        }
                        let _ = tx.send(event(json!({"end": true}))).await;
                        return;
                    }
                    Err(status) => {
                        let error = ServerError::for_object(&status, "instances", &name);
                        let _ = tx.send(event(json!({"error": error.to_string()}))).await;
                        let _ = tx.send(event(json!({"end": true}))).await;
                        return;
                    }
                },
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    event_stream(rx)
}

/// Takes the longest prefix of `bytes` that does not end inside a UTF-8 character, as
/// text (invalid sequences replaced); the unfinished character stays in `bytes`.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        // An incomplete character at the very end: keep it for the next chunk.
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => incomplete_tail(bytes),
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

/// How many bytes at the end of `bytes` start a character that is not complete yet.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        let width = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue,
            _ => return 0,
        };
        return if width > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_are_kept_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut pending = b"price: ".to_vec();
        pending.extend_from_slice(&euro[..2]);
        assert_eq!(take_utf8(&mut pending), "price: ");
        assert_eq!(pending, &euro[..2]);
        pending.extend_from_slice(&euro[2..]);
        pending.extend_from_slice(b" 5\n");
        assert_eq!(take_utf8(&mut pending), "€ 5\n");
        assert!(pending.is_empty());
        // Invalid bytes are replaced, and a split character after them still waits.
        let mut pending = vec![b'a', 0xFF, b'b', euro[0]];
        assert_eq!(take_utf8(&mut pending), "a\u{FFFD}b");
        assert_eq!(pending, vec![euro[0]]);
    }
}
