//! Readiness and liveness probes of a running container, with Kubernetes semantics: the
//! first check after `initialDelaySeconds`, then one every `periodSeconds`, each given
//! `timeoutSeconds`; the result flips after `successThreshold` consecutive successes or
//! `failureThreshold` consecutive failures. A container starts not ready and alive.
//!
//! A TCP probe connects to `127.0.0.1:<port>` inside the container's network namespace
//! (containers have a private one): a short-lived thread enters the namespace of the
//! task's init process and connects from there, so the agent's own threads never move.
//! An exec probe runs its command in the container ([`exec::run_captured`]); exit code 0
//! is success. A check that cannot ask containerd (it is restarting) counts neither way,
//! so a runtime outage neither makes running containers unready nor restarts them.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use hypermesh_api::v1;

use hypermesh_containers::{self as containers, ContainerdClient, container, exec};

/// Kubernetes' defaults for the fields left 0.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// How much of an exec probe's output a failure message quotes.
const MAX_OUTPUT_CHARS: usize = 256;

/// Why a probe in a container spec cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Neither or both of exec and tcpSocket are set.
    #[error("{0}: set exactly one of exec or tcpSocket")]
    Action(String),
    /// An exec probe without a command.
    #[error("{0}.exec.command: required")]
    NoCommand(String),
    /// A TCP port of 0 or above 65535.
    #[error("{field}.tcpSocket.port: {port} is not a port (1-65535)")]
    Port { field: String, port: u32 },
    /// A liveness probe with a success threshold other than 1.
    #[error("{0}.successThreshold: must be 1 for a liveness probe")]
    LivenessSuccessThreshold(String),
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A TCP connection to 127.0.0.1:port in the container's network namespace.
    Tcp { port: u16 },
    /// A command run in the container; exit code 0 is success.
    Exec { command: Vec<String> },
}

/// Readiness (gates the Ready condition) or liveness (restarts the container).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Readiness,
    Liveness,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Readiness => "readinessProbe",
            Kind::Liveness => "livenessProbe",
        }
    }
}

/// One probe with its defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl ProbeSpec {
    /// Applies the defaults to `probe`; `field` (e.g. `containers[0].livenessProbe`)
    /// names it in errors.
    pub fn from_api(probe: &v1::Probe, kind: Kind, field: &str) -> Result<ProbeSpec, ProbeError> {
        let action = match (&probe.exec, &probe.tcp_socket) {
            (Some(exec), None) if exec.command.is_empty() => {
                return Err(ProbeError::NoCommand(field.to_string()));
            }
            (Some(exec), None) => Action::Exec {
                command: exec.command.clone(),
            },
            (None, Some(tcp)) => Action::Tcp {
                port: u16::try_from(tcp.port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ProbeError::Port {
                        field: field.to_string(),
                        port: tcp.port,
                    })?,
            },
            _ => return Err(ProbeError::Action(field.to_string())),
        };
        if kind == Kind::Liveness && probe.success_threshold > 1 {
            return Err(ProbeError::LivenessSuccessThreshold(field.to_string()));
        }
        let seconds = |s: u32, default: Duration| {
            if s == 0 {
                default
            } else {
                Duration::from_secs(u64::from(s))
            }
        };
        let or = |n: u32, default: u32| if n == 0 { default } else { n };
        Ok(ProbeSpec {
            action,
            initial_delay: Duration::from_secs(u64::from(probe.initial_delay_seconds)),
            period: seconds(probe.period_seconds, DEFAULT_PERIOD),
            timeout: seconds(probe.timeout_seconds, DEFAULT_TIMEOUT),
            failure_threshold: or(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
            success_threshold: or(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
        })
    }
}

/// Counts consecutive results against the thresholds.
#[derive(Clone, Debug)]
pub struct Tracker {
    healthy: bool,
    run: u32,
    last: Option<bool>,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Tracker {
    /// Readiness starts failed (not ready), liveness succeeded (alive).
    pub fn new(kind: Kind, spec: &ProbeSpec) -> Tracker {
        Tracker {
            healthy: kind == Kind::Liveness,
            run: 0,
            last: None,
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
        }
    }

    /// The current result.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Records one check; returns the new result when it flipped.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if ok != self.healthy && self.run >= threshold {
            self.healthy = ok;
            return Some(ok);
        }
        None
    }
}

