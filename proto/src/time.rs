//! Timestamps: the protobuf `Timestamp` ⇄ `SystemTime`, RFC 3339 text (through
//! `chrono`, already in the tree for pbjson), human ages (`5m`, `3d`), and the bounds
//! every duration and timestamp of the API is checked against (see
//! [`crate::validation`]).
//!
//! Conversions never panic: a timestamp outside what RFC 3339 can write (years 1 to
//! 9999) is clamped to that range, so adding any bounded duration to the result
//! cannot overflow `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use pbjson_types::Timestamp;

/// How far in the future a timestamp that says when something happened (a Lease
/// renewal, a condition transition, an Event) may lie: the clock skew tolerated
/// between hosts.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Longest `leaseDurationSeconds` of a Lease (leader election and node heartbeats);
/// leader election never honours more, even from a Lease that bypassed validation.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(60 * 60);
/// Longest `tolerationSeconds` (either sign) of a toleration.
pub const MAX_TOLERATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Longest probe `initialDelaySeconds`, `periodSeconds` and `timeoutSeconds`.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Longest `terminationGracePeriodSeconds`.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// Seconds of `0001-01-01T00:00:00Z`, the earliest valid protobuf timestamp.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// Seconds of `9999-12-31T23:59:59Z`, the latest valid protobuf timestamp.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    from_system_time(SystemTime::now())
}

/// Converts a `SystemTime` (before 1970 counts as 1970).
pub fn from_system_time(t: SystemTime) -> Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// Converts a protobuf timestamp: negative values clamp to the epoch, values after
/// [`MAX_TIMESTAMP_SECONDS`] to that, out-of-range nanos to the nearest valid value.
pub fn to_system_time(t: &Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds.min(MAX_TIMESTAMP_SECONDS)).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// True when `t` is a valid protobuf timestamp: years 1 to 9999, nanos in range.
pub fn is_representable(t: &Timestamp) -> bool {
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds)
        && (0..1_000_000_000).contains(&t.nanos)
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs())
        .unwrap_or(i64::MAX)
        .min(MAX_TIMESTAMP_SECONDS);
    DateTime::from_timestamp(secs, since.subsec_nanos()).unwrap_or_default()
}

/// `t` as RFC 3339 UTC text: `2026-11-28T07:21:55Z`, or with `nanos`
/// `2026-11-28T07:21:55.123456789Z` (fixed width, so such stamps sort as text).
pub fn rfc3339(t: SystemTime, nanos: bool) -> String {
    let format = if nanos {
        SecondsFormat::Nanos
    } else {
        SecondsFormat::Secs
    };
    utc(t).to_rfc3339_opts(format, true)
}

/// A protobuf timestamp as RFC 3339 UTC text, whole seconds: `2026-11-28T05:46:19Z`.
pub fn format_timestamp(t: &Timestamp) -> String {
    rfc3339(to_system_time(t), false)
}

/// The UTC date of `t`: `2026-11-28`.
pub fn date(t: SystemTime) -> String {
    utc(t).format("%Y-%m-%d").to_string()
}

/// Time elapsed since `t`, as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(t: Option<&Timestamp>) -> String {
    let Some(t) = t else {
        return "<unknown>".to_string();
    };
    let elapsed = SystemTime::now()
        .duration_since(to_system_time(t))
        .unwrap_or_default()
        .as_secs();
    format_duration_short(elapsed)
}

/// `59` → `59s`, `150` → `2m30s` (under 10 minutes), `7200` → `2h`, `200000` → `2d7h`.
pub fn format_duration_short(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..600 if !secs.is_multiple_of(60) => format!("{}m{}s", secs / 60, secs % 60),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ if (secs % 86_400) / 3600 != 0 && secs < 8 * 86_400 => {
            format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3600)
        }
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_dates() {
        let t = UNIX_EPOCH + Duration::new(1_709_164_800 + 3_723, 5);
        assert_eq!(rfc3339(t, false), "2024-02-29T01:02:03Z");
        assert_eq!(rfc3339(t, true), "2024-02-29T01:02:03.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
        assert_eq!(date(t), "2024-02-29");
        let ts = |seconds| format_timestamp(&Timestamp { seconds, nanos: 0 });
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(ts(1_795_844_779), "2026-11-28T05:46:19Z");
        assert_eq!(ts(-5), "1970-01-01T00:00:00Z");
        assert_eq!(ts(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn formats_like_kubectl() {
        assert_eq!(format_duration_short(5), "5s");
        assert_eq!(format_duration_short(150), "2m30s");
        assert_eq!(format_duration_short(720), "12m");
        assert_eq!(format_duration_short(7200), "2h");
        assert_eq!(format_duration_short(200_000), "2d7h");
        assert_eq!(format_duration_short(30 * 86_400), "30d");
    }

    #[test]
    fn round_trips_system_time() {
        let t = now();
        assert_eq!(from_system_time(to_system_time(&t)), t);
    }

    #[test]
    fn hostile_timestamps_convert_without_overflow() {
        let far = to_system_time(&Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        });
        assert_eq!(
            from_system_time(far).seconds,
            MAX_TIMESTAMP_SECONDS,
            "clamped to 9999-12-31"
        );
        // Any bounded duration can be added to a converted timestamp.
        let _ = far + MAX_TOLERATION + MAX_LEASE_DURATION;
        assert!(is_representable(&Timestamp {
            seconds: MAX_TIMESTAMP_SECONDS,
            nanos: 999_999_999
        }));
        assert!(!is_representable(&Timestamp {
            seconds: i64::MAX,
            nanos: 0
        }));
        assert!(!is_representable(&Timestamp {
            seconds: 0,
            nanos: -1
        }));
    }
}
