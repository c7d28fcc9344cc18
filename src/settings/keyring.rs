//! The join keyring from settings: `shared_secret` or `shared_secret_file`, and
//! `accepted_secret_files`, each read as text with surrounding whitespace removed
//! (`docs/PROTOCOL.md` §5.3), with every problem in the report.

use std::path::Path;

use palisade_core::join::{Keyring, SecretError, SharedSecret, MIN_SECRET_LEN};

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
            let Some(secret) = read_secret("accepted_secret_files", path, report) else {
                ok = false;
                continue;
            };
            let id = secret.key_id();
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
    match std::fs::read(path) {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => usable_secret(key, secret_bytes(text), Some(path), report),
            Err(_) => {
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
