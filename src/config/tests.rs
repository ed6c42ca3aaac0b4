//! Config loading and validation: each error names its key.

use std::time::Duration;

use super::*;
use crate::net::Cidr;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$EEZRuJFGu++vpiPw6bRsgw$ZHamxZKC1DZ8AQQXIVYPOznA/IZSSM9iWkfhXtmmNYs";
const PIN: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

fn base() -> String {
    format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:2121"

[[upstreams]]
name = "files"
kind = "sftp"
address = "sftp.internal"
host_key = "{PIN}"
auth = "password"
username = "svc"
password = "pw"
root = "/srv/ftp/"

[[users]]
name = "alice"
password_hash = "{HASH}"
upstream = "files"
root = "/alice"
"#
    )
}

/// The SFTP settings of an upstream that must be an SFTP one.
fn sftp(upstream: &UpstreamConfig) -> &SftpSettings {
    match &upstream.backend {
        Backend::Sftp { settings, .. } => settings,
        other => panic!("expected an sftp upstream, got {}", other.kind()),
    }
}

fn load(text: &str) -> Result<RuntimeConfig, ConfigError> {
    from_toml(text, std::iter::empty())
}

fn error_for(text: &str) -> ConfigError {
    load(text).expect_err("the config must be refused")
}

fn replaced(from: &str, to: &str) -> String {
    let text = base();
    assert!(text.contains(from), "{from:?} not in the base config");
    text.replacen(from, to, 1)
}

#[test]
fn a_minimal_config_loads_with_defaults() {
    let config = load(&base()).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.bind, "127.0.0.1:2121".parse().unwrap());
    assert_eq!(listener.passive_address, PassiveAddress::Auto);
    assert_eq!(listener.passive_ports, None);
    assert_eq!(listener.idle_timeout, defaults::IDLE_TIMEOUT);
    assert_eq!(listener.max_login_attempts, 3);
    assert!(listener.active_mode);
    assert_eq!(listener.active_min_port, 1024);
    assert_eq!(listener.active_source_port, None);
    let upstream = &config.upstreams["files"];
    assert_eq!(
        (sftp(upstream).host.as_str(), sftp(upstream).port),
        ("sftp.internal", 22)
    );
    assert!(upstream.atomic_uploads);
    assert_eq!(upstream.root.as_bytes(), b"/srv/ftp");
    let alice = config.user("alice").unwrap();
    assert_eq!(
        alice.root.as_bytes(),
        b"/srv/ftp/alice",
        "user root joins the upstream root"
    );
    assert_eq!(config.server.max_sessions, defaults::MAX_SESSIONS);
}

#[test]
fn the_shipped_proxy_toml_is_valid() {
    let text = include_str!("../../proxy.toml");
    let config = load(text).unwrap_or_else(|e| panic!("proxy.toml: {e}"));
    assert_eq!(config.listeners[0].passive_ports, Some(50000..=50100));
    assert!(config.upstreams["files"].backend.is_passthrough());
    assert!(config.user("scanner").unwrap().password_hash.is_none());
    assert_eq!(config.upstreams["dav"].backend.kind(), "webdav");
    assert!(
        config
            .user("carol")
            .unwrap()
            .upstream
            .backend
            .is_passthrough()
    );
}

#[test]
fn human_values_are_read_as_written() {
    let text = replaced(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\nidle_timeout = \"90s\"\npassive_ports = \"50000-50010\"\npassive_address = \"ftp.example.com\"",
    );
    let config = load(&text).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.idle_timeout, Duration::from_secs(90));
    assert_eq!(listener.passive_ports, Some(50000..=50010));
    assert_eq!(
        listener.passive_address,
        PassiveAddress::Host("ftp.example.com".into())
    );
}

#[test]
fn environment_variables_override_any_key() {
    let env = [
        ("FTPBRIDGE__SERVER__MAX_SESSIONS".to_owned(), "7".to_owned()),
        (
            "FTPBRIDGE__LISTENERS__0__IDLE_TIMEOUT".to_owned(),
            "2m".to_owned(),
        ),
        (
            "FTPBRIDGE__UPSTREAMS__0__ADDRESS".to_owned(),
            "other:2200".to_owned(),
        ),
        (
            "FTPBRIDGE__UPSTREAMS__0__ATOMIC_UPLOADS".to_owned(),
            "false".to_owned(),
        ),
        ("UNRELATED".to_owned(), "ignored".to_owned()),
    ];
    let config = from_toml(&base(), env).unwrap();
    assert_eq!(config.server.max_sessions, 7);
    assert_eq!(config.listeners[0].idle_timeout, Duration::from_secs(120));
    let upstream = &config.upstreams["files"];
    assert_eq!(
        (sftp(upstream).host.as_str(), sftp(upstream).port),
        ("other", 2200)
    );
    assert!(!upstream.atomic_uploads);
}

#[test]
fn environment_keys_map_to_config_paths() {
    assert_eq!(
        env_key_to_path("FTPBRIDGE__SERVER__MAX_SESSIONS").as_deref(),
        Some("server.max_sessions")
    );
    assert_eq!(
        env_key_to_path("FTPBRIDGE__LISTENERS__0__BIND").as_deref(),
        Some("listeners[0].bind")
    );
    assert_eq!(env_key_to_path("OTHER__X"), None);
    assert_eq!(env_key_to_path("FTPBRIDGE__A____B"), None);
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let err = error_for(&replaced("bind = ", "bnd = \"x\"\nbind = "));
    assert!(err.to_string().contains("bnd"), "{err}");
}

