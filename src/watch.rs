//! Reloading a node's files while it runs: the certificate, key, CA bundle and secret
//! files its settings name are fingerprinted by content (not mtime), so a Kubernetes
//! secret volume's `..data` symlink swap and cert-manager's in-place rewrites are both
//! seen. A changed set is loaded with every check of [`Settings::build`] and taken only
//! when it is complete and valid; otherwise the last good set stays, the report says
//! why, and the set is tried again at the next check.
//!
//! The watch is a polling check the application drives ([`FileWatch::check`]), so it
//! fits every runtime; [`FileWatch::spawn`] runs it on one background thread for those
//! who want that. Polling a handful of small files every few seconds costs nothing
//! measurable, works on every file system (inotify misses changes on some network and
//! container volumes), and needs no extra dependency.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use palisade_core::Config;
use sha2::{Digest, Sha256};

use crate::report::Report;
use crate::settings::Settings;

/// What a check found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Reload {
    /// The files are as they were when last taken.
    Unchanged,
    /// The files changed and the new set is complete and valid: pass `config` to the
    /// listener's `reconfigure` (and use it for new dials).
    Reloaded {
        /// The settings to use from now on.
        config: Config,
        /// Warnings and notes about the new set (expiry, names).
        report: Report,
    },
    /// The files changed but the new set cannot be used (half written, unreadable, a
    /// key for another certificate, a chain the CA does not sign): the last good set
    /// stays; the report says which file and why. Tried again at the next check.
    Refused {
        /// Why.
        report: Report,
    },
}

/// Watches the files a node's settings name.
#[derive(Debug)]
pub struct FileWatch {
    settings: Settings,
    taken: [u8; 32],
}

impl FileWatch {
    /// Watches the files `settings` names, taking their current content as what the
    /// node runs with now.
    pub fn new(settings: Settings) -> Self {
        let taken = fingerprint(&files_of(&settings));
        Self { settings, taken }
    }

    /// The files watched: certificate, key, CA bundle, secret and accepted secrets.
    pub fn files(&self) -> Vec<PathBuf> {
        files_of(&self.settings)
    }

    /// Reads the files once and says whether they changed, and if so whether the new
    /// set can be used.
    pub fn check(&mut self, now: SystemTime) -> Reload {
        let seen = fingerprint(&self.files());
        if seen == self.taken {
            return Reload::Unchanged;
        }
        let loaded = self.settings.build(now);
        match loaded.config {
            Some(config) if loaded.report.is_ok() => {
                self.taken = seen;
                Reload::Reloaded {
                    config,
                    report: loaded.report,
                }
            }
            _ => Reload::Refused {
                report: loaded.report,
            },
        }
    }

    /// Checks every `interval` on a thread of its own, handing every change (taken or
    /// refused) to `on_change`, until the returned handle is dropped.
    pub fn spawn(
        mut self,
        interval: Duration,
        mut on_change: impl FnMut(Reload) + Send + 'static,
    ) -> std::io::Result<WatchHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::Builder::new()
            .name("palisade-watch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    thread::sleep(interval);
                    match self.check(SystemTime::now()) {
                        Reload::Unchanged => {}
                        change => on_change(change),
                    }
                }
            })?;
        Ok(WatchHandle { stop })
    }
}

/// Stops a spawned watch when dropped (after its current sleep).
#[derive(Debug)]
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn files_of(settings: &Settings) -> Vec<PathBuf> {
    let tls = &settings.tls;
    [&tls.tls_cert_file, &tls.tls_key_file, &tls.tls_ca_file]
        .into_iter()
        .chain([&settings.shared_secret_file])
        .flatten()
        .chain(&settings.accepted_secret_files)
        .cloned()
        .collect()
}

/// A digest of every file's path and content (through symlinks); a file that cannot be
/// read counts as its error, so it changing back is seen too.
fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for path in files {
        hash.update(path.as_os_str().as_encoded_bytes());
        match fs::read(path) {
            Ok(bytes) => {
                hash.update([1]);
                hash.update((bytes.len() as u64).to_be_bytes());
                hash.update(&bytes);
            }
            Err(e) => {
                hash.update([0]);
                hash.update(format!("{:?}", e.kind()).as_bytes());
            }
        }
    }
    hash.finalize().into()
}
