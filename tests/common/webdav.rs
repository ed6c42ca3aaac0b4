//! Real WebDAV servers for integration tests: nginx (dav + dav-ext modules,
//! behind TLS with a CA generated here, HTTP/2 offered through ALPN) and
//! Apache httpd with mod_dav_fs (plain HTTP on loopback).
//!
//! Each [`DavServer`] listens on a random 127.0.0.1 port and keeps its
//! config, certificates, htpasswd, logs and served files in its own temp
//! dir. It runs as a single process (nginx `master_process off`, Apache
//! `-X`), so dropping it kills exactly that PID, waits for it and removes
//! the temp dir. Needs Debian's `nginx`, `libnginx-mod-http-dav-ext`,
//! `apache2` and `openssl`; `scripts/test.sh` installs them.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use super::clients::path_str;
use super::pki::TestPki;

/// The service account in every server's password file (`auth = "basic"`).
pub const SERVICE_USER: &str = "svc";
pub const SERVICE_PASSWORD: &str = "svc-pass&word";

const NGINX: &str = "/usr/sbin/nginx";
const NGINX_DAV_EXT: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";
const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
const START_ATTEMPTS: u32 = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const HINT: &str =
    "run `scripts/test.sh` (as root) to install nginx, libnginx-mod-http-dav-ext, apache2";

/// Which server, with which options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// nginx over TLS (HTTP/2 and HTTP/1.1), basic auth.
    Nginx,
    /// nginx over TLS that also requires a client certificate from the test CA.
    NginxMutualTls,
    /// Apache httpd mod_dav_fs over plain HTTP, basic auth.
    Apache,
}

/// A running WebDAV server; killed (and waited for) on drop.
pub struct DavServer {
    flavor: Flavor,
    child: Option<Child>,
    port: u16,
    files: PathBuf,
    pki: TestPki,
    log: PathBuf,
    // Last field: removed after the process is gone.
    dir: TempDir,
}

impl DavServer {
    pub fn nginx() -> DavServer {
        DavServer::start(Flavor::Nginx)
    }

    pub fn apache() -> DavServer {
        DavServer::start(Flavor::Apache)
    }

    /// Starts `flavor`; panics with the log tail if it cannot start.
    pub fn start(flavor: Flavor) -> DavServer {
        let dir = tempfile::Builder::new()
            .prefix("ftpbridge-dav-")
            .tempdir()
            .expect("create the server's temp dir");
        let root = dir.path().to_path_buf();
        // Served files: <root>/www/dav/<user>/…, the URL path /dav/<user>/….
        let files = root.join("www").join("dav");
        fs::create_dir_all(&files).expect("create the served dir");
        for sub in ["tmp", "logs"] {
            fs::create_dir_all(root.join(sub)).expect("create a work dir");
        }
        let pki = TestPki::generate(&root);
        write_htpasswd(flavor, &root.join("htpasswd"));
        let log = root.join("logs").join("error.log");

        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let (program, args, config) = match flavor {
                Flavor::Nginx | Flavor::NginxMutualTls => {
                    let config = root.join("nginx.conf");
                    fs::write(&config, nginx_config(flavor, port, &root, &pki))
                        .expect("write nginx.conf");
                    let args = vec![
                        "-e".to_owned(),
                        path_str(&log).to_owned(),
                        "-c".to_owned(),
                        path_str(&config).to_owned(),
                    ];
                    (NGINX, args, config)
                }
                Flavor::Apache => {
                    let config = root.join("httpd.conf");
                    fs::write(&config, apache_config(port, &root)).expect("write httpd.conf");
                    let args = vec![
                        "-X".to_owned(),
                        "-f".to_owned(),
                        path_str(&config).to_owned(),
                    ];
                    (APACHE, args, config)
                }
            };
            let output = fs::File::create(root.join("logs").join("stdout.log"))
                .expect("create the stdout log");
            let mut child = Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("clone the log fd"))
                .stderr(output)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {HINT}"));
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return DavServer {
                        flavor,
                        child: Some(child),
                        port,
                        files,
                        pki,
                        log,
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!(
                        "attempt {attempt} (port {port}, {}): {why}\n{}\n{}",
                        config.display(),
                        tail(&log, 20),
                        tail(&root.join("logs").join("stdout.log"), 20)
                    ));
                }
            }
        }
        panic!(
            "{flavor:?} did not start after {START_ATTEMPTS} attempts ({HINT}):\n{}",
            failures.join("\n")
        );
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL template for `url =`: `https://127.0.0.1:port/dav/{user}/`.
    pub fn url_template(&self) -> String {
        let scheme = match self.flavor {
            Flavor::Nginx | Flavor::NginxMutualTls => "https",
            Flavor::Apache => "http",
        };
        format!("{scheme}://127.0.0.1:{}/dav/{{user}}/", self.port)
    }

    /// The directory holding `<user>/…` as the server stores it on disk.
    pub fn files(&self) -> &Path {
        &self.files
    }

    /// Creates the served directory of `user` and returns it.
    pub fn user_dir(&self, user: &str) -> PathBuf {
        let dir = self.files.join(user);
        fs::create_dir_all(&dir).expect("create the user's dir");
        dir
    }

    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The last lines of the server's error log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The access log (`"PUT /dav/… HTTP/2.0" 201`), to see which
    /// protocol and methods the proxy used.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("logs").join("access.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Users: the FTP test users with the FTP test password (for passthrough)
