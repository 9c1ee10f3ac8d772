//! Label and field selectors of a List or Watch request, parsed once with errors
//! naming the field, matched against objects of any kind.

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::resource::Resource;
use hypermesh_api::selector::{FieldSelector, LabelSelector};
use tonic::Status;

/// A watch's or list's label and field selectors.
pub(crate) struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn parse<K: Resource>(
        label_selector: &str,
        field_selector: &str,
    ) -> Result<Self, Status> {
        let labels = LabelSelector::parse(label_selector)
            .map_err(|e| status(Reason::SelectorInvalid, format!("label_selector: {e}")))?;
        let fields = FieldSelector::parse(field_selector, &K::supported_fields())
            .map_err(|e| status(Reason::SelectorInvalid, format!("field_selector: {e}")))?;
        Ok(Selectors { labels, fields })
    }

    pub(crate) fn matches<K: Resource>(&self, obj: &K) -> bool {
        self.labels.matches(&obj.meta().labels) && self.fields.matches(|f| obj.field(f))
    }

    /// The value `field` must equal for an object to match, if the field selector
    /// requires one.
    pub(crate) fn required_field(&self, field: &str) -> Option<&str> {
        self.fields.required_value(field)
    }

    /// True when the selectors select everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}
