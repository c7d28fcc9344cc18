//! The join keyring from settings: `shared_secret` or `shared_secret_file`, and
//! `accepted_secret_files`, each read as text with surrounding whitespace removed
//! (`docs/PROTOCOL.md` §5.3), with every problem in the report.
//!
//! An accepted secret file holds one secret, in exactly the format of
//! `shared_secret_file`, or nothing: an empty (or whitespace-only) file accepts no
//! secret. So the settings can name the files of a rotation once and the rotation's
//! three steps only change file contents (new secret into the accepted file; swap the
//! two files' contents; empty the accepted file), which the file watch picks up. One
//! secret per file, not one per line, so the same text gives the same key id in either
//! file: a secret spanning lines (`openssl rand -base64` wraps at 64 characters) would
//! otherwise change meaning when moved from one file to the other.

use std::path::Path;

use palisade_core::join::{Keyring, SecretError, SharedSecret, MIN_SECRET_LEN};
use zeroize::Zeroizing;

use super::secret::{secret_bytes, KEY_ID_HINT};
use super::Settings;
use crate::report::{Finding, Report};

/// How a secret error's fix says to make one.
pub(crate) const MAKE_SECRET: &str =
    "make one with `openssl rand -base64 48 > secret` and give every node the same file";

impl Settings {
    /// The keyring from `shared_secret` / `shared_secret_file` and `accepted_secret_files`.
    pub(crate) fn keyring(&self, report: &mut Report) -> Option<Keyring> {
        if self.shared_secret.is_some() && self.shared_secret_file.is_some() {
            report.push(Finding::error(
                "shared_secret_file",
                "both shared_secret (or PALISADE_SHARED_SECRET) and shared_secret_file are set; which one wins would be a guess",
                "remove one of them",
            ));
            return None;
        }
        let primary = match (&self.shared_secret, &self.shared_secret_file) {
            (Some(text), _) => usable_secret("shared_secret", text.bytes(), None, report),
            (None, Some(path)) => read_secret("shared_secret_file", path, report),
            (None, None) => {
                if !self.accepted_secret_files.is_empty() {
                    report.push(Finding::error(
                        "accepted_secret_files",
                        "accepted_secret_files is set but there is no shared_secret or shared_secret_file to join with",
                        "set shared_secret_file to the current secret; accepted_secret_files only adds older ones",
                    ));
                }
                return None;
            }
        }?;
        report.push(Finding::note(
            "shared_secret",
            format!(
                "the shared secret's key id is {}; every node must show the same ({KEY_ID_HINT})",
                primary.key_id()
            ),
        ));
        let mut keyring = Keyring::new(primary);
        let mut ok = true;
        for path in &self.accepted_secret_files {
            let secret = match read_text("accepted_secret_files", path, report) {
                Some(text) if secret_bytes(&text).is_empty() => {
                    report.push(
                        Finding::note(
                            "accepted_secret_files",
                            "the file is empty: no secret accepted from it",
                        )
                        .in_file(path),
                    );
                    continue;
                }
                Some(text) => usable_secret(
                    "accepted_secret_files",
                    secret_bytes(&text),
                    Some(path),
                    report,
                ),
                None => None,
            };
            let Some(secret) = secret else {
                ok = false;
                continue;
            };
            let id = secret.key_id();
            report.push(
                Finding::note(
                    "accepted_secret_files",
                    format!("also accepted from peers: the secret with key id {id}"),
                )
                .in_file(path),
            );
            match keyring.clone().with_accepted(secret) {
                Ok(more) => keyring = more,
                Err(SecretError::Duplicate(_)) | Err(_) => {
                    ok = false;
                    report.push(
                        Finding::error(
                            "accepted_secret_files",
                            format!("this secret (key id {id}) is already in the keyring (the shared secret, or another accepted file)"),
                            format!("list each secret once; {KEY_ID_HINT}"),
                        )
                        .in_file(path.clone()),
                    );
                }
            }
        }
        ok.then_some(keyring)
    }
}

fn read_secret(key: &'static str, path: &Path, report: &mut Report) -> Option<SharedSecret> {
    let text = read_text(key, path, report)?;
    usable_secret(key, secret_bytes(&text), Some(path), report)
}

/// A secret file's text, zeroed when dropped.
fn read_text(key: &'static str, path: &Path, report: &mut Report) -> Option<Zeroizing<String>> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(Zeroizing::new(text)),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                report.push(
                    Finding::error(key, "the secret file is not UTF-8 text", MAKE_SECRET)
                        .in_file(path),
                );
                None
            }
        },
        Err(e) => {
            report.push(
                Finding::error(
                    key,
                    format!("cannot read the secret file: {e}"),
                    format!("check {key}: the path, and that this process may read the file"),
                )
                .in_file(path),
            );
            None
        }
    }
}

fn usable_secret(
    key: &'static str,
    bytes: &[u8],
    file: Option<&Path>,
    report: &mut Report,
) -> Option<SharedSecret> {
    let cause = if bytes.is_empty() {
        "the secret is empty".to_owned()
    } else {
        match SharedSecret::new(bytes) {
            Ok(secret) => return Some(secret),
            Err(_) => format!(
                "the secret is {} bytes long (after removing surrounding whitespace); at least {MIN_SECRET_LEN} are needed",
                bytes.len()
            ),
        }
    };
    let finding = Finding::error(key, cause, MAKE_SECRET);
    report.push(match file {
        Some(file) => finding.in_file(file),
        None => finding,
    });
    None
}
