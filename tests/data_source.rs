//! Data-connection source policy, passive port sharing, advertised passive
//! addresses and the PROXY protocol, against the real proxy and a real
//! OpenSSH upstream. All on loopback: Linux answers on every 127.0.0.0/8
//! address, so "another client" or "an intruder" is a connection bound to
//! 127.0.0.2, .3, ... (the NAT lab in `nat_lab.rs` does the same through
//! real network namespaces and NAT).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::ftps::{FtpsControl, all_versions, client_config};
use common::pki::TestPki;
use common::proxy::{
    Fixture, PASSWORD, Proxy, UpstreamAuth, alice_config, config_toml, random_bytes, sha256,
    sha256_file, user_toml,
};
use common::raw::RawFtp;
use common::source::{connect_from, epsv_port, loopback, pasv_addr};
use common::sshd::Sshd;
use ppp::v2::{Builder, Command, Protocol, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn logged_in_from(fx: &Fixture, from: IpAddr) -> RawFtp {
    let (mut raw, greeting) = RawFtp::from_stream(connect_from(from, fx.proxy.addr).await).await;
    assert_eq!(greeting.code, 220);
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    raw
}

fn at(fx: &Fixture, port: u16) -> SocketAddr {
    SocketAddr::new(fx.proxy.addr.ip(), port)
}

/// Reads a data connection to its end; a reset counts as the end.
async fn drain(mut stream: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut out))
        .await
        .expect("data in time");
    out
}

#[tokio::test]
async fn a_data_connection_from_another_address_is_refused_and_the_client_gets_425_fast() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("f.txt"), b"secret").unwrap();
    let mut raw = logged_in_from(&fx, loopback(1)).await;
    let port = epsv_port(&raw.cmd("EPSV").await);
    let intruder = connect_from(loopback(2), at(&fx, port)).await;
    let started = Instant::now();
    assert_eq!(raw.cmd("RETR f.txt").await.code, 150);
    assert_eq!(drain(intruder).await, b"", "the intruder gets nothing");
    let reply = raw.reply().await;
    assert_eq!(reply.code, 425, "{reply:?}");
    assert!(reply.text.contains("refused"), "{reply:?}");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "425 after {waited:?}, not after data_connect_timeout (30s)"
    );
    // The session goes on, and the real client still gets its file.
    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(1), at(&fx, port)).await;
    assert_eq!(raw.cmd("RETR f.txt").await.code, 150);
    assert_eq!(drain(data).await, b"secret");
    assert_eq!(raw.reply().await.code, 226);
}

#[tokio::test]
async fn a_refused_connection_does_not_take_the_slot_from_the_real_one() {
    let fx = Fixture::start().await;
    std::fs::write(fx.alice_dir().join("f.txt"), b"mine").unwrap();
    let mut raw = logged_in_from(&fx, loopback(1)).await;
    let port = epsv_port(&raw.cmd("EPSV").await);
    let intruder = connect_from(loopback(2), at(&fx, port)).await;
    let data = connect_from(loopback(1), at(&fx, port)).await;
    assert_eq!(raw.cmd("RETR f.txt").await.code, 150);
    assert_eq!(drain(data).await, b"mine");
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(drain(intruder).await, b"");
}

#[tokio::test]
async fn cidr_accepts_the_listed_egress_address_for_list_retr_and_stor() {
    let fx = Fixture::start_with(
        "data_source = [\"same-ip\", \"cidr\"]\ndata_source_cidrs = [\"127.0.0.2/32\"]",
        "",
    )
    .await;
    let content = random_bytes(300_000, 5);
    let mut raw = logged_in_from(&fx, loopback(1)).await;

    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(2), at(&fx, port)).await;
    assert_eq!(raw.cmd("STOR up.bin").await.code, 150);
    let mut data = data;
    data.write_all(&content).await.unwrap();
    drop(data);
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(
        sha256_file(&fx.alice_dir().join("up.bin")),
        sha256(&content)
    );

    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(2), at(&fx, port)).await;
    assert_eq!(raw.cmd("RETR up.bin").await.code, 150);
    assert_eq!(sha256(&drain(data).await), sha256(&content));
    assert_eq!(raw.reply().await.code, 226);

    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(2), at(&fx, port)).await;
    assert_eq!(raw.cmd("NLST").await.code, 150);
    assert_eq!(drain(data).await, b"up.bin\r\n");
    assert_eq!(raw.reply().await.code, 226);

    // Outside the list: refused.
    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(3), at(&fx, port)).await;
    assert_eq!(raw.cmd("NLST").await.code, 150);
    assert_eq!(drain(data).await, b"");
    assert_eq!(raw.reply().await.code, 425);
}

