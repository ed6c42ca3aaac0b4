//! Login, upstream authentication and the control channel's error paths,
//! against a real OpenSSH upstream.

mod common;

use std::time::Duration;

use common::proxy::{Fixture, PASSWORD, Proxy, UpstreamAuth, alice_config, config_toml, user_toml};
use common::raw::RawFtp;
use common::sshd::Sshd;

async fn login_reply(proxy: &Proxy, user: &str, password: &str) -> (RawFtp, u16) {
    let (mut raw, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(raw.cmd(&format!("USER {user}")).await.code, 331);
    let reply = raw.cmd(&format!("PASS {password}")).await;
    (raw, reply.code)
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_530_and_never_reaches_the_upstream() {
    let fx = Fixture::start().await;
    let (mut raw, code) = login_reply(&fx.proxy, "alice", "wrong").await;
    assert_eq!(code, 530);
    assert_eq!(
        raw.cmd("USER nobody").await.code,
        331,
        "unknown users get the same 331"
    );
    assert_eq!(raw.cmd("PASS whatever").await.code, 530);
    // sshd saw no login attempt at all.
    let log = std::fs::read_to_string(fx.sshd.log_path()).unwrap_or_default();
    assert!(!log.contains("Accepted publickey"), "{log}");
}

#[tokio::test]
async fn repeated_failed_logins_close_the_connection_with_421() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    for attempt in 1..=3 {
        assert_eq!(raw.cmd("USER alice").await.code, 331);
        let reply = raw.cmd("PASS wrong").await;
        let expected = if attempt < 3 { 530 } else { 421 };
        assert_eq!(reply.code, expected, "attempt {attempt}");
    }
    assert!(
        raw.try_reply().await.is_none(),
        "connection closed after 421"
    );
}

#[tokio::test]
async fn commands_before_login_are_530_but_session_commands_work() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    for command in ["LIST", "RETR x", "PWD", "PASV", "CWD /", "STOR x"] {
        assert_eq!(raw.cmd(command).await.code, 530, "{command}");
    }
    assert_eq!(raw.cmd("SYST").await.code, 215);
    assert_eq!(raw.cmd("NOOP").await.code, 200);
    let feat = raw.cmd("FEAT").await;
    assert_eq!(feat.code, 211);
    for feature in [
        "EPSV",
        "MDTM",
        "MLST",
        "PASV",
        "REST STREAM",
        "SIZE",
        "UTF8",
    ] {
        assert!(
            feat.text.contains(feature),
            "FEAT lacks {feature}: {feat:?}"
        );
    }
    assert_eq!(raw.cmd("OPTS UTF8 ON").await.code, 200);
    assert_eq!(raw.cmd("PASS x").await.code, 503, "PASS without USER");
    assert_eq!(raw.cmd("HELP").await.code, 214);
}

#[tokio::test]
async fn protocol_errors_get_the_rfc_959_codes_and_the_session_survives() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("XYZZ").await.code, 502);
    assert_eq!(raw.cmd("SITE UTIME x").await.code, 502);
    assert_eq!(raw.cmd("SITE CHMOD 644 missing").await.code, 550);
    assert_eq!(raw.cmd("RETR").await.code, 501);
    assert_eq!(raw.cmd("REST abc").await.code, 501);
    assert_eq!(raw.cmd("TYPE E").await.code, 504);
    assert_eq!(raw.cmd("MODE B").await.code, 504);
    assert_eq!(raw.cmd("EPSV 7").await.code, 522);
    assert_eq!(raw.cmd("RNTO x").await.code, 503);
    assert_eq!(
        raw.cmd("RETR x").await.code,
        550,
        "missing file before any data connection"
    );
    assert_eq!(
        raw.cmd("PORT 10,9,8,7,4,1").await.code,
        501,
        "bounce to another host"
    );
    assert_eq!(
        raw.cmd("PORT 127,0,0,1,0,25").await.code,
        504,
        "privileged port"
    );
    assert_eq!(raw.cmd("EPRT |3|x|1|").await.code, 522);
    // A 10 KiB line is refused and dropped; the next command works.
    let mut long = b"NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 10_000));
    assert_eq!(raw.cmd_bytes(&long).await.code, 500);
    assert_eq!(
        raw.cmd("noop").await.code,
        200,
        "lowercase verb after the long line"
    );
    // Bare LF line endings are accepted.
    raw.send_raw(b"PWD\n").await;
    assert_eq!(raw.reply().await.code, 257);
}

