//! Tenants' limits through a real OpenSSH upstream: bandwidth shaping
//! (tenant, user, session), command rates, session and connection limits,
//! bans after failed logins, and limits changed by a reload mid-transfer.
//!
//! Timing assertions are lower bounds only (a limited transfer cannot finish
//! faster than its budget); how close to the limit it runs is measured by
//! `bench/limits.sh`, not asserted here.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::{get, metric};
use common::proxy::{
    PASSWORD, Proxy, TEST_TIMEOUT, UpstreamAuth, config_toml, connect_and_login, random_bytes,
    sha256, user_toml,
};
use common::raw::{RawFtp, RawReply};
use common::sshd::Sshd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config: `prefix` sections (e.g. `[security]`) first, users with extra
/// lines (e.g. `tenant = "acme"`), then `suffix` sections (`[tenants.…]`).
fn config(sshd: &Sshd, prefix: &str, users: &[(&str, &str)], suffix: &str) -> String {
    let mut entries = String::new();
    for (name, extra) in users {
        std::fs::create_dir_all(sshd.data_dir().join(name)).expect("create a user root");
        entries.push_str(&user_toml(name, &format!("/{name}")));
        entries.push_str(extra);
        entries.push_str("\n\n");
    }
    format!(
        "{prefix}\n{}\n{suffix}",
        config_toml(sshd, UpstreamAuth::Key, "", "", &entries)
    )
}

fn put(sshd: &Sshd, user: &str, name: &str, bytes: &[u8]) {
    std::fs::write(sshd.data_dir().join(user).join(name), bytes).expect("write a test file");
}

/// RETR `name` as `user`; the bytes and how long the transfer took.
async fn download(addr: SocketAddr, user: &str, name: &str) -> (Vec<u8>, Duration) {
    let mut ftp = connect_and_login(addr, user, PASSWORD).await;
    let started = Instant::now();
    let mut stream = ftp.retr_as_stream(name).await.expect("RETR");
    let mut bytes = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, stream.read_to_end(&mut bytes))
        .await
        .expect("the download ends in time")
        .expect("read the download");
    stream.finish().await.expect("226 after RETR");
    let elapsed = started.elapsed();
    ftp.quit().await.expect("QUIT");
    (bytes, elapsed)
}

/// The least time `bytes` can take through a bucket of `rate` bytes/s whose
/// `burst` passes at once (with 5% slack for clock granularity).
fn budget(bytes: usize, burst: usize, rate: usize) -> Duration {
    Duration::from_secs_f64((bytes - burst) as f64 / rate as f64 * 0.95)
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_tenant_download_rate_delays_every_byte_and_loses_none() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("alice", "tenant = \"acme\"")],
        "[tenants.acme]\ndownload_rate = \"1 MiB/s\"\nburst = \"64 KiB\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let content = random_bytes(2 * MIB, 1);
    put(&sshd, "alice", "file.bin", &content);

    let (bytes, elapsed) = download(proxy.addr, "alice", "file.bin").await;
    assert_eq!(sha256(&bytes), sha256(&content));
    let least = budget(2 * MIB, 64 * KIB, MIB);
    assert!(
        elapsed >= least,
        "2 MiB at 1 MiB/s took {elapsed:?}, less than {least:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn sessions_of_one_tenant_share_its_rate() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("ann", "tenant = \"acme\""), ("bob", "tenant = \"acme\"")],
        "[tenants.acme]\ndownload_rate = \"1 MiB/s\"\nburst = \"64 KiB\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let content = random_bytes(MIB, 2);
    put(&sshd, "ann", "a.bin", &content);
    put(&sshd, "bob", "b.bin", &content);

    let started = Instant::now();
    let (ann, bob) = tokio::join!(
        download(proxy.addr, "ann", "a.bin"),
        download(proxy.addr, "bob", "b.bin")
    );
    let elapsed = started.elapsed();
    assert_eq!(sha256(&ann.0), sha256(&content));
    assert_eq!(sha256(&bob.0), sha256(&content));
    // Together they move 2 MiB through one 1 MiB/s bucket.
    let least = budget(2 * MIB, 64 * KIB, MIB);
    assert!(
        elapsed >= least,
        "two sessions took {elapsed:?}, less than {least:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_rate_holds_each_session_below_a_larger_tenant_rate() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("alice", "tenant = \"acme\"")],
        "[tenants.acme]\ndownload_rate = \"100 MiB/s\"\nsession_download_rate = \"512 KiB/s\"\nburst = \"64 KiB\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let content = random_bytes(MIB, 3);
    put(&sshd, "alice", "file.bin", &content);
    let (bytes, elapsed) = download(proxy.addr, "alice", "file.bin").await;
    assert_eq!(sha256(&bytes), sha256(&content));
    let least = budget(MIB, 64 * KIB, 512 * KIB);
    assert!(elapsed >= least, "{elapsed:?} < {least:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_users_own_rate_limits_their_uploads() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("alice", "upload_rate = \"1 MiB/s\"")],
        "[tenants.default]\nburst = \"64 KiB\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let content = random_bytes(2 * MIB, 4);
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    let started = Instant::now();
    ftp.put_file("up.bin", &mut std::io::Cursor::new(content.clone()))
        .await
        .expect("STOR");
    let elapsed = started.elapsed();
    ftp.quit().await.unwrap();
    let stored = std::fs::read(sshd.data_dir().join("alice/up.bin")).unwrap();
    assert_eq!(sha256(&stored), sha256(&content));
    let least = budget(2 * MIB, 64 * KIB, MIB);
    assert!(elapsed >= least, "{elapsed:?} < {least:?}");
    proxy.stop().await;
}

