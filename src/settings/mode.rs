//! `mode`: `"strict"` (the default) or `"permissive"`, the rollout state in which a
//! node's listener also accepts plaintext peers and peers without the join secret
//! (docs/PROTOCOL.md §8.1). Permissive is only ever taken from an explicit setting, and
//! loading always says what it costs.

use palisade_core::Mode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Settings;
use crate::report::{Finding, Report};

/// The fix every permissive finding gives.
const BACK_TO_STRICT: &str = "set mode = \"strict\" once every node has TLS and the secret";

/// The config file's spelling of [`Mode`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Written {
    Strict,
    Permissive,
}

pub(crate) fn serialize<S: Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
    match mode {
        Mode::Strict => Written::Strict,
        Mode::Permissive => Written::Permissive,
    }
    .serialize(s)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    Ok(match Written::deserialize(d)? {
        Written::Strict => Mode::Strict,
        Written::Permissive => Mode::Permissive,
    })
}

impl Settings {
    /// A permissive node is reported every time it loads: an error when there is
    /// nothing to migrate to, else a warning naming what it lets in.
    pub(crate) fn check_mode(&self, report: &mut Report) {
        if self.mode != Mode::Permissive {
            return;
        }
        let secret = self.shared_secret.is_some() || self.shared_secret_file.is_some();
        let tls = self.tls.tls_enabled;
        let lets_in = match (tls, secret) {
            (false, false) => {
                report.push(Finding::error(
                    "mode",
                    "mode = \"permissive\" but TLS is off (tls_enabled) and there is no shared \
                     secret, so there is nothing to migrate to: permissive accepts peers below \
                     this node's own TLS and secret settings, and it has neither",
                    "set the TLS files and tls_enabled = true and/or shared_secret_file to what \
                     the cluster is moving to, or set mode = \"strict\" (the default)",
                ));
                return;
            }
            (true, true) => "plaintext peers and peers without the shared secret",
            (true, false) => "plaintext peers",
            (false, true) => "peers without the shared secret",
        };
        report.push(Finding::warning(
            "mode",
            format!(
                "mode = \"permissive\": this node's listener also accepts {lets_in}, so any host \
                 that can reach its port can join without the {}; this is a rollout state only, \
                 and every such link is reported",
                match (tls, secret) {
                    (true, true) => "certificate or the secret",
                    (true, false) => "certificate",
                    _ => "secret",
                }
            ),
            BACK_TO_STRICT,
        ));
    }
}
