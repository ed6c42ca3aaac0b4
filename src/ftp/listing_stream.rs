//! The body of a LIST, NLST or MLSD: lines formatted batch by batch as the
//! upstream delivers entries, so a large directory is passed on while it is
//! still being read and never held whole in memory.
//!
//! Scripts compare listings and people read them, so directories of up to
//! [`SORTED_UP_TO`] entries are gathered and sent sorted by name (as vsftpd
//! and `ls` do); past that the gathered entries go out sorted and the rest
//! follow in the server's order as they arrive, memory staying bounded.

use async_trait::async_trait;
use bytes::Bytes;

use super::data::ListingKind;
use super::files::{Listing, ListingShape};
use super::listing::{self, Facts};
use crate::upstream::{DirEntry, ListStream, ReadStream, RemotePath, Result};

/// Entries gathered and sorted before the first byte is sent (~1–2 MiB of
/// entries at most).
pub(super) const SORTED_UP_TO: usize = 10_000;

/// A listing as a byte stream for the data connection.
pub(super) struct ListingBody {
    kind: ListingKind,
    shape: ListingShape,
    directory: RemotePath,
    client_prefix: Vec<u8>,
    /// NLST of a single file shows the name as the client wrote it.
    file_name: Vec<u8>,
    facts: Facts,
    now: i64,
    /// Entries known up front (a file, or a pattern's matches).
    ready: Option<Vec<DirEntry>>,
    stream: Option<Box<dyn ListStream>>,
    /// Past [`SORTED_UP_TO`]: batches go out as they come.
    streaming: bool,
}

impl ListingBody {
    pub fn new(listing: Listing, kind: ListingKind, facts: Facts) -> Self {
        ListingBody {
            kind,
            shape: listing.shape,
            file_name: listing.path.file_name().unwrap_or_default().to_vec(),
            directory: listing.directory,
            client_prefix: listing.client_prefix,
            facts,
            now: chrono::Utc::now().timestamp(),
            ready: Some(listing.entries).filter(|entries| !entries.is_empty()),
            stream: listing.stream,
            streaming: false,
        }
    }

    fn format(&self, entries: &[DirEntry]) -> Bytes {
        let mut body = Vec::with_capacity(entries.len() * 80);
        for entry in entries {
            match self.kind {
                ListingKind::List => body.extend_from_slice(&listing::list_line(
                    &entry.name,
                    &entry.metadata,
                    self.now,
                )),
                ListingKind::Names => {
                    let mut name = self.client_prefix.clone();
                    if self.shape != ListingShape::File {
                        name.extend_from_slice(&entry.name);
                    } else {
                        name.extend_from_slice(&self.file_name);
                    }
                    body.extend_from_slice(&listing::name_line(&name))
                }
                ListingKind::Machine => {
                    let unique = listing::unique_id(self.directory.join(&entry.name).as_bytes());
                    body.extend_from_slice(&listing::mlsx_facts(
                        &entry.name,
                        &entry.metadata,
                        unique,
                        self.facts,
                    ));
                    body.extend_from_slice(b"\r\n");
                }
            }
        }
        Bytes::from(body)
    }
}

#[async_trait]
impl ReadStream for ListingBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(entries) = self.ready.take() {
            return Ok(Some(self.format(&entries)));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        if self.streaming {
            return match stream.next_batch().await? {
                Some(batch) => Ok(Some(self.format(&batch))),
                None => Ok(None),
            };
        }
        let mut gathered = Vec::new();
        while gathered.len() < SORTED_UP_TO {
            match stream.next_batch().await? {
                Some(batch) => gathered.extend(batch),
                None => break,
            }
        }
        self.streaming = true;
        if gathered.is_empty() {
            return Ok(None);
        }
        gathered.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(self.format(&gathered)))
    }

    async fn close(self: Box<Self>) {
        if let Some(stream) = self.stream {
            stream.close().await;
        }
    }
}