#[tokio::test]
async fn pasv_and_epsv_replies_are_well_formed_and_epsv_all_locks_out_pasv() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    let pasv = raw.cmd("PASV").await;
    assert_eq!(pasv.code, 227);
    let numbers: Vec<u16> = pasv
        .text
        .split(['(', ')'])
        .nth(1)
        .expect("(h1,h2,h3,h4,p1,p2)")
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(&numbers[..4], &[127, 0, 0, 1]);
    let port = numbers[4] * 256 + numbers[5];
    let data = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to PASV port");
    assert_eq!(raw.cmd("LIST").await.code, 150);
    RawFtp::read_all(data).await;
    assert_eq!(raw.reply().await.code, 226);

    assert_eq!(raw.cmd("EPSV 1").await.code, 229);
    assert_eq!(
        raw.cmd("EPSV 2").await.code,
        522,
        "IPv6 on an IPv4 control connection"
    );
    assert_eq!(raw.cmd("EPSV ALL").await.code, 200);
    assert_eq!(raw.cmd("PASV").await.code, 503);
}

#[tokio::test]
async fn a_transfer_without_pasv_is_425_and_a_missing_data_connection_times_out_with_425() {
    let fx = Fixture::start_with("data_connect_timeout = \"1s\"", "").await;
    std::fs::write(fx.alice_dir().join("f"), b"x").unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("RETR f").await.code, 425);
    assert_eq!(raw.cmd("EPSV").await.code, 229);
    assert_eq!(raw.cmd("RETR f").await.code, 150);
    assert_eq!(
        raw.reply().await.code,
        425,
        "nobody connected to the passive port"
    );
    assert_eq!(raw.cmd("NOOP").await.code, 200);
}

#[tokio::test]
async fn an_idle_session_is_closed_with_421() {
    let fx = Fixture::start_with("idle_timeout = \"1s\"", "").await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    let reply = raw.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(raw.try_reply().await.is_none());
}

