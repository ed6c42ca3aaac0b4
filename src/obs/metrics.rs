//! Prometheus metrics, with an explicit registry per server (no globals, so
//! tests with several servers in one process stay apart).
//!
//! Labels are bounded sets only: listener, upstream, tenant, verb, reply
//! class, direction, result, reason. Never a user, a path or an IP: those
//! would grow without bound and leak data into dashboards.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::RuntimeConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantListenerLabels {
    pub listener: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerResultLabels {
    pub listener: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub verb: &'static str,
    /// "1xx" … "5xx".
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub listener: String,
    pub upstream: String,
    pub tenant: String,
    /// "upload" or "download".
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// "upload", "download" or "listing".
    pub direction: &'static str,
    /// "ok", "failed" or "aborted".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOperationLabels {
    pub upstream: String,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamResultLabels {
    pub upstream: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub tenant: String,
    /// What was limited: "download", "upload", "commands".
    pub limit: &'static str,
}

/// Holds a gauge one higher for as long as it lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn duration_histogram() -> Histogram {
    // 10 ms … ~5.8 h: transfers last from instants to hours.
    Histogram::new(exponential_buckets(0.01, 2.0, 21))
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    pub sessions_active: Family<ListenerLabels, Gauge>,
    pub sessions: Family<ListenerLabels, Counter>,
    pub sessions_refused: Family<ReasonLabels, Counter>,
    pub logged_in: Family<TenantListenerLabels, Gauge>,
    pub logins: Family<ListenerResultLabels, Counter>,
    pub commands: Family<CommandLabels, Counter>,
    pub bytes: Family<TrafficLabels, Counter>,
    pub transfers: Family<TransferLabels, Counter>,
    pub transfer_seconds: Family<DirectionLabels, Histogram, fn() -> Histogram>,
    pub data_refusals: Family<ReasonLabels, Counter>,
    pub passive_ports_open: Family<ListenerLabels, Gauge>,
    pub upstream_connect_seconds: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub upstream_operation_seconds: Family<UpstreamOperationLabels, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub limit_delay_seconds: Family<LimitLabels, Counter<f64>>,
    pub reloads: Family<ResultLabels, Counter>,
    pub login_bans: Counter,
    pub password_verifications: Family<ResultLabels, Counter>,
    pub upstream_sessions: Family<UpstreamResultLabels, Counter>,
    pub upstream_pool_connections: Family<UpstreamLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ftpbridge");
        let metrics = Metrics {
            sessions_active: Family::default(),
            sessions: Family::default(),
            sessions_refused: Family::default(),
            logged_in: Family::default(),
            logins: Family::default(),
            commands: Family::default(),
            bytes: Family::default(),
            transfers: Family::default(),
            transfer_seconds: Family::new_with_constructor(duration_histogram),
            data_refusals: Family::default(),
            passive_ports_open: Family::default(),
            upstream_connect_seconds: Family::new_with_constructor(latency_histogram),
            upstream_operation_seconds: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            limit_delay_seconds: Family::default(),
            reloads: Family::default(),
            login_bans: Counter::default(),
            password_verifications: Family::default(),
            upstream_sessions: Family::default(),
            upstream_pool_connections: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions_active",
            "FTP sessions open now",
            metrics.sessions_active.clone(),
        );
        registry.register(
            "sessions",
            "FTP sessions accepted",
            metrics.sessions.clone(),
        );
        registry.register(
            "sessions_refused",
            "Connections refused before a session started, by reason",
            metrics.sessions_refused.clone(),
        );
        registry.register(
            "sessions_logged_in",
            "Logged-in FTP sessions now, by listener and tenant",
            metrics.logged_in.clone(),
        );
        registry.register("logins", "Login attempts by result", metrics.logins.clone());
        registry.register(
            "commands",
            "FTP commands by verb and reply class",
            metrics.commands.clone(),
        );
        registry.register(
            "transfer_bytes",
            "Bytes moved through data connections",
            metrics.bytes.clone(),
        );
        registry.register(
            "transfers",
            "Transfers by direction and result",
            metrics.transfers.clone(),
        );
        registry.register(
            "transfer_duration_seconds",
            "Transfer durations",
            metrics.transfer_seconds.clone(),
        );
        registry.register(
            "data_connection_refusals",
            "Data connections refused or never opened, by reason",
            metrics.data_refusals.clone(),
        );
        registry.register(
            "passive_ports_open",
            "Passive ports listening now (a port several waiting sessions share counts once)",
            metrics.passive_ports_open.clone(),
        );
        registry.register(
            "upstream_connect_seconds",
            "Time to connect and authenticate to an upstream",
            metrics.upstream_connect_seconds.clone(),
        );
        registry.register(
            "upstream_operation_seconds",
            "Upstream operation latency",
            metrics.upstream_operation_seconds.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream errors by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "limit_delay_seconds",
            "Time transfers and commands were delayed by rate limits",
            metrics.limit_delay_seconds.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            metrics.reloads.clone(),
        );
        registry.register(
            "login_bans",
            "Client addresses banned for too many failed logins",
            metrics.login_bans.clone(),
        );
        registry.register(
            "password_verifications",
            "Password checks: argon2 accepted (ok) or refused (failed), or the \
             credential cache accepted without argon2 (cached)",
            metrics.password_verifications.clone(),
        );
        registry.register(
            "upstream_sessions",
            "SFTP upstream sessions by how their SSH connection was obtained: reused \
             from the pool, connected (new pooled connection), unpooled (pool full or \
             off), or replaced (a pooled connection failed its check)",
            metrics.upstream_sessions.clone(),
        );
        registry.register(
            "upstream_pool_connections",
            "Pooled SSH connections open to an SFTP upstream",
            metrics.upstream_pool_connections.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn record_transfer(
        &self,
        direction: &'static str,
        result: &'static str,
        elapsed: Duration,
    ) {
        self.transfers
            .get_or_create(&TransferLabels { direction, result })
            .inc();
        self.transfer_seconds
            .get_or_create(&DirectionLabels { direction })
            .observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// Creates, at zero, the series that the config tells us will exist, so
    /// that dashboards show them from the start and `increase()` and `rate()`
    /// see the first event (a series born at 1 has no increase). Idempotent:
    /// called at start-up and after each reload.
    pub fn prime(&self, config: &RuntimeConfig) {
        for result in ["ok", "failed"] {
            let _ = self.reloads.get_or_create(&ResultLabels { result });
        }
        for result in crate::auth::VERIFICATION_RESULTS {
            let _ = self
                .password_verifications
                .get_or_create(&ResultLabels { result });
        }
        for direction in ["upload", "download", "listing"] {
            let _ = self
                .transfer_seconds
                .get_or_create(&DirectionLabels { direction });
            for result in ["ok", "failed", "aborted"] {
                let _ = self
                    .transfers
                    .get_or_create(&TransferLabels { direction, result });
            }
        }
        for tenant in config.tenants.keys() {
            for limit in ["download", "upload", "commands"] {
                let _ = self.limit_delay_seconds.get_or_create(&LimitLabels {
                    tenant: tenant.clone(),
                    limit,
                });
            }
        }
        for listener in &config.listeners {
            let name = || listener.name.clone();
            let _ = self
                .sessions_active
                .get_or_create(&ListenerLabels { listener: name() });
            let _ = self
                .sessions
                .get_or_create(&ListenerLabels { listener: name() });
            let _ = self
                .passive_ports_open
                .get_or_create(&ListenerLabels { listener: name() });
            for tenant in config.tenants.keys() {
                let _ = self.logged_in.get_or_create(&TenantListenerLabels {
                    listener: name(),
                    tenant: tenant.clone(),
                });
            }
            for result in ["ok", "failed", "unavailable", "limited"] {
                let _ = self.logins.get_or_create(&ListenerResultLabels {
                    listener: name(),
                    result,
                });
            }
            for reason in SESSION_REFUSAL_REASONS {
                let _ = self.sessions_refused.get_or_create(&ReasonLabels {
                    listener: name(),
                    reason,
                });
            }
            for reason in DATA_REFUSAL_REASONS {
                let _ = self.data_refusals.get_or_create(&ReasonLabels {
                    listener: name(),
                    reason,
                });
            }
        }
        for upstream in config.upstreams.keys() {
            for result in crate::upstream::sftp::pool::SESSION_RESULTS {
                let _ = self.upstream_sessions.get_or_create(&UpstreamResultLabels {
                    upstream: upstream.clone(),
                    result,
                });
            }
            let _ = self
                .upstream_pool_connections
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.clone(),
                });
            let _ = self
                .upstream_connect_seconds
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.clone(),
                });
            for kind in [
                "unreachable",
                "timeout",
                "connection_lost",
                "host_key_rejected",
                "authentication_failed",
            ] {
                let _ = self.upstream_errors.get_or_create(&UpstreamErrorLabels {
                    upstream: upstream.clone(),
                    kind,
                });
            }
        }
    }
}

