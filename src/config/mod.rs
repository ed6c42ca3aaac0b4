//! Configuration: `proxy.toml` plus `FTPBRIDGE__…` environment overrides,
//! validated into a [`RuntimeConfig`] the rest of the program can trust.
//!
//! Loading goes file → overrides → serde model (`model`, unknown keys
//! refused) → `validate` (every value interpreted, every reference checked,
//! key files loaded). Any failure is a [`ConfigError`] naming the key.

pub mod human;
pub mod model;
mod routing;
mod tenants;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::net::Cidr;
use crate::routing::template::Template;
use crate::secret::Secret;
use crate::upstream::RemotePath;
use crate::upstream::sftp::{SftpCredentials, SftpSettings};
use crate::upstream::webdav::{DavCredentials, WebDavSettings};

/// Prefix of environment overrides: `FTPBRIDGE__SERVER__MAX_SESSIONS=10`,
/// `FTPBRIDGE__LISTENERS__0__BIND=0.0.0.0:21` (numbers index arrays).
pub const ENV_PREFIX: &str = "FTPBRIDGE__";

/// A configuration problem, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const MAX_SESSIONS: usize = 1000;
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const READINESS_TIMEOUT: Duration = Duration::from_secs(3);
    pub const READINESS_CACHE: Duration = Duration::from_secs(5);
    pub const LOG_LEVEL: &str = "info";
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DATA_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const MAX_LOGIN_ATTEMPTS: u32 = 3;
    pub const BANNER: &str = "ftpbridge ready";
    pub const ACTIVE_MIN_PORT: u16 = 1024;
    /// How long a resolved `passive_address` host name is used before it is
    /// looked up again.
    pub const PASSIVE_ADDRESS_TTL: Duration = Duration::from_secs(60);
    /// How long a trusted load balancer has to send its PROXY header.
    pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
    pub const REQUESTS_IN_FLIGHT: usize = 8;
    pub const SFTP_PORT: u16 = 22;
    /// Unused pooled WebDAV connections are closed after this (hyper's default).
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// Pooled SSH connections per SFTP upstream.
    pub const POOL_CONNECTIONS: usize = 16;
    /// Sessions per pooled SSH connection: below OpenSSH's default
    /// `MaxSessions` of 10.
    pub const POOL_CHANNELS: usize = 8;
    /// Pooled SSH connections to SFTP upstreams are closed after this idle.
    pub const SFTP_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const POOL_MAX_AGE: Duration = Duration::from_secs(15 * 60);
    pub const LISTING_COST: u32 = 5;
    pub const COMMAND_FLOOD_TIME: Duration = Duration::from_secs(60);
    pub const MAX_FAILED_LOGINS: u32 = 10;
    pub const MAX_FAILED_LOGINS_PER_USER: u32 = 50;
    pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
    pub const BAN_TIME: Duration = Duration::from_secs(15 * 60);
    pub const PASSWORD_CACHE: Duration = Duration::from_secs(5 * 60);
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub server: ServerSettings,
    pub admin: Option<AdminSettings>,
    pub logging: LoggingSettings,
    pub shutdown: ShutdownSettings,
    pub listeners: Vec<Arc<ListenerConfig>>,
    pub upstreams: HashMap<String, Arc<UpstreamConfig>>,
    pub users: HashMap<String, Arc<UserConfig>>,
    /// Always holds [`DEFAULT_TENANT`], unlimited unless configured.
    pub tenants: HashMap<String, Arc<TenantConfig>>,
    pub security: SecuritySettings,
    /// Evaluated in order for logins no `[[users]]` entry names.
    pub routes: Vec<Arc<RouteConfig>>,
    pub auth_hook: Option<Arc<AuthHookConfig>>,
}

/// How a route's logins are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// The upstream checks the FTP user name and password.
    Passthrough,
    /// The `[auth_hook]` decides.
    Hook,
}