#[tokio::test]
async fn an_unknown_upstream_host_key_is_refused_with_421() {
    let sshd = Sshd::start();
    let toml = alice_config(&sshd, "", "").replace(
        sshd.host_key_fingerprint(),
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let proxy = Proxy::start(&toml).await;
    let (mut raw, code) = login_reply(&proxy, "alice", PASSWORD).await;
    assert_eq!(code, 421);
    assert!(raw.try_reply().await.is_none());
}

#[tokio::test]
async fn a_known_hosts_file_pins_the_upstream() {
    let sshd = Sshd::start();
    let toml = alice_config(&sshd, "", "").replace(
        &format!("host_key = \"{}\"", sshd.host_key_fingerprint()),
        &format!("known_hosts = \"{}\"", sshd.known_hosts_path().display()),
    );
    let proxy = Proxy::start(&toml).await;
    let (_, code) = login_reply(&proxy, "alice", PASSWORD).await;
    assert_eq!(code, 230);

    // The same file does not vouch for another server.
    let other = Sshd::start();
    let toml = toml.replace(&sshd.addr().to_string(), &other.addr().to_string());
    let proxy = Proxy::start(&toml).await;
    let (_, code) = login_reply(&proxy, "alice", PASSWORD).await;
    assert_eq!(code, 421);
}

#[tokio::test]
async fn an_unreachable_upstream_is_421() {
    let sshd = Sshd::start();
    // A port that was just free and is closed now: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = config_toml(&sshd, UpstreamAuth::Key, "", "", &user_toml("alice", "/"))
        .replace(&sshd.addr().to_string(), &closed.to_string());
    let proxy = Proxy::start(&toml).await;
    let (mut raw, code) = login_reply(&proxy, "alice", PASSWORD).await;
    assert_eq!(code, 421, "nothing listens on {closed}");
    assert!(raw.try_reply().await.is_none());
}

#[tokio::test]
async fn a_missing_user_root_on_the_upstream_is_421() {
    let sshd = Sshd::start();
    let toml = config_toml(
        &sshd,
        UpstreamAuth::Key,
        "",
        "",
        &user_toml("alice", "/does-not-exist"),
    );
    let proxy = Proxy::start(&toml).await;
    let (_, code) = login_reply(&proxy, "alice", PASSWORD).await;
    assert_eq!(code, 421);
}

fn password_user(sshd: &Sshd) -> (String, String) {
    match sshd.password_user() {
        Some((user, password)) => (user.to_owned(), password.to_owned()),
        None => panic!("the password test user is missing: run scripts/test.sh as root"),
    }
}

#[tokio::test]
async fn service_password_credentials_authenticate_to_the_upstream() {
    let sshd = Sshd::start();
    let (user, password) = password_user(&sshd);
    let toml = config_toml(
        &sshd,
        UpstreamAuth::Password {
            username: &user,
            password: &password,
        },
        "",
        "",
        &user_toml("bob", "/"),
    );
    let proxy = Proxy::start(&toml).await;
    let mut ftp = common::proxy::connect_and_login(proxy.addr, "bob", PASSWORD).await;
    ftp.put_file("by-bob.txt", &mut std::io::Cursor::new(b"hi".to_vec()))
        .await
        .unwrap();
    let stored = sshd.data_dir().join("by-bob.txt");
    assert_eq!(std::fs::read(&stored).unwrap(), b"hi");
    // The file belongs to the upstream service account, proving which identity wrote it.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&stored).unwrap());
    let expected = std::process::Command::new("id")
        .args(["-u", &user])
        .output()
        .unwrap();
    assert_eq!(
        owner.to_string(),
        String::from_utf8_lossy(&expected.stdout).trim()
    );

    // Wrong service credentials: the FTP login is refused with 530.
    let bad = toml.replace(
        &format!("password = \"{password}\""),
        "password = \"not-it\"",
    );
    let proxy = Proxy::start(&bad).await;
    let (_, code) = login_reply(&proxy, "bob", PASSWORD).await;
    assert_eq!(code, 530);
}

#[tokio::test]
async fn passthrough_uses_the_ftp_credentials_on_the_upstream() {
    let sshd = Sshd::start();
    let (user, password) = password_user(&sshd);
    let users = format!("[[users]]\nname = \"{user}\"\nupstream = \"sftp\"\n");
    let toml = config_toml(&sshd, UpstreamAuth::Passthrough, "", "", &users);
    let proxy = Proxy::start(&toml).await;
    let (_, code) = login_reply(&proxy, &user, "wrong-password").await;
    assert_eq!(code, 530, "the upstream refused the password");
    let mut ftp = common::proxy::connect_and_login(proxy.addr, &user, &password).await;
    ftp.put_file("through.txt", &mut std::io::Cursor::new(b"x".to_vec()))
        .await
        .unwrap();
    assert!(sshd.data_dir().join("through.txt").is_file());
}

#[tokio::test]
async fn quit_during_a_transfer_waits_for_it_and_then_says_goodbye() {
    let fx = Fixture::start().await;
    std::fs::write(
        fx.alice_dir().join("f"),
        common::proxy::random_bytes(200_000, 1),
    )
    .unwrap();
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let data = raw.epsv_connect(fx.proxy.addr).await;
    raw.send(b"RETR f").await;
    raw.send(b"QUIT").await;
    assert_eq!(raw.reply().await.code, 150);
    let bytes = RawFtp::read_all(data).await;
    assert_eq!(bytes.len(), 200_000);
    assert_eq!(raw.reply().await.code, 226);
    assert_eq!(raw.reply().await.code, 221);
    assert!(raw.try_reply().await.is_none());
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_421() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    let Fixture { proxy, sshd: _sshd } = fx;
    let stopping = tokio::spawn(proxy.stop());
    let reply = raw.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_transfer_still_running_after_the_drain_timeout_is_stopped_and_undone() {
    let fx = Fixture::start().await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    raw.login("alice", PASSWORD).await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("STOR slow.bin").await.code, 150);
    tokio::io::AsyncWriteExt::write_all(&mut data, &common::proxy::random_bytes(100_000, 2))
        .await
        .unwrap();
    // Wait until the upload is visibly in progress on the upstream.
    let alice = fx.alice_dir();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while common::proxy::leftover_temporaries(&alice).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no temporary upload file appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client keeps the data connection open: only the drain timeout (2s) ends it.
    let Fixture { proxy, sshd: _sshd } = fx;
    tokio::time::timeout(Duration::from_secs(30), proxy.stop())
        .await
        .expect("shutdown completes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !common::proxy::leftover_temporaries(&alice).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary file left after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alice.join("slow.bin").exists(),
        "nothing under the final name"
    );
    drop(data);
}

#[tokio::test]
async fn a_client_that_never_logs_in_is_closed_with_421_at_the_login_timeout() {
    let fx = Fixture::start_with("login_timeout = \"1s\"", "").await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    // Activity before login does not extend the login deadline.
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    let reply = raw.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text.contains("Login timeout"), "{reply:?}");
    assert!(raw.try_reply().await.is_none());
}
