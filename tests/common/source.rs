//! Client-side helpers for data-connection source tests: connections from a
//! chosen loopback address (Linux answers on all of 127.0.0.0/8, so one host
//! can play several clients, or a client and an intruder) and the ports
//! that PASV/EPSV replies announce.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use super::proxy::TEST_TIMEOUT;
use super::raw::RawReply;

/// Connects to `to` from the local address `from`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    tokio::time::timeout(TEST_TIMEOUT, socket.connect(to))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"))
}

/// `127.0.0.<n>`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The port of a `229 Entering Extended Passive Mode (|||port|)` reply.
pub fn epsv_port(reply: &RawReply) -> u16 {
    assert_eq!(reply.code, 229, "{reply:?}");
    reply
        .text
        .split("|||")
        .nth(1)
        .and_then(|rest| rest.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {reply:?}"))
}

/// The address of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
pub fn pasv_addr(reply: &RawReply) -> SocketAddr {
    assert_eq!(reply.code, 227, "{reply:?}");
    let inner = reply
        .text
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no address in {reply:?}"));
    let n: Vec<u16> = inner
        .split(',')
        .map(|p| p.trim().parse().expect("number"))
        .collect();
    assert_eq!(n.len(), 6, "{reply:?}");
    let ip = Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
    SocketAddr::new(IpAddr::V4(ip), n[4] * 256 + n[5])
}
