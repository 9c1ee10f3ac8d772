//! Judging a node's heartbeats: what this controller last saw of each node's Lease,
//! timed by its own monotonic clock (when *it* saw `renew_time` move), and whether
//! the node is live or lapsed at a given instant. Durations are bounded and every
//! deadline is computed with saturating arithmetic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hypermesh_api::time::{MAX_LEASE_DURATION, format_timestamp};
use hypermesh_api::v1::Lease;
use pbjson_types::Timestamp;

use super::{NODE_LEASE_NAMESPACE, NODE_LEASE_PREFIX, REASON_LEASE_EXPIRED, REASON_LEASE_MISSING};

/// The last renewal seen of one node's Lease.
#[derive(Debug, Clone)]
pub(super) struct Renewal {
    /// The Lease's `renew_time` (the agent's clock), for messages and to notice moves.
    pub(super) renew_time: Option<Timestamp>,
    /// When this controller saw that renewal (its own clock), for expiry.
    pub(super) seen: Instant,
    /// How long the renewal holds.
    pub(super) duration: Duration,
    /// Whether this controller saw `renew_time` move (not just the Lease as first
    /// listed): only that revives a node that is already tainted, so a new leader
    /// does not untaint a dead node for a Lease duration.
    pub(super) moved: bool,
}

/// What the controller remembers between reconciles, per node.
#[derive(Debug, Default)]
pub(super) struct Heartbeats {
    /// Last renewal of each node's Lease, by node name.
    renewals: HashMap<String, Renewal>,
    /// When each node was first seen, for the startup grace of Lease-less nodes.
    first_seen: HashMap<String, Instant>,
}

impl Heartbeats {
    /// Notes the node's Lease as read now (`None`: it has none) with the duration it
    /// holds for; a `renew_time` different from the last one seen is a renewal.
    pub(super) fn observe(
        &mut self,
        node: &str,
        lease: Option<&Lease>,
        duration: Duration,
        now: Instant,
    ) {
        self.first_seen.entry(node.to_string()).or_insert(now);
        let Some(lease) = lease else { return };
        let renew_time = lease.spec.as_ref().and_then(|s| s.renew_time);
        match self.renewals.get_mut(node) {
            Some(r) if r.renew_time == renew_time => r.duration = duration,
            Some(r) => {
                *r = Renewal {
                    renew_time,
                    seen: now,
                    duration,
                    moved: true,
                };
            }
            None => {
                self.renewals.insert(
                    node.to_string(),
                    Renewal {
                        renew_time,
                        seen: now,
                        duration,
                        moved: false,
                    },
                );
            }
        }
    }

    /// Forgets a deleted node.
    pub(super) fn forget(&mut self, node: &str) {
        self.renewals.remove(node);
        self.first_seen.remove(node);
    }

    /// Where `node` stands at `now` (see [`judge`]).
    pub(super) fn judge(
        &self,
        node: &str,
        startup_grace: Duration,
        tainted: bool,
        now: Instant,
    ) -> Heartbeat {
        judge(
            node,
            self.renewals.get(node),
            self.first_seen.get(node).copied().unwrap_or(now),
            startup_grace,
            tainted,
            now,
        )
    }
}

/// How long a Lease's renewal holds: its `lease_duration_seconds` (or `default` when
/// unset), at most [`MAX_LEASE_DURATION`] even if the Lease bypassed validation.
pub(super) fn lease_duration(lease: &Lease, default: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| u64::try_from(s.lease_duration_seconds).ok())
        .filter(|s| *s > 0)
        .map_or(default, Duration::from_secs)
        .min(MAX_LEASE_DURATION)
}

/// Where a node stands with its heartbeats at one instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Heartbeat {
    /// Renewed in time; looks again at `until`.
    Live {
        /// When the current renewal lapses (`None`: not within the clock's range).
        until: Option<Instant>,
    },
    /// Not renewed in time.
    Lapsed {
        /// [`REASON_LEASE_EXPIRED`] or [`REASON_LEASE_MISSING`].
        reason: &'static str,
        /// The `Ready=Unknown` message.
        message: String,
    },
}

