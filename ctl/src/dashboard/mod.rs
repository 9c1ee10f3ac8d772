//! `hmctl dashboard`: a web page about the cluster, served by hmctl itself on
//! 127.0.0.1 (as `kubectl proxy` serves the API) and opened in the browser.
//!
//! Every API call the page causes is made by this process with the user's own config
//! (server, CA and client certificate), so the page sees and does exactly what the
//! user may; the write buttons are offered only when the apiserver's access review
//! says so, and the apiserver checks each write again anyway.
//!
//! # Layout
//! - [`guard`]: who may drive the local server (Host check, per-launch token, origin).
//! - [`routes`]: the page (embedded with `include_str!`, no build step) and the JSON API.
//! - [`live`]: server-sent events fed by watches, and the usage history.
//! - [`logs`]: an Instance's log, read once or followed live.

pub mod guard;
pub mod live;
pub mod logs;
pub mod routes;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{Context, Exit};
use guard::Guard;
use live::History;
use routes::Dashboard;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `hmctl dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Local port to serve on, on 127.0.0.1 (0: any free port)
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Print the URL but do not open a browser
    #[arg(long)]
    pub no_open: bool,
    /// How often the usage chart gets a new point (e.g. 5s, 1m)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::duration::parse_duration)]
    pub sample_every: Duration,
}

/// Runs `hmctl dashboard` until Ctrl-C.
pub async fn run(ctx: &Context, args: &DashboardArgs) -> Result<Exit> {
    let channel = ctx.connect().await?;
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    let guard = Guard::new(port);
    let url = guard.url();
    let history = History::default();
    let sample_every = args.sample_every.max(Duration::from_millis(100));
    let sampler = tokio::spawn(live::sample_usage(
        channel.clone(),
        namespace.clone(),
        sample_every,
        history.clone(),
    ));
    let dashboard = Arc::new(Dashboard {
        guard,
        channel,
        namespace: namespace.clone(),
        history,
        sample_every,
    });
    crate::output::print(&format!(
        "Serving the dashboard of namespace {namespace:?} on {url}\n"
    ))?;
    eprintln!("Only this URL (it carries a one-time secret) opens the page; Ctrl-C stops it.");
    let launcher = if args.no_open {
        None
    } else {
        open_browser(&url, port)
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    serve(listener, dashboard, shutdown).await;
    sampler.abort();
    if let Some(path) = launcher {
        let _ = std::fs::remove_file(path);
    }
    Ok(Exit::Success)
}

/// Serves `dashboard` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, dashboard: Arc<Dashboard>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let (dashboard, shutdown) = (dashboard.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let dashboard = dashboard.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(routes::handle(dashboard, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// Opens the page in the user's browser without putting the token on a command line
/// (which other local users can read in /proc): `xdg-open` gets a file, readable by
/// the user only, that redirects to the URL. Returns that file, to remove at exit.
fn open_browser(url: &str, port: u16) -> Option<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "hmctl-dashboard-{port}-{}.html",
        std::process::id()
    ));
    let page = format!(
        "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><a href=\"{url}\">HyperMesh dashboard</a>\n"
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(page.as_bytes()));
    if let Err(e) = written {
        eprintln!("could not prepare the browser launch ({e}); open the URL above yourself");
        return None;
    }
    match std::process::Command::new("xdg-open")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => Some(path),
        Err(e) => {
            eprintln!("could not start a browser (xdg-open: {e}); open the URL above yourself");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}
