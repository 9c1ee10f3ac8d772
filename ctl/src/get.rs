//! `hmctl get`: lists objects (paged) or fetches them by name, and prints them as a
//! table or in a machine format; `-w` hands over to [`crate::watch`].

use anyhow::{Result, bail};
use hypermesh_api::Api;
use hypermesh_api::v1::ListRequest;
use tonic::transport::Channel;

use crate::cli::{GetArgs, OutputFormat};
use crate::error::ServerError;
use crate::kinds::{Kind, KindVisitor, dispatch, request_namespace, resolve_with_names};
use crate::output::{json_text, name_text, print, yaml_text};
use crate::table::Table;
use crate::{Context, Exit};

/// Runs `hmctl get`.
pub async fn run(ctx: &Context, args: &GetArgs) -> Result<Exit> {
    let (info, names) = resolve_with_names(&args.kind, &args.names)?;
    if args.all_namespaces && !names.is_empty() {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if args.watch && names.len() > 1 {
        bail!(
            "watch is only supported on one object or a whole listing, but {} names were given",
            names.len()
        );
    }
    let channel = ctx.connect().await?;
    let namespace = request_namespace(info, ctx.namespace.as_deref(), args.all_namespaces);
    let visitor = GetVisitor {
        channel,
        args,
        names,
        namespace,
    };
    dispatch(info.kind, visitor).await?
}

struct GetVisitor<'a> {
    channel: Channel,
    args: &'a GetArgs,
    names: Vec<String>,
    namespace: String,
}

impl KindVisitor for GetVisitor<'_> {
    type Output = Result<Exit>;

    async fn visit<K: Kind>(self) -> Result<Exit> {
        let api = Api::<K>::new(self.channel.clone());
        if self.args.watch {
            return crate::watch::run(&api, self.args, &self.namespace, self.names.first()).await;
        }
        if self.names.is_empty() {
            let (objects, _) = list(&api, self.args, &self.namespace, None).await?;
            if objects.is_empty() && !matches!(self.args.output, Some(OutputFormat::Json)) {
                eprintln!("{}", no_resources_message::<K>(&self.namespace));
                return Ok(Exit::Success);
            }
            print(&render(&objects, self.args, false)?)?;
            return Ok(Exit::Success);
        }
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for name in &self.names {
            match api.get(&self.namespace, name).await {
                Ok(obj) => found.push(obj),
                Err(status) => errors.push(ServerError::for_object(&status, K::PLURAL, name)),
            }
        }
        if !found.is_empty() {
            print(&render(&found, self.args, self.names.len() == 1)?)?;
        }
        for err in &errors {
            eprintln!("{err}");
        }
        Ok(if errors.is_empty() {
            Exit::Success
        } else {
            Exit::Failure
        })
    }
}

/// Lists every object the flags select, in pages of `--chunk-size`; `name` narrows it
/// to one object by field selector. Returns the objects and the list's revision.
pub async fn list<K: Kind>(
    api: &Api<K>,
    args: &GetArgs,
    namespace: &str,
    name: Option<&String>,
) -> Result<(Vec<K>, u64)> {
    let request = ListRequest {
        namespace: namespace.to_string(),
        label_selector: args.selector.clone().unwrap_or_default(),
        field_selector: field_selector(args, name),
        limit: args.chunk_size,
        continue_token: String::new(),
    };
    api.list_all(request)
        .await
        .map_err(|status| ServerError::from_status(&status).into())
}

/// The `--field-selector`, narrowed to `metadata.name=NAME` when `name` is given.
pub fn field_selector(args: &GetArgs, name: Option<&String>) -> String {
    let mut selector = args.field_selector.clone().unwrap_or_default();
    if let Some(name) = name {
        if !selector.is_empty() {
            selector.push(',');
        }
        selector.push_str(&format!("metadata.name={name}"));
    }
    selector
}

/// `No resources found in default namespace.` (or without the namespace).
pub fn no_resources_message<K: Kind>(namespace: &str) -> String {
    if K::NAMESPACED && !namespace.is_empty() {
        format!("No resources found in {namespace} namespace.")
    } else {
        "No resources found".to_string()
    }
}

/// Whether `get` shows a NAMESPACE column.
pub fn shows_namespace<K: Kind>(args: &GetArgs) -> bool {
    K::NAMESPACED && args.all_namespaces
}

/// The table headers `get` prints for `K`.
pub fn headers<K: Kind>(args: &GetArgs) -> Vec<String> {
    let wide = args.output == Some(OutputFormat::Wide);
    let mut headers: Vec<String> = K::headers(wide).into_iter().map(String::from).collect();
    if shows_namespace::<K>(args) {
        headers.insert(0, "NAMESPACE".into());
    }
    headers
}

/// One table row of `obj`.
pub fn row<K: Kind>(obj: &K, args: &GetArgs) -> Vec<String> {
    let wide = args.output == Some(OutputFormat::Wide);
    let mut cells = obj.cells(wide);
    if shows_namespace::<K>(args) {
        cells.insert(0, obj.meta().namespace.clone());
    }
    cells
}

/// The table of `objects` (with its header).
pub fn table<K: Kind>(objects: &[K], args: &GetArgs) -> Table {
    let mut table = Table::new(headers::<K>(args));
    for obj in objects {
        table.push(row(obj, args));
    }
    table
}

/// `objects` in the output format of `args`; `single` is true when one object was
/// asked for by name (JSON then prints the object rather than a List).
pub fn render<K: Kind>(objects: &[K], args: &GetArgs, single: bool) -> Result<String> {
    let dyns = || {
        objects
            .iter()
            .cloned()
            .map(Kind::into_dyn)
            .collect::<Vec<_>>()
    };
    Ok(match args.output {
        None | Some(OutputFormat::Wide) => table(objects, args).render(),
        Some(OutputFormat::Yaml) => yaml_text(&dyns()),
        Some(OutputFormat::Json) => json_text(&dyns(), single)?,
        Some(OutputFormat::Name) => name_text(&dyns()),
    })
}
