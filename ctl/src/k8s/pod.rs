//! A Kubernetes pod template (`PodTemplateSpec`) as a HyperMesh `InstanceTemplate`:
//! containers (image, command, env, ports, resources, mounts, probes, user), volumes
//! (emptyDir, hostPath, secret), node selector, affinity, tolerations, restart policy,
//! priority and grace period. What has no HyperMesh counterpart is warned about.

use std::collections::BTreeMap;

use hypermesh_api::v1;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Warnings, match_labels};

type Error = (String, String);

/// `spec.template` (at `path`) as an InstanceTemplate.
pub(super) fn template(
    t: core::PodTemplateSpec,
    path: &str,
    w: &mut Warnings,
) -> Result<v1::InstanceTemplate, Error> {
    let meta = t.metadata.unwrap_or_default();
    let at = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    w.unhonoured(&at("metadata"), &meta, &["labels", "annotations", "name"]);
    let spec = t.spec.unwrap_or_default();
    let spec_path = at("spec");
    w.unhonoured(
        &spec_path,
        &spec,
        &[
            "containers",
            "volumes",
            "nodeSelector",
            "affinity",
            "tolerations",
            "restartPolicy",
            "priority",
            "terminationGracePeriodSeconds",
            "hostNetwork",
            "hostPID",
            "hostUsers",
            "securityContext",
        ],
    );
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    w.unhonoured(
        &format!("{spec_path}.securityContext"),
        &pod_sc,
        &["runAsUser", "runAsGroup"],
    );
    let shared = v1::SecurityContext {
        privileged: false,
        host_network: spec.host_network.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
        host_users: spec.host_users.unwrap_or(false),
    };

    let (volumes, dropped) = volumes(spec.volumes.unwrap_or_default(), &spec_path, w);
    let mut containers = Vec::new();
    for (i, c) in spec.containers.into_iter().enumerate() {
        let cpath = format!("{spec_path}.containers[{i}]");
        containers.push(container(c, &cpath, &pod_sc, &shared, &dropped, w)?);
    }
    Ok(v1::InstanceTemplate {
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        containers,
        volumes,
        node_selector: spec.node_selector.unwrap_or_default(),
        affinity: spec
            .affinity
            .map(|a| affinity(a, &format!("{spec_path}.affinity"), w)),
        tolerations: spec
            .tolerations
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| toleration(t, &format!("{spec_path}.tolerations[{i}]")))
            .collect::<Result<_, _>>()?,
        restart_policy: match spec.restart_policy.as_deref() {
            None | Some("Always") => v1::RestartPolicy::Always as i32,
            Some("OnFailure") => v1::RestartPolicy::OnFailure as i32,
            Some("Never") => v1::RestartPolicy::Never as i32,
            Some(other) => {
                return Err((
                    format!("{spec_path}.restartPolicy"),
                    format!("{other:?} is not Always, OnFailure or Never"),
                ));
            }
        },
        priority: spec.priority.unwrap_or_default(),
        termination_grace_period_seconds: spec.termination_grace_period_seconds.unwrap_or_default(),
        ..Default::default()
    })
}

/// The volumes HyperMesh has, and the names of those it dropped.
fn volumes(
    list: Vec<core::Volume>,
    spec_path: &str,
    w: &mut Warnings,
) -> (Vec<v1::Volume>, Vec<String>) {
    use v1::volume::Source;
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (i, v) in list.into_iter().enumerate() {
        let path = format!("{spec_path}.volumes[{i}]");
        let source = if let Some(e) = &v.empty_dir {
            if e.medium.is_some() || e.size_limit.is_some() {
                w.add(
                    &format!("{path}.emptyDir"),
                    "medium and sizeLimit are not supported; a plain directory on the node",
                );
            }
            Some(Source::EmptyDir(v1::EmptyDirVolume {}))
        } else if let Some(h) = &v.host_path {
            if h.type_.as_deref().is_some_and(|t| !t.is_empty()) {
                w.add(&format!("{path}.hostPath.type"), "not checked; ignored");
            }
            Some(Source::HostPath(v1::HostPathVolume {
                path: h.path.clone(),
            }))
        } else if let Some(s) = &v.secret {
            w.unhonoured(&format!("{path}.secret"), s, &["secretName"]);
            Some(Source::Secret(v1::SecretVolume {
                secret_name: s.secret_name.clone().unwrap_or_default(),
            }))
        } else {
            None
        };
        match source {
            Some(source) => kept.push(v1::Volume {
                name: v.name,
                source: Some(source),
            }),
            None => {
                w.add(
                    &path,
                    format!(
                        "volume {:?}: only emptyDir, hostPath and secret volumes are supported; \
                         it and its mounts are left out",
                        v.name
                    ),
                );
                dropped.push(v.name);
            }
        }
    }
    (kept, dropped)
}

