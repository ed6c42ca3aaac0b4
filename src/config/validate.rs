//! Raw model → [`RuntimeConfig`]: every value interpreted, every reference
//! resolved, every file the proxy will need read now rather than at 3 a.m.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::model::{RawConfig, RawListener, RawServer, RawUpstream, RawUser};
use super::{
    ConfigError, ListenerConfig, PassiveAddress, RuntimeConfig, ServerSettings, UpstreamAuth,
    UpstreamConfig, UserConfig, defaults, human,
};
use crate::secret::Secret;
use crate::upstream::RemotePath;
use crate::upstream::sftp::{HostKeyCheck, SftpCredentials, SftpSettings};

/// The value of `host_key` that disables host key checking.
pub const INSECURE_ACCEPT_ANY: &str = "insecure-accept-any";

type Result<T> = std::result::Result<T, ConfigError>;

pub fn validate(raw: RawConfig) -> Result<RuntimeConfig> {
    let server = server(&raw.server)?;
    let listeners = listeners(&raw.listeners)?;
    let upstreams = upstreams(&raw.upstreams)?;
    let users = users(&raw.users, &upstreams)?;
    Ok(RuntimeConfig {
        server,
        listeners,
        upstreams,
        users,
    })
}

fn duration(key: String, value: Option<&String>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(text) => human::parse_duration(text).map_err(|m| ConfigError::new(key, m)),
    }
}

fn server(raw: &RawServer) -> Result<ServerSettings> {
    let max_sessions = raw.max_sessions.unwrap_or(defaults::MAX_SESSIONS);
    if max_sessions == 0 {
        return Err(ConfigError::new(
            "server.max_sessions",
            "must be at least 1",
        ));
    }
    Ok(ServerSettings {
        max_sessions,
        shutdown_grace: duration(
            "server.shutdown_grace".into(),
            raw.shutdown_grace.as_ref(),
            defaults::SHUTDOWN_GRACE,
        )?,
    })
}

fn check_name(key: String, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{name:?}: use letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn listeners(raw: &[RawListener]) -> Result<Vec<Arc<ListenerConfig>>> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, listener) in raw.iter().enumerate() {
        let key = |field: &str| format!("listeners[{i}].{field}");
        check_name(key("name"), &listener.name)?;
        if let Some(other) = seen.insert(listener.name.clone(), i) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is also the name of listeners[{other}]", listener.name),
            ));
        }
        let bind: SocketAddr = listener.bind.trim().parse().map_err(|_| {
            ConfigError::new(
                key("bind"),
                format!(
                    "{:?} is not an IP:port address (e.g. \"0.0.0.0:2121\" or \"[::]:21\")",
                    listener.bind
                ),
            )
        })?;
        let passive_address =
            passive_address(key("passive_address"), listener.passive_address.as_deref())?;
        let passive_ports = listener
            .passive_ports
            .as_deref()
            .map(|text| {
                human::parse_port_range(text).map_err(|m| ConfigError::new(key("passive_ports"), m))
            })
            .transpose()?;
        let max_login_attempts = listener
            .max_login_attempts
            .unwrap_or(defaults::MAX_LOGIN_ATTEMPTS);
        if max_login_attempts == 0 {
            return Err(ConfigError::new(
                key("max_login_attempts"),
                "must be at least 1",
            ));
        }
        out.push(Arc::new(ListenerConfig {
            name: listener.name.clone(),
            bind,
            passive_address,
            passive_ports,
            idle_timeout: duration(
                key("idle_timeout"),
                listener.idle_timeout.as_ref(),
                defaults::IDLE_TIMEOUT,
            )?,
            login_timeout: duration(
                key("login_timeout"),
                listener.login_timeout.as_ref(),
                defaults::LOGIN_TIMEOUT,
            )?,
            data_connect_timeout: duration(
                key("data_connect_timeout"),
                listener.data_connect_timeout.as_ref(),
                defaults::DATA_CONNECT_TIMEOUT,
            )?,
            data_idle_timeout: duration(
                key("data_idle_timeout"),
                listener.data_idle_timeout.as_ref(),
                defaults::DATA_IDLE_TIMEOUT,
            )?,
            max_login_attempts,
            banner: banner(key("banner"), listener.banner.as_deref())?,
            active_mode: listener.active_mode.unwrap_or(true),
            active_min_port: listener
                .active_min_port
                .unwrap_or(defaults::ACTIVE_MIN_PORT),
            active_source_port: match listener.active_source_port {
                Some(0) => {
                    return Err(ConfigError::new(
                        key("active_source_port"),
                        "must be a port number (1-65535)",
                    ));
                }
                other => other,
            },
        }));
    }
    Ok(out)
}

