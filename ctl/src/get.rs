//! `hmctl get`: lists objects (paged) or fetches them by name, and prints them as a
//! table or in a machine format; `-w` hands over to [`crate::watch`]. What both
//! list and print per object is in [`crate::listing`].

use anyhow::{Result, bail};
use hypermesh_api::Api;
use tonic::transport::Channel;

use crate::cli::{GetArgs, OutputFormat};
use crate::error::ServerError;
use crate::kinds::{Kind, KindVisitor, dispatch, request_namespace, resolve, resolve_with_names};
use crate::listing::{headers, list, no_resources_message, row};
use crate::output::{json_text, name_text, print, yaml_text};
use crate::table::Table;
use crate::{Context, Exit};
use hypermesh_api::Resource;
use hypermesh_api::resource::KindInfo;
use hypermesh_api::v1;

/// Runs `hmctl get`.
pub async fn run(ctx: &Context, args: &GetArgs) -> Result<Exit> {
    let (info, names) = resolve_with_names(&args.kind, &args.names)?;
    let mut narrowed;
    let mut args = args;
    let mut all_namespaces = args.all_namespaces;
    if let Some(target) = &args.for_object {
        let (selector, cluster_scoped) = for_selector(info, target)?;
        narrowed = args.clone();
        narrowed.field_selector = Some(match &args.field_selector {
            Some(extra) if !extra.is_empty() => format!("{selector},{extra}"),
            _ => selector,
        });
        // Events about cluster-scoped objects may be recorded in any namespace.
        all_namespaces |= cluster_scoped && ctx.namespace.is_none();
        narrowed.all_namespaces = all_namespaces;
        args = &narrowed;
    }
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
    let namespace = request_namespace(info, ctx.namespace.as_deref(), all_namespaces);
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
            let (mut objects, _) = list(&api, self.args, &self.namespace, None).await?;
            K::sort_listing(&mut objects);
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

/// The field selector `--for KIND/NAME` stands for, and whether KIND is
/// cluster-scoped; an error unless listing Events.
fn for_selector(info: &KindInfo, target: &str) -> Result<(String, bool)> {
    if info.kind != <v1::Event as Resource>::KIND {
        bail!("--for: only applies to events (hmctl get events --for KIND/NAME)");
    }
    let Some((kind, name)) = target
        .split_once('/')
        .filter(|(k, n)| !k.is_empty() && !n.is_empty())
    else {
        bail!("--for: expected KIND/NAME (e.g. instance/web-1), got {target:?}");
    };
    let about = resolve(kind).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    Ok((
        format!(
            "spec.involvedObject.kind={},spec.involvedObject.name={name}",
            about.kind
        ),
        !about.namespaced,
    ))
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
