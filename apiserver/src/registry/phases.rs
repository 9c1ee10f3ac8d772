//! The phases every verb of a [`Registry`] walks before its store write: authorize
//! (may this caller do this to this kind?) and admission (mutate and validate, with
//! the findings recorded whatever the outcome).

use crate::admission::{Access, AdmissionRequest, Findings, Kind, Operation};
use crate::caller::Caller;
use tonic::Status;

use super::Registry;

impl<K: Kind> Registry<K> {
    /// The authorize phase for `operation` on an object of this kind.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        operation: Operation,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        self.authorize_kind(caller, operation, Self::info(), namespace, name)
            .await
    }

    /// The authorize phase for `operation` on an object of any `kind` (the access
    /// review asks it without acting).
    pub(crate) async fn authorize_kind(
        &self,
        caller: &Caller,
        operation: Operation,
        kind: &'static hypermesh_api::resource::KindInfo,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        let access = Access {
            caller,
            operation,
            kind,
            namespace,
            name,
        };
        self.options
            .admission
            .authorize(&access, self.store.as_ref())
            .await
    }

    /// Mutate and validate admission of `next` (with `old` as stored), recording any
    /// findings whatever the outcome.
    pub(crate) async fn admit(
        &self,
        caller: &Caller,
        operation: Operation,
        old: Option<&K>,
        next: &mut K,
    ) -> Result<(), Status> {
        let (namespace, name) = (next.meta().namespace.clone(), next.meta().name.clone());
        let request = AdmissionRequest {
            access: Access {
                caller,
                operation,
                kind: Self::info(),
                namespace: &namespace,
                name: &name,
            },
            old: old.map(Kind::view),
            store: self.store.as_ref(),
        };
        let mut findings = Findings::new();
        let result = self
            .options
            .admission
            .admit(&request, next, &mut findings)
            .await;
        crate::findings::record(self.store.as_ref(), &findings).await;
        result
    }

    /// Delete admission of `current` (as stored), recording any findings whatever the
    /// outcome.
    pub(crate) async fn admit_delete(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
        current: &K,
    ) -> Result<(), Status> {
        let request = AdmissionRequest {
            access: Access {
                caller,
                operation: Operation::Delete,
                kind: Self::info(),
                namespace,
                name,
            },
            old: Some(current.view()),
            store: self.store.as_ref(),
        };
        let mut findings = Findings::new();
        let result = self
            .options
            .admission
            .admit_delete(&request, &mut findings)
            .await;
        crate::findings::record(self.store.as_ref(), &findings).await;
        result
    }
}
