//! Passive data connections (RFC 959 PASV, RFC 2428 EPSV).
//!
//! PASV/EPSV binds one listening socket from the listener's port range and
//! accepts exactly one data connection on it. The connection must come from
//! the control connection's IP: anything else is closed at once, logged with
//! both addresses, and does not take the slot, so a port scanner cannot
//! steal a client's transfer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use prometheus_client::metrics::counter::Counter;

use super::dataconn::DataConnectionError;

/// The passive ports of one FTP listener, shared by its sessions.
#[derive(Debug)]
pub struct PassivePorts {
    range: Option<RangeInclusive<u16>>,
}

impl PassivePorts {
    pub fn new(range: Option<RangeInclusive<u16>>) -> Self {
        PassivePorts { range }
    }

    /// Binds a listening socket on `ip` with a free port from the range,
    /// starting at a random port so that ports are not predictable.
    pub async fn bind(&self, ip: IpAddr) -> io::Result<TcpListener> {
        let Some(range) = &self.range else {
            return TcpListener::bind(SocketAddr::new(ip, 0)).await;
        };
        let (low, high) = (*range.start(), *range.end());
        let span = u32::from(high - low) + 1;
        let start = rand::random::<u32>() % span;
        for step in 0..span {
            let port = low + ((start + step) % span) as u16;
            match TcpListener::bind(SocketAddr::new(ip, port)).await {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("every passive port in {low}-{high} is in use"),
        ))
    }
}

/// A passive port waiting for its one data connection.
pub struct PendingDataConnection {
    local: SocketAddr,
    accepted: oneshot::Receiver<io::Result<TcpStream>>,
    task: JoinHandle<()>,
}

impl PendingDataConnection {
    /// Starts accepting on `listener`; only `expected_peer` may connect.
    /// Each connection refused for coming from elsewhere counts in `refused`.
    pub fn start(
        listener: TcpListener,
        expected_peer: IpAddr,
        refused: Counter,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = oneshot::channel();
        let task = tokio::spawn(accept_one(listener, canonical(expected_peer), tx, refused));
        Ok(PendingDataConnection {
            local,
            accepted,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the data connection for at most `timeout`.
    pub async fn connection(mut self, timeout: Duration) -> Result<TcpStream, DataConnectionError> {
        match tokio::time::timeout(timeout, &mut self.accepted).await {
            Ok(Ok(Ok(stream))) => Ok(stream),
            Ok(Ok(Err(e))) => Err(DataConnectionError::Listener(e)),
            Ok(Err(_)) => Err(DataConnectionError::Listener(io::Error::other(
                "passive listener stopped",
            ))),
            Err(_) => Err(DataConnectionError::Timeout(timeout)),
        }
    }
}

impl Drop for PendingDataConnection {
    fn drop(&mut self) {
        // Closing the listening socket releases the port at once.
        self.task.abort();
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

async fn accept_one(
    listener: TcpListener,
    expected_peer: IpAddr,
    tx: oneshot::Sender<io::Result<TcpStream>>,
    refused: Counter,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) if canonical(peer.ip()) == expected_peer => {
                let _ = stream.set_nodelay(true);
                debug!(%peer, "data connection accepted");
                let _ = tx.send(Ok(stream));
                return;
            }
            Ok((stream, peer)) => {
                warn!(
                    data_peer = %peer,
                    control_peer = %expected_peer,
                    "refused a data connection from a different IP than the control connection"
                );
                refused.inc();
                drop(stream);
            }
            Err(e) if is_transient_accept_error(&e) => {
                debug!(error = %e, "transient accept error on a passive port");
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Errors about one aborted incoming connection, not about the socket.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_connection_from_the_control_peer_is_handed_over() {
        let ports = PassivePorts::new(None);
        let pending = PendingDataConnection::start(
            ports.bind(LOCALHOST).await.unwrap(),
            LOCALHOST,
            Counter::default(),
        )
        .unwrap();
        let addr = pending.local_addr();
        let client = TcpStream::connect(addr).await.unwrap();
        let server_side = pending.connection(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            server_side.peer_addr().unwrap(),
            client.local_addr().unwrap()
        );
    }

    #[tokio::test]
    async fn a_connection_from_another_ip_is_refused_and_the_slot_stays_open() {
        let ports = PassivePorts::new(None);
        // Expect a peer that loopback connections never come from.
        let expected = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let refused: Counter = Counter::default();
        let pending = PendingDataConnection::start(
            ports.bind(LOCALHOST).await.unwrap(),
            expected,
            refused.clone(),
        )
        .unwrap();
        let _intruder = TcpStream::connect(pending.local_addr()).await.unwrap();
        let result = pending.connection(Duration::from_millis(300)).await;
        assert!(matches!(result, Err(DataConnectionError::Timeout(_))));
        assert_eq!(refused.get(), 1, "the refusal is counted");
    }

    #[tokio::test]
    async fn ports_come_from_the_configured_range() {
        let probe = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let ports = PassivePorts::new(Some(base..=base));
        let listener = ports.bind(LOCALHOST).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().port(), base);
        // The only port is taken: the pool reports exhaustion, not a random port.
        let err = ports.bind(LOCALHOST).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), LOCALHOST);
    }
}