/// The container a probe checks.
#[derive(Clone, Debug)]
pub struct Target {
    pub client: ContainerdClient,
    pub container_id: String,
}

/// A flip of a probe's result, with the last check's failure (empty on success).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub healthy: bool,
    pub message: String,
}

/// One probe of one container run, checking on its schedule.
#[derive(Debug)]
pub struct Prober {
    spec: ProbeSpec,
    tracker: Tracker,
    ticks: Option<tokio::time::Interval>,
}

impl Prober {
    pub fn new(kind: Kind, spec: ProbeSpec) -> Prober {
        Prober {
            tracker: Tracker::new(kind, &spec),
            spec,
            ticks: None,
        }
    }

    /// Checks on schedule until the result flips.
    pub async fn next_change(&mut self, target: &Target) -> Change {
        loop {
            let ticks = match &mut self.ticks {
                Some(ticks) => ticks,
                None => {
                    tokio::time::sleep(self.spec.initial_delay).await;
                    let mut ticks = tokio::time::interval(self.spec.period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    self.ticks.insert(ticks)
                }
            };
            ticks.tick().await;
            let (ok, message) = match check(&self.spec.action, target, self.spec.timeout).await {
                Checked::Passed => (true, String::new()),
                Checked::Failed(why) => (false, why),
                Checked::Unknown(why) => {
                    tracing::debug!(container = %target.container_id, why, "probe skipped: containerd unreachable");
                    continue;
                }
            };
            if let Some(healthy) = self.tracker.record(ok) {
                return Change { healthy, message };
            }
        }
    }
}

/// The probes of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerProbes {
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
}

impl ContainerProbes {
    /// The probes of container `index` of a spec.
    pub fn of(index: usize, c: &v1::Container) -> Result<ContainerProbes, ProbeError> {
        let spec = |probe: &Option<v1::Probe>, kind: Kind| {
            probe
                .as_ref()
                .map(|p| {
                    ProbeSpec::from_api(p, kind, &format!("containers[{index}].{}", kind.field()))
                })
                .transpose()
        };
        Ok(ContainerProbes {
            readiness: spec(&c.readiness_probe, Kind::Readiness)?,
            liveness: spec(&c.liveness_probe, Kind::Liveness)?,
        })
    }

    /// Runs both probes against `target`, calling `on_ready` whenever readiness flips
    /// (never, without a readiness probe: the container is ready while it runs). Returns
    /// when the liveness probe fails, with `Liveness probe failed: <why>`; never without
    /// a liveness probe.
    pub async fn run<F, Fut>(&self, target: &Target, on_ready: F) -> String
    where
        F: FnMut(bool, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let liveness = async {
            let Some(spec) = &self.liveness else {
                return std::future::pending().await;
            };
            let mut prober = Prober::new(Kind::Liveness, spec.clone());
            loop {
                let change = prober.next_change(target).await;
                if !change.healthy {
                    return format!("Liveness probe failed: {}", change.message);
                }
            }
        };
        tokio::select! {
            never = report_readiness(self.readiness.as_ref(), target, on_ready) => match never {},
            failure = liveness => failure,
        }
    }
}

async fn report_readiness<F, Fut>(
    spec: Option<&ProbeSpec>,
    target: &Target,
    mut on_ready: F,
) -> Infallible
where
    F: FnMut(bool, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(spec) = spec else {
        return std::future::pending().await;
    };
    let mut prober = Prober::new(Kind::Readiness, spec.clone());
    loop {
        let change = prober.next_change(target).await;
        on_ready(change.healthy, change.message).await;
    }
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The probe passed.
    Passed,
    /// The probe failed: why.
    Failed(String),
    /// containerd could not be asked (stopped, restarting): no result.
    Unknown(String),
}

