//! Logins that no `[[users]]` entry names: pass-through routes, the classic
//! `USER name@host` proxy login, and the external auth hook, against real
//! OpenSSH and nginx WebDAV upstreams.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::clients::run_ok;
use common::hook::{HookReply, HookServer};
use common::pki::TestPki;
use common::proxy::{PASSWORD, Proxy, connect_and_login, user_toml};
use common::raw::{RawFtp, RawReply};
use common::sshd::{Sshd, SshdOptions};
use common::webdav::DavServer;
use serde_json::json;

/// The config header: one listener (with `listener_extra`) and `sections`.
fn config(listener_extra: &str, sections: &str) -> String {
    format!(
        "[shutdown]\ndrain_timeout = \"2s\"\n\n[[listeners]]\nname = \"test\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n\n{sections}"
    )
}

/// An `[[upstreams]]` block for `sshd`, pass-through or with its key.
fn sftp_upstream(sshd: &Sshd, name: &str, passthrough: bool) -> String {
    let auth = if passthrough {
        "auth = \"passthrough\"".to_owned()
    } else {
        format!(
            "auth = \"key\"\nusername = \"{}\"\nkey = \"{}\"",
            sshd.key_user(),
            sshd.client_key_path().display()
        )
    };
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"sftp\"\naddress = \"{}\"\nhost_key = \"{}\"\n{auth}\nroot = \"{}\"\nconnect_timeout = \"5s\"\n\n",
        sshd.addr(),
        sshd.host_key_fingerprint(),
        sshd.data_dir().display()
    )
}

/// The password account sshd accepts (created by scripts/test.sh).
fn account(sshd: &Sshd) -> (String, String) {
    let (user, password) = sshd
        .password_user()
        .expect("run scripts/test.sh (as root) to create the password test user");
    (user.to_owned(), password.to_owned())
}

/// A directory under the upstream root that the password account may write.
fn shared_dir(sshd: &Sshd, relative: &str) -> std::path::PathBuf {
    let dir = sshd.data_dir().join(relative);
    std::fs::create_dir_all(&dir).unwrap();
    let mut path = dir.as_path();
    while path != sshd.data_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        path = path.parent().unwrap();
    }
    dir
}

async fn login(addr: SocketAddr, user: &str, password: &str) -> (RawFtp, RawReply) {
    let (mut raw, greeting) = RawFtp::connect(addr).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(raw.cmd(&format!("USER {user}")).await.code, 331);
    let reply = raw.cmd(&format!("PASS {password}")).await;
    (raw, reply)
}

async fn upload(addr: SocketAddr, user: &str, password: &str, name: &str, bytes: &[u8]) {
    let mut ftp = connect_and_login(addr, user, password).await;
    ftp.put_file(name, &mut std::io::Cursor::new(bytes.to_vec()))
        .await
        .unwrap_or_else(|e| panic!("STOR {name} as {user}: {e}"));
    ftp.quit().await.unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[tokio::test]
async fn an_unlisted_user_reaches_their_home_by_a_pass_through_route() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    let home = shared_dir(&sshd, &format!("homes/{user}"));
    let toml = config(
        "",
        &format!(
            "{}[[routes]]\nmatch = \"ftpbridge-*\"\nupstream = \"files\"\nauth = \"passthrough\"\nroot = \"/homes/{{user}}\"\n",
            sftp_upstream(&sshd, "files", true)
        ),
    );
    let proxy = Proxy::start(&toml).await;

    let (_, reply) = login(proxy.addr, &user, "not-the-password").await;
    assert_eq!(reply.code, 530, "the upstream refused: {reply:?}");
    upload(proxy.addr, &user, &password, "routed.txt", b"by route").await;
    assert_eq!(read(&home.join("routed.txt")), b"by route");
    // A name no route matches is unknown.
    let (_, reply) = login(proxy.addr, "somebody", &password).await;
    assert_eq!(reply.code, 530);
    proxy.stop().await;
}

