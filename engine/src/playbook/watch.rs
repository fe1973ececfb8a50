//! Hot reload: watch the playbook directories, recompile the whole set on any change, and swap
//! it in atomically only when it is valid.
//!
//! The watcher only says "something changed"; [`Reloader::reload`] does the rest, so every kind
//! of change looks the same to it: a plain edit, a create or delete, an editor's write-and-rename,
//! a Kubernetes ConfigMap mount's `..data` symlink swap, or git-sync's flip of its `current`
//! symlink. For the symlink cases the parent of every symlink on the way to a watched path is
//! watched too, and the watches are re-aimed when a path resolves somewhere new. A periodic
//! resync catches anything the kernel's notifications missed (an overflowed queue, a network
//! file system).
//!
//! Documents that are not files (custom resources, see [`crate::playbook::resources`]) join
//! every reload through a [`Documents`] source ([`Reloader::with_documents`]), which also says
//! when they changed and hears how each reload went.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::load::{InMemoryDocument, LoadCache, Loaded, load_cached, load_paths_cached};
use super::set::{PlaybookSet, SetDiff};
use crate::diagnostic::Diagnostic;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file-system watcher could not be created or could not watch a path.
    #[error("cannot watch {path}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one reload did.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// A new valid set is active.
    Applied {
        /// Its generation.
        generation: u64,
        /// What changed.
        diff: SetDiff,
        /// Warnings found while loading it.
        warnings: Vec<Diagnostic>,
        /// How long loading and swapping took.
        took: Duration,
    },
    /// The files compiled to the same set; nothing was swapped.
    Unchanged {
        /// How long loading took.
        took: Duration,
    },
    /// The new files are invalid; the previous set stays active.
    Rejected {
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
        /// How long loading took.
        took: Duration,
    },
}

/// Documents loaded with the files at every reload (custom resources kept in the cluster).
pub trait Documents: Send + Sync + std::fmt::Debug {
    /// The documents as they are now.
    fn documents(&self) -> Vec<InMemoryDocument>;

    /// Poked whenever [`Documents::documents`] would answer something new: the watcher
    /// reloads.
    fn changes(&self) -> Arc<Notify>;

    /// How the reload that loaded [`Documents::documents`]'s last answer went.
    fn reloaded(&self, report: &LoadReport);
}

/// What a reload made of the in-memory documents, for their source to report on them.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Every diagnostic of the load (of files and documents alike), errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// The digest of each playbook or policy that compiled, by its document's name (whether
    /// or not the set was taken).
    pub digests: BTreeMap<PathBuf, String>,
    /// Whether the new set was refused (the previous one stays active).
    pub rejected: bool,
    /// The set active after the reload.
    pub active: Arc<PlaybookSet>,
}

impl LoadReport {
    fn of(loaded: &Loaded, documents: &[InMemoryDocument]) -> Self {
        let names: std::collections::BTreeSet<&PathBuf> =
            documents.iter().map(|d| &d.name).collect();
        let playbooks = loaded.playbooks.iter().map(|p| (&p.source.file, &p.digest));
        let policies = loaded.policies.iter().map(|p| (&p.source.file, &p.digest));
        LoadReport {
            diagnostics: loaded.diagnostics.clone(),
            digests: playbooks
                .chain(policies)
                .filter(|(file, _)| names.contains(file))
                .map(|(file, digest)| (file.clone(), digest.clone()))
                .collect(),
            rejected: false,
            active: Arc::default(),
        }
    }
}

/// Recompiles the set from its paths and swaps it in when valid. Files whose bytes did not
/// change since the last load are not compiled again.
#[derive(Debug)]
pub struct Reloader {
    paths: Vec<PathBuf>,
    active: Arc<ArcSwap<PlaybookSet>>,
    cache: Mutex<LoadCache>,
    documents: Option<Arc<dyn Documents>>,
}

impl Reloader {
    /// Loads `paths` and starts from that set, or returns every diagnostic when it is invalid
    /// (a process that starts has no last good set to fall back on). Also returns the
    /// warnings of the load.
    pub fn from_paths(paths: Vec<PathBuf>) -> Result<(Self, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut cache = LoadCache::default();
        let loaded = load_paths_cached(&paths, &mut cache);
        let warnings = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .cloned()
            .collect();
        let set = PlaybookSet::from_loaded(loaded)?;
        let reloader = Reloader {
            paths,
            active: Arc::new(ArcSwap::from_pointee(set)),
            cache: Mutex::new(cache),
            documents: None,
        };
        Ok((reloader, warnings))
    }

