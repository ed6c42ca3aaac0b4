//! Raw model → [`RuntimeConfig`]: every value interpreted, every reference
//! resolved, every file the proxy will need read now rather than at 3 a.m.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::model::{
    OneOrMany, RawAdmin, RawConfig, RawListener, RawLogging, RawServer, RawShutdown, RawUpstream,
    RawUser,
};
use super::{
    AdminSettings, Backend, CloseNotifyPolicy, ConfigError, DataSourcePolicy, ListenerConfig,
    ListenerTls, LoggingSettings, PassiveAddress, PassiveAddressOverride, ProxyProtocol,
    ResumptionPolicy, RuntimeConfig, ServerSettings, ShutdownSettings, TenantConfig, TlsMode,
    TlsRequirement, UpstreamAuth, UpstreamConfig, UserConfig, defaults, human,
};
use crate::net::Cidr;
use crate::secret::Secret;
use crate::upstream::RemotePath;
use crate::upstream::sftp::{HostKeyCheck, PoolSettings, SftpCredentials, SftpSettings};
use crate::upstream::webdav::tls::{self, TlsFiles};
use crate::upstream::webdav::{DavClient, DavCredentials, Timeouts, UrlTemplate, WebDavSettings};

/// The value of `host_key` that disables host key checking.
pub const INSECURE_ACCEPT_ANY: &str = "insecure-accept-any";

type Result<T> = std::result::Result<T, ConfigError>;

pub fn validate(raw: RawConfig) -> Result<RuntimeConfig> {
    let server = server(&raw.server)?;
    let admin = admin(raw.admin.as_ref())?;
    let logging = logging(&raw.logging)?;
    let shutdown = shutdown(&raw.shutdown)?;
    let listeners = listeners(&raw.listeners)?;
    let upstreams = upstreams(&raw.upstreams)?;
    let tenants = super::tenants::tenants(&raw.tenants)?;
    let security = super::tenants::security(&raw.security)?;
    let users = users(&raw.users, &upstreams, &tenants)?;
    super::routing::check_proxy_login_upstreams(&listeners, &upstreams)?;
    let routes = super::routing::routes(&raw.routes, &upstreams, &tenants)?;
    let auth_hook = raw
        .auth_hook
        .as_ref()
        .map(super::routing::auth_hook)
        .transpose()?;
    if auth_hook.is_none() {
        super::routing::check_hook_routes(&routes)?;
    }
    check_cidr_rules(&listeners, &users)?;
    Ok(RuntimeConfig {
        routes,
        auth_hook,
        server,
        admin,
        logging,
        shutdown,
        listeners,
        upstreams,
        users,
        tenants,
        security,
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
    if raw.max_sessions_per_ip == Some(0) {
        return Err(ConfigError::new(
            "server.max_sessions_per_ip",
            "must be at least 1; leave it out for no limit",
        ));
    }
    Ok(ServerSettings {
        max_sessions,
        max_sessions_per_ip: raw.max_sessions_per_ip,
    })
}

fn admin(raw: Option<&RawAdmin>) -> Result<Option<AdminSettings>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bind = raw.bind.trim().parse().map_err(|_| {
        ConfigError::new(
            "admin.bind",
            format!(
                "{:?} is not an IP:port address (e.g. \"127.0.0.1:9180\")",
                raw.bind
            ),
        )
    })?;
    Ok(Some(AdminSettings {
        bind,
        readiness_timeout: duration(
            "admin.readiness_timeout".into(),
            raw.readiness_timeout.as_ref(),
            defaults::READINESS_TIMEOUT,
        )?,
        readiness_cache: duration(
            "admin.readiness_cache".into(),
            raw.readiness_cache.as_ref(),
            defaults::READINESS_CACHE,
        )?,
    }))
}

fn logging(raw: &RawLogging) -> Result<LoggingSettings> {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => crate::obs::LogFormat::Text,
        "json" => crate::obs::LogFormat::Json,
        other => {
            return Err(ConfigError::new(
                "logging.format",
                format!("{other:?} is not \"text\" or \"json\""),
            ));
        }
    };
    let level = raw
        .level
        .clone()
        .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| ConfigError::new("logging.level", format!("{level:?}: {e}")))?;
    if let Some(path) = &raw.xferlog {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "logging.xferlog",
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    Ok(LoggingSettings {
        format,
        level,
        xferlog: raw.xferlog.clone(),
    })
}

