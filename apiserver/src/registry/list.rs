//! Paginated List of one kind: a snapshot at one revision, pages cut by count and
//! bytes, continue tokens authenticated and bound to the listing
//! ([`super::continue_token`]).

use super::continue_token::Listing;
use crate::admission::{Kind, Operation};
use crate::caller::Caller;
use crate::object::{kind_prefix, store_status};
use crate::selectors::Selectors;
use crate::store::StoreError;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::ListRequest;
use tonic::Status;

use super::*;

impl<K: Kind> Registry<K> {
    /// Lists objects matching the request's selectors, one page at a time.
    pub async fn list(&self, caller: &Caller, request: ListRequest) -> Result<K::List, Status> {
        self.authorize(caller, Operation::List, &request.namespace, "")
            .await?;
        let selectors = Selectors::parse::<K>(&request.label_selector, &request.field_selector)?;
        let prefix = kind_prefix(Self::info(), &request.namespace);
        let listing = Listing {
            prefix: &prefix,
            label_selector: &request.label_selector,
            field_selector: &request.field_selector,
        };
        let tokens = &self.options.continue_tokens;
        let encode_continue = |revision: u64, key: &str| tokens.issue(&listing, revision, key);
        let (mut revision, mut start_after) = if request.continue_token.is_empty() {
            (0, None)
        } else {
            let (rev, key) = tokens.check(&request.continue_token, &listing)?;
            (rev, Some(key))
        };
        let limit = match request.limit as usize {
            0 => MAX_PAGE_ITEMS,
            n => n.min(MAX_PAGE_ITEMS),
        };
        let fetch_cap = (LIST_FETCH_BYTES / self.options.max_object_bytes.max(1)).max(1);
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut last_examined = start_after.clone();
        loop {
            let fetch = (limit - items.len())
                .max(if selectors.is_empty() { 0 } else { 256 })
                .min(fetch_cap);
            let page = self
                .store
                .list(&prefix, start_after.as_deref(), fetch, revision)
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => status(Reason::Expired, "the continue token has expired (its snapshot was compacted); list again from the start"),
                    other => store_status(other, K::PLURAL),
                })?;
            revision = page.revision;
            let count = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                let obj = Self::decode(kv)?;
                if selectors.matches(&obj) {
                    // Cut the page before it outgrows one gRPC message.
                    if !items.is_empty() && bytes + kv.value.len() > PAGE_BYTES {
                        let resume = last_examined.unwrap_or_default();
                        return Ok(K::make_list(
                            items,
                            revision,
                            encode_continue(revision, &resume),
                        ));
                    }
                    bytes += kv.value.len();
                    items.push(obj);
                }
                last_examined = Some(kv.key.clone());
                if items.len() == limit {
                    let more = i + 1 < count || page.more;
                    let token = if more {
                        encode_continue(revision, &kv.key)
                    } else {
                        String::new()
                    };
                    return Ok(K::make_list(items, revision, token));
                }
            }
            if !page.more || count == 0 {
                return Ok(K::make_list(items, revision, String::new()));
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }
}
