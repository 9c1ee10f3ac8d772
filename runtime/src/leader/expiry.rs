//! When the holder of a Lease may no longer act, judged the way client-go does: by
//! when *this* candidate last saw the Lease's record change (its own monotonic
//! clock) plus the Lease's duration, bounded by [`MAX_LEASE_DURATION`]; never by the
//! holder's wall-clock `renew_time`. And what to do with the Lease as read.

use std::time::{Duration, SystemTime};

use hypermesh_api::time::{MAX_CLOCK_SKEW, MAX_LEASE_DURATION};
use hypermesh_api::v1::{Lease, LeaseSpec};
use tokio::time::Instant;

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// It does not exist: create it with us as holder.
    Create,
    /// We hold it: bump `renew_time`.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid Lease.
    Follow(String),
}

/// How long the holder of `spec` may act after its last renewal: its
/// `lease_duration_seconds`, at most [`MAX_LEASE_DURATION`] (a negative value counts
/// as zero).
pub fn honoured_duration(spec: &LeaseSpec) -> Duration {
    let seconds = u64::try_from(spec.lease_duration_seconds).unwrap_or(0);
    Duration::from_secs(seconds).min(MAX_LEASE_DURATION)
}

/// What is wrong with a Lease record that bypassed validation (written by an older
/// version or straight into the store), if anything: the election copes either way
/// (it never reads the wall-clock times and bounds the duration), but says so.
pub fn lease_problem(spec: &LeaseSpec, now: SystemTime) -> Option<String> {
    let seconds = spec.lease_duration_seconds;
    if i64::from(seconds) > MAX_LEASE_DURATION.as_secs() as i64 || seconds < 0 {
        return Some(format!(
            "leaseDurationSeconds {seconds} is outside 0 to {}; counted as at most {}s",
            MAX_LEASE_DURATION.as_secs(),
            MAX_LEASE_DURATION.as_secs()
        ));
    }
    let limit = hypermesh_api::time::from_system_time(now)
        .seconds
        .saturating_add(MAX_CLOCK_SKEW.as_secs() as i64);
    for (field, time) in [
        ("renewTime", &spec.renew_time),
        ("acquireTime", &spec.acquire_time),
    ] {
        if let Some(t) = time
            && (t.seconds > limit || !hypermesh_api::time::is_representable(t))
        {
            return Some(format!(
                "{field} {{seconds: {}}} lies beyond the allowed clock skew; ignored (expiry \
                 is judged by when this candidate saw the Lease change)",
                t.seconds
            ));
        }
    }
    None
}

/// The Lease record as this candidate last saw it, and since when (monotonic).
#[derive(Debug, Clone)]
struct Observation {
    record: LeaseSpec,
    since: Instant,
}

/// Remembers when the Lease's record last changed, as seen from here.
#[derive(Debug, Default)]
pub(super) struct Observer {
    last: Option<Observation>,
}

impl Observer {
    /// Notes `record` as read at `now`; returns since when it has been unchanged.
    pub(super) fn observe(&mut self, record: &LeaseSpec, now: Instant) -> Instant {
        match &self.last {
            Some(seen) if seen.record == *record => seen.since,
            _ => {
                self.last = Some(Observation {
                    record: record.clone(),
                    since: now,
                });
                now
            }
        }
    }

    /// True when `record` differs from the one last observed.
    pub(super) fn is_new(&self, record: &LeaseSpec) -> bool {
        self.last.as_ref().is_none_or(|seen| seen.record != *record)
    }
}

/// True when a holder whose record was first seen unchanged at `since` may no longer
/// act at `now`. Saturates: a deadline beyond the clock's range never comes, but the
/// duration is bounded by [`MAX_LEASE_DURATION`] anyway.
fn lapsed(spec: &LeaseSpec, since: Instant, now: Instant) -> bool {
    since
        .checked_add(honoured_duration(spec))
        .is_some_and(|deadline| deadline <= now)
}