fn container(
    c: core::Container,
    path: &str,
    pod_sc: &core::PodSecurityContext,
    shared: &v1::SecurityContext,
    dropped: &[String],
    w: &mut Warnings,
) -> Result<v1::Container, Error> {
    w.unhonoured(
        path,
        &c,
        &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "workingDir",
            "ports",
            "resources",
            "volumeMounts",
            "livenessProbe",
            "readinessProbe",
            "securityContext",
            "imagePullPolicy",
        ],
    );
    if let Some(policy) = c
        .image_pull_policy
        .as_deref()
        .filter(|p| *p != "IfNotPresent")
    {
        w.add(
            &format!("{path}.imagePullPolicy"),
            format!("{policy} is not supported: images are pulled when the node lacks them"),
        );
    }
    let mut env = Vec::new();
    for (i, e) in c.env.clone().unwrap_or_default().into_iter().enumerate() {
        let epath = format!("{path}.env[{i}]");
        let secret_key_ref = match e.value_from {
            None => None,
            Some(from) => match from.secret_key_ref {
                Some(r) => {
                    if r.optional == Some(true) {
                        w.add(
                            &format!("{epath}.valueFrom.secretKeyRef.optional"),
                            "not supported: the key must exist",
                        );
                    }
                    Some(v1::SecretKeyRef {
                        name: r.name,
                        key: r.key,
                    })
                }
                None => {
                    w.add(
                        &format!("{epath}.valueFrom"),
                        format!("only secretKeyRef is supported; {:?} is left out", e.name),
                    );
                    continue;
                }
            },
        };
        env.push(v1::EnvVar {
            name: e.name,
            value: e.value.unwrap_or_default(),
            secret_key_ref,
        });
    }
    let mut ports = Vec::new();
    for (i, p) in c.ports.clone().unwrap_or_default().into_iter().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        w.unhonoured(&ppath, &p, &["name", "containerPort", "protocol"]);
        ports.push(v1::ContainerPort {
            name: p.name.unwrap_or_default(),
            container_port: u32::try_from(p.container_port).map_err(|_| {
                (
                    format!("{ppath}.containerPort"),
                    format!("{} is not a port", p.container_port),
                )
            })?,
            protocol: protocol(p.protocol.as_deref(), &format!("{ppath}.protocol"), w)?,
        });
    }
    let mounts = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter(|(_, m)| !dropped.contains(&m.name))
        .map(|(i, m)| {
            let mpath = format!("{path}.volumeMounts[{i}]");
            w.unhonoured(&mpath, &m, &["name", "mountPath", "readOnly"]);
            v1::VolumeMount {
                name: m.name,
                mount_path: m.mount_path,
                read_only: m.read_only.unwrap_or(false),
            }
        })
        .collect();
    let sc = c.security_context.clone().unwrap_or_default();
    w.unhonoured(
        &format!("{path}.securityContext"),
        &sc,
        &["runAsUser", "runAsGroup", "privileged"],
    );
    let uid = sc.run_as_user.or(pod_sc.run_as_user);
    let gid = sc.run_as_group.or(pod_sc.run_as_group);
    let user = match (uid, gid) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.to_string(),
        (None, Some(g)) => {
            w.add(
                &format!("{path}.securityContext.runAsGroup"),
                format!("without runAsUser: running as 0:{g}"),
            );
            format!("0:{g}")
        }
        (None, None) => String::new(),
    };
    let ports_by_name: BTreeMap<String, u32> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u32::try_from(p.container_port).ok()?)))
        .collect();
    Ok(v1::Container {
        name: c.name,
        image: c.image.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        env,
        working_dir: c.working_dir.unwrap_or_default(),
        ports,
        resources: Some(resources(
            c.resources.unwrap_or_default(),
            &format!("{path}.resources"),
            w,
        )),
        volume_mounts: mounts,
        liveness_probe: c
            .liveness_probe
            .map(|p| probe(p, &format!("{path}.livenessProbe"), &ports_by_name, w))
            .transpose()?,
        readiness_probe: c
            .readiness_probe
            .map(|p| probe(p, &format!("{path}.readinessProbe"), &ports_by_name, w))
            .transpose()?,
        user,
        security_context: Some(v1::SecurityContext {
            privileged: sc.privileged.unwrap_or(false),
            ..*shared
        })
        .filter(|s| *s != v1::SecurityContext::default()),
    })
}

