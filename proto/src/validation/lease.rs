//! Lease: the duration (0 to [`MAX_LEASE_DURATION`]) and the acquire and renew times
//! (at most the allowed clock skew ahead), so no holder can claim a Lease for decades
//! or from the far future.

use crate::time::MAX_LEASE_DURATION;
use crate::v1;

use super::time::{Context, check_seconds, check_timestamp};
use super::{FieldErrors, Validate};

impl Validate for v1::Lease {
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else { return };
        if spec.lease_duration_seconds < 0 {
            errs.invalid("spec.leaseDurationSeconds", "must not be negative");
        } else {
            check_seconds(
                errs,
                "spec.leaseDurationSeconds",
                i64::from(spec.lease_duration_seconds),
                0,
                MAX_LEASE_DURATION,
            );
        }
        check_timestamp(errs, ctx, "spec.acquireTime", spec.acquire_time.as_ref());
        check_timestamp(errs, ctx, "spec.renewTime", spec.renew_time.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;
    use pbjson_types::Timestamp;

    fn lease(duration: i32, renew_seconds: i64) -> v1::Lease {
        v1::Lease {
            metadata: Some(v1::ObjectMeta {
                name: "hm-scheduler".into(),
                namespace: "hypermesh-system".into(),
                ..Default::default()
            }),
            spec: Some(v1::LeaseSpec {
                holder_identity: "mallory".into(),
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

    fn fields(l: &v1::Lease) -> Vec<String> {
        validate(l)
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn hostile_leases_are_refused_with_the_field() {
        let now = crate::time::now().seconds;
        assert!(fields(&lease(15, now)).is_empty());
        assert_eq!(fields(&lease(i32::MAX, now)), ["spec.leaseDurationSeconds"]);
        assert_eq!(fields(&lease(-1, now)), ["spec.leaseDurationSeconds"]);
        assert_eq!(fields(&lease(15, i64::MAX - 7)), ["spec.renewTime"]);
        assert_eq!(fields(&lease(15, now + 86_400)), ["spec.renewTime"]);
    }
}
