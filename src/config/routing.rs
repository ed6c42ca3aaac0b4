//! Validation of `[[routes]]`, `[auth_hook]` and the classic proxy login
//! keys of a listener. Every error names its key (`routes[2].regex`).

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{RawAuthHook, RawListener, RawRoute};
use super::validate::{remote_root, tls_requirement, upstream_named};
use super::{
    AuthHookConfig, ConfigError, DEFAULT_TENANT, ListenerConfig, NamePattern, RouteAuth,
    RouteConfig, TenantConfig, UpstreamConfig, human,
};
use crate::routing::template::Template;
use crate::upstream::webdav::tls::{self, TlsFiles};
use crate::upstream::webdav::{DavClient, Timeouts};

type Result<T> = std::result::Result<T, ConfigError>;

/// The hook's answer must arrive within this unless configured.
const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Regexes are compiled with this size limit: a route is not a place for a
/// pattern that costs megabytes per login.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn proxy_login(i: usize, raw: &RawListener) -> Result<Vec<String>> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let upstreams = raw.proxy_login_upstreams.clone().unwrap_or_default();
    match raw.proxy_login {
        Some(true) if upstreams.is_empty() => Err(ConfigError::new(
            key("proxy_login_upstreams"),
            "name the upstreams `USER name@host` may reach; proxy login is never an open relay",
        )),
        Some(true) => Ok(upstreams),
        _ if !upstreams.is_empty() => Err(ConfigError::new(
            key("proxy_login"),
            "set proxy_login = true to use proxy_login_upstreams",
        )),
        _ => Ok(Vec::new()),
    }
}

/// Proxy logins pass the FTP credentials on: only to pass-through upstreams,
/// or they would log anyone in with the service account.
pub(super) fn check_proxy_login_upstreams(
    listeners: &[Arc<ListenerConfig>],
    upstreams: &HashMap<String, Arc<UpstreamConfig>>,
) -> Result<()> {
    for (i, listener) in listeners.iter().enumerate() {
        for name in &listener.proxy_login_upstreams {
            let key = format!("listeners[{i}].proxy_login_upstreams");
            let upstream = upstreams.get(name).ok_or_else(|| {
                ConfigError::new(key.clone(), format!("no upstream named {name:?}"))
            })?;
            if !upstream.backend.is_passthrough() {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "upstream {name:?} logs in with service credentials; proxy logins need auth = \"passthrough\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn routes(
    raw: &[RawRoute],
    upstreams: &HashMap<String, Arc<UpstreamConfig>>,
    tenants: &HashMap<String, Arc<TenantConfig>>,
) -> Result<Vec<Arc<RouteConfig>>> {
    raw.iter()
        .enumerate()
        .map(|(i, route)| route_config(i, route, upstreams, tenants).map(Arc::new))
        .collect()
}

fn route_config(
    i: usize,
    raw: &RawRoute,
    upstreams: &HashMap<String, Arc<UpstreamConfig>>,
    tenants: &HashMap<String, Arc<TenantConfig>>,
) -> Result<RouteConfig> {
    let key = |field: &str| format!("routes[{i}].{field}");
    let pattern = match (&raw.pattern, &raw.regex) {
        (Some(glob), None) => NamePattern::Glob(glob.clone()),
        (None, Some(regex)) => NamePattern::Regex(
            regex::RegexBuilder::new(regex)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::new(key("regex"), e.to_string()))?,
        ),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("regex"),
                "give either match (a glob) or regex, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                key("match"),
                "required: a glob such as \"*\" or \"*@example.com\" (or give regex)",
            ));
        }
    };
    let clients = raw
        .clients
        .iter()
        .flatten()
        .map(|text| {
            text.parse()
                .map_err(|m| ConfigError::new(key("clients"), m))
        })
        .collect::<Result<Vec<_>>>()?;
    let upstream = upstream_named(key("upstream"), &raw.upstream, upstreams)?;
    let auth = match raw.auth.as_deref().unwrap_or("passthrough") {
        "passthrough" => RouteAuth::Passthrough,
        "hook" => RouteAuth::Hook,
        other => {
            return Err(ConfigError::new(
                key("auth"),
                format!("{other:?} is not one of \"passthrough\", \"hook\""),
            ));
        }
    };
    if auth == RouteAuth::Passthrough && !upstream.backend.is_passthrough() {
        return Err(ConfigError::new(
            key("auth"),
            format!(
                "upstream {:?} logs in with service credentials, so it cannot check passwords; use auth = \"hook\", or auth = \"passthrough\" on the upstream",
                raw.upstream
            ),
        ));
    }
    let root_text = raw.root.as_deref().unwrap_or("/");
    let root = Template::parse(root_text).map_err(|m| ConfigError::new(key("root"), m))?;
    // The fixed parts must already be a valid root; placeholders are filled
    // with names that cannot add `/` or `..`.
    let sample = crate::routing::template::LoginName::parse("name@domain")
        .map_err(|e| ConfigError::new(key("root"), format!("internal: {e}")))?;
    if let Some(filled) = root.expand(&sample) {
        remote_root(key("root"), Some(&filled))?;
    }
    let tenant_name = raw.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let tenant = tenants.get(tenant_name).cloned().ok_or_else(|| {
        ConfigError::new(key("tenant"), format!("no tenant named {tenant_name:?}"))
    })?;
    let upstream_user = raw
        .upstream_user
        .as_deref()
        .map(|text| Template::parse(text).map_err(|m| ConfigError::new(key("upstream_user"), m)))
        .transpose()?;
    let require_tls = raw
        .require_tls
        .as_deref()
        .map(|text| tls_requirement(key("require_tls"), text))
        .transpose()?;
    Ok(RouteConfig {
        index: i,
        pattern,
        clients,
        upstream,
        auth,
        root,
        tenant,
        upstream_user,
        require_tls,
    })
}

