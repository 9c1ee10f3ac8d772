//! The `tls` benchmark: what the trust layer costs. One workload — C clients create
//! N Workloads, then get each — on a plaintext `--insecure-dev` apiserver and on a TLS
//! one as the admin (mTLS, authorization short-circuits for `system:masters`) and as an
//! editor (mTLS plus a full RBAC decision on every request), run one after the other;
//! then TLS handshakes per second with X25519MLKEM768 and with X25519 only, and
//! certificate issuance latency (`CertificateService.Issue`, CSR made beforehand).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hypermesh_api::client::Target;
use hypermesh_api::v1::{
    Certificate, IssueRequest, JoinResponse, ObjectMeta, RoleBinding, RoleBindingSpec, Subject,
    Workload,
};
use hypermesh_api::{Api, Resource};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::servers;
use crate::stats::{PhaseStats, format_count, format_duration};
use crate::workload::bench_workload;

/// Markers around the section this benchmark writes into BENCHMARKS.md.
const BEGIN: &str = "<!-- hm-bench tls: begin -->";
const END: &str = "<!-- hm-bench tls: end -->";

/// Arguments of `hm-bench tls`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Workloads each run creates and reads back.
    #[arg(long, default_value_t = 5_000)]
    pub objects: u32,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// TLS handshakes per key exchange group.
    #[arg(long, default_value_t = 1_000)]
    pub handshakes: u32,
    /// Certificates issued.
    #[arg(long, default_value_t = 300)]
    pub issuances: u32,
    /// The hm-apiserver binary (`cargo build --release -p hypermesh-apiserver`).
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: std::path::PathBuf,
    /// Seconds any start or phase may take.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Record the result in BENCHMARKS.md.
    #[arg(long)]
    pub write: bool,
    /// Where `--write` records.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks_file: std::path::PathBuf,
}

/// Creates then gets `n` Workloads with one client per channel; (create, get).
async fn crud(
    channels: Vec<tonic::transport::Channel>,
    n: usize,
) -> Result<(PhaseStats, PhaseStats)> {
    let clients: Vec<Api<Workload>> = channels.into_iter().map(Api::new).collect();
    let mut results = Vec::new();
    for phase in ["create", "get"] {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        let per = n.div_ceil(clients.len());
        for (c, api) in clients.iter().enumerate() {
            let api = api.clone();
            let range = (c * per)..((c + 1) * per).min(n);
            tasks.spawn(async move {
                let mut samples = Vec::with_capacity(range.len());
                for i in range {
                    let begin = Instant::now();
                    if phase == "create" {
                        api.create(&bench_workload("default", i)).await?;
                    } else {
                        api.get("default", bench_workload("default", i).meta().name.as_str())
                            .await?;
                    }
                    samples.push(begin.elapsed());
                }
                Ok::<_, tonic::Status>(samples)
            });
        }
        let mut samples = Vec::with_capacity(n);
        while let Some(done) = tasks.join_next().await {
            samples.extend(done.context("client task")?.context(phase)?);
        }
        results.push(PhaseStats::new(n as u64, started.elapsed(), samples));
    }
    let get = results.pop().context("get phase")?;
    let create = results.pop().context("create phase")?;
    Ok((create, get))
}

async fn channels(target: &Target, n: u32) -> Result<Vec<tonic::transport::Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(hypermesh_api::client::connect_to(target).await?);
    }
    Ok(out)
}

/// The admin of a TLS server: its target, the CA PEM and the admin's identity, from
/// the `admin.config` the server wrote.
fn admin_of(
    server: &servers::ServerProcess,
) -> Result<(Target, String, hypermesh_trust::tls::ClientIdentity)> {
    let path = server.data_dir().join("admin.config");
    let config = hypermesh_trust::client_config::ClientConfigFile::load(&path)?;
    let target = config.target(&path, Some(server.url()))?;
    let ca_pem = config
        .ca_pem(&path)?
        .context("admin.config has no certificateAuthority")?;
    let identity = hypermesh_trust::tls::ClientIdentity {
        cert_pem: config
            .client_certificate
            .context("admin.config has no clientCertificate")?,
        key_pem: config.client_key.context("admin.config has no clientKey")?,
    };
    Ok((target, ca_pem, identity))
}

