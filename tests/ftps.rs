//! FTPS (RFC 4217) with real clients against the proxy in front of a real
//! OpenSSH upstream: explicit and implicit TLS, PROT P, the session-reuse
//! proof on TLS 1.2 and 1.3, close_notify policy, and certificate rotation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::clients::{path_str, run, run_ok};
use common::ftps::{FtpsControl, all_versions, client_config};
use common::pki::TestPki;
use common::proxy::{Fixture, PASSWORD, TEST_TIMEOUT, random_bytes, sha256, sha256_file};
use common::raw::RawFtp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

struct Ftps {
    fx: Fixture,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

/// The standard fixture with TLS settings (`tls = ...` and more) on its listener.
async fn ftps(listener_tls: &str) -> Ftps {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let listener = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n{listener_tls}",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let fx = Fixture::start_with(&listener, "").await;
    Ftps { fx, pki, _dir: dir }
}

impl Ftps {
    fn url(&self, scheme: &str, path: &str) -> String {
        format!(
            "{scheme}://alice:{}@localhost:{}/{path}",
            PASSWORD.replace(' ', "%20"),
            self.fx.proxy.addr.port()
        )
    }

    fn ca(&self) -> &str {
        self.pki.ca.to_str().expect("UTF-8 path")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_explicit_ftps_moves_64_mib_both_ways_byte_exact() {
    let t =
        ftps("tls = \"explicit\"\nrequire_tls = \"all\"\ndata_tls_resumption = \"required\"").await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(64 << 20, 41);
    let source = local.path().join("big.bin");
    std::fs::write(&source, &content).unwrap();
    let args = ["-sS", "--ssl-reqd", "--cacert", t.ca()];

    run_ok(
        "curl",
        &[
            &args[..],
            &["-T", path_str(&source), &t.url("ftp", "big.bin")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        sha256_file(&t.fx.alice_dir().join("big.bin")),
        sha256(&content)
    );
    let copy = local.path().join("copy.bin");
    run_ok(
        "curl",
        &[
            &args[..],
            &["-o", path_str(&copy), &t.url("ftp", "big.bin")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(sha256_file(&copy), sha256(&content));
    let listing = String::from_utf8(
        run_ok("curl", &[&args[..], &[t.url("ftp", "").as_str()]].concat()).await,
    )
    .unwrap();
    assert!(listing.contains(" big.bin"), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_implicit_ftps_works_from_the_first_byte() {
    let t = ftps("tls = \"implicit\"").await;
    std::fs::write(t.fx.alice_dir().join("hello.txt"), b"over implicit TLS").unwrap();
    let body = run_ok(
        "curl",
        &["-sS", "--cacert", t.ca(), &t.url("ftps", "hello.txt")],
    )
    .await;
    assert_eq!(body, b"over implicit TLS");
    // A plain-text client gets nothing it can use: no greeting in clear text.
    let plain = run(
        "curl",
        &["-sS", "--max-time", "5", &t.url("ftp", "hello.txt")],
    )
    .await;
    assert!(!plain.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_without_session_reuse_is_refused_when_required_and_accepted_when_preferred() {
    for (policy, should_work) in [("required", false), ("preferred", true)] {
        let t = ftps(&format!(
            "tls = \"explicit\"\ndata_tls_resumption = \"{policy}\""
        ))
        .await;
        std::fs::write(t.fx.alice_dir().join("f.txt"), b"resumed?").unwrap();
        let output = run(
            "curl",
            &[
                "-sS",
                "--ssl-reqd",
                "--no-sessionid",
                "--cacert",
                t.ca(),
                &t.url("ftp", "f.txt"),
            ],
        )
        .await;
        assert_eq!(output.status.success(), should_work, "{policy}: {output:?}");
        if should_work {
            assert_eq!(output.stdout, b"resumed?");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_with_forced_tls_and_protected_data() {
    let t =
        ftps("tls = \"explicit\"\nrequire_tls = \"all\"\ndata_tls_resumption = \"required\"").await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(3 << 20, 42);
    let source = local.path().join("lf.bin");
    std::fs::write(&source, &content).unwrap();
    let back = local.path().join("back.bin");
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:ca-file {}; set ssl:check-hostname yes; put {} -o lf.bin; get lf.bin -o {}; quit",
        t.ca(),
        path_str(&source),
        path_str(&back)
    );
    let login = format!("alice,{PASSWORD}");
    let port = t.fx.proxy.addr.port().to_string();
    run_ok(
        "lftp",
        &["-u", &login, "-p", &port, "-e", &script, "localhost"],
    )
    .await;
    assert_eq!(
        sha256_file(&t.fx.alice_dir().join("lf.bin")),
        sha256(&content)
    );
    assert_eq!(sha256_file(&back), sha256(&content));
}

const FTP_TLS_SCRIPT: &str = r#"
import ftplib, io, ssl, sys
host, port, user, password, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
context = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=context)
ftp.connect(host, port, timeout=30)
ftp.login(user, password)
ftp.prot_p()
data = bytes(range(256)) * 8192
ftp.storbinary("STOR py.bin", io.BytesIO(data))
out = io.BytesIO()
ftp.retrbinary("RETR py.bin", out.write)
assert out.getvalue() == data
assert ftp.nlst() == ["py.bin"], ftp.nlst()
print(ftp.sock.version())
ftp.quit()
"#;

/// Python's `FTP_TLS` wraps each data socket without the control connection's
/// session (ftplib.py `ntransfercmd`: `wrap_socket(conn, server_hostname=...)`),
/// so it never resumes: it works under `preferred` and is refused, as it is by
/// vsftpd's `require_ssl_reuse`, under `required`.
#[tokio::test(flavor = "multi_thread")]
async fn python_ftp_tls_with_prot_p_works_when_resumption_is_preferred() {
    let t = ftps("tls = \"explicit\"\nrequire_tls = \"all\"\ndata_tls_resumption = \"preferred\"")
        .await;
    let port = t.fx.proxy.addr.port().to_string();
    let stdout = run_ok(
        "python3",
        &[
            "-c",
            FTP_TLS_SCRIPT,
            "localhost",
            &port,
            "alice",
            PASSWORD,
            t.ca(),
        ],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&stdout).starts_with("TLSv1."),
        "{stdout:?}"
    );
    let expected: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(8192);
    assert_eq!(
        std::fs::read(t.fx.alice_dir().join("py.bin")).unwrap(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_ftp_tls_is_refused_when_resumption_is_required() {
    let t = ftps("tls = \"explicit\"\ndata_tls_resumption = \"required\"").await;
    let port = t.fx.proxy.addr.port().to_string();
    let output = run(
        "python3",
        &[
            "-c",
            FTP_TLS_SCRIPT,
            "localhost",
            &port,
            "alice",
            PASSWORD,
            t.ca(),
        ],
    )
    .await;
    assert!(!output.status.success());
    assert!(!t.fx.alice_dir().join("py.bin").exists(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn suppaftp_into_secure_transfers_with_resumed_data_connections() {
    use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
    let t =
        ftps("tls = \"explicit\"\nrequire_tls = \"all\"\ndata_tls_resumption = \"required\"").await;
    let config = client_config(&t.pki.ca, all_versions());
    let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
    let plain = AsyncRustlsFtpStream::connect(t.fx.proxy.addr)
        .await
        .unwrap();
    let mut ftp = plain.into_secure(connector, "localhost").await.unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    let content = random_bytes(2 << 20, 43);
    for round in 0..3 {
        let name = format!("s{round}.bin");
        ftp.put_file(&name, &mut std::io::Cursor::new(content.clone()))
            .await
            .unwrap();
        let mut stream = ftp.retr_as_stream(&name).await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        stream.finish().await.unwrap();
        assert_eq!(sha256(&back), sha256(&content), "round {round}");
    }
    ftp.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_is_refused_and_tls_1_2_accepted() {
    let t = ftps("tls = \"implicit\"").await;
    let connect = format!("127.0.0.1:{}", t.fx.proxy.addr.port());
    let attempt = |version: &'static str| {
        let connect = connect.clone();
        async move {
            // SECLEVEL=0 lets this OpenSSL even offer TLS 1.1, so the refusal is the server's.
            let mut child = Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &connect,
                    version,
                    "-cipher",
                    "DEFAULT@SECLEVEL=0",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("openssl installed");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"QUIT\r\n")
                .await
                .unwrap();
            tokio::time::timeout(TEST_TIMEOUT, child.wait_with_output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let old = attempt("-tls1_1").await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&old.stdout),
        String::from_utf8_lossy(&old.stderr)
    );
    assert!(!old.status.success(), "TLS 1.1 must fail: {text}");
    assert!(
        text.contains("no peer certificate available") && !text.contains("220 "),
        "{text}"
    );
    let modern = attempt("-tls1_2").await;
    let text = String::from_utf8_lossy(&modern.stdout);
    assert!(text.contains("220 "), "TLS 1.2 gets the greeting: {text}");
}

#[tokio::test]
async fn tls_required_for_control_refuses_a_clear_login_before_the_password() {
    let t = ftps("tls = \"explicit\"\nrequire_tls = \"control\"").await;
    let (mut raw, _) = RawFtp::connect(t.fx.proxy.addr).await;
    let reply = raw.cmd("USER alice").await;
    assert_eq!(reply.code, 530, "{reply:?}");
    assert!(reply.text.contains("AUTH TLS"), "{reply:?}");
    let feat = raw.cmd("FEAT").await;
    for feature in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(feat.text.contains(feature), "{feature} in {feat:?}");
    }
    assert_eq!(raw.cmd("PBSZ 0").await.code, 503, "PBSZ before AUTH");
    assert_eq!(raw.cmd("AUTH GSSAPI").await.code, 504);

    let mut control =
        FtpsControl::connect_explicit(t.fx.proxy.addr, client_config(&t.pki.ca, all_versions()))
            .await;
    control.login("alice", PASSWORD).await;
    assert_eq!(control.cmd("AUTH TLS").await.code, 503, "already protected");
    assert_eq!(control.cmd("PROT P").await.code, 503, "PROT before PBSZ");
}

#[tokio::test]
async fn tls_required_for_data_refuses_clear_transfers_with_534_and_521() {
    let t = ftps("tls = \"explicit\"\nrequire_tls = \"all\"").await;
    std::fs::write(t.fx.alice_dir().join("f"), b"x").unwrap();
    let mut control =
        FtpsControl::connect_explicit(t.fx.proxy.addr, client_config(&t.pki.ca, all_versions()))
            .await;
    control.login("alice", PASSWORD).await;
    let _data = control.epsv_connect().await;
    assert_eq!(control.cmd("RETR f").await.code, 521, "no PROT P yet");
    assert_eq!(control.cmd("PBSZ 0").await.code, 200);
    assert_eq!(control.cmd("PROT C").await.code, 534);
    assert_eq!(control.cmd("PROT E").await.code, 536);
    assert_eq!(control.cmd("PROT P").await.code, 200);
}

#[tokio::test]
async fn commands_pipelined_after_auth_tls_are_refused() {
    let t = ftps("tls = \"explicit\"").await;
    let (mut raw, _) = RawFtp::connect(t.fx.proxy.addr).await;
    raw.send_raw(b"AUTH TLS\r\nUSER alice\r\n").await;
    let reply = raw.reply().await;
    assert_eq!(reply.code, 534, "{reply:?}");
    assert!(raw.try_reply().await.is_none(), "the connection is closed");
}

#[tokio::test]
async fn ccc_is_refused_unless_enabled() {
    let t = ftps("tls = \"explicit\"").await;
    let mut control =
        FtpsControl::connect_explicit(t.fx.proxy.addr, client_config(&t.pki.ca, all_versions()))
            .await;
    control.login("alice", PASSWORD).await;
    assert_eq!(control.cmd("CCC").await.code, 534);
    assert_eq!(control.cmd("NOOP").await.code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ccc_clears_the_control_channel_when_allowed() {
    let t = ftps("tls = \"explicit\"\nallow_ccc = true").await;
    std::fs::write(t.fx.alice_dir().join("f.txt"), b"after CCC").unwrap();
    let (mut raw, _) = RawFtp::connect(t.fx.proxy.addr).await;
    assert!(raw.cmd("FEAT").await.text.contains("CCC"));
    drop(raw);
    // curl: AUTH TLS, login, PBSZ/PROT P, CCC, then the rest in clear text.
    let body = run_ok(
        "curl",
        &[
            "-sS",
            "--ssl-reqd",
            "--ftp-ssl-ccc",
            "--ftp-ssl-ccc-mode",
            "active",
            "--cacert",
            t.ca(),
            &t.url("ftp", "f.txt"),
        ],
    )
    .await;
    assert_eq!(body, b"after CCC");
}

async fn upload_without_close_notify(t: &Ftps) -> u16 {
    let config = client_config(&t.pki.ca, all_versions());
    let mut control = FtpsControl::connect_explicit(t.fx.proxy.addr, config.clone()).await;
    control.login("alice", PASSWORD).await;
    control.protect_data().await;
    assert_eq!(control.cmd("TYPE I").await.code, 200);
    let tcp = control.epsv_connect().await;
    assert_eq!(control.cmd("STOR cut.bin").await.code, 150);
    let mut tls = FtpsControl::secure_data(tcp, config).await.unwrap();
    tls.write_all(&random_bytes(300_000, 44)).await.unwrap();
    tls.flush().await.unwrap();
    // End the TCP stream under TLS with a FIN but no close_notify, then read
    // (and drop) whatever the server still sends, so the close is clean TCP.
    let tcp = &mut tls.get_mut().0;
    tcp.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(TEST_TIMEOUT, tcp.read_to_end(&mut sink)).await;
    drop(tls);
    control.reply().await.code
}

#[tokio::test]
async fn an_upload_without_close_notify_fails_when_required_and_is_stored_when_optional() {
    let strict = ftps("tls = \"explicit\"\ndata_close_notify = \"required\"").await;
    assert_eq!(upload_without_close_notify(&strict).await, 426);
    assert!(
        !strict.fx.alice_dir().join("cut.bin").exists(),
        "nothing stored"
    );
    assert!(common::proxy::leftover_temporaries(&strict.fx.alice_dir()).is_empty());

    let lenient = ftps("tls = \"explicit\"\ndata_close_notify = \"optional\"").await;
    assert_eq!(upload_without_close_notify(&lenient).await, 226);
    assert_eq!(
        std::fs::metadata(lenient.fx.alice_dir().join("cut.bin"))
            .unwrap()
            .len(),
        300_000
    );
}

/// RETR through a protected data connection whose TLS client config is
/// `data_config`; returns the transfer's final reply code.
async fn retr_with(
    control: &mut FtpsControl,
    data_config: Arc<rustls::ClientConfig>,
) -> (u16, Vec<u8>) {
    let tcp = control.epsv_connect().await;
    assert_eq!(control.cmd("RETR f.txt").await.code, 150);
    let mut received = Vec::new();
    let mut clean_end = false;
    if let Ok(mut tls) = FtpsControl::secure_data(tcp, data_config).await {
        // rustls reports a TCP close without close_notify as an error.
        clean_end = tls.read_to_end(&mut received).await.is_ok();
    }
    let code = control.reply().await.code;
    if code == 226 {
        assert!(
            clean_end,
            "a download must end with TLS close_notify before the 226"
        );
    }
    (code, received)
}

#[tokio::test]
async fn only_a_client_holding_the_control_session_passes_required_resumption_on_tls_1_2_and_1_3() {
    let t = ftps("tls = \"explicit\"\ndata_tls_resumption = \"required\"").await;
    std::fs::write(t.fx.alice_dir().join("f.txt"), b"proof").unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client_config(&t.pki.ca, &[version]);
        let mut control = FtpsControl::connect_explicit(t.fx.proxy.addr, config.clone()).await;
        control.login("alice", PASSWORD).await;
        control.protect_data().await;
        // The same client (its session cache holds the control session): resumed, accepted,
        // several times in a row.
        for _ in 0..3 {
            assert_eq!(
                retr_with(&mut control, config.clone()).await,
                (226, b"proof".to_vec()),
                "{version:?}"
            );
        }
        // A client without that session (a fresh config: what another host, or an
        // attacker racing for the port, would have) gets a full handshake: refused.
        let stranger = client_config(&t.pki.ca, &[version]);
        let (code, received) = retr_with(&mut control, stranger).await;
        assert_eq!(code, 522, "{version:?}");
        assert!(received.is_empty(), "no file data for a stranger");
    }
}

#[tokio::test]
async fn certificates_rotate_without_a_restart() {
    let t = ftps("tls = \"implicit\"").await;
    let versions = all_versions();
    let mut running =
        FtpsControl::connect_implicit(t.fx.proxy.addr, client_config(&t.pki.ca, versions)).await;
    running.login("alice", PASSWORD).await;

    // A new CA and certificate, written over the files the listener uses.
    let next_dir = tempfile::tempdir().unwrap();
    let next = TestPki::generate(next_dir.path());
    std::fs::copy(&next.server_cert, &t.pki.server_cert).unwrap();
    std::fs::copy(&next.server_key, &t.pki.server_key).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tcp = tokio::net::TcpStream::connect(t.fx.proxy.addr)
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let handshake = tokio_rustls::TlsConnector::from(client_config(&next.ca, versions))
            .connect(name, tcp)
            .await;
        if handshake.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session that started before the rotation goes on.
    assert_eq!(running.cmd("PWD").await.code, 257);
}

#[tokio::test]
async fn a_listener_without_tls_does_not_offer_it() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("AUTH TLS").await.code, 502);
    let feat = raw.cmd("FEAT").await;
    assert!(!feat.text.contains("AUTH"), "{feat:?}");
}

#[tokio::test]
async fn auth_ssl_protects_data_without_prot_p() {
    let t = ftps("tls = \"explicit\"\nrequire_tls = \"all\"").await;
    std::fs::write(t.fx.alice_dir().join("f.txt"), b"ssl").unwrap();
    let config = client_config(&t.pki.ca, all_versions());
    let mut control = FtpsControl::connect_with(t.fx.proxy.addr, config.clone(), "SSL").await;
    control.login("alice", PASSWORD).await;
    // No PBSZ/PROT: AUTH SSL implies protected data connections.
    assert_eq!(
        retr_with(&mut control, config).await,
        (226, b"ssl".to_vec())
    );
}

#[tokio::test]
async fn a_user_can_require_more_protection_than_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let sshd = common::sshd::Sshd::start();
    std::fs::create_dir_all(sshd.data_dir().join("alice")).unwrap();
    std::fs::write(sshd.data_dir().join("alice/f.txt"), b"x").unwrap();
    let listener = format!(
        "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = \"control\"",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let user = common::proxy::user_toml("alice", "/alice").replace(
        "root = \"/alice\"",
        "root = \"/alice\"\nrequire_tls = \"all\"",
    );
    let toml = common::proxy::config_toml(
        &sshd,
        common::proxy::UpstreamAuth::Key,
        &listener,
        "",
        &user,
    );
    let proxy = common::proxy::Proxy::start(&toml).await;
    let mut control =
        FtpsControl::connect_explicit(proxy.addr, client_config(&pki.ca, all_versions())).await;
    control.login("alice", PASSWORD).await;
    let _data = control.epsv_connect().await;
    assert_eq!(
        control.cmd("RETR f.txt").await.code,
        521,
        "the listener allows clear data; alice does not"
    );
    assert_eq!(control.cmd("PBSZ 0").await.code, 200);
    assert_eq!(control.cmd("PROT C").await.code, 534);
}
