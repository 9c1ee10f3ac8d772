//! `hmctl get -w`: prints the current listing, then one row (or document) per change,
//! watching from the listing's revision; re-lists when the server says that revision
//! has expired.

use anyhow::Result;
use futures::StreamExt;
use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{WatchEventType, WatchRequest};
use tonic::Code;

use crate::Exit;
use crate::cli::{GetArgs, OutputFormat};
use crate::error::ServerError;
use crate::kinds::Kind;
use crate::listing::{field_selector, headers, list, no_resources_message, row};
use crate::output::{json_text, name_text, print, yaml_text};
use crate::table::{StreamingTable, Table};

/// Prints objects as they change until the server ends the stream.
pub async fn run<K: Kind>(
    api: &Api<K>,
    args: &GetArgs,
    namespace: &str,
    name: Option<&String>,
) -> Result<Exit> {
    let mut printer = WatchPrinter::<K>::new(args);
    let (objects, mut revision) = list(api, args, namespace, name).await?;
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
    printer.initial(&objects)?;

    loop {
        let request = WatchRequest {
            namespace: namespace.to_string(),
            label_selector: args.selector.clone().unwrap_or_default(),
            field_selector: field_selector(args, name),
            resource_version: revision,
            allow_bookmarks: true,
        };
        let mut stream = api
            .watch(request)
            .await
            .map_err(|s| ServerError::from_status(&s))?;
        let expired = loop {
            match stream.next().await {
                None => return Ok(Exit::Success),
                Some(Ok(event)) => {
                    let (kind, obj) = K::split_event(event);
                    revision = revision.max(obj.meta().resource_version);
                    if kind != WatchEventType::Bookmark {
                        printer.change(&obj)?;
                    }
                }
                Some(Err(status)) if is_expired(&status) => break true,
                Some(Err(status)) => return Err(ServerError::from_status(&status).into()),
            }
        };
        if expired {
            // The revision was compacted away: list again (printing the current state)
            // and watch on from the new listing.
            let (objects, relisted) = list(api, args, namespace, name).await?;
            for obj in &objects {
                printer.change(obj)?;
            }
            revision = relisted;
        }
    }
}

fn is_expired(status: &tonic::Status) -> bool {
    reason_of(status) == Some(Reason::Expired) || status.code() == Code::OutOfRange
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

    fn initial(&mut self, objects: &[K]) -> Result<()> {
        if self.is_table() {
            let mut table = Table::new(headers::<K>(self.args));
            for obj in objects {
                table.push(row(obj, self.args));
            }
            if !objects.is_empty() {
                print(&table.render())?;
                self.header_printed = true;
            }
            self.stream = table.into_stream();
            return Ok(());
        }
        for obj in objects {
            self.change(obj)?;
        }
        Ok(())
    }

    fn change(&mut self, obj: &K) -> Result<()> {
        let one = [obj.clone().into_dyn()];
        let text = match self.args.output {
            None | Some(OutputFormat::Wide) => {
                let mut text = String::new();
                if !self.header_printed {
                    text.push_str(&self.stream.line(&headers::<K>(self.args)));
                    self.header_printed = true;
                }
                text.push_str(&self.stream.line(&row(obj, self.args)));
                text
            }
            Some(OutputFormat::Yaml) => format!("---\n{}", yaml_text(&one)),
            Some(OutputFormat::Json) => json_text(&one, true)?,
            Some(OutputFormat::Name) => name_text(&one),
        };
        print(&text)
    }
}
