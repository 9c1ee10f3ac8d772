//! Canonical protobuf-JSON values → typed objects, reporting the path of the field
//! that does not fit (`spec.template.containers[0].resources`).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A deserialisation error with the path of the field that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldPathError {
    /// e.g. `spec.template.containers[0].resources`.
    pub path: String,
    /// What serde said.
    pub message: String,
}

/// Deserialises `value` into `T`, reporting the failing field's path.
pub fn deserialize_with_path<T: DeserializeOwned>(value: Value) -> Result<T, FieldPathError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        FieldPathError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}
