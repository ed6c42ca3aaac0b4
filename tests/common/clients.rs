//! Running real client programs (curl, lftp, python3) from the tests.

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

use super::proxy::TEST_TIMEOUT;

/// Runs `program` to completion within the test timeout; killed if the test ends first.
pub async fn run(program: &str, args: &[&str]) -> Output {
    let command = Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(TEST_TIMEOUT, command)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}); run scripts/test.sh"))
}

/// [`run`], and its stdout once it exited with success.
pub async fn run_ok(program: &str, args: &[&str]) -> Vec<u8> {
    let output = run(program, args).await;
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A test path as a command-line argument.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
