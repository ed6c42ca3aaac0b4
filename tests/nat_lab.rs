//! The NAT lab: the problem ftpbridge exists for, reproduced with real
//! network namespaces, a real NAT router (iptables SNAT with `statistic`),
//! the real `ftpbridge` binary, a real OpenSSH upstream and curl.
//!
//! A client behind a router that sends each new connection out through one
//! of two egress addresses (as Azure/AWS/GCP NAT gateways do) opens its
//! control connection from one address and its data connection, often, from
//! the other. The tests show, per data-source policy and SNAT mode:
//!
//! - `same-ip` (every FTP server's default) refuses the data connection and
//!   the client gets 425 within seconds, not after a timeout;
//! - `cidr` covering both egress addresses lets every LIST/RETR/STOR through;
//! - FTPS with `tls-session` lets every transfer through, while a data
//!   connection from an attacker without the TLS session is refused;
//! - a proxy behind destination NAT that announces its private address
//!   breaks PASV clients, and `passive_address` fixes it;
//! - one passive port serves two clients at different addresses at once;
//! - with HAProxy in front (`send-proxy-v2` on the control port and the
//!   passive range) the policy judges the addresses the PROXY headers name;
//! - vsftpd (Debian package) in the same topology, for comparison: its
//!   default refuses like `same-ip`, and `pasv_promiscuous=YES` lets an
//!   attacker take the listing.
//!
//! Counts of transfers tried and succeeded are printed and written to
//! `target/tmp/nat-lab-report.md` (`bench/nat-lab.sh` runs more rounds).
//! Needs root (see `common::netns`).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::ftps::{FtpsControl, all_versions, client_config};
use common::netns::{
    ATTACKER, ChildGuard, EGRESS_A, EGRESS_B, NatLab, Netns, SERVER, Snat, VIP, at,
    skip_unless_available,
};
use common::pki::TestPki;
use common::proxy::{PASSWORD, alice_config, random_bytes, sha256, sha256_file};
use common::raw::RawFtp;
use common::source::{epsv_port, pasv_addr};
use common::sshd::Sshd;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const FTP_PORT: u16 = 2121;
/// Transfers per SNAT mode: this many LIST, RETR and STOR each.
/// (`NAT_LAB_ROUNDS` overrides it: `bench/nat-lab.sh` runs more.)
const ROUNDS: usize = 4;
/// No single transfer may take longer: a refusal must be quick, never a hang.
const TRANSFER_LIMIT: Duration = Duration::from_secs(15);
/// `data_connect_timeout` in the lab: a 425 well before it is a fast refusal.
const DATA_CONNECT_TIMEOUT: &str = "30s";

/// The proxy (the real binary) and its sshd upstream, both in the server
/// namespace; killed before the lab's namespaces are deleted.
struct Server {
    proxy: ChildGuard,
    sshd: Sshd,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(lab: &NatLab, listener_extra: &str) -> Server {
        Server::start_on(lab, at(SERVER, FTP_PORT), listener_extra)
    }

    /// The proxy listening on `bind` (in the server namespace).
    fn start_on(lab: &NatLab, bind: SocketAddr, listener_extra: &str) -> Server {
        // Started from a thread inside the server namespace, sshd listens on
        // that namespace's loopback, where the proxy finds it.
        let sshd = lab.server.run(Sshd::start);
        let dir = tempfile::tempdir().unwrap();
        let toml = alice_config(
            &sshd,
            &format!("data_connect_timeout = \"{DATA_CONNECT_TIMEOUT}\"\n{listener_extra}"),
            "",
        )
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"{bind}\""));
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, toml).unwrap();
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = lab
            .server
            .command(env!("CARGO_BIN_EXE_ftpbridge"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ftpbridge");
        let proxy = ChildGuard::new(child, log_path);
        std::fs::write(sshd.data_dir().join("alice").join("payload.bin"), payload()).unwrap();
        if let Err(e) = lab.server.wait_for_listener(bind, Duration::from_secs(20)) {
            panic!("ftpbridge did not start: {e}\n{}", proxy.log_tail(30));
        }
        Server {
            proxy,
            sshd,
            _dir: dir,
        }
    }

    fn alice_dir(&self) -> PathBuf {
        self.sshd.data_dir().join("alice")
    }
}

fn payload() -> Vec<u8> {
    random_bytes(150_000, 77)
}

