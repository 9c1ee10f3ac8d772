//! YAML manifests ⇄ objects. A manifest is one or more YAML documents, each with
//! `apiVersion: hypermesh.io/v1`, `kind`, and the object's fields in the canonical
//! protobuf-JSON mapping (lowerCamelCase; snake_case is accepted on input). Unknown
//! fields are errors that name the field path.

use std::fmt;

use serde_json::{Map, Value};

use crate::API_VERSION;
pub use crate::json::{FieldPathError, deserialize_with_path};
use crate::resource::DynObject;

/// A problem with one document of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based index of the document in its file (0 when the file itself does not parse).
    pub document: usize,
    /// The field path, empty when the document as a whole is wrong.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document, self.path.is_empty()) {
            (0, _) => write!(f, "{}", self.message),
            (d, true) => write!(f, "document {d}: {}", self.message),
            (d, false) => write!(f, "document {d}: {}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

/// Parses every document of a YAML text. Empty documents are skipped.
pub fn parse_yaml(text: &str) -> Result<Vec<DynObject>, ManifestError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError {
        document: 0,
        path: String::new(),
        message: format!("malformed YAML: {e}"),
    })?;
    let mut objects = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        objects.push(from_document(doc).map_err(|(path, message)| ManifestError {
            document: i + 1,
            path,
            message,
        })?);
    }
    Ok(objects)
}

/// Parses one JSON/YAML document (a mapping with apiVersion and kind).
pub fn from_document(doc: Value) -> Result<DynObject, (String, String)> {
    let Value::Object(mut map) = doc else {
        return Err((
            String::new(),
            format!(
                "expected a mapping with apiVersion and kind, found {}",
                type_name(&doc)
            ),
        ));
    };
    let kind = match map.remove("kind") {
        Some(Value::String(k)) if !k.is_empty() => k,
        Some(other) => {
            return Err((
                "kind".into(),
                format!("must be a kind name, found {}", type_name(&other)),
            ));
        }
        None => {
            return Err((
                "kind".into(),
                format!("required (one of {})", DynObject::KINDS.join(", ")),
            ));
        }
    };
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => {
            return Err((
                "apiVersion".into(),
                format!("unsupported {v:?}: use {API_VERSION}"),
            ));
        }
        Some(other) => {
            return Err((
                "apiVersion".into(),
                format!("must be {API_VERSION:?}, found {}", type_name(&other)),
            ));
        }
        None => return Err(("apiVersion".into(), format!("required: use {API_VERSION}"))),
    }
    DynObject::from_json(&kind, Value::Object(map)).map_err(|e| (e.path, e.message))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The object as a manifest document: apiVersion and kind first, then its fields.
pub fn to_document(obj: &DynObject) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    out.insert("kind".into(), Value::String(obj.kind().into()));
    if let Value::Object(fields) = obj.to_json() {
        out.extend(fields);
    }
    Value::Object(out)
}

/// Objects as one YAML text, documents separated by `---`.
pub fn to_yaml(objects: &[DynObject]) -> String {
    let docs: Vec<Value> = objects.iter().map(to_document).collect();
    match docs.as_slice() {
        [one] => serde_saphyr::to_string(one).unwrap_or_default(),
        _ => serde_saphyr::to_string_multiple(&docs).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;
    use crate::v1;

    const WEB: &str = r#"
apiVersion: hypermesh.io/v1
kind: Workload
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 3
  selector: {app: web}
  template:
    labels: {app: web}
    containers:
      - name: web
        image: registry.local/web:1.2
        command: ["/bin/httpd", "-f", "-p", "8080"]
        env: [{name: MODE, value: prod}]
        ports: [{name: http, containerPort: 8080, protocol: TCP}]
        resources: {cpu: 500m, memory: 128Mi, gpu: "1"}
    privacy: PUBLIC_NETWORK
    nodeSelector: {zone: eu-1}
    tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NO_SCHEDULE}]
    restartPolicy: ALWAYS
---
apiVersion: hypermesh.io/v1
kind: Namespace
metadata: {name: team-a}
"#;

    #[test]
    fn parses_the_design_example() {
        let objs = parse_yaml(WEB).unwrap();
        assert_eq!(objs.len(), 2);
        let DynObject::Workload(w) = &objs[0] else {
            panic!("not a workload")
        };
        let spec = w.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, 3);
        let t = spec.template.as_ref().unwrap();
        assert_eq!(t.privacy, v1::PrivacyLevel::PublicNetwork as i32);
        assert_eq!(t.containers[0].ports[0].container_port, 8080);
        assert_eq!(objs[1].kind(), "Namespace");
        assert_eq!(w.meta().name, "web");
    }

    #[test]
    fn yaml_round_trips() {
        let objs = parse_yaml(WEB).unwrap();
        let text = to_yaml(&objs);
        assert_eq!(parse_yaml(&text).unwrap(), objs);
    }

    #[test]
    fn unknown_field_names_document_and_path() {
        let text = WEB.replace("memory: 128Mi", "memory: 128Mi, cpux: 1");
        let err = parse_yaml(&text).unwrap_err();
        assert_eq!(err.document, 1);
        assert_eq!(err.path, "spec.template.containers[0].resources.cpux");
        assert!(err.message.contains("cpux"), "{err}");
    }

    #[test]
    fn missing_kind_and_unknown_kind_are_errors() {
        let err = parse_yaml("apiVersion: hypermesh.io/v1\nmetadata: {name: x}\n").unwrap_err();
        assert_eq!((err.document, err.path.as_str()), (1, "kind"));
        let err = parse_yaml("apiVersion: hypermesh.io/v1\nkind: Pod\n").unwrap_err();
        assert!(err.message.contains("unknown kind"), "{err}");
        let err = parse_yaml("apiVersion: v1\nkind: Node\n").unwrap_err();
        assert_eq!(err.path, "apiVersion");
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        let err = parse_yaml("kind: [unclosed\n").unwrap_err();
        assert!(err.message.starts_with("malformed YAML"), "{err}");
    }

    #[test]
    fn bad_enum_value_names_the_field() {
        let err = parse_yaml(&WEB.replace("PUBLIC_NETWORK", "SOMEWHERE")).unwrap_err();
        assert_eq!(err.path, "spec.template.privacy");
    }
}
