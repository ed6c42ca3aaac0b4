//! The proxy under test, running in-process on 127.0.0.1:0 in front of a
//! real OpenSSH server, plus small helpers the integration tests share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ftpbridge::config::{self, RuntimeConfig};
use ftpbridge::server::{self, BoundListener};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::sshd::Sshd;

/// The FTP password of every static test user.
pub const PASSWORD: &str = "s3cret pass";

/// Every wait in a test is bounded by this, so a hang fails with a message.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An argon2id hash of [`PASSWORD`], computed once per test binary.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| ftpbridge::auth::hash_password(PASSWORD).expect("hashing works"))
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub config: Arc<RuntimeConfig>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ftpbridge::server::ServerError>>>,
}

impl Proxy {
    pub async fn start(toml: &str) -> Proxy {
        Proxy::start_on(toml, "127.0.0.1:0").await
    }

    /// Like [`Proxy::start`], listening on `bind` (e.g. "[::1]:0").
    pub async fn start_on(toml: &str, bind: &str) -> Proxy {
        let config = Arc::new(
            config::from_toml(toml, std::iter::empty())
                .unwrap_or_else(|e| panic!("test config: {e}\n{toml}")),
        );
        let listener_config = config
            .listeners
            .first()
            .cloned()
            .expect("a [[listeners]] entry");
        let socket = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = socket.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            config.clone(),
            vec![BoundListener {
                config: listener_config,
                socket,
            }],
            async move {
                let _ = stopped.await;
            },
        ));
        Proxy {
            addr,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts the proxy from a config *file*, as `ftpbridge run` does: it
    /// reloads on SIGHUP and when the file changes, and serves the admin
    /// endpoint on a port of its own (returned). The file's first listener is
    /// replaced by one on 127.0.0.1:0.
    pub async fn start_from_file(path: &Path) -> (Proxy, SocketAddr) {
        let config = Arc::new(config::load(path).unwrap_or_else(|e| panic!("test config: {e}")));
        let listener_config = config
            .listeners
            .first()
            .cloned()
            .expect("a [[listeners]] entry");
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("local address");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin_addr = admin.local_addr().expect("admin address");
        let options = server::RunOptions {
            config_path: Some(path.to_path_buf()),
            admin: Some(admin),
            log: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run_with(
            options,
            config.clone(),
            vec![BoundListener {
                config: listener_config,
                socket,
            }],
            async move {
                let _ = stopped.await;
            },
        ));
        let proxy = Proxy {
            addr,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        (proxy, admin_addr)
    }

    /// Asks the proxy to shut down and returns at once.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// `ftp://user:password@127.0.0.1:port/path` (user and password URL-encoded).
    pub fn url(&self, user: &str, password: &str, path: &str) -> String {
        format!(
            "ftp://{}:{}@{}/{}",
            url_encode(user),
            url_encode(password),
            self.addr,
            path.trim_start_matches('/')
        )
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(TEST_TIMEOUT, task).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What an upstream block in a test config looks like.
pub enum UpstreamAuth<'a> {
    /// The harness's client key, as the user running the tests.
    Key,
    /// Service password credentials.
    Password {
        username: &'a str,
        password: &'a str,
    },
    /// The FTP credentials are passed to sshd.
    Passthrough,
}

/// Builds a test configuration: one listener (rebound to port 0 by
/// [`Proxy::start`]), one upstream `sftp` on `sshd` rooted at its data dir,
/// and `users` as TOML (use [`user_toml`]).
pub fn config_toml(
    sshd: &Sshd,
    auth: UpstreamAuth,
    listener_extra: &str,
    upstream_extra: &str,
    users: &str,
) -> String {
    let auth = match auth {
        UpstreamAuth::Key => format!(
            "auth = \"key\"\nusername = \"{}\"\nkey = \"{}\"",
            sshd.key_user(),
            sshd.client_key_path().display()
        ),
        UpstreamAuth::Password { username, password } => {
            format!("auth = \"password\"\nusername = \"{username}\"\npassword = \"{password}\"")
        }
        UpstreamAuth::Passthrough => "auth = \"passthrough\"".to_owned(),
    };
    format!(
        r#"
[shutdown]
drain_timeout = "2s"

[[listeners]]
name = "test"
bind = "127.0.0.1:0"
{listener_extra}

[[upstreams]]
name = "sftp"
kind = "sftp"
address = "{addr}"
host_key = "{fingerprint}"
{auth}
root = "{root}"
connect_timeout = "5s"
request_timeout = "20s"
{upstream_extra}

{users}
"#,
        addr = sshd.addr(),
        fingerprint = sshd.host_key_fingerprint(),
        root = sshd.data_dir().display(),
    )
}

/// A `[[users]]` entry with [`PASSWORD`].
pub fn user_toml(name: &str, root: &str) -> String {
    format!(
        "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nupstream = \"sftp\"\nroot = \"{root}\"\n",
        password_hash()
    )
}

/// Creates `<data>/alice` on `sshd` and returns the standard config for
/// user `alice` (key auth to the upstream), with extra listener and upstream lines.
pub fn alice_config(sshd: &Sshd, listener_extra: &str, upstream_extra: &str) -> String {
    std::fs::create_dir_all(sshd.data_dir().join("alice")).expect("create alice's root");
    config_toml(
        sshd,
        UpstreamAuth::Key,
        listener_extra,
        upstream_extra,
        &user_toml("alice", "/alice"),
    )
}

/// The standard fixture: sshd, a user `alice` rooted at `<data>/alice` with
/// key auth to the upstream, and the proxy.
pub struct Fixture {
    pub proxy: Proxy,
    pub sshd: Sshd,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with("", "").await
    }

    pub async fn start_with(listener_extra: &str, upstream_extra: &str) -> Fixture {
        Fixture::start_on("127.0.0.1:0", listener_extra, upstream_extra).await
    }

    /// The fixture with the proxy listening on `bind`.
    pub async fn start_on(bind: &str, listener_extra: &str, upstream_extra: &str) -> Fixture {
        let sshd = Sshd::start();
        let proxy =
            Proxy::start_on(&alice_config(&sshd, listener_extra, upstream_extra), bind).await;
        Fixture { proxy, sshd }
    }

    /// Alice's root directory on the upstream (the real filesystem).
    pub fn alice_dir(&self) -> PathBuf {
        self.sshd.data_dir().join("alice")
    }

    pub async fn ftp(&self) -> suppaftp::tokio::AsyncFtpStream {
        connect_and_login(self.proxy.addr, "alice", PASSWORD).await
    }
}

/// Connects with suppaftp and logs in, in binary mode.
pub async fn connect_and_login(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> suppaftp::tokio::AsyncFtpStream {
    let mut ftp =
        tokio::time::timeout(TEST_TIMEOUT, suppaftp::tokio::AsyncFtpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
    tokio::time::timeout(TEST_TIMEOUT, ftp.login(user, password))
        .await
        .expect("login in time")
        .expect("login");
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .expect("TYPE I");
    ftp
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Names in `dir` that look like our temporary upload files.
pub fn leftover_temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains("ftpbridge-upload"))
                .collect()
        })
        .unwrap_or_default()
}
