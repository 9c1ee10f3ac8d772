//! `hmctl get -w`: prints the current listing, then one row (or document) per change,
//! watching from the listing's revision. The watch outlives the apiserver: when the
//! connection drops or the server ends the stream, it says so on stderr, reconnects
//! with back-off and resumes from the last revision it printed; when that revision
//! has expired (`OUT_OF_RANGE`) it lists again and prints what changed meanwhile,
//! deletions included. `--output-watch-events` labels each change ADDED, MODIFIED or
//! DELETED (an EVENT column, or a `{type, object}` wrapper in YAML/JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{WatchEventType, WatchRequest};
use hypermesh_runtime::backoff::Backoff;
use tonic::{Code, Status};

use crate::Exit;
use crate::cli::{GetArgs, OutputFormat};
use crate::error::ServerError;
use crate::kinds::Kind;
use crate::listing::{field_selector, headers, list, list_request, no_resources_message, row};
use crate::output::{json_text, name_text, print};
use crate::table::{StreamingTable, Table};

/// Pauses before reconnecting: 500 ms doubling to 10 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// The kind of change a printed object went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// What the watch does next.
enum Step {
    /// List (again) and print the differences from what was printed.
    List,
    /// Watch from the last revision.
    Watch,
    /// Wait, then try again (`why` went wrong).
    Reconnect { why: String, then: Box<Step> },
}

/// Errors a new attempt cannot fix (who we are, what we asked).
fn is_fatal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

fn is_expired(status: &Status) -> bool {
    reason_of(status) == Some(Reason::Expired) || status.code() == Code::OutOfRange
}

/// `(namespace, name)`: what identifies an object across listings.
type Key = (String, String);

fn key_of<K: Kind>(obj: &K) -> Key {
    (obj.meta().namespace.clone(), obj.meta().name.clone())
}

/// Prints objects as they change, across apiserver restarts, until interrupted (or a
/// fatal error).
pub async fn run<K: Kind>(
    api: &Api<K>,
    args: &GetArgs,
    namespace: &str,
    name: Option<&String>,
) -> Result<Exit> {
    let mut printer = WatchPrinter::<K>::new(args);
    let (mut objects, mut revision) = list(api, args, namespace, name).await?;
    if let Some(name) = name
        && objects.is_empty()
    {
        return Err(ServerError {
            reason: "NotFound".into(),
            context: String::new(),
            message: format!("{} {name:?} not found", K::PLURAL),
            code: Code::NotFound,
        }
        .into());
    }
    if objects.is_empty() {
        eprintln!("{}", no_resources_message::<K>(namespace));
    }
    K::sort_listing(&mut objects);
    printer.initial(&objects)?;
    // The last state printed of each object, to tell deletions after a re-list.
    let mut known: BTreeMap<Key, K> = objects.into_iter().map(|o| (key_of(&o), o)).collect();
    let mut retry = RECONNECT.retry();
    let mut step = Step::Watch;
    loop {
        step = match step {
            Step::Reconnect { why, then } => {
                let delay = retry.next_delay();
                eprintln!("watch: {why}; reconnecting in {}", seconds(delay));
                tokio::time::sleep(delay).await;
                *then
            }
            Step::List => match api.list_all(list_request(args, namespace, name)).await {
                Ok((objects, relisted)) => {
                    printer.relisted(&mut known, objects)?;
                    revision = relisted;
                    Step::Watch
                }
                Err(status) if is_fatal(&status) => {
                    return Err(ServerError::from_status(&status).into());
                }
                Err(status) => Step::Reconnect {
                    why: format!("listing failed ({})", brief(&status)),
                    then: Box::new(Step::List),
                },
            },
            Step::Watch => {
                let request = WatchRequest {
                    namespace: namespace.to_string(),
                    label_selector: args.selector.clone().unwrap_or_default(),
                    field_selector: field_selector(args, name),
                    resource_version: revision,
                    allow_bookmarks: true,
                };
                match api.watch(request).await {
                    Err(status) if is_expired(&status) => expired(revision),
                    Err(status) if is_fatal(&status) => {
                        return Err(ServerError::from_status(&status).into());
                    }
                    Err(status) => Step::Reconnect {
                        why: if retry.failures() == 0 {
                            format!("connection lost ({})", brief(&status))
                        } else {
                            format!("cannot reach the server ({})", brief(&status))
                        },
                        then: Box::new(Step::Watch),
                    },
                    Ok(mut stream) => {
                        if retry.failures() > 0 {
                            eprintln!(
                                "watch: reconnected; resuming from resource version {revision}"
                            );
                            retry.reset();
                        }
                        loop {
                            match stream.next().await {
                                None => {
                                    break Step::Reconnect {
                                        why: "the server closed the watch".into(),
                                        then: Box::new(Step::Watch),
                                    };
                                }
                                Some(Ok(event)) => {
                                    let (kind, obj) = K::split_event(event);
                                    revision = revision.max(obj.meta().resource_version);
                                    let change = match kind {
                                        WatchEventType::Bookmark => continue,
                                        WatchEventType::Deleted => Change::Deleted,
                                        _ if known.contains_key(&key_of(&obj)) => Change::Modified,
                                        _ => Change::Added,
                                    };
                                    if change == Change::Deleted {
                                        known.remove(&key_of(&obj));
                                    } else {
                                        known.insert(key_of(&obj), obj.clone());
                                    }
                                    printer.change(change, &obj)?;
                                }
                                Some(Err(status)) if is_expired(&status) => {
                                    break expired(revision);
                                }
                                Some(Err(status)) if is_fatal(&status) => {
                                    return Err(ServerError::from_status(&status).into());
                                }
                                Some(Err(status)) => {
                                    break Step::Reconnect {
                                        why: format!("connection lost ({})", brief(&status)),
                                        then: Box::new(Step::Watch),
                                    };
                                }
                            }
                        }
                    }
                }
            }
        };
    }
}