pub(super) fn plan(
    lease: Option<&Lease>,
    identity: &str,
    observer: &mut Observer,
    now: Instant,
) -> Plan {
    let Some(lease) = lease else {
        return Plan::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let since = observer.observe(&spec, now);
    if spec.holder_identity == identity {
        Plan::Renew
    } else if spec.holder_identity.is_empty() || lapsed(&spec, since, now) {
        Plan::TakeOver
    } else {
        Plan::Follow(spec.holder_identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbjson_types::Timestamp;

    fn lease(holder: &str, renew_seconds: i64, duration: i32) -> Lease {
        Lease {
            metadata: None,
            spec: Some(LeaseSpec {
                holder_identity: holder.into(),
                lease_duration_seconds: duration,
                renew_time: Some(Timestamp {
                    seconds: renew_seconds,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn plans_follow_the_lease_state() {
        let t0 = Instant::now();
        let mut seen = Observer::default();
        assert_eq!(plan(None, "a", &mut seen, t0), Plan::Create);
        assert_eq!(
            plan(Some(&lease("a", 1, 10)), "a", &mut seen, t0),
            Plan::Renew
        );
        assert_eq!(
            plan(Some(&lease("b", 2, 10)), "a", &mut seen, t0),
            Plan::Follow("b".into())
        );
        assert_eq!(
            plan(Some(&lease("", 3, 10)), "a", &mut seen, t0),
            Plan::TakeOver
        );
        assert_eq!(
            plan(Some(&Lease::default()), "a", &mut Observer::default(), t0),
            Plan::TakeOver
        );
    }

    #[test]
    fn a_lease_expires_a_duration_after_its_record_last_changed_here() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut seen = Observer::default();
        // First sight: valid for a full duration from now, whatever renew_time says.
        let old = lease("b", 0, 10);
        assert_eq!(
            plan(Some(&old), "a", &mut seen, t0),
            Plan::Follow("b".into())
        );
        assert_eq!(
            plan(Some(&old), "a", &mut seen, t0 + secs(9)),
            Plan::Follow("b".into())
        );
        // Renewed (record changed) at t0+9: another full duration from then.
        let renewed = lease("b", 5, 10);
        assert_eq!(
            plan(Some(&renewed), "a", &mut seen, t0 + secs(9)),
            Plan::Follow("b".into())
        );
        assert_eq!(
            plan(Some(&renewed), "a", &mut seen, t0 + secs(18)),
            Plan::Follow("b".into())
        );
        assert_eq!(
            plan(Some(&renewed), "a", &mut seen, t0 + secs(19)),
            Plan::TakeOver
        );
        // Our own expired lease is renewed, not taken over (no transition).
        assert_eq!(
            plan(Some(&lease("a", 5, 10)), "a", &mut seen, t0 + secs(60)),
            Plan::Renew
        );
    }

    #[test]
    fn hostile_times_and_durations_are_bounded() {
        let t0 = Instant::now();
        // A renew_time at the end of i64 is just a record that never changes.
        let far = lease("mallory", i64::MAX, 2);
        let mut seen = Observer::default();
        assert_eq!(
            plan(Some(&far), "a", &mut seen, t0),
            Plan::Follow("mallory".into())
        );
        assert_eq!(
            plan(Some(&far), "a", &mut seen, t0 + Duration::from_secs(2)),
            Plan::TakeOver
        );
        // A duration of i32::MAX seconds counts as the maximum.
        let forever = lease("mallory", 1, i32::MAX);
        assert_eq!(
            honoured_duration(forever.spec.as_ref().unwrap()),
            MAX_LEASE_DURATION
        );
        let mut seen = Observer::default();
        assert_eq!(
            plan(Some(&forever), "a", &mut seen, t0),
            Plan::Follow("mallory".into())
        );
        assert_eq!(
            plan(Some(&forever), "a", &mut seen, t0 + MAX_LEASE_DURATION),
            Plan::TakeOver
        );
        assert_eq!(
            honoured_duration(&LeaseSpec {
                lease_duration_seconds: -5,
                ..Default::default()
            }),
            Duration::ZERO
        );
    }

    #[test]
    fn malformed_leases_are_named() {
        let now = SystemTime::now();
        let spec = |duration, renew| lease("x", renew, duration).spec.unwrap();
        let stamp = hypermesh_api::time::from_system_time(now).seconds;
        assert_eq!(lease_problem(&spec(15, stamp), now), None);
        assert!(
            lease_problem(&spec(i32::MAX, stamp), now)
                .unwrap()
                .starts_with("leaseDurationSeconds 2147483647")
        );
        assert!(
            lease_problem(&spec(15, i64::MAX), now)
                .unwrap()
                .starts_with("renewTime")
        );
    }
}
