//! `hm-bench`: see the library for what each benchmark measures.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hypermesh_bench::cli::Cli::parse();
    // Returning from `run` early (error, Ctrl-C, SIGTERM) drops the server processes it
    // owns, which kills them.
    let result = tokio::select! {
        result = hypermesh_bench::run(cli) => result,
        signal = shutdown_signal() => signal.and_then(|()| bail!("interrupted: servers stopped, nothing recorded")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, without a backtrace: these are the user's errors to fix.
            eprintln!("hm-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