fn expired(revision: u64) -> Step {
    eprintln!("watch: resource version {revision} has expired; listing again");
    Step::List
}

/// `1.5s`.
fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The status in one line: its code and the first line of its message.
fn brief(status: &Status) -> String {
    let message = status.message().lines().next().unwrap_or_default();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

/// Prints watched objects in the chosen format; table rows stay aligned with the
/// first batch.
struct WatchPrinter<'a, K> {
    args: &'a GetArgs,
    stream: StreamingTable,
    header_printed: bool,
    kind: std::marker::PhantomData<K>,
}

impl<'a, K: Kind> WatchPrinter<'a, K> {
    fn new(args: &'a GetArgs) -> Self {
        WatchPrinter {
            args,
            stream: StreamingTable::default(),
            header_printed: false,
            kind: std::marker::PhantomData,
        }
    }

    fn is_table(&self) -> bool {
        matches!(self.args.output, None | Some(OutputFormat::Wide))
    }

    fn events(&self) -> bool {
        self.args.output_watch_events
    }

    fn headers(&self) -> Vec<String> {
        let mut headers = headers::<K>(self.args);
        if self.events() {
            headers.insert(0, "EVENT".into());
        }
        headers
    }

    fn row(&self, change: Change, obj: &K) -> Vec<String> {
        let mut cells = row(obj, self.args);
        if self.events() {
            cells.insert(0, change.label().into());
        }
        cells
    }

    fn initial(&mut self, objects: &[K]) -> Result<()> {
        if self.is_table() {
            let mut table = Table::new(self.headers());
            for obj in objects {
                table.push(self.row(Change::Added, obj));
            }
            if !objects.is_empty() {
                print(&table.render_with(!self.args.no_headers))?;
                self.header_printed = true;
            }
            self.stream = table.into_stream();
            return Ok(());
        }
        for obj in objects {
            self.change(Change::Added, obj)?;
        }
        Ok(())
    }

    /// Prints what a new listing shows against `known` (what was printed last):
    /// objects that changed or appeared, and those that vanished as deleted.
    fn relisted(&mut self, known: &mut BTreeMap<Key, K>, objects: Vec<K>) -> Result<()> {
        let mut now: BTreeMap<Key, K> = objects.into_iter().map(|o| (key_of(&o), o)).collect();
        for (key, old) in std::mem::take(known) {
            match now.remove(&key) {
                None => self.change(Change::Deleted, &old)?,
                Some(current) => {
                    if current.meta().resource_version != old.meta().resource_version {
                        self.change(Change::Modified, &current)?;
                    }
                    known.insert(key, current);
                }
            }
        }
        for (key, added) in now {
            self.change(Change::Added, &added)?;
            known.insert(key, added);
        }
        Ok(())
    }

    fn change(&mut self, change: Change, obj: &K) -> Result<()> {
        let one = [obj.clone().into_dyn()];
        let text = match self.args.output {
            None | Some(OutputFormat::Wide) => {
                let mut text = String::new();
                if !self.header_printed && !self.args.no_headers {
                    text.push_str(&self.stream.line(&self.headers()));
                    self.header_printed = true;
                }
                text.push_str(&self.stream.line(&self.row(change, obj)));
                text
            }
            Some(OutputFormat::Yaml) if self.events() => {
                let doc = event_document(change, &one[0]);
                let mut text = serde_saphyr::to_string(&doc)?;
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                format!("---\n{text}")
            }
            Some(OutputFormat::Json) if self.events() => {
                let mut text = serde_json::to_string_pretty(&event_document(change, &one[0]))?;
                text.push('\n');
                text
            }
            Some(OutputFormat::Name) if self.events() => {
                format!("{} {}", change.label(), name_text(&one))
            }
            Some(OutputFormat::Yaml) => format!("---\n{}", crate::output::yaml_text(&one)),
            Some(OutputFormat::Json) => json_text(&one, true)?,
            Some(OutputFormat::Name) => name_text(&one),
        };
        print(&text)
    }
}

/// `{"type": "DELETED", "object": {...}}`, as kubectl's `--output-watch-events`.
fn event_document(change: Change, obj: &hypermesh_api::DynObject) -> serde_json::Value {
    serde_json::json!({
        "type": change.label(),
        "object": hypermesh_api::manifest::to_document(obj),
    })
}
