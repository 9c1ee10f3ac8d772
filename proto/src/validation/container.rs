//! One container of an Instance or template: name, image, environment, ports,
//! resources, volume mounts and probes (whose intervals are bounded).

use std::collections::BTreeSet;

use crate::reason::Reason;
use crate::time::MAX_PROBE_INTERVAL;
use crate::v1;

use super::FieldErrors;
use super::fields::{check_enum, check_port, check_quantity, clean_absolute_path_problem};
use super::names::dns_label_problem;
use super::time::check_seconds;

/// Checks the name of the container at `path` (`spec.containers[0]`).
pub(super) fn check_container_name(errs: &mut FieldErrors, path: &str, c: &v1::Container) {
    if let Some(problem) = dns_label_problem(&c.name) {
        let reason = if c.name.is_empty() {
            Reason::FieldRequired
        } else {
            Reason::NameInvalid
        };
        errs.push(format!("{path}.name"), reason, problem);
    }
}

/// Checks the rest of `c` at `path`; `volumes` are the names declared.
pub(super) fn check_container(
    errs: &mut FieldErrors,
    path: &str,
    c: &v1::Container,
    volumes: &BTreeSet<&str>,
) {
    if c.image.trim().is_empty() {
        errs.push(
            format!("{path}.image"),
            Reason::FieldRequired,
            "must not be empty",
        );
    } else if c.image.chars().any(char::is_whitespace) {
        errs.invalid(
            format!("{path}.image"),
            format!("{:?} must not contain whitespace", c.image),
        );
    }
    check_env(errs, path, &c.env);
    check_ports(errs, path, &c.ports);
    if let Some(r) = &c.resources {
        check_resources(errs, &format!("{path}.resources"), r);
    }
    check_mounts(errs, path, &c.volume_mounts, volumes);
    if let Some(probe) = &c.liveness_probe {
        check_probe(errs, &format!("{path}.livenessProbe"), probe, true);
    }
    if let Some(probe) = &c.readiness_probe {
        check_probe(errs, &format!("{path}.readinessProbe"), probe, false);
    }
}

fn check_env(errs: &mut FieldErrors, path: &str, env: &[v1::EnvVar]) {
    for (j, e) in env.iter().enumerate() {
        let ep = format!("{path}.env[{j}]");
        let valid = !e.name.is_empty()
            && !e.name.starts_with(|ch: char| ch.is_ascii_digit())
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            errs.invalid(
                format!("{ep}.name"),
                format!("{:?} is not a valid environment variable name", e.name),
            );
        }
        if let Some(r) = &e.secret_key_ref {
            if r.name.is_empty() {
                errs.required(format!("{ep}.secretKeyRef.name"));
            }
            if r.key.is_empty() {
                errs.required(format!("{ep}.secretKeyRef.key"));
            }
        }
    }
}

fn check_ports(errs: &mut FieldErrors, path: &str, ports: &[v1::ContainerPort]) {
    let mut seen = BTreeSet::new();
    for (j, port) in ports.iter().enumerate() {
        let pp = format!("{path}.ports[{j}]");
        check_port(errs, &format!("{pp}.containerPort"), port.container_port);
        check_enum::<v1::Protocol>(errs, &format!("{pp}.protocol"), port.protocol, false);
        if !seen.insert((port.container_port, port.protocol)) {
            errs.invalid(
                format!("{pp}.containerPort"),
                format!("duplicate port {}", port.container_port),
            );
        }
    }
}

fn check_resources(errs: &mut FieldErrors, path: &str, r: &v1::ResourceRequirements) {
    check_quantity(errs, &format!("{path}.cpu"), &r.cpu);
    check_quantity(errs, &format!("{path}.memory"), &r.memory);
    check_quantity(errs, &format!("{path}.storage"), &r.storage);
    check_quantity(errs, &format!("{path}.gpuMemory"), &r.gpu_memory);
    check_quantity(errs, &format!("{path}.gpu"), &r.gpu);
}

fn check_mounts(
    errs: &mut FieldErrors,
    path: &str,
    mounts: &[v1::VolumeMount],
    volumes: &BTreeSet<&str>,
) {
    let mut mount_paths = BTreeSet::new();
    for (j, m) in mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{j}]");
        if !volumes.contains(m.name.as_str()) {
            errs.invalid(
                format!("{mp}.name"),
                format!("no volume named {:?} in volumes", m.name),
            );
        }
        if m.mount_path.is_empty() {
            errs.required(format!("{mp}.mountPath"));
        } else if let Some(problem) = clean_absolute_path_problem(&m.mount_path) {
            errs.invalid(format!("{mp}.mountPath"), problem);
        } else if !mount_paths.insert(m.mount_path.trim_end_matches('/')) {
            errs.invalid(
                format!("{mp}.mountPath"),
                format!("{:?} is mounted more than once", m.mount_path),
            );
        }
    }
}

fn check_probe(errs: &mut FieldErrors, path: &str, p: &v1::Probe, liveness: bool) {
    match (&p.exec, &p.tcp_socket) {
        (Some(exec), None) if exec.command.is_empty() => {
            errs.required(format!("{path}.exec.command"))
        }
        (None, Some(tcp)) => check_port(errs, &format!("{path}.tcpSocket.port"), tcp.port),
        (Some(_), None) => {}
        _ => errs.invalid(path, "set exactly one of exec or tcpSocket"),
    }
    if liveness && p.success_threshold > 1 {
        errs.invalid(
            format!("{path}.successThreshold"),
            format!("{} must be 1 for a liveness probe", p.success_threshold),
        );
    }
    for (field, seconds) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("periodSeconds", p.period_seconds),
        ("timeoutSeconds", p.timeout_seconds),
    ] {
        check_seconds(
            errs,
            &format!("{path}.{field}"),
            i64::from(seconds),
            0,
            MAX_PROBE_INTERVAL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_intervals_are_bounded() {
        let probe = v1::Probe {
            tcp_socket: Some(v1::TcpSocketAction { port: 8080 }),
            initial_delay_seconds: 5,
            period_seconds: u32::MAX,
            timeout_seconds: 3601,
            ..Default::default()
        };
        let mut errs = FieldErrors::default();
        check_probe(&mut errs, "p", &probe, false);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["p.periodSeconds", "p.timeoutSeconds"]);
    }
}
