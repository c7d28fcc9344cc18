//! The one list of every settings key: what the loader accepts, what did-you-mean
//! suggests from, how an environment value is read, and the README's table (a test
//! checks the README against [`markdown_table`], and the defaults against
//! `Settings::default()`, so none of them can drift).

/// How a key's value is written (decides how its environment variable is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A file path.
    Path,
    /// A whole number.
    Int,
    /// A number (may have a fraction).
    Float,
    /// `true` or `false`.
    Bool,
    /// A human duration (`"10s"`).
    Duration,
    /// A list; comma-separated in the environment.
    List,
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// What a value of this kind looks like, for error messages.
    pub fn expected(self) -> String {
        match self {
            Self::Text => "text".into(),
            Self::Path => "a file path".into(),
            Self::Int => "a whole number, e.g. 1024".into(),
            Self::Float => "a number, e.g. 20 or 0.5".into(),
            Self::Bool => "true or false".into(),
            Self::Duration => "a duration with a unit, e.g. 250ms, 10s, 5m, 1h".into(),
            Self::List => "a comma-separated list".into(),
            Self::Choice(words) => format!("one of: {}", words.join(", ")),
        }
    }
}

/// One settings key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key in the config file.
    pub name: &'static str,
    /// How its value is written.
    pub kind: Kind,
    /// Its default, as written in the config file; `None`: unset by default.
    pub default: Option<&'static str>,
    /// What it means.
    pub meaning: &'static str,
}

impl Key {
    /// Its environment variable: `PALISADE_` and the key in upper case.
    pub fn env(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }
}

/// The prefix of every environment variable palisade reads.
pub const ENV_PREFIX: &str = "PALISADE_";

/// `PALISADE_*` variables of palisade's own tests, benches and tools, not settings: the
/// loader ignores them instead of calling them unknown.
pub const NOT_SETTINGS: &[&str] = &[
    "PALISADE_BENCH_QUICK",
    "PALISADE_BENCH_ROUNDS",
    "PALISADE_MEMORY_PROFILE",
    "PALISADE_PRINT_VECTORS",
    "PALISADE_WRITE_FUZZ_CORPUS",
];

const fn key(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    meaning: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        meaning,
    }
}

use Kind::*;