fn shutdown(raw: &RawShutdown) -> Result<ShutdownSettings> {
    Ok(ShutdownSettings {
        drain_timeout: duration(
            "shutdown.drain_timeout".into(),
            raw.drain_timeout.as_ref(),
            defaults::DRAIN_TIMEOUT,
        )?,
    })
}

pub(super) fn check_name(key: String, name: &str) -> Result<()> {
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
        let passive_address_overrides = passive_overrides(i, listener)?;
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
        let tls = listener_tls(i, listener)?;
        let data_source = data_source(i, listener, tls.is_some())?;
        out.push(Arc::new(ListenerConfig {
            name: listener.name.clone(),
            bind,
            passive_address,
            passive_address_ttl: duration(
                key("passive_address_ttl"),
                listener.passive_address_ttl.as_ref(),
                defaults::PASSIVE_ADDRESS_TTL,
            )?,
            passive_address_overrides,
            passive_ports,
            data_source,
            data_source_cidrs: cidr_list(
                key("data_source_cidrs"),
                listener.data_source_cidrs.as_ref(),
            )?,
            proxy_protocol: proxy_protocol(i, listener)?,
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
            tls,
            require_tls: match &listener.require_tls {
                None => TlsRequirement::Off,
                Some(text) => tls_requirement(key("require_tls"), text)?,
            },
            proxy_login_upstreams: super::routing::proxy_login(i, listener)?,
        }));
        let last = out.last().map(|l| (l.tls.is_none(), l.require_tls));
        if let Some((true, requirement)) = last
            && requirement != TlsRequirement::Off
        {
            return Err(ConfigError::new(
                key("require_tls"),
                "TLS cannot be required on a listener without tls = \"explicit\" or \"implicit\"",
            ));
        }
    }
    Ok(out)
}

pub(super) fn tls_requirement(key: String, text: &str) -> Result<TlsRequirement> {
    match text {
        "off" => Ok(TlsRequirement::Off),
        "control" => Ok(TlsRequirement::Control),
        "all" => Ok(TlsRequirement::All),
        other => Err(ConfigError::new(
            key,
            format!("{other:?} is not one of \"off\", \"control\", \"all\""),
        )),
    }
}

fn listener_tls(i: usize, raw: &RawListener) -> Result<Option<ListenerTls>> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let mode = match raw.tls.as_deref().unwrap_or("none") {
        "none" => None,
        "explicit" => Some(TlsMode::Explicit),
        "implicit" => Some(TlsMode::Implicit),
        other => {
            return Err(ConfigError::new(
                key("tls"),
                format!("{other:?} is not one of \"none\", \"explicit\", \"implicit\""),
            ));
        }
    };
    let tls_only = [
        ("tls_cert", raw.tls_cert.is_some()),
        ("tls_key", raw.tls_key.is_some()),
        ("tls_handshake_timeout", raw.tls_handshake_timeout.is_some()),
        ("data_tls_resumption", raw.data_tls_resumption.is_some()),
        ("data_close_notify", raw.data_close_notify.is_some()),
        ("allow_ccc", raw.allow_ccc.is_some()),
    ];
    let Some(mode) = mode else {
        if let Some((field, _)) = tls_only.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                key(field),
                "only used with tls = \"explicit\" or \"implicit\"",
            ));
        }
        return Ok(None);
    };
    let cert = raw.tls_cert.clone().ok_or_else(|| {
        ConfigError::new(
            key("tls_cert"),
            "required with TLS: the PEM certificate chain",
        )
    })?;
    let tls_key = raw.tls_key.clone().ok_or_else(|| {
        ConfigError::new(key("tls_key"), "required with TLS: the PEM private key")
    })?;
    crate::tls::load_certified_key(&cert, &tls_key)
        .map_err(|m| ConfigError::new(key("tls_cert"), m))?;
    let data_resumption = match raw.data_tls_resumption.as_deref().unwrap_or("preferred") {
        "required" => ResumptionPolicy::Required,
        "preferred" => ResumptionPolicy::Preferred,
        "off" => ResumptionPolicy::Off,
        other => {
            return Err(ConfigError::new(
                key("data_tls_resumption"),
                format!("{other:?} is not one of \"required\", \"preferred\", \"off\""),
            ));
        }
    };
    let data_close_notify = match raw.data_close_notify.as_deref().unwrap_or("optional") {
        "required" => CloseNotifyPolicy::Required,
        "optional" => CloseNotifyPolicy::Optional,
        other => {
            return Err(ConfigError::new(
                key("data_close_notify"),
                format!("{other:?} is not one of \"required\", \"optional\""),
            ));
        }
    };
    Ok(Some(ListenerTls {
        mode,
        cert,
        key: tls_key,
        handshake_timeout: duration(
            key("tls_handshake_timeout"),
            raw.tls_handshake_timeout.as_ref(),
            defaults::TLS_HANDSHAKE_TIMEOUT,
        )?,
        data_resumption,
        data_close_notify,
        allow_ccc: raw.allow_ccc.unwrap_or(false),
    }))
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
        return match crate::net::canonical(ip) {
            IpAddr::V4(v4) => Ok(PassiveAddress::Ip(v4)),
            IpAddr::V6(_) => Err(ConfigError::new(
                key,
                "PASV can only announce an IPv4 address; IPv6 clients use EPSV, which announces none",
            )),
        };
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

