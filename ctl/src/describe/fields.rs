//! Spec and status as `describe` prints them, the way kubectl describes objects:
//! `restartPolicy` reads `Restart Policy:`, nested fields are indented under their
//! parent, values of one level line up, maps print as `key=value`, lists one item per
//! line (named items under their name), int64 values as plain numbers (the JSON
//! mapping quotes them) and enum values in the case `get` shows them (`Running`).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::columns::title_case;

/// Fields holding `string → string` maps: printed as `key=value`, keys as they are.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "selector",
    "nodeSelector",
    "labelSelector",
    "capacity",
    "allocatable",
    "allocated",
    "attributes",
];

/// Fields holding enum values, shown title-cased as `get` shows phases
/// (`ROLLING_UPDATE` → `RollingUpdate`).
const ENUM_FIELDS: &[&str] = &["phase", "restartPolicy", "protocol", "effect"];

/// Words shown upper-case in labels.
const ACRONYMS: &[&str] = &["cpu", "gpu", "id", "ip", "uid", "url", "tcp", "udp", "tls"];

/// `restartPolicy` → `Restart Policy`, `nodeId` → `Node ID`.
pub fn label(key: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    words.push(word);
    words
        .iter()
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if ACRONYMS.contains(&lower.as_str()) {
                lower.to_ascii_uppercase()
            } else {
                let mut chars = w.chars();
                chars
                    .next()
                    .map(|f| f.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// True for values that print nothing (the JSON mapping omits defaults anyway).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// A scalar as text; enum fields title-cased, quoted int64s bare.
fn scalar(key: &str, value: &Value) -> Option<String> {
    match value {
        Value::String(s) if ENUM_FIELDS.contains(&key) || is_strategy_type(key, s) => {
            Some(title_case(s))
        }
        Value::String(s) => Some(s.replace('\n', " ")),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_strategy_type(key: &str, value: &str) -> bool {
    key == "type" && matches!(value, "ROLLING_UPDATE" | "RECREATE")
}

/// `Title:` then the fields of `value` indented by two, or `Title:  <none>`.
pub fn section(out: &mut String, title: &str, value: Option<&Value>) {
    match value {
        Some(Value::Object(map)) if map.values().any(|v| !is_empty(v)) => {
            let _ = writeln!(out, "{title}:");
            object(out, map, 2);
        }
        _ => super::field(out, title, crate::columns::NONE),
    }
}

/// The fields of `map` at `indent`, values lined up.
pub fn object(out: &mut String, map: &Map<String, Value>, indent: usize) {
    let fields: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !is_empty(v)).collect();
    let width = fields
        .iter()
        .map(|(k, _)| label(k).chars().count() + 1)
        .max()
        .unwrap_or(0)
        + 2;
    let pad = " ".repeat(indent);
    for (key, value) in fields {
        let head = format!("{pad}{:<width$}", format!("{}:", label(key)));
        match value {
            Value::Object(m) if MAP_FIELDS.contains(&key.as_str()) => {
                for (i, (k, v)) in m.iter().enumerate() {
                    let v = scalar(k, v).unwrap_or_default();
                    if i == 0 {
                        let _ = writeln!(out, "{head}{k}={v}");
                    } else {
                        let _ = writeln!(out, "{:w$}{k}={v}", "", w = head.chars().count());
                    }
                }
            }
            Value::Object(m) => {
                let _ = writeln!(out, "{}", head.trim_end());
                object(out, m, indent + 2);
            }
            Value::Array(items) => {
                let _ = writeln!(out, "{}", head.trim_end());
                list(out, key, items, indent + 2);
            }
            other => {
                let _ = writeln!(out, "{head}{}", scalar(key, other).unwrap_or_default());
            }
        }
    }
}

/// The items of a list at `indent`: scalars one per line, objects with a `name` under
/// `name:`, other objects as `Key: value, Key: value` when flat, else `- ` blocks.
fn list(out: &mut String, key: &str, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(m) => {
                if let Some(Value::String(name)) = m.get("name") {
                    let mut rest = m.clone();
                    rest.remove("name");
                    let _ = writeln!(out, "{pad}{name}:");
                    object(out, &rest, indent + 2);
                } else if m.values().all(|v| scalar("", v).is_some()) {
                    let flat = m
                        .iter()
                        .filter(|(_, v)| !is_empty(v))
                        .map(|(k, v)| format!("{}: {}", label(k), scalar(k, v).unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = writeln!(out, "{pad}{flat}");
                } else {
                    let _ = writeln!(out, "{pad}-");
                    object(out, m, indent + 2);
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{}", scalar(key, other).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_read_as_words() {
        assert_eq!(label("restartPolicy"), "Restart Policy");
        assert_eq!(label("nodeId"), "Node ID");
        assert_eq!(label("cpu"), "CPU");
        assert_eq!(label("replicas"), "Replicas");
    }

    #[test]
    fn renders_nested_fields_maps_lists_numbers_and_enums() {
        let value = json!({
            "replicas": 3,
            "revision": "12",
            "phase": "RUNNING",
            "selector": {"app": "web", "tier": "fe"},
            "strategy": {"type": "ROLLING_UPDATE", "maxSurge": "25%"},
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c"]}],
            "taints": [{"key": "k", "effect": "NO_EXECUTE"}],
            "empty": "",
        });
        let mut out = String::new();
        section(&mut out, "Spec", Some(&value));
        assert_eq!(
            out,
            "Spec:\n  \
               Replicas:    3\n  \
               Revision:    12\n  \
               Phase:       Running\n  \
               Selector:    app=web\n               tier=fe\n  \
               Strategy:\n    \
                 Type:       RollingUpdate\n    \
                 Max Surge:  25%\n  \
               Containers:\n    \
                 main:\n      \
                   Command:\n        sh\n        -c\n      \
                   Image:    busybox\n  \
               Taints:\n    \
                 Key: k, Effect: NoExecute\n"
        );
        let mut none = String::new();
        section(&mut none, "Status", Some(&json!({})));
        assert_eq!(none, "Status:           <none>\n");
    }
}
