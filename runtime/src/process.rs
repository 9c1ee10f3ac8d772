//! What every HyperMesh binary does first: log to stderr, turn SIGTERM/SIGINT into
//! one cancellation token passed down to everything it runs, and (for binaries whose
//! every part is essential) exit non-zero on any panic.

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs to stderr with the filter from `HM_LOG` (else `RUST_LOG`, else `info`), in
/// colour only when stderr is a terminal.
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("HM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A token cancelled on the first SIGTERM or SIGINT. Call inside a Tokio runtime.
/// Without signal handlers (which only fails in exotic sandboxes) the token is never
/// cancelled and the process stops on SIGKILL.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: shutting down");
        on_signal.cancel();
    });
    token
}

/// The exit status of a process ended by [`exit_on_panic`] (`EX_SOFTWARE`).
pub const PANIC_EXIT_CODE: i32 = 70;

/// Makes a panic anywhere — the main task, any spawned task, any thread — log the
/// panic and end the process with [`PANIC_EXIT_CODE`], so a service manager sees a
/// failure and restarts it. Without it a panic in a spawned task ends only that task
/// and the process may carry on broken, or exit 0. For binaries whose every part is
/// essential (`hm-scheduler`); processes that supervise their parts (`hm-apiserver`'s
/// controllers restart after a panic) do not install it.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panicked; exiting with status {PANIC_EXIT_CODE}");
        default(info);
        std::process::exit(PANIC_EXIT_CODE);
    }));
}