#[test]
fn a_bad_bind_address_names_the_key() {
    let err = error_for(&replaced("127.0.0.1:2121", "localhost"));
    assert_eq!(err.key, "listeners[0].bind");
}

#[test]
fn a_bad_duration_names_the_key() {
    let err = error_for(&replaced(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\nidle_timeout = \"soon\"",
    ));
    assert_eq!(err.key, "listeners[0].idle_timeout");
}

#[test]
fn a_bad_port_range_names_the_key() {
    let err = error_for(&replaced(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\npassive_ports = \"60000-50000\"",
    ));
    assert_eq!(err.key, "listeners[0].passive_ports");
}

#[test]
fn an_unspecified_passive_address_is_refused() {
    let err = error_for(&replaced(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\npassive_address = \"0.0.0.0\"",
    ));
    assert_eq!(err.key, "listeners[0].passive_address");
}

#[test]
fn duplicate_listener_names_are_refused() {
    let text = format!(
        "{}\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:2122\"\n",
        base()
    );
    assert_eq!(error_for(&text).key, "listeners[1].name");
}

#[test]
fn an_unpinned_upstream_is_refused() {
    let err = error_for(&replaced(&format!("host_key = \"{PIN}\"\n"), ""));
    assert_eq!(err.key, "upstreams[0].host_key");
    assert!(err.message.contains("ssh-keygen"), "{err}");
}

#[test]
fn a_malformed_fingerprint_is_refused() {
    assert_eq!(
        error_for(&replaced(PIN, "MD5:aa:bb")).key,
        "upstreams[0].host_key"
    );
    assert_eq!(
        error_for(&replaced(PIN, "SHA256:short")).key,
        "upstreams[0].host_key"
    );
}

#[test]
fn insecure_accept_any_must_be_written_explicitly() {
    let config = load(&replaced(PIN, "insecure-accept-any")).unwrap();
    assert_eq!(
        sftp(&config.upstreams["files"]).host_keys,
        crate::upstream::sftp::HostKeyCheck::AcceptAny
    );
}

#[test]
fn a_missing_known_hosts_file_names_the_key() {
    let text = replaced(
        &format!("host_key = \"{PIN}\""),
        "known_hosts = \"/nonexistent/known_hosts\"",
    );
    assert_eq!(error_for(&text).key, "upstreams[0].known_hosts");
}

#[test]
fn an_unknown_auth_method_names_the_key() {
    assert_eq!(
        error_for(&replaced("auth = \"password\"", "auth = \"pasword\"")).key,
        "upstreams[0].auth"
    );
}

#[test]
fn password_auth_needs_a_password() {
    assert_eq!(
        error_for(&replaced("password = \"pw\"\n", "")).key,
        "upstreams[0].password"
    );
}

#[test]
fn key_auth_loads_the_key_file_at_validation() {
    let text = replaced("auth = \"password\"", "auth = \"key\"").replacen(
        "password = \"pw\"",
        "key = \"/nonexistent/id_ed25519\"",
        1,
    );
    let err = error_for(&text);
    assert_eq!(err.key, "upstreams[0].key");
    assert!(err.message.contains("/nonexistent/id_ed25519"), "{err}");
}

#[test]
fn passthrough_refuses_service_credentials() {
    let text = replaced("auth = \"password\"", "auth = \"passthrough\"");
    assert_eq!(error_for(&text).key, "upstreams[0].username");
}

#[test]
fn an_unknown_upstream_kind_names_the_key() {
    assert_eq!(
        error_for(&replaced("kind = \"sftp\"", "kind = \"s3\"")).key,
        "upstreams[0].kind"
    );
}

#[test]
fn a_user_must_name_an_existing_upstream() {
    let err = error_for(&replaced("upstream = \"files\"", "upstream = \"nope\""));
    assert_eq!(err.key, "users[0].upstream");
    assert!(
        err.message.contains("files"),
        "lists the defined upstreams: {err}"
    );
}

#[test]
fn a_user_needs_a_hash_unless_the_upstream_passes_credentials_through() {
    let err = error_for(&replaced(&format!("password_hash = \"{HASH}\"\n"), ""));
    assert_eq!(err.key, "users[0].password_hash");
    let err = error_for(&replaced(HASH, "plaintext"));
    assert_eq!(err.key, "users[0].password_hash");
}

#[test]
fn roots_must_be_absolute_without_dot_dot() {
    assert_eq!(
        error_for(&replaced("root = \"/alice\"", "root = \"alice\"")).key,
        "users[0].root"
    );
    assert_eq!(
        error_for(&replaced("root = \"/alice\"", "root = \"/a/../b\"")).key,
        "users[0].root"
    );
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let config = load(&replaced("password = \"pw\"", "password = \"topsecret\"")).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(!debug.contains(HASH), "{debug}");
}

#[test]
fn type_errors_from_the_config_crate_name_the_key_in_our_form() {
    let err = error_for(&replaced(
        "password = \"pw\"",
        "password = \"pw\"\nrequests_in_flight = \"many\"",
    ));
    assert_eq!(err.key, "upstreams[0].requests_in_flight");
    assert!(!err.message.contains("for key"), "{err}");
    let err = error_for(&replaced("name = \"main\"\n", ""));
    assert_eq!(err.key, "listeners[0].name");
}

#[test]
fn crate_keys_are_normalised() {
    assert_eq!(
        normalise_key("upstreams[0]requests_in_flight"),
        "upstreams[0].requests_in_flight"
    );
    assert_eq!(normalise_key("listeners[0].bind"), "listeners[0].bind");
    assert_eq!(normalise_key("a[0][1]b"), "a[0][1].b");
}

