//! A typed view of an object of any kind, so plugins behind one trait object can look
//! at (and, when mutating, change) the kinds they care about by matching on it.

use hypermesh_api::Resource;
use hypermesh_api::v1;

use crate::kinds::KindRules;

macro_rules! object_views {
    ($($ty:ident),* $(,)?) => {
        /// An object of any kind, borrowed.
        #[derive(Debug, Clone, Copy)]
        pub enum ObjectRef<'a> {
            $(
                #[allow(missing_docs)]
                $ty(&'a v1::$ty),
            )*
        }

        /// An object of any kind, borrowed mutably.
        #[derive(Debug)]
        pub enum ObjectMut<'a> {
            $(
                #[allow(missing_docs)]
                $ty(&'a mut v1::$ty),
            )*
        }

        impl ObjectRef<'_> {
            /// The object's metadata.
            pub fn meta(&self) -> &v1::ObjectMeta {
                match self { $(ObjectRef::$ty(o) => o.meta(),)* }
            }
        }

        $(
            impl Kind for v1::$ty {
                fn view(&self) -> ObjectRef<'_> {
                    ObjectRef::$ty(self)
                }
                fn view_mut(&mut self) -> ObjectMut<'_> {
                    ObjectMut::$ty(self)
                }
            }
        )*
    };
}

/// A kind the apiserver serves: its object semantics plus the typed views.
pub trait Kind: Resource + KindRules {
    /// The object as an [`ObjectRef`].
    fn view(&self) -> ObjectRef<'_>;
    /// The object as an [`ObjectMut`].
    fn view_mut(&mut self) -> ObjectMut<'_>;
}

object_views!(
    Namespace,
    Node,
    Asset,
    Secret,
    Route,
    Workload,
    Instance,
    Lease,
    Event,
    Role,
    RoleBinding,
    JoinToken,
    Certificate,
);
