//! The `palisade node` sidecar tables: `[[forward]]` (a local plaintext port that reaches
//! a service on a peer), `[[service]]` (a local target peers may reach through this
//! node) and `[peers]` (node id -> address to dial). They are tables, not top-level keys,
//! so the environment cannot express them; each problem names its place in the file
//! (`forward[0].listen`, `service[1].name`, `peers.node-2`), counting from 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use palisade_core::NodePattern;
use serde::{Deserialize, Serialize};

use super::error::SettingsError;
use crate::report::{Finding, Report};

/// The longest service name: it travels in one length byte of the node's OPEN message.
pub const MAX_SERVICE_NAME: usize = 255;

/// One `[[forward]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardSettings {
    /// `listen`: the local address (plaintext TCP) unmodified programs connect to.
    pub listen: SocketAddr,
    /// `peer`: the node id whose service it reaches (address from `[peers]`, or a link
    /// already joined, e.g. to a seed).
    pub peer: String,
    /// `service`: the name of a `[[service]]` on that peer.
    pub service: String,
}

/// One `[[service]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// `name`: what peers ask for.
    pub name: String,
    /// `target`: `host:port` this node connects to for each stream.
    pub target: String,
    /// `allow`: node ids (exact or `*` globs) that may open it; empty denies everyone.
    pub allow: Vec<String>,
}

impl ServiceSettings {
    /// Whether the authenticated peer `node_id` may open this service.
    pub fn allows(&self, node_id: &str) -> bool {
        self.allow
            .iter()
            .filter_map(|p| NodePattern::new(p.as_str()).ok())
            .any(|p| p.matches(node_id))
    }
}

/// The table names this module reads (the loader hands them here, not to `KEYS`).
pub const TABLE_NAMES: &[&str] = &["forward", "service", "peers"];

/// What the loader collects of the three tables.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub forward: Vec<ForwardSettings>,
    pub service: Vec<ServiceSettings>,
    pub peers: BTreeMap<String, String>,
}

fn bad(origin: Option<&Path>, key: String, message: impl Into<String>) -> SettingsError {
    SettingsError::BadTableValue {
        origin: origin.map(Path::to_path_buf),
        key,
        message: message.into(),
    }
}

/// Reads the table `name` (one of [`TABLE_NAMES`]) into `into`, pushing every problem.
pub(crate) fn read(
    name: &str,
    value: toml::Value,
    origin: Option<&Path>,
    into: &mut Tables,
    errors: &mut Vec<SettingsError>,
) {
    match name {
        "forward" => {
            for (i, t) in array_of_tables(name, value, origin, errors) {
                if let Some(f) = read_forward(i, &t, origin, errors) {
                    if let Some(j) = into.forward.iter().position(|o| o.listen == f.listen) {
                        errors.push(bad(
                            origin,
                            format!("forward[{i}].listen"),
                            format!("{} is already the listen address of forward[{j}]", f.listen),
                        ));
                    } else {
                        into.forward.push(f);
                    }
                }
            }
        }
        "service" => {
            for (i, t) in array_of_tables(name, value, origin, errors) {
                if let Some(s) = read_service(i, &t, origin, errors) {
                    if into.service.iter().any(|o| o.name == s.name) {
                        errors.push(bad(
                            origin,
                            format!("service[{i}].name"),
                            format!(
                                "a service named {:?} is already defined; names must be unique",
                                s.name
                            ),
                        ));
                    } else {
                        into.service.push(s);
                    }
                }
            }
        }
        _ => {
            let toml::Value::Table(t) = value else {
                errors.push(bad(
                    origin,
                    "peers".into(),
                    "must be a table `[peers]` of node id = \"host:port\"",
                ));
                return;
            };
            for (id, addr) in t {
                let key = format!("peers.{id}");
                match addr.as_str() {
                    Some(a) if host_port(a).is_ok() && !id.is_empty() => {
                        into.peers.insert(id, a.to_owned());
                    }
                    Some(a) => errors.push(bad(
                        origin,
                        key,
                        host_port(a).err().unwrap_or_else(|| "empty node id".into()),
                    )),
                    None => errors.push(bad(origin, key, "must be a string \"host:port\"")),
                }
            }
        }
    }
}