/// Sends `count` NOOPs one after the other; how long they took.
async fn noops(raw: &mut RawFtp, count: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        assert_eq!(raw.cmd("NOOP").await.code, 200);
    }
    started.elapsed()
}

async fn logged_in(addr: SocketAddr, user: &str) -> RawFtp {
    let (mut raw, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 220);
    raw.login(user, PASSWORD).await;
    raw
}

#[tokio::test]
async fn the_command_rate_delays_commands_and_listings_cost_more() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("alice", "tenant = \"acme\"")],
        "[tenants.acme]\nsession_commands_per_second = 10\nsession_commands_burst = 5\nlisting_cost = 5\n",
    );
    let proxy = Proxy::start(&text).await;
    let mut raw = logged_in(proxy.addr, "alice").await;
    // The login's own commands used part of the burst; 25 more at 10/s.
    let elapsed = noops(&mut raw, 25).await;
    assert!(
        elapsed >= Duration::from_millis(1900),
        "25 NOOPs took {elapsed:?}"
    );

    // Four directory listings on the control connection cost 20 commands.
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(raw.cmd("STAT /").await.code, 213);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "4 listings took {elapsed:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_that_floods_commands_is_closed_with_421() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[("alice", "tenant = \"acme\"")],
        "[tenants.acme]\nsession_commands_per_second = 20\nsession_commands_burst = 1\ncommand_flood_time = \"1s\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let mut raw = logged_in(proxy.addr, "alice").await;
    // Pipelined, as a flooding client sends them: 100 NOOPs at once.
    raw.send_raw("NOOP\r\n".repeat(100).as_bytes()).await;
    let mut last = None;
    while let Some(reply) = raw.try_reply().await {
        last = Some(reply.clone());
        if reply.code != 200 {
            break;
        }
    }
    let last = last.expect("replies");
    assert_eq!(last.code, 421, "{last:?}");
    assert!(last.text.contains("Too many commands"), "{last:?}");
    assert!(raw.try_reply().await.is_none(), "the connection is closed");
    proxy.stop().await;
}