/// and the service account.
fn write_htpasswd(flavor: Flavor, path: &Path) {
    let users = [
        ("alice", super::proxy::PASSWORD),
        ("bob", super::proxy::PASSWORD),
        (SERVICE_USER, SERVICE_PASSWORD),
    ];
    let mut text = String::new();
    for (user, password) in users {
        let hash = match flavor {
            // nginx reads RFC 2307 style plain entries.
            Flavor::Nginx | Flavor::NginxMutualTls => format!("{{PLAIN}}{password}"),
            // Apache on Unix takes only hashed entries.
            Flavor::Apache => apr1_hash(password),
        };
        text.push_str(&format!("{user}:{hash}\n"));
    }
    fs::write(path, text).expect("write htpasswd");
}

fn apr1_hash(password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}; {HINT}"));
    assert!(out.status.success(), "openssl passwd -apr1 failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn nginx_config(flavor: Flavor, port: u16, root: &Path, pki: &TestPki) -> String {
    let client_auth = if flavor == Flavor::NginxMutualTls {
        format!(
            "ssl_client_certificate {};\n        ssl_verify_client on;",
            pki.ca.display()
        )
    } else {
        String::new()
    };
    let root = path_str(root);
    format!(
        r#"load_module {NGINX_DAV_EXT};
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/logs/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {client_auth}
        root {root}/www;
        location /dav/ {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
            auth_basic "ftpbridge test";
            auth_basic_user_file {root}/htpasswd;
        }}
    }}
}}
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    )
}

fn apache_config(port: u16, root: &Path) -> String {
    let root = path_str(root);
    let modules = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("authz_user_module", "mod_authz_user.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authn_file_module", "mod_authn_file.so"),
        ("auth_basic_module", "mod_auth_basic.so"),
        ("dav_module", "mod_dav.so"),
        ("dav_fs_module", "mod_dav_fs.so"),
    ]
    .iter()
    .map(|(name, file)| format!("LoadModule {name} {APACHE_MODULES}/{file}\n"))
    .collect::<String>();
    format!(
        r#"{modules}
ServerRoot {root}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/apache.pid
DefaultRuntimeDir {root}/tmp
ErrorLog {root}/logs/error.log
LogLevel warn
CustomLog {root}/logs/access.log "%h \"%r\" %>s"
DocumentRoot {root}/www
DavLockDB {root}/tmp/davlock
<Directory />
    Require all denied
</Directory>
<Directory {root}/www>
    Require all granted
</Directory>
<Location /dav/>
    Dav On
    AuthType Basic
    AuthName "ftpbridge test"
    AuthUserFile {root}/htpasswd
    Require valid-user
</Location>
"#
    )
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until the server accepts TCP on `port` (or exits).
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "not ready within {READY_TIMEOUT:?} (last error: {last})"
    ))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
