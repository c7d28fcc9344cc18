//! A listener's settings, replaceable while it runs: each accepted socket takes the
//! settings current when it arrives, so new handshakes use new settings while joined links
//! and handshakes in progress keep the ones they began with. The replay cache and the
//! random source carry over (`Endpoint::reconfigure`), so no nonce is forgotten.

use std::sync::{Arc, RwLock};

use palisade_core::{Config, Endpoint};

use crate::error::Error;
use crate::follow::LinkRegistry;

/// The endpoint new links are made with, and the links made with it; cheap to clone,
/// shared by a listener's (or a dialer's) parts.
#[derive(Debug, Clone)]
pub struct LiveEndpoint {
    endpoint: Arc<RwLock<Endpoint>>,
    links: LinkRegistry,
}

impl LiveEndpoint {
    /// Starts with `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self::following(endpoint, LinkRegistry::default())
    }

    /// Starts with `endpoint`; `links` are the links whose settings follow it.
    pub fn following(endpoint: Endpoint, links: LinkRegistry) -> Self {
        report_weakenings(&endpoint);
        Self {
            endpoint: Arc::new(RwLock::new(endpoint)),
            links,
        }
    }

    /// The endpoint for the next link.
    pub fn current(&self) -> Endpoint {
        self.endpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The links made with this endpoint (register new ones through a link's observer).
    pub fn links(&self) -> &LinkRegistry {
        &self.links
    }

    /// New settings for every link made from now on, and for every live link made
    /// before: each is decided again under them (`Connection::update_settings`: revoked
    /// or no longer authorized peers are closed, a link under a secret no longer
    /// accepted re-joins). Settings that cannot work are refused and the old ones stay.
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        let next = self.current().reconfigure(config)?;
        report_weakenings(&next);
        *self.endpoint.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        self.links.follow(&next);
        Ok(())
    }
}

/// Settings weaker than the defaults are never silent: each is logged when a listener or
/// dialer takes them.
fn report_weakenings(endpoint: &Endpoint) {
    for weakening in endpoint.config().weakenings() {
        tracing::warn!(target: "palisade", node = %endpoint.config().node_id, "weaker than the defaults: {weakening}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_settings_are_taken_and_bad_ones_keep_the_old() {
        let live = LiveEndpoint::new(Endpoint::new(Config::new("c", "a")).unwrap());
        live.reconfigure(Config::new("c", "b")).unwrap();
        assert_eq!(live.current().config().node_id, "b");
        let err = live.reconfigure(Config::new("c", "")).unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");
        assert_eq!(live.current().config().node_id, "b");
    }
}