/// PASS for `user` on a new connection: the reply.
async fn login_reply(addr: SocketAddr, user: &str, password: &str) -> (RawFtp, RawReply) {
    let (mut raw, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(raw.cmd(&format!("USER {user}")).await.code, 331);
    let reply = raw.cmd(&format!("PASS {password}")).await;
    (raw, reply)
}

#[tokio::test]
async fn tenant_and_user_session_limits_refuse_logins_with_421() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "",
        &[
            ("ann", "tenant = \"acme\"\nmax_sessions = 1"),
            ("bob", "tenant = \"acme\""),
        ],
        "[tenants.acme]\nmax_sessions = 2\n",
    );
    let proxy = Proxy::start(&text).await;
    let (mut ann, reply) = login_reply(proxy.addr, "ann", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (_, reply) = login_reply(proxy.addr, "ann", PASSWORD).await;
    assert_eq!(reply.code, 421, "ann's own limit: {reply:?}");
    assert!(reply.text.contains("this user"), "{reply:?}");
    let (_bob, reply) = login_reply(proxy.addr, "bob", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (_, reply) = login_reply(proxy.addr, "bob", PASSWORD).await;
    assert_eq!(reply.code, 421, "the tenant's limit: {reply:?}");
    assert!(reply.text.contains("organisation"), "{reply:?}");

    // A session that ends gives its place back.
    assert_eq!(ann.cmd("QUIT").await.code, 221);
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, reply) = login_reply(proxy.addr, "ann", PASSWORD).await;
        if reply.code == 230 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn sessions_per_client_address_are_limited_at_connect() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "[server]\nmax_sessions_per_ip = 2\n",
        &[("alice", "")],
        "",
    );
    let proxy = Proxy::start(&text).await;
    let (_first, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 220);
    let (_second, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 220);
    let (_third, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 421, "{greeting:?}");
    assert!(greeting.text.contains("from your address"), "{greeting:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_connection_rate_per_address_refuses_a_burst_of_connections() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "[security]\nconnections_per_ip_per_second = 1\nconnection_burst = 3\n",
        &[("alice", "")],
        "",
    );
    let proxy = Proxy::start(&text).await;
    for _ in 0..3 {
        let (_, greeting) = RawFtp::connect(proxy.addr).await;
        assert_eq!(greeting.code, 220);
    }
    let (_, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 421, "{greeting:?}");
    assert!(greeting.text.contains("slow down"), "{greeting:?}");
    proxy.stop().await;
}

/// A config file with an admin endpoint, for tests that read metrics or reload.
struct FileProxy {
    proxy: Proxy,
    admin: SocketAddr,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn file_proxy(text: &str) -> FileProxy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, format!("[admin]\nbind = \"127.0.0.1:0\"\n{text}")).unwrap();
    let (proxy, admin) = Proxy::start_from_file(&path).await;
    FileProxy {
        proxy,
        admin,
        path,
        _dir: dir,
    }
}

#[tokio::test]
async fn exempt_networks_are_never_banned() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "[security]\nmax_failed_logins = 2\nban_time = \"1m\"\nban_exempt = [\"127.0.0.0/8\", \"::1\"]\n",
        &[("alice", "")],
        "",
    );
    let fx = file_proxy(&text).await;
    for _ in 0..4 {
        let (_, reply) = login_reply(fx.proxy.addr, "alice", "wrong").await;
        assert_eq!(reply.code, 530, "{reply:?}");
    }
    let (_, reply) = login_reply(fx.proxy.addr, "alice", PASSWORD).await;
    assert_eq!(reply.code, 230, "still welcome: {reply:?}");
    let (_, text) = get(fx.admin, "/metrics").await;
    assert_eq!(metric(&text, "ftpbridge_login_bans_total"), Some(0.0));
    fx.proxy.stop().await;
}

