//! FTP clients (suppaftp, curl, raw commands) against the proxy in front of
//! two real WebDAV servers, nginx (TLS, HTTP/2) and Apache mod_dav_fs
//! (plain HTTP/1.1): every byte checked on the server's disk.

mod common;

use std::io::Cursor;

use common::clients::{path_str, run_ok};
use common::proxy::{
    PASSWORD, Proxy, TEST_TIMEOUT, connect_and_login, leftover_temporaries, password_hash,
    random_bytes, sha256, sha256_file,
};
use common::raw::RawFtp;
use common::webdav::{DavServer, Flavor, SERVICE_PASSWORD, SERVICE_USER};
use suppaftp::FtpError;
use suppaftp::tokio::AsyncFtpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the proxy logs in to the WebDAV server.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// The FTP user name and password, as HTTP Basic.
    Passthrough,
    /// The service account, with this password.
    Service(&'a str),
}

/// An `[[upstreams]]` block named `name` for `server`.
fn upstream_toml(name: &str, server: &DavServer, auth: Auth, extra: &str) -> String {
    let auth = match auth {
        Auth::Passthrough => "auth = \"passthrough\"".to_owned(),
        Auth::Service(password) => {
            format!("auth = \"basic\"\nusername = \"{SERVICE_USER}\"\npassword = \"{password}\"")
        }
    };
    let ca = match server.flavor() {
        Flavor::Apache => String::new(),
        _ => format!("ca_file = \"{}\"", server.pki().ca.display()),
    };
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"webdav\"\nurl = \"{url}\"\n{auth}\n{ca}\nconnect_timeout = \"5s\"\nrequest_timeout = \"20s\"\n{extra}\n",
        url = server.url_template(),
    )
}

/// A `[[users]]` entry; `hash` false leaves the password to the upstream.
fn user_toml(name: &str, upstream: &str, hash: bool) -> String {
    let hash = if hash {
        format!("password_hash = \"{}\"\n", password_hash())
    } else {
        String::new()
    };
    format!("[[users]]\nname = \"{name}\"\n{hash}upstream = \"{upstream}\"\n")
}

fn config_toml(upstreams: &str, users: &str) -> String {
    format!(
        "[shutdown]\ndrain_timeout = \"2s\"\n\n[[listeners]]\nname = \"test\"\nbind = \"127.0.0.1:0\"\n\n{upstreams}\n{users}"
    )
}

/// A server, alice's directory on it, and a proxy routing alice (service
/// credentials, local password hash) to it.
struct Fixture {
    proxy: Proxy,
    server: DavServer,
}

impl Fixture {
    async fn start(flavor: Flavor) -> Fixture {
        Fixture::start_with(flavor, "").await
    }

    async fn start_with(flavor: Flavor, upstream_extra: &str) -> Fixture {
        let server = DavServer::start(flavor);
        server.user_dir("alice");
        let toml = config_toml(
            &upstream_toml(
                "dav",
                &server,
                Auth::Service(SERVICE_PASSWORD),
                upstream_extra,
            ),
            &user_toml("alice", "dav", true),
        );
        let proxy = Proxy::start(&toml).await;
        Fixture { proxy, server }
    }

    fn alice_dir(&self) -> std::path::PathBuf {
        self.server.files().join("alice")
    }

    async fn ftp(&self) -> AsyncFtpStream {
        connect_and_login(self.proxy.addr, "alice", PASSWORD).await
    }

    async fn raw(&self) -> RawFtp {
        let (mut raw, greeting) = RawFtp::connect(self.proxy.addr).await;
        assert_eq!(greeting.code, 220);
        raw.login("alice", PASSWORD).await;
        raw
    }
}

async fn upload(ftp: &mut AsyncFtpStream, name: &str, bytes: &[u8]) {
    tokio::time::timeout(
        TEST_TIMEOUT,
        ftp.put_file(name, &mut Cursor::new(bytes.to_vec())),
    )
    .await
    .unwrap_or_else(|_| panic!("STOR {name} timed out"))
    .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
}

