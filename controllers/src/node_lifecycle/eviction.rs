//! When an Instance on an unreachable node is deleted: the taint's `time_added` plus
//! the eviction grace (no matching toleration) or plus the longest matching
//! `toleration_seconds`; never, with a matching toleration of `0` seconds. Every
//! sum saturates: `toleration_seconds` is bounded by [`MAX_TOLERATION`], and a
//! deadline past the clock's range means "never".

use std::time::{Duration, Instant, SystemTime};

use hypermesh_api::time::MAX_TOLERATION;
use hypermesh_api::v1::{Instance, Taint, TaintEffect, Toleration};

use super::UNREACHABLE_TAINT;

/// Whether `taint` is the one this controller owns.
pub(super) fn is_unreachable(taint: &Taint) -> bool {
    taint.key == UNREACHABLE_TAINT && taint.effect == TaintEffect::NoExecute as i32
}

/// Whether `toleration` matches `taint` (same rules as the scheduler's).
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok =
        toleration.effect == TaintEffect::Unspecified as i32 || toleration.effect == taint.effect;
    let key_ok = match toleration.operator.as_str() {
        "Exists" => toleration.key.is_empty() || toleration.key == taint.key,
        _ => toleration.key == taint.key && toleration.value == taint.value,
    };
    effect_ok && key_ok
}

/// A toleration whose `toleration_seconds` lies beyond [`MAX_TOLERATION`] (it
/// bypassed validation, e.g. written by an older version): reported, and counted as
/// the maximum.
pub(super) fn out_of_range(instance: &Instance) -> Option<i64> {
    let max = MAX_TOLERATION.as_secs();
    instance
        .spec
        .as_ref()?
        .tolerations
        .iter()
        .map(|t| t.toleration_seconds)
        .find(|s| s.unsigned_abs() > max)
}

/// When `instance` is to be deleted from a node tainted by `taint`: `None` when it
/// tolerates the taint forever (or the time is beyond the clock's range); otherwise
/// the taint's time plus `grace` (no toleration) or plus the longest matching
/// `toleration_seconds` (negative: at once).
pub fn eviction_time(instance: &Instance, taint: &Taint, grace: Duration) -> Option<SystemTime> {
    let tainted_at = taint
        .time_added
        .as_ref()
        .map(hypermesh_api::time::to_system_time)
        .unwrap_or_else(SystemTime::now);
    let tolerations = instance
        .spec
        .as_ref()
        .map(|s| s.tolerations.as_slice())
        .unwrap_or_default();
    let matching: Vec<i64> = tolerations
        .iter()
        .filter(|t| tolerates(t, taint))
        .map(|t| t.toleration_seconds)
        .collect();
    if matching.is_empty() {
        return tainted_at.checked_add(grace);
    }
    if matching.contains(&0) {
        return None;
    }
    let longest = matching.into_iter().max().unwrap_or(0);
    let seconds = u64::try_from(longest)
        .unwrap_or(0)
        .min(MAX_TOLERATION.as_secs());
    tainted_at.checked_add(Duration::from_secs(seconds))
}

/// The monotonic instant matching wall-clock time `t` (now when `t` has passed;
/// `None` when it lies beyond the monotonic clock's range).
pub(super) fn instant_of(t: SystemTime) -> Option<Instant> {
    let ahead = t.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now().checked_add(ahead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::InstanceSpec;
    use pbjson_types::Timestamp;

    fn taint_at(seconds: i64) -> Taint {
        Taint {
            key: UNREACHABLE_TAINT.into(),
            value: String::new(),
            effect: TaintEffect::NoExecute as i32,
            time_added: Some(Timestamp { seconds, nanos: 0 }),
        }
    }

    fn instance(tolerations: Vec<Toleration>) -> Instance {
        Instance {
            metadata: None,
            spec: Some(InstanceSpec {
                tolerations,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn toleration(key: &str, operator: &str, effect: TaintEffect, seconds: i64) -> Toleration {
        Toleration {
            key: key.into(),
            operator: operator.into(),
            value: String::new(),
            effect: effect as i32,
            toleration_seconds: seconds,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn untolerating_instances_go_after_the_grace() {
        let t = taint_at(1000);
        let grace = Duration::from_secs(30);
        assert_eq!(eviction_time(&instance(vec![]), &t, grace), Some(at(1030)));
        // A toleration for another taint does not help.
        let other = toleration("dedicated", "Exists", TaintEffect::NoExecute, 0);
        assert_eq!(
            eviction_time(&instance(vec![other]), &t, grace),
            Some(at(1030))
        );
        // Nor one for another effect.
        let no_schedule = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoSchedule, 0);
        assert_eq!(
            eviction_time(&instance(vec![no_schedule]), &t, grace),
            Some(at(1030))
        );
    }

    #[test]
    fn toleration_seconds_set_the_time() {
        let t = taint_at(1000);
        let grace = Duration::from_secs(30);
        let long = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoExecute, 3600);
        assert_eq!(
            eviction_time(&instance(vec![long]), &t, grace),
            Some(at(4600))
        );
        let short = toleration(UNREACHABLE_TAINT, "Equal", TaintEffect::Unspecified, 5);
        assert_eq!(
            eviction_time(&instance(vec![short]), &t, grace),
            Some(at(1005))
        );
        let forever = toleration("", "Exists", TaintEffect::Unspecified, 0);
        assert_eq!(eviction_time(&instance(vec![forever]), &t, grace), None);
        let negative = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoExecute, -1);
        assert_eq!(
            eviction_time(&instance(vec![negative]), &t, grace),
            Some(at(1000))
        );
    }

    #[test]
    fn hostile_times_saturate() {
        let huge = toleration(
            UNREACHABLE_TAINT,
            "Exists",
            TaintEffect::NoExecute,
            i64::MAX,
        );
        let hostile = instance(vec![huge]);
        assert_eq!(out_of_range(&hostile), Some(i64::MAX));
        let t = taint_at(1000);
        assert_eq!(
            eviction_time(&hostile, &t, Duration::from_secs(30)),
            Some(at(1000) + MAX_TOLERATION)
        );
        // A taint added at the end of time: clamped, and still no overflow.
        let late = taint_at(i64::MAX);
        assert!(eviction_time(&hostile, &late, Duration::MAX).is_some());
        assert!(eviction_time(&instance(vec![]), &late, Duration::MAX).is_none());
        assert!(instant_of(SystemTime::now() + MAX_TOLERATION).is_some());
        assert_eq!(out_of_range(&instance(vec![])), None);
    }
}
