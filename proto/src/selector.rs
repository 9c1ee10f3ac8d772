//! Label selectors (`app=web,tier!=db,env in (a,b),env notin (c),key,!key`) and field
//! selectors (`metadata.name=x,status.phase!=RUNNING`), parsed once and matched many times.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {detail}")]
pub struct SelectorError {
    /// The whole selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub detail: String,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the key).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)` (also matches objects without the key).
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `app=web,tier!=db,env in (a,b),!legacy`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let err = |detail: String| SelectorError {
            selector: input.to_string(),
            detail,
        };
        let mut requirements = Vec::new();
        for term in split_top_level(input).map_err(err)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(err(
                    "empty requirement (check for a doubled or trailing comma)".into(),
                ));
            }
            requirements.push(parse_requirement(term).map_err(err)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector requiring every `key=value` of `labels` (a Workload's `selector` map).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the selector that matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The parsed requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", join(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", join(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<&str>, String> {
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    if let Some((k, v)) = term.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(v)?;
        return Ok(Requirement::NotEquals(k.into(), v.into()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(v)?;
        return Ok(Requirement::Equals(k.into(), v.into()));
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0];
        let rest = words[1].trim_start();
        let (op, set) = if let Some(set) = rest.strip_prefix("notin") {
            ("notin", set)
        } else if let Some(set) = rest.strip_prefix("in") {
            ("in", set)
        } else {
            return Err(format!(
                "expected `in` or `notin` after {key:?}, found {rest:?}"
            ));
        };
        check_key(key)?;
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| {
                format!("`{op}` needs a parenthesised list like (a,b), found {set:?}")
            })?;
        let values: BTreeSet<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        for v in &values {
            check_value(v)?;
        }
        return Ok(if op == "in" {
            Requirement::In(key.into(), values)
        } else {
            Requirement::NotIn(key.into(), values)
        });
    }
    check_key(term)?;
    Ok(Requirement::Exists(term.to_string()))
}

fn check_key(key: &str) -> Result<(), String> {
    crate::validation::label_key_problem(key).map_or(Ok(()), |p| Err(format!("key {key:?}: {p}")))
}

fn check_value(value: &str) -> Result<(), String> {
    crate::validation::label_value_problem(value)
        .map_or(Ok(()), |p| Err(format!("value {value:?}: {p}")))
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path such as `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// The value to compare with.
    pub value: String,
    /// True for `!=`.
    pub negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `metadata.name=web,status.phase!=RUNNING`, accepting only `supported` fields.
    pub fn parse(input: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let err = |detail: String| SelectorError {
            selector: input.to_string(),
            detail,
        };
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in input.split(',') {
            let term = term.trim();
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, false)
            } else {
                return Err(err(format!(
                    "term {term:?} must be field=value or field!=value"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(err(format!(
                    "field {field:?} is not supported for this kind (supported: {})",
                    supported.join(", ")
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// True when every requirement holds; `lookup` returns a field's value.
    pub fn matches(&self, lookup: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (lookup(&r.field) == r.value) != r.negated)
    }

    /// True for the selector that matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal (`field=value`) for an object to match, if the
    /// selector requires one: every match has it.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "env in (prod,dev)",
            "env notin (dev)",
            "app",
            "!legacy",
            "app=web,env in (prod)",
            "tier!=db",
            "tier notin (x)",
            "",
        ];
        let no = [
            "app=db",
            "app!=web",
            "env in (dev)",
            "env notin (prod)",
            "legacy",
            "!app",
            "app=web,env=dev",
            "tier in (x)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should match"
            );
        }
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn rejects_malformed_selectors() {
        for s in [
            "app in prod",
            "app in (a",
            "a,,b",
            "app=web,",
            "env foo (a)",
            "bad key=1",
            "app=bad value",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s} should fail");
        }
    }

    #[test]
    fn round_trips_through_display() {
        let s = LabelSelector::parse("app=web,env in (a,b),!x,y").unwrap();
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn field_selector_checks_supported_fields() {
        let sel = FieldSelector::parse(
            "metadata.name=web,status.phase!=RUNNING",
            &["metadata.name", "status.phase"],
        )
        .unwrap();
        assert!(sel.matches(|f| if f == "metadata.name" {
            "web".into()
        } else {
            "PENDING".into()
        }));
        assert!(!sel.matches(|f| if f == "metadata.name" {
            "web".into()
        } else {
            "RUNNING".into()
        }));
        let err = FieldSelector::parse("spec.bogus=1", &["metadata.name"]).unwrap_err();
        assert!(err.detail.contains("spec.bogus"));
    }

    #[test]
    fn required_value_is_an_equality_only() {
        let fields = ["spec.nodeName", "status.phase"];
        let sel = FieldSelector::parse("status.phase!=RUNNING,spec.nodeName=n1", &fields).unwrap();
        assert_eq!(sel.required_value("spec.nodeName"), Some("n1"));
        assert_eq!(sel.required_value("status.phase"), None);
        let unbound = FieldSelector::parse("spec.nodeName=", &fields).unwrap();
        assert_eq!(unbound.required_value("spec.nodeName"), Some(""));
        let negated = FieldSelector::parse("spec.nodeName!=n1", &fields).unwrap();
        assert_eq!(negated.required_value("spec.nodeName"), None);
    }
}