/// How a client reaches the server: where, as whom, which curl options.
struct Client<'a> {
    /// The namespace curl runs in.
    ns: &'a Netns,
    host: IpAddr,
    /// `user:password` for the URL (percent-encoded).
    login: String,
    curl_options: Vec<String>,
    upload: PathBuf,
    /// Where STOR puts its file, relative to the login directory.
    upload_prefix: &'static str,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    tried: usize,
    succeeded: usize,
    /// The slowest failure: a refusal must be fast.
    slowest_failure: Duration,
    errors: Vec<String>,
}

impl Tally {
    /// Every transfer succeeded; otherwise fails with the errors and `log`.
    fn assert_all_succeeded(&self, what: impl std::fmt::Debug, log: String) {
        assert_eq!(
            self.succeeded, self.tried,
            "{what:?}: {:?}\n{log}",
            self.errors
        );
    }

    fn cell(&self) -> String {
        format!("{}/{}", self.succeeded, self.tried)
    }

    /// Both tallies in one.
    fn plus(mut self, other: Tally) -> Tally {
        self.tried += other.tried;
        self.succeeded += other.succeeded;
        self.slowest_failure = self.slowest_failure.max(other.slowest_failure);
        self.errors.extend(other.errors);
        self
    }
}

impl<'a> Client<'a> {
    /// Alice on ftpbridge (the SFTP user behind it).
    fn alice(ns: &'a Netns, host: IpAddr, curl_options: Vec<String>, upload: PathBuf) -> Self {
        Client {
            ns,
            host,
            login: format!("alice:{}", PASSWORD.replace(' ', "%20")),
            curl_options,
            upload,
            upload_prefix: "",
        }
    }

