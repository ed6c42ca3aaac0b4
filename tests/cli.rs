//! The `ftpbridge` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{PASSWORD, alice_config};
use common::sshd::Sshd;

const BIN: &str = env!("CARGO_BIN_EXE_ftpbridge");

fn repo_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Kills the child on drop so a failed test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then the exit status (bounded wait).
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ftpbridge did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl installed");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn check_accepts_the_shipped_proxy_toml() {
    let output = Command::new(BIN)
        .args(["check", "--config", &repo_file("proxy.toml")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
}

#[test]
fn check_rejects_a_bad_config_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(repo_file("proxy.toml")).unwrap();
    std::fs::write(
        &bad,
        text.replace(
            "passive_ports = \"50000-50100\"",
            "passive_ports = \"50100-50000\"",
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listeners[0].passive_ports"), "{stderr}");
}

#[test]
fn environment_overrides_apply_to_check() {
    let output = Command::new(BIN)
        .args(["check", "--config", &repo_file("proxy.toml")])
        .env("FTPBRIDGE__UPSTREAMS__0__HOST_KEY", "not-a-fingerprint")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("upstreams[0].host_key"));
}

#[test]
fn hash_password_reads_stdin_and_prints_a_verifiable_hash() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let checker = ftpbridge::auth::PasswordChecker::default();
    let secret = ftpbridge::secret::Secret::new(hash);
    assert!(runtime.block_on(checker.verify(Some(&secret), b"correct horse")));
    assert!(!runtime.block_on(checker.verify(Some(&secret), b"correct horse\n")));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "check", "hash-password", "demo"] {
        let output = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        assert!(output.status.success(), "{sub} --help");
        assert!(!output.stdout.is_empty());
    }
}

#[test]
fn demo_serves_curl_uploads_and_downloads_through_its_embedded_sftp_server() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["demo", "--listen", &addr.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_for_port(addr);
    let base = format!("ftp://demo:demo@{addr}/");

    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("hello.bin");
    let content = common::proxy::random_bytes(2 * 1024 * 1024, 21);
    std::fs::write(&upload, &content).unwrap();
    curl(&["-T", upload.to_str().unwrap(), &format!("{base}hello.bin")]);
    // The file really landed in the directory the embedded SFTP server serves.
    assert_eq!(
        std::fs::read(dir.path().join("hello.bin")).unwrap(),
        content
    );
    assert_eq!(curl(&[&format!("{base}hello.bin")]), content);
    let listing = String::from_utf8(curl(&[&base])).unwrap();
    assert!(listing.contains(" hello.bin"), "{listing}");

    let status = running.terminate();
    assert!(status.success(), "demo exited with {status}");
}

#[test]
fn run_logs_json_with_session_fields_and_never_the_password() {
    let sshd = Sshd::start();
    let addr = free_port();
    let toml = alice_config(&sshd, "", "")
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"{addr}\""));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while the proxy runs: a full pipe would block its logging.
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let running = Running(child);
    wait_for_port(addr);

    let url = format!("ftp://alice:{}@{addr}/", PASSWORD.replace(' ', "%20"));
    curl(&[&url]);
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-Q", "-DELE nothing-here", &url])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(21),
        "curl reports the 550 of DELE"
    );
    let status = running.terminate();
    assert!(status.success(), "run exited with {status}");

    let lines = reader.join().unwrap();
    assert!(!lines.is_empty());
    let mut saw_login = false;
    for line in &lines {
        assert!(
            !line.contains(PASSWORD) && !line.contains("s3cret"),
            "password in the log: {line}"
        );
        let value: serde_json_lite::Value =
            serde_json_lite::parse(line).unwrap_or_else(|| panic!("not JSON: {line}"));
        if value.has_field("message", "login succeeded") {
            assert!(
                line.contains("\"user\":\"alice\""),
                "session fields on every line: {line}"
            );
            assert!(line.contains("\"upstream\":\"sftp\""), "{line}");
            saw_login = true;
        }
    }
    assert!(saw_login, "no login line in {lines:#?}");
}

/// Just enough JSON checking for log lines, to avoid a dependency.
mod serde_json_lite {
    pub struct Value(String);

    pub fn parse(line: &str) -> Option<Value> {
        let trimmed = line.trim();
        let balanced = trimmed.starts_with('{')
            && trimmed.ends_with('}')
            && trimmed.matches('{').count() == trimmed.matches('}').count();
        balanced.then(|| Value(trimmed.to_owned()))
    }

    impl Value {
        pub fn has_field(&self, key: &str, value: &str) -> bool {
            self.0.contains(&format!("\"{key}\":\"{value}\""))
        }
    }
}

#[test]
fn run_with_a_port_in_use_fails_naming_the_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let text = std::fs::read_to_string(repo_file("proxy.toml")).unwrap();
    std::fs::write(&config, text.replace("0.0.0.0:2121", &addr.to_string())).unwrap();
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listeners[0].bind"), "{stderr}");
}

/// docker/compose.yaml runs the shipped proxy.toml with environment overrides;
/// that combination must be a valid configuration.
#[test]
fn the_docker_compose_environment_with_proxy_toml_passes_check() {
    let compose = std::fs::read_to_string(repo_file("docker/compose.yaml")).unwrap();
    let substitutions = [
        (
            "${SFTP_HOST_KEY}",
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
        ),
        ("${PASSIVE_ADDRESS}", "127.0.0.1"),
        ("${SVC_FTP_PASSWORD}", "generated"),
    ];
    let env: Vec<(String, String)> = compose
        .lines()
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(key, _)| key.starts_with("FTPBRIDGE__"))
        .map(|(key, value)| {
            let value = substitutions
                .iter()
                .fold(value.to_owned(), |v, (from, to)| v.replace(from, to));
            assert!(
                !value.contains("${"),
                "unsubstituted variable in {key}: {value}"
            );
            (key.to_owned(), value)
        })
        .collect();
    assert!(
        env.len() >= 5,
        "compose.yaml sets the upstream overrides: {env:?}"
    );
    let output = Command::new(BIN)
        .args(["check", "--config", &repo_file("proxy.toml")])
        .envs(env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The image publishes the passive range proxy.toml configures.
    let dockerfile = std::fs::read_to_string(repo_file("docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 2121 50000-50100"));
    assert!(
        std::fs::read_to_string(repo_file("proxy.toml"))
            .unwrap()
            .contains("passive_ports = \"50000-50100\"")
    );
}

#[test]
fn demo_with_tls_serves_ftps_with_its_generated_certificate() {
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--tls", "--listen", &addr.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    // The demo prints the curl line with the certificate to trust.
    let certificate = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("FTPS: curl --ssl-reqd --cacert ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("the demo prints an FTPS example");
    wait_for_port(addr);
    let url = format!("ftp://demo:demo@{addr}/secret.txt");
    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("secret.txt");
    std::fs::write(&upload, b"sent over TLS").unwrap();
    curl(&[
        "--ssl-reqd",
        "--cacert",
        &certificate,
        "-T",
        upload.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("secret.txt")).unwrap(),
        b"sent over TLS"
    );
    assert_eq!(
        curl(&["--ssl-reqd", "--cacert", &certificate, &url]),
        b"sent over TLS"
    );
    assert!(running.terminate().success());
}
