//! The PROXY protocol, versions 1 (text) and 2 (binary), as sent by HAProxy,
//! AWS NLB, Azure/GCP load balancers and Kubernetes ingress proxies in front
//! of a TCP service (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! A load balancer that terminates the client's TCP connection and opens
//! its own to us prepends one header naming the client's address. We honour
//! it only from `trusted_proxies`: from anyone else a header would let a
//! client pick the IP our data-connection policy and logs believe. From a
//! trusted proxy the header is mandatory (spec §2: a receiver "must not try
//! to guess whether the protocol header is present or not"), and it is read
//! with `peek` and then consumed to its exact length, so the FTP bytes that
//! may follow it in the same segment stay in the socket for the session.
//!
//! Parsing (`parse`) is pure; `read_origin` does the I/O.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Addresses as V2Addresses, Command as V2Command, Protocol as V2Protocol};
use ppp::{HeaderResult, PartialResult, v1};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::cidr::{Cidr, any_contains};

/// The longest header accepted: the v2 fixed part plus the largest length
/// its 16-bit field can announce (v1 headers are at most 107 bytes).
pub const MAX_HEADER: usize = 16 + u16::MAX as usize;
/// First peek size; real headers (v1, or v2 with a few TLVs) fit in it.
const FIRST_PEEK: usize = 256;
/// Pause between peeks while a header is still incomplete (it nearly always
/// arrives in one segment, so this rarely runs).
const PEEK_BACKOFF: Duration = Duration::from_millis(5);

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; `addresses` is `(source, destination)`,
    /// or `None` for a connection of the proxy's own (v2 `LOCAL`, v1
    /// `UNKNOWN`, or an address family other than TCP over IPv4/IPv6).
    Complete {
        len: usize,
        addresses: Option<(SocketAddr, SocketAddr)>,
    },
    /// A prefix of a header: read more.
    Incomplete,
    /// Not a PROXY header.
    Invalid(String),
}