/// What a route matches login names with.
#[derive(Debug, Clone)]
pub enum NamePattern {
    Glob(String),
    Regex(regex::Regex),
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Glob(glob) => crate::ftp::glob::matches(glob.as_bytes(), name.as_bytes()),
            NamePattern::Regex(regex) => regex.is_match(name),
        }
    }
}

/// `[[routes]]`: users found by pattern rather than listed.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Its position in the file, for logs.
    pub index: usize,
    pub pattern: NamePattern,
    /// Client networks the route applies to; empty: any.
    pub clients: Vec<crate::net::Cidr>,
    pub upstream: Arc<UpstreamConfig>,
    pub auth: RouteAuth,
    /// Below the upstream's root, filled in per login.
    pub root: Template,
    pub tenant: Arc<TenantConfig>,
    /// The name presented to the upstream; `None`: the login name.
    pub upstream_user: Option<Template>,
    pub require_tls: Option<TlsRequirement>,
}

/// `[auth_hook]`: where logins are decided by an HTTPS endpoint.
#[derive(Debug, Clone)]
pub struct AuthHookConfig {
    pub url: String,
    pub timeout: Duration,
    /// How long an answer is reused for the same credentials; `None`: never.
    pub cache: Option<Duration>,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<Secret>,
    pub client: crate::upstream::webdav::DavClient,
}

/// The tenant of users that name none.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Concurrent FTP sessions over all listeners.
    pub max_sessions: usize,
    /// Concurrent sessions from one client IP, over all listeners.
    pub max_sessions_per_ip: Option<usize>,
}

/// Bytes per second in each direction; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionRates {
    pub download: Option<u64>,
    pub upload: Option<u64>,
}

/// A command (or connection) rate: a steady rate and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// `[tenants.NAME]`: limits shared by a tenant's users and sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub name: String,
    /// Shared by every session of the tenant.
    pub rates: DirectionRates,
    /// Shared by the sessions of one user (a user's own rates replace these).
    pub user_rates: DirectionRates,
    /// For each session on its own.
    pub session_rates: DirectionRates,
    /// Bytes a bucket may pass at once after a pause; `None`: a tenth of a
    /// second at the bucket's rate, at least 64 KiB.
    pub burst: Option<u64>,
    /// Shared by every session of the tenant.
    pub commands: Option<EventRate>,
    pub session_commands: Option<EventRate>,
    /// What LIST, NLST, MLSD and STAT with a path cost, in commands.
    pub listing_cost: u32,
    /// A session held back by the command rate this long without a break
    /// is closed (421).
    pub command_flood_time: Duration,
    pub max_sessions: Option<usize>,
    pub max_sessions_per_ip: Option<usize>,
    pub max_sessions_per_user: Option<usize>,
}

impl TenantConfig {
    /// A tenant without limits.
    pub fn unlimited(name: &str) -> Self {
        TenantConfig {
            name: name.to_owned(),
            rates: DirectionRates::default(),
            user_rates: DirectionRates::default(),
            session_rates: DirectionRates::default(),
            burst: None,
            commands: None,
            session_commands: None,
            listing_cost: defaults::LISTING_COST,
            command_flood_time: defaults::COMMAND_FLOOD_TIME,
            max_sessions: None,
            max_sessions_per_ip: None,
            max_sessions_per_user: None,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    /// Failed logins from one IP within `failed_login_window` that get it
    /// banned; 0 disables banning.
    pub max_failed_logins: u32,
    /// Failed logins for one user name within the window after which every
    /// IP that fails on that name is banned at once (a distributed attack on
    /// one account); 0 disables it.
    pub max_failed_logins_per_user: u32,
    pub failed_login_window: Duration,
    pub ban_time: Duration,
    /// New connections per client IP; `None`: not limited.
    pub connection_rate: Option<EventRate>,
    /// How long credentials argon2 accepted are recognised without another
    /// verification (`auth::cache`); `None`: always verify.
    pub password_cache: Option<Duration>,
    /// Client networks never banned (monitoring probes, the office NAT):
    /// their failures still count towards the per-user limit.
    pub ban_exempt: Vec<Cidr>,
}

/// `[admin]`: where /metrics, /healthz and /readyz are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub bind: SocketAddr,
    /// How long /readyz waits for each upstream.
    pub readiness_timeout: Duration,
    /// How long a readiness answer is reused, so probes do not hammer upstreams.
    pub readiness_cache: Duration,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: crate::obs::LogFormat,
    /// An `EnvFilter` directive ("info", "ftpbridge=debug,russh=warn");
    /// `RUST_LOG`, when set, wins. Changes apply on reload.
    pub level: String,
    /// A wu-ftpd xferlog file: one line per completed or failed transfer.
    pub xferlog: Option<PathBuf>,
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// How long running transfers may go on after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
}

/// Where PASV tells clients to connect (EPSV names only a port, RFC 2428).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveAddress {
    /// The address the client's control connection reached: the local
    /// address, or behind a load balancer the destination its PROXY header
    /// names.
    Auto,
    /// Always IPv4: PASV cannot carry anything else.
    Ip(std::net::Ipv4Addr),
    /// Resolved when first needed and again every `passive_address_ttl`, so
    /// a changed DNS record takes effect without a lookup per PASV.
    Host(String),
}

