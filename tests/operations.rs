//! Operating the proxy: reload under load, a bad reload, metrics, health,
//! the transfer log and the shutdown drain, against a real OpenSSH upstream.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::{get, metric};
use common::proxy::{
    PASSWORD, Proxy, TEST_TIMEOUT, UpstreamAuth, config_toml, random_bytes, sha256, user_toml,
};
use common::raw::{RawFtp, RawReply};
use common::sshd::Sshd;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A config file the proxy reloads from, in a directory of its own.
struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { dir, path }
    }

    /// Replaces the file the way editors and config managers do: write a
    /// new file, rename it over the old one.
    fn replace(&self, text: &str) {
        let staged = self.dir.path().join(".proxy.toml.new");
        std::fs::write(&staged, text).expect("write staged config");
        std::fs::rename(&staged, &self.path).expect("rename over the config");
    }

    fn xferlog(&self) -> PathBuf {
        self.dir.path().join("xferlog")
    }
}

/// The admin and logging sections the tests add to a [`config_toml`].
fn operations_sections(xferlog: &Path) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\nreadiness_timeout = \"2s\"\nreadiness_cache = \"100ms\"\n\n\
         [logging]\nlevel = \"info\"\nxferlog = \"{}\"\n\n",
        xferlog.display()
    )
}

/// A config with `users` (each rooted at `/<name>`, created on the upstream).
fn config_with_users(sshd: &Sshd, file_dir: &Path, users: &[&str]) -> String {
    let mut entries = String::new();
    for user in users {
        std::fs::create_dir_all(sshd.data_dir().join(user)).expect("create a user root");
        entries.push_str(&user_toml(user, &format!("/{user}")));
        entries.push('\n');
    }
    format!(
        "{}{}",
        operations_sections(&file_dir.join("xferlog")),
        config_toml(sshd, UpstreamAuth::Key, "", "", &entries)
    )
}

