//! [`ControllerMetrics`]: reconciles, errors and crash restarts per controller, as
//! Prometheus counters the caller exposes (and tests read).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::telemetry::Telemetry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// Counters of every controller driven by [`super::Controller`], labelled by
/// controller name. Clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct ControllerMetrics {
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
    restarts: Family<ControllerLabel, Counter>,
}

static PROCESS: OnceLock<ControllerMetrics> = OnceLock::new();

impl ControllerMetrics {
    /// The process's counters, registered once in [`Telemetry::process`] (served on
    /// the process's `/metrics`).
    pub fn process() -> ControllerMetrics {
        PROCESS
            .get_or_init(|| {
                let metrics = ControllerMetrics::default();
                metrics.register(&mut Telemetry::process().registry());
                metrics
            })
            .clone()
    }

    /// Registers the counters in `registry` (`hm_controller_*_total`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("hm_controller");
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and were retried with back-off, by controller",
            self.errors.clone(),
        );
        registry.register(
            "restarts",
            "Restarts after a controller crashed (panicked), by controller",
            self.restarts.clone(),
        );
    }

    fn label(controller: &str) -> ControllerLabel {
        ControllerLabel {
            controller: controller.to_string(),
        }
    }

    pub(super) fn reconciled(&self, controller: &str) {
        self.reconciles
            .get_or_create(&Self::label(controller))
            .inc();
    }

    pub(super) fn failed(&self, controller: &str) {
        self.errors.get_or_create(&Self::label(controller)).inc();
    }

    pub(super) fn restarted(&self, controller: &str) {
        self.restarts.get_or_create(&Self::label(controller)).inc();
    }

    /// Reconciles `controller` has run.
    pub fn reconciles(&self, controller: &str) -> u64 {
        self.reconciles
            .get_or_create(&Self::label(controller))
            .get()
    }

    /// Reconciles of `controller` that returned an error.
    pub fn errors(&self, controller: &str) -> u64 {
        self.errors.get_or_create(&Self::label(controller)).get()
    }

    /// Times `controller` was restarted after a crash.
    pub fn restarts(&self, controller: &str) -> u64 {
        self.restarts.get_or_create(&Self::label(controller)).get()
    }
}