/// Every key, in the order of the README table.
pub const KEYS: &[Key] = &[
    key("cluster_name", Text, None, "The cluster's name (1–255 bytes); peers of another cluster are refused. Required."),
    key("node_id", Text, None, "This node's id (1–255 bytes), sent in the join. Required."),
    key("listen", Text, None, "Address to accept links on, `host:port` (e.g. `0.0.0.0:7000`). Unset: this node only dials."),
    key("seeds", List, Some("[]"), "Peers to dial at start, `host:port` each."),
    key("metrics_listen", Text, None, "`palisade node` serves HTTP on this address, `host:port` (e.g. `127.0.0.1:9464`): `/metrics` (Prometheus), `/healthz`, `/readyz` (every seed joined or given up). Unset: off."),
    key("audit_log", Path, None, "`palisade node` appends one JSON object per line to this file for each join, join refusal, link closed by a reload (revoked, no longer authorized) and reload. Never a secret. Unset: off."),
    key("shared_secret", Text, None, "The join secret (at least 32 bytes). Give it through the environment, not the file. Never printed."),
    key("shared_secret_file", Path, None, "File holding the join secret (surrounding whitespace removed). Not together with `shared_secret`."),
    key("accepted_secret_files", List, Some("[]"), "Files each holding one more secret accepted from peers (a rotation's other secret), same format as `shared_secret_file`; an empty file accepts nothing, so a rotation only changes file contents."),
    key("tls_enabled", Bool, Some("false"), "TLS under the frame stream."),
    key("tls_cert_file", Path, None, "This node's certificate chain, PEM, leaf first."),
    key("tls_key_file", Path, None, "This node's private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC)."),
    key("tls_ca_file", Path, None, "CA bundle peers are checked against, PEM; one or more CAs."),
    key("tls_crl_files", List, Some("[]"), "X.509 CRLs (PEM or DER, e.g. from `palisade certs revoke` or `openssl ca -gencrl`), each signed by a CA of `tls_ca_file`: a peer certificate one of them lists is refused (alert `certificate_revoked`). A CRL that cannot be read, is not signed by a CA of the bundle or is past its nextUpdate is an error (at a reload: the last good set stays). Not with `tls_trust = \"pinned\"`."),
    key("tls_trust", Choice(&["ca", "pinned"]), Some("ca"), "`ca`: mutual TLS against `tls_ca_file`; `pinned`: every node shares the one self-signed `tls_cert_file` (development)."),
    key("verify_hostname", Bool, None, "The dialer checks that the acceptor's certificate names the host it dialed (or the name it was told to check). Unset: on with `tls_trust = \"ca\"`, off when pinned."),
    key("same_name_as_own_cert", Bool, None, "The peer's certificate must share a DNS name with this node's (Akka's rule). Unset: off."),
    key("allowed_names", List, Some("[]"), "Name patterns (`*.svc.cluster.local`) one of the peer certificate's names must match. Empty: no allow-list."),
    key("node_id_in_cert", Bool, None, "The peer's node id must be, byte for byte, one of its certificate's DNS names. Unset: on with `tls_trust = \"ca\"`, off when pinned."),
    key("allowed_peers", List, Some("[]"), "Node ids allowed on the other end of a link, exact or with `*` globs (`node-*`); checked at the join on both sides and on every joined link at each reload. Empty: any node id (with TLS in CA mode still one its certificate names)."),
    key("revocation_file", Path, None, "The deny-list: lines `node-id ID`, `serial HEX ISSUER`, `spki-sha256 HEX` or `key-id HEX`, each optionally followed by ` # reason`. Revoked peers are refused and, at a reload, their joined links closed. Missing or unreadable: an error; empty: nothing revoked."),
    key("close_on_peer_expiry", Bool, Some("true"), "Close a joined link when the peer's certificate expires. `false`: a link outlives its peer's certificate, as a TLS session does."),
    key("min_tls", Choice(&["1.2", "1.3"]), Some("1.2"), "Lowest TLS version (1.3 is preferred either way)."),
    key("cipher_suites", List, Some("[]"), "IANA cipher suite names in preference order. Empty: rustls's defaults."),
    key("mode", Choice(&["strict", "permissive"]), Some("strict"), "`permissive` only while moving a running cluster to TLS or to a shared secret: the listener then also accepts plaintext peers and peers without the secret (reported on every such link); dials are unchanged. Needs TLS or a secret to move to."),
    key("max_frame", Int, Some("8388608"), "Largest frame payload accepted from a peer, bytes (1 to 4294967295)."),
    key("handshake_timeout", Duration, Some("10s"), "From the start of a link to joined, or it is closed."),
    key("connect_timeout", Duration, Some("5s"), "How long dialing a peer's TCP port may take."),
    key("clock_skew_tolerance", Duration, Some("5m"), "How far a join's timestamp may be from this node's clock."),
    key("clock_ahead_tolerance", Duration, Some("30s"), "How far ahead of this node's clock a plaintext join may be dated (at most `clock_skew_tolerance`)."),
    key("first_bytes_timeout", Duration, Some("2s"), "Listener: from accept to the peer's first byte (below `handshake_timeout`)."),
    key("replay_cache_capacity", Int, Some("16384"), "Nonces of plaintext joins remembered against replay."),
    key("replay_cache_per_source", Int, Some("1024"), "The share of the replay cache (plaintext joins with a secret) one node id may hold, and one source address (IPv6 per /64), each: a node flooding its own joins locks out only itself."),
    key("send_buffer_limit", Int, Some("1048576"), "Bytes of outgoing frames buffered before `send` reports full."),
    key("recv_buffer_limit", Int, Some("1048576"), "Bytes received but not yet taken before a link stops reading."),
    key("max_unjoined", Int, Some("1024"), "Listener: connections not yet joined, all sources; past it one is evicted (silent before mid-handshake, from the network (IPv4 /24, IPv6 /48) and then the address holding the most, never one younger than `min_evict_age`), else the newest is refused."),
    key("max_unjoined_per_source", Int, Some("32"), "Listener: connections not yet joined from one address (IPv6: one /64); past it the address's oldest silent connection gives way, else the newest is refused."),
    key("new_connection_rate_per_source", Float, Some("20.0"), "Listener: handshakes per second one address may start, sustained: a connection starts one with its first bytes (past the rate it is closed unread); silent connections take none."),
    key("new_connection_burst_per_source", Int, Some("40"), "Listener: handshakes one address may start at once above the rate."),
    key("failed_join_rate_per_source", Float, Some("1.0"), "Listener: failed joins per second one address may cause, sustained."),
    key("failed_join_burst_per_source", Int, Some("10"), "Listener: failed joins one address may cause at once before it is backed off."),
    key("source_backoff", Duration, Some("15s"), "Listener: how long an address whose failed joins ran out is refused."),
    key("min_evict_age", Duration, Some("1s"), "Listener: the youngest unjoined connection that may be evicted to make room (at `max_unjoined`), so a join over a slow link can finish; raised on its own to 3 × the 99th percentile of the join times seen (at most 10 s). `0`: only that."),
    key("reload_interval", Duration, Some("10s"), "How often the certificate, key, CA, CRL, revocation and secret files are re-read (by content) and a complete, valid new set taken; the certificate's expiry is re-checked then too. `0`: only on demand."),
];

