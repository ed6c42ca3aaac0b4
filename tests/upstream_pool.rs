//! Upstream session reuse (issue 8): FTP sessions share authenticated SSH
//! connections to a real OpenSSH sshd, each on its own `sftp` channel. The
//! sshd log (LogLevel VERBOSE) is the witness: every SSH authentication is an
//! "Accepted …" line, every polite disconnect a "Received disconnect" line.

mod common;

use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::proxy::{
    PASSWORD, Proxy, TEST_TIMEOUT, UpstreamAuth, alice_config, config_toml, connect_and_login,
    user_toml,
};
use common::raw::RawFtp;
use common::sshd::Sshd;

fn log(sshd: &Sshd) -> String {
    std::fs::read_to_string(sshd.log_path()).unwrap_or_default()
}

/// SSH authentications sshd accepted so far.
fn accepted(sshd: &Sshd) -> usize {
    log(sshd)
        .lines()
        .filter(|line| line.starts_with("Accepted ") && line.contains(" for "))
        .count()
}

/// `sftp-server` processes sshd started (one per channel).
fn sftp_servers_started(sshd: &Sshd) -> usize {
    log(sshd)
        .matches("Starting session: subsystem 'sftp'")
        .count()
}

/// Logs in, lists the root, and quits: the connect+login+LIST+QUIT cycle.
async fn session(proxy: &Proxy, user: &str, password: &str) {
    let mut ftp = connect_and_login(proxy.addr, user, password).await;
    tokio::time::timeout(TEST_TIMEOUT, ftp.list(None))
        .await
        .expect("LIST in time")
        .expect("LIST");
    ftp.quit().await.expect("QUIT");
}

async fn wait_for(what: &str, sshd: &Sshd, mut done: impl FnMut(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !done(&log(sshd)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}; sshd log:\n{}",
            sshd.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sessions_one_after_another_reuse_one_ssh_connection() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    for _ in 0..5 {
        session(&proxy, "alice", PASSWORD).await;
    }
    assert_eq!(accepted(&sshd), 1, "{}", sshd.log_tail(30));
    // Each session left its sftp channel clean, so the next took it over
    // instead of having sshd start another sftp-server.
    assert_eq!(sftp_servers_started(&sshd), 1, "{}", sshd.log_tail(30));
}

#[tokio::test]
async fn a_session_that_ends_mid_transfer_does_not_hand_its_channel_on() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    std::fs::write(
        sshd.data_dir().join("alice/big.bin"),
        common::proxy::random_bytes(8 << 20, 3),
    )
    .expect("write a file");
    // A download cut off by the client closing everything.
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    let mut stream = ftp.retr_as_stream("big.bin").await.expect("RETR");
    let mut first = [0u8; 1024];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
        .await
        .expect("some data");
    drop(stream);
    drop(ftp);
    // Later sessions work, on a channel of their own or a clean one.
    for _ in 0..3 {
        session(&proxy, "alice", PASSWORD).await;
    }
    assert_eq!(accepted(&sshd), 1, "{}", sshd.log_tail(30));
}

#[tokio::test]
async fn sessions_at_the_same_time_share_a_connection_up_to_its_channel_limit() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "pool_channels = 3")).await;
    // Six sessions open together: two connections of three channels, not
    // six handshakes (later logins wait for the connection being set up).
    let mut logins = Vec::new();
    for _ in 0..6 {
        let addr = proxy.addr;
        logins.push(tokio::spawn(async move {
            connect_and_login(addr, "alice", PASSWORD).await
        }));
    }
    let mut sessions = Vec::new();
    for login in logins {
        sessions.push(login.await.expect("login task"));
    }
    for ftp in &mut sessions {
        ftp.list(None).await.expect("LIST on a shared connection");
    }
    assert_eq!(accepted(&sshd), 2, "{}", sshd.log_tail(40));
    for mut ftp in sessions {
        ftp.quit().await.expect("QUIT");
    }
}

#[tokio::test]
async fn without_a_pool_every_session_authenticates_anew() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "pool_connections = 0")).await;
    for _ in 0..3 {
        session(&proxy, "alice", PASSWORD).await;
    }
    assert_eq!(accepted(&sshd), 3, "{}", log(&sshd));
}

/// Two upstreams on one sshd: pass-through for the password user, service
/// key credentials (the test's own account) for alice.
fn two_identities(sshd: &Sshd, user: &str) -> String {
    std::fs::create_dir_all(sshd.data_dir().join("alice")).expect("alice's root");
    let users = format!("[[users]]\nname = \"{user}\"\nupstream = \"sftp\"\n");
    let passthrough = config_toml(sshd, UpstreamAuth::Passthrough, "", "", &users);
    let keyed = config_toml(sshd, UpstreamAuth::Key, "", "", "");
    // The key upstream, renamed, with alice on it.
    let keyed_upstream = keyed
        .split("[[upstreams]]")
        .nth(1)
        .expect("an upstream section")
        .replace("name = \"sftp\"", "name = \"keyed\"");
    let alice = user_toml("alice", "/alice").replace("upstream = \"sftp\"", "upstream = \"keyed\"");
    format!("{passthrough}\n[[upstreams]]{keyed_upstream}\n{alice}")
}

