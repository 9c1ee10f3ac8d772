//! What `hmctl get` and `hmctl get -w` share: the listing the flags select, and the
//! table headers and row of each object.

use anyhow::Result;
use hypermesh_api::Api;
use hypermesh_api::v1::ListRequest;

use crate::cli::{GetArgs, OutputFormat};
use crate::columns::map_text;
use crate::error::ServerError;
use crate::kinds::Kind;

/// Lists every object the flags select, in pages of `--chunk-size`; `name` narrows it
/// to one object by field selector. Returns the objects and the list's revision.
pub async fn list<K: Kind>(
    api: &Api<K>,
    args: &GetArgs,
    namespace: &str,
    name: Option<&String>,
) -> Result<(Vec<K>, u64)> {
    api.list_all(list_request(args, namespace, name))
        .await
        .map_err(|status| ServerError::from_status(&status).into())
}

/// The first page's request of the listing the flags select.
pub fn list_request(args: &GetArgs, namespace: &str, name: Option<&String>) -> ListRequest {
    ListRequest {
        namespace: namespace.to_string(),
        label_selector: args.selector.clone().unwrap_or_default(),
        field_selector: field_selector(args, name),
        limit: args.chunk_size,
        continue_token: String::new(),
    }
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

/// The table headers `get` prints for `K`: NAMESPACE with `-A`, the kind's columns,
/// one per `-L` key (its last `/` segment, upper-cased, as kubectl) and LABELS with
/// `--show-labels`.
pub fn headers<K: Kind>(args: &GetArgs) -> Vec<String> {
    let wide = args.output == Some(OutputFormat::Wide);
    let mut headers: Vec<String> = K::headers(wide).into_iter().map(String::from).collect();
    if shows_namespace::<K>(args) {
        headers.insert(0, "NAMESPACE".into());
    }
    for key in &args.label_columns {
        let last = key.rsplit('/').next().unwrap_or(key);
        headers.push(last.to_uppercase());
    }
    if args.show_labels {
        headers.push("LABELS".into());
    }
    headers
}

/// One table row of `obj`, matching [`headers`]: a label `-L` asks for that the
/// object does not have is blank, as in kubectl.
pub fn row<K: Kind>(obj: &K, args: &GetArgs) -> Vec<String> {
    let wide = args.output == Some(OutputFormat::Wide);
    let mut cells = obj.cells(wide);
    if shows_namespace::<K>(args) {
        cells.insert(0, obj.meta().namespace.clone());
    }
    let labels = &obj.meta().labels;
    for key in &args.label_columns {
        cells.push(labels.get(key).cloned().unwrap_or_default());
    }
    if args.show_labels {
        cells.push(map_text(labels));
    }
    cells
}