#[tokio::test]
async fn a_user_s_own_cidrs_apply_to_that_user_only() {
    let sshd = Sshd::start();
    for user in ["alice", "bob"] {
        std::fs::create_dir_all(sshd.data_dir().join(user)).unwrap();
        std::fs::write(sshd.data_dir().join(user).join("f"), user).unwrap();
    }
    let users = format!(
        "{}data_source_cidrs = [\"127.0.0.2\"]\n\n{}",
        user_toml("alice", "/alice"),
        user_toml("bob", "/bob")
    );
    let toml = config_toml(
        &sshd,
        UpstreamAuth::Key,
        "data_source = [\"same-ip\", \"cidr\"]",
        "",
        &users,
    );
    let proxy = Proxy::start(&toml).await;
    for (user, expected) in [("alice", 226), ("bob", 425)] {
        let (mut raw, _) = RawFtp::from_stream(connect_from(loopback(1), proxy.addr).await).await;
        raw.login(user, PASSWORD).await;
        let port = epsv_port(&raw.cmd("EPSV").await);
        let data = connect_from(loopback(2), SocketAddr::new(proxy.addr.ip(), port)).await;
        assert_eq!(raw.cmd("RETR f").await.code, 150);
        let body = drain(data).await;
        assert_eq!(raw.reply().await.code, expected, "{user}");
        if expected == 226 {
            assert_eq!(body, user.as_bytes());
        }
    }
}

#[tokio::test]
async fn any_accepts_a_data_connection_from_anywhere() {
    let fx = Fixture::start_with("data_source = [\"any\"]", "").await;
    std::fs::write(fx.alice_dir().join("f"), b"open").unwrap();
    let mut raw = logged_in_from(&fx, loopback(1)).await;
    let port = epsv_port(&raw.cmd("EPSV").await);
    let data = connect_from(loopback(9), at(&fx, port)).await;
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    assert_eq!(drain(data).await, b"open");
    assert_eq!(raw.reply().await.code, 226);
}

