//! A listener's settings, replaceable while it runs: each accepted socket takes the
//! settings current when it arrives, so new handshakes use new settings while joined links
//! and handshakes in progress keep the ones they began with. The replay cache and the
//! random source carry over (`Endpoint::reconfigure`), so no nonce is forgotten.

use std::sync::{Arc, RwLock};

use palisade_core::{Config, Endpoint};

use crate::error::Error;

/// The endpoint new links are made with; cheap to clone, shared by a listener's parts.
#[derive(Debug, Clone)]
pub struct LiveEndpoint(Arc<RwLock<Endpoint>>);

impl LiveEndpoint {
    /// Starts with `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self(Arc::new(RwLock::new(endpoint)))
    }

    /// The endpoint for the next link.
    pub fn current(&self) -> Endpoint {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New settings for every link made from now on. Settings that cannot work are
    /// refused and the old ones stay.
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        let next = self.current().reconfigure(config)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
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