fn banner(key: String, text: Option<&str>) -> Result<String> {
    let text = text.unwrap_or(defaults::BANNER);
    if text.contains(['\r', '\n']) {
        return Err(ConfigError::new(key, "must be a single line"));
    }
    Ok(text.to_owned())
}

fn passive_address(key: String, text: Option<&str>) -> Result<PassiveAddress> {
    let text = text.map(str::trim).unwrap_or("auto");
    if text.eq_ignore_ascii_case("auto") {
        return Ok(PassiveAddress::Auto);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(ConfigError::new(
                key,
                "an unspecified address (0.0.0.0, ::) cannot be advertised; use \"auto\"",
            ));
        }
        return Ok(PassiveAddress::Ip(ip));
    }
    let valid_host = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid_host {
        Ok(PassiveAddress::Host(text.to_owned()))
    } else {
        Err(ConfigError::new(
            key,
            format!("{text:?} is not \"auto\", an IP address or a host name"),
        ))
    }
}

fn remote_root(key: String, text: Option<&str>) -> Result<RemotePath> {
    let text = text.unwrap_or("/");
    if !text.starts_with('/') {
        return Err(ConfigError::new(
            key,
            format!("{text:?} must be an absolute path"),
        ));
    }
    let mut normalised = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ConfigError::new(key, "must not contain \"..\"")),
            name => {
                normalised.push(b'/');
                normalised.extend_from_slice(name.as_bytes());
            }
        }
    }
    if normalised.is_empty() {
        normalised.push(b'/');
    }
    Ok(RemotePath::new(normalised))
}

fn upstreams(raw: &[RawUpstream]) -> Result<HashMap<String, Arc<UpstreamConfig>>> {
    let mut out = HashMap::new();
    for (i, upstream) in raw.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        check_name(key("name"), &upstream.name)?;
        if out.contains_key(&upstream.name) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is defined twice", upstream.name),
            ));
        }
        if upstream.kind != "sftp" {
            return Err(ConfigError::new(
                key("kind"),
                format!(
                    "{:?} is not a known upstream kind (expected \"sftp\")",
                    upstream.kind
                ),
            ));
        }
        let config = sftp_upstream(i, upstream)?;
        out.insert(upstream.name.clone(), Arc::new(config));
    }
    Ok(out)
}

fn sftp_upstream(i: usize, raw: &RawUpstream) -> Result<UpstreamConfig> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    let (host, port) = human::parse_host_port(&raw.address, defaults::SFTP_PORT)
        .map_err(|m| ConfigError::new(key("address"), m))?;
    let host_keys = host_key_check(i, raw, &host)?;
    let requests_in_flight = raw
        .requests_in_flight
        .unwrap_or(defaults::REQUESTS_IN_FLIGHT);
    if !(1..=1024).contains(&requests_in_flight) {
        return Err(ConfigError::new(
            key("requests_in_flight"),
            "must be between 1 and 1024",
        ));
    }
    let sftp = SftpSettings {
        host,
        port,
        host_keys,
        connect_timeout: duration(
            key("connect_timeout"),
            raw.connect_timeout.as_ref(),
            defaults::CONNECT_TIMEOUT,
        )?,
        request_timeout: duration(
            key("request_timeout"),
            raw.request_timeout.as_ref(),
            defaults::REQUEST_TIMEOUT,
        )?,
        keepalive_interval: duration(
            key("keepalive_interval"),
            raw.keepalive_interval.as_ref(),
            defaults::KEEPALIVE_INTERVAL,
        )?,
        requests_in_flight,
        fsync_uploads: raw.fsync_uploads.unwrap_or(false),
    };
    Ok(UpstreamConfig {
        name: raw.name.clone(),
        sftp,
        auth: upstream_auth(i, raw)?,
        root: remote_root(key("root"), raw.root.as_deref())?,
        atomic_uploads: raw.atomic_uploads.unwrap_or(true),
    })
}

fn host_key_check(i: usize, raw: &RawUpstream, host: &str) -> Result<HostKeyCheck> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    match (&raw.host_key, &raw.known_hosts) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key("host_key"),
            "set either host_key or known_hosts, not both",
        )),
        (None, None) => Err(ConfigError::new(
            key("host_key"),
            "the upstream's host key must be pinned: set host_key = \"SHA256:…\" (from `ssh-keygen -lf`) or known_hosts = \"path\"",
        )),
        (None, Some(path)) => {
            std::fs::metadata(path).map_err(|e| {
                ConfigError::new(key("known_hosts"), format!("{}: {e}", path.display()))
            })?;
            Ok(HostKeyCheck::KnownHosts(path.clone()))
        }
        (Some(pins), None) => {
            let pins = pins.clone().into_vec();
            if pins.len() == 1 && pins[0] == INSECURE_ACCEPT_ANY {
                warn!(upstream = %raw.name, host, "host key checking is disabled for this upstream (host_key = \"insecure-accept-any\"); anyone on the path can impersonate it");
                return Ok(HostKeyCheck::AcceptAny);
            }
            if pins.is_empty() {
                return Err(ConfigError::new(
                    key("host_key"),
                    "list at least one fingerprint",
                ));
            }
            for pin in &pins {
                check_fingerprint(pin).map_err(|m| ConfigError::new(key("host_key"), m))?;
            }
            Ok(HostKeyCheck::Fingerprints(pins))
        }
    }
}