/// The upstream a user or route names; the error lists the defined ones.
pub(super) fn upstream_named(
    key: String,
    name: &str,
    upstreams: &HashMap<String, Arc<UpstreamConfig>>,
) -> Result<Arc<UpstreamConfig>> {
    upstreams.get(name).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        known.sort_unstable();
        ConfigError::new(
            key,
            format!("no upstream named {name:?} (defined: {})", known.join(", ")),
        )
    })
}

/// A list key written as a TOML array or as one comma-separated string
/// (`FTPBRIDGE__LISTENERS__0__DATA_SOURCE=same-ip,cidr`).
fn string_list(value: Option<&OneOrMany>) -> Vec<String> {
    let items = match value {
        None => return Vec::new(),
        Some(OneOrMany::One(text)) => text.split(',').map(str::to_owned).collect(),
        Some(OneOrMany::Many(items)) => items.clone(),
    };
    items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

pub(super) fn cidr_list(key: String, value: Option<&OneOrMany>) -> Result<Vec<Cidr>> {
    string_list(value)
        .iter()
        .map(|text| {
            text.parse::<Cidr>()
                .map_err(|m| ConfigError::new(key.clone(), m))
        })
        .collect()
}

fn passive_overrides(i: usize, raw: &RawListener) -> Result<Vec<PassiveAddressOverride>> {
    let Some(entries) = &raw.passive_address_overrides else {
        return Ok(Vec::new());
    };
    let mut seen: Vec<Cidr> = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let key = |field: &str| format!("listeners[{i}].passive_address_overrides[{j}].{field}");
        let clients = cidr_list(key("clients"), Some(&entry.clients))?;
        if clients.is_empty() {
            return Err(ConfigError::new(
                key("clients"),
                "list at least one network, e.g. \"10.0.0.0/8\"",
            ));
        }
        if let Some(twice) = clients.iter().find(|c| seen.contains(c)) {
            return Err(ConfigError::new(
                key("clients"),
                format!("{twice} is already listed in another override"),
            ));
        }
        seen.extend(clients.iter().copied());
        let address = passive_address(key("address"), Some(&entry.address))?;
        out.push(PassiveAddressOverride { clients, address });
    }
    Ok(out)
}

fn data_source(i: usize, raw: &RawListener, has_tls: bool) -> Result<DataSourcePolicy> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let Some(value) = &raw.data_source else {
        if raw.data_source_cidrs.is_some() {
            return Err(ConfigError::new(
                key("data_source_cidrs"),
                "only used when data_source lists \"cidr\"",
            ));
        }
        return Ok(DataSourcePolicy::default());
    };
    let rules = string_list(Some(value));
    if rules.is_empty() {
        return Err(ConfigError::new(
            key("data_source"),
            "list at least one of \"same-ip\", \"cidr\", \"tls-session\", or [\"any\"]",
        ));
    }
    let mut policy = DataSourcePolicy {
        same_ip: false,
        cidr: false,
        tls_session: false,
        any: false,
    };
    for rule in &rules {
        match rule.as_str() {
            "same-ip" => policy.same_ip = true,
            "cidr" => policy.cidr = true,
            "tls-session" => policy.tls_session = true,
            "any" => policy.any = true,
            other => {
                return Err(ConfigError::new(
                    key("data_source"),
                    format!(
                        "{other:?} is not one of \"same-ip\", \"cidr\", \"tls-session\", \"any\""
                    ),
                ));
            }
        }
    }
    if policy.any && rules.iter().any(|r| r != "any") {
        return Err(ConfigError::new(
            key("data_source"),
            "\"any\" accepts every data connection, so it is listed alone: data_source = [\"any\"]",
        ));
    }
    if policy.tls_session && !has_tls {
        return Err(ConfigError::new(
            key("data_source"),
            "\"tls-session\" needs TLS on this listener (tls = \"explicit\" or \"implicit\")",
        ));
    }
    if !policy.cidr && raw.data_source_cidrs.is_some() {
        return Err(ConfigError::new(
            key("data_source_cidrs"),
            "only used when data_source lists \"cidr\"",
        ));
    }
    if policy.any {
        warn!(
            listener = %raw.name,
            "data_source = [\"any\"]: passive data connections are accepted from any address; whoever reaches a passive port first gets the transfer"
        );
    }
    Ok(policy)
}

