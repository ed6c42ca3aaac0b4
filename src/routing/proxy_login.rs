//! The classic FTP proxy login: `USER name@host[:port]`, as older FTP
//! proxies accept it. Only hosts on the listener's allow-list
//! (`proxy_login_upstreams`, configured pass-through upstreams, named or by
//! their address) are reachable, with their pinned host keys: never an
//! open relay. `name` and the password are passed to that upstream.

use crate::config::{
    Backend, DEFAULT_TENANT, DirectionRates, ListenerConfig, RuntimeConfig, UpstreamConfig,
    UserConfig,
};

use super::template::LoginName;

/// The user for a proxy login, if `name` is one this listener allows.
pub fn resolve(
    config: &RuntimeConfig,
    listener: &ListenerConfig,
    name: &LoginName,
) -> Option<UserConfig> {
    if listener.proxy_login_upstreams.is_empty() {
        return None;
    }
    let target = name.domain()?;
    let upstream = listener
        .proxy_login_upstreams
        .iter()
        .filter_map(|allowed| config.upstreams.get(allowed))
        .find(|upstream| names_upstream(target, upstream))?
        .clone();
    Some(UserConfig {
        data_source_cidrs: Vec::new(),
        name: name.as_str().to_owned(),
        password_hash: None,
        root: upstream.root.clone(),
        upstream,
        require_tls: None,
        tenant: config.tenants.get(DEFAULT_TENANT)?.clone(),
        rates: DirectionRates::default(),
        max_sessions: None,
        upstream_user: Some(name.local().to_owned()),
    })
}

/// Whether `target` (`host` or `host:port`) names `upstream`: its config
/// name, or the host (and port, when given) it connects to.
fn names_upstream(target: &str, upstream: &UpstreamConfig) -> bool {
    if target == upstream.name {
        return true;
    }
    let (host, port) = match &upstream.backend {
        Backend::Sftp { settings, .. } => (settings.host.clone(), settings.port),
        Backend::WebDav { settings, .. } => match settings.url.host_port() {
            Some(host_port) => host_port,
            None => return false,
        },
    };
    match target.rsplit_once(':') {
        Some((target_host, target_port)) if !target_host.contains(':') => {
            target_host.eq_ignore_ascii_case(&host) && target_port.parse() == Ok(port)
        }
        _ => target.eq_ignore_ascii_case(&host),
    }
}