#[test]
fn active_source_port_zero_is_refused() {
    let text = replaced(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\nactive_source_port = 0",
    );
    assert_eq!(error_for(&text).key, "listeners[0].active_source_port");
}

#[test]
fn sftp_upstream_pools_have_defaults_and_checked_bounds() {
    let config = load(&base()).unwrap();
    let pool = sftp(&config.upstreams["files"]).pool;
    assert_eq!(pool.max_connections, defaults::POOL_CONNECTIONS);
    assert_eq!(pool.channels_per_connection, defaults::POOL_CHANNELS);
    assert_eq!(pool.idle_timeout, defaults::SFTP_POOL_IDLE_TIMEOUT);
    assert_eq!(pool.max_age, defaults::POOL_MAX_AGE);
    let with = |extra: &str| replaced("password = \"pw\"", &format!("password = \"pw\"\n{extra}"));
    let off = load(&with("pool_connections = 0")).unwrap();
    assert!(!sftp(&off.upstreams["files"]).pool.enabled());
    let tuned = load(&with(
        "pool_channels = 4\npool_idle_timeout = \"5s\"\npool_max_age = \"1h\"",
    ))
    .unwrap();
    let pool = sftp(&tuned.upstreams["files"]).pool;
    assert_eq!(pool.channels_per_connection, 4);
    assert_eq!(pool.idle_timeout, Duration::from_secs(5));
    assert_eq!(pool.max_age, Duration::from_secs(3600));
    for (extra, key) in [
        ("pool_channels = 0", "upstreams[0].pool_channels"),
        ("pool_connections = 100000", "upstreams[0].pool_connections"),
        ("pool_max_age = \"soon\"", "upstreams[0].pool_max_age"),
        (
            "pool_idle_timeout = \"0s\"",
            "upstreams[0].pool_idle_timeout",
        ),
    ] {
        assert_eq!(error_for(&with(extra)).key, key, "{extra}");
    }
}

#[test]
fn sftp_pool_keys_are_refused_on_webdav_upstreams() {
    let err = error_for(&webdav(&format!("{BASIC}\npool_channels = 4")));
    assert_eq!(err.key, "upstreams[0].pool_channels");
}

// ---- WebDAV upstreams ----

/// A config whose only upstream is WebDAV; `auth` lines replace the default.
fn webdav(auth_and_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:2121"

[[upstreams]]
name = "dav"
kind = "webdav"
url = "https://dav.example.com/files/{{user}}/"
{auth_and_extra}

[[users]]
name = "alice"
password_hash = "{HASH}"
upstream = "dav"
"#
    )
}

const BASIC: &str = "auth = \"basic\"\nusername = \"svc\"\npassword = \"pw\"";

fn webdav_settings(upstream: &UpstreamConfig) -> &crate::upstream::webdav::WebDavSettings {
    match &upstream.backend {
        Backend::WebDav { settings, .. } => settings,
        other => panic!("expected a webdav upstream, got {}", other.kind()),
    }
}

#[test]
fn a_webdav_upstream_loads_with_its_defaults() {
    let config = load(&webdav(BASIC)).unwrap();
    let upstream = &config.upstreams["dav"];
    let settings = webdav_settings(upstream);
    assert_eq!(
        settings
            .url
            .for_user("bob smith")
            .unwrap()
            .url_of(&RemotePath::new(b"/".to_vec()), true),
        "https://dav.example.com/files/bob%20smith/"
    );
    let timeouts = settings.client.timeouts();
    assert_eq!(timeouts.connect, defaults::CONNECT_TIMEOUT);
    assert_eq!(timeouts.request, defaults::REQUEST_TIMEOUT);
    assert_eq!(timeouts.pool_idle, defaults::POOL_IDLE_TIMEOUT);
    assert!(upstream.atomic_uploads);
    assert!(matches!(
        &upstream.backend,
        Backend::WebDav {
            auth: UpstreamAuth::Service(crate::upstream::webdav::DavCredentials::Basic { username, .. }),
            ..
        } if username == "svc"
    ));
}

#[test]
fn sftp_and_webdav_upstreams_live_side_by_side() {
    let text = format!(
        "{}\n[[upstreams]]\nname = \"dav\"\nkind = \"webdav\"\nurl = \"http://127.0.0.1:8080/\"\nauth = \"passthrough\"\n\n[[users]]\nname = \"bob\"\nupstream = \"dav\"\n",
        base()
    );
    let config = load(&text).unwrap();
    assert_eq!(
        config.user("alice").unwrap().upstream.backend.kind(),
        "sftp"
    );
    let bob = config.user("bob").unwrap();
    assert_eq!(bob.upstream.backend.kind(), "webdav");
    assert!(
        bob.password_hash.is_none(),
        "passthrough: the server checks"
    );
}

#[test]
fn a_webdav_upstream_needs_a_valid_url() {
    let text = webdav(BASIC).replace("url = \"https://dav.example.com/files/{user}/\"\n", "");
    assert_eq!(error_for(&text).key, "upstreams[0].url");
    let text = webdav(BASIC).replace("https://dav.example.com", "ftp://dav.example.com");
    assert_eq!(error_for(&text).key, "upstreams[0].url");
}

