//! Ranges of every duration and timestamp the API carries, so no component does
//! arithmetic on a value that overflows it (a `renewTime` in the year 292277026596, a
//! `tolerationSeconds` of 292 billion years). The bounds are in [`crate::time`]:
//! timestamps must be valid protobuf timestamps (years 1 to 9999) and, since they
//! all say when something happened, at most [`MAX_CLOCK_SKEW`] ahead of the
//! server's clock; durations have a documented maximum each.

use std::time::{Duration, SystemTime};

use pbjson_types::Timestamp;

use super::FieldErrors;
use crate::time::{
    MAX_CLOCK_SKEW, MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, format_timestamp,
    from_system_time, is_representable,
};

/// What validation judges against: the server's clock.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The current time.
    pub now: SystemTime,
}

impl Context {
    /// Judging at the current time.
    pub fn now() -> Self {
        Context {
            now: SystemTime::now(),
        }
    }
}

/// A valid protobuf timestamp, whatever its value.
pub(super) fn check_representable(errs: &mut FieldErrors, field: &str, t: Option<&Timestamp>) {
    let Some(t) = t else { return };
    if !is_representable(t) {
        errs.invalid(
            field,
            format!(
                "{{seconds: {}, nanos: {}}} is not a valid timestamp: seconds must be {MIN_TIMESTAMP_SECONDS} to {MAX_TIMESTAMP_SECONDS} (years 1 to 9999) and nanos 0 to 999999999",
                t.seconds, t.nanos
            ),
        );
    }
}

/// A valid timestamp of something that already happened: at most
/// [`MAX_CLOCK_SKEW`] ahead of the server's clock.
pub(super) fn check_timestamp(
    errs: &mut FieldErrors,
    ctx: &Context,
    field: &str,
    t: Option<&Timestamp>,
) {
    let Some(t) = t else { return };
    if !is_representable(t) {
        return check_representable(errs, field, Some(t));
    }
    let now = from_system_time(ctx.now);
    let limit = now.seconds.saturating_add(MAX_CLOCK_SKEW.as_secs() as i64);
    if t.seconds > limit {
        errs.invalid(
            field,
            format!(
                "{} is {}s ahead of the server's clock ({}); at most {}s of clock skew is allowed",
                format_timestamp(t),
                t.seconds.saturating_sub(now.seconds),
                format_timestamp(&now),
                MAX_CLOCK_SKEW.as_secs()
            ),
        );
    }
}

/// A number of seconds from `min` to `max` (inclusive).
pub(super) fn check_seconds(
    errs: &mut FieldErrors,
    field: &str,
    value: i64,
    min: i64,
    max: Duration,
) {
    let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
    if !(min..=max).contains(&value) {
        errs.invalid(
            field,
            format!("{value} is out of range: must be {min} to {max} seconds"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn timestamps_must_be_representable_and_not_ahead() {
        let ctx = Context::now();
        let now = from_system_time(ctx.now).seconds;
        let mut errs = FieldErrors::default();
        check_timestamp(&mut errs, &ctx, "a", Some(&ts(now)));
        check_timestamp(&mut errs, &ctx, "b", Some(&ts(now + 299)));
        check_timestamp(&mut errs, &ctx, "c", Some(&ts(0)));
        check_timestamp(&mut errs, &ctx, "d", None);
        assert!(errs.is_empty(), "{errs}");
        check_timestamp(&mut errs, &ctx, "e", Some(&ts(now + 3600)));
        check_timestamp(&mut errs, &ctx, "f", Some(&ts(i64::MAX - 1)));
        check_timestamp(
            &mut errs,
            &ctx,
            "g",
            Some(&Timestamp {
                seconds: now,
                nanos: -1,
            }),
        );
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["e", "f", "g"]);
        assert!(errs.0[0].detail.contains("3600s ahead"), "{errs}");
        assert!(errs.0[1].detail.contains("years 1 to 9999"), "{errs}");
    }

    #[test]
    fn seconds_stay_in_their_range() {
        let mut errs = FieldErrors::default();
        check_seconds(&mut errs, "ok", 3600, 0, Duration::from_secs(3600));
        check_seconds(&mut errs, "big", i64::MAX - 1, 0, Duration::from_secs(3600));
        check_seconds(&mut errs, "neg", -1, 0, Duration::from_secs(3600));
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["big", "neg"]);
        assert_eq!(
            errs.0[0].detail,
            "9223372036854775806 is out of range: must be 0 to 3600 seconds"
        );
    }
}
