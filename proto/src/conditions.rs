//! Status conditions (`{type, status, reason, message, lastTransitionTime}`): the one
//! way to set one, so `lastTransitionTime` moves only when the status does.

use pbjson_types::Timestamp;

use crate::v1::Condition;

/// A condition of `kind` with `status` (`True`, `False` or `Unknown`), without a
/// transition time yet ([`set_condition`] sets it).
pub fn condition(kind: &str, status: &str, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        r#type: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: None,
    }
}

/// `"True"` or `"False"`.
pub fn status_of(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// The condition of `kind`, if present.
pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type == kind)
}

/// True when the condition of `kind` is present with status `status`.
pub fn has_status(conditions: &[Condition], kind: &str, status: &str) -> bool {
    find(conditions, kind).is_some_and(|c| c.status == status)
}

/// Puts `next` in place of the condition of the same type (or appends it). Its
/// `lastTransitionTime` is the previous one while the status is unchanged, else
/// `now`. Returns true when `conditions` changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut next: Condition, now: Timestamp) -> bool {
    match conditions.iter_mut().find(|c| c.r#type == next.r#type) {
        Some(existing) => {
            next.last_transition_time = if existing.status == next.status {
                existing.last_transition_time.or(Some(now))
            } else {
                Some(now)
            };
            let changed = *existing != next;
            *existing = next;
            changed
        }
        None => {
            next.last_transition_time = Some(now);
            conditions.push(next);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            condition("Ready", "False", "x", ""),
            ts(1)
        ));
        assert!(set_condition(
            &mut conds,
            condition("Ready", "False", "y", "m"),
            ts(2)
        ));
        assert_eq!(conds[0].last_transition_time, Some(ts(1)));
        assert_eq!(
            (conds[0].reason.as_str(), conds[0].message.as_str()),
            ("y", "m")
        );
        assert!(!set_condition(
            &mut conds,
            condition("Ready", "False", "y", "m"),
            ts(3)
        ));
        set_condition(&mut conds, condition("Ready", "True", "z", ""), ts(4));
        assert_eq!(conds[0].last_transition_time, Some(ts(4)));
        set_condition(&mut conds, condition("Suspect", "True", "s", ""), ts(5));
        assert_eq!(conds.len(), 2);
        assert!(has_status(&conds, "Ready", "True"));
        assert!(!has_status(&conds, "Suspect", "False"));
        assert_eq!(
            find(&conds, "Suspect").map(|c| c.reason.as_str()),
            Some("s")
        );
    }
}