fn proxy_protocol(i: usize, raw: &RawListener) -> Result<Option<ProxyProtocol>> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    if raw.proxy_protocol != Some(true) {
        for (field, set) in [
            ("trusted_proxies", raw.trusted_proxies.is_some()),
            ("proxy_header_timeout", raw.proxy_header_timeout.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    key(field),
                    "only used with proxy_protocol = true",
                ));
            }
        }
        return Ok(None);
    }
    let trusted_proxies = cidr_list(key("trusted_proxies"), raw.trusted_proxies.as_ref())?;
    if trusted_proxies.is_empty() {
        return Err(ConfigError::new(
            key("trusted_proxies"),
            "required with proxy_protocol = true: the load balancers' networks, e.g. [\"10.0.0.0/8\"] (a header from anyone else would let a client choose its own IP)",
        ));
    }
    Ok(Some(ProxyProtocol {
        trusted_proxies,
        header_timeout: duration(
            key("proxy_header_timeout"),
            raw.proxy_header_timeout.as_ref(),
            defaults::PROXY_HEADER_TIMEOUT,
        )?,
    }))
}

/// A listener whose `cidr` rule has no network to match, here or on any
/// user, is a mistake: nothing would ever pass that rule.
fn check_cidr_rules(
    listeners: &[Arc<ListenerConfig>],
    users: &HashMap<String, Arc<UserConfig>>,
) -> Result<()> {
    let users_have_cidrs = users.values().any(|u| !u.data_source_cidrs.is_empty());
    for (i, listener) in listeners.iter().enumerate() {
        if listener.data_source.cidr && listener.data_source_cidrs.is_empty() && !users_have_cidrs {
            return Err(ConfigError::new(
                format!("listeners[{i}].data_source_cidrs"),
                "required with \"cidr\" in data_source (or give users data_source_cidrs): the NAT egress networks, e.g. [\"20.50.0.0/24\"]",
            ));
        }
    }
    Ok(())
}

pub(super) fn remote_root(key: String, text: Option<&str>) -> Result<RemotePath> {
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
        let config = match upstream.kind.as_str() {
            "sftp" => sftp_upstream(i, upstream)?,
            "webdav" => webdav_upstream(i, upstream)?,
            other => {
                return Err(ConfigError::new(
                    key("kind"),
                    format!(
                        "{other:?} is not a known upstream kind (expected \"sftp\" or \"webdav\")"
                    ),
                ));
            }
        };
        out.insert(upstream.name.clone(), Arc::new(config));
    }
    Ok(out)
}

/// Refuses keys of the other upstream kind, so a WebDAV `host_key` or an
/// SFTP `ca_file` is not silently ignored.
fn forbid_keys(i: usize, raw: &RawUpstream, present: &[(&str, bool)]) -> Result<()> {
    match present.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(ConfigError::new(
            format!("upstreams[{i}].{field}"),
            format!("not used with kind = {:?}; remove it", raw.kind),
        )),
        None => Ok(()),
    }
}

