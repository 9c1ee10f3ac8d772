//! Timestamps: the protobuf `Timestamp` ⇄ `SystemTime`, and human ages (`5m`, `3d`).

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
