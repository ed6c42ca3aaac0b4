//! Config loading and validation: each error names its key.

use std::time::Duration;

use super::*;

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
        (upstream.sftp.host.as_str(), upstream.sftp.port),
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
    assert!(matches!(
        config.upstreams["files"].auth,
        UpstreamAuth::Passthrough
    ));
    assert!(config.user("scanner").unwrap().password_hash.is_none());
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
        (upstream.sftp.host.as_str(), upstream.sftp.port),
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
        config.upstreams["files"].sftp.host_keys,
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
