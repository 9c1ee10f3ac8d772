//! `hmctl get`: lists objects (paged) or fetches them by name, of one kind or several
//! (`wl,inst`, `all`), and prints them as tables (one per kind, like kubectl) or in a
//! machine format; `-w` hands over to [`crate::watch`]. What both list and print per
//! object is in [`crate::listing`].

use anyhow::{Result, bail};
use hypermesh_api::resource::KindInfo;
use hypermesh_api::{Api, DynObject, Resource, v1};
use tonic::transport::Channel;

use crate::cli::{GetArgs, OutputFormat};
use crate::error::ServerError;
use crate::kinds::{Kind, KindVisitor, dispatch, request_namespace, resolve, resolve_many};
use crate::listing::{headers, list, row};
use crate::output::{json_text, name_text, print, yaml_text};
use crate::table::Table;
use crate::{Context, Exit};

/// Runs `hmctl get`.
pub async fn run(ctx: &Context, args: &GetArgs) -> Result<Exit> {
    let (kinds, names) = kinds_and_names(args)?;
    let narrowed;
    let mut args = args;
    if let Some(target) = &args.for_object {
        narrowed = narrowed_to(ctx, args, &kinds, target)?;
        args = &narrowed;
    }
    if args.reveal {
        let secret = <v1::Secret as Resource>::KIND;
        if kinds.iter().any(|k| k.kind != secret) {
            bail!("--reveal: only applies to secrets (hmctl get secrets NAME --reveal)");
        }
        if args.watch {
            bail!("--reveal: not supported with -w; get the Secret again instead");
        }
    }
    if args.all_namespaces && !names.is_empty() {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if args.watch && kinds.len() > 1 {
        bail!(
            "watch is only supported on one kind, but {} were given",
            kinds.len()
        );
    }
    if args.watch && names.len() > 1 {
        bail!(
            "watch is only supported on one object or a whole listing, but {} names were given",
            names.len()
        );
    }
    let channel = ctx.connect().await?;
    let several = kinds.len() > 1;
    let mut found = Vec::new();
    for info in &kinds {
        let visitor = GetVisitor {
            channel: channel.clone(),
            args,
            names: &names,
            namespace: request_namespace(info, ctx.namespace.as_deref(), args.all_namespaces),
            kind_prefix: several,
        };
        match dispatch(info.kind, visitor).await?? {
            Got::Watched(exit) => return Ok(exit),
            Got::Objects(one) => found.push(one),
        }
    }
    report(ctx, args, &kinds, &names, found)
}

/// `args` narrowed by `--for KIND/NAME` to the Events about that object (a field
/// selector); Events about cluster-scoped objects may be recorded in any namespace.
fn narrowed_to(
    ctx: &Context,
    args: &GetArgs,
    kinds: &[&KindInfo],
    target: &str,
) -> Result<GetArgs> {
    let [info] = kinds else {
        bail!("--for: only applies to events (hmctl get events --for KIND/NAME)");
    };
    let (selector, cluster_scoped) = for_selector(info, target)?;
    let mut narrowed = args.clone();
    narrowed.field_selector = Some(match &args.field_selector {
        Some(extra) if !extra.is_empty() => format!("{selector},{extra}"),
        _ => selector,
    });
    narrowed.all_namespaces |= cluster_scoped && ctx.namespace.is_none();
    Ok(narrowed)
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

/// The kinds and names a `get` command line asks for: `KIND/NAME [NAME...]` (one
/// kind) or `KIND[,KIND...] [NAME...]`. Unknown kinds are refused before any request.
fn kinds_and_names(args: &GetArgs) -> Result<(Vec<&'static KindInfo>, Vec<String>)> {
    if args.kind.contains('/') {
        let (info, names) = crate::kinds::resolve_with_names(&args.kind, &args.names)?;
        return Ok((vec![info], names));
    }
    Ok((resolve_many(&args.kind)?, args.names.clone()))
}

/// What `get` found of one kind.
struct Found {
    /// The table of the objects (headers included).
    table: Table,
    /// The objects, for the machine formats.
    objects: Vec<DynObject>,
    /// Names that could not be fetched.
    errors: Vec<ServerError>,
}

/// What the visitor of one kind did.
enum Got {
    /// `-w` ran to its end.
    Watched(Exit),
    /// A listing or the named objects.
    Objects(Found),
}

/// Prints what was found of every kind, then the errors; the exit status says
/// whether every named object was found.
fn report(
    ctx: &Context,
    args: &GetArgs,
    kinds: &[&KindInfo],
    names: &[String],
    found: Vec<Found>,
) -> Result<Exit> {
    let errors: Vec<&ServerError> = found.iter().flat_map(|f| &f.errors).collect();
    let nothing = found.iter().all(|f| f.objects.is_empty());
    if nothing && names.is_empty() && args.output != Some(OutputFormat::Json) {
        eprintln!("{}", no_resources_message(ctx, args, kinds));
        return Ok(Exit::Success);
    }
    let all = || {
        found
            .iter()
            .flat_map(|f| f.objects.iter().cloned())
            .collect::<Vec<_>>()
    };
    let text = match args.output {
        None | Some(OutputFormat::Wide) => found
            .iter()
            .filter(|f| !f.table.is_empty())
            .map(|f| f.table.render_with(!args.no_headers))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(OutputFormat::Yaml) => yaml_text(&all()),
        Some(OutputFormat::Json) if nothing && !names.is_empty() => String::new(),
        Some(OutputFormat::Json) => json_text(&all(), kinds.len() == 1 && names.len() == 1)?,
        Some(OutputFormat::Name) => name_text(&all()),
    };
    print(&text)?;
    for err in &errors {
        eprintln!("{err}");
    }
    Ok(if errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// `No resources found in default namespace.` when any kind asked for is
/// namespaced (and not `-A`), else `No resources found`.
fn no_resources_message(ctx: &Context, args: &GetArgs, kinds: &[&KindInfo]) -> String {
    if kinds.iter().any(|k| k.namespaced) && !args.all_namespaces {
        let namespace = ctx.namespace.as_deref().unwrap_or(crate::DEFAULT_NAMESPACE);
        format!("No resources found in {namespace} namespace.")
    } else {
        "No resources found".to_string()
    }
}

struct GetVisitor<'a> {
    channel: Channel,
    args: &'a GetArgs,
    names: &'a [String],
    namespace: String,
    /// Names print as `workload/web` (several kinds in one command, as kubectl).
    kind_prefix: bool,
}

impl KindVisitor for GetVisitor<'_> {
    type Output = Result<Got>;

    async fn visit<K: Kind>(self) -> Result<Got> {
        let api = Api::<K>::new(self.channel.clone());
        if self.args.watch {
            let exit =
                crate::watch::run(&api, self.args, &self.namespace, self.names.first()).await?;
            return Ok(Got::Watched(exit));
        }
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        if self.args.reveal {
            (objects, errors) = self.revealed::<K>().await?;
        } else if self.names.is_empty() {
            objects = list(&api, self.args, &self.namespace, None).await?.0;
            K::sort_listing(&mut objects);
        } else {
            for name in self.names {
                match api.get(&self.namespace, name).await {
                    Ok(obj) => objects.push(obj),
                    Err(status) => errors.push(ServerError::for_object(&status, K::PLURAL, name)),
                }
            }
        }
        Ok(Got::Objects(Found {
            table: table(&objects, self.args, self.kind_prefix),
            objects: objects.into_iter().map(Kind::into_dyn).collect(),
            errors,
        }))
    }
}

impl GetVisitor<'_> {
    /// The Secrets asked for, with their values ([`crate::reveal`]); `K` is Secret.
    async fn revealed<K: Kind>(&self) -> Result<(Vec<K>, Vec<ServerError>)> {
        let mut secrets = Vec::new();
        let mut errors = Vec::new();
        if self.names.is_empty() {
            let request = crate::listing::list_request(self.args, &self.namespace, None);
            secrets = crate::reveal::list(self.channel.clone(), request)
                .await
                .map_err(|status| anyhow::Error::from(ServerError::from_status(&status)))?;
        } else {
            for name in self.names {
                match crate::reveal::get(self.channel.clone(), &self.namespace, name).await {
                    Ok(secret) => secrets.push(secret),
                    Err(status) => errors.push(ServerError::for_object(&status, K::PLURAL, name)),
                }
            }
        }
        let mut objects: Vec<K> = secrets
            .into_iter()
            .filter_map(|s| K::from_dyn(DynObject::Secret(s)))
            .collect();
        K::sort_listing(&mut objects);
        Ok((objects, errors))
    }
}

/// The table of `objects` (with its header); with `kind_prefix` the NAME column reads
/// `workload/web`.
pub fn table<K: Kind>(objects: &[K], args: &GetArgs, kind_prefix: bool) -> Table {
    let headers = headers::<K>(args);
    let name_column = headers.iter().position(|h| h == "NAME");
    let mut table = Table::new(headers);
    for obj in objects {
        let mut cells = row(obj, args);
        if let Some(cell) = name_column
            .filter(|_| kind_prefix)
            .and_then(|i| cells.get_mut(i))
        {
            *cell = format!("{}/{cell}", K::KIND.to_ascii_lowercase());
        }
        table.push(cells);
    }
    table
}