#[tokio::test]
async fn a_pass_through_login_to_an_unreachable_upstream_is_a_421() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    // Bound and dropped: nothing listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down =
        sftp_upstream(&sshd, "down", true).replace(&sshd.addr().to_string(), &closed.to_string());
    let toml = config(
        "",
        &format!(
            "{down}{}[[routes]]\nregex = \"^ftpbridge-[a-z0-9]+$\"\nupstream = \"down\"\n\n\
             [[routes]]\nmatch = \"*\"\nupstream = \"files\"\n",
            sftp_upstream(&sshd, "files", true)
        ),
    );
    let proxy = Proxy::start(&toml).await;
    let (_, reply) = login(proxy.addr, &user, &password).await;
    assert_eq!(
        reply.code, 421,
        "the regex route's upstream is down: {reply:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn routes_apply_only_to_their_client_networks_and_the_first_match_wins() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    let near = shared_dir(&sshd, "near");
    let toml = config(
        "",
        &format!(
            "{}[[routes]]\nmatch = \"*\"\nclients = [\"10.0.0.0/8\"]\nupstream = \"files\"\nroot = \"/far\"\n\n\
             [[routes]]\nmatch = \"*\"\nclients = [\"127.0.0.0/8\", \"::1\"]\nupstream = \"files\"\nroot = \"/near\"\n\n\
             [[routes]]\nmatch = \"*\"\nupstream = \"files\"\nroot = \"/last\"\n",
            sftp_upstream(&sshd, "files", true)
        ),
    );
    let proxy = Proxy::start(&toml).await;
    upload(proxy.addr, &user, &password, "where.txt", b"near").await;
    assert_eq!(read(&near.join("where.txt")), b"near");
    assert!(!sshd.data_dir().join("far").exists());
    assert!(!sshd.data_dir().join("last").exists());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_on_one_listener_are_routed_to_sftp_and_webdav() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    let home = shared_dir(&sshd, &format!("homes/{user}"));
    let dav = DavServer::nginx();
    dav.user_dir("alice");
    let toml = config(
        "",
        &format!(
            "{}[[upstreams]]\nname = \"dav\"\nkind = \"webdav\"\nurl = \"{}\"\nauth = \"passthrough\"\nca_file = \"{}\"\n\n\
             [[routes]]\nregex = \"^(alice|bob)$\"\nupstream = \"dav\"\n\n\
             [[routes]]\nmatch = \"ftpbridge-*\"\nupstream = \"files\"\nroot = \"/homes/{{user}}\"\n",
            sftp_upstream(&sshd, "files", true),
            dav.url_template(),
            dav.pki().ca.display(),
        ),
    );
    let proxy = Proxy::start(&toml).await;
    upload(proxy.addr, "alice", PASSWORD, "to-dav.txt", b"webdav").await;
    upload(proxy.addr, &user, &password, "to-sftp.txt", b"sftp").await;
    assert_eq!(read(&dav.files().join("alice/to-dav.txt")), b"webdav");
    assert_eq!(read(&home.join("to-sftp.txt")), b"sftp");
    let (_, reply) = login(proxy.addr, "alice", "wrong").await;
    assert_eq!(reply.code, 530, "nginx refused the password: {reply:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn user_templates_cannot_be_used_to_escape_the_home_directory() {
    let sshd = Sshd::start();
    let (_, password) = account(&sshd);
    shared_dir(&sshd, "homes");
    let toml = config(
        "",
        &format!(
            "{}[[routes]]\nmatch = \"*\"\nupstream = \"files\"\nroot = \"/homes/{{user}}\"\n",
            sftp_upstream(&sshd, "files", true)
        ),
    );
    let proxy = Proxy::start(&toml).await;
    for name in ["..", "../ftpbridge-test", "homes/../..", ".hidden", "a\\b"] {
        let (_, reply) = login(proxy.addr, name, &password).await;
        assert_eq!(reply.code, 530, "{name:?}: {reply:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_classic_proxy_login_reaches_only_allowed_upstreams() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    shared_dir(&sshd, "");
    let upstreams = sftp_upstream(&sshd, "files", true);
    let toml = config(
        "proxy_login = true\nproxy_login_upstreams = [\"files\"]",
        &upstreams,
    );
    let proxy = Proxy::start(&toml).await;
    // By the upstream's name, and by its address.
    upload(
        proxy.addr,
        &format!("{user}@files"),
        &password,
        "by-name.txt",
        b"1",
    )
    .await;
    upload(
        proxy.addr,
        &format!("{user}@{}", sshd.addr()),
        &password,
        "by-addr.txt",
        b"2",
    )
    .await;
    assert_eq!(read(&sshd.data_dir().join("by-name.txt")), b"1");
    assert_eq!(read(&sshd.data_dir().join("by-addr.txt")), b"2");
    // curl, as a script would use it: the '@' of the login name is %40.
    let url = format!("ftp://{user}%40files:{password}@{}/by-name.txt", proxy.addr);
    assert_eq!(run_ok("curl", &["-sS", &url]).await, b"1");
    // Anything else is not a relay.
    for target in ["evil.example.com", "127.0.0.1:22", "files:2222"] {
        let (_, reply) = login(proxy.addr, &format!("{user}@{target}"), &password).await;
        assert_eq!(reply.code, 530, "{target}: {reply:?}");
    }
    proxy.stop().await;

    // Off by default.
    let proxy = Proxy::start(&config("", &upstreams)).await;
    let (_, reply) = login(proxy.addr, &format!("{user}@files"), &password).await;
    assert_eq!(reply.code, 530);
    proxy.stop().await;
}

#[tokio::test]
async fn keyboard_interactive_servers_accept_pass_through_logins() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication yes".into(),
            "UsePAM yes".into(),
        ],
        ..SshdOptions::default()
    });
    let (user, password) = account(&sshd);
    let users = format!("[[users]]\nname = \"{user}\"\nupstream = \"files\"\n");
    let toml = config(
        "",
        &format!("{}{users}", sftp_upstream(&sshd, "files", true)),
    );
    let proxy = Proxy::start(&toml).await;
    let (_, reply) = login(proxy.addr, &user, "wrong").await;
    assert_eq!(reply.code, 530, "{reply:?}");
    upload(proxy.addr, &user, &password, "kbd.txt", b"kbd").await;
    assert_eq!(read(&sshd.data_dir().join("kbd.txt")), b"kbd");
    proxy.stop().await;
}