/// `passive_address_overrides`: clients in these networks are told another
/// address (an internal one for internal clients, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveAddressOverride {
    pub clients: Vec<Cidr>,
    pub address: PassiveAddress,
}

/// `data_source`: which data connections a passive port accepts; one
/// matching rule is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSourcePolicy {
    /// `same-ip`: from the control connection's IP (the classic check).
    pub same_ip: bool,
    /// `cidr`: from the listener's or the user's `data_source_cidrs` (known
    /// NAT egress ranges).
    pub cidr: bool,
    /// `tls-session`: from any IP, when the protected data connection's TLS
    /// handshake resumed this control connection's session.
    pub tls_session: bool,
    /// `any`: from anywhere, unchecked.
    pub any: bool,
}

impl Default for DataSourcePolicy {
    fn default() -> Self {
        DataSourcePolicy {
            same_ip: true,
            cidr: false,
            tls_session: false,
            any: false,
        }
    }
}

/// `proxy_protocol = true`: control and passive data connections from
/// `trusted_proxies` start with a PROXY v1/v2 header naming the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub trusted_proxies: Vec<Cidr>,
    pub header_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub passive_address: PassiveAddress,
    /// How long a resolved host name in `passive_address` (or an override) is used.
    pub passive_address_ttl: Duration,
    pub passive_address_overrides: Vec<PassiveAddressOverride>,
    /// `None`: the kernel picks an ephemeral port.
    pub passive_ports: Option<RangeInclusive<u16>>,
    /// Which passive data connections are accepted.
    pub data_source: DataSourcePolicy,
    /// The networks the `cidr` rule accepts (users may add their own).
    pub data_source_cidrs: Vec<Cidr>,
    /// PROXY protocol from trusted load balancers; `None`: off.
    pub proxy_protocol: Option<ProxyProtocol>,
    pub idle_timeout: Duration,
    pub login_timeout: Duration,
    pub data_connect_timeout: Duration,
    pub data_idle_timeout: Duration,
    pub max_login_attempts: u32,
    pub banner: String,
    /// PORT/EPRT allowed (RFC 959 §4.1.2, RFC 2428 §2).
    pub active_mode: bool,
    /// Lowest client port an active data connection may go to: below 1024
    /// sit the services an FTP bounce attack would aim at.
    pub active_min_port: u16,
    /// Local port active data connections come from, for firewalls that
    /// expect RFC 959's "L-1" (port 20 next to 21); `None`: any port.
    pub active_source_port: Option<u16>,
    /// FTPS on this listener; `None` for plain FTP.
    pub tls: Option<ListenerTls>,
    /// What must be encrypted (users may override it).
    pub require_tls: TlsRequirement,
    /// Upstreams a classic proxy login (`USER name@host`) may reach; empty:
    /// such logins are ordinary names.
    pub proxy_login_upstreams: Vec<String>,
}