/// `SHA256:` followed by 43 unpadded base64 characters (a 32-byte digest).
fn check_fingerprint(pin: &str) -> std::result::Result<(), String> {
    let Some(digest) = pin.strip_prefix("SHA256:") else {
        return Err(format!(
            "{pin:?} is not a SHA256 fingerprint; run `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server"
        ));
    };
    let valid = digest.len() == 43
        && digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if valid {
        Ok(())
    } else {
        Err(format!("{pin:?} is not a well-formed SHA256 fingerprint"))
    }
}

fn upstream_auth(i: usize, raw: &RawUpstream) -> Result<UpstreamAuth> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    let username = || {
        raw.username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    key("username"),
                    format!("required with auth = {:?}", raw.auth),
                )
            })
    };
    let forbid = |field: &str, present: bool| {
        if present {
            Err(ConfigError::new(
                key(field),
                format!("not used with auth = {:?}; remove it", raw.auth),
            ))
        } else {
            Ok(())
        }
    };
    match raw.auth.as_str() {
        "passthrough" => {
            forbid("username", raw.username.is_some())?;
            forbid("password", raw.password.is_some())?;
            forbid("key", raw.key.is_some())?;
            Ok(UpstreamAuth::Passthrough)
        }
        "password" => {
            forbid("key", raw.key.is_some())?;
            let password = raw
                .password
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(key("password"), "required with auth = \"password\"")
                })?;
            Ok(UpstreamAuth::Service(SftpCredentials::Password {
                username: username()?,
                password,
            }))
        }
        "key" => {
            forbid("password", raw.password.is_some())?;
            let path: &PathBuf = raw.key.as_ref().ok_or_else(|| {
                ConfigError::new(
                    key("key"),
                    "required with auth = \"key\": the private key file",
                )
            })?;
            let passphrase = raw.key_passphrase.as_ref().map(Secret::expose);
            let private_key = russh::keys::load_secret_key(path, passphrase).map_err(|e| {
                ConfigError::new(key("key"), format!("cannot load {}: {e}", path.display()))
            })?;
            Ok(UpstreamAuth::Service(SftpCredentials::Key {
                username: username()?,
                key: Arc::new(private_key),
            }))
        }
        other => Err(ConfigError::new(
            key("auth"),
            format!("{other:?} is not one of \"passthrough\", \"password\", \"key\""),
        )),
    }
}

fn users(
    raw: &[RawUser],
    upstreams: &HashMap<String, Arc<UpstreamConfig>>,
) -> Result<HashMap<String, Arc<UserConfig>>> {
    let mut out = HashMap::new();
    for (i, user) in raw.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if user.name.is_empty() || user.name.contains(|c: char| c.is_control() || c == ' ') {
            return Err(ConfigError::new(
                key("name"),
                "must be non-empty, without spaces or control characters",
            ));
        }
        if out.contains_key(&user.name) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is defined twice", user.name),
            ));
        }
        let upstream = upstreams.get(&user.upstream).ok_or_else(|| {
            let mut known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            known.sort_unstable();
            ConfigError::new(
                key("upstream"),
                format!(
                    "no upstream named {:?} (defined: {})",
                    user.upstream,
                    known.join(", ")
                ),
            )
        })?;
        match &user.password_hash {
            Some(hash) => crate::auth::validate_hash(hash.expose())
                .map_err(|m| ConfigError::new(key("password_hash"), m))?,
            None if matches!(upstream.auth, UpstreamAuth::Passthrough) => {}
            None => {
                return Err(ConfigError::new(
                    key("password_hash"),
                    "required unless the user's upstream uses auth = \"passthrough\"; create one with `ftpbridge hash-password`",
                ));
            }
        }
        let user_root = remote_root(key("root"), user.root.as_deref())?;
        let root = join_roots(&upstream.root, &user_root);
        out.insert(
            user.name.clone(),
            Arc::new(UserConfig {
                name: user.name.clone(),
                password_hash: user.password_hash.clone(),
                upstream: upstream.clone(),
                root,
            }),
        );
    }
    Ok(out)
}

fn join_roots(upstream_root: &RemotePath, user_root: &RemotePath) -> RemotePath {
    user_root
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|part| !part.is_empty())
        .fold(upstream_root.clone(), |path, part| path.join(part))
}