/// Parses a header at the start of `bytes` (v2 first, then v1).
pub fn parse(bytes: &[u8]) -> Parsed {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return if bytes.len() >= MAX_HEADER {
            Parsed::Invalid(format!("no complete header in {MAX_HEADER} bytes"))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let addresses = match header.addresses {
                v1::Addresses::Tcp4(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Tcp6(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Unknown => None,
            };
            Parsed::Complete {
                len: header.header.len(),
                addresses,
            }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("PROXY v1: {e}")),
        HeaderResult::V2(Ok(header)) => {
            if header.protocol == V2Protocol::Datagram {
                return Parsed::Invalid("PROXY v2 header for a UDP connection".into());
            }
            let addresses = match (header.command, header.addresses) {
                (V2Command::Local, _) => None,
                (V2Command::Proxy, V2Addresses::IPv4(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (V2Command::Proxy, V2Addresses::IPv6(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                // Spec §2.2: unspecified or UNIX addresses mean "use the
                // connection's own addresses".
                (V2Command::Proxy, V2Addresses::Unspecified | V2Addresses::Unix(_)) => None,
            };
            Parsed::Complete {
                len: header.len(),
                addresses,
            }
        }
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("PROXY v2: {e}")),
    }
}

/// Where a connection really comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No header expected: PROXY protocol is off, or the peer is not a
    /// trusted proxy.
    Direct(SocketAddr),
    /// Relayed by `proxy` for `client`, who connected to `destination`.
    Proxied {
        client: SocketAddr,
        destination: SocketAddr,
        proxy: SocketAddr,
    },
    /// The trusted proxy's own connection (`LOCAL`): a health check.
    Local(SocketAddr),
}

impl Origin {
    /// The client's address: the one data policies, limits and logs use.
    pub fn client(&self) -> SocketAddr {
        match *self {
            Origin::Direct(peer) | Origin::Local(peer) => peer,
            Origin::Proxied { client, .. } => client,
        }
    }

    /// The address the client connected to, when a proxy said so.
    pub fn destination(&self) -> Option<SocketAddr> {
        match *self {
            Origin::Proxied { destination, .. } => Some(destination),
            _ => None,
        }
    }

    /// The load balancer the connection came through.
    pub fn proxy(&self) -> Option<SocketAddr> {
        match *self {
            Origin::Proxied { proxy, .. } | Origin::Local(proxy) => Some(proxy),
            Origin::Direct(_) => None,
        }
    }
}

/// Why a connection from a trusted proxy was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Where `stream` (accepted from `peer`) comes from. From a peer in
/// `trusted`, reads the PROXY header (within `timeout`) and consumes exactly
/// its bytes; from anyone else reads nothing.
pub async fn read_origin(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[Cidr],
    timeout: Duration,
) -> Result<Origin, HeaderError> {
    if !any_contains(trusted, peer.ip()) {
        return Ok(Origin::Direct(peer));
    }
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; FIRST_PEEK];
    let mut backoff = PEEK_BACKOFF;
    loop {
        let n = within(deadline, timeout, stream.peek(&mut buf)).await??;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        match parse(&buf[..n]) {
            Parsed::Complete { len, addresses } => {
                let mut header = vec![0u8; len];
                within(deadline, timeout, stream.read_exact(&mut header)).await??;
                return Ok(match addresses {
                    Some((client, destination)) => Origin::Proxied {
                        client,
                        destination,
                        proxy: peer,
                    },
                    None => Origin::Local(peer),
                });
            }
            Parsed::Invalid(why) => return Err(HeaderError::Invalid(why)),
            Parsed::Incomplete if n == buf.len() => {
                // The buffer is full and still holds only part of a header.
                let grown = (buf.len() * 2).min(MAX_HEADER);
                buf.resize(grown, 0);
            }
            Parsed::Incomplete => {
                // The rest has not arrived yet; peek returns at once while
                // any byte is buffered, so wait a little before looking again.
                within(deadline, timeout, tokio::time::sleep(backoff)).await?;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Runs `future` until `deadline`, the end of the header's time budget.
async fn within<T>(
    deadline: Instant,
    budget: Duration,
    future: impl Future<Output = T>,
) -> Result<T, HeaderError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| HeaderError::Timeout(budget))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn v2(command: Command, src: &str, dst: &str) -> Vec<u8> {
        Builder::with_addresses(
            Version::Two | command,
            Protocol::Stream,
            (addr(src), addr(dst)),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn a_v1_header_gives_its_length_and_addresses() {
        let bytes = b"PROXY TCP4 203.0.113.9 10.0.0.5 40000 21\r\nUSER alice\r\n";
        assert_eq!(
            parse(bytes),
            Parsed::Complete {
                len: 42,
                addresses: Some((addr("203.0.113.9:40000"), addr("10.0.0.5:21")))
            }
        );
    }

    #[test]
    fn a_v1_ipv6_header_is_understood() {
        let bytes = b"PROXY TCP6 2001:db8::9 2001:db8::1 40000 21\r\n";
        let Parsed::Complete { addresses, .. } = parse(bytes) else {
            panic!("complete");
        };
        assert_eq!(addresses.unwrap().0, addr("[2001:db8::9]:40000"));
    }

    #[test]
    fn v1_unknown_means_the_connection_s_own_addresses() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                len: 15,
                addresses: None
            }
        );
    }

    #[test]
    fn a_v2_header_gives_its_length_and_addresses() {
        let mut bytes = v2(Command::Proxy, "198.51.100.7:5000", "10.0.0.5:50001");
        let len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01 TLS follows");
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                len,
                addresses: Some((addr("198.51.100.7:5000"), addr("10.0.0.5:50001")))
            }
        );
    }

    #[test]
    fn v2_local_is_a_health_check_without_addresses() {
        let bytes = v2(Command::Local, "127.0.0.1:1", "127.0.0.1:2");
        assert!(matches!(
            parse(&bytes),
            Parsed::Complete {
                addresses: None,
                ..
            }
        ));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let full = v2(Command::Proxy, "198.51.100.7:5000", "10.0.0.5:21");
        for cut in [0, 1, 12, 15, 16, full.len() - 1] {
            assert_eq!(parse(&full[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        assert_eq!(parse(b"PROXY TCP4 203.0.1"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
    }

    #[test]
    fn ftp_commands_and_garbage_are_not_headers() {
        assert!(matches!(parse(b"USER alice\r\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 10.0.0.5 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        let long = [b'A'; 200];
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn a_v1_line_without_its_end_is_refused_past_107_bytes() {
        let mut line = b"PROXY TCP4 ".to_vec();
        line.extend(std::iter::repeat_n(b'1', 120));
        assert!(matches!(parse(&line), Parsed::Invalid(_)));
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn loopback() -> Vec<Cidr> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[tokio::test]
    async fn the_header_is_consumed_and_what_follows_stays_unread() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        let mut bytes = v2(Command::Proxy, "198.51.100.7:5000", "10.0.0.5:21");
        bytes.extend_from_slice(b"USER alice\r\n");
        client.write_all(&bytes).await.unwrap();
        let origin = read_origin(&mut server, peer, &loopback(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(origin.client(), addr("198.51.100.7:5000"));
        assert_eq!(origin.destination(), Some(addr("10.0.0.5:21")));
        assert_eq!(origin.proxy(), Some(peer));
        let mut rest = [0u8; 12];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"USER alice\r\n");
    }

    #[tokio::test]
    async fn a_header_split_over_several_segments_is_read_whole() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        let writer = tokio::spawn(async move {
            for part in [
                &b"PROXY TCP4 203.0"[..],
                b".113.9 10.0.0.5 4",
                b"0000 21\r\nNOOP\r\n",
            ] {
                client.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            client
        });
        let origin = read_origin(&mut server, peer, &loopback(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(origin.client(), addr("203.0.113.9:40000"));
        let _client = writer.await.unwrap();
        let mut rest = [0u8; 6];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"NOOP\r\n");
    }

    #[tokio::test]
    async fn a_large_v2_header_with_tlvs_is_read_whole() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        let mut header = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (addr("198.51.100.7:5000"), addr("10.0.0.5:21")),
        )
        .write_tlv(ppp::v2::Type::NoOp, &[7u8; 1000])
        .unwrap()
        .build()
        .unwrap();
        let len = header.len();
        header.extend_from_slice(b"X");
        client.write_all(&header).await.unwrap();
        let origin = read_origin(&mut server, peer, &loopback(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(origin.client(), addr("198.51.100.7:5000"));
        assert!(len > FIRST_PEEK);
        let mut rest = [0u8; 1];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"X");
    }

    #[tokio::test]
    async fn untrusted_peers_are_taken_as_they_are_and_nothing_is_read() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        client
            .write_all(b"PROXY TCP4 203.0.113.9 10.0.0.5 40000 21\r\n")
            .await
            .unwrap();
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let origin = read_origin(&mut server, peer, &trusted, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(origin, Origin::Direct(peer));
        let mut first = [0u8; 5];
        server.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"PROXY", "the bytes are left for the FTP session");
    }

    #[tokio::test]
    async fn a_trusted_peer_that_sends_nothing_times_out() {
        let (_client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        let result = read_origin(&mut server, peer, &loopback(), Duration::from_millis(200)).await;
        assert!(matches!(result, Err(HeaderError::Timeout(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_trusted_peer_that_sends_ftp_instead_is_refused() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        client.write_all(b"USER alice\r\n").await.unwrap();
        let result = read_origin(&mut server, peer, &loopback(), Duration::from_secs(5)).await;
        assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_local_header_is_the_proxy_s_own_connection() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        client
            .write_all(&v2(Command::Local, "127.0.0.1:1", "127.0.0.1:2"))
            .await
            .unwrap();
        let origin = read_origin(&mut server, peer, &loopback(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(origin, Origin::Local(peer));
        assert_eq!(origin.client(), peer);
    }

    #[tokio::test]
    async fn a_close_before_the_header_ends_is_reported() {
        let (mut client, mut server) = pair().await;
        let peer = server.peer_addr().unwrap();
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(client);
        let result = read_origin(&mut server, peer, &loopback(), Duration::from_millis(500)).await;
        // The peeked prefix stays buffered, so this ends in the timeout
        // unless the close is seen; either way no session starts.
        assert!(result.is_err(), "{result:?}");
    }
}
