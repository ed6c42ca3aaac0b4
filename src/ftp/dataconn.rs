//! How a transfer gets its data connection: passive (the client connects to
//! us, PASV/EPSV) or active (we connect to the client, PORT/EPRT).
//!
//! Active mode is the FTP bounce vector (RFC 2577 §3): a client could make the
//! server connect anywhere. So an active target must be the control
//! connection's own IP, on a port at or above the listener's minimum, and the
//! connection leaves from the address the client reached us on.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::passive::{Delivered, PendingDataConnection, TlsOffer};
use crate::net::canonical;

/// Why no data connection could be used.
#[derive(Debug, thiserror::Error)]
pub enum DataConnectionError {
    #[error("no data connection within {0:?}")]
    Timeout(Duration),
    /// Connections came, but none from an address (or with a TLS session)
    /// the `data_source` policy accepts.
    #[error("only refused data connections arrived")]
    Refused,
    /// The session waited so long for its transfer command that its port was
    /// given to another session.
    #[error("the passive port was reclaimed before the transfer started")]
    Reclaimed,
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
}

impl DataConnectionError {
    /// The text of the 425 reply.
    pub fn reply_text(&self) -> &'static str {
        match self {
            DataConnectionError::Refused => {
                "Data connection refused: it did not come from an address (or TLS session) allowed for this session."
            }
            DataConnectionError::Reclaimed => "The passive port expired; send PASV or EPSV again.",
            DataConnectionError::Timeout(_) | DataConnectionError::Connect(..) => {
                "Cannot open data connection."
            }
        }
    }
}

/// Where an active data connection goes, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveTarget {
    pub client: SocketAddr,
    /// The local IP of the control connection.
    pub local_ip: IpAddr,
    /// A fixed source port (RFC 959's L-1 convention), or any.
    pub source_port: Option<u16>,
}

/// Why a PORT/EPRT target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceRefusal {
    /// The address is not the control connection's peer (501).
    ForeignAddress,
    /// The port is below the allowed minimum (504).
    LowPort,
}

/// The bounce rules: same IP as the control connection, port not privileged.
pub fn check_active_target(
    target: SocketAddr,
    control_peer: IpAddr,
    min_port: u16,
) -> Result<(), BounceRefusal> {
    if canonical(target.ip()) != canonical(control_peer) {
        return Err(BounceRefusal::ForeignAddress);
    }
    if target.port() < min_port || target.port() == 0 {
        return Err(BounceRefusal::LowPort);
    }
    Ok(())
}

/// The data connection a transfer will use.
pub enum DataSetup {
    Passive(PendingDataConnection),
    Active(ActiveTarget),
}

impl DataSetup {
    /// Waits for (passive) or opens (active) the data connection, within
    /// `timeout`; `offer` says whether the transfer is protected.
    pub async fn connection(
        self,
        timeout: Duration,
        offer: TlsOffer,
    ) -> Result<Delivered, DataConnectionError> {
        match self {
            DataSetup::Passive(pending) => pending.connection(timeout, offer).await,
            DataSetup::Active(target) => match tokio::time::timeout(timeout, connect(target)).await
            {
                Ok(result) => result
                    .map(Delivered::Tcp)
                    .map_err(|e| DataConnectionError::Connect(target.client, e)),
                Err(_) => Err(DataConnectionError::Timeout(timeout)),
            },
        }
    }
}

async fn connect(target: ActiveTarget) -> io::Result<TcpStream> {
    let client = SocketAddr::new(canonical(target.client.ip()), target.client.port());
    let local_ip = canonical(target.local_ip);
    let socket = if client.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A fixed source port is shared by every active connection; distinct
    // peers keep the 4-tuples apart, and reuse lets them coexist.
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    let bind_ip = match (local_ip, client) {
        (IpAddr::V4(ip), SocketAddr::V4(_)) => IpAddr::V4(ip),
        (IpAddr::V6(ip), SocketAddr::V6(_)) => IpAddr::V6(ip),
        // An IPv4 client on a dual-stack listener: let the kernel choose.
        (_, SocketAddr::V4(_)) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    socket.bind(SocketAddr::new(bind_ip, target.source_port.unwrap_or(0)))?;
    let stream = socket.connect(client).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    fn addr(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn the_control_peer_on_a_high_port_is_allowed() {
        assert_eq!(
            check_active_target(addr("192.0.2.10", 50000), PEER, 1024),
            Ok(())
        );
        assert_eq!(
            check_active_target(addr("::ffff:192.0.2.10", 1024), PEER, 1024),
            Ok(())
        );
    }

    #[test]
    fn another_host_is_a_bounce_attempt() {
        assert_eq!(
            check_active_target(addr("198.51.100.1", 50000), PEER, 1024),
            Err(BounceRefusal::ForeignAddress)
        );
    }

    #[test]
    fn privileged_ports_are_refused_unless_allowed() {
        assert_eq!(
            check_active_target(addr("192.0.2.10", 25), PEER, 1024),
            Err(BounceRefusal::LowPort)
        );
        assert_eq!(check_active_target(addr("192.0.2.10", 25), PEER, 1), Ok(()));
        assert_eq!(
            check_active_target(addr("192.0.2.10", 0), PEER, 0),
            Err(BounceRefusal::LowPort)
        );
    }

    #[tokio::test]
    async fn active_connections_reach_the_client_from_the_chosen_source_port() {
        let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source_port = probe.local_addr().unwrap().port();
        drop(probe);
        let target = ActiveTarget {
            client: client.local_addr().unwrap(),
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            source_port: Some(source_port),
        };
        let setup = DataSetup::Active(target);
        let (connected, accepted) = tokio::join!(
            setup.connection(Duration::from_secs(5), TlsOffer::Clear),
            client.accept()
        );
        assert!(matches!(connected, Ok(Delivered::Tcp(_))));
        assert_eq!(accepted.unwrap().1.port(), source_port);
    }

    #[tokio::test]
    async fn a_closed_client_port_is_an_error_not_a_hang() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = ActiveTarget {
            client: closed,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            source_port: None,
        };
        let result = DataSetup::Active(target)
            .connection(Duration::from_secs(5), TlsOffer::Clear)
            .await;
        assert!(
            matches!(result, Err(DataConnectionError::Connect(..))),
            "{result:?}"
        );
    }
}
