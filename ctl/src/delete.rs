//! `hmctl delete`: deletes objects named on the command line, selected by label, or
//! listed in manifests (in reverse apply order, Namespaces last), and with `--wait`
//! waits until each is really gone (finalizers done) or the timeout passes.

use anyhow::{Result, bail};
use hypermesh_api::v1::{DeleteRequest, ListRequest};
use hypermesh_api::{Api, Resource};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::cli::DeleteArgs;
use crate::error::ServerError;
use crate::kinds::{
    Kind, KindVisitor, dispatch, display_name, request_namespace, resolve_with_names,
};
use crate::manifests::{kind_rank, load};
use crate::output::print;
use crate::{Context, Exit};

/// One object to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    namespace: String,
    name: String,
}

/// Runs `hmctl delete`.
pub async fn run(ctx: &Context, args: &DeleteArgs) -> Result<Exit> {
    // Objects of one kind at a time: (kind, targets).
    let mut batches: Vec<(&'static str, Vec<Target>)> = Vec::new();
    let mut select = None;
    if !args.files.is_empty() {
        let mut documents = match load(&args.files, ctx.namespace.as_deref()) {
            Ok(documents) => documents,
            Err(problems) => {
                for problem in problems {
                    eprintln!("error: {problem}");
                }
                return Ok(Exit::Failure);
            }
        };
        documents.sort_by_key(|d| std::cmp::Reverse(kind_rank(d.object.kind())));
        for doc in documents {
            let target = Target {
                namespace: doc.object.meta().namespace.clone(),
                name: doc.object.meta().name.clone(),
            };
            match batches.last_mut() {
                Some((kind, targets)) if *kind == doc.object.kind() => targets.push(target),
                _ => batches.push((doc.object.kind(), vec![target])),
            }
        }
    } else {
        let Some(kind_arg) = args.kind.as_deref() else {
            bail!("give a KIND and NAME(s), or -f FILE");
        };
        let (info, names) = resolve_with_names(kind_arg, &args.names)?;
        let namespace = request_namespace(info, ctx.namespace.as_deref(), false);
        match (names.is_empty(), args.selector.is_some() || args.all) {
            (true, false) => bail!(
                "give the names of the {} to delete, or select them with -l SELECTOR or --all",
                info.plural
            ),
            (false, true) => bail!("give either names or -l/--all, not both"),
            (false, false) => {}
            (true, true) => select = Some(args.selector.clone().unwrap_or_default()),
        }
        let targets = names
            .into_iter()
            .map(|name| Target {
                namespace: namespace.clone(),
                name,
            })
            .collect();
        batches.push((info.kind, targets));
    }

    let channel = ctx.connect().await?;
    let mut exit = Exit::Success;
    for (kind, targets) in batches {
        let visitor = DeleteVisitor {
            channel: channel.clone(),
            args,
            targets,
            select: select.clone(),
            namespace: ctx.namespace.clone(),
        };
        if dispatch(kind, visitor).await?? == Exit::Failure {
            exit = Exit::Failure;
        }
    }
    Ok(exit)
}

struct DeleteVisitor<'a> {
    channel: Channel,
    args: &'a DeleteArgs,
    targets: Vec<Target>,
    /// A label selector (possibly empty, for `--all`) choosing the targets instead.
    select: Option<String>,
    namespace: Option<String>,
}

impl KindVisitor for DeleteVisitor<'_> {
    type Output = Result<Exit>;

    async fn visit<K: Kind>(self) -> Result<Exit> {
        let api = Api::<K>::new(self.channel);
        let mut targets = self.targets;
        if let Some(selector) = self.select {
            let namespace = if K::NAMESPACED {
                self.namespace
                    .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string())
            } else {
                String::new()
            };
            let request = ListRequest {
                namespace: namespace.clone(),
                label_selector: selector,
                ..Default::default()
            };
            let (items, _) = api
                .list_all(request)
                .await
                .map_err(|s| ServerError::from_status(&s))?;
            if items.is_empty() {
                eprintln!("{}", crate::listing::no_resources_message::<K>(&namespace));
            }
            targets = items
                .iter()
                .map(|o| Target {
                    namespace: o.meta().namespace.clone(),
                    name: o.meta().name.clone(),
                })
                .collect();
        }

        let mut exit = Exit::Success;
        let mut deleted = Vec::new();
        for target in targets {
            let request = DeleteRequest {
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                ..Default::default()
            };
            match api.delete(request).await {
                Ok(_) => {
                    print(&format!(
                        "{} deleted\n",
                        display_name(K::KIND, &target.name)
                    ))?;
                    deleted.push(target);
                }
                Err(s) if s.code() == Code::NotFound && self.args.ignore_not_found => {}
                Err(s) => {
                    eprintln!("{}", ServerError::for_object(&s, K::PLURAL, &target.name));
                    exit = Exit::Failure;
                }
            }
        }

        if self.args.wait {
            let deadline = Instant::now() + self.args.timeout;
            for target in &deleted {
                if let Err(err) = wait_gone(&api, target, deadline).await {
                    eprintln!("{err}");
                    exit = Exit::Failure;
                }
            }
        }
        Ok(exit)
    }
}

/// Polls until Get says NotFound, or fails at `deadline`; every [`crate::PROGRESS_EVERY`]
/// says on stderr what holds the object (its finalizers, e.g. an Instance's containers).
async fn wait_gone<K: Resource>(api: &Api<K>, target: &Target, deadline: Instant) -> Result<()> {
    let mut polls = crate::POLL.retry();
    let mut next_report = Instant::now() + crate::PROGRESS_EVERY;
    loop {
        match api.get(&target.namespace, &target.name).await {
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => return Err(ServerError::for_object(&s, K::PLURAL, &target.name).into()),
            Ok(obj) => {
                let now = Instant::now();
                let finalizers = &obj.meta().finalizers;
                let why = if finalizers.is_empty() {
                    String::new()
                } else {
                    format!(" (finalizers remaining: {})", finalizers.join(", "))
                };
                if now >= deadline {
                    bail!(
                        "timed out waiting for {} to be deleted{why}",
                        display_name(K::KIND, &target.name)
                    );
                }
                if now >= next_report {
                    eprintln!(
                        "waiting for {} to be deleted{why}",
                        display_name(K::KIND, &target.name)
                    );
                    next_report = now + crate::PROGRESS_EVERY;
                }
                tokio::time::sleep(polls.next_delay().min(deadline - now)).await;
            }
        }
    }
}
