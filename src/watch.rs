//! Reloading a node's files while it runs: the certificate, key, CA bundle, CRL,
//! revocation and secret files its settings name are fingerprinted by content (not mtime), so a Kubernetes
//! secret volume's `..data` symlink swap and cert-manager's in-place rewrites are both
//! seen. A changed set is loaded with every check of [`Settings::build`] and taken only
//! when it is complete and valid; otherwise the last good set stays, the report says
//! why, and the set is tried again as soon as its content changes (a set that stays
//! as it was refused is not rebuilt, re-logged or re-counted at every check).
//!
//! Every check also re-evaluates the certificate in use against `now`: seconds to
//! expiry (a gauge: [`FileWatch::seconds_to_expiry`], [`WatchStats`]) and the 30 / 7 day
//! and expired warnings of the start report, each given once when crossed
//! ([`FileWatch::poll_expiry`], and `tracing`), so a node that runs for months still
//! says its certificate is about to expire.
//!
//! The watch is a polling check the application drives ([`FileWatch::check`]), so it
//! fits every runtime; [`FileWatch::spawn`] runs it on one background thread for those
//! who want that, every `reload_interval` (the setting, so code and config cannot
//! disagree; `0`: only on [`WatchHandle::check_now`]). Polling a handful of small files
//! every few seconds costs nothing measurable, works on every file system (inotify
//! misses changes on some network and container volumes, and Kubernetes' symlink swap
//! changes no watched inode), and needs no extra dependency.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::tls::CertSummary;
use palisade_core::Config;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::report::{Finding, Report, Severity};
use crate::settings::Settings;
use crate::tls_load::expiry_finding;
pub use crate::tls_load::ExpiryLevel;
use crate::Metrics;

/// What a check found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Reload {
    /// Nothing new: the files are those in use, or a set already refused and reported
    /// (the last good one stays in use).
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
    /// stays; the report says which file and why. Tried again when the files change.
    Refused {
        /// Why.
        report: Report,
    },
}

/// The certificate in use crossed an expiry threshold (given once per crossing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryWarning {
    /// The threshold crossed.
    pub level: ExpiryLevel,
    /// Seconds from the check to the certificate's end (negative once expired).
    pub seconds_to_expiry: i64,
    /// The warning the start report gives at this level (key, file, cause, fix).
    pub finding: Finding,
}

/// What a spawned watch hands its callback (once every few seconds at most: the size
/// of the variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum WatchEvent {
    /// A new set was taken or refused.
    Reload(Reload),
    /// The certificate in use crossed an expiry threshold.
    Expiry(ExpiryWarning),
}

/// The watch's counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// New sets taken.
    pub reloads_ok: u64,
    /// New sets refused (each distinct refused set counts once).
    pub reloads_failed: u64,
    /// Seconds from the last check to the end of the certificate in use (negative once
    /// expired); `None` without TLS or before the first check.
    pub seconds_to_expiry: Option<i64>,
}

/// Counters shared with a spawned watch's handle.
#[derive(Debug)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    /// `NO_EXPIRY` when unknown.
    expiry: AtomicI64,
}

const NO_EXPIRY: i64 = i64::MIN;

impl Counters {
    fn stats(&self) -> WatchStats {
        let expiry = self.expiry.load(Ordering::Relaxed);
        WatchStats {
            reloads_ok: self.ok.load(Ordering::Relaxed),
            reloads_failed: self.failed.load(Ordering::Relaxed),
            seconds_to_expiry: (expiry != NO_EXPIRY).then_some(expiry),
        }
    }
}

/// The certificate in use: its end and the highest expiry level already reported.
#[derive(Debug, Clone)]
struct InUse {
    not_after: i64,
    file: PathBuf,
    reported: ExpiryLevel,
}

/// Watches the files a node's settings name.
#[derive(Debug)]
pub struct FileWatch {
    settings: Settings,
    files: Vec<PathBuf>,
    /// Per file, the digest of the set in use.
    taken: Vec<[u8; 32]>,
    /// The digests of the last set refused, so it is reported once.
    refused: Option<Vec<[u8; 32]>>,
    cert: Option<InUse>,
    pending: Option<ExpiryWarning>,
    counters: Arc<Counters>,
    /// The node's metrics, fed with every reload and expiry check when given.
    metrics: Option<Metrics>,
}

