//! Counters of refused passive data connections, by reason: what an
//! operator watches to see NAT trouble (connections from addresses the
//! policy refuses), attacks (TLS proofs that fail) and misconfigured load
//! balancers (bad PROXY headers). They are the listener's
//! `ftpbridge_data_connection_refusals_total{reason=...}` series
//! (prometheus-client counters share their value between clones, so the
//! switchboard increments the exported series directly).

use prometheus_client::metrics::counter::Counter;

/// Why a passive data connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// From an address no `data_source` rule accepts.
    ForeignAddress,
    /// A `tls-session` candidate whose handshake did not resume this control
    /// connection's session.
    NotResumed,
    /// A `tls-session` candidate whose TLS handshake failed or timed out.
    TlsHandshake,
    /// To a passive port where no transfer waits (late, duplicate, or a
    /// port scan).
    NoTransferWaiting,
    /// More `tls-session` candidates at once than one waiting transfer takes.
    CandidateLimit,
    /// From a trusted proxy, without a valid PROXY header.
    ProxyHeader,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::ForeignAddress,
        Refusal::NotResumed,
        Refusal::TlsHandshake,
        Refusal::NoTransferWaiting,
        Refusal::CandidateLimit,
        Refusal::ProxyHeader,
    ];

    /// The metric's `reason` label; the first three are the labels the
    /// transfer-level checks use for the same causes.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ForeignAddress => "policy",
            Refusal::NotResumed => "tls_resumption",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::NoTransferWaiting => "no_transfer_waiting",
            Refusal::CandidateLimit => "candidate_limit",
            Refusal::ProxyHeader => "proxy_header",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One counter per reason. `Default` gives standalone counters (tests);
/// [`RefusalCounters::from_fn`] takes them from a metric family.
#[derive(Debug, Clone, Default)]
pub struct RefusalCounters {
    counters: [Counter; Refusal::ALL.len()],
}

impl RefusalCounters {
    /// The counters `counter` gives for each reason.
    pub fn from_fn(mut counter: impl FnMut(Refusal) -> Counter) -> Self {
        RefusalCounters {
            counters: Refusal::ALL.map(&mut counter),
        }
    }

    pub fn record(&self, reason: Refusal) {
        self.counters[reason.index()].inc();
    }

    pub fn get(&self, reason: Refusal) -> u64 {
        self.counters[reason.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_on_its_own() {
        let counters = RefusalCounters::default();
        counters.record(Refusal::ForeignAddress);
        counters.record(Refusal::ForeignAddress);
        counters.record(Refusal::ProxyHeader);
        assert_eq!(counters.get(Refusal::ForeignAddress), 2);
        assert_eq!(counters.get(Refusal::ProxyHeader), 1);
        assert_eq!(counters.get(Refusal::NotResumed), 0);
    }

    #[test]
    fn counters_from_a_family_share_its_values() {
        let exported: Vec<(&'static str, Counter)> = Refusal::ALL
            .iter()
            .map(|r| (r.label(), Counter::default()))
            .collect();
        let counters = RefusalCounters::from_fn(|reason| {
            exported
                .iter()
                .find(|(label, _)| *label == reason.label())
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        });
        counters.record(Refusal::NotResumed);
        let (_, exported_counter) = exported
            .iter()
            .find(|(label, _)| *label == "tls_resumption")
            .unwrap();
        assert_eq!(exported_counter.get(), 1);
    }

    #[test]
    fn labels_are_distinct() {
        let mut labels: Vec<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
