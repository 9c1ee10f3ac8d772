//! Names, label keys and values: DNS-1123 labels and subdomains, qualified names,
//! and shortening a name prefix so a suffix still fits.

use std::collections::BTreeMap;

use super::FieldErrors;

/// Longest object name (a DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;
/// Longest dot-separated part of a name (a DNS-1123 label).
pub const MAX_NAME_PART: usize = 63;

/// Why `name` is not a DNS-1123 label (lowercase alphanumerics and `-`, at most 63), if it is not.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME_PART {
        return Some(format!(
            "must be at most 63 characters (got {})",
            name.len()
        ));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (!ok_chars || !alphanumeric_ends(name)).then(|| {
        format!("{name:?} is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit")
    })
}

/// Why `name` is not a DNS-1123 subdomain (labels joined by `.`, at most 253), if it is not.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Some(format!(
            "must be at most 253 characters (got {})",
            name.len()
        ));
    }
    let ok = name
        .split('.')
        .all(|part| dns_label_problem(part).is_none());
    (!ok).then(|| {
        format!("{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit")
    })
}

fn alphanumeric_ends(name: &str) -> bool {
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    alnum(name.bytes().next()) && alnum(name.bytes().last())
}

fn qualified_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_PART {
        return Some("must be 1 to 63 characters".into());
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (!ok_chars || !alphanumeric_ends(name)).then(|| {
        "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".into()
    })
}

/// Why `key` is not a valid label key (`[prefix/]name`), if it is not.
pub fn label_key_problem(key: &str) -> Option<String> {
    match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain_problem(prefix)
            .map(|p| format!("prefix {p}"))
            .or_else(|| qualified_name_problem(name)),
        None => qualified_name_problem(key),
    }
}

/// Why `value` is not a valid label value (empty or a qualified name), if it is not.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        None
    } else {
        qualified_name_problem(value)
    }
}

/// `prefix` cut so that appending `extra` characters (without dots) keeps the name at
/// most 253 characters and its last dot-separated part at most 63, without leaving a
/// trailing `-` or `.`.
pub fn shorten_name(prefix: &str, extra: usize) -> &str {
    let last_part_start = prefix.rfind('.').map_or(0, |i| i + 1);
    let by_part = last_part_start + MAX_NAME_PART.saturating_sub(extra);
    let limit = by_part
        .min(MAX_NAME.saturating_sub(extra))
        .min(prefix.len());
    // Names are ASCII (validated), so any index is a char boundary; be safe anyway.
    let cut = prefix.get(..limit).unwrap_or(prefix);
    cut.trim_end_matches(['-', '.'])
}

/// Checks every key and value of a label map at `field`.
pub(super) fn check_labels(errs: &mut FieldErrors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Some(p) = label_key_problem(k) {
            errs.invalid(format!("{field}[{k}]"), format!("invalid label key: {p}"));
        }
        if let Some(p) = label_value_problem(v) {
            errs.invalid(
                format!("{field}[{k}]"),
                format!("invalid label value {v:?}: {p}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(dns_label_problem("web-1").is_none());
        assert!(dns_label_problem("-web").is_some());
        assert!(dns_label_problem(&"a".repeat(64)).is_some());
        assert!(dns_subdomain_problem("gpu.node-1").is_none());
        assert!(dns_subdomain_problem("Gpu").is_some());
    }

    #[test]
    fn shortened_names_leave_room_for_a_suffix() {
        assert_eq!(shorten_name("web", 12), "web");
        assert_eq!(shorten_name("abc-def", 59), "abc");
        let long = "a".repeat(70);
        assert_eq!(shorten_name(&long, 13).len(), 50);
        let dotted = format!("x.{}", "b".repeat(70));
        assert_eq!(shorten_name(&dotted, 3).len(), 2 + 60);
    }
}