/// An editor (RBAC) identity on the TLS server, issued through the admin.
async fn editor(admin: &tonic::transport::Channel, url: &str, ca_pem: &str) -> Result<Target> {
    Api::<RoleBinding>::new(admin.clone())
        .create(&RoleBinding {
            metadata: Some(ObjectMeta {
                name: "bench-editor".into(),
                ..Default::default()
            }),
            spec: Some(RoleBindingSpec {
                role: "editor".into(),
                subjects: vec![Subject {
                    kind: "User".into(),
                    name: "bench".into(),
                }],
                namespaces: vec!["default".into()],
            }),
            status: None,
        })
        .await?;
    let key = hypermesh_trust::pki::new_key()?;
    let issued: JoinResponse = Api::<Certificate>::new(admin.clone())
        .call(
            "Issue",
            IssueRequest {
                identity: "user:bench".into(),
                groups: Vec::new(),
                csr_pem: hypermesh_trust::pki::make_csr(&key, "user:bench")?,
                validity_hours: 1,
            },
        )
        .await?;
    let identity = hypermesh_trust::tls::ClientIdentity {
        cert_pem: issued.certificate_pem,
        key_pem: key.serialize_pem(),
    };
    let config = hypermesh_trust::tls::client_config(
        ca_pem,
        Some(&identity),
        hypermesh_trust::tls::provider(),
    )?;
    Ok(Target::tls(url, Arc::new(config)))
}

/// `count` full handshakes (TCP connect, TLS 1.3 with a client certificate, close)
/// with `config`, `concurrency` at a time: (stats, negotiated group).
async fn handshakes(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    count: u32,
    concurrency: u32,
) -> Result<(PhaseStats, String)> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let per = count.div_ceil(concurrency);
    for _ in 0..concurrency {
        let (connector, address) = (connector.clone(), address.to_string());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut group = String::new();
            for _ in 0..per {
                let begin = Instant::now();
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?;
                let mut tls = connector.connect(name, tcp).await?;
                samples.push(begin.elapsed());
                group = tls
                    .get_ref()
                    .1
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
                    .unwrap_or_default();
                let _ = tls.shutdown().await;
            }
            Ok::<_, std::io::Error>((samples, group))
        });
    }
    let mut samples = Vec::new();
    let mut group = String::new();
    while let Some(done) = tasks.join_next().await {
        let (s, g) = done.context("handshake task")?.context("handshake")?;
        samples.extend(s);
        group = g;
    }
    Ok((
        PhaseStats::new(samples.len() as u64, started.elapsed(), samples),
        group,
    ))
}

