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
//! - vsftpd's default in the same topology, for comparison.
//!
//! Counts of transfers tried and succeeded are printed and written to
//! `target/tmp/nat-lab-report.md`. Needs root (see `common::netns`).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use common::ftps::{FtpsControl, all_versions, client_config};
use common::netns::{
    ATTACKER, ChildGuard, EGRESS_A, EGRESS_B, NatLab, SERVER, Snat, VIP, at, skip_unless_available,
};
use common::pki::TestPki;
use common::proxy::{PASSWORD, alice_config, random_bytes, sha256, sha256_file};
use common::raw::RawFtp;
use common::source::epsv_port;
use common::sshd::Sshd;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const FTP_PORT: u16 = 2121;
/// Transfers per SNAT mode: this many LIST, RETR and STOR each.
const ROUNDS: usize = 3;
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
        // Started from a thread inside the server namespace, sshd listens on
        // that namespace's loopback, where the proxy finds it.
        let sshd = lab.server.run(Sshd::start);
        let dir = tempfile::tempdir().unwrap();
        let toml = alice_config(
            &sshd,
            &format!("data_connect_timeout = \"{DATA_CONNECT_TIMEOUT}\"\n{listener_extra}"),
            "",
        )
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"{SERVER}:{FTP_PORT}\""),
        );
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
        if let Err(e) = lab
            .server
            .wait_for_listener(at(SERVER, FTP_PORT), Duration::from_secs(20))
        {
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

/// How a client reaches the proxy: where, and which curl options.
struct Client<'a> {
    lab: &'a NatLab,
    host: IpAddr,
    curl_options: Vec<String>,
    upload: PathBuf,
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
    fn cell(&self) -> String {
        format!("{}/{}", self.succeeded, self.tried)
    }
}