impl FileWatch {
    /// Watches the files `settings` names, taking their current content as what the
    /// node runs with now. The first check reports a certificate already inside an
    /// expiry window (once), so an alert wired to [`FileWatch::poll_expiry`] sees it.
    pub fn new(settings: Settings) -> Self {
        let files = files_of(&settings);
        let taken = digests(&files);
        let cert = settings
            .tls
            .tls_cert_file
            .as_deref()
            .filter(|_| settings.tls.tls_enabled)
            .and_then(|path| {
                let chain = crate::pem::load_certs("tls_cert_file", path, &mut Report::default())?;
                in_use(chain.first()?, path)
            });
        Self {
            settings,
            files,
            taken,
            refused: None,
            cert,
            pending: None,
            counters: Arc::new(Counters {
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                expiry: AtomicI64::new(NO_EXPIRY),
            }),
            metrics: None,
        }
    }

    /// Counts every reload (taken or refused) and the seconds to expiry of every check
    /// in the node's `metrics` too (`reloads_ok`, `reloads_failed`,
    /// `cert_expiry_seconds`): pass the listener's `metrics()`.
    pub fn count_in(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The files watched: certificate, key, CA bundle, secret, revocation file,
    /// accepted secrets and CRLs.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// How often [`FileWatch::spawn`] checks (`reload_interval`); `None` when it is 0:
    /// only on demand.
    pub fn interval(&self) -> Option<Duration> {
        Some(self.settings.reload_interval).filter(|d| !d.is_zero())
    }

    /// The counters: reloads taken and refused, seconds to expiry.
    pub fn stats(&self) -> WatchStats {
        self.counters.stats()
    }

    /// Seconds from the last check to the end of the certificate in use.
    pub fn seconds_to_expiry(&self) -> Option<i64> {
        self.stats().seconds_to_expiry
    }

    /// The expiry threshold the last check crossed, once (a newer crossing replaces
    /// one not yet taken).
    pub fn poll_expiry(&mut self) -> Option<ExpiryWarning> {
        self.pending.take()
    }

    /// Reads the files once and says whether they changed, and if so whether the new
    /// set can be used; then re-evaluates the certificate in use against `now`.
    pub fn check(&mut self, now: SystemTime) -> Reload {
        let seen = digests(&self.files);
        let reload = if seen == self.taken {
            self.refused = None;
            Reload::Unchanged
        } else if self.refused.as_ref() == Some(&seen) {
            Reload::Unchanged
        } else {
            self.load(seen, now)
        };
        self.expiry(now);
        reload
    }

    fn load(&mut self, seen: Vec<[u8; 32]>, now: SystemTime) -> Reload {
        let changed: Vec<&Path> = self
            .files
            .iter()
            .zip(seen.iter().zip(&self.taken))
            .filter(|(_, (a, b))| a != b)
            .map(|(path, _)| path.as_path())
            .collect();
        let loaded = self.settings.build(now);
        match loaded.config {
            Some(config) if loaded.report.is_ok() => {
                tracing::info!(target: "palisade", files = ?changed, "reload: took the new certificate, key, CA, CRL, revocation and secret files");
                log_findings(&loaded.report, Severity::Warning);
                let leaf = config
                    .tls
                    .as_ref()
                    .and_then(|t| t.identity.cert_chain.first());
                let path = self.settings.tls.tls_cert_file.as_deref();
                self.cert = leaf.zip(path).and_then(|(leaf, path)| in_use(leaf, path));
                self.taken = seen;
                self.refused = None;
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.record_reload(true);
                }
                Reload::Reloaded {
                    config,
                    report: loaded.report,
                }
            }
            _ => {
                tracing::warn!(target: "palisade", files = ?changed, "reload refused: the new files cannot be used; the last good set stays in use");
                log_findings(&loaded.report, Severity::Error);
                self.refused = Some(seen);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.record_reload(false);
                }
                Reload::Refused {
                    report: loaded.report,
                }
            }
        }
    }

    /// Seconds to expiry, and a warning when a threshold is crossed.
    fn expiry(&mut self, now: SystemTime) {
        let Some(cert) = &mut self.cert else {
            self.counters.expiry.store(NO_EXPIRY, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.set_cert_expiry(None);
            }
            return;
        };
        let now = unix_secs(now);
        let left = cert.not_after.saturating_sub(now);
        self.counters.expiry.store(left, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.set_cert_expiry(Some(left));
        }
        let level = ExpiryLevel::at(cert.not_after, now);
        if level <= cert.reported {
            return;
        }
        cert.reported = level;
        let Some(finding) = expiry_finding(level, cert.not_after, now, &cert.file) else {
            return;
        };
        if level == ExpiryLevel::Within30Days {
            tracing::warn!(target: "palisade", file = %cert.file.display(), seconds_to_expiry = left, "{}", finding.cause);
        } else {
            tracing::error!(target: "palisade", file = %cert.file.display(), seconds_to_expiry = left, "{}", finding.cause);
        }
        self.pending = Some(ExpiryWarning {
            level,
            seconds_to_expiry: left,
            finding,
        });
    }

    /// Checks every `reload_interval` (only on [`WatchHandle::check_now`] when it is 0)
    /// on a thread of its own, handing every reload taken or refused and every expiry
    /// warning to `on_event`, until the returned handle is dropped (which stops the
    /// thread at once, not after its sleep).
    pub fn spawn(
        mut self,
        mut on_event: impl FnMut(WatchEvent) + Send + 'static,
    ) -> std::io::Result<WatchHandle> {
        let (wake, woken) = mpsc::channel::<()>();
        let counters = Arc::clone(&self.counters);
        let interval = self.interval();
        thread::Builder::new()
            .name("palisade-watch".into())
            .spawn(move || loop {
                let go = match interval {
                    Some(every) => !matches!(
                        woken.recv_timeout(every),
                        Err(mpsc::RecvTimeoutError::Disconnected)
                    ),
                    None => woken.recv().is_ok(),
                };
                if !go {
                    return;
                }
                match self.check(SystemTime::now()) {
                    Reload::Unchanged => {}
                    change => on_event(WatchEvent::Reload(change)),
                }
                if let Some(warning) = self.poll_expiry() {
                    on_event(WatchEvent::Expiry(warning));
                }
            })?;
        Ok(WatchHandle { wake, counters })
    }
}