/// A hook that allows `hooked`/`hook-pw` into /hooked with `answer`'s extras.
fn allowing(extra: serde_json::Value) -> impl Fn(&serde_json::Value) -> HookReply {
    move |request| {
        if request["user"] == "hooked" && request["password"] == "hook-pw" {
            let mut answer = json!({"allow": true, "upstream": "files", "root": "/hooked"});
            if let (Some(answer), Some(extra)) = (answer.as_object_mut(), extra.as_object()) {
                answer.extend(extra.clone());
            }
            HookReply::Json(answer)
        } else {
            HookReply::Json(json!({"allow": false, "reason": "bad credentials"}))
        }
    }
}

fn hook_section(hook: &HookServer, pki: &TestPki, extra: &str) -> String {
    format!(
        "[auth_hook]\nurl = \"{}\"\nca_file = \"{}\"\ntimeout = \"1s\"\ntoken = \"hook-secret\"\n{extra}\n\n",
        hook.url,
        pki.ca.display()
    )
}

#[tokio::test]
async fn the_hook_decides_and_its_answer_is_obeyed() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let hooked = sshd.data_dir().join("hooked");
    std::fs::create_dir_all(&hooked).unwrap();
    let hook = HookServer::start(&pki, allowing(json!({"tenant": "partners"}))).await;
    let toml = config(
        "",
        &format!(
            "{}{}[tenants.partners]\nmax_sessions = 5\n\n{}",
            sftp_upstream(&sshd, "files", false),
            hook_section(&hook, &pki, ""),
            user_toml("static", "/"),
        )
        .replace("upstream = \"sftp\"", "upstream = \"files\""),
    );
    let proxy = Proxy::start(&toml).await;

    upload(proxy.addr, "hooked", "hook-pw", "via-hook.txt", b"hooked").await;
    assert_eq!(read(&hooked.join("via-hook.txt")), b"hooked");
    let (_, reply) = login(proxy.addr, "hooked", "wrong").await;
    assert_eq!(reply.code, 530, "the hook refused: {reply:?}");
    // Static users never reach the hook.
    let (_, reply) = login(proxy.addr, "static", PASSWORD).await;
    assert_eq!(reply.code, 230);

    let requests = hook.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["user"], "hooked");
    assert_eq!(requests[0]["password"], "hook-pw");
    assert_eq!(requests[0]["client_ip"], "127.0.0.1");
    assert_eq!(requests[0]["listener"], "test");
    assert_eq!(requests[0]["tls"], false);
    assert_eq!(requests[0]["_method"], "POST");
    assert_eq!(requests[0]["_authorization"], "Bearer hook-secret");
    proxy.stop().await;
}

