//! `hmctl apply`: creates objects that do not exist and updates those whose manifest
//! differs from the server's copy (spec, labels, annotations, and finalizers / owner
//! references when the manifest gives them), leaving server-owned metadata and status
//! alone. Nothing is sent unless every document parses.

use anyhow::{Result, bail};
use hypermesh_api::{Api, Resource};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cli::ApplyArgs;
use crate::error::ServerError;
use crate::kinds::{Kind, KindVisitor, dispatch};
use crate::manifests::{Document, load};
use crate::output::print;
use crate::{Context, Exit};

/// Writes retried when another client changed the object between our read and write.
const ATTEMPTS: usize = 3;

/// What apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed and was updated.
    Configured,
    /// It existed and already matched the manifest; nothing was written.
    Unchanged,
}

impl Outcome {
    /// The word apply prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Runs `hmctl apply` (then waits, with `--wait`).
pub async fn run(ctx: &Context, args: &ApplyArgs) -> Result<Exit> {
    let documents = match load(&args.files, ctx.namespace.as_deref()) {
        Ok(documents) => documents,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            return Ok(Exit::Failure);
        }
    };
    print_warnings(&documents);
    let channel = ctx.connect().await?;
    let mut exit = Exit::Success;
    let mut applied = Vec::new();
    for doc in documents {
        let name = doc.display_name();
        let visitor = ApplyVisitor {
            channel: channel.clone(),
            doc: doc.clone(),
        };
        match dispatch(doc.object.kind(), visitor).await?? {
            Ok(outcome) => {
                print(&format!("{name} {}\n", outcome.as_str()))?;
                applied.push(doc);
            }
            Err(err) => {
                eprintln!("{err}");
                exit = Exit::Failure;
            }
        }
    }
    if args.wait && exit == Exit::Success {
        return crate::apply_wait::wait(&channel, &applied, args.timeout).await;
    }
    Ok(exit)
}

/// Every conversion warning, on stderr: `Warning: FILE document N (kind/name): path: why`.
fn print_warnings(documents: &[Document]) {
    for doc in documents {
        for warning in &doc.warnings {
            eprintln!(
                "Warning: {} ({}): {warning}",
                doc.origin(),
                doc.display_name()
            );
        }
    }
}

/// Runs `hmctl convert`: the manifests (Kubernetes ones converted) as HyperMesh YAML on
/// stdout, the warnings on stderr. Nothing is sent.
pub fn convert(files: &[String], namespace: Option<&str>) -> Result<Exit> {
    let documents = match load(files, namespace) {
        Ok(documents) => documents,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            return Ok(Exit::Failure);
        }
    };
    print_warnings(&documents);
    let objects: Vec<_> = documents.into_iter().map(|d| d.object).collect();
    print(&hypermesh_api::manifest::to_yaml(&objects))?;
    Ok(Exit::Success)
}

struct ApplyVisitor {
    channel: Channel,
    doc: Document,
}

impl KindVisitor for ApplyVisitor {
    /// Outer error: hmctl itself failed; inner: the server refused this object.
    type Output = Result<Result<Outcome, ServerError>>;

    async fn visit<K: Kind>(self) -> Self::Output {
        let api = Api::<K>::new(self.channel);
        let name = self.doc.display_name();
        let origin = self.doc.origin();
        let Some(object) = K::from_dyn(self.doc.object) else {
            bail!("{origin}: dispatched to {} by mistake", K::KIND);
        };
        Ok(apply_object(&api, object).await.map_err(|(verb, status)| {
            ServerError::from_status(&status)
                .with_context(format!("error when {verb} {name} from {origin}: "))
        }))
    }
}

/// Applies one object: Get, then Create or Update (or nothing). On failure, returns
/// what was being done (`creating`, `updating`, ...) and the server's status.
pub async fn apply_object<K: Resource>(
    api: &Api<K>,
    manifest: K,
) -> Result<Outcome, (&'static str, Status)> {
    let manifest = without_server_fields(manifest);
    let (namespace, name) = (
        manifest.meta().namespace.clone(),
        manifest.meta().name.clone(),
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retry = attempt < ATTEMPTS;
        match api.get(&namespace, &name).await {
            Ok(current) => {
                let Some(merged) = merge(&current, &manifest) else {
                    return Ok(Outcome::Unchanged);
                };
                match api.update(&merged).await {
                    Ok(_) => return Ok(Outcome::Configured),
                    Err(s) if s.code() == Code::Aborted && retry => continue,
                    Err(s) => return Err(("updating", s)),
                }
            }
            Err(s) if s.code() == Code::NotFound => match api.create(&manifest).await {
                Ok(_) => return Ok(Outcome::Created),
                Err(s) if s.code() == Code::AlreadyExists && retry => continue,
                Err(s) => return Err(("creating", s)),
            },
            Err(s) => return Err(("reading the current state of", s)),
        }
    }
}