/// A spawned watch: its counters, a check on demand; stops the watch when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    wake: mpsc::Sender<()>,
    counters: Arc<Counters>,
}

impl WatchHandle {
    /// Checks now, on the watch's thread (the result goes to its callback).
    pub fn check_now(&self) {
        let _ = self.wake.send(());
    }

    /// The counters: reloads taken and refused, seconds to expiry.
    pub fn stats(&self) -> WatchStats {
        self.counters.stats()
    }
}

fn in_use(leaf: &[u8], path: &Path) -> Option<InUse> {
    let summary = CertSummary::parse(leaf)?;
    Some(InUse {
        not_after: summary.not_after,
        file: path.to_path_buf(),
        reported: ExpiryLevel::Valid,
    })
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Logs the findings at `at` severity or worse: key, file and cause (findings never
/// hold a secret, only key ids).
fn log_findings(report: &Report, at: Severity) {
    for f in report.findings.iter().filter(|f| f.severity >= at) {
        let file = f.file.as_deref().map(Path::display);
        let file = file.map(|f| f.to_string()).unwrap_or_default();
        match f.severity {
            Severity::Error => {
                tracing::warn!(target: "palisade", key = f.key, file = %file, fix = %f.fix, "reload refused: {}", f.cause)
            }
            _ => {
                tracing::warn!(target: "palisade", key = f.key, file = %file, fix = %f.fix, "{}", f.cause)
            }
        }
    }
}

fn files_of(settings: &Settings) -> Vec<PathBuf> {
    let tls = &settings.tls;
    [&tls.tls_cert_file, &tls.tls_key_file, &tls.tls_ca_file]
        .into_iter()
        .chain([&settings.shared_secret_file, &settings.revocation_file])
        .flatten()
        .chain(&settings.accepted_secret_files)
        .chain(&tls.tls_crl_files)
        .cloned()
        .collect()
}

/// Per file, a digest of its content (through symlinks); a file that cannot be read
/// counts as its error, so it changing back is seen too.
fn digests(files: &[PathBuf]) -> Vec<[u8; 32]> {
    files
        .iter()
        .map(|path| {
            let mut hash = Sha256::new();
            // Secret files pass through here: their bytes are zeroed after hashing.
            match fs::read(path).map(Zeroizing::new) {
                Ok(bytes) => {
                    hash.update([1]);
                    hash.update(&*bytes);
                }
                Err(e) => {
                    hash.update([0]);
                    hash.update(format!("{:?}", e.kind()).as_bytes());
                }
            }
            hash.finalize().into()
        })
        .collect()
}
