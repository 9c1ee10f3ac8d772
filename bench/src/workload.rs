//! The object the `api` benchmark writes: a Workload shaped like a real service (two
//! containers, env, ports, probes, resources, tolerations), about 1 KB encoded, valid
//! under the server's admission checks.

use std::collections::BTreeMap;

use hypermesh_api::v1::{
    Container, ContainerPort, EnvVar, ExecAction, InstanceTemplate, ObjectMeta, PrivacyLevel,
    Probe, Protocol, ResourceRequirements, RestartPolicy, TaintEffect, TcpSocketAction, Toleration,
    UpdateStrategy, UpdateStrategyType, Workload, WorkloadSpec,
};

/// Prefix of every benchmark object's name.
pub const NAME_PREFIX: &str = "bench-";

/// `bench-000042`: sorts in creation order and maps back to its index.
pub fn name_of(index: usize) -> String {
    format!("{NAME_PREFIX}{index:06}")
}

/// The index encoded in a benchmark object's name.
pub fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix(NAME_PREFIX)?.parse().ok()
}

fn map(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: value.into(),
        secret_key_ref: None,
    }
}

/// The `index`-th benchmark Workload in `namespace`.
pub fn bench_workload(namespace: &str, index: usize) -> Workload {
    let name = name_of(index);
    let app = format!("shop-{}", index % 50);
    let selector = map(&[("app", app.clone()), ("tier", "frontend".into())]);
    let mut template_labels = selector.clone();
    template_labels.insert("release".into(), format!("r{}", index % 7));

    let web = Container {
        name: "web".into(),
        image: format!("hypermesh.local/shop/{app}:1.{}.3", index % 10),
        command: vec!["/usr/local/bin/shop-server".into()],
        args: vec![
            "--port=8080".into(),
            "--metrics-port=9090".into(),
            "--log-format=json".into(),
        ],
        env: vec![
            env("MODE", "production"),
            env("REGION", "eu-1"),
            env("CACHE_SIZE_MB", "256"),
            env(
                "DATABASE_URL",
                format!("postgres://shop@db-{}.team-a:5432/shop", index % 4),
            ),
            env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            env(
                "FEATURE_FLAGS",
                "checkout-v2,recommendations,search-suggest,fast-cart",
            ),
        ],
        working_dir: "/srv".into(),
        ports: vec![
            ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: Protocol::Tcp as i32,
            },
            ContainerPort {
                name: "metrics".into(),
                container_port: 9090,
                protocol: Protocol::Tcp as i32,
            },
        ],
        resources: Some(ResourceRequirements {
            cpu: "250m".into(),
            memory: "128Mi".into(),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: vec!["/usr/local/bin/shop-server".into(), "--health".into()],
            }),
            period_seconds: 10,
            failure_threshold: 3,
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TcpSocketAction { port: 8080 }),
            initial_delay_seconds: 2,
            period_seconds: 5,
            ..Default::default()
        }),
        user: "1000:1000".into(),
        ..Default::default()
    };
    let log_shipper = Container {
        name: "log-shipper".into(),
        image: "hypermesh.local/tools/log-shipper:0.9.1".into(),
        args: vec!["--input=/var/log/shop".into(), "--batch=512".into()],
        env: vec![env("SINK", "http://logs.hypermesh-system:8080/ingest")],
        resources: Some(ResourceRequirements {
            cpu: "50m".into(),
            memory: "32Mi".into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    Workload {
        metadata: Some(ObjectMeta {
            name,
            namespace: namespace.into(),
            labels: map(&[
                ("app", app),
                ("tier", "frontend".into()),
                ("team", "a".into()),
                ("hm-bench", "api".into()),
            ]),
            annotations: map(&[
                (
                    "hypermesh.io/change-cause",
                    format!(
                        "deploy shop release r{} (hm-bench object {index})",
                        index % 7
                    ),
                ),
                (
                    "hypermesh.io/source",
                    format!("git.hypermesh.invalid/team-a/shop@{:016x}", index * 7_919),
                ),
            ]),
            ..Default::default()
        }),
        spec: Some(WorkloadSpec {
            replicas: 3,
            selector,
            template: Some(InstanceTemplate {
                labels: template_labels,
                containers: vec![web, log_shipper],
                node_selector: map(&[("zone", "eu-1".into())]),
                tolerations: vec![Toleration {
                    key: "dedicated".into(),
                    operator: "Equal".into(),
                    value: "web".into(),
                    effect: TaintEffect::NoSchedule as i32,
                    toleration_seconds: 0,
                }],
                privacy: PrivacyLevel::PrivateNetwork as i32,
                restart_policy: RestartPolicy::Always as i32,
                termination_grace_period_seconds: 30,
                ..Default::default()
            }),
            strategy: Some(UpdateStrategy {
                r#type: UpdateStrategyType::RollingUpdate as i32,
                max_surge: "25%".into(),
                max_unavailable: "0".into(),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_order() {
        assert_eq!(name_of(42), "bench-000042");
        assert_eq!(index_of(&name_of(9_999)), Some(9_999));
        assert_eq!(index_of("web"), None);
        assert!(name_of(999) < name_of(1_000));
    }

    #[test]
    fn object_is_about_one_kilobyte() {
        let size = bench_workload("default", 12_345).encoded_len();
        assert!((900..=1_200).contains(&size), "encoded size {size} B");
    }

    #[test]
    fn object_passes_admission() {
        for index in [0, 1, 49, 9_999] {
            let wl = bench_workload("default", index);
            if let Err(e) = hypermesh_api::validation::validate(&wl) {
                panic!("object {index} is invalid: {e}");
            }
        }
    }
}
