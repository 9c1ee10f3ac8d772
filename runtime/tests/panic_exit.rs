//! A binary that installs `exit_on_panic` exits non-zero when any task panics, even
//! a spawned one whose panic Tokio would otherwise swallow. The test runs itself as
//! the child process (selected by an environment variable), so the real hook, the
//! real runtime and a real process exit are exercised.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::process::Command;
use std::time::Duration;

use hypermesh_runtime::process::{PANIC_EXIT_CODE, exit_on_panic};

const CHILD: &str = "HM_TEST_PANIC_EXIT_CHILD";

#[test]
fn a_panic_in_a_spawned_task_ends_the_process_with_a_failure() {
    if std::env::var_os(CHILD).is_some() {
        exit_on_panic();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            tokio::spawn(async { panic!("boom in a spawned task") });
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        // Reaching this means the panic was swallowed: exit 0 fails the parent.
        std::process::exit(0);
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_in_a_spawned_task_ends_the_process_with_a_failure",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(PANIC_EXIT_CODE),
        "child should exit {PANIC_EXIT_CODE}; stderr: {stderr}"
    );
    assert!(stderr.contains("boom in a spawned task"), "{stderr}");
}