fn array_of_tables(
    name: &str,
    value: toml::Value,
    origin: Option<&Path>,
    errors: &mut Vec<SettingsError>,
) -> Vec<(usize, toml::Table)> {
    let toml::Value::Array(items) = value else {
        errors.push(bad(
            origin,
            name.into(),
            format!("must be written as `[[{name}]]` tables"),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            toml::Value::Table(t) => out.push((i, t)),
            _ => errors.push(bad(
                origin,
                format!("{name}[{i}]"),
                format!("must be a `[[{name}]]` table"),
            )),
        }
    }
    out
}

/// Checks a table's fields (unknown ones, required strings present and not empty),
/// pushing every problem; whether there was none.
fn fields_ok(
    place: &str,
    t: &toml::Table,
    known: &[&str],
    required: &[&str],
    origin: Option<&Path>,
    errors: &mut Vec<SettingsError>,
) -> bool {
    let before = errors.len();
    for k in t.keys() {
        if !known.contains(&k.as_str()) {
            errors.push(bad(
                origin,
                format!("{place}.{k}"),
                format!("unknown field; the fields are {}", known.join(", ")),
            ));
        }
    }
    for r in required {
        match t.get(*r) {
            None => errors.push(bad(
                origin,
                format!("{place}.{r}"),
                "missing; it is required",
            )),
            Some(v) if !v.is_str() => {
                errors.push(bad(origin, format!("{place}.{r}"), "must be a string"))
            }
            Some(v) if v.as_str().is_some_and(|s| s.trim().is_empty()) => {
                errors.push(bad(origin, format!("{place}.{r}"), "must not be empty"));
            }
            Some(_) => {}
        }
    }
    errors.len() == before
}

fn text<'a>(t: &'a toml::Table, k: &str) -> &'a str {
    t.get(k).and_then(toml::Value::as_str).unwrap_or_default()
}

fn read_forward(
    i: usize,
    t: &toml::Table,
    origin: Option<&Path>,
    errors: &mut Vec<SettingsError>,
) -> Option<ForwardSettings> {
    let place = format!("forward[{i}]");
    let known = ["listen", "peer", "service"];
    // Every field is checked, whatever else is wrong, so one run reports everything.
    let mut ok = fields_ok(&place, t, &known, &known, origin, errors);
    let listen_text = text(t, "listen");
    let listen = listen_text.parse::<SocketAddr>().ok();
    if listen.is_none() && !listen_text.trim().is_empty() {
        errors.push(bad(
            origin,
            format!("{place}.listen"),
            format!("{listen_text:?} is not an IP address and port, e.g. \"127.0.0.1:12380\""),
        ));
    }
    let service = text(t, "service").to_owned();
    if service.len() > MAX_SERVICE_NAME {
        errors.push(bad(
            origin,
            format!("{place}.service"),
            "longer than 255 bytes",
        ));
        ok = false;
    }
    Some(ForwardSettings {
        listen: listen.filter(|_| ok)?,
        peer: text(t, "peer").to_owned(),
        service,
    })
}

fn read_service(
    i: usize,
    t: &toml::Table,
    origin: Option<&Path>,
    errors: &mut Vec<SettingsError>,
) -> Option<ServiceSettings> {
    let place = format!("service[{i}]");
    let fields = ["name", "target", "allow"];
    let mut ok = fields_ok(&place, t, &fields, &fields[..2], origin, errors);
    let name = text(t, "name").to_owned();
    if name.len() > MAX_SERVICE_NAME {
        errors.push(bad(
            origin,
            format!("{place}.name"),
            "longer than 255 bytes",
        ));
        ok = false;
    }
    let target = text(t, "target").to_owned();
    // (Missing or empty: reported above.)
    if let Err(e) = host_port(&target) {
        if !target.trim().is_empty() {
            errors.push(bad(origin, format!("{place}.target"), e));
        }
        ok = false;
    }
    let mut allow = Vec::new();
    match t.get("allow") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (j, item) in items.iter().enumerate() {
                match item.as_str().map(NodePattern::new) {
                    Some(Ok(p)) => allow.push(p.as_str().to_owned()),
                    Some(Err(e)) => {
                        errors.push(bad(
                            origin,
                            format!("{place}.allow[{j}]"),
                            e.replace("allowed_peers: ", ""),
                        ));
                        ok = false;
                    }
                    None => {
                        errors.push(bad(
                            origin,
                            format!("{place}.allow[{j}]"),
                            "must be a string",
                        ));
                        ok = false;
                    }
                }
            }
        }
        Some(_) => {
            errors.push(bad(
                origin,
                format!("{place}.allow"),
                "must be a list of node ids or `*` globs, e.g. [\"node-*\"]",
            ));
            ok = false;
        }
    }
    ok.then_some(ServiceSettings {
        name,
        target,
        allow,
    })
}

impl super::Settings {
    /// What `check` and the node's start report about the tables beyond their syntax: a
    /// forward port others can reach (they would use the peer's service as this node), a
    /// service that allows nobody, a forward whose peer has no `[peers]` address.
    pub(crate) fn check_forwards(&self, report: &mut Report) {
        for (i, f) in self.forward.iter().enumerate() {
            if !f.listen.ip().is_loopback() {
                report.push(Finding::warning(
                    "forward",
                    format!(
                        "forward[{i}].listen {} is not a loopback address: whoever can connect to it reaches {:?} on {} with this node's identity",
                        f.listen, f.service, f.peer
                    ),
                    "listen on 127.0.0.1 (or ::1) unless the network in front of it is trusted",
                ));
            }
            if f.peer != self.node_id && !self.peers.contains_key(&f.peer) {
                report.push(Finding::note(
                    "forward",
                    format!(
                        "forward[{i}].peer {:?} has no address in [peers]: the forward waits for a link with it from `seeds` or from its own dial",
                        f.peer
                    ),
                ));
            }
        }
        for (i, s) in self.service.iter().enumerate() {
            if s.allow.is_empty() {
                report.push(Finding::warning(
                    "service",
                    format!(
                        "service[{i}] {:?} has no `allow`: every stream to it is refused",
                        s.name
                    ),
                    "list the node ids that may open it, e.g. allow = [\"node-*\"]",
                ));
            }
        }
    }
}