/// Where `node` stands at `now`, given its last seen renewal (if it ever had a
/// Lease), when it was first seen, and whether it already carries the unreachable
/// taint (then only a renewal this controller saw happen revives it, and a node
/// without a Lease stays lapsed).
pub(super) fn judge(
    node: &str,
    renewal: Option<&Renewal>,
    first_seen: Instant,
    startup_grace: Duration,
    tainted: bool,
    now: Instant,
) -> Heartbeat {
    if let Some(r) = renewal {
        let until = r.seen.checked_add(r.duration);
        let live = until.is_none_or(|until| until > now);
        if live && (r.moved || !tainted) {
            return Heartbeat::Live { until };
        }
        let since = match &r.renew_time {
            Some(t) => format_timestamp(t),
            None => "it was created".to_string(),
        };
        return Heartbeat::Lapsed {
            reason: REASON_LEASE_EXPIRED,
            message: format!(
                "lease not renewed since {since} (lease duration {}s)",
                r.duration.as_secs_f64()
            ),
        };
    }
    let until = first_seen.checked_add(startup_grace);
    if until.is_none_or(|until| until > now) && !tainted {
        return Heartbeat::Live { until };
    }
    Heartbeat::Lapsed {
        reason: REASON_LEASE_MISSING,
        message: format!(
            "no heartbeat lease {NODE_LEASE_NAMESPACE}/{NODE_LEASE_PREFIX}{node} within the \
             startup grace of {}s",
            startup_grace.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::LeaseSpec;

    fn renewal(seen: Instant, moved: bool) -> Renewal {
        Renewal {
            renew_time: Some(Timestamp {
                seconds: 1_795_844_779,
                nanos: 0,
            }),
            seen,
            duration: Duration::from_secs(10),
            moved,
        }
    }

    fn reason(h: &Heartbeat) -> Option<&'static str> {
        match h {
            Heartbeat::Live { .. } => None,
            Heartbeat::Lapsed { reason, .. } => Some(reason),
        }
    }

    #[test]
    fn leases_hold_for_their_duration_from_when_they_were_seen() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let r = renewal(t0, true);
        let live = judge("a", Some(&r), t0, grace, false, t0 + Duration::from_secs(9));
        assert_eq!(
            live,
            Heartbeat::Live {
                until: Some(t0 + Duration::from_secs(10))
            }
        );
        let lapsed = judge(
            "a",
            Some(&r),
            t0,
            grace,
            false,
            t0 + Duration::from_secs(10),
        );
        assert_eq!(reason(&lapsed), Some(REASON_LEASE_EXPIRED));
        let Heartbeat::Lapsed { message, .. } = lapsed else {
            unreachable!()
        };
        assert_eq!(
            message,
            "lease not renewed since 2026-11-28T05:46:19Z (lease duration 10s)"
        );
    }

    #[test]
    fn only_a_seen_renewal_revives_a_tainted_node() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let soon = t0 + Duration::from_secs(1);
        // As first listed (e.g. after a leader change): live if untainted...
        let listed = renewal(t0, false);
        assert_eq!(
            reason(&judge("a", Some(&listed), t0, grace, false, soon)),
            None
        );
        // ...but a node already tainted stays lapsed until the Lease moves.
        let kept = judge("a", Some(&listed), t0, grace, true, soon);
        assert_eq!(reason(&kept), Some(REASON_LEASE_EXPIRED));
        let moved = renewal(t0, true);
        assert_eq!(
            reason(&judge("a", Some(&moved), t0, grace, true, soon)),
            None
        );
    }

    #[test]
    fn nodes_without_a_lease_get_the_startup_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let early = judge("a", None, t0, grace, false, t0 + Duration::from_secs(29));
        assert_eq!(
            early,
            Heartbeat::Live {
                until: Some(t0 + grace)
            }
        );
        let late = judge("a", None, t0, grace, false, t0 + grace);
        assert_eq!(reason(&late), Some(REASON_LEASE_MISSING));
        let tainted = judge("a", None, t0, grace, true, t0);
        assert_eq!(reason(&tainted), Some(REASON_LEASE_MISSING));
    }

    fn lease(renew_seconds: i64, duration: i32) -> Lease {
        Lease {
            metadata: None,
            spec: Some(LeaseSpec {
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
    fn renewals_are_timed_by_our_clock_and_hostile_values_are_bounded() {
        let t0 = Instant::now();
        let default = Duration::from_secs(10);
        let hostile = lease(i64::MAX, i32::MAX);
        assert_eq!(lease_duration(&hostile, default), MAX_LEASE_DURATION);
        assert_eq!(lease_duration(&lease(1, 0), default), default);
        assert_eq!(lease_duration(&lease(1, -3), default), default);

        let mut beats = Heartbeats::default();
        let grace = Duration::from_secs(30);
        beats.observe("a", Some(&hostile), Duration::from_secs(2), t0);
        // A renew_time near the end of time is just a value that never moves.
        assert_eq!(
            reason(&beats.judge("a", grace, false, t0 + Duration::from_secs(1))),
            None
        );
        assert_eq!(
            reason(&beats.judge("a", grace, false, t0 + Duration::from_secs(2))),
            Some(REASON_LEASE_EXPIRED)
        );
        beats.observe(
            "a",
            Some(&lease(5, 2)),
            Duration::from_secs(2),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(
            reason(&beats.judge("a", grace, true, t0 + Duration::from_secs(4))),
            None,
            "a renewal seen moving revives a tainted node"
        );
        beats.forget("a");
        assert_eq!(
            reason(&beats.judge("a", grace, false, t0 + Duration::from_secs(4))),
            None,
            "a forgotten node starts over"
        );
    }
}
