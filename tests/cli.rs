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
    assert!(runtime.block_on(checker.verify("u", Some(&secret), b"correct horse")));
    assert!(!runtime.block_on(checker.verify("u", Some(&secret), b"correct horse\n")));
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

/// What `curl` prints for `url`, or why it failed.
fn http_get(url: &str) -> String {
    String::from_utf8_lossy(&curl(&[url])).into_owned()
}

/// Polls the admin endpoint until `ftpbridge_config_reloads_total{result="ok"}` reaches `count`.
fn wait_for_reloads(admin: SocketAddr, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(&format!("http://{admin}/metrics"));
        let reloads = metrics.lines().find_map(|line| {
            line.strip_prefix("ftpbridge_config_reloads_total{result=\"ok\"} ")?
                .trim()
                .parse::<f64>()
                .ok()
        });
        if reloads.is_some_and(|n| n >= count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reloaded {count} times:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_file_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count {
            return text.lines().map(str::to_owned).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} never had {count} lines: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Log rotation as logrotate does it (rename, then SIGHUP), a log level
/// raised by editing the file, and the health probe a container runs.
#[test]
fn sighup_reopens_the_transfer_log_and_an_edit_changes_the_log_level() {
    let sshd = Sshd::start();
    let addr = free_port();
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let xferlog = dir.path().join("xferlog");
    let body = alice_config(&sshd, "", "")
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"{addr}\""));
    std::fs::write(sshd.data_dir().join("alice/hello.txt"), b"hello\n").unwrap();
    let with_level = |level: &str| {
        format!(
            "[admin]\nbind = \"{admin}\"\n\n[logging]\nlevel = \"{level}\"\nxferlog = \"{}\"\n{body}",
            xferlog.display()
        )
    };
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, with_level("warn")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let running = Running(child);
    wait_for_port(addr);
    wait_for_port(admin);
    let url = format!(
        "ftp://alice:{}@{addr}/hello.txt",
        PASSWORD.replace(' ', "%20")
    );

    assert_eq!(curl(&[&url]), b"hello\n");
    assert_eq!(wait_for_file_lines(&xferlog, 1).len(), 1);

    // logrotate: rename the file, then SIGHUP; the next transfer opens a new file.
    std::fs::rename(&xferlog, dir.path().join("xferlog.1")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for_reloads(admin, 1.0);
    assert_eq!(curl(&[&url]), b"hello\n");
    let lines = wait_for_file_lines(&xferlog, 1);
    assert!(
        lines[0].contains(" /hello.txt b _ o r alice ftp 0 * c"),
        "{lines:?}"
    );

    // Raising the level by editing the file (written aside, renamed over).
    let staged = dir.path().join("proxy.toml.new");
    std::fs::write(&staged, with_level("info")).unwrap();
    std::fs::rename(&staged, &config).unwrap();
    wait_for_reloads(admin, 2.0);
    assert_eq!(curl(&[&url]), b"hello\n");

    // The container health check: exit 0 when ready, non-zero otherwise.
    let probe = |path: &str| {
        Command::new(BIN)
            .args(["probe", &format!("http://{admin}{path}")])
            .output()
            .unwrap()
    };
    assert!(probe("/readyz").status.success());
    let missing = probe("/no-such-page");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let unreachable = Command::new(BIN)
        .args(["probe", &format!("http://{}/readyz", free_port())])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());

    let status = running.terminate();
    assert!(status.success(), "run exited with {status}");
    let lines = reader.join().unwrap();
    let logins = lines
        .iter()
        .filter(|line| line.contains("login succeeded"))
        .count();
    assert_eq!(
        logins,
        1,
        "only the login after the level was raised to info is logged:\n{}",
        lines.join("\n")
    );
}