#[test]
fn keys_of_the_other_upstream_kind_are_refused() {
    let err = error_for(&webdav(&format!("{BASIC}\nhost_key = \"{PIN}\"")));
    assert_eq!(err.key, "upstreams[0].host_key");
    assert!(err.message.contains("webdav"), "{err}");
    let err = error_for(&replaced(
        "root = \"/srv/ftp/\"",
        "ca_file = \"/etc/ca.pem\"",
    ));
    assert_eq!(err.key, "upstreams[0].ca_file");
}

#[test]
fn webdav_auth_modes_need_exactly_their_credentials() {
    let cases = [
        (
            "auth = \"basic\"\nusername = \"svc\"",
            "upstreams[0].password",
        ),
        (
            "auth = \"basic\"\npassword = \"pw\"",
            "upstreams[0].username",
        ),
        (
            "auth = \"basic\"\nusername = \"s:v\"\npassword = \"pw\"",
            "upstreams[0].username",
        ),
        ("auth = \"bearer\"", "upstreams[0].token"),
        (
            "auth = \"bearer\"\ntoken = \"t\"\nusername = \"svc\"",
            "upstreams[0].username",
        ),
        (
            "auth = \"passthrough\"\ntoken = \"t\"",
            "upstreams[0].token",
        ),
        ("auth = \"password\"", "upstreams[0].auth"),
    ];
    for (auth, key) in cases {
        assert_eq!(error_for(&webdav(auth)).key, key, "{auth}");
    }
    let config = load(&webdav("auth = \"bearer\"\ntoken = \"t0ken\"")).unwrap();
    assert!(
        !format!("{config:?}").contains("t0ken"),
        "the token is a secret"
    );
}

#[test]
fn tls_files_are_loaded_at_validation() {
    let err = error_for(&webdav(&format!(
        "{BASIC}\nca_file = \"/nonexistent/ca.pem\""
    )));
    assert_eq!(err.key, "upstreams[0].ca_file");
    let err = error_for(&webdav(&format!(
        "{BASIC}\nclient_cert = \"/nonexistent/c.pem\""
    )));
    assert_eq!(
        err.key, "upstreams[0].client_key",
        "a certificate needs its key"
    );
    let http = webdav(&format!("{BASIC}\nca_file = \"/nonexistent/ca.pem\""))
        .replace("https://", "http://");
    assert_eq!(error_for(&http).key, "upstreams[0].ca_file");
}

#[test]
fn a_client_key_that_does_not_fit_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let (ca, cert, good_key, bad_key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("other.pem"),
    );
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&good_key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(&bad_key, other.serialize_pem()).unwrap();
    let tls = |key: &std::path::Path| {
        format!(
            "{BASIC}\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        )
    };
    load(&webdav(&tls(&good_key))).unwrap();
    let err = error_for(&webdav(&tls(&bad_key)));
    assert_eq!(err.key, "upstreams[0].client_key");
}

/// A self-signed certificate and key written to `dir`.
fn test_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn with_listener_lines(lines: &str) -> String {
    replaced(
        "bind = \"127.0.0.1:2121\"",
        &format!("bind = \"127.0.0.1:2121\"\n{lines}"),
    )
}

#[test]
fn tls_listeners_load_their_certificate_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certificate(dir.path());
    let text = with_listener_lines(&format!(
        "tls = \"implicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = \"all\"\ndata_tls_resumption = \"required\"\ndata_close_notify = \"required\"\nallow_ccc = true",
        cert.display(),
        key.display()
    ));
    let config = load(&text).unwrap();
    let listener = &config.listeners[0];
    let tls = listener.tls.as_ref().expect("TLS settings");
    assert_eq!(tls.mode, TlsMode::Implicit);
    assert_eq!(tls.data_resumption, ResumptionPolicy::Required);
    assert_eq!(tls.data_close_notify, CloseNotifyPolicy::Required);
    assert!(tls.allow_ccc);
    assert_eq!(listener.require_tls, TlsRequirement::All);
}

#[test]
fn tls_defaults_prefer_resumption_and_accept_a_missing_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certificate(dir.path());
    let text = with_listener_lines(&format!(
        "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    let config = load(&text).unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.data_resumption, ResumptionPolicy::Preferred);
    assert_eq!(tls.data_close_notify, CloseNotifyPolicy::Optional);
    assert!(!tls.allow_ccc);
    assert_eq!(config.listeners[0].require_tls, TlsRequirement::Off);
}

#[test]
fn tls_without_a_certificate_names_the_key() {
    let err = error_for(&with_listener_lines("tls = \"explicit\""));
    assert_eq!(err.key, "listeners[0].tls_cert");
}

#[test]
fn a_certificate_that_does_not_match_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = test_certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = test_certificate(other.path());
    let text = with_listener_lines(&format!(
        "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        other_key.display()
    ));
    let err = error_for(&text);
    assert_eq!(err.key, "listeners[0].tls_cert");
    assert!(err.message.contains("do not form a usable pair"), "{err}");
}

#[test]
fn requiring_tls_without_tls_is_refused() {
    assert_eq!(
        error_for(&with_listener_lines("require_tls = \"control\"")).key,
        "listeners[0].require_tls"
    );
}

#[test]
fn tls_settings_without_tls_are_refused() {
    assert_eq!(
        error_for(&with_listener_lines("allow_ccc = true")).key,
        "listeners[0].allow_ccc"
    );
    assert_eq!(
        error_for(&with_listener_lines("tls = \"sometimes\"")).key,
        "listeners[0].tls"
    );
}