/// Why a data connection was refused or never opened: a connection from an
/// address the policy refuses, none within `data_connect_timeout`, no free
/// passive port, an active-mode connect that failed or was a bounce attempt,
/// a failed TLS handshake or a TLS session that was not resumed, a
/// connection to a passive port where no transfer waited, too many
/// TLS-session candidates at once, a trusted proxy without a valid PROXY
/// header, or a passive port given to another session after its own waited
/// too long for a transfer command (`ftp::refusals` counts the first kinds
/// per connection as they arrive).
pub const DATA_REFUSAL_REASONS: [&str; 11] = [
    "policy",
    "timeout",
    "port_exhaustion",
    "connect_failed",
    "bounce",
    "tls_handshake",
    "tls_resumption",
    "no_transfer_waiting",
    "candidate_limit",
    "proxy_header",
    "reclaimed",
];

/// Why a connection or a login was refused a session: the server's
/// `max_sessions`, a client IP's sessions or connection rate, a ban, the
/// tenant's and user's limits at login, or a trusted load balancer's
/// connection without a valid PROXY header.
pub const SESSION_REFUSAL_REASONS: [&str; 8] = [
    "session_limit",
    "ip_sessions",
    "connection_rate",
    "banned",
    "tenant_sessions",
    "user_sessions",
    "tenant_ip_sessions",
    "proxy_header",
];

