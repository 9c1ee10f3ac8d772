//! `hmctl exec -i` with a large stdin: 64 MiB go through hmctl, the apiserver and the
//! agent into `wc -c` in the container, and the count comes back right. The agent pumps
//! stdin and the output pipes independently, so a process that is slow to read (or
//! that writes while reading) can never stall the session.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use std::process::Stdio;
use std::time::Duration;

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use hypermesh_api::v1::{self, InstancePhase, RestartPolicy};
use node_env::Env;
use tokio::io::AsyncWriteExt;

const STDIN_BYTES: usize = 64 << 20;

fn running(s: &v1::InstanceStatus) -> bool {
    s.phase == InstancePhase::Running as i32
}

/// Runs `hmctl exec -i sleeper -- sh -c SCRIPT` with `STDIN_BYTES` of input; the stdin
/// writer and the output reader run at once, within a deadline.
async fn exec_with_large_stdin(hmctl: &Hmctl, server: &str, script: &str) -> (i32, Vec<u8>) {
    let mut cmd = hmctl.bare_command();
    cmd.args([
        "--server", server, "exec", "-i", "sleeper", "--", "sh", "-c", script,
    ])
    .stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn hmctl");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..STDIN_BYTES / chunk.len() {
            stdin.write_all(&chunk).await.expect("write stdin");
        }
        drop(stdin);
    };
    let (_, out) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(feed, child.wait_with_output())
    })
    .await
    .expect("exec with 64 MiB of stdin finished (no deadlock)");
    let out = out.expect("hmctl output");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), out.stdout)
}

#[tokio::test]
async fn sixty_four_mib_of_stdin_reach_wc() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "sleeper",
        TEST_IMAGE,
        &["sleep", "600"],
        RestartPolicy::Never,
    )
    .await;
    env.wait_status("sleeper", "running", running).await;

    let (code, out) = exec_with_large_stdin(&hmctl, env.server.url(), "wc -c").await;
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        STDIN_BYTES.to_string()
    );

    // Output while input still flows: `cat` echoes every byte back, so its stdout
    // fills while its stdin is still being written.
    let (code, out) = exec_with_large_stdin(&hmctl, env.server.url(), "cat").await;
    assert_eq!(code, 0);
    assert_eq!(out.len(), STDIN_BYTES);
    assert!(out.iter().all(|b| *b == b'x'));
    env.stop().await;
}
