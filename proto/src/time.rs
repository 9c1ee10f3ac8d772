//! Timestamps: the protobuf `Timestamp` ⇄ `SystemTime`, RFC 3339 text, and human ages
//! (`5m`, `3d`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbjson_types::Timestamp;

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

/// Converts a protobuf timestamp; negative values clamp to the epoch.
pub fn to_system_time(t: &Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
}

/// `t` as RFC 3339 UTC text: `2026-11-28T07:21:55Z`, or with `nanos`
/// `2026-11-28T07:21:55.123456789Z` (fixed width, so such stamps sort as text).
pub fn rfc3339(t: SystemTime, nanos: bool) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if nanos {
        let n = since.subsec_nanos();
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{n:09}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn civil_dates_and_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let t = UNIX_EPOCH + Duration::new(1_709_164_800 + 3_723, 5);
        assert_eq!(rfc3339(t, false), "2024-02-29T01:02:03Z");
        assert_eq!(rfc3339(t, true), "2024-02-29T01:02:03.000000005Z");
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
}
