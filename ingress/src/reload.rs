//! Reloading the keys file and the TLS files without a restart: on SIGHUP, and when a file's
//! metadata (size, modification time, inode) changes, checked every `--reload-interval`. The
//! metadata follows symbolic links, so the swap of a Kubernetes-mounted secret counts as a
//! change. A file that fails to load leaves the configuration in force and is logged and
//! counted; the next change or SIGHUP tries again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::auth::Authenticator;
use crate::metrics::{Metrics, ReloadSource};
use crate::tls::Tls;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: i128,
    inode: u64,
    device: u64,
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some(Stamp {
                len: metadata.len(),
                modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                    + i128::from(metadata.mtime_nsec()),
                inode: metadata.ino(),
                device: metadata.dev(),
            })
        })
        .collect()
}

/// One reloadable source and the stamps of its files when it was last loaded.
struct Watched {
    source: ReloadSource,
    paths: Vec<PathBuf>,
    loaded: Vec<Option<Stamp>>,
}

/// Watches the keys file and the TLS files.
pub(crate) struct Reloader {
    authenticator: Arc<Authenticator>,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    watched: Vec<Watched>,
    hangup: Signal,
}

impl Reloader {
    /// Records the files' stamps and installs the SIGHUP handler at once, so that from the
    /// moment the ingress announces itself a SIGHUP reloads instead of ending the process.
    /// `None` when there is nothing to watch.
    pub(crate) fn new(
        authenticator: Arc<Authenticator>,
        tls: Option<Arc<Tls>>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> std::io::Result<Option<Self>> {
        let mut watched = Vec::new();
        if let Some(path) = authenticator.keys_file() {
            watched.push(Watched::new(ReloadSource::keys, vec![path.to_owned()]));
        }
        if let Some(tls) = &tls {
            watched.push(Watched::new(ReloadSource::tls, tls.paths()));
        }
        if watched.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            authenticator,
            tls,
            metrics,
            interval,
            watched,
            hangup: signal(SignalKind::hangup())?,
        }))
    }

    /// Watches until the task is aborted.
    pub(crate) fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // The files were just loaded: the first look is one interval away.
            let first = tokio::time::Instant::now() + self.interval;
            let mut ticks = tokio::time::interval_at(first, self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = self.hangup.recv() => {
                        tracing::info!("SIGHUP: reloading the keys file and TLS files");
                        true
                    }
                };
                self.check(forced);
            }
        })
    }

    /// Reloads every source whose files changed (all of them when `forced`).
    fn check(&mut self, forced: bool) {
        for entry in &mut self.watched {
            let current = stamps(&entry.paths);
            if !forced && current == entry.loaded {
                continue;
            }
            // Recorded before loading: a file caught half-written is tried again when it
            // changes again, not at every tick.
            entry.loaded = current;
            let result = match entry.source {
                ReloadSource::keys => self
                    .authenticator
                    .reload()
                    .map(|keys| {
                        self.metrics.set_credentials(keys.active(), keys.ids());
                        tracing::info!(active = keys.active(), "keys file reloaded");
                    })
                    .map_err(|e| e.to_string()),
                ReloadSource::tls => self
                    .tls
                    .as_ref()
                    .expect("watched only with TLS")
                    .reload()
                    .map(|()| tracing::info!("TLS files reloaded"))
                    .map_err(|e| e.to_string()),
            };
            if let Err(error) = &result {
                tracing::error!(
                    %error,
                    source = ?entry.source,
                    "reload failed; the configuration in force stays"
                );
            }
            self.metrics.reloaded(entry.source, result.is_ok());
        }
    }
}

impl Watched {
    fn new(source: ReloadSource, paths: Vec<PathBuf>) -> Self {
        let loaded = stamps(&paths);
        Self {
            source,
            paths,
            loaded,
        }
    }
}
