//! End-to-end tests that drive the server with the real OpenSSH `sftp`
//! client (skipped when it is missing) and with the russh-sftp client the
//! bridge itself uses.

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::HashAlg;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::timeout;

use super::{EmbeddedServerError, EmbeddedSftpServer};

const USER: &str = "demo";
const PASSWORD: &str = "correct horse battery";
/// Upper bound for each end-to-end test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

// ----- harness ---------------------------------------------------------

fn command_available(program: &str, probe_arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `None` (with the reason printed) when OpenSSH's sftp is not installed.
fn require_sftp() -> Option<()> {
    if command_available("sftp", "-h") {
        Some(())
    } else {
        eprintln!("SKIPPED: OpenSSH `sftp` is not installed");
        None
    }
}

/// A running server over a temporary root, plus a scratch directory used
/// as the client's working directory.
struct Harness {
    server: EmbeddedSftpServer,
    root: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let root = tempfile::tempdir().expect("root tempdir");
        let work = tempfile::tempdir().expect("work tempdir");
        let server = EmbeddedSftpServer::start(
            listener,
            root.path().to_path_buf(),
            USER.to_owned(),
            PASSWORD.to_owned(),
        )
        .await
        .expect("server starts");
        // ssh runs this instead of prompting; the password comes from the
        // environment so it never appears in a file or on a command line.
        let askpass = work.path().join("askpass.sh");
        fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$FTPBRIDGE_TEST_SSH_PASSWORD\"\n",
        )
        .expect("write askpass");
        fs::set_permissions(&askpass, Permissions::from_mode(0o700)).expect("chmod askpass");
        Self { server, root, work }
    }

    /// Runs an OpenSSH client program with password auth via SSH_ASKPASS.
    fn ssh_command(&self, program: &str, password: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.work.path())
            .env("SSH_ASKPASS", self.work.path().join("askpass.sh"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("FTPBRIDGE_TEST_SSH_PASSWORD", password)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            // `sftp -b` appends "-o BatchMode yes", which would disable
            // password prompts; ssh keeps the first value it sees, so ours
            // must come first.
            .args(["-F", "/dev/null", "-o", "BatchMode=no"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .args([
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "PubkeyAuthentication=no",
            ])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"]);
        command
    }

    /// Runs `sftp -b` with `batch` as the command file.
    async fn sftp(&self, user: &str, password: &str, batch: &str) -> Output {
        let batch_file = self.work.path().join("batch.txt");
        fs::write(&batch_file, batch).expect("write batch file");
        let port = self.server.local_addr().port().to_string();
        let mut command = self.ssh_command("sftp", password);
        command
            .args(["-P", &port, "-b"])
            .arg(&batch_file)
            .arg(format!("{user}@127.0.0.1"));
        command.output().await.expect("run sftp")
    }

    fn root_path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn work_path(&self, relative: &str) -> PathBuf {
        self.work.path().join(relative)
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::fill(&mut data[..]);
    data
}

// ----- OpenSSH sftp ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_transfers_and_manages_files() {
    let Some(()) = require_sftp() else { return };
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        let data = random_bytes(3 * 1024 * 1024);
        fs::write(harness.work_path("big.bin"), &data).expect("write local file");

        let output = harness
            .sftp(
                USER,
                PASSWORD,
                "mkdir incoming\n\
                 cd incoming\n\
                 put big.bin\n\
                 put -f big.bin synced.bin\n\
                 chmod 640 big.bin\n\
                 ls -l\n\
                 get big.bin roundtrip.bin\n\
                 rename big.bin renamed.bin\n\
                 ls\n",
            )
            .await;
        assert!(output.status.success(), "{}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("-rw-r-----") && l.ends_with(" big.bin")),
            "ls -l shows the long name with the new mode\n{}",
            describe(&output)
        );
        assert!(stdout.contains("renamed.bin"), "{}", describe(&output));
        assert!(fs::read(harness.work_path("roundtrip.bin")).expect("downloaded") == data);
        assert!(fs::read(harness.root_path("incoming/renamed.bin")).expect("uploaded") == data);
        assert!(fs::read(harness.root_path("incoming/synced.bin")).expect("fsynced") == data);
        assert!(!harness.root_path("incoming/big.bin").exists());
        let mode = fs::metadata(harness.root_path("incoming/renamed.bin"))
            .expect("stat")
            .mode();
        assert_eq!(mode & 0o777, 0o640);

        // OpenSSH's `rename` uses posix-rename@openssh.com, which replaces the target.
        let output = harness
            .sftp(
                USER,
                PASSWORD,
                "cd incoming\n\
                 rename synced.bin renamed.bin\n\
                 rm renamed.bin\n\
                 cd /\n\
                 rmdir incoming\n\
                 ls -la\n",
            )
            .await;
        assert!(output.status.success(), "{}", describe(&output));
        let remaining: Vec<_> = fs::read_dir(harness.root.path())
            .expect("list root")
            .collect();
        assert!(remaining.is_empty(), "root should be empty: {remaining:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_cannot_escape_the_root() {
    let Some(()) = require_sftp() else { return };
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        fs::create_dir(harness.root_path("etc")).expect("mkdir etc");
        fs::write(harness.root_path("etc/hostname"), "inside-root\n").expect("write sentinel");

        let output = harness
            .sftp(
                USER,
                PASSWORD,
                "get /../../etc/hostname escaped.txt\n\
                 cd ../../..\n\
                 pwd\n",
            )
            .await;
        assert!(output.status.success(), "{}", describe(&output));
        let fetched = fs::read_to_string(harness.work_path("escaped.txt")).expect("fetched");
        assert_eq!(
            fetched, "inside-root\n",
            "the path must map inside the root"
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Remote working directory: /\n"),
            "{}",
            describe(&output)
        );

        // /etc/passwd exists on the host but not under the root.
        let output = harness
            .sftp(USER, PASSWORD, "get /../../../etc/passwd passwd.txt\n")
            .await;
        assert!(!output.status.success(), "{}", describe(&output));
        assert!(!harness.work_path("passwd.txt").exists());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let Some(()) = require_sftp() else { return };
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        for (user, password) in [(USER, "wrong password"), ("root", PASSWORD)] {
            let output = harness.sftp(user, password, "ls\n").await;
            assert!(!output.status.success(), "{}", describe(&output));
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
                "{}",
                describe(&output)
            );
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sftp_subsystem_is_served() {
    let Some(()) = require_sftp() else { return };
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        let port = harness.server.local_addr().port().to_string();
        let mut command = harness.ssh_command("ssh", PASSWORD);
        command.args(["-T", "-p", &port, &format!("{USER}@127.0.0.1"), "id"]);
        let output = command.output().await.expect("run ssh");
        assert!(!output.status.success(), "{}", describe(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("exec request failed"),
            "{}",
            describe(&output)
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_matches_ssh_keyscan() {
    if !command_available("ssh-keyscan", "-h") || !command_available("ssh-keygen", "-h") {
        eprintln!("SKIPPED: ssh-keyscan/ssh-keygen are not installed");
        return;
    }
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        let port = harness.server.local_addr().port().to_string();
        let scan = Command::new("ssh-keyscan")
            .args(["-t", "ed25519", "-p", &port, "127.0.0.1"])
            .output()
            .await
            .expect("run ssh-keyscan");
        let mut keygen = Command::new("ssh-keygen")
            .args(["-l", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run ssh-keygen");
        let mut stdin = keygen.stdin.take().expect("stdin");
        stdin
            .write_all(&scan.stdout)
            .await
            .expect("feed ssh-keygen");
        drop(stdin);
        let listed = keygen.wait_with_output().await.expect("ssh-keygen output");
        let listed = String::from_utf8_lossy(&listed.stdout);
        let fingerprint = harness.server.host_key_fingerprint();
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        assert!(listed.contains(fingerprint), "{listed} vs {fingerprint}");
    })
    .await
    .expect("test timed out");
}

// ----- russh-sftp client (what the bridge uses upstream) ---------------

/// Accepts exactly the host key with the expected fingerprint.
struct PinnedHostKey(String);

impl russh::client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string() == self.0
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

async fn russh_sftp_session(
    server: &EmbeddedSftpServer,
) -> (
    russh::client::Handle<PinnedHostKey>,
    russh_sftp::client::SftpSession,
) {
    let config = Arc::new(russh::client::Config::default());
    let pinned = PinnedHostKey(server.host_key_fingerprint().to_owned());
    let mut handle = russh::client::connect(config, server.local_addr(), pinned)
        .await
        .expect("ssh connect");
    let auth = handle
        .authenticate_password(USER, PASSWORD)
        .await
        .expect("auth");
    assert!(auth.success());
    let channel = handle
        .channel_open_session()
        .await
        .expect("session channel");
    channel
        .request_subsystem(true, "sftp")
        .await
        .expect("sftp subsystem");
    let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .expect("sftp init");
    (handle, sftp)
}

/// Writes a whole file. `SftpSession::write` opens with WRITE only (no
/// CREAT, no TRUNC), so it cannot create files: use `create` instead.
async fn upload(sftp: &russh_sftp::client::SftpSession, path: &str, data: &[u8]) {
    let mut file = sftp.create(path).await.expect("create");
    file.write_all(data).await.expect("write");
    file.shutdown().await.expect("close");
}

/// The status of a request that must fail (works for Ok types without Debug).
fn failure_code<T>(result: Result<T, russh_sftp::client::error::Error>) -> StatusCode {
    match result {
        Ok(_) => panic!("the request unexpectedly succeeded"),
        Err(error) => status_code(error),
    }
}

fn status_code(error: russh_sftp::client::error::Error) -> StatusCode {
    match error {
        russh_sftp::client::error::Error::Status(status) => status.status_code,
        other => panic!("expected an SFTP status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn russh_sftp_client_sees_protocol_semantics() {
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        let (_ssh, sftp) = russh_sftp_session(&harness.server).await;

        upload(&sftp, "/a.txt", b"hello").await;
        upload(&sftp, "/b.txt", b"other").await;
        // Legacy SSH_FXP_RENAME must not replace an existing target.
        let err = sftp
            .rename("/a.txt", "/b.txt")
            .await
            .expect_err("rename onto existing");
        assert_eq!(status_code(err), StatusCode::Failure);
        sftp.rename("/a.txt", "/c.txt")
            .await
            .expect("rename to a free name");

        // APPEND writes land at the end whatever the offset.
        let mut file = sftp
            .open_with_flags("/c.txt", OpenFlags::WRITE | OpenFlags::APPEND)
            .await
            .expect("open for append");
        file.write_all(b" world").await.expect("append");
        file.shutdown().await.expect("close");
        assert_eq!(
            sftp.read("/c.txt").await.expect("read back"),
            b"hello world"
        );

        // CREAT|EXCL refuses an existing file.
        let exclusive = sftp
            .open_with_flags(
                "/c.txt",
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
            )
            .await;
        assert_eq!(failure_code(exclusive), StatusCode::Failure);

        let missing = sftp.open("/missing.txt").await;
        assert_eq!(failure_code(missing), StatusCode::NoSuchFile);

        sftp.create_dir("/sub").await.expect("mkdir");
        let metadata = sftp.metadata("/sub").await.expect("stat dir");
        assert!(metadata.is_dir(), "type bits are sent: {metadata:?}");
        let entries: Vec<_> = sftp.read_dir("/").await.expect("readdir").collect();
        let c = entries
            .iter()
            .find(|e| e.file_name() == "c.txt")
            .expect("c.txt listed");
        assert_eq!(c.metadata().size, Some(11));
        assert!(c.metadata().is_regular());
        assert!(c.metadata().mtime.is_some() && c.metadata().uid.is_some());

        // Reading the whole file through the pipelined reader.
        let mut file = sftp.open("/c.txt").await.expect("open for read");
        let mut text = String::new();
        file.read_to_string(&mut text).await.expect("read to end");
        assert_eq!(text, "hello world");

        assert_eq!(
            sftp.canonicalize("/sub/../../x/.").await.expect("realpath"),
            "/x"
        );
        assert!(
            sftp.fs_info("/").await.expect("statvfs probe").is_none(),
            "statvfs is not advertised"
        );
        let err = sftp
            .remove_dir("/")
            .await
            .expect_err("the root cannot be removed");
        assert_eq!(status_code(err), StatusCode::PermissionDenied);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    timeout(TEST_TIMEOUT, async {
        let harness = Harness::start().await;
        let addr = harness.server.local_addr();
        let (_ssh, sftp) = russh_sftp_session(&harness.server).await;
        sftp.metadata("/")
            .await
            .expect("session works before shutdown");
        harness.server.shutdown();
        // Established sessions are disconnected, not left dangling.
        sftp.set_timeout(5);
        sftp.metadata("/")
            .await
            .expect_err("session must be closed by shutdown");
        // The aborted task releases the listener asynchronously; give it a moment.
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("still accepting connections after shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn start_rejects_bad_arguments() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let result = EmbeddedSftpServer::start(
        listener,
        file.path().to_path_buf(),
        USER.to_owned(),
        PASSWORD.to_owned(),
    )
    .await;
    assert!(matches!(
        result,
        Err(EmbeddedServerError::RootNotDirectory(_))
    ));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let result =
        EmbeddedSftpServer::start(listener, PathBuf::from("/"), USER.to_owned(), String::new())
            .await;
    assert!(matches!(result, Err(EmbeddedServerError::EmptyCredentials)));
}