impl From<Result<(), String>> for Checked {
    fn from(result: Result<(), String>) -> Checked {
        match result {
            Ok(()) => Checked::Passed,
            Err(why) => Checked::Failed(why),
        }
    }
}

/// One check. A check that failed while the container itself was ending (killed, or
/// exited) counts neither way: the exec'd command was killed with it, hung, or could
/// not start, which says nothing about the container's health, and counting it would
/// blame the probe for an end that had other causes.
pub async fn check(action: &Action, target: &Target, timeout: Duration) -> Checked {
    match check_once(action, target, timeout).await {
        Checked::Failed(why) if container_ended(target).await => {
            Checked::Unknown(format!("the container stopped while the check ran: {why}"))
        }
        checked => checked,
    }
}

async fn check_once(action: &Action, target: &Target, timeout: Duration) -> Checked {
    match action {
        Action::Tcp { port } => match container::pid(&target.client, &target.container_id).await {
            Ok(pid) => tcp_in_netns(pid, *port, timeout).await.into(),
            Err(e) if e.is_unreachable() => Checked::Unknown(e.to_string()),
            Err(e) => Checked::Failed(format!("the container's task: {e}")),
        },
        Action::Exec { command } => exec_in_container(target, command, timeout).await,
    }
}

/// Runs `command` in the container: exit code 0 is success.
async fn exec_in_container(target: &Target, command: &[String], timeout: Duration) -> Checked {
    match exec::run_captured(&target.client, &target.container_id, command, timeout).await {
        Ok(done) if done.exit_code == 0 => Checked::Passed,
        Ok(done) => {
            let output = String::from_utf8_lossy(&done.output);
            let output = output.trim();
            let mut message = format!("command {command:?} exited with {}", done.exit_code);
            if !output.is_empty() {
                let cut = output
                    .char_indices()
                    .nth(MAX_OUTPUT_CHARS)
                    .map_or(output.len(), |(at, _)| at);
                message.push_str(": ");
                message.push_str(&output[..cut]);
            }
            Checked::Failed(message)
        }
        Err(containers::Error::Timeout(after)) => {
            Checked::Failed(format!("command {command:?} timed out after {after:?}"))
        }
        Err(e) if e.is_unreachable() => Checked::Unknown(e.to_string()),
        Err(e) => Checked::Failed(format!("command {command:?}: {e}")),
    }
}

/// Whether the container's init process is gone or dying (a zombie not yet reaped),
/// or goes within [`ENDING_GRACE`]: a kill of the container can reach the exec'd
/// process a moment before its init has exited.
async fn container_ended(target: &Target) -> bool {
    let pid = match container::pid(&target.client, &target.container_id).await {
        Ok(pid) => pid,
        Err(_) => return true,
    };
    let deadline = tokio::time::Instant::now() + ENDING_GRACE;
    loop {
        if !process_alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a probe killed by a signal waits to see whether its container is ending.
const ENDING_GRACE: Duration = Duration::from_millis(300);

/// Whether process `pid` exists and is neither a zombie nor dead (`/proc/PID/stat`).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

/// Connects to 127.0.0.1:`port` in the network namespace of process `pid`.
async fn tcp_in_netns(pid: u32, port: u16, timeout: Duration) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: it leaves the host's network namespace and ends with the
    // check, so no other work ever runs in the container's namespace.
    std::thread::Builder::new()
        .name("hm-tcp-probe".into())
        .spawn(move || {
            let _ = tx.send(connect_in_netns(pid, port, timeout));
        })
        .map_err(|e| format!("starting the probe thread: {e}"))?;
    // connect_timeout bounds the thread; the outer timeout is a backstop.
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the probe thread ended without a result".into()),
        Err(_) => Err(format!(
            "dial tcp 127.0.0.1:{port}: timed out after {timeout:?}"
        )),
    }
}