    /// vsftpd's anonymous user, uploading into `incoming/`.
    fn anonymous(ns: &'a Netns, upload: PathBuf) -> Self {
        Client {
            ns,
            host: IpAddr::V4(SERVER),
            login: "anonymous:lab".into(),
            curl_options: vec![],
            upload,
            upload_prefix: "incoming/",
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://{}@{}:{FTP_PORT}/{path}", self.login, self.host)
    }

    /// One curl run in the client namespace: success, elapsed, stdout, stderr.
    fn curl(&self, args: &[String]) -> (bool, Duration, Vec<u8>, String) {
        let started = Instant::now();
        let output = self
            .ns
            .command("curl")
            .args(["-sS", "--max-time"])
            .arg(TRANSFER_LIMIT.as_secs().to_string())
            .args(&self.curl_options)
            .args(args)
            .output()
            .expect("run curl (install it with scripts/test.sh)");
        (
            output.status.success(),
            started.elapsed(),
            output.stdout,
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        )
    }

    /// [`rounds`] times LIST, RETR and STOR, each in its own session; every
    /// result is checked byte for byte (uploads in `stored`, where the
    /// server keeps them).
    fn transfers(&self, stored: &Path) -> Tally {
        let mut tally = Tally::default();
        let expected = sha256(&payload());
        for round in 0..rounds() {
            let name = format!("up-{}-{round}.bin", unique());
            let runs: [(&str, Vec<String>); 3] = [
                ("LIST", vec![self.url("")]),
                ("RETR", vec![self.url("payload.bin")]),
                (
                    "STOR",
                    vec![
                        "-T".into(),
                        self.upload.display().to_string(),
                        self.url(&format!("{}{name}", self.upload_prefix)),
                    ],
                ),
            ];
            for (what, args) in runs {
                let (ok, elapsed, stdout, stderr) = self.curl(&args);
                let verified = ok
                    && match what {
                        "LIST" => String::from_utf8_lossy(&stdout).contains("payload.bin"),
                        "RETR" => sha256(&stdout) == expected,
                        _ => {
                            let stored = stored.join(&name);
                            stored.exists() && sha256_file(&stored) == expected
                        }
                    };
                tally.tried += 1;
                if verified {
                    tally.succeeded += 1;
                } else {
                    tally.slowest_failure = tally.slowest_failure.max(elapsed);
                    if tally.errors.len() < 3 {
                        tally
                            .errors
                            .push(format!("{what}: {stderr} ({elapsed:.1?})"));
                    }
                }
            }
        }
        tally
    }
}

/// `ROUNDS`, or the `NAT_LAB_ROUNDS` environment variable.
fn rounds() -> usize {
    std::env::var("NAT_LAB_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(ROUNDS)
}

/// A number no other transfer of this test binary uses (upload names).
fn unique() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn upload_file(dir: &Path) -> PathBuf {
    let path = dir.join("upload.bin");
    std::fs::write(&path, payload()).unwrap();
    path
}

/// The counts of every lab test, collected into one report.
static REPORT: Mutex<BTreeMap<(String, String), String>> = Mutex::new(BTreeMap::new());

fn record(server: &str, policy: &str, mode: Snat, tally: &Tally) {
    let line = format!(
        "| {server} | {policy} | {} | {} | {} |",
        mode.label(),
        tally.cell(),
        if tally.succeeded == tally.tried {
            "-".to_owned()
        } else {
            format!(
                "slowest failure {:.1?}; {}",
                tally.slowest_failure,
                tally.errors.first().cloned().unwrap_or_default()
            )
        }
    );
    eprintln!("NAT lab: {line}");
    let mut report = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    report.insert(
        (format!("{server} {policy}"), mode.label().to_owned()),
        line,
    );
    let mut text = String::from(
        "# NAT lab: transfers succeeded / tried (LIST, RETR and STOR, one curl session each)\n\n\
         | server | data-source policy | SNAT mode | succeeded/tried | failures |\n\
         |---|---|---|---|---|\n",
    );
    for line in report.values() {
        text.push_str(line);
        text.push('\n');
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nat-lab-report.md");
    let _ = std::fs::write(path, text);
}

/// The lab, or `return` from the test when it cannot run here: not root,
/// tools missing, or namespaces refused (a container without
/// CAP_SYS_ADMIN). Under CI (`CI` set) the lab must run: it panics instead.
macro_rules! lab_or_skip {
    ($name:expr) => {{
        if skip_unless_available($name) {
            return;
        }
        match NatLab::build() {
            Ok(lab) => lab,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{}: cannot build the NAT lab: {e}", $name)
            }
            Err(e) => {
                eprintln!("{}: skipped: cannot build the NAT lab: {e}", $name);
                return;
            }
        }
    }};
}

#[test]
fn the_router_really_alternates_egress_addresses() {
    let lab = lab_or_skip!("the_router_really_alternates_egress_addresses");
    // Connections queue in the listener's backlog; then their sources are read.
    let listener = lab
        .server
        .run(|| std::net::TcpListener::bind(at(SERVER, 7000)).unwrap());
    lab.client.run(|| {
        for _ in 0..4 {
            drop(std::net::TcpStream::connect(at(SERVER, 7000)).unwrap());
        }
    });
    let seen: Vec<IpAddr> = (0..4).map(|_| listener.accept().unwrap().1.ip()).collect();
    let a = IpAddr::V4(EGRESS_A);
    let b = IpAddr::V4(EGRESS_B);
    assert_eq!(seen, vec![a, b, a, b], "nth SNAT alternates per connection");
}

#[test]
fn same_ip_refuses_the_other_egress_address_with_a_fast_425() {
    let lab = lab_or_skip!("same_ip_refuses_the_other_egress_address_with_a_fast_425");
    let server = Server::start(&lab, "");
    let dir = tempfile::tempdir().unwrap();
    let client = Client::alice(
        &lab.client,
        IpAddr::V4(SERVER),
        vec![],
        upload_file(dir.path()),
    );

    // The exact exchange: 150, then 425 within seconds.
    lab.set_snat(Snat::Nth).unwrap();
    let (code, waited) = lab.client.block_on(|| async {
        let (mut raw, _) = RawFtp::connect(at(SERVER, FTP_PORT)).await;
        raw.login("alice", PASSWORD).await;
        let port = epsv_port(&raw.cmd("EPSV").await);
        // The control connection left as one egress address, this one as the other.
        let data = TcpStream::connect(at(SERVER, port)).await.unwrap();
        let started = Instant::now();
        assert_eq!(raw.cmd("RETR payload.bin").await.code, 150);
        let reply = raw.reply().await;
        drop(data);
        (reply.code, started.elapsed())
    });
    assert_eq!(code, 425, "{}", server.proxy.log_tail(20));
    assert!(
        waited < Duration::from_secs(10),
        "425 after {waited:?}: refused connections must fail fast (data_connect_timeout is {DATA_CONNECT_TIMEOUT})"
    );
    let log = std::fs::read_to_string(&server.proxy.log).unwrap();
    assert!(
        log.contains("refused a passive data connection") && log.contains("\"policy\""),
        "the refusal is logged with both addresses:\n{}",
        server.proxy.log_tail(20)
    );

    for mode in [Snat::Nth, Snat::Random, Snat::Single] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server.alice_dir());
        record("ftpbridge", "same-ip (default)", mode, &tally);
        assert!(
            tally.slowest_failure < TRANSFER_LIMIT - Duration::from_secs(3),
            "{mode:?}: a failure took {:?}: {:?}",
            tally.slowest_failure,
            tally.errors
        );
        match mode {
            Snat::Nth => assert_eq!(
                tally.succeeded, 0,
                "every data connection leaves by the other address"
            ),
            Snat::Single => assert_eq!(
                tally.succeeded, tally.tried,
                "one egress address: same-ip is enough: {:?}",
                tally.errors
            ),
            Snat::Random => {}
        }
    }
}

