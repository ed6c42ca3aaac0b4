//! A real OpenSSH `sshd` (with `sftp-server`) for integration tests.
//!
//! Each [`Sshd`] listens on 127.0.0.1 on a random free port and keeps everything it needs
//! (config, host key, client key, authorized_keys, known_hosts, pid file, log, data dir) in its
//! own temp dir. Dropping it kills the process, waits for it and removes the temp dir.
//!
//! Needs root (sshd must switch users for password logins), `openssh-server` and
//! `openssh-client`; `scripts/test.sh` installs them and creates the password test user.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The dedicated password-auth test user, created by `scripts/test.sh`.
pub const PASSWORD_USER: &str = "ftpbridge-test";
/// Its password.
pub const PASSWORD_USER_PASSWORD: &str = "ftpbridge-test-pw";

const SSHD_CANDIDATES: &[&str] = &["/usr/sbin/sshd", "/usr/local/sbin/sshd"];
const SFTP_SERVER_CANDIDATES: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
];
const PRIVSEP_DIR: &str = "/run/sshd";
const START_ATTEMPTS: u32 = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(2);
const HINT: &str = "run `scripts/test.sh` (as root) to install openssh-server/openssh-client";

/// Options for [`Sshd::start_with`].
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// `MaxSessions` (channels per connection); default 64.
    pub max_sessions: Option<u32>,
    /// Extra sshd_config lines, written before the harness defaults so they override them
    /// (the first value of a keyword wins in sshd_config). No `Match` blocks.
    pub extra_config: Vec<String>,
}

/// A running `sshd`; killed (and waited for) on drop.
pub struct Sshd {
    child: Option<Child>,
    port: u16,
    host_key_fingerprint: String,
    known_hosts: PathBuf,
    client_key: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    key_user: String,
    has_password_user: bool,
    // Last field: removed after the process is gone.
    dir: TempDir,
}