/// The manifest without the metadata the server owns (a manifest saved with
/// `get -o yaml` carries them).
fn without_server_fields<K: Resource>(mut object: K) -> K {
    let meta = object.meta_mut();
    meta.uid.clear();
    meta.resource_version = 0;
    meta.generation = 0;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    object
}

/// The server's object with the manifest's desired state in it, or `None` when the
/// two already agree. Server-owned metadata (uid, resource version, generation,
/// timestamps) and status are kept; finalizers and owner references are only replaced
/// when the manifest lists some.
pub fn merge<K: Resource>(current: &K, manifest: &K) -> Option<K> {
    let mut merged = current.clone();
    merged.copy_spec_from(manifest);
    let desired = manifest.meta();
    let meta = merged.meta_mut();
    meta.labels = desired.labels.clone();
    meta.annotations = desired.annotations.clone();
    if !desired.finalizers.is_empty() {
        meta.finalizers = desired.finalizers.clone();
    }
    if !desired.owner_references.is_empty() {
        meta.owner_references = desired.owner_references.clone();
    }
    let changed = merged.spec_bytes() != current.spec_bytes() || merged.meta() != current.meta();
    changed.then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::manifest::parse_yaml;
    use hypermesh_api::time::now;
    use hypermesh_api::v1::{self, Workload};

    const WEB: &str = "\
apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {app: web}
  template:
    labels: {app: web}
    containers: [{name: web, image: 'registry.local/web:1.2'}]
";

    fn manifest(text: &str) -> Workload {
        match parse_yaml(text).unwrap().remove(0) {
            hypermesh_api::DynObject::Workload(w) => w,
            other => panic!("not a workload: {other:?}"),
        }
    }

    /// The manifest as the server stores it: server-owned metadata and a status.
    fn stored(text: &str) -> Workload {
        let mut w = manifest(text);
        let meta = w.meta_mut();
        meta.uid = "u-1".into();
        meta.resource_version = 7;
        meta.generation = 1;
        meta.creation_timestamp = Some(now());
        w.status = Some(v1::WorkloadStatus {
            ready_replicas: 2,
            ..Default::default()
        });
        w
    }

    #[test]
    fn same_manifest_is_unchanged() {
        assert_eq!(merge(&stored(WEB), &manifest(WEB)), None);
    }

    #[test]
    fn spec_change_keeps_server_metadata_and_status() {
        let current = stored(WEB);
        let merged = merge(
            &current,
            &manifest(&WEB.replace("replicas: 2", "replicas: 5")),
        )
        .unwrap();
        assert_eq!(merged.spec.as_ref().map(|s| s.replicas), Some(5));
        assert_eq!(merged.meta().resource_version, 7);
        assert_eq!(merged.meta().uid, "u-1");
        assert_eq!(merged.status, current.status);
    }

    #[test]
    fn label_and_annotation_changes_are_changes() {
        let current = stored(WEB);
        let relabeled = merge(
            &current,
            &manifest(&WEB.replace("{app: web}}", "{app: api}}")),
        );
        assert_eq!(
            relabeled.map(|w| w.meta().labels.get("app").cloned()),
            Some(Some("api".into()))
        );
        let annotated = WEB.replace(
            "labels: {app: web}}",
            "labels: {app: web}, annotations: {note: x}}",
        );
        assert!(merge(&current, &manifest(&annotated)).is_some());
    }

    #[test]
    fn finalizers_are_kept_unless_the_manifest_lists_some() {
        let mut current = stored(WEB);
        current.meta_mut().finalizers = vec!["hypermesh.io/cleanup".into()];
        assert_eq!(merge(&current, &manifest(WEB)), None);
        let with = WEB.replace(
            "labels: {app: web}}",
            "labels: {app: web}, finalizers: [a/b]}",
        );
        let merged = merge(&current, &manifest(&with)).unwrap();
        assert_eq!(merged.meta().finalizers, ["a/b"]);
    }

    #[test]
    fn server_fields_are_dropped_from_manifests() {
        let w = without_server_fields(stored(WEB));
        assert_eq!(w.meta().resource_version, 0);
        assert!(w.meta().uid.is_empty() && w.meta().creation_timestamp.is_none());
    }
}
