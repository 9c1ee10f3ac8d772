//! Reading `-f` arguments: files, directories (recursively, `*.yaml`, `*.yml`,
//! `*.json`) and stdin (`-`), every document parsed before anything is sent (HyperMesh
//! ones with [`hypermesh_api::manifest::from_document`], Kubernetes ones converted by
//! [`crate::k8s`]), namespaces filled in, objects ordered Namespaces first.

use std::io::Read;
use std::path::{Path, PathBuf};

use hypermesh_api::DynObject;
use hypermesh_api::manifest::from_document;
use serde_json::Value;

use crate::kinds::display_name;

/// Extensions taken from directories.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// How the file read from stdin is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// One object of a manifest and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file as given or found (`<stdin>` for `-`).
    pub file: String,
    /// 1-based document number within the file.
    pub index: usize,
    /// The object.
    pub object: DynObject,
    /// What of a Kubernetes manifest this object does not honour (`field.path: why`).
    pub warnings: Vec<String>,
}

impl Document {
    /// `workload.hypermesh.io/web`.
    pub fn display_name(&self) -> String {
        display_name(self.object.kind(), &self.object.meta().name)
    }

    /// `"web.yaml" document 2`, for messages.
    pub fn origin(&self) -> String {
        format!("{:?} document {}", self.file, self.index)
    }
}

/// Reads and parses every manifest named by `args`. On any problem, returns every
/// problem found (one line each, `FILE: document N: field.path: message`) and no
/// objects.
pub fn load(args: &[String], namespace_flag: Option<&str>) -> Result<Vec<Document>, Vec<String>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for arg in args {
        let files = match expand(arg) {
            Ok(files) => files,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for (name, text) in files {
            match parse_file(&name, &text, namespace_flag) {
                Ok(docs) => documents.extend(docs),
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if documents.is_empty() {
        return Err(vec![format!(
            "no objects found in {}",
            args.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    sort_for_apply(&mut documents);
    Ok(documents)
}

/// Orders documents Namespaces first, then by [`DynObject::KINDS`], keeping file order
/// within a kind.
pub fn sort_for_apply(documents: &mut [Document]) {
    documents.sort_by_key(|d| kind_rank(d.object.kind()));
}

/// The position of `kind` in [`DynObject::KINDS`].
pub fn kind_rank(kind: &str) -> usize {
    DynObject::KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(DynObject::KINDS.len())
}

/// The files one `-f` argument names, with their text.
fn expand(arg: &str) -> Result<Vec<(String, String)>, String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("{STDIN_NAME}: cannot read: {e}"))?;
        return Ok(vec![(STDIN_NAME.to_string(), text)]);
    }
    let path = Path::new(arg);
    let meta = std::fs::metadata(path).map_err(|e| format!("{arg}: cannot read: {e}"))?;
    let paths = if meta.is_dir() {
        let mut found = Vec::new();
        walk(path, &mut found).map_err(|e| format!("{arg}: cannot read directory: {e}"))?;
        found
    } else {
        vec![path.to_path_buf()]
    };
    paths
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            std::fs::read_to_string(&p)
                .map(|text| (name.clone(), text))
                .map_err(|e| format!("{name}: cannot read: {e}"))
        })
        .collect()
}

/// Every manifest file under `dir`, sorted by path.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Parses one file. Documents are numbered from 1, empty ones not counted (the YAML
/// reader drops them), as `hypermesh_api::manifest::parse_yaml` numbers them.
fn parse_file(
    name: &str,
    text: &str,
    namespace_flag: Option<&str>,
) -> Result<Vec<Document>, String> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{name}: malformed YAML: {e}"))?;
    let mut documents = Vec::new();
    for (doc, index) in values.into_iter().filter(|v| !v.is_null()).zip(1..) {
        let problem = |(path, message): (String, String)| {
            if path.is_empty() {
                format!("{name}: document {index}: {message}")
            } else {
                format!("{name}: document {index}: {path}: {message}")
            }
        };
        let (mut object, warnings) = if crate::k8s::is_kubernetes(&doc) {
            let converted = crate::k8s::convert(doc).map_err(problem)?;
            (converted.object, converted.warnings)
        } else {
            (from_document(doc).map_err(problem)?, Vec::new())
        };
        default_namespace(&mut object, namespace_flag)
            .map_err(|message| format!("{name}: document {index}: {message}"))?;
        documents.push(Document {
            file: name.to_string(),
            index,
            object,
            warnings,
        });
    }
    Ok(documents)
}

/// Fills in the namespace of a namespaced object (`-n`, else `default`); a manifest
/// namespace that contradicts `-n` is an error, as with kubectl.
pub fn default_namespace(object: &mut DynObject, flag: Option<&str>) -> Result<(), String> {
    if !object.namespaced() {
        return Ok(());
    }
    let meta = object.meta_mut();
    match flag {
        _ if meta.namespace.is_empty() => {
            meta.namespace = flag.unwrap_or(crate::DEFAULT_NAMESPACE).to_string();
            Ok(())
        }
        Some(flag) if flag != meta.namespace => Err(format!(
            "metadata.namespace: the namespace from the manifest {:?} does not match the \
             namespace {flag:?}; pass --namespace={} or remove it from the manifest",
            meta.namespace, meta.namespace
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "\
apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: web}
spec: {replicas: 1}
---
apiVersion: hypermesh.io/v1
kind: Namespace
metadata: {name: team-a}
";

    #[test]
    fn numbers_documents_and_orders_namespaces_first() {
        let mut docs = parse_file("m.yaml", MIXED, None).unwrap();
        assert_eq!(docs.iter().map(|d| d.index).collect::<Vec<_>>(), [1, 2]);
        sort_for_apply(&mut docs);
        assert_eq!(docs[0].object.kind(), "Namespace");
        assert_eq!(docs[1].object.meta().namespace, "default");
        assert_eq!(docs[1].origin(), "\"m.yaml\" document 1");
        assert_eq!(docs[0].object.meta().namespace, "");
    }

    #[test]
    fn namespace_flag_fills_in_and_must_agree() {
        let docs = parse_file("m.yaml", MIXED, Some("team-a")).unwrap();
        let web = docs.iter().find(|d| d.object.kind() == "Workload").unwrap();
        assert_eq!(web.object.meta().namespace, "team-a");
        let pinned = MIXED.replace("{name: web}", "{name: web, namespace: prod}");
        let err = parse_file("m.yaml", &pinned, Some("team-a")).unwrap_err();
        assert!(
            err.starts_with("m.yaml: document 1: metadata.namespace: "),
            "{err}"
        );
    }

    #[test]
    fn bad_documents_name_file_document_and_field() {
        let bad = MIXED.replace("replicas: 1", "replicas: 1, replicaz: 2");
        let err = parse_file("m.yaml", &bad, None).unwrap_err();
        assert!(
            err.starts_with("m.yaml: document 1: spec.replicaz: "),
            "{err}"
        );
    }

    #[test]
    fn directories_are_walked_for_manifest_files() {
        let dir = std::env::temp_dir().join(format!("hmctl-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.yaml"), MIXED).unwrap();
        std::fs::write(dir.join("sub/a.yml"), MIXED).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let docs = load(&[dir.display().to_string()], None).unwrap();
        assert_eq!(docs.len(), 4);
        let err = load(&[dir.join("missing.yaml").display().to_string()], None).unwrap_err();
        assert!(err[0].contains("missing.yaml: cannot read"), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
