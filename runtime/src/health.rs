//! [`Health`]: what a process reports on `/healthz` (and, in the apiserver, through
//! the gRPC health service): one state per component, e.g. each in-process
//! controller. A component that crashed and is waiting to restart is `Down`, which
//! makes the whole process unhealthy until it is back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

/// The state of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    /// Starting up (e.g. filling its caches).
    Starting,
    /// Working.
    Ready,
    /// Healthy but idle: another replica holds the leader Lease.
    Standby,
    /// Not working: crashed and waiting to restart, with the reason.
    Down(String),
}

impl ComponentState {
    /// False only for [`ComponentState::Down`].
    pub fn is_healthy(&self) -> bool {
        !matches!(self, ComponentState::Down(_))
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentState::Starting => f.write_str("starting"),
            ComponentState::Ready => f.write_str("ready"),
            ComponentState::Standby => f.write_str("standby (not the leader)"),
            ComponentState::Down(reason) => write!(f, "down: {reason}"),
        }
    }
}

#[derive(Debug)]
struct Inner {
    components: Mutex<BTreeMap<String, ComponentState>>,
    /// Bumped on every change, for those who mirror the health elsewhere.
    changes: watch::Sender<u64>,
}

/// The health of one process: a shared handle, cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Arc::new(Inner {
                components: Mutex::new(BTreeMap::new()),
                changes: watch::channel(0).0,
            }),
        }
    }
}

static PROCESS: LazyLock<Health> = LazyLock::new(Health::default);

impl Health {
    /// An empty (healthy) report.
    pub fn new() -> Self {
        Self::default()
    }

    /// The health of this process, for binaries whose parts are wired separately
    /// (e.g. `hm-apiserver`: its server serves `/healthz`, its `main` starts the
    /// controllers).
    pub fn process() -> Health {
        PROCESS.clone()
    }

    fn components(&self) -> MutexGuard<'_, BTreeMap<String, ComponentState>> {
        self.inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the state of `component`.
    pub fn set(&self, component: &str, state: ComponentState) {
        let changed = {
            let mut components = self.components();
            components.insert(component.to_string(), state.clone()) != Some(state)
        };
        if changed {
            self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Forgets `component` (it stopped on purpose).
    pub fn remove(&self, component: &str) {
        if self.components().remove(component).is_some() {
            self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The state of `component`, if it reported one.
    pub fn state(&self, component: &str) -> Option<ComponentState> {
        self.components().get(component).cloned()
    }

    /// True when no component is down.
    pub fn is_healthy(&self) -> bool {
        self.components().values().all(ComponentState::is_healthy)
    }

    /// One line per component, `name: state`, sorted by name.
    pub fn report(&self) -> String {
        self.components()
            .iter()
            .map(|(name, state)| format!("{name}: {state}\n"))
            .collect()
    }

    /// A receiver that changes whenever any component's state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_components_make_the_process_unhealthy() {
        let h = Health::new();
        let changes = h.subscribe();
        assert!(h.is_healthy());
        h.set("controller/workload", ComponentState::Ready);
        h.set("controller/gc", ComponentState::Standby);
        assert!(h.is_healthy());
        h.set(
            "controller/workload",
            ComponentState::Down("panicked: boom".into()),
        );
        assert!(!h.is_healthy());
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            h.report(),
            "controller/gc: standby (not the leader)\ncontroller/workload: down: panicked: boom\n"
        );
        h.remove("controller/workload");
        assert!(h.is_healthy());
    }
}
