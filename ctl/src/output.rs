//! Objects as `get` prints them in its machine formats: `-o yaml` (one document per
//! object), `-o json` (the object, or a `List` of several) and `-o name`.

use std::io::Write;

use anyhow::{Context, Result};
use hypermesh_api::manifest::{to_document, to_yaml};
use hypermesh_api::{API_VERSION, DynObject};
use serde_json::{Value, json};

use crate::kinds::display_name;

/// `{"apiVersion": "hypermesh.io/v1", "kind": "List", "items": [...]}`.
pub fn list_document(objects: &[DynObject]) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "List",
        "items": objects.iter().map(to_document).collect::<Vec<_>>(),
    })
}

/// Pretty JSON of one object, or of a `List` when `single` is false.
pub fn json_text(objects: &[DynObject], single: bool) -> Result<String> {
    let value = match objects {
        [one] if single => to_document(one),
        _ => list_document(objects),
    };
    let mut text = serde_json::to_string_pretty(&value).context("cannot encode JSON")?;
    text.push('\n');
    Ok(text)
}

/// YAML manifests, several objects as several `---` documents.
pub fn yaml_text(objects: &[DynObject]) -> String {
    if objects.is_empty() {
        return String::new();
    }
    let mut text = to_yaml(objects);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `workload.hypermesh.io/web`, one per line.
pub fn name_text(objects: &[DynObject]) -> String {
    objects
        .iter()
        .map(|o| format!("{}\n", display_name(o.kind(), &o.meta().name)))
        .collect()
}

/// Writes `text` to stdout and flushes (watch output must appear as it happens).
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::manifest::parse_yaml;

    const TWO: &str = "apiVersion: hypermesh.io/v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                       apiVersion: hypermesh.io/v1\nkind: Namespace\nmetadata: {name: b}\n";

    #[test]
    fn several_objects_make_a_list() {
        let objs = parse_yaml(TWO).unwrap();
        let list: Value = serde_json::from_str(&json_text(&objs, false).unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["apiVersion"], API_VERSION);
        assert_eq!(list["items"][1]["metadata"]["name"], "b");
        let one: Value = serde_json::from_str(&json_text(&objs[..1], true).unwrap()).unwrap();
        assert_eq!(one["kind"], "Namespace");
    }

    #[test]
    fn yaml_of_several_parses_back() {
        let objs = parse_yaml(TWO).unwrap();
        assert_eq!(parse_yaml(&yaml_text(&objs)).unwrap(), objs);
        assert_eq!(yaml_text(&[]), "");
    }

    #[test]
    fn names_use_kind_dot_group() {
        let objs = parse_yaml(TWO).unwrap();
        assert_eq!(
            name_text(&objs),
            "namespace.hypermesh.io/a\nnamespace.hypermesh.io/b\n"
        );
    }
}