#[test]
fn users_may_override_require_tls() {
    let text = replaced(
        "root = \"/alice\"",
        "root = \"/alice\"\nrequire_tls = \"all\"",
    );
    assert_eq!(
        load(&text).unwrap().user("alice").unwrap().require_tls,
        Some(TlsRequirement::All)
    );
    let err = error_for(&replaced(
        "root = \"/alice\"",
        "root = \"/alice\"\nrequire_tls = \"yes\"",
    ));
    assert_eq!(err.key, "users[0].require_tls");
}

fn with_tenant(tenant: &str) -> String {
    format!(
        "{}\ntenant = \"acme\"\n\n[tenants.acme]\n{tenant}\n",
        base()
    )
}

#[test]
fn tenants_read_rates_and_limits_as_written() {
    let config = load(&with_tenant(
        r#"download_rate = "10 MiB/s"
upload_rate = "5 MiB/s"
burst = "2 MiB"
session_download_rate = "4 MiB/s"
user_upload_rate = "1 MiB/s"
commands_per_second = 20
commands_burst = 50
session_commands_per_second = 5
max_sessions = 50
max_sessions_per_ip = 10
max_sessions_per_user = 3
command_flood_time = "30s"
"#,
    ))
    .unwrap();
    let acme = &config.tenants["acme"];
    assert_eq!(acme.rates.download, Some(10 << 20));
    assert_eq!(acme.rates.upload, Some(5 << 20));
    assert_eq!(acme.burst, Some(2 << 20));
    assert_eq!(acme.session_rates.download, Some(4 << 20));
    assert_eq!(acme.session_rates.upload, None);
    let commands = acme.commands.unwrap();
    assert_eq!((commands.per_second.get(), commands.burst.get()), (20, 50));
    let session = acme.session_commands.unwrap();
    assert_eq!(
        (session.per_second.get(), session.burst.get()),
        (5, 10),
        "burst defaults to twice the rate"
    );
    assert_eq!(acme.max_sessions, Some(50));
    assert_eq!(acme.command_flood_time, Duration::from_secs(30));
    let alice = &config.users["alice"];
    assert_eq!(alice.tenant.name, "acme");
    assert_eq!(
        alice.effective_rates().upload,
        Some(1 << 20),
        "the tenant's per-user rate"
    );
    assert_eq!(alice.effective_max_sessions(), Some(3));
}

#[test]
fn users_without_a_tenant_share_the_unlimited_default_tenant() {
    let config = load(&base()).unwrap();
    let alice = &config.users["alice"];
    assert_eq!(alice.tenant.name, DEFAULT_TENANT);
    assert_eq!(alice.tenant.rates, DirectionRates::default());
    assert_eq!(
        config.security.max_failed_logins,
        defaults::MAX_FAILED_LOGINS
    );
    assert_eq!(config.security.connection_rate, None);
    assert_eq!(
        config.security.password_cache,
        Some(defaults::PASSWORD_CACHE)
    );
}

#[test]
fn a_users_own_rates_and_session_limit_override_the_tenant() {
    let text = with_tenant("user_download_rate = \"1 MiB/s\"\nmax_sessions_per_user = 4\n")
        .replacen(
            "root = \"/alice\"",
            "root = \"/alice\"\ndownload_rate = \"256 KiB/s\"\nmax_sessions = 1",
            1,
        );
    let config = load(&text).unwrap();
    let alice = &config.users["alice"];
    assert_eq!(alice.effective_rates().download, Some(256 << 10));
    assert_eq!(alice.effective_max_sessions(), Some(1));
}

#[test]
fn bad_limits_name_their_keys() {
    let cases = [
        ("download_rate = \"10 MiB\"", "tenants.acme.download_rate"),
        ("upload_rate = \"fast\"", "tenants.acme.upload_rate"),
        (
            "session_download_rate = \"10 B/s\"",
            "tenants.acme.session_download_rate",
        ),
        ("burst = \"1 KiB\"", "tenants.acme.burst"),
        ("commands_burst = 10", "tenants.acme.commands_burst"),
        (
            "commands_per_second = 0",
            "tenants.acme.commands_per_second",
        ),
        ("max_sessions = 0", "tenants.acme.max_sessions"),
        ("listing_cost = 0", "tenants.acme.listing_cost"),
        (
            "command_flood_time = \"soon\"",
            "tenants.acme.command_flood_time",
        ),
        ("speed = 1", "tenants.acme: unknown field `speed`"),
    ];
    for (line, key) in cases {
        let error = error_for(&with_tenant(line));
        assert!(error.to_string().contains(key), "{line}: {error}");
    }
}

#[test]
fn an_unknown_tenant_names_the_user_key() {
    let text = replaced(
        "root = \"/alice\"",
        "root = \"/alice\"\ntenant = \"nobody\"",
    );
    let error = error_for(&text);
    assert_eq!(error.key, "users[0].tenant", "{error}");
    assert!(error.message.contains("nobody"));
}

#[test]
fn security_settings_are_validated() {
    let text = format!(
        "[security]\nmax_failed_logins = 5\nban_time = \"1h\"\nconnections_per_ip_per_second = 10\n{}",
        base()
    );
    let config = load(&text).unwrap();
    assert_eq!(config.security.max_failed_logins, 5);
    assert_eq!(config.security.ban_time, Duration::from_secs(3600));
    let rate = config.security.connection_rate.unwrap();
    assert_eq!((rate.per_second.get(), rate.burst.get()), (10, 20));
    let error = error_for(&format!("[security]\nban_time = \"forever\"\n{}", base()));
    assert_eq!(error.key, "security.ban_time");
    let error = error_for(&format!("[security]\nconnection_burst = 3\n{}", base()));
    assert_eq!(error.key, "security.connection_burst");
    let off = load(&format!("[security]\npassword_cache = \"off\"\n{}", base())).unwrap();
    assert_eq!(off.security.password_cache, None);
    let error = error_for(&format!(
        "[security]\npassword_cache = \"a while\"\n{}",
        base()
    ));
    assert_eq!(error.key, "security.password_cache");
    let error = error_for(&format!("[server]\nmax_sessions_per_ip = 0\n{}", base()));
    assert_eq!(error.key, "server.max_sessions_per_ip");
}

