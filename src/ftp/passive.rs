//! Passive data connections (RFC 959 PASV, RFC 2428 EPSV).
//!
//! PASV/EPSV registers the session on a passive port of the listener's range
//! (see `switchboard`) and the next transfer waits there for its one data
//! connection. Which connections qualify is the listener's `data_source`
//! policy (`source_policy`); connections that do not are closed at once,
//! logged, counted, and leave the slot open for the real one. The transfer
//! gets 425 when nothing valid arrives within `data_connect_timeout`, and
//! sooner once a refused connection showed that the client's data
//! connection is coming from the wrong place (a client behind NAT does not
//! try again).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::dataconn::DataConnectionError;
use super::passive_address::HostCache;
pub use super::switchboard::{DataTls, Delivered, OpenError, SlotRequest, TlsOffer};
use super::switchboard::{Registration, Switchboard};
/// Kept here too for the code that compares client addresses next to
/// passive ports (`login`, `limit`).
pub use crate::net::canonical;

/// After a connection was refused for a waiting transfer, the real one gets
/// this long to arrive before the transfer fails with 425. Clients connect
/// right after PASV, so a refused connection nearly always *was* the client.
pub const REFUSED_GRACE: Duration = Duration::from_secs(2);
/// How often a transfer past its grace period looks whether a TLS-session
/// candidate is still handshaking.
const CANDIDATE_POLL: Duration = Duration::from_millis(100);

/// The passive side of one FTP listener, shared by its sessions: its ports
/// and the resolved `passive_address` host names.
pub struct PassivePorts {
    range: Option<RangeInclusive<u16>>,
    board: Arc<Switchboard>,
    hosts: HostCache,
}

impl PassivePorts {
    /// `open_gauge` follows how many of the ports listen.
    pub fn new(range: Option<RangeInclusive<u16>>, open_gauge: Gauge) -> Self {
        PassivePorts {
            range,
            board: Switchboard::new(open_gauge),
            hosts: HostCache::default(),
        }
    }

    /// Opens a slot for one session on `local_ip` (the address its control
    /// connection reached, where the client's data connection arrives too).
    pub fn open(
        &self,
        local_ip: IpAddr,
        request: SlotRequest,
    ) -> Result<PendingDataConnection, OpenError> {
        Ok(PendingDataConnection {
            board: self.board.clone(),
            registration: self.board.open(local_ip, self.range.as_ref(), request)?,
        })
    }

    pub fn hosts(&self) -> &HostCache {
        &self.hosts
    }

    /// Passive ports listening right now.
    pub fn open_ports(&self) -> usize {
        self.board.open_ports()
    }
}

/// A session waiting on a passive port for its data connection.
pub struct PendingDataConnection {
    board: Arc<Switchboard>,
    registration: Registration,
}

impl PendingDataConnection {
    pub fn local_addr(&self) -> SocketAddr {
        self.registration.port
    }

    /// Waits up to `timeout` for the data connection; `offer` says whether
    /// the transfer is protected (what a TLS-session proof is checked with).
    pub async fn connection(
        mut self,
        timeout: Duration,
        offer: TlsOffer,
    ) -> Result<Delivered, DataConnectionError> {
        let shared = self.registration.shared.clone();
        shared.claim();
        shared.offer.send_replace(offer);
        let mut refusals = shared.refused.subscribe();
        let hard_deadline = Instant::now() + timeout;
        let mut deadline = hard_deadline;
        let mut refused = *refusals.borrow_and_update() > 0;
        if refused {
            deadline = deadline.min(Instant::now() + REFUSED_GRACE);
        }
        loop {
            tokio::select! {
                delivered = &mut self.registration.delivered => {
                    return delivered.map_err(|_| DataConnectionError::Reclaimed);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if refused && shared.candidates_in_flight() > 0 && now < hard_deadline {
                        // A TLS-session proof is still being checked (a slow
                        // client's handshake): its outcome decides.
                        deadline = hard_deadline.min(now + CANDIDATE_POLL);
                        continue;
                    }
                    return Err(if refused {
                        DataConnectionError::Refused
                    } else {
                        DataConnectionError::Timeout(timeout)
                    });
                }
                changed = refusals.changed(), if !refused => {
                    if changed.is_ok() {
                        refused = true;
                        deadline = deadline.min(Instant::now() + REFUSED_GRACE);
                    }
                }
            }
        }
    }
}