async fn metrics(admin: SocketAddr) -> String {
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the metric `name_and_labels` satisfies `done`; returns the text.
async fn wait_for_metric(
    admin: SocketAddr,
    name_and_labels: &str,
    done: impl Fn(f64) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let text = metrics(admin).await;
        if metric(&text, name_and_labels).is_some_and(&done) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name_and_labels} never reached the expected value:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RELOADS_OK: &str = "ftpbridge_config_reloads_total{result=\"ok\"}";
const RELOADS_FAILED: &str = "ftpbridge_config_reloads_total{result=\"failed\"}";

/// Logs in on a bare control connection; returns the PASS reply.
async fn try_login(addr: SocketAddr, user: &str, password: &str) -> (RawFtp, RawReply) {
    let (mut raw, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(raw.cmd(&format!("USER {user}")).await.code, 331);
    let reply = raw.cmd(&format!("PASS {password}")).await;
    (raw, reply)
}

/// Starts a RETR on `raw` and reads its first `prefix` bytes, leaving the
/// rest of the transfer pending (the proxy waits on a full socket).
async fn start_download(
    raw: &mut RawFtp,
    addr: SocketAddr,
    name: &str,
    prefix: usize,
) -> (TcpStream, Vec<u8>) {
    assert_eq!(raw.cmd("TYPE I").await.code, 200);
    let mut data = raw.epsv_connect(addr).await;
    let opening = raw.cmd(&format!("RETR {name}")).await;
    assert_eq!(opening.code, 150, "{opening:?}");
    let mut received = vec![0u8; prefix];
    tokio::time::timeout(TEST_TIMEOUT, data.read_exact(&mut received))
        .await
        .expect("first bytes in time")
        .expect("read the first bytes");
    (data, received)
}

/// Reads the rest of a download started by [`start_download`] and its final reply.
async fn finish_download(
    raw: &mut RawFtp,
    data: TcpStream,
    mut received: Vec<u8>,
) -> (Vec<u8>, RawReply) {
    received.extend(RawFtp::read_all(data).await);
    let reply = raw.reply().await;
    (received, reply)
}

#[tokio::test]
async fn a_reload_under_a_running_transfer_adds_and_removes_users() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    file.replace(&config_with_users(
        &sshd,
        file.dir.path(),
        &["alice", "bob"],
    ));
    let (proxy, admin) = Proxy::start_from_file(&file.path).await;
    let content = random_bytes(24 << 20, 91);
    std::fs::write(sshd.data_dir().join("bob/big.bin"), &content).unwrap();

    let (mut bob, reply) = try_login(proxy.addr, "bob", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (data, prefix) = start_download(&mut bob, proxy.addr, "big.bin", 1 << 20).await;

    // Bob leaves the config, carol joins; the file is replaced by rename.
    file.replace(&config_with_users(
        &sshd,
        file.dir.path(),
        &["alice", "carol"],
    ));
    wait_for_metric(admin, RELOADS_OK, |n| n >= 1.0).await;

    let (_, refused) = try_login(proxy.addr, "bob", PASSWORD).await;
    assert_eq!(
        refused.code, 530,
        "a removed user cannot log in: {refused:?}"
    );
    let (_, welcomed) = try_login(proxy.addr, "carol", PASSWORD).await;
    assert_eq!(welcomed.code, 230, "an added user logs in: {welcomed:?}");

    // Bob's running download completes, intact, on his old upstream session.
    let (received, reply) = finish_download(&mut bob, data, prefix).await;
    assert_eq!(reply.code, 226, "{reply:?}");
    assert_eq!(received.len(), content.len());
    assert_eq!(sha256(&received), sha256(&content));
    // And his session goes on: it was opened under the old config.
    assert_eq!(bob.cmd("PWD").await.code, 257);
    assert_eq!(bob.cmd("QUIT").await.code, 221);
    proxy.stop().await;
}

#[tokio::test]
async fn a_bad_reload_keeps_the_running_config_and_says_why() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    let good = config_with_users(&sshd, file.dir.path(), &["alice"]);
    file.replace(&good);
    let (proxy, admin) = Proxy::start_from_file(&file.path).await;
    let (status, _) = get(admin, "/readyz").await;
    assert_eq!(status, 200);

    // A user pointing at an upstream that does not exist: the whole file is refused.
    let bad = good.replace("upstream = \"sftp\"", "upstream = \"nowhere\"");
    file.replace(&bad);
    wait_for_metric(admin, RELOADS_FAILED, |n| n >= 1.0).await;

    let (_, reply) = try_login(proxy.addr, "alice", PASSWORD).await;
    assert_eq!(
        reply.code, 230,
        "the running config still serves: {reply:?}"
    );
    // Wait out the readiness cache so the report is fresh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, report) = get(admin, "/readyz").await;
    assert_eq!(status, 200, "the running config is valid: {report}");
    assert!(
        report.contains("last reload failed") && report.contains("users[0].upstream"),
        "the report names the key: {report}"
    );

    // Fixing the file clears the error.
    file.replace(&good);
    wait_for_metric(admin, RELOADS_OK, |n| n >= 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, report) = get(admin, "/readyz").await;
    assert!(!report.contains("last reload failed"), "{report}");
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_count_sessions_logins_commands_transfers_and_bytes() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    let text = config_with_users(&sshd, file.dir.path(), &["alice"]).replace(
        "name = \"test\"",
        "name = \"test\"\ndata_connect_timeout = \"1s\"",
    );
    file.replace(&text);
    let (proxy, admin) = Proxy::start_from_file(&file.path).await;
    let content = random_bytes(300_000, 5);
    std::fs::write(sshd.data_dir().join("alice/down.bin"), &content).unwrap();

    let (_, failed) = try_login(proxy.addr, "alice", "wrong").await;
    assert_eq!(failed.code, 530);
    let (mut raw, reply) = try_login(proxy.addr, "alice", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (data, prefix) = start_download(&mut raw, proxy.addr, "down.bin", 1000).await;
    let (received, reply) = finish_download(&mut raw, data, prefix).await;
    assert_eq!((reply.code, received.len()), (226, content.len()));
    // A PASV whose data connection never comes: refused after the timeout.
    assert_eq!(raw.cmd("EPSV").await.code, 229);
    let timed_out = raw.cmd("RETR down.bin").await;
    assert_eq!(timed_out.code, 150);
    assert_eq!(raw.reply().await.code, 425);
    assert_eq!(raw.cmd("DELE missing.bin").await.code, 550);

    let text = metrics(admin).await;
    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(
        value("ftpbridge_logins_total{listener=\"test\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_logins_total{listener=\"test\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(value("ftpbridge_sessions_total{listener=\"test\"}"), 2.0);
    assert_eq!(
        value("ftpbridge_sessions_active{listener=\"test\"}"),
        1.0,
        "one session still open"
    );
    assert_eq!(
        value("ftpbridge_sessions_logged_in{listener=\"test\",tenant=\"default\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_commands_total{verb=\"RETR\",class=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_commands_total{verb=\"RETR\",class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_commands_total{verb=\"DELE\",class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        value(
            "ftpbridge_transfer_bytes_total{listener=\"test\",upstream=\"sftp\",tenant=\"default\",direction=\"download\"}"
        ),
        content.len() as f64
    );
    assert_eq!(
        value("ftpbridge_transfers_total{direction=\"download\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_transfers_total{direction=\"download\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_transfer_duration_seconds_count{direction=\"download\"}"),
        2.0
    );
    assert_eq!(
        value("ftpbridge_data_connection_refusals_total{listener=\"test\",reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        value("ftpbridge_upstream_connect_seconds_count{upstream=\"sftp\"}"),
        1.0
    );
    assert!(
        value(
            "ftpbridge_upstream_operation_seconds_count{upstream=\"sftp\",operation=\"open_read\"}"
        ) >= 2.0
    );
    assert_eq!(
        value("ftpbridge_upstream_errors_total{upstream=\"sftp\",kind=\"not_found\"}"),
        1.0,
        "the DELE of a missing file"
    );
    // Labels are bounded: never a user, a path or an address.
    for private in ["alice", "down.bin", "missing.bin", "127.0.0.1"] {
        assert!(
            !text.contains(private),
            "{private} leaked into the metrics:\n{text}"
        );
    }

    // The gauges fall when the session ends.
    assert_eq!(raw.cmd("QUIT").await.code, 221);
    wait_for_metric(admin, "ftpbridge_sessions_active{listener=\"test\"}", |n| {
        n == 0.0
    })
    .await;
    let text = metrics(admin).await;
    assert_eq!(
        metric(
            &text,
            "ftpbridge_sessions_logged_in{listener=\"test\",tenant=\"default\"}"
        ),
        Some(0.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn health_and_readiness_follow_the_upstream_and_shutdown() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    file.replace(&config_with_users(&sshd, file.dir.path(), &["alice"]));
    let (mut proxy, admin) = Proxy::start_from_file(&file.path).await;

    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, report) = get(admin, "/readyz").await;
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("upstream sftp: reachable"), "{report}");
    assert_eq!(get(admin, "/nothing").await.0, 404);

    // The upstream goes away: not ready, and the report says which one.
    let pid = sshd.pid().to_string();
    let killed = std::process::Command::new("kill")
        .arg(&pid)
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    let report = loop {
        let (status, report) = get(admin, "/readyz").await;
        if status == 503 {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(report.contains("upstream sftp: cannot connect"), "{report}");
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive all the same");

    proxy.begin_shutdown();
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        // The admin endpoint may close with the proxy; until then it says why.
        match TcpStream::connect(admin).await {
            Err(_) => break,
            Ok(_) => {
                let (status, report) = get(admin, "/readyz").await;
                assert_eq!(status, 503);
                if report.contains("shutting down") {
                    break;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never said shutting down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_drain_lets_a_running_transfer_finish_and_readiness_turns_false_at_once() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    let text = config_with_users(&sshd, file.dir.path(), &["alice"])
        .replace("drain_timeout = \"2s\"", "drain_timeout = \"60s\"");
    file.replace(&text);
    let (mut proxy, admin) = Proxy::start_from_file(&file.path).await;
    let content = random_bytes(24 << 20, 17);
    std::fs::write(sshd.data_dir().join("alice/big.bin"), &content).unwrap();

    let (mut busy, reply) = try_login(proxy.addr, "alice", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (mut idle, reply) = try_login(proxy.addr, "alice", PASSWORD).await;
    assert_eq!(reply.code, 230);
    let (data, prefix) = start_download(&mut busy, proxy.addr, "big.bin", 1 << 20).await;

    proxy.begin_shutdown();
    let (status, report) = get(admin, "/readyz").await;
    assert_eq!(
        status, 503,
        "not ready the moment shutdown begins: {report}"
    );
    assert!(report.contains("shutting down"), "{report}");
    let goodbye = idle.reply().await;
    assert_eq!(goodbye.code, 421, "an idle session is told: {goodbye:?}");
    // New clients are no longer accepted.
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The running download finishes, whole, well inside the drain timeout.
    let (received, reply) = finish_download(&mut busy, data, prefix).await;
    assert_eq!(reply.code, 226, "{reply:?}");
    assert_eq!(sha256(&received), sha256(&content));
    tokio::time::timeout(TEST_TIMEOUT, proxy.stop())
        .await
        .expect("the proxy stops once the transfer ended");
}

#[tokio::test]
async fn the_transfer_log_has_one_xferlog_line_per_transfer_and_follows_rotation() {
    let sshd = Sshd::start();
    let file = ConfigFile::new("");
    file.replace(&config_with_users(&sshd, file.dir.path(), &["alice"]));
    let (proxy, admin) = Proxy::start_from_file(&file.path).await;
    let content = random_bytes(70_000, 3);
    std::fs::write(sshd.data_dir().join("alice/report 1.csv"), &content).unwrap();

    let mut ftp = common::proxy::connect_and_login(proxy.addr, "alice", PASSWORD).await;
    let downloaded = suppaftp_download(&mut ftp, "report 1.csv").await;
    assert_eq!(downloaded.len(), content.len());
    let mut upload = std::io::Cursor::new(random_bytes(12_345, 4));
    ftp.put_file("in.bin", &mut upload).await.unwrap();

    let lines = wait_for_lines(&file.xferlog(), 2).await;
    let download: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(download.len(), 18, "xferlog(5) has 18 fields: {}", lines[0]);
    // current-time is five fields; then transfer-time, host, size, name, type, flag, direction...
    assert_eq!(
        &download[6..],
        [
            "127.0.0.1",
            "70000",
            "/report_1.csv",
            "b",
            "_",
            "o",
            "r",
            "alice",
            "ftp",
            "0",
            "*",
            "c"
        ]
    );
    let upload_fields: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        &upload_fields[6..],
        [
            "127.0.0.1",
            "12345",
            "/in.bin",
            "b",
            "_",
            "i",
            "r",
            "alice",
            "ftp",
            "0",
            "*",
            "c"
        ]
    );

    // Log rotation: the file is renamed, then a reload reopens the path.
    let rotated = file.dir.path().join("xferlog.1");
    std::fs::rename(file.xferlog(), &rotated).unwrap();
    file.replace(&std::fs::read_to_string(&file.path).unwrap());
    wait_for_metric(admin, RELOADS_OK, |n| n >= 1.0).await;
    suppaftp_download(&mut ftp, "in.bin").await;
    let lines = wait_for_lines(&file.xferlog(), 1).await;
    assert!(lines[0].contains(" /in.bin b _ o r alice "), "{}", lines[0]);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );
    ftp.quit().await.unwrap();
    proxy.stop().await;
}

/// Waits until `path` holds at least `count` lines.
async fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {} lines, expected {count}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RETR with the suppaftp client, the whole file into memory.
async fn suppaftp_download(ftp: &mut suppaftp::tokio::AsyncFtpStream, name: &str) -> Vec<u8> {
    let mut stream = ftp.retr_as_stream(name).await.expect("RETR");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("read the download");
    stream.finish().await.expect("226 after RETR");
    bytes
}