fn connect_in_netns(pid: u32, port: u16, timeout: Duration) -> Result<(), String> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| format!("entering the network namespace of pid {pid}: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("dial tcp {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u32) -> v1::Probe {
        v1::Probe {
            tcp_socket: Some(v1::TcpSocketAction { port }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let spec = ProbeSpec::from_api(&tcp(8080), Kind::Readiness, "p").expect("spec");
        assert_eq!(
            spec,
            ProbeSpec {
                action: Action::Tcp { port: 8080 },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
                success_threshold: 1,
            }
        );
        let probe = v1::Probe {
            exec: Some(v1::ExecAction {
                command: vec!["test".into(), "-f".into(), "/tmp/ready".into()],
            }),
            initial_delay_seconds: 5,
            period_seconds: 2,
            timeout_seconds: 3,
            failure_threshold: 1,
            success_threshold: 2,
            ..Default::default()
        };
        let spec = ProbeSpec::from_api(&probe, Kind::Readiness, "p").expect("spec");
        assert_eq!(spec.initial_delay, Duration::from_secs(5));
        assert_eq!(spec.period, Duration::from_secs(2));
        assert_eq!(spec.timeout, Duration::from_secs(3));
        assert_eq!((spec.failure_threshold, spec.success_threshold), (1, 2));
    }

    #[test]
    fn unusable_probes_name_the_field() {
        let err = |p: &v1::Probe, kind| {
            ProbeSpec::from_api(p, kind, "containers[1].livenessProbe")
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            err(&tcp(0), Kind::Liveness),
            "containers[1].livenessProbe.tcpSocket.port: 0 is not a port (1-65535)"
        );
        assert!(err(&tcp(70_000), Kind::Liveness).contains("70000"));
        assert!(err(&v1::Probe::default(), Kind::Liveness).contains("exactly one"));
        let mut p = tcp(80);
        p.success_threshold = 2;
        assert!(err(&p, Kind::Liveness).contains("successThreshold"));
        assert!(ProbeSpec::from_api(&p, Kind::Readiness, "r").is_ok());
        let p = v1::Probe {
            exec: Some(v1::ExecAction { command: vec![] }),
            ..Default::default()
        };
        assert!(err(&p, Kind::Liveness).contains("exec.command"));
    }

    fn spec(failure_threshold: u32, success_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            action: Action::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold,
            success_threshold,
        }
    }

    #[test]
    fn readiness_needs_success_threshold_successes_in_a_row() {
        let mut t = Tracker::new(Kind::Readiness, &spec(3, 2));
        assert!(!t.healthy(), "not ready before the first success");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "already not ready");
        assert_eq!(t.record(true), None, "the run restarted");
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "two failures are not three");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.healthy());
    }

    #[test]
    fn liveness_fails_after_failure_threshold_failures_in_a_row() {
        let mut t = Tracker::new(Kind::Liveness, &spec(2, 1));
        assert!(t.healthy(), "alive until proven otherwise");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn probes_of_a_container() {
        let c = v1::Container {
            readiness_probe: Some(tcp(8080)),
            ..Default::default()
        };
        let probes = ContainerProbes::of(0, &c).expect("probes");
        assert!(probes.liveness.is_none());
        assert_eq!(
            probes.readiness.map(|p| p.action),
            Some(Action::Tcp { port: 8080 })
        );
        let c = v1::Container {
            liveness_probe: Some(tcp(0)),
            ..Default::default()
        };
        assert!(
            ContainerProbes::of(2, &c)
                .expect_err("bad port")
                .to_string()
                .starts_with("containers[2].livenessProbe.tcpSocket.port")
        );
    }
}