#[test]
fn cidr_covering_both_egress_addresses_lets_every_transfer_through() {
    let lab = lab_or_skip!("cidr_covering_both_egress_addresses_lets_every_transfer_through");
    let server = Server::start(
        &lab,
        &format!(
            "data_source = [\"same-ip\", \"cidr\"]\ndata_source_cidrs = [\"{EGRESS_A}/32\", \"{EGRESS_B}/32\"]"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let client = Client::alice(
        &lab.client,
        IpAddr::V4(SERVER),
        vec![],
        upload_file(dir.path()),
    );
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server.alice_dir());
        record(
            "ftpbridge",
            "same-ip + cidr (both egress IPs)",
            mode,
            &tally,
        );
        tally.assert_all_succeeded(mode, server.proxy.log_tail(20));
    }
    // The attacker's address is in neither rule: it gets nothing, and the
    // transfer it tried to take fails fast.
    let (code, stolen) = attacker_takes_a_clear_port(&lab, "alice", PASSWORD);
    assert_eq!(stolen, 0);
    assert_eq!(code, 425);
}

/// A client session in the client namespace opens a passive port and
/// starts a listing; an attacker connects to the port from the attacker
/// namespace. Returns the listing's final reply and the bytes the attacker
/// got. (vsftpd sends its 150 only once a data connection arrived, so the
/// client does not wait for it before the attacker's turn.)
fn attacker_takes_a_clear_port(lab: &NatLab, user: &str, password: &str) -> (u16, usize) {
    std::thread::scope(|scope| {
        // Owned by this closure: if it panics, the client thread's `recv`
        // fails instead of waiting forever.
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let client = scope.spawn(move || {
            lab.client.block_on(move || async move {
                let (mut raw, _) = RawFtp::connect(at(SERVER, FTP_PORT)).await;
                raw.login(user, password).await;
                let port = epsv_port(&raw.cmd("EPSV").await);
                raw.send(b"NLST").await;
                port_tx.send(port).unwrap();
                go_rx.recv().expect("the attacker's turn ended");
                loop {
                    let reply = raw.reply().await;
                    if reply.code >= 200 {
                        break reply.code;
                    }
                }
            })
        });
        let port = port_rx.recv().expect("the client's passive port");
        let stolen = lab.attacker.block_on(|| steal(port, None));
        go_tx.send(()).unwrap();
        (client.join().unwrap(), stolen)
    })
}

/// Connects to the passive `port` from wherever this runs and reads what
/// comes, through TLS with a client that has no session when `tls` is set.
/// A refused connection may be reset before `connect` even returns.
async fn steal(port: u16, tls: Option<&Path>) -> usize {
    let Ok(mut stream) = TcpStream::connect(at(SERVER, port)).await else {
        return 0;
    };
    let mut got = Vec::new();
    match tls {
        Some(ca) => {
            let stranger = client_config(ca, all_versions());
            if let Ok(mut tls) = FtpsControl::secure_data(stream, stranger).await {
                let _ = tls.read_to_end(&mut got).await;
            }
        }
        None => {
            let _ = stream.read_to_end(&mut got).await;
        }
    }
    got.len()
}

