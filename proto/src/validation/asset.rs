//! Asset: the node it belongs to, its type, privacy and capacity. The proofs are
//! checked at admission (the proof's timestamp only for being a valid timestamp here;
//! its freshness is the time proof's business).

use crate::reason::Reason;
use crate::v1;

use super::fields::{check_enum, check_quantity};
use super::names::dns_subdomain_problem;
use super::time::{Context, check_representable};
use super::{FieldErrors, Validate};

impl Validate for v1::Asset {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if let Some(p) = dns_subdomain_problem(&spec.node_name) {
            errs.push(
                "spec.nodeName",
                if spec.node_name.is_empty() {
                    Reason::FieldRequired
                } else {
                    Reason::NameInvalid
                },
                p,
            );
        }
        check_enum::<v1::AssetType>(errs, "spec.type", spec.r#type, true);
        check_enum::<v1::PrivacyLevel>(errs, "spec.privacy", spec.privacy, false);
        for (k, v) in &spec.capacity {
            check_quantity(errs, &format!("spec.capacity[{k}]"), v);
        }
        let proof_time = spec
            .proof
            .as_ref()
            .and_then(|p| p.time.as_ref())
            .and_then(|t| t.timestamp.as_ref());
        check_representable(errs, "spec.proof.time.timestamp", proof_time);
    }
}
