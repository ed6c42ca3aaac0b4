//! USER and PASS (RFC 959 §4.1.1), and opening the user's upstream session.
//!
//! "USER: 230, 530, 500, 501, 421, 331, 332" and "PASS: 230, 202, 530, 500,
//! 501, 503, 421, 332" (RFC 959 §5.4). The upstream session is opened here,
//! so a refused upstream login is a 530 and an unreachable upstream a 421,
//! never a surprise at the first transfer.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use super::command::Password;
use super::passive::canonical;
use super::path::VirtualPath;
use super::reply::Reply;
use super::session::{Account, LoginState, Outcome, Session};
use crate::config::{Backend, UserConfig};
use crate::limit::{FailureVerdict, SessionLimiter};
use crate::obs::metrics::{
    GaugeGuard, ListenerResultLabels, ReasonLabels, TenantListenerLabels, UpstreamErrorLabels,
    UpstreamLabels,
};
use crate::routing::{self, Login, Resolution};
use crate::upstream::instrumented::{Instrumented, kind_label};
use crate::upstream::sftp::{SftpCredentials, SftpUpstream, SshPool};
use crate::upstream::webdav::{DavCredentials, WebDavUpstream};
use crate::upstream::{ErrorKind, SharedUpstream, UpstreamError};

impl Session {
    pub(super) fn user(&mut self, name: Bytes) -> Outcome {
        if self.is_logged_in() {
            return Reply::new(530, "Already logged in; cannot change to another user.").into();
        }
        if let Some(refusal) = self.refuse_clear_login(self.ctx.listener.require_tls) {
            return refusal.into();
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let reply = Reply::new(331, format!("Password required for {name}."));
        self.login = LoginState::UserGiven(name);
        reply.into()
    }

    pub(super) async fn pass(&mut self, password: Password) -> Outcome {
        let name = match &self.login {
            LoginState::UserGiven(name) => name.clone(),
            LoginState::LoggedIn(_) => return Reply::new(230, "Already logged in.").into(),
            LoginState::Fresh => return Reply::new(503, "Login with USER first.").into(),
        };
        // Connections opened before a ban must not go on guessing.
        let ip = canonical(self.peer.ip());
        if self
            .ctx
            .shared
            .login_guard
            .banned(ip, std::time::Instant::now())
            .is_some()
        {
            self.count_login("failed");
            return Outcome::Close(Reply::new(
                421,
                "Too many failed logins from your address; try again later.",
            ));
        }
        let config = self.ctx.shared.config();
        let login = Login {
            name: &name,
            password: &password.0,
            client: ip,
            listener: &self.ctx.listener,
            tls: self.control.get_ref().is_tls(),
        };
        let user = match routing::resolve(&config, &self.ctx.shared.hook_cache, &login).await {
            Resolution::Static(user) => {
                // A pass-through user without a local hash is checked by the upstream.
                let verified = match &user.password_hash {
                    Some(hash) => {
                        self.ctx
                            .shared
                            .passwords
                            .verify(&name, Some(hash), &password.0)
                            .await
                    }
                    None => true,
                };
                if !verified {
                    return self.login_failed(&name, "wrong user name or password");
                }
                user
            }
            Resolution::CheckedByUpstream(user) | Resolution::Allowed(user) => user,
            Resolution::Refused(reason) => return self.login_failed(&name, &reason),
            Resolution::Unknown => {
                // As slow as a known user's check, so timing does not tell names apart.
                self.ctx
                    .shared
                    .passwords
                    .verify(&name, None, &password.0)
                    .await;
                return self.login_failed(&name, "wrong user name or password");
            }
            Resolution::Unavailable(reason) => {
                warn!(user = %name, %reason, "login cannot be decided");
                self.count_login("unavailable");
                return Outcome::Close(Reply::new(
                    421,
                    "Authentication service unavailable; try again later.",
                ));
            }
        };
        let requirement = user.require_tls.unwrap_or(self.ctx.listener.require_tls);
        if let Some(refusal) = self.refuse_clear_login(requirement) {
            self.login = LoginState::Fresh;
            return refusal.into();
        }
        // Before the upstream is bothered: the tenant's and user's session limits.
        let slot = match self.ctx.shared.session_counts.enter_login(
            &user.tenant,
            &user.name,
            user.effective_max_sessions(),
            canonical(self.peer.ip()),
        ) {
            Ok(slot) => slot,
            Err(limit) => {
                warn!(user = %name, tenant = %user.tenant.name, limit = limit.reason(), "session limit reached; login refused");
                self.ctx
                    .shared
                    .metrics
                    .sessions_refused
                    .get_or_create(&ReasonLabels {
                        listener: self.ctx.listener.name.clone(),
                        reason: limit.reason(),
                    })
                    .inc();
                self.count_login("limited");
                return Outcome::Close(Reply::new(421, limit.reply_text()));
            }
        };

        let started = std::time::Instant::now();
        let connected = connect_upstream(&self.ctx.shared.sftp_pool, &user, &password).await;
        let metrics = &self.ctx.shared.metrics;
        let upstream_label = UpstreamLabels {
            upstream: user.upstream.name.clone(),
        };
        metrics
            .upstream_connect_seconds
            .get_or_create(&upstream_label)
            .observe(started.elapsed().as_secs_f64());
        let upstream = match connected {
            Ok(upstream) => Instrumented::wrap(upstream, &user.upstream.name, metrics.clone()),
            Err(e) => {
                metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        upstream: user.upstream.name.clone(),
                        kind: kind_label(e.kind()),
                    })
                    .inc();
                if e.kind() == ErrorKind::AuthenticationFailed {
                    return self.login_failed(&name, &e.to_string());
                }
                warn!(user = %name, upstream = %user.upstream.name, error = %e, "cannot open the upstream session");
                self.count_login("unavailable");
                return Outcome::Close(Reply::new(
                    421,
                    "Upstream storage unavailable; try again later.",
                ));
            }
        };
        match upstream.stat(&user.root).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) | Err(_) => {
                warn!(user = %name, root = %user.root, "the user's root is not a directory on the upstream");
                upstream.close().await;
                return Outcome::Close(Reply::new(421, "Home directory not available; closing."));
            }
        }

        self.span.record("user", name.as_str());
        self.span.record("upstream", user.upstream.name.as_str());
        info!("login succeeded");
        self.count_login("ok");
        let presence = GaugeGuard::new(&metrics.logged_in.get_or_create(&TenantListenerLabels {
            listener: self.ctx.listener.name.clone(),
            tenant: user.tenant.name.clone(),
        }));
        let limiter = SessionLimiter::new(
            self.ctx.shared.limits.clone(),
            metrics.clone(),
            &user.tenant.name,
            &user.name,
            user.effective_rates(),
        );
        self.login = LoginState::LoggedIn(Box::new(Account {
            user,
            upstream,
            cwd: VirtualPath::root(),
            limiter,
            _presence: presence,
            _slot: slot,
        }));
        Reply::new(230, "Login successful.").into()
    }

    fn count_login(&self, result: &'static str) {
        self.ctx
            .shared
            .metrics
            .logins
            .get_or_create(&ListenerResultLabels {
                listener: self.ctx.listener.name.clone(),
                result,
            })
            .inc();
    }

    fn login_failed(&mut self, name: &str, reason: &str) -> Outcome {
        self.count_login("failed");
        self.failed_logins += 1;
        self.login = LoginState::Fresh;
        info!(user = %name, reason, attempts = self.failed_logins, "login failed");
        let shared = &self.ctx.shared;
        let verdict = shared.login_guard.failed(
            canonical(self.peer.ip()),
            name,
            &shared.config().security,
            std::time::Instant::now(),
        );
        if let FailureVerdict::Banned(ban) = verdict {
            warn!(user = %name, ban = %humantime::format_duration(ban), "too many failed logins; the address is banned");
            shared.metrics.login_bans.inc();
            return Outcome::Close(Reply::new(
                421,
                "Too many failed logins from your address; try again later.",
            ));
        }
        if self.failed_logins >= self.ctx.listener.max_login_attempts {
            Outcome::Close(Reply::new(421, "Too many failed login attempts; closing."))
        } else {
            Reply::new(530, "Login incorrect.").into()
        }
    }
}

/// Opens the user's upstream session, checking the credentials there: a
/// refusal is `AuthenticationFailed` (530), anything else a reason to close.
async fn connect_upstream(
    pool: &SshPool,
    user: &UserConfig,
    password: &Password,
) -> Result<SharedUpstream, UpstreamError> {
    match &user.upstream.backend {
        Backend::Sftp { settings, auth } => {
            let credentials =
                auth.credentials(user.upstream_login(), &password.0, |username, password| {
                    SftpCredentials::Password { username, password }
                });
            let session =
                SftpUpstream::connect(pool, &user.upstream.name, settings, &credentials).await?;
            Ok(Arc::new(session))
        }
        Backend::WebDav { settings, auth } => {
            let credentials =
                auth.credentials(user.upstream_login(), &password.0, |username, password| {
                    DavCredentials::Basic { username, password }
                });
            let session =
                WebDavUpstream::connect(settings, user.upstream_login(), &credentials).await?;
            Ok(Arc::new(session))
        }
    }
}