/// Kubernetes requests and limits as HyperMesh's one value per resource: the request
/// (what scheduling reserves), else the limit.
fn resources(
    r: core::ResourceRequirements,
    path: &str,
    w: &mut Warnings,
) -> v1::ResourceRequirements {
    let requests = r.requests.unwrap_or_default();
    let limits = r.limits.unwrap_or_default();
    let mut out = v1::ResourceRequirements::default();
    let names: std::collections::BTreeSet<&String> = requests.keys().chain(limits.keys()).collect();
    for name in names {
        let (request, limit) = (requests.get(name), limits.get(name));
        let Some(Quantity(value)) = request.or(limit) else {
            continue;
        };
        if let (Some(Quantity(req)), Some(Quantity(lim))) = (request, limit)
            && req != lim
        {
            w.add(
                &format!("{path}.limits.{name}"),
                format!("HyperMesh has one value per resource: using the request {req}, not the limit {lim}"),
            );
        }
        let slot = match name.as_str() {
            "cpu" => &mut out.cpu,
            "memory" => &mut out.memory,
            "nvidia.com/gpu" | "gpu" => &mut out.gpu,
            "ephemeral-storage" => &mut out.storage,
            other => {
                w.add(
                    &format!("{path}.{other}"),
                    "not a HyperMesh resource; ignored",
                );
                continue;
            }
        };
        *slot = value.clone();
    }
    out
}

fn probe(
    p: core::Probe,
    path: &str,
    ports: &BTreeMap<String, u32>,
    w: &mut Warnings,
) -> Result<v1::Probe, Error> {
    w.unhonoured(
        path,
        &p,
        &[
            "exec",
            "tcpSocket",
            "httpGet",
            "grpc",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "successThreshold",
        ],
    );
    let port = |v: &IntOrString, at: &str| -> Result<u32, Error> {
        match v {
            IntOrString::Int(i) => {
                u32::try_from(*i).map_err(|_| (at.to_string(), format!("{i} is not a port")))
            }
            IntOrString::String(name) => ports.get(name).copied().ok_or_else(|| {
                (
                    at.to_string(),
                    format!("no container port is named {name:?}"),
                )
            }),
        }
    };
    let (exec, tcp) = if let Some(e) = p.exec {
        (
            Some(v1::ExecAction {
                command: e.command.unwrap_or_default(),
            }),
            None,
        )
    } else if let Some(t) = p.tcp_socket {
        (
            None,
            Some(v1::TcpSocketAction {
                port: port(&t.port, &format!("{path}.tcpSocket.port"))?,
            }),
        )
    } else if let Some(h) = p.http_get {
        let n = port(&h.port, &format!("{path}.httpGet.port"))?;
        w.add(
            &format!("{path}.httpGet"),
            format!("HTTP probes are not supported: checked as a TCP connect to port {n}"),
        );
        (None, Some(v1::TcpSocketAction { port: n }))
    } else if let Some(g) = p.grpc {
        let n = u32::try_from(g.port).unwrap_or_default();
        w.add(
            &format!("{path}.grpc"),
            format!("gRPC probes are not supported: checked as a TCP connect to port {n}"),
        );
        (None, Some(v1::TcpSocketAction { port: n }))
    } else {
        return Err((
            path.to_string(),
            "needs exec, tcpSocket, httpGet or grpc".into(),
        ));
    };
    let secs = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or_default();
    Ok(v1::Probe {
        exec,
        tcp_socket: tcp,
        initial_delay_seconds: secs(p.initial_delay_seconds),
        period_seconds: secs(p.period_seconds),
        timeout_seconds: secs(p.timeout_seconds),
        failure_threshold: secs(p.failure_threshold),
        success_threshold: secs(p.success_threshold),
    })
}

