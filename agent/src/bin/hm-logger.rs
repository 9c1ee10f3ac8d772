//! `hm-logger`: writes one container run's stdout and stderr to a rotated log file.
//! containerd's runc shim starts it (stdio URI `binary://…/hm-logger?--file=…`) with the
//! container's output pipes as fds 3 and 4; see `hypermesh_agent::logs::writer`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hypermesh_agent::logs::writer::{LoggerArgs, run_logger};

/// Writes a container's output (fd 3: stdout, fd 4: stderr) to a rotated CRI-format log.
#[derive(Debug, Parser)]
#[command(name = "hm-logger", version)]
struct Args {
    /// The live log file.
    #[arg(long)]
    file: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_size: u64,
    /// Files kept, the live one included.
    #[arg(long, default_value_t = 5)]
    max_files: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The shim sends SIGTERM as soon as it closes the container's pipes (task delete):
    // keep going until both reach EOF, so the last lines and the done marker are written.
    // (The shim's SIGKILL follows after 12 s.) Tokio's handler replaces the default
    // disposition for the life of the process; the signals are then simply not acted on.
    let _runtime_and_signal = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .and_then(|rt| {
            let signal = rt.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            })?;
            Ok((rt, signal))
        });
    let logger = LoggerArgs {
        file: args.file,
        max_bytes: args.max_size,
        max_files: args.max_files,
    };
    match run_logger(&logger) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hm-logger {}: {e}", logger.file.display());
            ExitCode::FAILURE
        }
    }
}