#[tokio::test]
async fn failed_logins_ban_the_address_until_the_ban_ends() {
    let sshd = Sshd::start();
    let text = config(
        &sshd,
        "[security]\nmax_failed_logins = 3\nban_time = \"2s\"\n",
        &[("alice", "")],
        "",
    );
    let fx = file_proxy(&text).await;
    let addr = fx.proxy.addr;
    // Opened before the ban: it must not be able to go on guessing.
    let (mut early, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 220);
    let (mut raw, reply) = login_reply(addr, "alice", "wrong").await;
    assert_eq!(reply.code, 530);
    assert_eq!(raw.cmd("USER nobody").await.code, 331);
    assert_eq!(
        raw.cmd("PASS guess").await.code,
        530,
        "unknown users count too"
    );
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    let banned = raw.cmd("PASS guess2").await;
    assert_eq!(banned.code, 421, "{banned:?}");
    assert!(banned.text.contains("Too many failed logins"), "{banned:?}");

    // Banned: refused at connect, before any password is looked at, and at
    // PASS on a connection opened earlier, even with the right password.
    let (_, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 421, "{greeting:?}");
    assert_eq!(early.cmd("USER alice").await.code, 331);
    let refused = early.cmd(&format!("PASS {PASSWORD}")).await;
    assert_eq!(refused.code, 421, "{refused:?}");
    let (_, text) = get(fx.admin, "/metrics").await;
    assert_eq!(
        metric(&text, "ftpbridge_login_bans_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ftpbridge_sessions_refused_total{listener=\"test\",reason=\"banned\"}"
        ),
        Some(1.0)
    );

    // The ban ends; the right password works again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, reply) = login_reply(addr, "alice", PASSWORD).await;
    assert_eq!(reply.code, 230, "{reply:?}");
    fx.proxy.stop().await;
}

#[tokio::test]
async fn refused_pass_through_logins_count_towards_a_ban() {
    let sshd = Sshd::start();
    let Some((account, _)) = sshd.password_user() else {
        panic!("run scripts/test.sh (as root) to create the password test user");
    };
    let account = account.to_owned();
    let users = format!("[[users]]\nname = \"{account}\"\nupstream = \"sftp\"\nroot = \"/\"\n");
    let text = format!(
        "[security]\nmax_failed_logins = 2\nban_time = \"1m\"\n{}",
        config_toml(&sshd, UpstreamAuth::Passthrough, "", "", &users)
    );
    let proxy = Proxy::start(&text).await;
    let (mut raw, reply) = login_reply(proxy.addr, &account, "not-the-password").await;
    assert_eq!(reply.code, 530, "the upstream refused: {reply:?}");
    assert_eq!(raw.cmd(&format!("USER {account}")).await.code, 331);
    let reply = raw.cmd("PASS still-wrong").await;
    assert_eq!(
        reply.code, 421,
        "banned after the second refusal: {reply:?}"
    );
    let (_, greeting) = RawFtp::connect(proxy.addr).await;
    assert_eq!(greeting.code, 421);
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_that_lifts_a_limit_speeds_up_a_running_transfer() {
    let sshd = Sshd::start();
    let limited = config(
        &sshd,
        "",
        &[("alice", "tenant = \"acme\"")],
        "[tenants.acme]\ndownload_rate = \"32 KiB/s\"\nburst = \"16 KiB\"\n",
    );
    let fx = file_proxy(&limited).await;
    // 8 MiB at 32 KiB/s would take over four minutes.
    let content = random_bytes(8 * MIB, 5);
    put(&sshd, "alice", "big.bin", &content);
    let mut raw = logged_in(fx.proxy.addr, "alice").await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let mut data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR big.bin").await.code, 150);
    let mut first = vec![0u8; 16 * KIB];
    data.read_exact(&mut first).await.unwrap();

    let unlimited = limited.replace("download_rate = \"32 KiB/s\"\n", "");
    let staged = fx.path.with_extension("new");
    std::fs::write(
        &staged,
        format!("[admin]\nbind = \"127.0.0.1:0\"\n{unlimited}"),
    )
    .unwrap();
    std::fs::rename(&staged, &fx.path).unwrap();

    // Well inside the test's timeout only if the new (absent) limit applies.
    let mut rest = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, data.read_to_end(&mut rest))
        .await
        .expect("the transfer finished at the new rate")
        .unwrap();
    first.extend(rest);
    assert_eq!(sha256(&first), sha256(&content));
    assert_eq!(raw.reply().await.code, 226);
    let (_, text) = get(fx.admin, "/metrics").await;
    let delay = metric(
        &text,
        "ftpbridge_limit_delay_seconds_total{tenant=\"acme\",limit=\"download\"}",
    )
    .unwrap_or(0.0);
    assert!(delay > 0.0, "the limited part was delayed:\n{text}");
    data.shutdown().await.ok();
    fx.proxy.stop().await;
}
