//! Which upstream, root and tenant a login gets, and who checks its
//! password. In order, first match wins:
//!
//! 1. a `[[users]]` entry with that exact name (its hash, or its
//!    pass-through upstream, checks the password);
//! 2. a classic proxy login `name@host[:port]`, when the listener allows it
//!    and `host` is one of its `proxy_login_upstreams` (the upstream checks);
//! 3. the first `[[routes]]` entry whose pattern and client networks match
//!    (the upstream checks, or the hook for `auth = "hook"`);
//! 4. the `[auth_hook]`, when configured.
//!
//! A login the hook cannot decide (timeout, error, a bad answer) is refused
//! with 421 and goes no further down the list: a failing identity provider
//! must not open a weaker door.

pub mod hook;
pub mod proxy_login;
pub mod template;

use std::net::IpAddr;
use std::sync::Arc;

use tracing::{debug, warn};

use self::hook::{Grant, HookCache, HookRequest, Verdict};
use self::template::LoginName;
use crate::config::{
    DEFAULT_TENANT, DirectionRates, ListenerConfig, RouteAuth, RouteConfig, RuntimeConfig,
    UserConfig, human, root_below,
};
use crate::net::Cidr;

/// One login to resolve.
pub struct Login<'a> {
    pub name: &'a str,
    pub password: &'a [u8],
    pub client: IpAddr,
    pub listener: &'a ListenerConfig,
    pub tls: bool,
}

/// Who the login is and who checks its password.
#[derive(Debug)]
pub enum Resolution {
    /// A `[[users]]` entry.
    Static(Arc<UserConfig>),
    /// Found by a route or a proxy login: the upstream checks the password.
    CheckedByUpstream(Arc<UserConfig>),
    /// The auth hook accepted the password.
    Allowed(Arc<UserConfig>),
    /// Refused (530); the reason is for the log.
    Refused(String),
    /// No rule knows the name (530 after a dummy password check).
    Unknown,
    /// The hook could not decide (421).
    Unavailable(String),
}

pub async fn resolve(config: &RuntimeConfig, hooks: &HookCache, login: &Login<'_>) -> Resolution {
    if let Some(user) = config.user(login.name) {
        return Resolution::Static(user.clone());
    }
    let name = match LoginName::parse(login.name) {
        Ok(name) => name,
        Err(e) => return Resolution::Refused(format!("unusable login name: {e}")),
    };
    if let Some(user) = proxy_login::resolve(config, login.listener, &name) {
        return Resolution::CheckedByUpstream(Arc::new(user));
    }
    let route = config.routes.iter().find(|route| {
        route.pattern.matches(name.as_str()) && applies_to(&route.clients, login.client)
    });
    match route {
        Some(route) => {
            debug!(route = route.index, "login matched a route");
            match route.auth {
                RouteAuth::Passthrough => {
                    match routed_user(route, &name, &Grant::default(), config) {
                        Ok(user) => Resolution::CheckedByUpstream(Arc::new(user)),
                        Err(reason) => Resolution::Refused(reason),
                    }
                }
                RouteAuth::Hook => ask_hook(config, hooks, login, &name, Some(route)).await,
            }
        }
        None if config.auth_hook.is_some() => ask_hook(config, hooks, login, &name, None).await,
        None => Resolution::Unknown,
    }
}

fn applies_to(clients: &[Cidr], ip: IpAddr) -> bool {
    clients.is_empty() || crate::net::cidr::any_contains(clients, ip)
}