/// A route that asks the hook needs one: found when the file is loaded,
/// not at the first login.
pub(super) fn check_hook_routes(routes: &[Arc<RouteConfig>]) -> Result<()> {
    match routes.iter().find(|route| route.auth == RouteAuth::Hook) {
        Some(route) => Err(ConfigError::new(
            format!("routes[{}].auth", route.index),
            "auth = \"hook\" needs an [auth_hook] section",
        )),
        None => Ok(()),
    }
}

pub(super) fn auth_hook(raw: &RawAuthHook) -> Result<Arc<AuthHookConfig>> {
    let key = |field: &str| format!("auth_hook.{field}");
    let url = raw.url.trim();
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(ConfigError::new(
            key("url"),
            format!("{url:?} must start with https:// (or http:// for a hook on this host)"),
        ));
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(ConfigError::new(
            key("url"),
            format!("{url:?} is not a URL"),
        ));
    }
    if !https {
        tracing::warn!(%url, "passwords go to the auth hook unencrypted (http://); use https:// unless it runs on this host");
        if raw.ca_file.is_some() {
            return Err(ConfigError::new(
                key("ca_file"),
                "only used with an https:// url",
            ));
        }
    }
    let timeout = match &raw.timeout {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(text) => {
            human::parse_duration(text).map_err(|m| ConfigError::new(key("timeout"), m))?
        }
    };
    let cache = raw
        .cache
        .as_deref()
        .map(|text| human::parse_duration(text).map_err(|m| ConfigError::new(key("cache"), m)))
        .transpose()?;
    let tls = tls::client_config(TlsFiles {
        ca_file: raw.ca_file.as_deref(),
        client_identity: None,
    })
    .map_err(|e| ConfigError::new(key(e.key), e.message))?;
    let client = DavClient::new(
        tls,
        Timeouts {
            connect: timeout,
            request: timeout,
            pool_idle: std::time::Duration::from_secs(90),
        },
    );
    Ok(Arc::new(AuthHookConfig {
        url: url.to_owned(),
        timeout,
        cache,
        token: raw.token.clone(),
        client,
    }))
}