#[test]
fn tls_session_lets_every_ftps_transfer_through_and_refuses_an_attacker() {
    let lab = lab_or_skip!("tls_session_lets_every_ftps_transfer_through_and_refuses_an_attacker");
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate_for(pki_dir.path(), &[&SERVER.to_string(), "localhost"]);
    let server = Server::start(
        &lab,
        &format!(
            "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = \"all\"\ndata_source = [\"same-ip\", \"tls-session\"]",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let client = Client::alice(
        &lab.client,
        IpAddr::V4(SERVER),
        vec![
            "--ssl-reqd".into(),
            "--cacert".into(),
            pki.ca.display().to_string(),
        ],
        upload_file(dir.path()),
    );
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server.alice_dir());
        record("ftpbridge", "same-ip + tls-session (FTPS)", mode, &tally);
        tally.assert_all_succeeded(mode, server.proxy.log_tail(30));
    }
    let log = std::fs::read_to_string(&server.proxy.log).unwrap();
    assert!(
        log.contains("accepted by TLS session"),
        "some data connections left by the other address and were admitted by their TLS session"
    );

    // An attacker that reaches the port first, without the session: refused,
    // and the client (from the other egress address) still gets its listing.
    lab.set_snat(Snat::Nth).unwrap();
    let ca = pki.ca.as_path();
    let (code, listing, stolen) = std::thread::scope(|scope| {
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let client = scope.spawn(move || {
            lab.client.block_on(move || async move {
                let config = client_config(ca, all_versions());
                let mut control =
                    FtpsControl::connect_explicit(at(SERVER, FTP_PORT), config.clone()).await;
                control.login("alice", PASSWORD).await;
                control.protect_data().await;
                let port = epsv_port(&control.cmd("EPSV").await);
                assert_eq!(control.cmd("NLST").await.code, 150);
                port_tx.send(port).unwrap();
                go_rx.recv().expect("the attacker's turn ended");
                let tcp = TcpStream::connect(at(SERVER, port)).await.unwrap();
                let mut tls = FtpsControl::secure_data(tcp, config).await.unwrap();
                let mut listing = Vec::new();
                tls.read_to_end(&mut listing).await.unwrap();
                (control.reply().await.code, listing)
            })
        });
        let port = port_rx.recv().expect("the client's passive port");
        let stolen = lab.attacker.block_on(|| steal(port, Some(ca)));
        go_tx.send(()).unwrap();
        let (code, listing) = client.join().unwrap();
        (code, listing, stolen)
    });
    assert_eq!(stolen, 0, "the attacker got nothing");
    assert_eq!(code, 226, "{}", server.proxy.log_tail(20));
    assert!(String::from_utf8_lossy(&listing).contains("payload.bin"));
    let log = std::fs::read_to_string(&server.proxy.log).unwrap();
    assert!(
        log.contains(&ATTACKER.to_string()) && log.contains("\"tls_resumption\""),
        "the attacker's refusal is logged:\n{}",
        server.proxy.log_tail(20)
    );
}

#[test]
fn passive_address_fixes_a_proxy_behind_nat_that_announces_its_private_address() {
    let lab =
        lab_or_skip!("passive_address_fixes_a_proxy_behind_nat_that_announces_its_private_address");
    lab.hide_server_behind_vip().unwrap();
    lab.set_snat(Snat::Single).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // PASV only, and trust the address in the 227 (curl would otherwise
    // substitute the control connection's address, as some clients do).
    let pasv_client = Client::alice(
        &lab.client,
        IpAddr::V4(VIP),
        vec!["--disable-epsv".into(), "--no-ftp-skip-pasv-ip".into()],
        upload_file(dir.path()),
    );
    let epsv_client = Client::alice(
        &lab.client,
        IpAddr::V4(VIP),
        vec![],
        pasv_client.upload.clone(),
    );
    // What PASV announces to a client that reached the proxy as the VIP.
    let announced = || {
        lab.client.block_on(|| async {
            let (mut raw, _) = RawFtp::connect(at(VIP, FTP_PORT)).await;
            raw.login("alice", PASSWORD).await;
            pasv_addr(&raw.cmd("PASV").await).ip()
        })
    };
    {
        let server = Server::start(&lab, "");
        assert_eq!(
            announced(),
            IpAddr::V4(SERVER),
            "auto announces the address the proxy sees: its private one"
        );
        let tally = pasv_client.transfers(&server.alice_dir());
        record(
            "ftpbridge",
            "behind DNAT, passive_address = auto (PASV)",
            Snat::Single,
            &tally,
        );
        assert_eq!(tally.succeeded, 0, "the private address is unreachable");
        let tally = epsv_client.transfers(&server.alice_dir());
        record(
            "ftpbridge",
            "behind DNAT, passive_address = auto (EPSV)",
            Snat::Single,
            &tally,
        );
        assert_eq!(
            tally.succeeded, tally.tried,
            "EPSV names no address: {:?}",
            tally.errors
        );
    }
    let server = Server::start(&lab, &format!("passive_address = \"{VIP}\""));
    assert_eq!(announced(), IpAddr::V4(VIP));
    let tally = pasv_client.transfers(&server.alice_dir());
    record(
        "ftpbridge",
        "behind DNAT, passive_address = VIP (PASV)",
        Snat::Single,
        &tally,
    );
    tally.assert_all_succeeded(Snat::Single, server.proxy.log_tail(20));
}