/// TCP (default) or UDP; SCTP has no HyperMesh counterpart.
pub(super) fn protocol(p: Option<&str>, path: &str, w: &mut Warnings) -> Result<i32, Error> {
    Ok(match p {
        None | Some("TCP") => v1::Protocol::Tcp as i32,
        Some("UDP") => v1::Protocol::Udp as i32,
        Some("SCTP") => {
            w.add(path, "SCTP is not supported; treated as TCP");
            v1::Protocol::Tcp as i32
        }
        Some(other) => {
            return Err((
                path.to_string(),
                format!("{other:?} is not TCP, UDP or SCTP"),
            ));
        }
    })
}

fn toleration(t: core::Toleration, path: &str) -> Result<v1::Toleration, Error> {
    let effect = match t.effect.as_deref() {
        None | Some("") => v1::TaintEffect::Unspecified,
        Some("NoSchedule") => v1::TaintEffect::NoSchedule,
        Some("PreferNoSchedule") => v1::TaintEffect::PreferNoSchedule,
        Some("NoExecute") => v1::TaintEffect::NoExecute,
        Some(other) => {
            return Err((
                format!("{path}.effect"),
                format!("{other:?} is not NoSchedule, PreferNoSchedule or NoExecute"),
            ));
        }
    };
    Ok(v1::Toleration {
        key: t.key.unwrap_or_default(),
        operator: t.operator.unwrap_or_else(|| "Equal".into()),
        value: t.value.unwrap_or_default(),
        effect: effect as i32,
        toleration_seconds: t.toleration_seconds.unwrap_or_default(),
    })
}

/// Required node affinity (one term) and required instance (anti-)affinity; the
/// preferred kinds are warned about.
fn affinity(a: core::Affinity, path: &str, w: &mut Warnings) -> v1::Affinity {
    let mut out = v1::Affinity::default();
    if let Some(node) = a.node_affinity {
        let npath = format!("{path}.nodeAffinity");
        w.unhonoured(
            &npath,
            &node,
            &["requiredDuringSchedulingIgnoredDuringExecution"],
        );
        if let Some(required) = node.required_during_scheduling_ignored_during_execution {
            let mut terms = required.node_selector_terms.into_iter();
            if let Some(first) = terms.next() {
                if terms.next().is_some() {
                    w.add(
                        &format!("{npath}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"),
                        "only the first term is used (HyperMesh has no OR of terms)",
                    );
                }
                if first.match_fields.is_some() {
                    w.add(&format!("{npath}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields"), "not supported; ignored");
                }
                out.node_affinity = Some(v1::NodeAffinity {
                    required: first
                        .match_expressions
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| v1::NodeSelectorRequirement {
                            key: r.key,
                            operator: r.operator,
                            values: r.values.unwrap_or_default(),
                        })
                        .collect(),
                });
            }
        }
    }
    let terms = |list: Option<Vec<core::PodAffinityTerm>>, at: &str, w: &mut Warnings| {
        list.unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let tpath = format!("{at}[{i}]");
                w.unhonoured(&tpath, &t, &["labelSelector", "topologyKey"]);
                v1::InstanceAffinityTerm {
                    label_selector: match_labels(
                        t.label_selector,
                        &format!("{tpath}.labelSelector"),
                        w,
                    ),
                    topology_key: t.topology_key,
                }
            })
            .collect::<Vec<_>>()
    };
    if let Some(pa) = a.pod_affinity {
        let ppath = format!("{path}.podAffinity");
        w.unhonoured(
            &ppath,
            &pa,
            &["requiredDuringSchedulingIgnoredDuringExecution"],
        );
        out.instance_affinity = terms(
            pa.required_during_scheduling_ignored_during_execution,
            &format!("{ppath}.requiredDuringSchedulingIgnoredDuringExecution"),
            w,
        );
    }
    if let Some(pa) = a.pod_anti_affinity {
        let ppath = format!("{path}.podAntiAffinity");
        w.unhonoured(
            &ppath,
            &pa,
            &["requiredDuringSchedulingIgnoredDuringExecution"],
        );
        out.instance_anti_affinity = terms(
            pa.required_during_scheduling_ignored_during_execution,
            &format!("{ppath}.requiredDuringSchedulingIgnoredDuringExecution"),
            w,
        );
    }
    out
}