// ---- [[routes]], [auth_hook] and proxy logins ----

/// The base config with a pass-through upstream `direct` and `extra` appended.
fn with_routing(extra: &str) -> String {
    format!(
        "{}\n[[upstreams]]\nname = \"direct\"\nkind = \"sftp\"\naddress = \"sftp2.internal\"\nhost_key = \"{PIN}\"\nauth = \"passthrough\"\n\n[tenants.acme]\n\n{extra}",
        base()
    )
}

#[test]
fn routes_load_in_order_with_their_patterns_networks_and_templates() {
    let config = load(&with_routing(
        r#"
[[routes]]
regex = "^[a-z]+$"
clients = ["10.0.0.0/8", "2001:db8::/32"]
upstream = "direct"
root = "/home/{user}"
tenant = "acme"

[[routes]]
match = "*@example.com"
upstream = "files"
auth = "hook"
root = "/{domain}/{local}"
upstream_user = "{local}"

[auth_hook]
url = "https://idp.internal/ftp-login"
timeout = "3s"
cache = "60s"
"#,
    ))
    .unwrap();
    let [first, second] = &config.routes[..] else {
        panic!("two routes expected: {:?}", config.routes.len());
    };
    assert!(first.pattern.matches("bob") && !first.pattern.matches("bob2"));
    assert_eq!(first.clients.len(), 2);
    assert_eq!(first.auth, RouteAuth::Passthrough, "the default");
    assert_eq!(first.tenant.name, "acme");
    assert_eq!(second.auth, RouteAuth::Hook);
    assert!(second.pattern.matches("ann@example.com") && !second.pattern.matches("ann@evil.com"));
    assert_eq!(second.tenant.name, DEFAULT_TENANT);
    let hook = config.auth_hook.as_ref().unwrap();
    assert_eq!(hook.timeout, Duration::from_secs(3));
    assert_eq!(hook.cache, Some(Duration::from_secs(60)));
}

#[test]
fn route_errors_name_their_key() {
    let cases = [
        ("[[routes]]\nupstream = \"direct\"\n", "routes[0].match"),
        (
            "[[routes]]\nmatch = \"*\"\nregex = \"x\"\nupstream = \"direct\"\n",
            "routes[0].regex",
        ),
        (
            "[[routes]]\nregex = \"(unclosed\"\nupstream = \"direct\"\n",
            "routes[0].regex",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"nowhere\"\n",
            "routes[0].upstream",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\nclients = [\"10.0.0.0/33\"]\n",
            "routes[0].clients",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\nroot = \"/home/{name}\"\n",
            "routes[0].root",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\nroot = \"/home/../{user}\"\n",
            "routes[0].root",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\ntenant = \"nobody\"\n",
            "routes[0].tenant",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\nauth = \"ldap\"\n",
            "routes[0].auth",
        ),
        // A service-credential upstream cannot check a route's passwords.
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"files\"\n",
            "routes[0].auth",
        ),
        // A hook route without a hook.
        (
            "[[routes]]\nmatch = \"a\"\nupstream = \"direct\"\n\n[[routes]]\nmatch = \"*\"\nupstream = \"files\"\nauth = \"hook\"\n",
            "routes[1].auth",
        ),
        (
            "[[routes]]\nmatch = \"*\"\nupstream = \"direct\"\nupstream_user = \"{nope}\"\n",
            "routes[0].upstream_user",
        ),
    ];
    for (extra, key) in cases {
        let err = error_for(&with_routing(extra));
        assert_eq!(err.key, key, "{extra}: {err}");
    }
}

#[test]
fn auth_hook_errors_name_their_key() {
    let cases = [
        ("url = \"ftp://idp/login\"\n", "auth_hook.url"),
        (
            "url = \"https://idp/login\"\ntimeout = \"soon\"\n",
            "auth_hook.timeout",
        ),
        (
            "url = \"https://idp/login\"\ncache = \"forever\"\n",
            "auth_hook.cache",
        ),
        (
            "url = \"http://127.0.0.1:9/login\"\nca_file = \"/etc/ca.pem\"\n",
            "auth_hook.ca_file",
        ),
        (
            "url = \"https://idp/login\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "auth_hook.ca_file",
        ),
        ("url = \"https://idp/login\"\nsecret = \"x\"\n", "auth_hook"),
    ];
    for (section, key) in cases {
        let err = error_for(&with_routing(&format!("[auth_hook]\n{section}")));
        assert_eq!(err.key, key, "{section}: {err}");
    }
    let err = error_for(&with_routing(
        "[auth_hook]\nurl = \"https://idp/\"\nsecret = \"x\"\n",
    ));
    assert!(err.to_string().contains("secret"), "{err}");
    let config = load(&with_routing("[auth_hook]\nurl = \"https://idp/login\"\n")).unwrap();
    let hook = config.auth_hook.unwrap();
    assert_eq!((hook.timeout, hook.cache), (Duration::from_secs(5), None));
}

