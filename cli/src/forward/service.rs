//! Which `[[service]]` a peer's OPEN reaches, and whether the peer may: the decision is
//! made against the link's authenticated node id (from the join), never anything the
//! OPEN itself claims.

use palisade::settings::ServiceSettings;

use super::wire::Code;

/// The services of the current settings (replaced whole at a reload).
#[derive(Debug, Clone, Default)]
pub struct Services(pub Vec<ServiceSettings>);

impl Services {
    /// The target to connect to for `peer` opening `name`, or the refusal's code and
    /// reason (sent to the peer and logged on both ends; it names no secret).
    pub fn decide(&self, name: &str, peer: &str) -> Result<String, (Code, String)> {
        let Some(service) = self.0.iter().find(|s| s.name == name) else {
            return Err((
                Code::UnknownService,
                format!("no service {name:?} on this node"),
            ));
        };
        if !service.allows(peer) {
            return Err((
                Code::NotAllowed,
                format!("node {peer:?} is not in the allow list of service {name:?}"),
            ));
        }
        Ok(service.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Services {
        Services(vec![
            ServiceSettings {
                name: "etcd".into(),
                target: "127.0.0.1:2380".into(),
                allow: vec!["node-*".into(), "admin".into()],
            },
            ServiceSettings {
                name: "closed".into(),
                target: "127.0.0.1:1".into(),
                allow: vec![],
            },
        ])
    }

    #[test]
    fn allow_rules_decide_by_the_authenticated_node_id() {
        let s = services();
        assert_eq!(s.decide("etcd", "node-2").as_deref(), Ok("127.0.0.1:2380"));
        assert_eq!(s.decide("etcd", "admin").as_deref(), Ok("127.0.0.1:2380"));
        assert_eq!(s.decide("etcd", "other").unwrap_err().0, Code::NotAllowed);
        assert_eq!(s.decide("etcd", "node-").unwrap_err().0, Code::NotAllowed);
        assert_eq!(
            s.decide("closed", "node-2").unwrap_err().0,
            Code::NotAllowed
        );
        assert_eq!(
            s.decide("redis", "node-2").unwrap_err().0,
            Code::UnknownService
        );
    }
}