fn sftp_upstream(i: usize, raw: &RawUpstream) -> Result<UpstreamConfig> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    forbid_keys(
        i,
        raw,
        &[
            ("url", raw.url.is_some()),
            ("token", raw.token.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            ("client_cert", raw.client_cert.is_some()),
            ("client_key", raw.client_key.is_some()),
        ],
    )?;
    let address = raw.address.as_deref().ok_or_else(|| {
        ConfigError::new(key("address"), "required with kind = \"sftp\": host:port")
    })?;
    let (host, port) = human::parse_host_port(address, defaults::SFTP_PORT)
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
        pool: sftp_pool(i, raw)?,
    };
    Ok(UpstreamConfig {
        name: raw.name.clone(),
        backend: Backend::Sftp {
            settings: sftp,
            auth: sftp_auth(i, raw)?,
        },
        root: remote_root(key("root"), raw.root.as_deref())?,
        atomic_uploads: raw.atomic_uploads.unwrap_or(true),
    })
}

fn sftp_pool(i: usize, raw: &RawUpstream) -> Result<PoolSettings> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    let max_connections = raw.pool_connections.unwrap_or(defaults::POOL_CONNECTIONS);
    if max_connections > 10_000 {
        return Err(ConfigError::new(
            key("pool_connections"),
            "must be between 0 (no pool) and 10000",
        ));
    }
    let channels_per_connection = raw.pool_channels.unwrap_or(defaults::POOL_CHANNELS);
    if !(1..=1024).contains(&channels_per_connection) {
        return Err(ConfigError::new(
            key("pool_channels"),
            "must be between 1 and 1024 (and at most the server's MaxSessions)",
        ));
    }
    Ok(PoolSettings {
        max_connections,
        channels_per_connection,
        idle_timeout: duration(
            key("pool_idle_timeout"),
            raw.pool_idle_timeout.as_ref(),
            defaults::SFTP_POOL_IDLE_TIMEOUT,
        )?,
        max_age: duration(
            key("pool_max_age"),
            raw.pool_max_age.as_ref(),
            defaults::POOL_MAX_AGE,
        )?,
    })
}

fn webdav_upstream(i: usize, raw: &RawUpstream) -> Result<UpstreamConfig> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    forbid_keys(
        i,
        raw,
        &[
            ("address", raw.address.is_some()),
            ("host_key", raw.host_key.is_some()),
            ("known_hosts", raw.known_hosts.is_some()),
            ("key", raw.key.is_some()),
            ("key_passphrase", raw.key_passphrase.is_some()),
            ("keepalive_interval", raw.keepalive_interval.is_some()),
            ("requests_in_flight", raw.requests_in_flight.is_some()),
            ("fsync_uploads", raw.fsync_uploads.is_some()),
            ("pool_connections", raw.pool_connections.is_some()),
            ("pool_channels", raw.pool_channels.is_some()),
            ("pool_max_age", raw.pool_max_age.is_some()),
        ],
    )?;
    let text = raw.url.as_deref().ok_or_else(|| {
        ConfigError::new(
            key("url"),
            "required with kind = \"webdav\", e.g. \"https://dav.example.com/files/{user}/\"",
        )
    })?;
    let url = UrlTemplate::parse(text).map_err(|m| ConfigError::new(key("url"), m))?;
    let auth = webdav_auth(i, raw)?;
    if !url.is_https() {
        for (field, present) in [
            ("ca_file", raw.ca_file.is_some()),
            ("client_cert", raw.client_cert.is_some()),
            ("client_key", raw.client_key.is_some()),
        ] {
            if present {
                return Err(ConfigError::new(
                    key(field),
                    "only used with an https:// url",
                ));
            }
        }
        warn!(upstream = %raw.name, %url, "credentials go to this WebDAV upstream unencrypted (http://); use https:// unless the server is on this host");
    }
    let client_identity = match (&raw.client_cert, &raw.client_key) {
        (Some(cert), Some(private_key)) => Some((cert.as_path(), private_key.as_path())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                key("client_key"),
                "required with client_cert: the certificate's private key (PEM)",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                key("client_cert"),
                "required with client_key: the client certificate chain (PEM)",
            ));
        }
    };
    let tls = tls::client_config(TlsFiles {
        ca_file: raw.ca_file.as_deref(),
        client_identity,
    })
    .map_err(|e| ConfigError::new(key(e.key), e.message))?;
    let timeouts = Timeouts {
        connect: duration(
            key("connect_timeout"),
            raw.connect_timeout.as_ref(),
            defaults::CONNECT_TIMEOUT,
        )?,
        request: duration(
            key("request_timeout"),
            raw.request_timeout.as_ref(),
            defaults::REQUEST_TIMEOUT,
        )?,
        pool_idle: duration(
            key("pool_idle_timeout"),
            raw.pool_idle_timeout.as_ref(),
            defaults::POOL_IDLE_TIMEOUT,
        )?,
    };
    Ok(UpstreamConfig {
        name: raw.name.clone(),
        backend: Backend::WebDav {
            settings: Box::new(WebDavSettings {
                url,
                client: DavClient::new(tls, timeouts),
            }),
            auth,
        },
        root: remote_root(key("root"), raw.root.as_deref())?,
        atomic_uploads: raw.atomic_uploads.unwrap_or(true),
    })
}