/// `host:port` syntax: a non-empty host and a port number.
fn host_port(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match text.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{text:?} is not `host:port`, e.g. \"127.0.0.1:2380\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;

    fn errors(text: &str) -> Vec<String> {
        match Settings::from_toml_str(text, None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_three_tables_are_read() {
        let s = Settings::from_toml_str(
            "node_id = \"a\"\n[[forward]]\nlisten = \"127.0.0.1:12380\"\npeer = \"node-2\"\nservice = \"etcd-peer\"\n\
             [[service]]\nname = \"etcd-peer\"\ntarget = \"127.0.0.1:2380\"\nallow = [\"node-*\"]\n\
             [[service]]\nname = \"closed\"\ntarget = \"localhost:1\"\n\
             [peers]\nnode-2 = \"10.0.0.2:7000\"\n",
            None,
        )
        .unwrap();
        assert_eq!(s.forward.len(), 1);
        assert_eq!(s.forward[0].listen.port(), 12380);
        assert_eq!(s.service.len(), 2);
        assert!(s.service[0].allows("node-7"));
        assert!(!s.service[0].allows("other"));
        assert!(!s.service[1].allows("node-7"), "no allow: deny");
        assert_eq!(
            s.peers.get("node-2").map(String::as_str),
            Some("10.0.0.2:7000")
        );
    }

    #[test]
    fn each_bad_value_names_its_place() {
        let shown = errors(
            "[[forward]]\nlisten = \"nowhere\"\npeer = \"n\"\nservice = \"s\"\n\
             [[forward]]\nlisten = \"127.0.0.1:1\"\npeer = \"n\"\nsrvice = \"s\"\n\
             [[service]]\nname = \"s\"\ntarget = \"127.0.0.1:1\"\n\
             [[service]]\nname = \"s\"\ntarget = \"127.0.0.1:2\"\n\
             [[service]]\ntarget = \"h\"\n\
             [peers]\nnode-2 = 7000\n",
        );
        let has = |s: &str| shown.iter().any(|l| l.contains(s));
        assert!(has("`forward[0].listen`"), "{shown:#?}");
        assert!(has("`forward[1].srvice`: unknown field"), "{shown:#?}");
        assert!(has("`forward[1].service`: missing"), "{shown:#?}");
        assert!(
            has("`service[1].name`: a service named \"s\" is already defined"),
            "{shown:#?}"
        );
        assert!(has("`service[2].name`: missing"), "{shown:#?}");
        assert!(has("`peers.node-2`: must be a string"), "{shown:#?}");
        assert!(
            has("`service[2].target`: \"h\" is not `host:port`"),
            "{shown:#?}"
        );
        assert_eq!(shown.len(), 7, "{shown:#?}");
    }

    #[test]
    fn the_report_warns_of_open_forward_ports_and_services_nobody_may_open() {
        let s = Settings::from_toml_str(
            "node_id = \"node-1\"\n[[forward]]\nlisten = \"0.0.0.0:12380\"\npeer = \"node-2\"\nservice = \"e\"\n\
             [[service]]\nname = \"e\"\ntarget = \"127.0.0.1:1\"\n",
            None,
        )
        .unwrap();
        let mut report = crate::report::Report::default();
        s.check_forwards(&mut report);
        let shown: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].contains("0.0.0.0:12380 is not a loopback address"),
            "{shown:#?}"
        );
        assert!(shown[1].contains("no address in [peers]"), "{shown:#?}");
        assert!(shown[2].contains("has no `allow`"), "{shown:#?}");
    }

    /// The README's sidecar example is a valid config (both nodes' tables in one file).
    #[test]
    fn the_readme_example_reads() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let example = readme
            .split("`palisade node` is also a sidecar")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .expect("the README's sidecar example");
        let s = Settings::from_toml_str(example, None).unwrap();
        assert_eq!(s.forward[0].listen.port(), 12380);
        assert_eq!(
            s.peers.get("node-2").map(String::as_str),
            Some("10.0.0.2:7000")
        );
        assert!(s.service[0].allows("node-1"));
    }

    /// The etcd example of "Securing a program you did not write" is a valid config.
    #[test]
    fn the_readme_etcd_example_reads() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let example = readme
            .split("**etcd, three members.**")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .expect("the README's etcd example");
        let s = Settings::from_toml_str(example, None).unwrap();
        let ports: Vec<u16> = s.forward.iter().map(|f| f.listen.port()).collect();
        assert_eq!(ports, [2382, 2383]);
        assert_eq!(s.seeds.len(), 2);
        assert!(s.service[0].allows("node-3") && !s.service[0].allows("node-4"));
        assert_eq!(s.peers.len(), 2);
    }

    #[test]
    fn other_tables_are_still_refused() {
        let shown = errors("[cluster]\nname = \"x\"\n");
        assert!(shown[0].contains("unknown table `[cluster]`"), "{shown:#?}");
    }
}