#[test]
fn proxy_login_needs_an_allow_list_of_pass_through_upstreams() {
    let listener = "bind = \"127.0.0.1:2121\"";
    let on = |extra: &str| with_routing("").replacen(listener, &format!("{listener}\n{extra}"), 1);
    let err = error_for(&on("proxy_login = true"));
    assert_eq!(err.key, "listeners[0].proxy_login_upstreams");
    let err = error_for(&on("proxy_login_upstreams = [\"direct\"]"));
    assert_eq!(err.key, "listeners[0].proxy_login");
    let err = error_for(&on(
        "proxy_login = true\nproxy_login_upstreams = [\"files\"]",
    ));
    assert_eq!(err.key, "listeners[0].proxy_login_upstreams");
    assert!(err.to_string().contains("passthrough"), "{err}");
    let err = error_for(&on(
        "proxy_login = true\nproxy_login_upstreams = [\"ghost\"]",
    ));
    assert_eq!(err.key, "listeners[0].proxy_login_upstreams");
    let config = load(&on(
        "proxy_login = true\nproxy_login_upstreams = [\"direct\"]",
    ))
    .unwrap();
    assert_eq!(config.listeners[0].proxy_login_upstreams, ["direct"]);
    assert!(
        load(&with_routing("")).unwrap().listeners[0]
            .proxy_login_upstreams
            .is_empty()
    );
}

/// The README's route example, as a newcomer would paste it under a listener.
#[test]
fn the_readme_route_example_loads() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("**2. Route**")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("README has a route example");
    let text = format!("[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:2121\"\n\n{example}");
    let config = load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.routes.len(), 2);
    assert!(config.routes[0].pattern.matches("alice@partners.example"));
}

// --- NAT-proof data channels and PROXY protocol (listener keys) ---

