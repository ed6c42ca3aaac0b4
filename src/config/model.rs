//! The configuration file as written: serde structs that mirror `proxy.toml`.
//!
//! Values that need interpretation (durations, port ranges, enums, paths) are
//! kept as strings here and interpreted in `validate`, so every error there
//! can name the exact key it comes from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenant>,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub auth_hook: Option<RawAuthHook>,
}

/// `[[routes]]`: logins that no `[[users]]` entry names, matched by pattern.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A glob on the login name (`*`, `?`, `[...]`).
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub regex: Option<String>,
    pub clients: Option<Vec<String>>,
    pub upstream: String,
    pub auth: Option<String>,
    pub root: Option<String>,
    pub tenant: Option<String>,
    pub upstream_user: Option<String>,
    pub require_tls: Option<String>,
}

/// `[auth_hook]`: an HTTPS endpoint that decides logins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthHook {
    pub url: String,
    pub timeout: Option<String>,
    pub cache: Option<String>,
    pub token: Option<Secret>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub max_sessions: Option<usize>,
    pub max_sessions_per_ip: Option<usize>,
}

/// `[tenants.NAME]`: limits shared by the tenant's users and sessions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub download_rate: Option<String>,
    pub upload_rate: Option<String>,
    pub user_download_rate: Option<String>,
    pub user_upload_rate: Option<String>,
    pub session_download_rate: Option<String>,
    pub session_upload_rate: Option<String>,
    pub burst: Option<String>,
    pub commands_per_second: Option<u32>,
    pub commands_burst: Option<u32>,
    pub session_commands_per_second: Option<u32>,
    pub session_commands_burst: Option<u32>,
    pub listing_cost: Option<u32>,
    pub command_flood_time: Option<String>,
    pub max_sessions: Option<usize>,
    pub max_sessions_per_ip: Option<usize>,
    pub max_sessions_per_user: Option<usize>,
}

/// `[security]`: brute-force protection and connection rates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub max_failed_logins: Option<u32>,
    pub max_failed_logins_per_user: Option<u32>,
    pub failed_login_window: Option<String>,
    pub ban_time: Option<String>,
    pub connections_per_ip_per_second: Option<u32>,
    pub connection_burst: Option<u32>,
    pub password_cache: Option<String>,
    pub ban_exempt: Option<OneOrMany>,
}

/// `[admin]`: the HTTP listener for /metrics, /healthz and /readyz.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: String,
    pub readiness_timeout: Option<String>,
    pub readiness_cache: Option<String>,
}

/// `[logging]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub format: Option<String>,
    pub level: Option<String>,
    pub xferlog: Option<PathBuf>,
}

/// `[shutdown]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub bind: String,
    pub passive_address: Option<String>,
    pub passive_address_ttl: Option<String>,
    pub passive_address_overrides: Option<Vec<RawPassiveOverride>>,
    pub passive_ports: Option<String>,
    /// A list, or one comma-separated string (handy in environment overrides).
    pub data_source: Option<OneOrMany>,
    pub data_source_cidrs: Option<OneOrMany>,
    pub proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<OneOrMany>,
    pub proxy_header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub login_timeout: Option<String>,
    pub data_connect_timeout: Option<String>,
    pub data_idle_timeout: Option<String>,
    pub max_login_attempts: Option<u32>,
    pub banner: Option<String>,
    pub active_mode: Option<bool>,
    pub active_min_port: Option<u16>,
    pub active_source_port: Option<u16>,
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_handshake_timeout: Option<String>,
    pub require_tls: Option<String>,
    pub data_tls_resumption: Option<String>,
    pub data_close_notify: Option<String>,
    pub allow_ccc: Option<bool>,
    pub proxy_login: Option<bool>,
    pub proxy_login_upstreams: Option<Vec<String>>,
}

/// One `passive_address_overrides` entry: `{ clients = "10.0.0.0/8", address = "10.1.2.3" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveOverride {
    pub clients: OneOrMany,
    pub address: String,
}

/// `host_key = "SHA256:…"` or `host_key = ["SHA256:…", "SHA256:…"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub kind: String,
    /// SFTP: `host:port`.
    pub address: Option<String>,
    /// WebDAV: the base URL, `{user}` replaced by the FTP login name.
    pub url: Option<String>,
    pub host_key: Option<OneOrMany>,
    pub known_hosts: Option<PathBuf>,
    pub auth: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub key: Option<PathBuf>,
    pub key_passphrase: Option<Secret>,
    /// WebDAV `auth = "bearer"`.
    pub token: Option<Secret>,
    /// WebDAV TLS: CAs to trust instead of the system's, and a client
    /// certificate with its key for mutual TLS.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub root: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub keepalive_interval: Option<String>,
    pub pool_idle_timeout: Option<String>,
    /// SFTP: pooled SSH connections per upstream (0: no pool).
    pub pool_connections: Option<usize>,
    /// SFTP: FTP sessions sharing one pooled SSH connection.
    pub pool_channels: Option<usize>,
    /// SFTP: a pooled connection this old takes no new sessions.
    pub pool_max_age: Option<String>,
    pub requests_in_flight: Option<usize>,
    pub atomic_uploads: Option<bool>,
    pub fsync_uploads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password_hash: Option<Secret>,
    pub require_tls: Option<String>,
    pub data_source_cidrs: Option<OneOrMany>,
    pub upstream: String,
    pub root: Option<String>,
    pub tenant: Option<String>,
    pub download_rate: Option<String>,
    pub upload_rate: Option<String>,
    pub max_sessions: Option<usize>,
}