/// How a listener offers TLS (RFC 4217).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain until `AUTH TLS`.
    Explicit,
    /// TLS from the first byte (conventionally port 990).
    Implicit,
}

/// `require_tls`: what a session must encrypt before it may log in or transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsRequirement {
    Off,
    /// The control connection (so passwords never travel in clear).
    Control,
    /// The control connection and every data connection (PROT P).
    All,
}

/// `data_tls_resumption`: whether a protected data connection must resume the
/// control connection's TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumptionPolicy {
    /// Refuse data connections that did not resume (522).
    Required,
    /// Accept them, and log that they did not.
    Preferred,
    Off,
}

/// `data_close_notify`: how to judge a protected upload that ends without a
/// TLS close_notify (a plain TCP close, which an attacker could forge to
/// truncate the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseNotifyPolicy {
    /// Such an upload fails (426) and nothing is stored.
    Required,
    /// It is stored, with a warning in the log (many clients never send one).
    Optional,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub mode: TlsMode,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub handshake_timeout: Duration,
    pub data_resumption: ResumptionPolicy,
    pub data_close_notify: CloseNotifyPolicy,
    /// CCC (clear the control channel after login) is refused unless set.
    pub allow_ccc: bool,
}

/// How the bridge authenticates to an upstream; `C` is the backend's
/// credential type.
#[derive(Clone)]
pub enum UpstreamAuth<C> {
    /// The FTP user name and password are presented to the upstream.
    Passthrough,
    /// Fixed service credentials.
    Service(C),
}

impl<C: std::fmt::Debug> std::fmt::Debug for UpstreamAuth<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::Passthrough => f.write_str("Passthrough"),
            UpstreamAuth::Service(credentials) => write!(f, "Service({credentials:?})"),
        }
    }
}

impl<C: Clone> UpstreamAuth<C> {
    pub fn is_passthrough(&self) -> bool {
        matches!(self, UpstreamAuth::Passthrough)
    }

    /// The credentials for one login: the service credentials, or the FTP
    /// login turned into the backend's password credentials by `password`.
    pub fn credentials(
        &self,
        ftp_user: &str,
        ftp_password: &[u8],
        password: impl FnOnce(String, Secret) -> C,
    ) -> C {
        match self {
            UpstreamAuth::Service(credentials) => credentials.clone(),
            UpstreamAuth::Passthrough => password(
                ftp_user.to_owned(),
                Secret::new(String::from_utf8_lossy(ftp_password).into_owned()),
            ),
        }
    }
}

/// The kind of storage server, its settings and how the bridge logs in.
#[derive(Debug, Clone)]
pub enum Backend {
    Sftp {
        settings: SftpSettings,
        auth: UpstreamAuth<SftpCredentials>,
    },
    WebDav {
        // Boxed: the HTTP client is several times the size of the SFTP settings.
        settings: Box<WebDavSettings>,
        auth: UpstreamAuth<DavCredentials>,
    },
}