impl Drop for PendingDataConnection {
    /// The slot ends; the port closes if no other session waits on it.
    fn drop(&mut self) {
        self.board
            .remove(self.registration.port, self.registration.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataSourcePolicy;
    use crate::ftp::refusals::{Refusal, RefusalCounters};
    use crate::ftp::source_policy::SlotRules;
    use crate::net::Cidr;
    use std::net::Ipv4Addr;
    use tokio::net::{TcpSocket, TcpStream};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn same_ip(control: IpAddr) -> SlotRequest {
        request(DataSourcePolicy::default(), control, &[])
    }

    fn request(policy: DataSourcePolicy, control: IpAddr, cidrs: &[&str]) -> SlotRequest {
        let cidrs: Vec<Cidr> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        SlotRequest {
            rules: SlotRules::new(policy, control, cidrs, false),
            proxy: None,
            unclaimed_after: Duration::from_secs(30),
            refusals: RefusalCounters::default(),
        }
    }

    /// `request`, counting its refusals in `counters`.
    fn counted(mut request: SlotRequest, counters: &RefusalCounters) -> SlotRequest {
        request.refusals = counters.clone();
        request
    }

    /// Connects to `port` from the loopback address `from` (any 127/8
    /// address works on Linux), so tests can play several clients.
    async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
        socket.connect(to).await.unwrap()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn tcp(delivered: Delivered) -> TcpStream {
        match delivered {
            Delivered::Tcp(stream) => stream,
            Delivered::Proven(_) => panic!("expected a plain TCP delivery"),
        }
    }

    #[tokio::test]
    async fn a_connection_from_the_control_peer_is_handed_over() {
        let ports = PassivePorts::new(None, Gauge::default());
        let pending = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        let client = TcpStream::connect(pending.local_addr()).await.unwrap();
        let server_side = tcp(pending
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap());
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
        assert_eq!(
            ports.open_ports(),
            0,
            "the port closed once its connection arrived"
        );
    }

    #[tokio::test]
    async fn the_open_ports_gauge_follows_the_ports_that_listen() {
        let gauge = Gauge::default();
        let ports = PassivePorts::new(None, gauge.clone());
        let first = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        let second = ports.open(LOCALHOST, same_ip(ip("127.0.0.2"))).unwrap();
        assert_eq!(gauge.get(), 2);
        let client = TcpStream::connect(first.local_addr()).await.unwrap();
        let _server_side = first
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap();
        assert_eq!(gauge.get(), 1, "a delivered port closes");
        drop(second);
        assert_eq!(gauge.get(), 0, "an abandoned port closes");
        drop(client);
    }

    #[tokio::test]
    async fn a_connection_that_arrives_before_the_transfer_command_waits_for_it() {
        let ports = PassivePorts::new(None, Gauge::default());
        let pending = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        let client = TcpStream::connect(pending.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let server_side = tcp(pending
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap());
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
    }

    #[tokio::test]
    async fn a_foreign_connection_is_refused_the_slot_stays_open_and_the_wait_ends_early() {
        let ports = PassivePorts::new(None, Gauge::default());
        let counters = RefusalCounters::default();
        let pending = ports
            .open(LOCALHOST, counted(same_ip(LOCALHOST), &counters))
            .unwrap();
        let addr = pending.local_addr();
        let waiting = tokio::spawn(pending.connection(Duration::from_secs(30), TlsOffer::Clear));
        let mut intruder = connect_from("127.0.0.2", addr).await;
        // The intruder is reset at once...
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut intruder, &mut buf),
        )
        .await
        .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // ...the real client still gets the slot within the grace period...
        let client = TcpStream::connect(addr).await.unwrap();
        let server_side = tcp(waiting.await.unwrap().unwrap());
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
        assert_eq!(counters.get(Refusal::ForeignAddress), 1);
    }

    #[tokio::test]
    async fn after_a_refusal_nothing_valid_means_425_long_before_the_timeout() {
        let ports = PassivePorts::new(None, Gauge::default());
        let pending = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        let _intruder = connect_from("127.0.0.2", pending.local_addr()).await;
        let started = std::time::Instant::now();
        let result = pending
            .connection(Duration::from_secs(30), TlsOffer::Clear)
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Refused)),
            "{result:?}"
        );
        assert!(started.elapsed() < REFUSED_GRACE + Duration::from_secs(2));
    }

    #[tokio::test]
    async fn without_any_connection_the_wait_is_the_timeout() {
        let ports = PassivePorts::new(None, Gauge::default());
        let pending = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        let result = pending
            .connection(Duration::from_millis(300), TlsOffer::Clear)
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Timeout(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn cidr_rules_accept_another_egress_address() {
        let policy = DataSourcePolicy {
            cidr: true,
            ..DataSourcePolicy::default()
        };
        let ports = PassivePorts::new(None, Gauge::default());
        let pending = ports
            .open(LOCALHOST, request(policy, LOCALHOST, &["127.0.0.2/32"]))
            .unwrap();
        let client = connect_from("127.0.0.2", pending.local_addr()).await;
        let server_side = tcp(pending
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap());
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
    }

    #[tokio::test]
    async fn ports_come_from_the_configured_range_and_run_out() {
        let base = free_port();
        let ports = PassivePorts::new(Some(base..=base), Gauge::default());
        let first = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        assert_eq!(first.local_addr().port(), base);
        // Same client address: the port cannot be shared, the pool is empty.
        let err = ports.open(LOCALHOST, same_ip(LOCALHOST)).err().unwrap();
        assert!(matches!(err, OpenError::Exhausted(..)), "{err}");
        drop(first);
        assert_eq!(ports.open_ports(), 0);
        let again = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        assert_eq!(again.local_addr().port(), base, "released at once");
    }

    #[tokio::test]
    async fn sessions_from_different_addresses_share_one_port() {
        let base = free_port();
        let ports = PassivePorts::new(Some(base..=base), Gauge::default());
        let a = ports.open(LOCALHOST, same_ip(ip("127.0.0.1"))).unwrap();
        let b = ports.open(LOCALHOST, same_ip(ip("127.0.0.2"))).unwrap();
        let c = ports.open(LOCALHOST, same_ip(ip("127.0.0.3"))).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
        assert_eq!(b.local_addr(), c.local_addr());
        assert_eq!(ports.open_ports(), 1);
        let addr = a.local_addr();
        // Connect in the reverse order: each connection still finds its session.
        let from_c = connect_from("127.0.0.3", addr).await;
        let from_b = connect_from("127.0.0.2", addr).await;
        let from_a = connect_from("127.0.0.1", addr).await;
        for (pending, client) in [(a, from_a), (b, from_b), (c, from_c)] {
            let server_side = tcp(pending
                .connection(Duration::from_secs(5), TlsOffer::Clear)
                .await
                .unwrap());
            assert_eq!(
                server_side.peer_addr().unwrap(),
                client.local_addr().unwrap()
            );
        }
        assert_eq!(ports.open_ports(), 0);
    }

    #[tokio::test]
    async fn a_stray_connection_to_a_shared_port_leaves_every_session_waiting() {
        let base = free_port();
        let ports = PassivePorts::new(Some(base..=base), Gauge::default());
        let a = ports.open(LOCALHOST, same_ip(ip("127.0.0.1"))).unwrap();
        let b = ports.open(LOCALHOST, same_ip(ip("127.0.0.2"))).unwrap();
        let _stray = connect_from("127.0.0.9", a.local_addr()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nobody can tell whose it was, so no session is cut short.
        let result = a
            .connection(
                Duration::from_millis(REFUSED_GRACE.as_millis() as u64 + 500),
                TlsOffer::Clear,
            )
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Timeout(_))),
            "{result:?}"
        );
        drop(b);
    }

    #[tokio::test]
    async fn an_unclaimed_slot_is_reclaimed_when_the_pool_needs_its_port() {
        let base = free_port();
        let ports = PassivePorts::new(Some(base..=base), Gauge::default());
        let mut idle = same_ip(LOCALHOST);
        idle.unclaimed_after = Duration::from_millis(50);
        let stale = ports.open(LOCALHOST, idle).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fresh = ports.open(LOCALHOST, same_ip(LOCALHOST)).unwrap();
        assert_eq!(fresh.local_addr().port(), base);
        let result = stale
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Reclaimed)),
            "{result:?}"
        );
        // Dropping the reclaimed slot does not disturb the new one.
        let client = TcpStream::connect(fresh.local_addr()).await.unwrap();
        let server_side = tcp(fresh
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap());
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
    }

    fn tls_proof_request(counters: &RefusalCounters) -> SlotRequest {
        let policy = DataSourcePolicy {
            tls_session: true,
            ..DataSourcePolicy::default()
        };
        SlotRequest {
            rules: SlotRules::new(policy, LOCALHOST, [], true),
            proxy: None,
            unclaimed_after: Duration::from_secs(30),
            refusals: counters.clone(),
        }
    }

    async fn settle(counters: &RefusalCounters, reason: Refusal, count: u64) {
        for _ in 0..100 {
            if counters.get(reason) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{reason:?} never reached {count}");
    }

    #[tokio::test]
    async fn tls_session_candidates_are_capped_per_waiting_transfer() {
        let ports = PassivePorts::new(None, Gauge::default());
        let counters = RefusalCounters::default();
        let pending = ports.open(LOCALHOST, tls_proof_request(&counters)).unwrap();
        // Candidates wait for the transfer command to say how to check them.
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(connect_from("127.0.0.2", pending.local_addr()).await);
        }
        settle(&counters, Refusal::CandidateLimit, 1).await;
        assert_eq!(counters.get(Refusal::CandidateLimit), 1);
        drop(pending);
    }

    #[tokio::test]
    async fn a_candidate_for_a_clear_transfer_is_refused() {
        let ports = PassivePorts::new(None, Gauge::default());
        let counters = RefusalCounters::default();
        let pending = ports.open(LOCALHOST, tls_proof_request(&counters)).unwrap();
        let _candidate = connect_from("127.0.0.2", pending.local_addr()).await;
        let result = pending
            .connection(Duration::from_secs(10), TlsOffer::Clear)
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Refused)),
            "{result:?}"
        );
        assert_eq!(counters.get(Refusal::ForeignAddress), 1);
    }

    #[tokio::test]
    async fn a_port_closes_once_its_only_session_has_its_connection() {
        let base = free_port();
        let ports = PassivePorts::new(Some(base..=base), Gauge::default());
        let a = ports.open(LOCALHOST, same_ip(ip("127.0.0.1"))).unwrap();
        let addr = a.local_addr();
        let _client = TcpStream::connect(addr).await.unwrap();
        let _ = a
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await
            .unwrap();
        // The port is closed now: a late connection is refused by the kernel.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
