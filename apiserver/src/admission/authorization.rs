//! Authorization: may this caller do this operation on this kind here?

use tonic::Status;

use super::{Access, Admit};
use crate::store::Store;

/// The plugin.
#[derive(Debug)]
pub struct Authorization;

#[tonic::async_trait]
impl Admit for Authorization {
    fn name(&self) -> &'static str {
        "Authorization"
    }

    async fn authorize(&self, access: &Access<'_>, _store: &dyn Store) -> Result<(), Status> {
        if access.caller.is_admin() {
            return Ok(());
        }
        Err(super::forbidden(access))
    }
}
