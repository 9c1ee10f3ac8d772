//! Stable error reasons. Every error status the apiserver returns carries one in the
//! `hm-reason` metadata entry, so clients and scripts can branch on it and users can
//! look it up (`hmctl` prints it: `Error from server (QuantityInvalid): ...`).

use std::fmt;
use std::str::FromStr;

use tonic::{Code, Status};

/// Metadata key carrying the [`Reason`] on an error status.
pub const REASON_METADATA_KEY: &str = "hm-reason";

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        /// Why a request failed. The names are stable: they are part of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, for documentation and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The stable name, e.g. `QuantityInvalid`.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name),)* }
            }

            /// The gRPC code this reason is sent with.
            pub fn code(self) -> Code {
                match self { $(Reason::$name => Code::$code,)* }
            }
        }

        impl FromStr for Reason {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $(stringify!($name) => Ok(Reason::$name),)* _ => Err(()) }
            }
        }
    };
}

reasons! {
    /// A field has a value that is not allowed.
    FieldInvalid => InvalidArgument,
    /// A required field is missing or empty.
    FieldRequired => InvalidArgument,
    /// A quantity string (`500m`, `2Gi`) does not parse.
    QuantityInvalid => InvalidArgument,
    /// A name is not a valid DNS-1123 name.
    NameInvalid => InvalidArgument,
    /// A label or field selector does not parse or names an unsupported field.
    SelectorInvalid => InvalidArgument,
    /// A field that cannot change after creation was changed.
    FieldImmutable => InvalidArgument,
    /// A continue token is malformed.
    ContinueTokenInvalid => InvalidArgument,
    /// The object does not exist.
    NotFound => NotFound,
    /// The namespace of the object does not exist.
    NamespaceNotFound => NotFound,
    /// An object with this name already exists.
    AlreadyExists => AlreadyExists,
    /// The object changed since the `resource_version` the client sent (optimistic concurrency).
    Conflict => Aborted,
    /// The namespace is being deleted; nothing new can be created in it.
    NamespaceTerminating => FailedPrecondition,
    /// The Instance is already bound to a node.
    AlreadyBound => FailedPrecondition,
    /// The node named in a binding does not exist or is being deleted.
    NodeNotFound => NotFound,
    /// The object cannot be deleted (e.g. a system namespace).
    DeleteForbidden => FailedPrecondition,
    /// The requested revision has been compacted away; list again and watch from the new revision.
    Expired => OutOfRange,
    /// The object or request is larger than the server accepts.
    TooLarge => ResourceExhausted,
    /// A watch fell too far behind its changes and was closed; resume from the last resource_version received, or list again.
    WatchTooSlow => ResourceExhausted,
    /// The caller sent more requests than its rate allows; retry after the time the message names.
    RateLimited => ResourceExhausted,
    /// The server has too much work queued (e.g. store writes); retry after a short pause.
    Overloaded => ResourceExhausted,
    /// The server failed internally (storage error); the request may be retried.
    InternalError => Internal,
    /// The server is shutting down or the store is unavailable.
    Unavailable => Unavailable,
    /// A Node's `spec.identity` is inconsistent: `nodeId` is not the BLAKE3 of `publicKey`.
    NodeIdentityInvalid => InvalidArgument,
    /// An Asset carries a proof but its Node has no identity (public key) to check it with.
    NodeIdentityMissing => FailedPrecondition,
    /// A node read a Secret but has published no ML-KEM-1024 key to seal it to.
    NodeKemKeyMissing => FailedPrecondition,
    /// An Asset of a node with an identity carries no `spec.proof`.
    ProofMissing => InvalidArgument,
    /// A part of the proof (stake, time, space, timestamp, nonce) is absent or ill-formed.
    ProofMalformed => InvalidArgument,
    /// Stake: the signature does not verify with the node's public key.
    ProofForged => PermissionDenied,
    /// Stake: the proof was signed as another node than the asset's owner.
    ProofWrongNode => PermissionDenied,
    /// Time: the record's timestamp is outside the clock-skew window.
    ProofStale => InvalidArgument,
    /// Time: the record's nonce was already used (a replayed registration).
    ProofReplayed => PermissionDenied,
    /// Space: the asset is not bound to the node, location or record the proof commits to.
    ProofSpaceMismatch => InvalidArgument,
    /// Space: the node's assets claim more of a device than it proved.
    ProofOverclaimed => PermissionDenied,
    /// Work: the proof has no work part.
    ProofWorkMissing => InvalidArgument,
    /// Work: the hashcash does not meet the difficulty, or the difficulty is too low.
    ProofWorkInsufficient => InvalidArgument,
    /// Work: the proof answers no challenge the apiserver issued for this node and asset (never issued, already used, or expired); ask `AssetService.Challenge` again.
    ProofChallengeInvalid => FailedPrecondition,
    /// Space: the sampled Merkle openings do not verify against the committed root, or the commitment is ill-formed.
    ProofSpaceInvalid => PermissionDenied,
    /// Stake: the proof cites a stake record its Node does not hold.
    ProofStakeInvalid => PermissionDenied,
    /// Stake: a node without an admin-issued stake may offer Assets only at privacy UNTRUSTED (`hmctl node stake`).
    ProofUnstaked => FailedPrecondition,
    /// The caller presented no (valid) client certificate; only joining is possible without one.
    Unauthenticated => Unauthenticated,
    /// The caller's identity lacks the permission (`user "bob" cannot create instances in namespace "team-a"`).
    Forbidden => PermissionDenied,
    /// The object asks for something the namespace's workload policy does not allow (hostPath, host network, root without a user namespace, ...).
    PolicyDenied => PermissionDenied,
    /// A join token is unknown, malformed or its secret does not match.
    TokenInvalid => Unauthenticated,
    /// A join token's time to live has passed.
    TokenExpired => Unauthenticated,
    /// A join token has no uses left.
    TokenUsedUp => Unauthenticated,
    /// A node tried to join or register with a key other than the one bound to its name.
    NodeKeyMismatch => PermissionDenied,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds an error status with `reason` in its metadata and `message` as text.
pub fn status(reason: Reason, message: impl Into<String>) -> Status {
    let mut status = Status::new(reason.code(), message);
    if let Ok(value) = reason.as_str().parse() {
        status.metadata_mut().insert(REASON_METADATA_KEY, value);
    }
    status
}

/// The reason carried by a status from the apiserver, if any.
pub fn reason_of(status: &Status) -> Option<Reason> {
    status
        .metadata()
        .get(REASON_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips_through_status() {
        for &reason in Reason::ALL {
            let s = status(reason, "boom");
            assert_eq!(s.code(), reason.code());
            assert_eq!(reason_of(&s), Some(reason));
        }
    }
}
