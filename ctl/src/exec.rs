//! `hmctl exec INSTANCE -- COMMAND...`: runs a command in a running container through
//! the apiserver and the node's agent (`InstanceService.Exec`), with stdin (`-i`) and a
//! terminal (`-t`, raw mode and window-size changes); exits with the command's code.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context as _, Result};
use clap::Args;
use hypermesh_api::v1::{
    ExecInput, ExecStart, TerminalSize, exec_input, exec_output,
    instance_service_client::InstanceServiceClient,
};
use tokio::sync::mpsc;

use crate::error::ServerError;
use crate::logs::resolve_instance;
use crate::{Context, Exit};

/// `hmctl exec`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// The Instance (`NAME`, `instance/NAME`), or `workload/NAME` for one of its Instances
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// The container (needed when the Instance has several)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Run the command on a terminal (with -i: an interactive shell)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after `--`
    #[arg(value_name = "COMMAND", required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Puts the terminal on stdin in raw mode until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn terminal_size() -> Option<TerminalSize> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    Some(TerminalSize {
        width: u32::from(size.ws_col),
        height: u32::from(size.ws_row),
    })
}

/// Runs `hmctl exec`.
pub async fn run(ctx: &Context, args: &ExecArgs) -> Result<Exit> {
    let channel = ctx.connect().await?;
    let name = resolve_instance(ctx, channel.clone(), &args.instance).await?;
    let name = name.as_str();
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.into());
    let tty = args.tty && std::io::stdin().is_terminal();
    if args.tty && !tty {
        eprintln!("Unable to use a TTY: input is not a terminal");
    }
    let (tx, rx) = mpsc::channel(16);
    let start = ExecStart {
        namespace,
        name: name.to_string(),
        container: args.container.clone().unwrap_or_default(),
        command: args.command.clone(),
        tty,
        stdin: args.stdin,
        size: if tty { terminal_size() } else { None },
    };
    tx.send(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    })
    .await
    .context("exec channel")?;
    if args.stdin {
        forward_stdin(tx.clone());
    }
    if tty {
        forward_resizes(tx.clone());
    }
    drop(tx);
    let mut client = InstanceServiceClient::new(channel);
    let context = || format!("error executing in instance {name:?}: ");
    let mut stream = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| ServerError::from_status(&s).with_context(context()))?
        .into_inner();
    let raw = if tty { RawMode::enable() } else { None };
    let mut code = None;
    let result = async {
        while let Some(out) = stream.message().await? {
            match out.output {
                Some(exec_output::Output::Stdout(data)) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&data).and_then(|()| o.flush());
                }
                Some(exec_output::Output::Stderr(data)) => {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(&data).and_then(|()| e.flush());
                }
                Some(exec_output::Output::ExitCode(c)) => code = Some(c),
                None => {}
            }
        }
        Ok::<(), tonic::Status>(())
    }
    .await;
    drop(raw);
    result.map_err(|s| ServerError::from_status(&s).with_context(context()))?;
    match code {
        Some(0) => Ok(Exit::Success),
        Some(c) => Ok(Exit::Code(u8::try_from(c).unwrap_or(1))),
        None => anyhow::bail!("the connection ended before the command's exit code arrived"),
    }
}

/// Reads stdin on its own thread (a blocked read must not hold up exiting) and sends
/// it; end of input closes the command's stdin.
fn forward_stdin(tx: mpsc::Sender<ExecInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let input = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => exec_input::Input::CloseStdin(true),
                Ok(n) => exec_input::Input::Stdin(buf[..n].to_vec()),
            };
            let last = matches!(input, exec_input::Input::CloseStdin(_));
            if tx.blocking_send(ExecInput { input: Some(input) }).is_err() || last {
                return;
            }
        }
    });
}

/// Sends the terminal's size whenever it changes (SIGWINCH).
fn forward_resizes(tx: mpsc::Sender<ExecInput>) {
    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            let Some(size) = terminal_size() else {
                continue;
            };
            let resize = ExecInput {
                input: Some(exec_input::Input::Resize(size)),
            };
            if tx.send(resize).await.is_err() {
                return;
            }
        }
    });
}
