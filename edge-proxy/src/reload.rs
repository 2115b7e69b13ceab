//! What sets off a reload: SIGHUP, and a change to the config file or any file its clusters
//! are built from (kubeconfigs, token and CA files: credential rotation).
//!
//! Files are watched through their folders, not themselves: an editor saves by writing a new
//! file and renaming it over the old one, and Kubernetes updates a mounted ConfigMap or Secret
//! by swapping the folder's `..data` symlink; a watch on the old file would see neither. Bursts
//! (an editor's several writes, a swap's several renames) are debounced into one reload, and
//! the set of watched folders follows the configuration after every reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::live::Live;

/// How long the files must stay quiet before a reload: long enough for an editor's save or a
/// ConfigMap's swap to finish, short enough to feel immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Reloads `live` on SIGHUP and on changes to its files until `shutdown`.
pub async fn run(live: Arc<Live>, shutdown: CancellationToken) {
    // A trigger is a wake-up, not a message: one pending is as good as many.
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloads follow file changes only");
            None
        }
    };
    let mut files = Files::new(wake.clone());
    files.follow(&live.watched_files());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = woken.recv() => {}
            Some(()) = recv_signal(&mut hangup) => tracing::info!("SIGHUP: reloading the configuration"),
        }
        // Debounce: reload once the files have been quiet for a moment.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = woken.recv() => continue,
                _ = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = live.reload() => {}
        }
        files.follow(&live.watched_files());
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The folder watches, and which names in them matter.
struct Files {
    watcher: Option<notify::RecommendedWatcher>,
    folders: BTreeSet<PathBuf>,
    names: Arc<std::sync::Mutex<BTreeSet<PathBuf>>>,
}

impl Files {
    fn new(wake: mpsc::Sender<()>) -> Files {
        let names: Arc<std::sync::Mutex<BTreeSet<PathBuf>>> = Arc::default();
        let watched = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading a file is not changing it (the proxy reads them on every reload).
            if matches!(event.kind, EventKind::Access(notify::event::AccessKind::Open(_) | notify::event::AccessKind::Read | notify::event::AccessKind::Close(notify::event::AccessMode::Read))) {
                return;
            }
            let watched = watched.lock().unwrap_or_else(|p| p.into_inner());
            if event.paths.iter().any(|path| watched.contains(path) || is_atomic_writer_entry(path)) {
                let _ = wake.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; reloads follow SIGHUP only");
                None
            }
        };
        Files { watcher, folders: BTreeSet::new(), names }
    }

    /// Watches the folders of `files` (and no others).
    fn follow(&mut self, files: &[PathBuf]) {
        let Some(watcher) = &mut self.watcher else { return };
        // Absolute (symlinks left as they are: a ConfigMap's file is one), so that the paths of
        // events, which are the watched folder's joined with a name, compare equal.
        let files: Vec<PathBuf> = files.iter().filter_map(|f| std::path::absolute(f).ok()).collect();
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = files.iter().cloned().collect();
        let folders: BTreeSet<PathBuf> = files.iter().filter_map(|f| f.parent()).map(Path::to_path_buf).collect();
        for gone in self.folders.difference(&folders) {
            let _ = watcher.unwatch(gone);
        }
        for folder in folders.difference(&self.folders) {
            if let Err(error) = watcher.watch(folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), %error, "cannot watch a folder of the configuration; its changes need SIGHUP");
            }
        }
        self.folders = folders;
    }
}

/// Whether `path` is one of the entries Kubernetes' atomic writer swaps to update a mounted
/// ConfigMap or Secret (`..data`, `..data_tmp`, `..2026_12_02_01_02_03.123`): the files
/// themselves are symlinks through `..data` and see no event of their own.
fn is_atomic_writer_entry(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".."))
}
