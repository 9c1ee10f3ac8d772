//! Checks of single scalar fields shared by several kinds: quantities, enums, ports,
//! int-or-percent values and clean absolute paths.

use crate::quantity::Quantity;
use crate::reason::Reason;

use super::FieldErrors;

/// Parses `value` as a quantity (empty is fine), reporting a bad one at `field`.
pub(super) fn check_quantity(errs: &mut FieldErrors, field: &str, value: &str) -> Option<Quantity> {
    if value.is_empty() {
        return None;
    }
    match value.parse::<Quantity>() {
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(field, Reason::QuantityInvalid, e.to_string());
            None
        }
    }
}

/// An enum number must be known to `E`; `required` refuses the zero value too.
pub(super) fn check_enum<E: TryFrom<i32>>(
    errs: &mut FieldErrors,
    field: &str,
    value: i32,
    required: bool,
) {
    if E::try_from(value).is_err() {
        errs.invalid(field, format!("unknown value {value}"));
    } else if required && value == 0 {
        errs.required(field);
    }
}

/// A TCP/UDP port: 1 to 65535.
pub(super) fn check_port(errs: &mut FieldErrors, field: &str, port: u32) {
    if !(1..=65_535).contains(&port) {
        errs.invalid(
            field,
            format!("port {port} is out of range: must be 1 to 65535"),
        );
    }
}

/// A non-negative integer or a percentage up to 100% (empty is fine).
pub(super) fn check_int_or_percent(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let number = value.strip_suffix('%').unwrap_or(value);
    match number.parse::<u32>() {
        Ok(n) if value.ends_with('%') && n > 100 => errs.invalid(
            field,
            format!("{value:?}: a percentage must be at most 100%"),
        ),
        Ok(_) => {}
        Err(_) => errs.invalid(
            field,
            format!("{value:?} must be a non-negative integer or a percentage like 25%"),
        ),
    }
}

/// Why `path` is not an absolute path without `.` or `..` components, if it is not.
pub(super) fn clean_absolute_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Some(format!("{path:?} must not contain '.' or '..'"));
    }
    None
}