#[tokio::test]
async fn different_identities_never_share_a_connection() {
    let sshd = Sshd::start();
    let Some((user, password)) = sshd.password_user() else {
        eprintln!("skipped: no password test user (run scripts/test.sh as root)");
        return;
    };
    let (user, password) = (user.to_owned(), password.to_owned());
    let proxy = Proxy::start(&two_identities(&sshd, &user)).await;
    let uid = |name: &str| {
        std::fs::metadata(sshd.data_dir().join(name))
            .expect("uploaded file")
            .uid()
    };

    // Alternate identities, each session ending before the next begins, so
    // a pooled connection of the other identity is idle and available.
    for round in 0..2 {
        let mut ftp = connect_and_login(proxy.addr, &user, &password).await;
        let name: &'static str = if round == 0 { "p0.txt" } else { "p1.txt" };
        upload(&mut ftp, name).await;
        ftp.quit().await.expect("QUIT");
        let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
        let name: &'static str = if round == 0 { "k0.txt" } else { "k1.txt" };
        upload(&mut ftp, name).await;
        ftp.quit().await.expect("QUIT");
    }
    let password_uid = uid("p0.txt");
    let key_uid = uid("alice/k0.txt");
    assert_ne!(
        password_uid, key_uid,
        "the two identities are different accounts"
    );
    assert_eq!(
        uid("p1.txt"),
        password_uid,
        "pass-through files belong to the pass-through user"
    );
    assert_eq!(
        uid("alice/k1.txt"),
        key_uid,
        "alice's files belong to the key account"
    );
    // One connection per identity, each reused once.
    assert_eq!(accepted(&sshd), 2, "{}", sshd.log_tail(40));

    // A wrong password for the pooled pass-through identity is not let in
    // through the pool: the upstream is asked, and refuses.
    let mut raw = RawFtp::connect(proxy.addr).await.0;
    assert_eq!(raw.cmd(&format!("USER {user}")).await.code, 331);
    assert_eq!(raw.cmd("PASS not-the-password").await.code, 530);
    assert!(
        log(&sshd).contains("Failed password"),
        "the upstream checked the wrong password: {}",
        sshd.log_tail(20)
    );
    assert_eq!(accepted(&sshd), 2);
}

async fn upload(ftp: &mut suppaftp::tokio::AsyncFtpStream, name: &str) {
    ftp.put_file(name, &mut Cursor::new(b"who am I".to_vec()))
        .await
        .expect("STOR");
}

/// Pids of sshd's per-connection processes (its direct children).
fn connection_processes(sshd: &Sshd) -> Vec<u32> {
    let parent = sshd.pid().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn a_dead_pooled_connection_is_replaced_without_the_user_noticing() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    session(&proxy, "alice", PASSWORD).await;
    // The pooled connection's server side dies.
    let children = connection_processes(&sshd);
    assert!(!children.is_empty(), "sshd serves the pooled connection");
    for pid in children {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    session(&proxy, "alice", PASSWORD).await;
    assert_eq!(accepted(&sshd), 2, "a new connection replaced the dead one");
    session(&proxy, "alice", PASSWORD).await;
    assert_eq!(accepted(&sshd), 2, "and is reused in turn");
}

#[tokio::test]
async fn a_hung_pooled_connection_fails_its_health_check_and_is_replaced() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    session(&proxy, "alice", PASSWORD).await;
    // Stopped, not killed: the TCP connection stays up but nothing answers.
    let stopped = Stopped(connection_processes(&sshd));
    for pid in &stopped.0 {
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
    }
    // Past the ping threshold, so reuse is preceded by a health check.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    session(&proxy, "alice", PASSWORD).await;
    assert_eq!(accepted(&sshd), 2, "{}", sshd.log_tail(30));
}

/// Processes the test stopped; killed when the test ends, pass or fail.
struct Stopped(Vec<u32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_the_idle_timeout() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "pool_idle_timeout = \"1s\"")).await;
    session(&proxy, "alice", PASSWORD).await;
    wait_for(
        "the idle pooled connection should be closed by the proxy",
        &sshd,
        |log| log.contains("Received disconnect from 127.0.0.1"),
    )
    .await;
    // The next session needs a new connection, and gets one.
    session(&proxy, "alice", PASSWORD).await;
    assert_eq!(accepted(&sshd), 2);
}

#[tokio::test]
async fn a_session_that_stays_keeps_its_connection_past_the_idle_timeout() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "pool_idle_timeout = \"1s\"")).await;
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ftp.list(None).await.expect("LIST after the idle timeout");
    assert!(
        !log(&sshd).contains("Received disconnect"),
        "{}",
        sshd.log_tail(20)
    );
    ftp.quit().await.expect("QUIT");
}

#[tokio::test]
async fn a_connection_idle_past_the_ping_threshold_answers_its_check_and_is_reused() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    session(&proxy, "alice", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    session(&proxy, "alice", PASSWORD).await;
    // An unanswered ping would have retired the connection: a second
    // authentication would show.
    assert_eq!(accepted(&sshd), 1, "{}", sshd.log_tail(30));
    assert_eq!(sftp_servers_started(&sshd), 1, "{}", sshd.log_tail(30));
}

#[tokio::test]
async fn after_complete_transfers_the_channel_is_handed_on() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(&alice_config(&sshd, "", "")).await;
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    upload(&mut ftp, "t.bin").await;
    let mut stream = ftp.retr_as_stream("t.bin").await.expect("RETR");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .expect("data");
    stream.finish().await.expect("226");
    assert_eq!(back, b"who am I");
    ftp.quit().await.expect("QUIT");
    session(&proxy, "alice", PASSWORD).await;
    // Every handle of the first session was closed, so its channel served
    // the second.
    assert_eq!(sftp_servers_started(&sshd), 1, "{}", sshd.log_tail(30));
}