async fn ask_hook(
    config: &RuntimeConfig,
    hooks: &HookCache,
    login: &Login<'_>,
    name: &LoginName,
    route: Option<&Arc<RouteConfig>>,
) -> Resolution {
    let Some(hook) = &config.auth_hook else {
        return Resolution::Unavailable(
            "a route uses auth = \"hook\" but [auth_hook] is not configured".into(),
        );
    };
    let Ok(password) = std::str::from_utf8(login.password) else {
        return Resolution::Refused(
            "the password is not UTF-8, which the auth hook's JSON cannot carry".into(),
        );
    };
    let request = HookRequest {
        user: name.as_str(),
        password,
        client_ip: login.client,
        listener: &login.listener.name,
        tls: login.tls,
    };
    match hooks.ask(hook, &request).await {
        Ok(Verdict::Allow(grant)) => {
            let user = match route {
                Some(route) => routed_user(route, name, &grant, config),
                None => hooked_user(name, &grant, config),
            };
            match user {
                Ok(user) => Resolution::Allowed(Arc::new(user)),
                Err(reason) => {
                    warn!(%reason, "the auth hook's answer cannot be used");
                    Resolution::Unavailable(reason)
                }
            }
        }
        Ok(Verdict::Deny(reason)) => Resolution::Refused(format!(
            "the auth hook refused{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        )),
        Err(e) => {
            warn!(error = %e, "auth hook failed; login refused");
            Resolution::Unavailable(e.to_string())
        }
    }
}

/// The user a route describes, with what a hook granted on top.
fn routed_user(
    route: &RouteConfig,
    name: &LoginName,
    grant: &Grant,
    config: &RuntimeConfig,
) -> Result<UserConfig, String> {
    let upstream = match &grant.upstream {
        Some(upstream) => config
            .upstreams
            .get(upstream)
            .cloned()
            .ok_or_else(|| format!("no upstream named {upstream:?}"))?,
        None => route.upstream.clone(),
    };
    let root = match &grant.root {
        Some(root) => root.clone(),
        None => route
            .root
            .expand(name)
            .ok_or_else(|| format!("route {} needs a name with '@' for {{domain}}", route.index))?,
    };
    let upstream_user = match (&grant.upstream_user, &route.upstream_user) {
        (Some(user), _) => Some(user.clone()),
        (None, Some(template)) => Some(template.expand(name).ok_or_else(|| {
            format!("route {} needs a name with '@' for {{domain}}", route.index)
        })?),
        (None, None) => None,
    };
    let tenant = match &grant.tenant {
        Some(tenant) => tenant.clone(),
        None => route.tenant.name.clone(),
    };
    build_user(
        name,
        upstream,
        &root,
        &tenant,
        upstream_user,
        grant,
        route.require_tls,
        config,
    )
}

/// The user a hook described on its own (no route).
fn hooked_user(
    name: &LoginName,
    grant: &Grant,
    config: &RuntimeConfig,
) -> Result<UserConfig, String> {
    let upstream_name = grant
        .upstream
        .as_ref()
        .ok_or("the answer names no upstream (required without a route)")?;
    let upstream = config
        .upstreams
        .get(upstream_name)
        .cloned()
        .ok_or_else(|| format!("no upstream named {upstream_name:?}"))?;
    let root = grant.root.clone().unwrap_or_else(|| "/".to_owned());
    let tenant = grant
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
    build_user(
        name,
        upstream,
        &root,
        &tenant,
        grant.upstream_user.clone(),
        grant,
        None,
        config,
    )
}

#[allow(clippy::too_many_arguments)]
fn build_user(
    name: &LoginName,
    upstream: Arc<crate::config::UpstreamConfig>,
    root: &str,
    tenant: &str,
    upstream_user: Option<String>,
    grant: &Grant,
    require_tls: Option<crate::config::TlsRequirement>,
    config: &RuntimeConfig,
) -> Result<UserConfig, String> {
    let root = root_below(&upstream, root).map_err(|e| format!("root {root:?}: {e}"))?;
    let tenant = config
        .tenants
        .get(tenant)
        .cloned()
        .ok_or_else(|| format!("no tenant named {tenant:?}"))?;
    let rate = |text: &Option<String>| {
        text.as_deref()
            .map(|t| human::parse_rate(t).map_err(|e| format!("rate {t:?}: {e}")))
            .transpose()
    };
    let rates = DirectionRates {
        download: rate(&grant.download_rate)?,
        upload: rate(&grant.upload_rate)?,
    };
    if grant.max_sessions == Some(0) {
        return Err("max_sessions must be at least 1".into());
    }
    Ok(UserConfig {
        data_source_cidrs: Vec::new(),
        name: name.as_str().to_owned(),
        password_hash: None,
        upstream,
        root,
        require_tls,
        tenant,
        rates,
        max_sessions: grant.max_sessions,
        upstream_user,
    })
}