impl Sshd {
    /// Starts sshd with default options; panics with a clear message if it cannot start.
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    /// Starts sshd with `opts`; panics with a clear message (and the log tail) if it cannot start.
    pub fn start_with(opts: SshdOptions) -> Sshd {
        let sshd = find_binary(SSHD_CANDIDATES, "sshd");
        let sftp_server = find_binary(SFTP_SERVER_CANDIDATES, "sftp-server");
        ensure_privsep_dir();

        let dir = tempfile::Builder::new()
            .prefix("ftpbridge-sshd-")
            .tempdir()
            .expect("create sshd temp dir");
        let root = dir.path().to_path_buf();
        // Traversable by the password user (tempfile creates it 0700).
        chmod(&root, 0o755);
        let data_dir = root.join("data");
        fs::create_dir(&data_dir).expect("create data dir");
        chmod(&data_dir, 0o777);

        let host_key = root.join("host_key");
        let client_key = root.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized_keys = root.join("authorized_keys");
        fs::copy(pub_path(&client_key), &authorized_keys).expect("write authorized_keys");
        let host_pub = fs::read_to_string(pub_path(&host_key)).expect("read host key .pub");
        let host_key_fingerprint = fingerprint(&host_key);

        let config = root.join("sshd_config");
        let pid_file = root.join("sshd.pid");
        let log = root.join("sshd.log");
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let text = config_text(
                &opts,
                port,
                &host_key,
                &pid_file,
                &authorized_keys,
                &sftp_server,
            );
            fs::write(&config, text).expect("write sshd_config");
            check_config(&sshd, &config);
            let log_file = fs::File::create(&log).expect("create sshd log");
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log fd"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HINT}", sshd.display()));
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    let known_hosts = root.join("known_hosts");
                    let mut fields = host_pub.split_whitespace();
                    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
                    fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n"))
                        .expect("write known_hosts");
                    return Sshd {
                        child: Some(child),
                        port,
                        host_key_fingerprint,
                        known_hosts,
                        client_key,
                        data_dir,
                        log,
                        key_user: current_user(),
                        has_password_user: password_user_exists(),
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!(
                        "attempt {attempt} (port {port}): {why}\n--- sshd log tail ---\n{}",
                        tail(&log, 20)
                    ));
                }
            }
        }
        panic!(
            "sshd did not start after {START_ATTEMPTS} attempts ({HINT}):\n{}",
            failures.join("\n")
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// PID of the sshd listener process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sshd running").id()
    }

    /// "SHA256:..." fingerprint of its host key (from `ssh-keygen -lf`), for host-key pinning.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// A known_hosts file (in the temp dir) listing this server as `[127.0.0.1]:port ssh-ed25519 AAAA...`.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// A client private key (OpenSSH format, ed25519, no passphrase) authorized for `key_user()`.
    pub fn client_key_path(&self) -> &Path {
        &self.client_key
    }

    /// The system user the key logs in as: the user running the tests (root in CI).
    pub fn key_user(&self) -> &str {
        &self.key_user
    }

    /// A directory (mode 0777) writable by both key_user and password_user, the natural
    /// upstream root for tests (absolute path on this machine, since sshd serves the real filesystem).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Credentials of the dedicated password-auth test user, if it exists on this machine.
    pub fn password_user(&self) -> Option<(&str, &str)> {
        self.has_password_user
            .then_some((PASSWORD_USER, PASSWORD_USER_PASSWORD))
    }

    /// sshd's stderr (LogLevel VERBOSE), useful in assertion messages.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the sshd log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The temp dir holding config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills sshd, waits for it and removes the temp dir.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Give per-connection children (of clients that just disconnected) a moment to
            // exit so the listener reaps them; killed first, they would be orphaned, and an
            // init that does not reap (as in some containers) would keep them as zombies.
            let deadline = Instant::now() + STOP_GRACE;
            while has_children(child.id()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config_text(
    opts: &SshdOptions,
    port: u16,
    host_key: &Path,
    pid_file: &Path,
    authorized_keys: &Path,
    sftp_server: &Path,
) -> String {
    let mut text = String::new();
    for line in &opts.extra_config {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {}\n\
         PidFile {}\n\
         AuthorizedKeysFile {}\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         Subsystem sftp {}\n\
         LogLevel VERBOSE\n\
         MaxStartups 100:30:200\n\
         MaxSessions {}\n",
        host_key.display(),
        pid_file.display(),
        authorized_keys.display(),
        sftp_server.display(),
        opts.max_sessions.unwrap_or(64),
    ));
    text
}

/// Waits until sshd accepts TCP on `port` and sends its `SSH-2.0-` banner.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("sshd exited with {status}"));
        }
        match read_banner(addr) {
            Ok(banner) if banner.starts_with("SSH-2.0-") => return Ok(()),
            Ok(banner) => last = format!("unexpected banner {banner:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "not ready within {READY_TIMEOUT:?} (last error: {last})"
    ))
}

fn read_banner(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 255 && !buf.ends_with(b"\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `sshd -t`: a config error is not worth retrying, so it panics at once with sshd's message.
fn check_config(sshd: &Path, config: &Path) {
    let out = Command::new(sshd)
        .arg("-t")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HINT}", sshd.display()));
    assert!(
        out.status.success(),
        "sshd rejects its config {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn find_binary(candidates: &[&str], name: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (looked in {candidates:?}); {HINT}"))
}

fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    // Several tests may race to create it; only a final absence is an error.
    if let Err(e) = fs::create_dir_all(dir) {
        assert!(
            dir.is_dir(),
            "sshd needs its privilege separation dir {PRIVSEP_DIR} and it cannot be created ({e}); {HINT}"
        );
    }
    chmod(dir, 0o755);
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "ftpbridge-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}; {HINT}"));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen -lf key.pub` prints "256 SHA256:... comment (ED25519)".
fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_path(key))
        .output()
        .expect("run ssh-keygen -lf");
    assert!(out.status.success(), "ssh-keygen -lf failed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -lf output: {text:?}"))
        .to_string()
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn password_user_exists() -> bool {
    Command::new("getent")
        .args(["passwd", PASSWORD_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether any process has `pid` as its parent (scans /proc/*/stat).
fn has_children(pid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .is_some_and(|ppid| ppid == pid.to_string())
    })
}