/// A table of the config file (`[[forward]]`, `[[service]]`, `[peers]`): read by
/// `settings::forward`, listed in the README's table after the keys. The environment
/// cannot express tables, so they have no variable.
#[derive(Debug, Clone, Copy)]
pub struct TableKey {
    /// The table as written in the file, e.g. `[[forward]]`.
    pub header: &'static str,
    /// Its fields, `name = example` each.
    pub fields: &'static str,
    /// What it means.
    pub meaning: &'static str,
}

/// Every table, in the order of the README table (after [`KEYS`]).
pub const TABLES: &[TableKey] = &[
    TableKey {
        header: "[[forward]]",
        fields: "`listen = \"127.0.0.1:12380\"`, `peer = \"node-2\"`, `service = \"etcd-peer\"`",
        meaning: "`palisade node`: a local plaintext TCP port whose connections become streams to `service` on node `peer`, over the joined link (the peer's address from `[peers]`, or a link already joined, e.g. to a seed). No link: the connection is reset. One table per port; all fields required. Errors name the place, counting from 0: `forward[0].listen`.",
    },
    TableKey {
        header: "[[service]]",
        fields: "`name = \"etcd-peer\"`, `target = \"127.0.0.1:2380\"`, `allow = [\"node-*\"]`",
        meaning: "`palisade node`: a local `target` peers may reach by `name` (unique). `allow`: node ids (exact or `*` globs) that may open it, checked against the link's authenticated node id; absent or empty: nobody. Refused streams are reset and logged on both ends. SIGHUP applies changes live; streams no longer allowed are reset.",
    },
    TableKey {
        header: "[peers]",
        fields: "`node-2 = \"10.0.0.2:7000\"`",
        meaning: "`palisade node`: addresses to dial (kept joined, like `seeds`) for the node ids that `[[forward]]` tables name.",
    },
];

/// The key named `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The known key closest to `unknown` (a typo, another framework's spelling), if one
/// is close enough to be a plausible meaning.
pub fn did_you_mean(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase().replace(['-', '.'], "_");
    KEYS.iter()
        .map(|k| {
            // A key written without its suffix (`tls_cert` for `tls_cert_file`).
            let prefix = unknown.len() >= 4 && k.name.starts_with(unknown.as_str());
            let d = if prefix {
                1
            } else {
                edit_distance(&unknown, k.name)
            };
            (d, k.name)
        })
        .filter(|(d, name)| *d <= (name.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = i;
        let mut next = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = next.last().copied().unwrap_or(usize::MAX);
            let substitute = diagonal + usize::from(ca != *cb);
            next.push(substitute.min(above + 1).min(left + 1));
            diagonal = above;
        }
        row = next;
    }
    row.last().copied().unwrap_or(0)
}

/// The README's configuration table, generated from [`KEYS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| key | environment | default | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        let default = match k.default {
            Some(d) => format!("`{d}`"),
            None => "unset".into(),
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            k.name,
            k.env(),
            default,
            k.meaning
        ));
    }
    for t in TABLES {
        out.push_str(&format!(
            "| `{}` {} | none (file only) | unset | {} |\n",
            t.header, t.fields, t.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_other_spellings_find_the_key() {
        assert_eq!(did_you_mean("cluster-name"), Some("cluster_name"));
        assert_eq!(did_you_mean("node_ids"), Some("node_id"));
        assert_eq!(did_you_mean("tls_cert"), Some("tls_cert_file"));
        assert_eq!(did_you_mean("handshake_timout"), Some("handshake_timeout"));
        assert_eq!(did_you_mean("sharedSecret"), Some("shared_secret"));
        assert_eq!(did_you_mean("completely_unrelated"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn env_names_are_the_prefix_and_the_key_in_upper_case() {
        assert_eq!(
            find("tls_cert_file").map(Key::env).as_deref(),
            Some("PALISADE_TLS_CERT_FILE")
        );
        let mut names: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len(), "a key is listed twice");
    }
}
