//! Certificate rotation without a restart: on SIGHUP, and when the
//! certificate or key files change.
//!
//! The watch is on the files' parent directories, not the files: editors save
//! by writing a new file and renaming it over the old one, and Kubernetes
//! swaps a `..data` symlink, and in both cases a watch on the old file's inode
//! would go silent. Events are debounced, since one save produces several.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::CertStore;

/// How long to wait for a burst of file events to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the watcher and the signal task alive; dropping it stops both.
pub struct CertReloader {
    _watcher: Option<RecommendedWatcher>,
    task: JoinHandle<()>,
}

impl Drop for CertReloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading `stores` on SIGHUP and on changes next to their files.
/// The SIGHUP handler is in place when this returns.
pub fn spawn(stores: Vec<Arc<CertStore>>) -> CertReloader {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let watcher = watch_directories(&stores, tx.clone());
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => {
            tokio::spawn(forward_sighup(hangup, tx));
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP"),
    }
    #[cfg(not(unix))]
    drop(tx);
    let task = tokio::spawn(run(stores, rx));
    CertReloader {
        _watcher: watcher,
        task,
    }
}

fn watch_directories(
    stores: &[Arc<CertStore>],
    tx: mpsc::UnboundedSender<()>,
) -> Option<RecommendedWatcher> {
    let directories: BTreeSet<PathBuf> = stores
        .iter()
        .flat_map(|store| store.paths())
        .filter_map(|path| {
            path.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
        })
        .collect();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
            {
                // notify calls back on its own thread; a send never blocks.
                let _ = tx.send(());
            }
        }) {
            Ok(watcher) => watcher,
            Err(e) => {
                warn!(error = %e, "cannot watch certificate files; reload on SIGHUP only");
                return None;
            }
        };
    for directory in &directories {
        if let Err(e) = watcher.watch(directory, RecursiveMode::NonRecursive) {
            warn!(directory = %directory.display(), error = %e, "cannot watch a certificate directory");
        }
    }
    Some(watcher)
}

async fn run(stores: Vec<Arc<CertStore>>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        // Let the burst settle, then reload once.
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        debug!(stores = stores.len(), "reloading TLS certificates");
        for store in &stores {
            let _ = store.reload();
        }
    }
}

/// Ends when the reloader is dropped (the receiver goes away).
#[cfg(unix)]
async fn forward_sighup(mut hangup: tokio::signal::unix::Signal, tx: mpsc::UnboundedSender<()>) {
    while hangup.recv().await.is_some() {
        if tx.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_reloads_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path());
        let store =
            CertStore::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        let original = store.current().cert[0].clone();
        // New files before the reloader starts: no file event will announce them.
        write_pair(dir.path());
        let _reloader = spawn(vec![store.clone()]);
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.current().cert[0] == original {
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIGHUP did not reload the certificate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