impl Backend {
    /// `"sftp"` or `"webdav"`, as in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Sftp { .. } => "sftp",
            Backend::WebDav { .. } => "webdav",
        }
    }

    /// Whether the FTP credentials are checked by the upstream (users then
    /// need no local password hash).
    pub fn is_passthrough(&self) -> bool {
        match self {
            Backend::Sftp { auth, .. } => auth.is_passthrough(),
            Backend::WebDav { auth, .. } => auth.is_passthrough(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub backend: Backend,
    pub root: RemotePath,
    /// Upload to a temporary name and rename on success.
    pub atomic_uploads: bool,
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    /// `None` only for users of a pass-through upstream, which checks the password.
    pub password_hash: Option<Secret>,
    pub upstream: Arc<UpstreamConfig>,
    /// The user's root on the upstream (upstream root + user root).
    pub root: RemotePath,
    /// Overrides the listener's `require_tls` for this user.
    pub require_tls: Option<TlsRequirement>,
    /// Added to the listener's `data_source_cidrs` for this user's sessions.
    pub data_source_cidrs: Vec<Cidr>,
    pub tenant: Arc<TenantConfig>,
    /// Shared by this user's sessions; unset directions use the tenant's `user_rates`.
    pub rates: DirectionRates,
    /// Concurrent sessions of this user; `None`: the tenant's `max_sessions_per_user`.
    pub max_sessions: Option<usize>,
    /// The name presented to the upstream (pass-through credentials, `{user}`
    /// in WebDAV URLs); `None`: the login name.
    pub upstream_user: Option<String>,
}

impl UserConfig {
    /// The rates shared by this user's sessions.
    pub fn effective_rates(&self) -> DirectionRates {
        DirectionRates {
            download: self.rates.download.or(self.tenant.user_rates.download),
            upload: self.rates.upload.or(self.tenant.user_rates.upload),
        }
    }

    pub fn effective_max_sessions(&self) -> Option<usize> {
        self.max_sessions.or(self.tenant.max_sessions_per_user)
    }

    /// The name the upstream knows this user by.
    pub fn upstream_login(&self) -> &str {
        self.upstream_user.as_deref().unwrap_or(&self.name)
    }
}

impl RuntimeConfig {
    pub fn user(&self, name: &str) -> Option<&Arc<UserConfig>> {
        self.users.get(name)
    }
}

/// A user's root below `upstream`'s root, from a path as a route or the auth
/// hook writes it (absolute, no `..`).
pub fn root_below(upstream: &UpstreamConfig, text: &str) -> Result<RemotePath, String> {
    let user_root = validate::remote_root(String::new(), Some(text)).map_err(|e| e.message)?;
    Ok(validate::join_roots(&upstream.root, &user_root))
}

/// Loads and validates `path` with overrides from the process environment.
pub fn load(path: &Path) -> Result<RuntimeConfig, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Loads and validates `path` with overrides from `env` (tests inject their own).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RuntimeConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read the file: {e}")))?;
    from_toml(&text, env)
}

/// Parses and validates TOML text with overrides from `env`.
pub fn from_toml(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RuntimeConfig, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    for (key, value) in env {
        if let Some(path) = env_key_to_path(&key) {
            builder = builder
                .set_override(path.as_str(), value)
                .map_err(|e| ConfigError::new(key.clone(), e.to_string()))?;
        }
    }
    let raw: model::RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(config_crate_error)?;
    validate::validate(raw)
}

/// `FTPBRIDGE__LISTENERS__0__BIND` → `listeners[0].bind`.
fn env_key_to_path(key: &str) -> Option<String> {
    let rest = key.strip_prefix(ENV_PREFIX)?;
    let mut path = String::new();
    for segment in rest.split("__") {
        if segment.is_empty() {
            return None;
        }
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment.to_ascii_lowercase());
        }
    }
    Some(path)
}

/// Turns the config crate's messages ("invalid type: ... for key
/// `upstreams[0]requests_in_flight`", "missing configuration field
/// \"listeners[0]name\"") into a key in our `listeners[0].name` form and a
/// message without the key repeated.
fn config_crate_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    if let Some((message, rest)) = text.split_once(" for key `") {
        let key = rest.split('`').next().unwrap_or_default();
        return ConfigError::new(normalise_key(key), message);
    }
    if let Some(rest) = text.strip_prefix("missing configuration field ") {
        let key = rest.trim_matches('"');
        return ConfigError::new(normalise_key(key), "missing; this key is required");
    }
    ConfigError::new("", text)
}

/// `upstreams[0]requests_in_flight` → `upstreams[0].requests_in_flight`.
fn normalise_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut previous = None;
    for c in key.chars() {
        if previous == Some(']') && c != '.' && c != '[' {
            out.push('.');
        }
        out.push(c);
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests;