/// Kubernetes Services expose a handful of ports: one passive port serves
/// two clients at the same time when their addresses tell their data
/// connections apart (the client behind the NAT and one without NAT).
#[test]
fn one_passive_port_serves_two_clients_at_once() {
    let lab = lab_or_skip!("one_passive_port_serves_two_clients_at_once");
    lab.set_snat(Snat::Single).unwrap();
    // The server namespace is the lab's own: nothing else uses this port.
    const PORT: u16 = 40000;
    let server = Server::start(&lab, &format!("passive_ports = \"{PORT}-{PORT}\""));
    let expected = sha256(&payload());

    // Both sessions hold the port at once, then both transfer.
    let meeting = (Mutex::new(0usize), Condvar::new());
    std::thread::scope(|scope| {
        let sessions: Vec<_> = [&lab.client, &lab.attacker]
            .into_iter()
            .map(|ns| {
                let meeting = &meeting;
                scope.spawn(move || {
                    ns.block_on(move || async move {
                        let (mut raw, _) = RawFtp::connect(at(SERVER, FTP_PORT)).await;
                        raw.login("alice", PASSWORD).await;
                        assert_eq!(raw.cmd("TYPE I").await.code, 200);
                        let port = epsv_port(&raw.cmd("EPSV").await);
                        meet(meeting, 2);
                        let data = TcpStream::connect(at(SERVER, port)).await.unwrap();
                        assert_eq!(raw.cmd("RETR payload.bin").await.code, 150);
                        let body = RawFtp::read_all(data).await;
                        (port, raw.reply().await.code, sha256(&body))
                    })
                })
            })
            .collect();
        for session in sessions {
            let (port, code, body) = session.join().unwrap();
            assert_eq!(port, PORT);
            assert_eq!(code, 226, "{}", server.proxy.log_tail(20));
            assert_eq!(body, expected);
        }
    });

    // And curl from both namespaces at the same time, many sessions each.
    let dir = tempfile::tempdir().unwrap();
    let upload = upload_file(dir.path());
    let tally = std::thread::scope(|scope| {
        let runs: Vec<_> = [&lab.client, &lab.attacker]
            .into_iter()
            .map(|ns| {
                let client = Client::alice(ns, IpAddr::V4(SERVER), vec![], upload.clone());
                let stored = server.alice_dir();
                scope.spawn(move || client.transfers(&stored))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap())
            .fold(Tally::default(), Tally::plus)
    });
    record(
        "ftpbridge",
        "same-ip, ONE passive port, two clients at once",
        Snat::Single,
        &tally,
    );
    tally.assert_all_succeeded(Snat::Single, server.proxy.log_tail(20));
}

/// Waits until `n` threads arrived here (or fails after a while).
fn meet(meeting: &(Mutex<usize>, Condvar), n: usize) {
    let (arrived, all_here) = meeting;
    let mut count = arrived.lock().unwrap_or_else(|e| e.into_inner());
    *count += 1;
    all_here.notify_all();
    let (_count, waited) = all_here
        .wait_timeout_while(count, Duration::from_secs(30), |count| *count < n)
        .unwrap_or_else(|e| e.into_inner());
    assert!(!waited.timed_out(), "the other session never got its port");
}

/// vsftpd (Debian package) in the server namespace, serving an anonymous
/// tree with `payload.bin` and a writable `incoming/`.
struct Vsftpd {
    guard: ChildGuard,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vsftpd {
    /// Started with `extra` configuration lines, or `None` when vsftpd is
    /// not installed (outside CI).
    fn start(lab: &NatLab, extra: &str) -> Option<Vsftpd> {
        let Some(binary) = ["/usr/sbin/vsftpd", "/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            if std::env::var_os("CI").is_some() {
                panic!("vsftpd is not installed (scripts/test.sh installs it)");
            }
            eprintln!("vsftpd is not installed: skipped (scripts/test.sh installs it)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // The anonymous root must not be writable by the `ftp` user (vsftpd
        // refuses that); uploads go to `incoming/`, which is.
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("payload.bin"), payload()).unwrap();
        let incoming = root.join("incoming");
        std::fs::create_dir(&incoming).unwrap();
        let chown = std::process::Command::new("chown")
            .arg("ftp")
            .arg(&incoming)
            .status()
            .expect("chown");
        assert!(
            chown.success(),
            "chown ftp (the vsftpd package creates the user)"
        );
        // Only what the lab needs differs from the defaults: listen on the
        // lab address in the foreground, anonymous logins and uploads. The
        // data-connection check (`pasv_promiscuous=NO`) is the default.
        let config = dir.path().join("vsftpd.conf");
        std::fs::write(
            &config,
            format!(
                "listen=YES\nlisten_ipv6=NO\nlisten_address={SERVER}\nlisten_port={FTP_PORT}\n\
                 background=NO\nanonymous_enable=YES\nanon_root={}\nlocal_enable=NO\n\
                 write_enable=YES\nanon_upload_enable=YES\nanon_umask=022\n\
                 seccomp_sandbox=NO\nxferlog_enable=NO\n\
                 secure_chroot_dir=/var/run/vsftpd/empty\n{extra}",
                root.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
        let log_path = dir.path().join("vsftpd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = lab
            .server
            .command(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vsftpd");
        let guard = ChildGuard::new(child, log_path);
        if let Err(e) = lab
            .server
            .wait_for_listener(at(SERVER, FTP_PORT), Duration::from_secs(10))
        {
            panic!("vsftpd did not start: {e}\n{}", guard.log_tail(10));
        }
        Some(Vsftpd {
            guard,
            root,
            _dir: dir,
        })
    }
}

/// vsftpd with its defaults (`pasv_promiscuous=NO`: the data connection
/// must come from the control connection's address) in the same topology,
/// for the comparison the issue asks for.
#[test]
fn vsftpd_default_in_the_same_topology() {
    let lab = lab_or_skip!("vsftpd_default_in_the_same_topology");
    let Some(vsftpd) = Vsftpd::start(&lab, "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = Client::anonymous(&lab.client, upload_file(dir.path()));
    for mode in [Snat::Nth, Snat::Random, Snat::Single] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&vsftpd.root.join("incoming"));
        record("vsftpd", "default (pasv_promiscuous=NO)", mode, &tally);
        match mode {
            Snat::Nth => assert_eq!(
                tally.succeeded, 0,
                "vsftpd refuses the other address too: {:?}",
                tally.errors
            ),
            Snat::Single => tally.assert_all_succeeded(Snat::Single, vsftpd.guard.log_tail(10)),
            Snat::Random => {}
        }
    }
}

/// vsftpd's only other choice, `pasv_promiscuous=YES`: every transfer gets
/// through, and so does an attacker who reaches the passive port first.
#[test]
fn vsftpd_promiscuous_lets_everything_through_including_an_attacker() {
    let lab = lab_or_skip!("vsftpd_promiscuous_lets_everything_through_including_an_attacker");
    let Some(vsftpd) = Vsftpd::start(&lab, "pasv_promiscuous=YES\n") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = Client::anonymous(&lab.client, upload_file(dir.path()));
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&vsftpd.root.join("incoming"));
        record("vsftpd", "pasv_promiscuous=YES", mode, &tally);
    }
    let (code, stolen) = attacker_takes_a_clear_port(&lab, "anonymous", "lab");
    assert!(stolen > 0, "the attacker got the listing");
    assert_eq!(code, 226, "and the client is told all went well");
}

/// HAProxy (Debian package) in the server namespace in front of the proxy,
/// TCP mode with `send-proxy-v2` on the control port and on the passive
/// range: every connection reaches the proxy from 127.0.0.1, and only the
/// PROXY header says which egress address the client used.
struct Haproxy {
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Where the proxy listens behind HAProxy, and HAProxy's passive range
/// (forwarded port for port to the proxy's, on 127.0.0.1).
const BEHIND_HAPROXY: u16 = 2122;
const HAPROXY_PASSIVE: (u16, u16) = (41000, 41007);

impl Haproxy {
    fn start(lab: &NatLab) -> Option<Haproxy> {
        let Some(binary) = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            if std::env::var_os("CI").is_some() {
                panic!("haproxy is not installed (scripts/test.sh installs it)");
            }
            eprintln!("haproxy is not installed: skipped (scripts/test.sh installs it)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let (low, high) = HAPROXY_PASSIVE;
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n\
                 defaults\n\
                 \x20   mode tcp\n\
                 \x20   timeout connect 5s\n\
                 \x20   timeout client 60s\n\
                 \x20   timeout server 60s\n\
                 frontend ftp_control\n\
                 \x20   bind {SERVER}:{FTP_PORT}\n\
                 \x20   default_backend ftp_control\n\
                 backend ftp_control\n\
                 \x20   server ftpbridge 127.0.0.1:{BEHIND_HAPROXY} send-proxy-v2\n\
                 frontend ftp_passive\n\
                 \x20   bind {SERVER}:{low}-{high}\n\
                 \x20   default_backend ftp_passive\n\
                 backend ftp_passive\n\
                 \x20   # No port: each connection goes to the port it arrived on.\n\
                 \x20   server ftpbridge 127.0.0.1 send-proxy-v2\n"
            ),
        )
        .unwrap();
        let log_path = dir.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = lab
            .server
            .command(binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let guard = ChildGuard::new(child, log_path);
        if let Err(e) = lab
            .server
            .wait_for_listener(at(SERVER, FTP_PORT), Duration::from_secs(10))
        {
            panic!("haproxy did not start: {e}\n{}", guard.log_tail(10));
        }
        Some(Haproxy {
            _guard: guard,
            _dir: dir,
        })
    }
}

/// The same NAT, with HAProxy in front: the proxy sees only HAProxy's
/// address, and the policy works on the clients' addresses from the PROXY
/// headers of the control and of the data connections.
#[test]
fn behind_haproxy_the_policy_judges_the_addresses_the_proxy_headers_name() {
    let lab = lab_or_skip!("behind_haproxy_the_policy_judges_the_addresses_the_proxy_headers_name");
    let Some(_haproxy) = Haproxy::start(&lab) else {
        return;
    };
    let (low, high) = HAPROXY_PASSIVE;
    let behind = at(std::net::Ipv4Addr::LOCALHOST, BEHIND_HAPROXY);
    let proxied = format!(
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\npassive_ports = \"{low}-{high}\""
    );
    let dir = tempfile::tempdir().unwrap();
    let client = Client::alice(
        &lab.client,
        IpAddr::V4(SERVER),
        vec![],
        upload_file(dir.path()),
    );

    {
        let server = Server::start_on(&lab, behind, &proxied);
        lab.set_snat(Snat::Nth).unwrap();
        let tally = client.transfers(&server.alice_dir());
        record(
            "ftpbridge behind HAProxy",
            "same-ip (default)",
            Snat::Nth,
            &tally,
        );
        assert_eq!(
            tally.succeeded, 0,
            "the data connection's header names the other egress address: {:?}",
            tally.errors
        );
        let log = std::fs::read_to_string(&server.proxy.log).unwrap();
        assert!(
            log.contains(&EGRESS_B.to_string()) && log.contains(&EGRESS_A.to_string()),
            "the refusals name the clients' addresses, not HAProxy's:\n{}",
            server.proxy.log_tail(20)
        );
    }

    let server = Server::start_on(
        &lab,
        behind,
        &format!(
            "{proxied}\ndata_source = [\"same-ip\", \"cidr\"]\n\
             data_source_cidrs = [\"{EGRESS_A}/32\", \"{EGRESS_B}/32\"]"
        ),
    );
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server.alice_dir());
        record(
            "ftpbridge behind HAProxy",
            "same-ip + cidr (both egress IPs)",
            mode,
            &tally,
        );
        tally.assert_all_succeeded(mode, server.proxy.log_tail(20));
    }
}
