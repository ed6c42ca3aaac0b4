//! Reloading without a restart: on SIGHUP, and when the config file or a
//! certificate file changes.
//!
//! One mechanism for everything that can change at run time: the config
//! (users, upstreams, limits, passive settings, log level, xferlog path) and
//! the TLS certificates (re-read on every reload, even when the config itself
//! did not change). A config that fails to load or validate is logged with
//! the offending key and the running config stays.
//!
//! Watches are on parent directories, not files: editors save by writing a
//! new file and renaming it over the old one, and Kubernetes ConfigMaps swap
//! a `..data` symlink; either way a watch on the old inode goes silent.
//! Events are debounced, since one save produces several.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::state::Shared;

/// How long to wait for a burst of file events to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the watcher and the tasks alive; dropping it stops reloading.
pub struct Reloader {
    watcher: Arc<Mutex<Option<RecommendedWatcher>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// The files whose changes trigger a reload, and their directories.
#[derive(Default)]
struct WatchSet {
    names: BTreeSet<OsString>,
    directories: BTreeSet<PathBuf>,
}

impl WatchSet {
    fn new(config_path: Option<&Path>, certificate_files: &[PathBuf]) -> WatchSet {
        let mut set = WatchSet::default();
        for path in config_path
            .into_iter()
            .chain(certificate_files.iter().map(PathBuf::as_path))
        {
            if let Some(name) = path.file_name() {
                set.names.insert(name.to_owned());
            }
            let directory = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            set.directories.insert(directory);
        }
        set
    }

    /// An event is ours when it names one of our files, or a `..`-prefixed
    /// entry (the Kubernetes ConfigMap swap).
    fn concerns(&self, event: &notify::Event) -> bool {
        event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                self.names.contains(name) || name.to_string_lossy().starts_with("..")
            })
        })
    }
}

/// Starts reloading: SIGHUP is handled when this returns. Without a
/// `config_path` (config built in memory), a reload re-applies the running
/// config, which re-reads the certificates.
pub fn spawn(shared: Arc<Shared>, config_path: Option<PathBuf>) -> Reloader {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let watch = Arc::new(Mutex::new(WatchSet::new(
        config_path.as_deref(),
        &shared.certificate_files(),
    )));
    let watcher = Arc::new(Mutex::new(start_watcher(&watch, tx.clone())));
    let mut tasks = Vec::new();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => tasks.push(tokio::spawn(forward_sighup(hangup, tx))),
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP; reloads follow file changes only"),
    }
    #[cfg(not(unix))]
    drop(tx);
    tasks.push(tokio::spawn(run(
        shared,
        config_path,
        rx,
        watch,
        watcher.clone(),
    )));
    Reloader { watcher, tasks }
}

fn start_watcher(
    watch: &Arc<Mutex<WatchSet>>,
    tx: mpsc::UnboundedSender<()>,
) -> Option<RecommendedWatcher> {
    let filter = watch.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        let ours = filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .concerns(&event);
        if ours {
            // notify calls back on its own thread; an unbounded send never blocks.
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            warn!(error = %e, "cannot watch files; reload on SIGHUP only");
            return None;
        }
    };
    for directory in &watch.lock().unwrap_or_else(|e| e.into_inner()).directories {
        watch_directory(&mut watcher, directory);
    }
    Some(watcher)
}

fn watch_directory(watcher: &mut RecommendedWatcher, directory: &Path) {
    if let Err(e) = watcher.watch(directory, RecursiveMode::NonRecursive) {
        warn!(directory = %directory.display(), error = %e, "cannot watch a directory for changes");
    }
}

async fn run(
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<()>,
    watch: Arc<Mutex<WatchSet>>,
    watcher: Arc<Mutex<Option<RecommendedWatcher>>>,
) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        debug!("reloading");
        let loaded = match &config_path {
            Some(path) => crate::config::load(path).map_err(|e| e.to_string()),
            None => Ok((*shared.config()).clone()),
        };
        match loaded {
            Ok(config) => {
                if shared.apply(config).is_ok() {
                    follow_new_files(&shared, config_path.as_deref(), &watch, &watcher);
                }
            }
            Err(error) => shared.reload_failed(error),
        }
    }
}

/// After a reload the certificate files may live elsewhere: watch those too.
fn follow_new_files(
    shared: &Shared,
    config_path: Option<&Path>,
    watch: &Mutex<WatchSet>,
    watcher: &Mutex<Option<RecommendedWatcher>>,
) {
    let updated = WatchSet::new(config_path, &shared.certificate_files());
    let mut current = watch.lock().unwrap_or_else(|e| e.into_inner());
    let new_directories: Vec<PathBuf> = updated
        .directories
        .difference(&current.directories)
        .cloned()
        .collect();
    *current = updated;
    drop(current);
    if let Some(watcher) = watcher.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        for directory in &new_directories {
            info!(directory = %directory.display(), "watching a new directory for reloads");
            watch_directory(watcher, directory);
        }
    }
}

/// Ends when the reloader is dropped (the receiver goes away).
#[cfg(unix)]
async fn forward_sighup(mut hangup: tokio::signal::unix::Signal, tx: mpsc::UnboundedSender<()>) {
    while hangup.recv().await.is_some() {
        info!("SIGHUP: reloading");
        if tx.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str) -> notify::Event {
        notify::Event::new(notify::EventKind::Any).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_our_files_and_configmap_swaps_trigger_a_reload() {
        let set = WatchSet::new(
            Some(Path::new("/etc/ftpbridge/proxy.toml")),
            &[PathBuf::from("/certs/cert.pem")],
        );
        assert!(set.concerns(&event("/etc/ftpbridge/proxy.toml")));
        assert!(set.concerns(&event("/certs/cert.pem")));
        assert!(set.concerns(&event("/etc/ftpbridge/..data")));
        assert!(!set.concerns(&event("/etc/ftpbridge/.proxy.toml.swp")));
        assert_eq!(
            set.directories
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>(),
            vec!["/certs", "/etc/ftpbridge"]
        );
    }
}