#[test]
fn any_is_warned_about_at_start_up() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, alice_config(&sshd, "data_source = [\"any\"]", "")).unwrap();
    let log_path = dir.path().join("proxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ftpbridge"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start ftpbridge");
    let deadline = Instant::now() + TIMEOUT;
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("listening") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("WARN") && text.contains("accepted from any address"),
        "{text}"
    );
    // `ftpbridge check` says so too, naming the key, and still passes.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ftpbridge"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("listeners[0].data_source") && stderr.contains("any address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sessions_from_different_addresses_share_a_single_passive_port() {
    let port = free_port();
    let fx = Fixture::start_with(&format!("passive_ports = \"{port}-{port}\""), "").await;
    std::fs::write(fx.alice_dir().join("f"), b"shared").unwrap();
    let mut a = logged_in_from(&fx, loopback(1)).await;
    let mut b = logged_in_from(&fx, loopback(2)).await;
    assert_eq!(epsv_port(&a.cmd("EPSV").await), port);
    assert_eq!(epsv_port(&b.cmd("EPSV").await), port, "b shares a's port");
    // A third session behind a's address cannot be told apart from a.
    let mut c = logged_in_from(&fx, loopback(1)).await;
    let reply = c.cmd("EPSV").await;
    assert_eq!(reply.code, 425, "{reply:?}");

    let data_b = connect_from(loopback(2), at(&fx, port)).await;
    let data_a = connect_from(loopback(1), at(&fx, port)).await;
    assert_eq!(b.cmd("RETR f").await.code, 150);
    assert_eq!(a.cmd("RETR f").await.code, 150);
    assert_eq!(drain(data_a).await, b"shared");
    assert_eq!(drain(data_b).await, b"shared");
    assert_eq!(a.reply().await.code, 226);
    assert_eq!(b.reply().await.code, 226);
    // The port is free again.
    assert_eq!(epsv_port(&c.cmd("EPSV").await), port);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn pasv_announces_the_override_for_the_client_s_network() {
    let fx = Fixture::start_with(
        "passive_address = \"192.0.2.1\"\npassive_address_overrides = [ { clients = \"127.0.0.2/32\", address = \"auto\" } ]",
        "",
    )
    .await;
    let mut outside = logged_in_from(&fx, loopback(1)).await;
    assert_eq!(
        pasv_addr(&outside.cmd("PASV").await).ip(),
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
    let mut inside = logged_in_from(&fx, loopback(2)).await;
    let announced = pasv_addr(&inside.cmd("PASV").await);
    assert_eq!(
        announced.ip(),
        fx.proxy.addr.ip(),
        "auto: the address it reached"
    );
    // And the announced address works.
    std::fs::write(fx.alice_dir().join("f"), b"via override").unwrap();
    let data = connect_from(loopback(2), announced).await;
    assert_eq!(inside.cmd("RETR f").await.code, 150);
    assert_eq!(drain(data).await, b"via override");
    assert_eq!(inside.reply().await.code, 226);
}

#[tokio::test]
async fn a_host_name_passive_address_is_resolved() {
    let fx = Fixture::start_with("passive_address = \"localhost\"", "").await;
    let mut raw = logged_in_from(&fx, loopback(1)).await;
    for _ in 0..3 {
        let announced = pasv_addr(&raw.cmd("PASV").await);
        assert!(announced.ip().is_loopback(), "{announced}");
    }
}

// --- tls-session: the proof instead of the address ---

struct Ftps {
    fx: Fixture,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

async fn ftps(listener: &str) -> Ftps {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let listener = format!(
        "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{listener}",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let fx = Fixture::start_with(&listener, "").await;
    Ftps { fx, pki, _dir: dir }
}

async fn tls_session_transfers(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let t =
        ftps("data_source = [\"same-ip\", \"tls-session\"]\ndata_tls_resumption = \"required\"")
            .await;
    let content = random_bytes(200_000, 9);
    std::fs::write(t.fx.alice_dir().join("f.bin"), &content).unwrap();
    let client = client_config(&t.pki.ca, versions);
    let mut control = FtpsControl::connect_explicit(t.fx.proxy.addr, client.clone()).await;
    control.login("alice", PASSWORD).await;
    control.protect_data().await;
    assert_eq!(control.cmd("TYPE I").await.code, 200);

    for round in 0..3 {
        let port = epsv_port(&control.cmd("EPSV").await);
        // An intruder without the session gets there first, from elsewhere...
        let intruder = connect_from(loopback(4), at(&t.fx, port)).await;
        assert_eq!(control.cmd("RETR f.bin").await.code, 150);
        let stranger = client_config(&t.pki.ca, versions);
        // Its handshake may complete (a full one); then it is closed unread.
        if let Ok(mut tls) = FtpsControl::secure_data(intruder, stranger).await {
            let mut got = Vec::new();
            let _ = tls.read_to_end(&mut got).await;
            assert!(got.is_empty(), "round {round}: the intruder got data");
        }
        // ...and the client, from yet another address, proves its session.
        let tcp = connect_from(loopback(3), at(&t.fx, port)).await;
        let mut tls = FtpsControl::secure_data(tcp, client.clone())
            .await
            .expect("the client's handshake");
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(sha256(&got), sha256(&content), "round {round}");
        assert_eq!(control.reply().await.code, 226, "round {round}");
    }

    // Uploads too.
    let port = epsv_port(&control.cmd("EPSV").await);
    let tcp = connect_from(loopback(5), at(&t.fx, port)).await;
    assert_eq!(control.cmd("STOR up.bin").await.code, 150);
    let mut tls = FtpsControl::secure_data(tcp, client.clone()).await.unwrap();
    tls.write_all(&content).await.unwrap();
    tls.shutdown().await.unwrap();
    drop(tls);
    assert_eq!(control.reply().await.code, 226);
    assert_eq!(
        sha256_file(&t.fx.alice_dir().join("up.bin")),
        sha256(&content)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_session_accepts_the_client_from_any_address_and_refuses_strangers_on_tls13() {
    tls_session_transfers(&[&rustls::version::TLS13]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_session_accepts_the_client_from_any_address_and_refuses_strangers_on_tls12() {
    tls_session_transfers(&[&rustls::version::TLS12]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_prot_p_a_tls_session_only_listener_says_so_at_pasv() {
    let t = ftps("data_source = [\"tls-session\"]").await;
    let client = client_config(&t.pki.ca, all_versions());
    let mut control = FtpsControl::connect_explicit(t.fx.proxy.addr, client).await;
    control.login("alice", PASSWORD).await;
    let reply = control.cmd("EPSV").await;
    assert_eq!(reply.code, 425, "{reply:?}");
    assert!(reply.text.contains("PROT P"), "{reply:?}");
}

/// A data connection refused for its full handshake must not leave the
/// session it was issued in the control connection's cache: otherwise its
/// next attempt would resume that session and pass as proof.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_full_handshake_leaves_no_session_to_resume_later() {
    let t = ftps("data_tls_resumption = \"required\"").await;
    std::fs::write(t.fx.alice_dir().join("f"), b"x").unwrap();
    let versions: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let mut control =
        FtpsControl::connect_explicit(t.fx.proxy.addr, client_config(&t.pki.ca, versions)).await;
    control.login("alice", PASSWORD).await;
    control.protect_data().await;
    // Another config: its own session cache, with nothing from the control.
    let stranger = client_config(&t.pki.ca, versions);
    for attempt in 0..2 {
        let tcp = control.epsv_connect().await;
        assert_eq!(control.cmd("RETR f").await.code, 150);
        let tls = FtpsControl::secure_data(tcp, stranger.clone()).await;
        let reply = control.reply().await;
        assert_eq!(reply.code, 522, "attempt {attempt}: {reply:?}");
        drop(tls);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_proves_its_tls_session_and_curl_without_session_reuse_is_refused() {
    let t = ftps("data_source = [\"tls-session\"]\nrequire_tls = \"all\"").await;
    std::fs::write(t.fx.alice_dir().join("f.txt"), b"by proof").unwrap();
    // curl resumes the control session on its data connections (from the
    // same address here, which tls-session alone does not accept).
    let url = format!(
        "ftp://alice:{}@localhost:{}/f.txt",
        PASSWORD.replace(' ', "%20"),
        t.fx.proxy.addr.port()
    );
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--cacert"])
        .arg(&t.pki.ca)
        .arg(&url)
        .output()
        .await
        .expect("curl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"by proof");
    // curl --no-sessionid cannot prove anything: refused.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--no-sessionid", "--cacert"])
        .arg(&t.pki.ca)
        .arg(&url)
        .output()
        .await
        .expect("curl");
    assert!(!output.status.success(), "refused without the session");
    assert!(output.stdout.is_empty(), "no data without the session");
}

// --- PROXY protocol ---

fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

const TRUSTED_LOOPBACK: &str =
    "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\nproxy_header_timeout = \"1s\"";

async fn proxied_session(fx: &Fixture, client: SocketAddr, dst: SocketAddr) -> RawFtp {
    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    stream.write_all(&v2_header(client, dst)).await.unwrap();
    let (mut raw, greeting) = RawFtp::from_stream(stream).await;
    assert_eq!(greeting.code, 220);
    raw.login("alice", PASSWORD).await;
    raw
}

#[tokio::test]
async fn the_proxy_header_s_client_is_the_session_s_client() {
    let fx = Fixture::start_with(TRUSTED_LOOPBACK, "").await;
    std::fs::write(fx.alice_dir().join("f"), b"proxied").unwrap();
    let client: SocketAddr = "192.0.2.99:40000".parse().unwrap();
    let dst: SocketAddr = "203.0.113.5:21".parse().unwrap();
    let mut raw = proxied_session(&fx, client, dst).await;
    let stat = raw.cmd("STAT").await;
    assert!(
        stat.text.contains("Connected to 192.0.2.99:40000"),
        "{stat:?}"
    );
    // auto announces what the client connected to: the load balancer.
    assert_eq!(pasv_addr(&raw.cmd("PASV").await).ip(), dst.ip());
    // Active mode goes only to the real client (bounce check).
    assert_eq!(raw.cmd("PORT 127,0,0,1,200,1").await.code, 501);

    // A data connection through the proxy for the same client is accepted...
    let port = epsv_port(&raw.cmd("EPSV").await);
    let mut data = TcpStream::connect(at(&fx, port)).await.unwrap();
    data.write_all(&v2_header(
        "192.0.2.99:40001".parse().unwrap(),
        at(&fx, port),
    ))
    .await
    .unwrap();
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    assert_eq!(drain(data).await, b"proxied");
    assert_eq!(raw.reply().await.code, 226);

    // ...one for another client, or one without a header, is refused.
    for header in [Some("192.0.2.100:40002"), None] {
        let port = epsv_port(&raw.cmd("EPSV").await);
        let mut data = TcpStream::connect(at(&fx, port)).await.unwrap();
        if let Some(src) = header {
            data.write_all(&v2_header(src.parse().unwrap(), at(&fx, port)))
                .await
                .unwrap();
        }
        assert_eq!(raw.cmd("RETR f").await.code, 150);
        assert_eq!(drain(data).await, b"", "header {header:?}");
        assert_eq!(raw.reply().await.code, 425, "header {header:?}");
    }
}

#[tokio::test]
async fn per_address_limits_count_the_header_s_client_not_the_load_balancer() {
    // Every connection comes from 127.0.0.1, the "load balancer"; the limit
    // of one session per address applies to the clients its headers name.
    let fx = Fixture::start_with(TRUSTED_LOOPBACK, "\n[server]\nmax_sessions_per_ip = 1\n").await;
    let dst: SocketAddr = "203.0.113.5:21".parse().unwrap();
    let first = "192.0.2.1:40000".parse().unwrap();
    let _first = proxied_session(&fx, first, dst).await;
    let _other = proxied_session(&fx, "192.0.2.2:40000".parse().unwrap(), dst).await;
    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    stream
        .write_all(&v2_header("192.0.2.1:40001".parse().unwrap(), dst))
        .await
        .unwrap();
    let (_again, greeting) = RawFtp::from_stream(stream).await;
    assert_eq!(greeting.code, 421, "{greeting:?}");
    assert!(greeting.text.contains("from your address"), "{greeting:?}");
}

#[tokio::test]
async fn a_v1_header_and_a_pipelined_command_in_one_segment_both_count() {
    let fx = Fixture::start_with(TRUSTED_LOOPBACK, "").await;
    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    let port = fx.proxy.addr.port();
    stream
        .write_all(
            format!("PROXY TCP4 198.51.100.20 10.0.0.1 5555 {port}\r\nUSER alice\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let (mut raw, greeting) = RawFtp::from_stream(stream).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(
        raw.reply().await.code,
        331,
        "USER after the header was read"
    );
    assert_eq!(raw.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    assert!(raw.cmd("STAT").await.text.contains("198.51.100.20:5555"));
}

#[tokio::test]
async fn a_local_header_is_a_health_check_that_gets_the_greeting() {
    let fx = Fixture::start_with(TRUSTED_LOOPBACK, "").await;
    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    stream.write_all(&local).await.unwrap();
    let (mut raw, greeting) = RawFtp::from_stream(stream).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(raw.cmd("QUIT").await.code, 221);
}

#[tokio::test]
async fn a_trusted_proxy_without_a_header_is_closed_after_the_header_timeout() {
    let fx = Fixture::start_with(TRUSTED_LOOPBACK, "").await;
    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(buf.is_empty(), "no greeting without a header: {buf:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    let mut stream = TcpStream::connect(fx.proxy.addr).await.unwrap();
    stream.write_all(b"USER alice\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "garbage instead of a header: {buf:?}");
}

#[tokio::test]
async fn headers_from_untrusted_peers_are_not_believed() {
    let fx = Fixture::start_with(
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
        "",
    )
    .await;
    let (mut raw, greeting) = RawFtp::connect(fx.proxy.addr).await;
    assert_eq!(
        greeting.code, 220,
        "no header awaited from an untrusted peer"
    );
    let reply = raw.cmd("PROXY TCP4 192.0.2.99 10.0.0.1 5555 21").await;
    assert_eq!(reply.code, 500, "just an unknown command: {reply:?}");
    raw.login("alice", PASSWORD).await;
    assert!(
        raw.cmd("STAT")
            .await
            .text
            .contains("Connected to 127.0.0.1")
    );
}

#[tokio::test]
async fn pasv_behind_a_proxy_uses_the_configured_passive_address_and_rules_use_the_header() {
    let fx = Fixture::start_with(
        &format!("{TRUSTED_LOOPBACK}\npassive_address = \"198.51.100.1\"\ndata_source = [\"same-ip\", \"cidr\"]\ndata_source_cidrs = [\"192.0.2.0/24\"]"),
        "",
    )
    .await;
    std::fs::write(fx.alice_dir().join("f"), b"egress").unwrap();
    let mut raw = proxied_session(
        &fx,
        "203.0.113.7:1000".parse().unwrap(),
        "198.51.100.1:21".parse().unwrap(),
    )
    .await;
    let announced = pasv_addr(&raw.cmd("PASV").await);
    assert_eq!(announced.ip(), "198.51.100.1".parse::<IpAddr>().unwrap());
    let mut data = TcpStream::connect(at(&fx, announced.port())).await.unwrap();
    data.write_all(&v2_header("192.0.2.44:2000".parse().unwrap(), announced))
        .await
        .unwrap();
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    assert_eq!(drain(data).await, b"egress");
    assert_eq!(raw.reply().await.code, 226);
}