/// `count` certificate issuances, one at a time.
async fn issuances(admin: &tonic::transport::Channel, count: u32) -> Result<PhaseStats> {
    let api = Api::<Certificate>::new(admin.clone());
    let mut csrs = Vec::new();
    for i in 0..count {
        let key = hypermesh_trust::pki::new_key()?;
        csrs.push(hypermesh_trust::pki::make_csr(
            &key,
            &format!("user:bench-{i}"),
        )?);
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    for (i, csr) in csrs.into_iter().enumerate() {
        let begin = Instant::now();
        let _: JoinResponse = api
            .call(
                "Issue",
                IssueRequest {
                    identity: format!("user:bench-{i}"),
                    groups: Vec::new(),
                    csr_pem: csr,
                    validity_hours: 1,
                },
            )
            .await?;
        samples.push(begin.elapsed());
    }
    Ok(PhaseStats::new(
        u64::from(count),
        started.elapsed(),
        samples,
    ))
}

fn row(label: &str, stats: &PhaseStats, baseline: Option<&PhaseStats>) -> String {
    let ratio = baseline
        .map(|b| {
            format!(
                "{:.2}x",
                stats.throughput() / b.throughput().max(f64::MIN_POSITIVE)
            )
        })
        .unwrap_or_else(|| "1.00x".into());
    format!(
        "| {label} | {}/s | {ratio} | {} | {} |\n",
        format_count(stats.throughput()),
        format_duration(stats.p50),
        format_duration(stats.p99)
    )
}

/// Runs the benchmark, prints the tables, and records them with `--write`.
pub async fn run(args: TlsArgs) -> Result<()> {
    hypermesh_trust::tls::install_default_provider();
    let timeout = Duration::from_secs(args.timeout_secs);
    let n = args.objects as usize;

    eprintln!("hm-bench tls: plaintext (--insecure-dev) run");
    let plain_server =
        servers::start_apiserver(&args.apiserver, servers::Controllers::None, timeout).await?;
    let plain = crud(
        channels(&Target::insecure(plain_server.url()), args.concurrency).await?,
        n,
    )
    .await?;
    plain_server.stop().await?;

    eprintln!("hm-bench tls: TLS run as admin");
    let tls_server = servers::start_apiserver_tls(&args.apiserver, timeout).await?;
    let (admin_target, _, _) = admin_of(&tls_server)?;
    let as_admin = crud(channels(&admin_target, args.concurrency).await?, n).await?;
    tls_server.stop().await?;

    // A fresh server for the editor, so both runs create into an empty store.
    eprintln!("hm-bench tls: TLS run as editor (RBAC)");
    let tls_server = servers::start_apiserver_tls(&args.apiserver, timeout).await?;
    let (admin_target, ca_pem, identity) = admin_of(&tls_server)?;
    let admin_channel = hypermesh_api::client::connect_to(&admin_target).await?;
    let editor_target = editor(&admin_channel, tls_server.url(), &ca_pem).await?;
    let as_editor = crud(channels(&editor_target, args.concurrency).await?, n).await?;

    eprintln!("hm-bench tls: handshakes and issuance");
    let address = tls_server.url().trim_start_matches("https://").to_string();
    let hybrid = Arc::new(hypermesh_trust::tls::client_config(
        &ca_pem,
        Some(&identity),
        hypermesh_trust::tls::provider(),
    )?);
    let classic = Arc::new(hypermesh_trust::tls::client_config(
        &ca_pem,
        Some(&identity),
        hypermesh_trust::tls::classic_provider(),
    )?);
    let (hybrid_1, hybrid_group) = handshakes(&address, hybrid.clone(), args.handshakes, 1).await?;
    let (classic_1, classic_group) =
        handshakes(&address, classic.clone(), args.handshakes, 1).await?;
    let (hybrid_c, _) = handshakes(&address, hybrid, args.handshakes, args.concurrency).await?;
    let (classic_c, _) = handshakes(&address, classic, args.handshakes, args.concurrency).await?;
    let issued = issuances(&admin_channel, args.issuances).await?;
    tls_server.stop().await?;

    let overhead = |tls: &PhaseStats, base: &PhaseStats| {
        100.0 * (1.0 - tls.throughput() / base.throughput().max(f64::MIN_POSITIVE))
    };
    let mut out = format!(
        "{BEGIN}\n## Trust layer: mTLS, authorization, handshakes, issuance\n\n\
         `{}` — {}, {}{}.\n\n\
         {n} Workloads created then read back by {} concurrent clients (one connection each), \
         one server at a time on the same machine:\n\n\
         | run | throughput | vs plaintext | p50 | p99 |\n|---|---|---|---|---|\n",
        crate::report::command_line(),
        crate::report::today(),
        crate::report::machine_note(),
        crate::report::git_revision()
            .map(|r| format!(", commit {r}"))
            .unwrap_or_default(),
        args.concurrency,
    );
    out.push_str(&row("create, plaintext (`--insecure-dev`)", &plain.0, None));
    out.push_str(&row("create, mTLS as admin", &as_admin.0, Some(&plain.0)));
    out.push_str(&row(
        "create, mTLS as editor (RBAC)",
        &as_editor.0,
        Some(&plain.0),
    ));
    out.push_str(&row("get, plaintext (`--insecure-dev`)", &plain.1, None));
    out.push_str(&row("get, mTLS as admin", &as_admin.1, Some(&plain.1)));
    out.push_str(&row(
        "get, mTLS as editor (RBAC)",
        &as_editor.1,
        Some(&plain.1),
    ));
    out.push_str(&format!(
        "\nmTLS + authorization cost {:.1}% of plaintext create throughput and {:.1}% of get \
         throughput (editor); authorization alone (editor vs admin) {:.1}% / {:.1}%.\n\n",
        overhead(&as_editor.0, &plain.0),
        overhead(&as_editor.1, &plain.1),
        overhead(&as_editor.0, &as_admin.0),
        overhead(&as_editor.1, &as_admin.1),
    ));
    out.push_str(
        "Full handshakes (TCP connect + TLS 1.3 with client certificate, then close):\n\n\
         | key exchange | 1 at a time: handshakes/s | p50 | p99 | concurrent: handshakes/s |\n\
         |---|---|---|---|---|\n",
    );
    for (group, one, many) in [
        (&hybrid_group, &hybrid_1, &hybrid_c),
        (&classic_group, &classic_1, &classic_c),
    ] {
        out.push_str(&format!(
            "| {group} | {}/s | {} | {} | {}/s |\n",
            format_count(one.throughput()),
            format_duration(one.p50),
            format_duration(one.p99),
            format_count(many.throughput()),
        ));
    }
    out.push_str(&format!(
        "\nCertificate issuance (`CertificateService.Issue`, ECDSA P-256, recorded as a \
         Certificate object), {} one at a time: p50 {}, p99 {}, {}/s.\n{END}\n",
        issued.ops,
        format_duration(issued.p50),
        format_duration(issued.p99),
        format_count(issued.throughput()),
    ));
    println!("{out}");
    if args.write {
        let path = &args.benchmarks_file;
        let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
        let updated = match (existing.find(BEGIN), existing.find(END)) {
            (Some(b), Some(e)) if e > b => {
                let mut end = e + END.len();
                if existing[end..].starts_with('\n') {
                    end += 1;
                }
                format!("{}{out}{}", &existing[..b], &existing[end..])
            }
            _ => format!("{}\n{out}", existing.trim_end()),
        };
        std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("hm-bench tls: recorded in {}", path.display());
    }
    Ok(())
}