impl Client<'_> {
    fn url(&self, path: &str) -> String {
        format!(
            "ftp://alice:{}@{}:{FTP_PORT}/{path}",
            PASSWORD.replace(' ', "%20"),
            self.host
        )
    }

    /// One curl run in the client namespace: success, elapsed, stdout, stderr.
    fn curl(&self, args: &[String]) -> (bool, Duration, Vec<u8>, String) {
        let started = Instant::now();
        let output = self
            .lab
            .client
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

    /// `ROUNDS` times LIST, RETR and STOR, each in its own session; every
    /// result is checked byte for byte.
    fn transfers(&self, server: &Server) -> Tally {
        let mut tally = Tally::default();
        let expected = sha256(&payload());
        for round in 0..ROUNDS {
            let name = format!("up-{}-{round}.bin", unique());
            let runs: [(&str, Vec<String>); 3] = [
                ("LIST", vec![self.url("")]),
                ("RETR", vec![self.url("payload.bin")]),
                (
                    "STOR",
                    vec![
                        "-T".into(),
                        self.upload.display().to_string(),
                        self.url(&name),
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
                            let stored = server.alice_dir().join(&name);
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

fn record(policy: &str, mode: Snat, tally: &Tally) {
    let line = format!(
        "| {policy} | {} | {} | {} |",
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
    report.insert((policy.to_owned(), mode.label().to_owned()), line);
    let mut text = String::from(
        "# NAT lab: transfers succeeded / tried (LIST, RETR, STOR; one session each)\n\n\
         | policy | SNAT mode | succeeded/tried | failures |\n|---|---|---|---|\n",
    );
    for line in report.values() {
        text.push_str(line);
        text.push('\n');
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nat-lab-report.md");
    let _ = std::fs::write(path, text);
}

/// The lab, or `return` from the test when it cannot run here (outside CI).
macro_rules! lab_or_skip {
    ($name:expr) => {{
        if skip_unless_available($name) {
            return;
        }
        NatLab::build().unwrap_or_else(|e| panic!("cannot build the NAT lab: {e}"))
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
    let client = Client {
        lab: &lab,
        host: IpAddr::V4(SERVER),
        curl_options: vec![],
        upload: upload_file(dir.path()),
    };

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

    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server);
        record("same-ip (default)", mode, &tally);
        assert!(
            tally.slowest_failure < TRANSFER_LIMIT - Duration::from_secs(3),
            "{mode:?}: a failure took {:?}: {:?}",
            tally.slowest_failure,
            tally.errors
        );
        if mode == Snat::Nth {
            assert_eq!(
                tally.succeeded, 0,
                "every data connection leaves by the other address"
            );
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
    let client = Client {
        lab: &lab,
        host: IpAddr::V4(SERVER),
        curl_options: vec![],
        upload: upload_file(dir.path()),
    };
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server);
        record("same-ip + cidr (both egress IPs)", mode, &tally);
        assert_eq!(
            tally.succeeded,
            tally.tried,
            "{mode:?}: {:?}\n{}",
            tally.errors,
            server.proxy.log_tail(20)
        );
    }
    // The attacker's address is in neither rule: it gets nothing, and the
    // transfer it tried to take fails fast.
    let (code, stolen) = attacker_takes_a_clear_port(&lab);
    assert_eq!(stolen, 0);
    assert_eq!(code, 425);
}

/// A client session in the client namespace opens a passive port and
/// starts a listing; an attacker connects to the port from the attacker
/// namespace. Returns the listing's final reply and the bytes the attacker got.
fn attacker_takes_a_clear_port(lab: &NatLab) -> (u16, usize) {
    std::thread::scope(|scope| {
        // Owned by this closure: if it panics, the client thread's `recv`
        // fails instead of waiting forever.
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let client = scope.spawn(move || {
            lab.client.block_on(move || async move {
                let (mut raw, _) = RawFtp::connect(at(SERVER, FTP_PORT)).await;
                raw.login("alice", PASSWORD).await;
                let port = epsv_port(&raw.cmd("EPSV").await);
                assert_eq!(raw.cmd("NLST").await.code, 150);
                port_tx.send(port).unwrap();
                go_rx.recv().expect("the attacker's turn ended");
                raw.reply().await.code
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
    let client = Client {
        lab: &lab,
        host: IpAddr::V4(SERVER),
        curl_options: vec![
            "--ssl-reqd".into(),
            "--cacert".into(),
            pki.ca.display().to_string(),
        ],
        upload: upload_file(dir.path()),
    };
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let tally = client.transfers(&server);
        record("same-ip + tls-session (FTPS, curl)", mode, &tally);
        assert_eq!(
            tally.succeeded,
            tally.tried,
            "{mode:?}: {:?}\n{}",
            tally.errors,
            server.proxy.log_tail(30)
        );
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
    let pasv_client = Client {
        lab: &lab,
        host: IpAddr::V4(VIP),
        curl_options: vec!["--disable-epsv".into(), "--no-ftp-skip-pasv-ip".into()],
        upload: upload_file(dir.path()),
    };
    let epsv_client = Client {
        lab: &lab,
        host: IpAddr::V4(VIP),
        curl_options: vec![],
        upload: pasv_client.upload.clone(),
    };
    {
        let server = Server::start(&lab, "");
        let tally = pasv_client.transfers(&server);
        record(
            "behind DNAT, passive_address = auto (PASV)",
            Snat::Single,
            &tally,
        );
        assert_eq!(tally.succeeded, 0, "the private address is unreachable");
        let tally = epsv_client.transfers(&server);
        record(
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
    let tally = pasv_client.transfers(&server);
    record(
        "behind DNAT, passive_address = VIP (PASV)",
        Snat::Single,
        &tally,
    );
    assert_eq!(
        tally.succeeded,
        tally.tried,
        "{:?}\n{}",
        tally.errors,
        server.proxy.log_tail(20)
    );
}

/// vsftpd with its defaults (`pasv_promiscuous=NO`) in the same topology,
/// for the comparison the issue asks for.
#[test]
fn vsftpd_default_in_the_same_topology() {
    let lab = lab_or_skip!("vsftpd_default_in_the_same_topology");
    let Some(vsftpd) = ["/usr/sbin/vsftpd", "/sbin/vsftpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        if std::env::var_os("CI").is_some() {
            panic!("vsftpd is not installed (scripts/test.sh installs it)");
        }
        eprintln!("vsftpd_default_in_the_same_topology: skipped: vsftpd is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("payload.bin"), payload()).unwrap();
    // vsftpd refuses a world-writable directory; the temp dir's mode works.
    let config = dir.path().join("vsftpd.conf");
    std::fs::write(
        &config,
        format!(
            "listen=YES\nlisten_address={SERVER}\nlisten_port={FTP_PORT}\nbackground=NO\n\
             anonymous_enable=YES\nno_anon_password=YES\nanon_root={}\nlocal_enable=NO\n\
             write_enable=NO\nseccomp_sandbox=NO\nxferlog_enable=NO\n\
             secure_chroot_dir=/var/run/vsftpd/empty\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
    let log_path = dir.path().join("vsftpd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = lab
        .server
        .command(vsftpd)
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
    for mode in [Snat::Nth, Snat::Random] {
        lab.set_snat(mode).unwrap();
        let mut tally = Tally::default();
        for _ in 0..ROUNDS * 3 {
            let started = Instant::now();
            let output = lab
                .client
                .command("curl")
                .args(["-sS", "--max-time", "15"])
                .arg(format!("ftp://anonymous:x@{SERVER}:{FTP_PORT}/payload.bin"))
                .output()
                .unwrap();
            tally.tried += 1;
            if output.status.success() && sha256(&output.stdout) == sha256(&payload()) {
                tally.succeeded += 1;
            } else {
                tally.slowest_failure = tally.slowest_failure.max(started.elapsed());
                if tally.errors.is_empty() {
                    tally
                        .errors
                        .push(String::from_utf8_lossy(&output.stderr).trim().to_owned());
                }
            }
        }
        record("vsftpd 3.0 default (RETR only)", mode, &tally);
        if mode == Snat::Nth {
            assert_eq!(tally.succeeded, 0, "vsftpd refuses the other address too");
        }
    }
    drop(guard);
}
