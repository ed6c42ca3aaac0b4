//! Tests of the sshd test harness itself, driven by the real OpenSSH client tools.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{Sshd, SshdOptions};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn sftp_with_the_client_key_and_known_hosts_round_trips_a_file_in_data_dir() {
    let sshd = Sshd::start();
    let local = tempfile::tempdir().unwrap();
    let original = pseudo_random_bytes(300 * 1024 + 7);
    let src = local.path().join("src.bin");
    let back = local.path().join("back.bin");
    fs::write(&src, &original).unwrap();
    let remote = sshd.data_dir().join("key-roundtrip.bin");

    let out = sftp(
        &sshd,
        sshd.key_user(),
        &key_auth_args(&sshd, sshd.known_hosts_path()),
        &[],
        &format!(
            "put {} {}\nget {} {}\n",
            src.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    );
    assert_success(&out, "sftp with client key", &sshd);
    assert!(
        fs::read(&remote).unwrap() == original,
        "uploaded file differs"
    );
    assert!(
        fs::read(&back).unwrap() == original,
        "downloaded file differs"
    );
}

#[test]
fn sftp_rejects_a_server_whose_host_key_is_not_in_the_known_hosts_file() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    assert_ne!(sshd.port(), other.port());
    assert_ne!(sshd.host_key_fingerprint(), other.host_key_fingerprint());
    // `other`'s known_hosts with `sshd`'s port: same host entry, wrong key.
    let kh_text = fs::read_to_string(other.known_hosts_path())
        .unwrap()
        .replace(
            &format!(":{}]", other.port()),
            &format!(":{}]", sshd.port()),
        );
    let local = tempfile::tempdir().unwrap();
    let wrong_kh = local.path().join("known_hosts");
    fs::write(&wrong_kh, kh_text).unwrap();

    let args = key_auth_args(&sshd, &wrong_kh);
    let out = sftp(&sshd, sshd.key_user(), &args, &[], "ls\n");
    assert!(!out.status.success(), "sftp accepted a wrong host key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed"),
        "unexpected sftp stderr: {stderr}"
    );
}

#[test]
fn ssh_keyscan_fingerprint_matches_host_key_fingerprint() {
    let sshd = Sshd::start();
    let port = sshd.port().to_string();
    let scan = run(
        Command::new("ssh-keyscan").args(["-T", "5", "-t", "ed25519", "-p", &port, "127.0.0.1"]),
        None,
    );
    assert_success(&scan, "ssh-keyscan", &sshd);
    let lf = run(
        Command::new("ssh-keygen").args(["-lf", "-"]),
        Some(&scan.stdout),
    );
    assert_success(&lf, "ssh-keygen -lf -", &sshd);
    let text = String::from_utf8_lossy(&lf.stdout);
    let scanned = text.split_whitespace().nth(1).unwrap_or_default();
    assert!(sshd.host_key_fingerprint().starts_with("SHA256:"));
    assert_eq!(
        scanned,
        sshd.host_key_fingerprint(),
        "keyscan output: {text}"
    );
}

#[test]
fn password_user_can_log_in_with_its_password_and_write_in_data_dir() {
    let sshd = Sshd::start();
    let Some((user, password)) = sshd.password_user() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "password test user missing in CI: scripts/test.sh should have created it"
        );
        eprintln!("SKIP: password test user does not exist (run scripts/test.sh as root)");
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let askpass = local.path().join("askpass.sh");
    fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755)).unwrap();
    let original = pseudo_random_bytes(64 * 1024 + 3);
    let src = local.path().join("src.bin");
    let back = local.path().join("back.bin");
    fs::write(&src, &original).unwrap();
    let remote = sshd.data_dir().join("password-roundtrip.bin");

    let args = [
        "-F",
        "/dev/null",
        // sftp -b implies BatchMode=yes, which disables password prompts; the first -o wins.
        "-o",
        "BatchMode=no",
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        &format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "NumberOfPasswordPrompts=1",
    ]
    .map(String::from);
    let askpass_env = askpass.to_str().unwrap();
    let out = sftp(
        &sshd,
        user,
        &args,
        &[
            ("SSH_ASKPASS", askpass_env),
            ("SSH_ASKPASS_REQUIRE", "force"),
        ],
        &format!(
            "put {} {}\nget {} {}\n",
            src.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    );
    assert_success(&out, "sftp with password", &sshd);
    assert!(
        fs::read(&back).unwrap() == original,
        "downloaded file differs"
    );
    let uid = String::from_utf8(run(Command::new("id").args(["-u", user]), None).stdout).unwrap();
    assert_eq!(
        fs::metadata(&remote).unwrap().uid().to_string(),
        uid.trim(),
        "file was not written as {user}"
    );
}

#[test]
fn stop_kills_sshd_and_its_port_refuses_connections() {
    let sshd = Sshd::start_with(SshdOptions {
        max_sessions: Some(8),
        ..Default::default()
    });
    let (pid, addr, dir) = (sshd.pid(), sshd.addr(), sshd.dir().to_path_buf());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let config = fs::read_to_string(dir.join("sshd_config")).unwrap();
    assert!(config.contains("MaxSessions 8\n"), "{config}");
    let mut banner = [0u8; 8];
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    drop(stream);

    sshd.stop();

    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect_err("port still accepts connections after stop()");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(!dir.exists(), "temp dir {} not removed", dir.display());
}

/// `-F /dev/null -i key ...` options for key logins, checking the host key against `known_hosts`.
fn key_auth_args(sshd: &Sshd, known_hosts: &Path) -> Vec<String> {
    let key = sshd.client_key_path().display().to_string();
    let kh = format!("UserKnownHostsFile={}", known_hosts.display());
    [
        "-F",
        "/dev/null",
        "-i",
        &key,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        &kh,
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `sftp -b batch ARGS -P port user@127.0.0.1` with a time limit.
fn sftp(sshd: &Sshd, user: &str, args: &[String], env: &[(&str, &str)], batch: &str) -> Output {
    let local = tempfile::tempdir().unwrap();
    let batch_file = local.path().join("batch");
    fs::write(&batch_file, batch).unwrap();
    let mut cmd = Command::new("sftp");
    cmd.args(args)
        .args(["-o", "ConnectTimeout=5", "-b"])
        .arg(&batch_file)
        .args(["-P", &sshd.port().to_string(), &format!("{user}@127.0.0.1")]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, None)
}

/// Runs a command with piped stdio, killing it (and panicking) after `LIMIT`.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {LIMIT:?}; stderr: {}",
                String::from_utf8_lossy(&err_reader.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn assert_success(out: &Output, what: &str, sshd: &Sshd) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log_tail(30)
    );
}

/// Deterministic bytes covering all values (xorshift), so byte-identity checks mean something.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
