//! The wu-ftpd transfer log (xferlog(5)), one line per completed or failed
//! transfer, so the log analysers that read vsftpd's and ProFTPD's xferlog
//! keep working:
//!
//! `current-time transfer-time remote-host file-size filename transfer-type
//! special-action-flag direction access-mode username service-name
//! authentication-method authenticated-user-id completion-status`
//!
//! Times are UTC. A file name's whitespace and control characters become `_`
//! so that every line splits into exactly these fields. Lines go through a
//! bounded channel to a writer task: a slow disk loses lines (counted), it
//! never blocks a session. The file is reopened on reload, which is what log
//! rotation needs (`postrotate: kill -HUP`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RETR: 'o'.
    Outgoing,
    /// STOR, APPE, STOU: 'i'.
    Incoming,
}

/// One finished transfer.
#[derive(Debug, Clone)]
pub struct TransferRecord {
    pub finished: DateTime<Utc>,
    pub duration: Duration,
    pub remote: IpAddr,
    pub bytes: u64,
    pub path: Vec<u8>,
    pub ascii: bool,
    pub direction: Direction,
    pub user: String,
    pub complete: bool,
}

fn field(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    if text.is_empty() {
        return "_".to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The xferlog line for `record`, without the line end.
pub fn format_line(record: &TransferRecord) -> String {
    // Whole seconds, at least 1: analysers divide bytes by this.
    let seconds = record.duration.as_secs_f64().round().max(1.0) as u64;
    format!(
        "{} {} {} {} {} {} _ {} r {} ftp 0 * {}",
        record.finished.format("%a %b %e %H:%M:%S %Y"),
        seconds,
        record.remote,
        record.bytes,
        field(&record.path),
        if record.ascii { 'a' } else { 'b' },
        match record.direction {
            Direction::Outgoing => 'o',
            Direction::Incoming => 'i',
        },
        field(record.user.as_bytes()),
        if record.complete { 'c' } else { 'i' },
    )
}

enum Message {
    Line(String),
    Reopen(Option<PathBuf>),
}

/// Sends records to the writer task; cheap to clone.
#[derive(Clone)]
pub struct XferLog {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl XferLog {
    /// Starts the writer; with `None` records are discarded until a reload
    /// names a file.
    pub fn start(path: Option<PathBuf>) -> XferLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(rx, path));
        XferLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn record(&self, record: &TransferRecord) {
        if self
            .tx
            .try_send(Message::Line(format_line(record)))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes the file and opens `path` (after a reload or a log rotation).
    pub fn reopen(&self, path: Option<PathBuf>) {
        if self.tx.try_send(Message::Reopen(path)).is_err() {
            warn!("xferlog writer is saturated; reopen request dropped");
        }
    }

    /// Lines lost because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn open(path: &PathBuf) -> Option<tokio::fs::File> {
    match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        Ok(file) => Some(file),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open the xferlog");
            None
        }
    }
}

async fn write_loop(mut rx: mpsc::Receiver<Message>, path: Option<PathBuf>) {
    let mut file = match &path {
        Some(path) => open(path).await,
        None => None,
    };
    while let Some(message) = rx.recv().await {
        match message {
            Message::Line(mut line) => {
                if let Some(out) = file.as_mut() {
                    line.push('\n');
                    if let Err(e) = out.write_all(line.as_bytes()).await {
                        warn!(error = %e, "cannot write to the xferlog");
                    }
                }
            }
            Message::Reopen(path) => {
                if let Some(mut old) = file.take() {
                    let _ = old.flush().await;
                }
                file = match &path {
                    Some(path) => open(path).await,
                    None => None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record() -> TransferRecord {
        TransferRecord {
            finished: Utc.with_ymd_and_hms(2026, 11, 1, 7, 46, 34).unwrap(),
            duration: Duration::from_millis(2600),
            remote: "192.0.2.7".parse().unwrap(),
            bytes: 3_000_000,
            path: b"/in/report 2026.csv".to_vec(),
            ascii: false,
            direction: Direction::Incoming,
            user: "alice".into(),
            complete: true,
        }
    }

    #[test]
    fn a_line_has_the_fourteen_xferlog_fields() {
        let line = format_line(&record());
        assert_eq!(
            line,
            "Sun Nov  1 07:46:34 2026 3 192.0.2.7 3000000 /in/report_2026.csv b _ i r alice ftp 0 * c"
        );
        // ctime's date has 5 space-separated parts; the rest are 13 fields.
        assert_eq!(line.split_whitespace().count(), 5 + 13);
    }

    #[test]
    fn failed_downloads_in_ascii_mode_are_marked() {
        let mut record = record();
        record.direction = Direction::Outgoing;
        record.ascii = true;
        record.complete = false;
        record.duration = Duration::from_millis(10);
        let line = format_line(&record);
        assert!(
            line.contains(" 1 192.0.2.7 "),
            "at least one second: {line}"
        );
        assert!(line.ends_with(" a _ o r alice ftp 0 * i"), "{line}");
    }

    #[test]
    fn odd_bytes_in_names_cannot_split_the_line() {
        let mut record = record();
        record.path = b"/a\tb\nc\xff".to_vec();
        let line = format_line(&record);
        assert!(line.contains(" /a_b_c\u{fffd} "), "{line}");
        assert!(!line.contains('\n'));
    }

    #[tokio::test]
    async fn records_reach_the_file_and_reopen_switches_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("xferlog");
        let second = dir.path().join("xferlog.new");
        let log = XferLog::start(Some(first.clone()));
        log.record(&record());
        log.reopen(Some(second.clone()));
        log.record(&record());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let a = std::fs::read_to_string(&first).unwrap_or_default();
            let b = std::fs::read_to_string(&second).unwrap_or_default();
            if a.lines().count() == 1 && b.lines().count() == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lines never arrived: {a:?} {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log.dropped(), 0);
    }
}