    /// Loads `documents` with the files at every reload from now on (the next one, which
    /// [`watch`] does when `documents` says they changed, is the first to include them).
    pub fn with_documents(mut self, documents: Arc<dyn Documents>) -> Self {
        self.documents = Some(documents);
        self
    }

    /// The active set; readers call `load()` on it and never block a reload.
    pub fn active(&self) -> &Arc<ArcSwap<PlaybookSet>> {
        &self.active
    }

    /// The watched paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Loads the paths again and swaps the result in if it is valid and differs. Reloads are
    /// serialized.
    pub fn reload(&self) -> ReloadOutcome {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let Some(source) = &self.documents else {
            return self.swap(load_paths_cached(&self.paths, &mut cache), started);
        };
        let documents = source.documents();
        let loaded = load_cached(&self.paths, &documents, &mut cache);
        let mut report = LoadReport::of(&loaded, &documents);
        let outcome = self.swap(loaded, started);
        report.rejected = matches!(outcome, ReloadOutcome::Rejected { .. });
        report.active = self.active.load_full();
        source.reloaded(&report);
        outcome
    }

    /// Swaps in the set of `loaded` if it is valid and differs.
    fn swap(&self, loaded: Loaded, started: Instant) -> ReloadOutcome {
        let warnings: Vec<Diagnostic> = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .cloned()
            .collect();
        let mut next = match PlaybookSet::from_loaded(loaded) {
            Ok(set) => set,
            Err(diagnostics) => {
                return ReloadOutcome::Rejected {
                    diagnostics,
                    took: started.elapsed(),
                };
            }
        };
        let current = self.active.load();
        let diff = next.succeed(&current);
        if diff.is_empty() {
            return ReloadOutcome::Unchanged {
                took: started.elapsed(),
            };
        }
        let generation = next.generation();
        self.active.store(Arc::new(next));
        ReloadOutcome::Applied {
            generation,
            diff,
            warnings,
            took: started.elapsed(),
        }
    }
}

/// How the watcher behaves.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Wait this long after the last file event before reloading, so a burst of events (an
    /// editor's save, a git checkout) becomes one reload.
    pub debounce: Duration,
    /// Reload this often even without events.
    pub resync: Duration,
    /// Also reload on SIGHUP (Unix), the daemon convention, for file systems that send no
    /// events (NFS, some FUSE mounts) or for an operator who wants a reload now.
    pub reload_on_hangup: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(50),
            resync: Duration::from_secs(60),
            reload_on_hangup: false,
        }
    }
}

/// Watches the reloader's paths until `cancel` fires, reloading on every change and sending
/// each outcome to `outcomes` (a full or closed channel drops outcomes, never blocks reloads).
pub async fn watch(
    reloader: Arc<Reloader>,
    options: WatchOptions,
    cancel: CancellationToken,
    outcomes: mpsc::Sender<ReloadOutcome>,
) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut debouncer = new_debouncer(
        options.debounce,
        None,
        move |result: DebounceEventResult| match result {
            // Reading the files (our own reloads included) produces access events; a reload
            // on those would trigger the next one forever.
            Ok(events) if events.iter().all(|e| e.kind.is_access()) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(%error, "file watcher error; reloading to be safe");
                }
                let _ = tx.send(());
            }
        },
    )
    .map_err(|source| Error::Watch {
        path: PathBuf::new(),
        source,
    })?;

    let mut watched = Vec::new();
    rewatch(&mut debouncer, reloader.paths(), &mut watched)?;
    let mut resync = tokio::time::interval(options.resync);
    resync.tick().await;
    let mut hangups = Hangups::new(options.reload_on_hangup);
    let changes = reloader.documents.as_ref().map(|d| d.changes());
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = hangups.next() => {
                tracing::info!("SIGHUP: reloading the playbooks and the policy");
            }
            () = notified(changes.as_deref()) => {}
            event = rx.recv() => {
                if event.is_none() {
                    break;
                }
                while rx.try_recv().is_ok() {}
            }
            _ = resync.tick() => {}
        }
        let worker = Arc::clone(&reloader);
        let outcome = match tokio::task::spawn_blocking(move || worker.reload()).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "reload task failed; the previous set stays active");
                continue;
            }
        };
        log_outcome(&outcome);
        if let Err(error) = rewatch(&mut debouncer, reloader.paths(), &mut watched) {
            tracing::warn!(%error, "cannot re-aim the file watcher; relying on the periodic resync");
        }
        let _ = outcomes.try_send(outcome);
    }
    Ok(())
}

