//! Objects the apiserver creates on first start: the system namespaces and the built-in
//! roles.

use crate::caller::Caller;
use hypermesh_api::v1::{self, ObjectMeta};
use tonic::Status;

use super::*;

/// Creates the system namespaces on first start.
pub async fn ensure_system_namespaces(registry: &Registry<v1::Namespace>) -> Result<(), Status> {
    for name in hypermesh_api::SYSTEM_NAMESPACES {
        let ns = v1::Namespace {
            metadata: Some(ObjectMeta {
                name: (*name).to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match registry.create(&Caller::apiserver(), ns).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
    }
    Ok(())
}

/// Creates the built-in roles (viewer, editor, admin) when missing; an admin may
/// change them afterwards.
pub async fn ensure_builtin_roles(registry: &Registry<v1::Role>) -> Result<(), Status> {
    for role in crate::admission::authorization::builtin_roles() {
        match registry.create(&Caller::apiserver(), role).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
    }
    Ok(())
}