/// A credential key that the chosen `auth` does not use is an error, not ignored.
fn forbid_with_auth(key: String, auth: &str, present: bool) -> Result<()> {
    if present {
        Err(ConfigError::new(
            key,
            format!("not used with auth = {auth:?}; remove it"),
        ))
    } else {
        Ok(())
    }
}

fn webdav_auth(i: usize, raw: &RawUpstream) -> Result<UpstreamAuth<DavCredentials>> {
    let key = |field: &str| format!("upstreams[{i}].{field}");
    let forbid = |field: &str, present: bool| forbid_with_auth(key(field), &raw.auth, present);
    let required = |field: &str, value: Option<&Secret>| {
        value.filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
            ConfigError::new(key(field), format!("required with auth = {:?}", raw.auth))
        })
    };
    match raw.auth.as_str() {
        "passthrough" => {
            forbid("username", raw.username.is_some())?;
            forbid("password", raw.password.is_some())?;
            forbid("token", raw.token.is_some())?;
            Ok(UpstreamAuth::Passthrough)
        }
        "basic" => {
            forbid("token", raw.token.is_some())?;
            let username = raw
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(key("username"), "required with auth = \"basic\"")
                })?;
            // RFC 7617: the user-id cannot contain a colon.
            if username.contains(':') {
                return Err(ConfigError::new(
                    key("username"),
                    "must not contain ':' (HTTP Basic separates it from the password with one)",
                ));
            }
            let password = required("password", raw.password.as_ref())?;
            Ok(UpstreamAuth::Service(DavCredentials::Basic {
                username,
                password,
            }))
        }
        "bearer" => {
            forbid("username", raw.username.is_some())?;
            forbid("password", raw.password.is_some())?;
            let token = required("token", raw.token.as_ref())?;
            Ok(UpstreamAuth::Service(DavCredentials::Bearer(token)))
        }
        other => Err(ConfigError::new(
            key("auth"),
            format!("{other:?} is not one of \"basic\", \"bearer\", \"passthrough\""),
        )),
    }
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

fn sftp_auth(i: usize, raw: &RawUpstream) -> Result<UpstreamAuth<SftpCredentials>> {
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
    let forbid = |field: &str, present: bool| forbid_with_auth(key(field), &raw.auth, present);
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
    tenants: &HashMap<String, Arc<TenantConfig>>,
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
        let upstream = upstream_named(key("upstream"), &user.upstream, upstreams)?;
        match &user.password_hash {
            Some(hash) => crate::auth::validate_hash(hash.expose())
                .map_err(|m| ConfigError::new(key("password_hash"), m))?,
            None if upstream.backend.is_passthrough() => {}
            None => {
                return Err(ConfigError::new(
                    key("password_hash"),
                    "required unless the user's upstream uses auth = \"passthrough\"; create one with `ftpbridge hash-password`",
                ));
            }
        }
        let user_root = remote_root(key("root"), user.root.as_deref())?;
        let root = join_roots(&upstream.root, &user_root);
        let require_tls = user
            .require_tls
            .as_deref()
            .map(|text| tls_requirement(key("require_tls"), text))
            .transpose()?;
        let (tenant, rates, max_sessions) = super::tenants::user_limits(i, user, tenants)?;
        let data_source_cidrs =
            cidr_list(key("data_source_cidrs"), user.data_source_cidrs.as_ref())?;
        out.insert(
            user.name.clone(),
            Arc::new(UserConfig {
                name: user.name.clone(),
                password_hash: user.password_hash.clone(),
                upstream: upstream.clone(),
                root,
                require_tls,
                data_source_cidrs,
                tenant,
                rates,
                max_sessions,
                upstream_user: None,
            }),
        );
    }
    Ok(out)
}

pub(super) fn join_roots(upstream_root: &RemotePath, user_root: &RemotePath) -> RemotePath {
    user_root
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|part| !part.is_empty())
        .fold(upstream_root.clone(), |path, part| path.join(part))
}
