//! Per-control-connection TLS configuration and the resumption proof.
//!
//! Each control connection gets a clone of the listener's `ServerConfig`
//! (cheap: its fields are `Arc`s) with a session cache of its own, used for
//! the control handshake and all of that session's data connections. A data
//! connection whose handshake is `Resumed` therefore resumed a session that
//! was issued on this control connection: its client holds that session's
//! secret. A client with no session gets a full handshake (measured on TLS
//! 1.2 and 1.3, crates.md §6). Tickets stay disabled (rustls's default
//! `NeverProducesTickets`), so every resumption goes through this cache.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::server::StoresServerSessions;

/// Sessions kept per control connection: the control handshake's plus those
/// issued on its data connections.
const SESSIONS_PER_CONTROL_CONNECTION: usize = 32;

/// TLS 1.3 tickets issued by the control handshake. Some clients (rustls)
/// use each ticket once and keep at most 8 per server
/// (`MAX_TLS13_TICKETS_PER_SERVER`), so this fills their cache.
const CONTROL_TICKETS: usize = 8;
/// Tickets issued by each download/listing data connection: one replaces
/// the ticket the connection used, one more tops the client up.
const DOWNLOAD_TICKETS: usize = 2;

/// The TLS configs of one control connection; all share its private session
/// cache, and differ only in how many TLS 1.3 tickets they issue.
#[derive(Clone)]
pub struct SessionTls {
    /// For the control connection.
    pub control: Arc<ServerConfig>,
    /// For data connections the client reads (downloads, listings): it
    /// processes the tickets sent there and can resume again next time.
    pub download: Arc<ServerConfig>,
    /// For upload data connections, which issue no tickets: the client never
    /// reads that connection, and a socket closed with unread data (the
    /// tickets) ends in a TCP reset instead of a FIN, which can lose the end of
    /// the upload (seen with lftp/GnuTLS: uploads failed at random).
    pub upload: Arc<ServerConfig>,
}

pub fn session_configs(base: &ServerConfig) -> SessionTls {
    let storage: Arc<dyn rustls::server::StoresServerSessions> =
        Arc::new(SessionCache::new(SESSIONS_PER_CONTROL_CONNECTION));
    let with_tickets = |tickets: usize| {
        let mut config = base.clone();
        config.session_storage = storage.clone();
        config.send_tls13_tickets = tickets;
        Arc::new(config)
    };
    SessionTls {
        control: with_tickets(CONTROL_TICKETS),
        download: with_tickets(DOWNLOAD_TICKETS),
        upload: with_tickets(0),
    }
}

/// A small session store that lets a client resume the same session more
/// than once. rustls's own cache treats TLS 1.3 sessions as single-use
/// (`take`), but FTP clients resume the control connection's session for
/// every data connection, often more times than sessions were issued; libunftp
/// keeps FileZilla working the same way (its `tls.rs` maps `take` to `get`).
/// The scope stays one control connection, so nothing crosses sessions.
pub struct SessionCache {
    capacity: usize,
    entries: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        SessionCache {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Vec<u8>, Vec<u8>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut entries = self.lock();
        entries.retain(|(k, _)| *k != key);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_can_be_resumed_more_than_once() {
        let cache = SessionCache::new(2);
        assert!(cache.put(b"a".to_vec(), b"1".to_vec()));
        assert_eq!(cache.take(b"a"), Some(b"1".to_vec()));
        assert_eq!(cache.take(b"a"), Some(b"1".to_vec()));
    }

    #[test]
    fn the_oldest_session_is_evicted_at_capacity() {
        let cache = SessionCache::new(2);
        cache.put(b"a".to_vec(), b"1".to_vec());
        cache.put(b"b".to_vec(), b"2".to_vec());
        cache.put(b"c".to_vec(), b"3".to_vec());
        assert_eq!(cache.get(b"a"), None);
        assert_eq!(cache.get(b"c"), Some(b"3".to_vec()));
    }

    #[test]
    fn putting_a_key_again_replaces_it() {
        let cache = SessionCache::new(2);
        cache.put(b"a".to_vec(), b"1".to_vec());
        cache.put(b"a".to_vec(), b"2".to_vec());
        cache.put(b"b".to_vec(), b"3".to_vec());
        assert_eq!(cache.get(b"a"), Some(b"2".to_vec()));
    }
}