async fn download(ftp: &mut AsyncFtpStream, name: &str) -> Vec<u8> {
    let transfer = async {
        let mut stream = ftp
            .retr_as_stream(name)
            .await
            .unwrap_or_else(|e| panic!("RETR {name}: {e}"));
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read data");
        stream.finish().await.expect("226 after RETR");
        out
    };
    tokio::time::timeout(TEST_TIMEOUT, transfer)
        .await
        .unwrap_or_else(|_| panic!("RETR {name} timed out"))
}

fn reply_code(err: FtpError) -> u32 {
    match err {
        FtpError::UnexpectedResponse(response) => response.status.code(),
        other => panic!("expected an FTP error reply, got {other}"),
    }
}

/// A name with everything that breaks naive URL or XML handling.
const AWKWARD_DIR: &str = "Café & Co #1";
const AWKWARD_FILE: &str = "R&D plan 100% ünïcødé;?.txt";

async fn awkward_names_round_trip(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let mut ftp = fx.ftp().await;
    let content = random_bytes(300_000, 3);
    ftp.mkdir(AWKWARD_DIR).await.expect("MKD");
    ftp.cwd(AWKWARD_DIR).await.expect("CWD");
    upload(&mut ftp, AWKWARD_FILE, &content).await;

    let on_disk = fx.alice_dir().join(AWKWARD_DIR).join(AWKWARD_FILE);
    assert_eq!(
        sha256_file(&on_disk),
        sha256(&content),
        "bytes on the server"
    );
    assert_eq!(
        leftover_temporaries(&fx.alice_dir().join(AWKWARD_DIR)),
        Vec::<String>::new()
    );
    let names = ftp.nlst(None).await.expect("NLST");
    assert_eq!(names, vec![AWKWARD_FILE.to_owned()]);
    let listing = ftp.list(None).await.expect("LIST");
    assert!(
        listing
            .iter()
            .any(|line| line.ends_with(AWKWARD_FILE) && line.contains(&content.len().to_string())),
        "{listing:?}"
    );
    assert_eq!(ftp.size(AWKWARD_FILE).await.expect("SIZE"), content.len());
    assert_eq!(
        sha256(&download(&mut ftp, AWKWARD_FILE).await),
        sha256(&content)
    );
    ftp.cdup().await.expect("CDUP");
    let top = ftp.nlst(None).await.expect("NLST /");
    assert_eq!(top, vec![AWKWARD_DIR.to_owned()]);
    let _ = ftp.quit().await;
    // nginx offers HTTP/2 through ALPN and the proxy takes it; Apache here
    // speaks plain HTTP/1.1. Uploads were streamed (chunked on HTTP/1.1).
    let log = fx.server.access_log();
    let protocol = match flavor {
        Flavor::Apache => "HTTP/1.1\"",
        _ => "HTTP/2.0\"",
    };
    assert!(
        log.lines()
            .any(|l| l.contains("\"PUT ") && l.contains(protocol)),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains("\"MOVE ")), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_with_ampersands_spaces_percent_and_utf8_round_trip_on_nginx() {
    awkward_names_round_trip(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_with_ampersands_spaces_percent_and_utf8_round_trip_on_apache() {
    awkward_names_round_trip(Flavor::Apache).await;
}

/// curl through the proxy: 64 MiB up and down, resumed download, overwrite.
async fn curl_moves_64_mib_exactly(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(64 * 1024 * 1024 + 5, 17);
    let source = local.path().join("big.bin");
    std::fs::write(&source, &content).unwrap();
    let url = |path: &str| fx.proxy.url("alice", PASSWORD, path);

    run_ok("curl", &["-sS", "-T", path_str(&source), &url("big.bin")]).await;
    assert_eq!(
        sha256_file(&fx.alice_dir().join("big.bin")),
        sha256(&content),
        "64 MiB on the server"
    );
    assert_eq!(leftover_temporaries(&fx.alice_dir()), Vec::<String>::new());

    let copy = local.path().join("copy.bin");
    run_ok("curl", &["-sS", "-o", path_str(&copy), &url("big.bin")]).await;
    assert_eq!(sha256_file(&copy), sha256(&content), "64 MiB downloaded");

    // REST + RETR: curl resumes from what it has.
    let partial = local.path().join("partial.bin");
    std::fs::write(&partial, &content[..10_000_001]).unwrap();
    run_ok(
        "curl",
        &["-sS", "-C", "-", "-o", path_str(&partial), &url("big.bin")],
    )
    .await;
    assert_eq!(sha256_file(&partial), sha256(&content), "resumed download");

    // Overwrite with something shorter: nothing of the old file remains.
    let small = local.path().join("small.bin");
    std::fs::write(&small, b"replaced").unwrap();
    run_ok("curl", &["-sS", "-T", path_str(&small), &url("big.bin")]).await;
    assert_eq!(
        std::fs::read(fx.alice_dir().join("big.bin")).unwrap(),
        b"replaced"
    );
    assert_eq!(leftover_temporaries(&fx.alice_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_uploads_and_downloads_64_mib_exactly_through_nginx() {
    curl_moves_64_mib_exactly(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_uploads_and_downloads_64_mib_exactly_through_apache() {
    curl_moves_64_mib_exactly(Flavor::Apache).await;
}

async fn rest_retr_sends_the_tail(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let content = random_bytes(1_000_003, 5);
    std::fs::write(fx.alice_dir().join("f.bin"), &content).unwrap();
    let mut ftp = fx.ftp().await;
    for offset in [1usize, 65_536, 999_999] {
        ftp.resume_transfer(offset).await.expect("REST");
        let tail = download(&mut ftp, "f.bin").await;
        assert_eq!(tail, &content[offset..], "from offset {offset}");
    }
    // REST to exactly the end: an empty transfer, not an error.
    ftp.resume_transfer(content.len()).await.expect("REST");
    assert!(download(&mut ftp, "f.bin").await.is_empty());
    // Beyond the end: 554 (RFC 3659 §5.5).
    let mut raw = fx.raw().await;
    let _data = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(
        raw.cmd(&format!("REST {}", content.len() + 1)).await.code,
        350
    );
    assert_eq!(raw.cmd("RETR f.bin").await.code, 554);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_then_retr_sends_exactly_the_tail_from_nginx() {
    rest_retr_sends_the_tail(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_then_retr_sends_exactly_the_tail_from_apache() {
    rest_retr_sends_the_tail(Flavor::Apache).await;
}

async fn renames_work_and_never_replace_a_directory(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let dir = fx.alice_dir();
    std::fs::write(dir.join("a.txt"), b"A").unwrap();
    std::fs::write(dir.join("b.txt"), b"B").unwrap();
    std::fs::create_dir_all(dir.join("d1/inner")).unwrap();
    std::fs::write(dir.join("d1/inner/x"), b"X").unwrap();
    std::fs::create_dir(dir.join("keep")).unwrap();
    std::fs::write(dir.join("keep/k"), b"K").unwrap();
    let mut ftp = fx.ftp().await;

    ftp.rename("a.txt", "new name & more.txt")
        .await
        .expect("rename a file");
    assert_eq!(
        std::fs::read(dir.join("new name & more.txt")).unwrap(),
        b"A"
    );
    assert!(!dir.join("a.txt").exists());

    // Onto an existing file: replaced, as rename(2) does.
    ftp.rename("b.txt", "new name & more.txt")
        .await
        .expect("replace a file");
    assert_eq!(
        std::fs::read(dir.join("new name & more.txt")).unwrap(),
        b"B"
    );

    // A directory with its content.
    ftp.rename("d1", "d2").await.expect("rename a directory");
    assert_eq!(std::fs::read(dir.join("d2/inner/x")).unwrap(), b"X");

    // Onto an existing directory: refused, and the directory keeps its files.
    let err = ftp
        .rename("new name & more.txt", "keep")
        .await
        .expect_err("refused");
    assert_eq!(reply_code(err), 550);
    assert_eq!(std::fs::read(dir.join("keep/k")).unwrap(), b"K");
    assert_eq!(
        std::fs::read(dir.join("new name & more.txt")).unwrap(),
        b"B"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_moves_files_and_directories_on_nginx_but_never_over_a_directory() {
    renames_work_and_never_replace_a_directory(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_moves_files_and_directories_on_apache_but_never_over_a_directory() {
    renames_work_and_never_replace_a_directory(Flavor::Apache).await;
}

async fn directories_are_never_deleted_recursively(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let dir = fx.alice_dir();
    std::fs::create_dir_all(dir.join("full/sub")).unwrap();
    std::fs::write(dir.join("full/sub/precious"), b"P").unwrap();
    let mut raw = fx.raw().await;

    assert_eq!(raw.cmd("RMD full").await.code, 550);
    assert_eq!(raw.cmd("RMD full/sub").await.code, 550);
    // DELE of a directory: Apache would delete it recursively.
    assert_eq!(raw.cmd("DELE full").await.code, 550);
    assert_eq!(std::fs::read(dir.join("full/sub/precious")).unwrap(), b"P");

    assert_eq!(raw.cmd("MKD empty dir").await.code, 257);
    assert!(dir.join("empty dir").is_dir());
    assert_eq!(raw.cmd("MKD empty dir").await.code, 550, "already exists");
    assert_eq!(raw.cmd("MKD no/such/parent").await.code, 550);
    assert_eq!(raw.cmd("RMD empty dir").await.code, 250);
    assert!(!dir.join("empty dir").exists());

    assert_eq!(raw.cmd("DELE full/sub/precious").await.code, 250);
    assert!(!dir.join("full/sub/precious").exists());
    assert_eq!(raw.cmd("DELE full/sub/precious").await.code, 550, "gone");
    assert_eq!(raw.cmd("RMD full/sub").await.code, 250, "now empty");
    assert_eq!(raw.cmd("CWD nowhere").await.code, 550);
    assert_eq!(raw.cmd("SIZE nowhere").await.code, 550);
}

#[tokio::test(flavor = "multi_thread")]
async fn rmd_and_dele_never_delete_a_non_empty_directory_on_nginx() {
    directories_are_never_deleted_recursively(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rmd_and_dele_never_delete_a_non_empty_directory_on_apache() {
    directories_are_never_deleted_recursively(Flavor::Apache).await;
}

/// Sends `command` with an EPSV data connection carrying `data`, returns
/// the reply that ends it (or the refusal before it).
async fn store_raw(
    raw: &mut RawFtp,
    addr: std::net::SocketAddr,
    rest: Option<u64>,
    command: &str,
    data: &[u8],
) -> u16 {
    let mut conn = raw.epsv_connect(addr).await;
    // REST must come right before the transfer command.
    if let Some(offset) = rest {
        assert_eq!(raw.cmd(&format!("REST {offset}")).await.code, 350);
    }
    let first = raw.cmd(command).await;
    if first.code != 150 {
        return first.code;
    }
    conn.write_all(data).await.expect("send data");
    conn.shutdown().await.expect("close data");
    drop(conn);
    raw.reply().await.code
}

async fn partial_uploads_are_refused(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let path = fx.alice_dir().join("log.txt");
    std::fs::write(&path, b"head-").unwrap();
    let mut raw = fx.raw().await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);

    let code = store_raw(&mut raw, fx.proxy.addr, None, "APPE log.txt", b"tail").await;
    assert_eq!(code, 502, "APPE is not possible with PUT");
    assert_eq!(std::fs::read(&path).unwrap(), b"head-", "untouched");

    let code = store_raw(&mut raw, fx.proxy.addr, Some(2), "STOR log.txt", b"XX").await;
    assert_eq!(code, 502, "REST + STOR is not possible with PUT");
    assert_eq!(std::fs::read(&path).unwrap(), b"head-", "untouched");

    // A plain STOR still works afterwards.
    let code = store_raw(&mut raw, fx.proxy.addr, None, "STOR log.txt", b"whole").await;
    assert_eq!(code, 226);
    assert_eq!(std::fs::read(&path).unwrap(), b"whole");
}

#[tokio::test(flavor = "multi_thread")]
async fn appe_and_rest_stor_are_502_and_leave_the_file_alone_on_nginx() {
    partial_uploads_are_refused(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn appe_and_rest_stor_are_502_and_leave_the_file_alone_on_apache() {
    partial_uploads_are_refused(Flavor::Apache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stor_into_a_missing_directory_is_550_even_where_put_would_create_it() {
    // nginx runs with create_full_put_path on.
    let fx = Fixture::start(Flavor::Nginx).await;
    let mut raw = fx.raw().await;
    let code = store_raw(
        &mut raw,
        fx.proxy.addr,
        None,
        "STOR missing/dir/f.txt",
        b"x",
    )
    .await;
    assert_eq!(code, 550);
    assert!(!fx.alice_dir().join("missing").exists());
    // A download of a missing file is 550 as well.
    let mut conn = raw.epsv_connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("RETR nothing.bin").await.code, 550);
    let _ = conn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_530_when_the_server_checks_it() {
    let server = DavServer::nginx();
    server.user_dir("alice");
    let toml = config_toml(
        &upstream_toml("dav", &server, Auth::Passthrough, ""),
        &user_toml("alice", "dav", false),
    );
    let proxy = Proxy::start(&toml).await;
    let (mut raw, _) = RawFtp::connect(proxy.addr).await;
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    assert_eq!(raw.cmd("PASS wrong").await.code, 530);
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    assert_eq!(raw.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    // The server saw alice's own credentials: the upload lands in her dir.
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    upload(&mut ftp, "mine.txt", b"by alice").await;
    assert_eq!(
        std::fs::read(server.files().join("alice/mine.txt")).unwrap(),
        b"by alice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_service_credentials_are_530_and_a_wrong_ftp_password_too() {
    let server = DavServer::apache();
    server.user_dir("alice");
    let toml = config_toml(
        &upstream_toml("dav", &server, Auth::Service("not-the-password"), ""),
        &user_toml("alice", "dav", true),
    );
    let proxy = Proxy::start(&toml).await;
    let (mut raw, _) = RawFtp::connect(proxy.addr).await;
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    assert_eq!(
        raw.cmd(&format!("PASS {PASSWORD}")).await.code,
        530,
        "the server refused the service account"
    );
    let fx = Fixture::start(Flavor::Apache).await;
    let (mut raw, _) = RawFtp::connect(fx.proxy.addr).await;
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    assert_eq!(raw.cmd("PASS wrong").await.code, 530, "checked locally");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_server_certificate_closes_the_login_with_421() {
    let server = DavServer::nginx();
    server.user_dir("alice");
    // No ca_file: the system roots do not know the test CA.
    let upstream = upstream_toml("dav", &server, Auth::Service(SERVICE_PASSWORD), "")
        .replace(&format!("ca_file = \"{}\"", server.pki().ca.display()), "");
    let proxy = Proxy::start(&config_toml(&upstream, &user_toml("alice", "dav", true))).await;
    let (mut raw, _) = RawFtp::connect(proxy.addr).await;
    assert_eq!(raw.cmd("USER alice").await.code, 331);
    assert_eq!(raw.cmd(&format!("PASS {PASSWORD}")).await.code, 421);
    assert!(raw.try_reply().await.is_none(), "the connection is closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_logs_in_with_the_client_certificate_and_not_without() {
    let server = DavServer::start(Flavor::NginxMutualTls);
    server.user_dir("alice");
    let pki = server.pki();
    let with_cert = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let toml = config_toml(
        &format!(
            "{}{}",
            upstream_toml("dav", &server, Auth::Service(SERVICE_PASSWORD), &with_cert),
            upstream_toml("nocert", &server, Auth::Service(SERVICE_PASSWORD), "")
        ),
        &format!(
            "{}{}",
            user_toml("alice", "dav", true),
            user_toml("bob", "nocert", true)
        ),
    );
    let proxy = Proxy::start(&toml).await;
    let mut ftp = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    upload(&mut ftp, "m.txt", b"mtls").await;
    assert_eq!(
        std::fs::read(server.files().join("alice/m.txt")).unwrap(),
        b"mtls"
    );
    let (mut raw, _) = RawFtp::connect(proxy.addr).await;
    assert_eq!(raw.cmd("USER bob").await.code, 331);
    assert_eq!(raw.cmd(&format!("PASS {PASSWORD}")).await.code, 421);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_on_one_listener_route_to_sftp_and_webdav_side_by_side() {
    let sshd = common::sshd::Sshd::start();
    let server = DavServer::nginx();
    server.user_dir("bob");
    std::fs::create_dir_all(sshd.data_dir().join("alice")).unwrap();
    let sftp = common::proxy::config_toml(
        &sshd,
        common::proxy::UpstreamAuth::Key,
        "",
        "",
        &common::proxy::user_toml("alice", "/alice"),
    );
    let toml = format!(
        "{sftp}\n{}\n{}",
        upstream_toml("dav", &server, Auth::Service(SERVICE_PASSWORD), ""),
        user_toml("bob", "dav", true)
    );
    let proxy = Proxy::start(&toml).await;
    let mut alice = connect_and_login(proxy.addr, "alice", PASSWORD).await;
    let mut bob = connect_and_login(proxy.addr, "bob", PASSWORD).await;
    upload(&mut alice, "where.txt", b"on sftp").await;
    upload(&mut bob, "where.txt", b"on webdav").await;
    assert_eq!(
        std::fs::read(sshd.data_dir().join("alice/where.txt")).unwrap(),
        b"on sftp"
    );
    assert_eq!(
        std::fs::read(server.files().join("bob/where.txt")).unwrap(),
        b"on webdav"
    );
    assert_eq!(download(&mut bob, "where.txt").await, b"on webdav");
    assert_eq!(download(&mut alice, "where.txt").await, b"on sftp");
}

/// alice's WebDAV session on `server`, opened through the library as the
/// proxy does at PASS.
async fn library_session(server: &DavServer) -> ftpbridge::upstream::webdav::WebDavUpstream {
    use ftpbridge::config::{Backend, from_toml};
    use ftpbridge::upstream::webdav::{DavCredentials, WebDavUpstream};
    let toml = config_toml(
        &upstream_toml("dav", server, Auth::Service(SERVICE_PASSWORD), ""),
        &user_toml("alice", "dav", true),
    );
    let config = from_toml(&toml, std::iter::empty()).expect("test config");
    let Backend::WebDav { settings, auth } = &config.upstreams["dav"].backend else {
        panic!("a webdav upstream");
    };
    let credentials = auth.credentials("alice", PASSWORD.as_bytes(), |username, password| {
        DavCredentials::Basic { username, password }
    });
    tokio::time::timeout(
        TEST_TIMEOUT,
        WebDavUpstream::connect(settings, "alice", &credentials),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn setting_times_and_asking_for_free_space_are_unsupported_where_the_server_cannot() {
    use ftpbridge::upstream::{ErrorKind, RemotePath, SetAttributes, Upstream};
    for flavor in [Flavor::Nginx, Flavor::Apache] {
        let server = DavServer::start(flavor);
        let file = server.user_dir("alice").join("t.txt");
        std::fs::write(&file, b"t").unwrap();
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        let session = library_session(&server).await;
        let path = RemotePath::new(b"/t.txt".to_vec());
        let attrs = SetAttributes {
            modified: Some(1_000_000_000),
            ..Default::default()
        };
        let err = session
            .set_attributes(&path, &attrs)
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{flavor:?}: {err}");
        assert!(
            err.to_string().contains("modification time"),
            "{flavor:?}: a clear detail: {err}"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before
        );
        let root = RemotePath::new(b"/".to_vec());
        let err = session.free_space(&root).await.expect_err("no quota");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{flavor:?}: {err}");
        assert!(!session.capabilities().free_space);
        // Metadata the FTP layer shows: size and modification time.
        let meta = session.stat(&path).await.expect("stat");
        assert_eq!(meta.size, 1);
        let mtime = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(meta.modified, Some(mtime), "{flavor:?}");
    }
}

async fn attribute_commands_get_clear_replies(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let dir = fx.alice_dir();
    std::fs::write(dir.join("f.txt"), b"f").unwrap();
    let before = std::fs::metadata(dir.join("f.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let mut raw = fx.raw().await;
    assert_eq!(raw.cmd("TYPE I").await.code, 200);

    // Neither server lets a client set the modification time or the mode.
    let reply = raw.cmd("MFMT 20200101000000 f.txt").await;
    assert_eq!(reply.code, 502, "{reply:?}");
    let reply = raw.cmd("SITE CHMOD 600 f.txt").await;
    assert_eq!(reply.code, 502, "{reply:?}");
    assert_eq!(
        std::fs::metadata(dir.join("f.txt"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    // MDTM reads the time the server reports.
    assert_eq!(raw.cmd("MDTM f.txt").await.code, 213);

    // STOU stores under a new name and never replaces anything.
    let code = store_raw(&mut raw, fx.proxy.addr, None, "STOU", b"unique").await;
    assert!(code == 226 || code == 250, "STOU: {code}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "f.txt and the unique file: {names:?}");
    let unique = names.iter().find(|n| *n != "f.txt").unwrap();
    assert_eq!(std::fs::read(dir.join(unique)).unwrap(), b"unique");
    assert_eq!(std::fs::read(dir.join("f.txt")).unwrap(), b"f");
}

#[tokio::test(flavor = "multi_thread")]
async fn mfmt_and_site_chmod_are_502_and_stou_stores_a_new_file_on_nginx() {
    attribute_commands_get_clear_replies(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mfmt_and_site_chmod_are_502_and_stou_stores_a_new_file_on_apache() {
    attribute_commands_get_clear_replies(Flavor::Apache).await;
}

async fn lftp_and_ftplib_work_on(flavor: Flavor) {
    let fx = Fixture::start(flavor).await;
    let local = tempfile::tempdir().unwrap();
    let content = random_bytes(2_500_000, 61);
    let source = local.path().join("lf.bin");
    std::fs::write(&source, &content).unwrap();
    let back = local.path().join("back.bin");
    let port = fx.proxy.addr.port().to_string();
    let login = format!("alice,{PASSWORD}");
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; mkdir dir; put {} -o dir/lf.bin; get dir/lf.bin -o {}; mv dir/lf.bin dir/moved.bin; cls -1 dir; quit",
        path_str(&source),
        path_str(&back)
    );
    let listing = run_ok(
        "lftp",
        &["-u", &login, "-p", &port, "-e", &script, "127.0.0.1"],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&listing).trim(), "dir/moved.bin");
    assert_eq!(
        sha256_file(&fx.alice_dir().join("dir/moved.bin")),
        sha256(&content)
    );
    assert_eq!(sha256_file(&back), sha256(&content));

    let script = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
ftp.login("alice", sys.argv[2])
data = b"R&D report\n" * 50000
ftp.storbinary("STOR R&D report.txt", io.BytesIO(data))
assert ftp.size("R&D report.txt") == len(data)
out = io.BytesIO()
ftp.retrbinary("RETR R&D report.txt", out.write, rest=11)
assert out.getvalue() == data[11:]
facts = dict(ftp.mlsd())
assert facts["R&D report.txt"]["type"] == "file", facts
lines = []
ftp.retrlines("RETR R&D report.txt", lines.append)
assert len(lines) == 50000 and lines[0] == "R&D report"
ftp.delete("R&D report.txt")
print(sorted(ftp.nlst()))
ftp.quit()
"#;
    let out = run_ok("python3", &["-c", script, &port, PASSWORD]).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "['dir']");
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_and_python_ftplib_work_on_nginx() {
    lftp_and_ftplib_work_on(Flavor::Nginx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_and_python_ftplib_work_on_apache() {
    lftp_and_ftplib_work_on(Flavor::Apache).await;
}
