//! Joined links that follow the current trust: every link a listener or dialer makes is
//! registered (weakly) with the [`LiveEndpoint`](crate::LiveEndpoint) it came from, and
//! each `reconfigure` hands the new endpoint to every live one
//! (`Connection::update_settings`): a peer now revoked or no longer authorized is closed
//! at once, a link under a secret no longer accepted re-joins in place, and the peer
//! certificate's expiry timer follows the new settings.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use palisade_core::Endpoint;

/// Something holding a link that can take new settings.
pub(crate) trait Follows: Send + Sync {
    /// New settings; any CLOSE or REJOIN this queues must reach the socket.
    fn follow(&self, endpoint: &Endpoint, now: Instant);
}

/// The live links of one listener or dialer. Cheap to clone; clones share the list.
#[derive(Clone, Default)]
pub struct LinkRegistry(Arc<Mutex<Vec<Weak<dyn Follows>>>>);

impl std::fmt::Debug for LinkRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRegistry")
            .field("links", &self.live())
            .finish()
    }
}

/// Two handles are equal when they share their list.
impl PartialEq for LinkRegistry {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LinkRegistry {}

impl LinkRegistry {
    /// Adds a link; dropped links fall out on their own.
    pub(crate) fn add(&self, link: Weak<dyn Follows>) {
        let mut links = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Prune as we go, so the list stays the size of the live links.
        if links.len() >= 64 && links.len().is_power_of_two() {
            links.retain(|l| l.strong_count() > 0);
        }
        links.push(link);
    }

    /// Links still alive.
    pub fn live(&self) -> usize {
        let links = self.0.lock().unwrap_or_else(|p| p.into_inner());
        links.iter().filter(|l| l.strong_count() > 0).count()
    }

    /// Hands `endpoint` to every live link.
    pub(crate) fn follow(&self, endpoint: &Endpoint) {
        let live: Vec<Arc<dyn Follows>> = {
            let mut links = self.0.lock().unwrap_or_else(|p| p.into_inner());
            links.retain(|l| l.strong_count() > 0);
            links.iter().filter_map(Weak::upgrade).collect()
        };
        // Outside the list's lock: a link's update takes the link's own lock.
        let now = Instant::now();
        for link in live {
            link.follow(endpoint, now);
        }
    }
}