#[tokio::test]
async fn hook_answers_are_cached_and_their_limits_apply() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    std::fs::create_dir_all(sshd.data_dir().join("hooked")).unwrap();
    let hook = HookServer::start(&pki, allowing(json!({"max_sessions": 1}))).await;
    let toml = config(
        "",
        &format!(
            "{}{}",
            sftp_upstream(&sshd, "files", false),
            hook_section(&hook, &pki, "cache = \"60s\"")
        ),
    );
    let proxy = Proxy::start(&toml).await;
    let (mut first, reply) = login(proxy.addr, "hooked", "hook-pw").await;
    assert_eq!(reply.code, 230);
    let (_, reply) = login(proxy.addr, "hooked", "hook-pw").await;
    assert_eq!(reply.code, 421, "the hook's max_sessions = 1: {reply:?}");
    assert_eq!(hook.calls(), 1, "the second login used the cached answer");
    assert_eq!(first.cmd("QUIT").await.code, 221);
    // A different password is a different key: the hook is asked again.
    let (_, reply) = login(proxy.addr, "hooked", "wrong").await;
    assert_eq!(reply.code, 530);
    assert_eq!(hook.calls(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_or_failing_hook_refuses_the_login_and_nothing_weaker_is_tried() {
    let sshd = Sshd::start();
    let (user, password) = account(&sshd);
    shared_dir(&sshd, "");
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let slow_user = user.clone();
    let hook = HookServer::start(&pki, move |request| {
        if request["user"] == slow_user.as_str() {
            HookReply::Slow(
                Duration::from_secs(3),
                json!({"allow": true, "upstream": "files"}),
            )
        } else {
            HookReply::Status(500)
        }
    })
    .await;
    // The hook route comes first; a pass-through route after it would let
    // the same account in, and must not be tried when the hook fails.
    let toml = config(
        "",
        &format!(
            "{}{}[[routes]]\nmatch = \"*\"\nauth = \"hook\"\nupstream = \"files\"\n\n[[routes]]\nmatch = \"*\"\nupstream = \"files\"\n",
            sftp_upstream(&sshd, "files", true),
            hook_section(&hook, &pki, ""),
        ),
    );
    let proxy = Proxy::start(&toml).await;
    let (_, reply) = login(proxy.addr, &user, &password).await;
    assert_eq!(reply.code, 421, "timeout: {reply:?}");
    let (_, reply) = login(proxy.addr, "other", "x").await;
    assert_eq!(reply.code, 421, "HTTP 500: {reply:?}");
    assert_eq!(hook.calls(), 2);
    proxy.stop().await;
}