/// "1xx" … "5xx" for a reply code.
pub fn reply_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_names_metrics_with_the_prefix_and_labels() {
        let metrics = Metrics::new();
        metrics
            .commands
            .get_or_create(&CommandLabels {
                verb: "RETR",
                class: reply_class(226),
            })
            .inc();
        metrics.record_transfer("download", "ok", Duration::from_millis(250));
        let text = metrics.render();
        assert!(
            text.contains("ftpbridge_commands_total{verb=\"RETR\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ftpbridge_transfers_total{direction=\"download\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ftpbridge_transfer_duration_seconds_count{direction=\"download\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn priming_shows_the_configured_series_at_zero() {
        let config = crate::config::from_toml(
            r#"
[[listeners]]
name = "edge"
bind = "127.0.0.1:0"
[[upstreams]]
name = "store"
kind = "sftp"
address = "127.0.0.1:22"
host_key = "insecure-accept-any"
auth = "passthrough"
[[users]]
name = "u"
upstream = "store"
"#,
            std::iter::empty(),
        )
        .expect("config");
        let metrics = Metrics::new();
        metrics.prime(&config);
        metrics.prime(&config);
        let text = metrics.render();
        for line in [
            "ftpbridge_config_reloads_total{result=\"failed\"} 0",
            "ftpbridge_logins_total{listener=\"edge\",result=\"failed\"} 0",
            "ftpbridge_data_connection_refusals_total{listener=\"edge\",reason=\"policy\"} 0",
            "ftpbridge_upstream_errors_total{upstream=\"store\",kind=\"unreachable\"} 0",
            "ftpbridge_sessions_logged_in{listener=\"edge\",tenant=\"default\"} 0",
            "ftpbridge_limit_delay_seconds_total{tenant=\"default\",limit=\"download\"} 0.0",
            "ftpbridge_sessions_active{listener=\"edge\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn reply_classes() {
        assert_eq!(reply_class(150), "1xx");
        assert_eq!(reply_class(550), "5xx");
    }
}