/// The next poke of `changes`, or never without one.
async fn notified(changes: Option<&Notify>) {
    match changes {
        Some(changes) => changes.notified().await,
        None => std::future::pending().await,
    }
}

/// SIGHUPs, when asked for (and on Unix); otherwise a stream that never yields.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new(wanted: bool) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = wanted.then(|| signal(SignalKind::hangup())).and_then(|s| {
                s.inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
                    .ok()
            });
            Hangups { signal }
        }
        #[cfg(not(unix))]
        {
            let _ = wanted;
            Hangups {}
        }
    }

    /// The next SIGHUP.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}

/// Logs a reload outcome the way an operator wants to read it.
pub fn log_outcome(outcome: &ReloadOutcome) {
    match outcome {
        ReloadOutcome::Applied {
            generation,
            diff,
            warnings,
            took,
        } => {
            tracing::info!(
                generation,
                added = ?diff.added,
                changed = ?diff.changed,
                removed = ?diff.removed,
                policies = ?diff.policies_changed,
                unchanged = diff.unchanged,
                took_ms = took.as_secs_f64() * 1e3,
                "playbook set reloaded"
            );
            for warning in warnings {
                tracing::warn!("{warning}");
            }
        }
        ReloadOutcome::Unchanged { took } => {
            tracing::debug!(
                took_ms = took.as_secs_f64() * 1e3,
                "playbook files changed, set did not"
            );
        }
        ReloadOutcome::Rejected { diagnostics, .. } => {
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            tracing::error!(
                errors,
                "playbook change rejected; the previous set stays active"
            );
            for diagnostic in diagnostics {
                tracing::error!("{diagnostic}");
            }
        }
    }
}

/// What to watch for `paths`: each path (recursively when a directory; its directory when a
/// file, since editors replace files), resolved through symlinks, plus the directory holding
/// every symlink on the way, so that a symlink flip is seen.
fn watch_targets(paths: &[PathBuf]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut targets = Vec::new();
    for path in paths {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        let mut ancestor = Some(absolute.as_path());
        while let Some(current) = ancestor {
            if current.is_symlink()
                && let Some(parent) = current.parent()
            {
                targets.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
            }
            ancestor = current.parent();
        }
        let real = std::fs::canonicalize(&absolute).unwrap_or(absolute);
        if real.is_dir() {
            targets.push((real, RecursiveMode::Recursive));
        } else if let Some(parent) = real.parent() {
            targets.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
        }
    }
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    targets.dedup_by(|a, b| a.0 == b.0);
    targets
}

fn rewatch<D: WatchPaths>(
    debouncer: &mut D,
    paths: &[PathBuf],
    watched: &mut Vec<(PathBuf, RecursiveMode)>,
) -> Result<()> {
    let targets = watch_targets(paths);
    if &targets == watched {
        return Ok(());
    }
    for (path, _) in watched.iter() {
        if !targets.iter().any(|(p, _)| p == path) {
            let _ = debouncer.unwatch_path(path);
        }
    }
    for (path, mode) in &targets {
        if !watched.iter().any(|(p, m)| p == path && m == mode) {
            debouncer
                .watch_path(path, *mode)
                .map_err(|source| Error::Watch {
                    path: path.clone(),
                    source,
                })?;
        }
    }
    *watched = targets;
    Ok(())
}

/// The two calls [`rewatch`] needs, so it does not name the debouncer's long generic type.
trait WatchPaths {
    fn watch_path(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()>;
    fn unwatch_path(&mut self, path: &Path) -> notify::Result<()>;
}

impl<T: notify::Watcher, C: notify_debouncer_full::FileIdCache> WatchPaths
    for notify_debouncer_full::Debouncer<T, C>
{
    fn watch_path(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        self.watch(path, mode)
    }

    fn unwatch_path(&mut self, path: &Path) -> notify::Result<()> {
        self.unwatch(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_paths_also_watch_the_symlink_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("worktree-1");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("current");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let targets = watch_targets(&[link]);
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let paths: Vec<_> = targets.iter().map(|(p, _)| p.clone()).collect();
        assert!(paths.contains(&std::fs::canonicalize(&real).expect("canonical")));
        assert!(
            paths
                .iter()
                .any(|p| std::fs::canonicalize(p).ok() == Some(root.clone())),
            "{paths:?}"
        );
    }
}