fn tls_listener_lines(dir: &std::path::Path, extra: &str) -> String {
    let (cert, key) = test_certificate(dir);
    with_listener_lines(&format!(
        "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    ))
}

#[test]
fn data_source_defaults_to_same_ip_and_proxy_protocol_to_off() {
    let config = load(&base()).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.data_source, DataSourcePolicy::default());
    assert!(listener.data_source.same_ip && !listener.data_source.cidr);
    assert!(listener.data_source_cidrs.is_empty());
    assert_eq!(listener.proxy_protocol, None);
    assert!(listener.passive_address_overrides.is_empty());
    assert_eq!(listener.passive_address_ttl, defaults::PASSIVE_ADDRESS_TTL);
    assert!(config.user("alice").unwrap().data_source_cidrs.is_empty());
}

#[test]
fn the_issue_s_listener_shape_loads() {
    let dir = tempfile::tempdir().unwrap();
    let text = tls_listener_lines(
        dir.path(),
        r#"passive_address = "ftp.example.com"
passive_address_ttl = "5m"
passive_address_overrides = [ { clients = "10.0.0.0/8", address = "10.1.2.3" } ]
passive_ports = "50000-50015"
data_source = ["same-ip", "cidr", "tls-session"]
data_source_cidrs = ["20.50.0.0/24"]
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
proxy_header_timeout = "2s""#,
    );
    let config = load(&text).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(
        listener.passive_address,
        PassiveAddress::Host("ftp.example.com".into())
    );
    assert_eq!(listener.passive_address_ttl, Duration::from_secs(300));
    assert_eq!(
        listener.passive_address_overrides,
        vec![PassiveAddressOverride {
            clients: vec!["10.0.0.0/8".parse().unwrap()],
            address: PassiveAddress::Ip("10.1.2.3".parse().unwrap()),
        }]
    );
    assert_eq!(
        listener.data_source,
        DataSourcePolicy {
            same_ip: true,
            cidr: true,
            tls_session: true,
            any: false
        }
    );
    assert_eq!(
        listener.data_source_cidrs,
        vec!["20.50.0.0/24".parse::<Cidr>().unwrap()]
    );
    assert_eq!(
        listener.proxy_protocol,
        Some(ProxyProtocol {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            header_timeout: Duration::from_secs(2),
        })
    );
}

#[test]
fn list_keys_also_read_comma_separated_strings_from_the_environment() {
    let text = with_listener_lines("data_source = [\"same-ip\"]");
    let config = from_toml(
        &text,
        [
            (
                "FTPBRIDGE__LISTENERS__0__DATA_SOURCE".to_owned(),
                "same-ip, cidr".to_owned(),
            ),
            (
                "FTPBRIDGE__LISTENERS__0__DATA_SOURCE_CIDRS".to_owned(),
                "20.50.0.0/24,20.60.0.7".to_owned(),
            ),
        ],
    )
    .unwrap();
    let listener = &config.listeners[0];
    assert!(listener.data_source.cidr);
    assert_eq!(listener.data_source_cidrs.len(), 2);
}

#[test]
fn unknown_data_source_rules_name_the_key() {
    let err = error_for(&with_listener_lines("data_source = [\"same-port\"]"));
    assert_eq!(err.key, "listeners[0].data_source");
    assert!(err.message.contains("same-port"), "{err}");
    let err = error_for(&with_listener_lines("data_source = []"));
    assert_eq!(err.key, "listeners[0].data_source");
}

#[test]
fn any_must_stand_alone() {
    assert!(
        load(&with_listener_lines("data_source = [\"any\"]"))
            .unwrap()
            .listeners[0]
            .data_source
            .any
    );
    let err = error_for(&with_listener_lines("data_source = [\"any\", \"same-ip\"]"));
    assert_eq!(err.key, "listeners[0].data_source");
}

#[test]
fn tls_session_needs_a_tls_listener() {
    let err = error_for(&with_listener_lines("data_source = [\"tls-session\"]"));
    assert_eq!(err.key, "listeners[0].data_source");
    assert!(err.message.contains("TLS"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let config = load(&tls_listener_lines(
        dir.path(),
        "data_source = [\"tls-session\"]",
    ))
    .unwrap();
    assert!(config.listeners[0].data_source.tls_session);
}

#[test]
fn data_source_cidrs_belong_to_the_cidr_rule() {
    let err = error_for(&with_listener_lines("data_source_cidrs = [\"10.0.0.0/8\"]"));
    assert_eq!(err.key, "listeners[0].data_source_cidrs");
    let err = error_for(&with_listener_lines("data_source = [\"cidr\"]"));
    assert_eq!(
        err.key, "listeners[0].data_source_cidrs",
        "nothing to match"
    );
    let err = error_for(&with_listener_lines(
        "data_source = [\"cidr\"]\ndata_source_cidrs = [\"10.1.2.3/8\"]",
    ));
    assert_eq!(err.key, "listeners[0].data_source_cidrs");
    assert!(err.message.contains("10.0.0.0/8"), "{err}");
}

#[test]
fn users_may_bring_their_own_egress_networks() {
    let text = replaced(
        "root = \"/alice\"",
        "root = \"/alice\"\ndata_source_cidrs = [\"20.50.0.0/24\"]",
    )
    .replacen(
        "bind = \"127.0.0.1:2121\"",
        "bind = \"127.0.0.1:2121\"\ndata_source = [\"same-ip\", \"cidr\"]",
        1,
    );
    let config = load(&text).unwrap();
    assert_eq!(
        config.user("alice").unwrap().data_source_cidrs,
        vec!["20.50.0.0/24".parse::<Cidr>().unwrap()]
    );
    let err = error_for(&replaced(
        "root = \"/alice\"",
        "root = \"/alice\"\ndata_source_cidrs = [\"nat\"]",
    ));
    assert_eq!(err.key, "users[0].data_source_cidrs");
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_they_need_it() {
    let err = error_for(&with_listener_lines("proxy_protocol = true"));
    assert_eq!(err.key, "listeners[0].trusted_proxies");
    let err = error_for(&with_listener_lines("trusted_proxies = [\"10.0.0.0/8\"]"));
    assert_eq!(err.key, "listeners[0].trusted_proxies");
    let err = error_for(&with_listener_lines(
        "proxy_protocol = false\nproxy_header_timeout = \"1s\"",
    ));
    assert_eq!(err.key, "listeners[0].proxy_header_timeout");
    let err = error_for(&with_listener_lines(
        "proxy_protocol = true\ntrusted_proxies = [\"load-balancer\"]",
    ));
    assert_eq!(err.key, "listeners[0].trusted_proxies");
    let config = load(&with_listener_lines(
        "proxy_protocol = true\ntrusted_proxies = \"10.0.0.0/8, 192.0.2.10\"",
    ))
    .unwrap();
    let proxy = config.listeners[0].proxy_protocol.as_ref().unwrap();
    assert_eq!(proxy.trusted_proxies.len(), 2);
    assert_eq!(proxy.header_timeout, defaults::PROXY_HEADER_TIMEOUT);
}

#[test]
fn passive_addresses_are_ipv4_or_names() {
    let err = error_for(&with_listener_lines("passive_address = \"2001:db8::1\""));
    assert_eq!(err.key, "listeners[0].passive_address");
    assert!(err.message.contains("EPSV"), "{err}");
    let config = load(&with_listener_lines(
        "passive_address = \"::ffff:203.0.113.9\"",
    ))
    .unwrap();
    assert_eq!(
        config.listeners[0].passive_address,
        PassiveAddress::Ip("203.0.113.9".parse().unwrap())
    );
}

#[test]
fn override_errors_name_the_entry() {
    let err = error_for(&with_listener_lines(
        "passive_address_overrides = [ { clients = \"10.0.0.0/8\", address = \"bad host!\" } ]",
    ));
    assert_eq!(err.key, "listeners[0].passive_address_overrides[0].address");
    let err = error_for(&with_listener_lines(
        "passive_address_overrides = [ { clients = \"10.0.0.0/8\", address = \"auto\" }, { clients = [\"10.0.0.0/8\"], address = \"10.1.2.3\" } ]",
    ));
    assert_eq!(err.key, "listeners[0].passive_address_overrides[1].clients");
    let err = error_for(&with_listener_lines(
        "passive_address_overrides = [ { clients = [], address = \"10.1.2.3\" } ]",
    ));
    assert_eq!(err.key, "listeners[0].passive_address_overrides[0].clients");
    let err = error_for(&with_listener_lines(
        "passive_address_overrides = [ { clients = \"10.0.0.0/8\", address = \"10.1.2.3\", port = 1 } ]",
    ));
    assert!(err.to_string().contains("port"), "{err}");
}

#[test]
fn ban_exempt_takes_networks_and_names_its_key() {
    let config = load(&format!(
        "[security]\nban_exempt = [\"10.0.0.0/8\", \"2001:db8::1\"]\n{}",
        base()
    ))
    .unwrap();
    assert_eq!(config.security.ban_exempt.len(), 2);
    assert!(load(&base()).unwrap().security.ban_exempt.is_empty());
    let err = error_for(&format!(
        "[security]\nban_exempt = [\"10.0.0.0/40\"]\n{}",
        base()
    ));
    assert_eq!(err.key, "security.ban_exempt");
}
