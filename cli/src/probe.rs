//! `palisade probe`: dial one node as a node would, and report each step — TCP connect,
//! TLS and the join, the peer's identity, a few ping round trips — or the step that
//! failed, with its own exit code (see `palisade --help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::Args;
use palisade::core::tls::{CertRefusal, CertSummary, TlsError};
use palisade::tokio::Connection;
use palisade::{ConnectionError, Dial, Endpoint, JoinError, LinkError, RejectCode};
use tokio::net::TcpStream;

use crate::exit::{self, CliError};
use crate::node::frame;
use crate::proto;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The config of the identity to probe with (e.g. DIR/probe/palisade.toml from
    /// `certs init`): its certificate, secret and cluster name are used.
    #[arg(long)]
    pub config: PathBuf,
    /// The node's address.
    pub addr: String,
    /// The node id the node must have (its join and, in CA mode, its certificate).
    #[arg(long)]
    pub expect_name: Option<String>,
    /// How many pings.
    #[arg(long, default_value_t = 3)]
    pub pings: u32,
}

/// What a successful probe saw.
#[derive(Debug, Clone)]
pub struct Probed {
    pub tcp: Duration,
    pub join: Duration,
    pub peer: palisade::PeerInfo,
    /// The certificate the peer presented on this link (`None` without TLS).
    pub cert: Option<PeerCert>,
    /// The node's INFO reply (its links; its own view of its certificate).
    pub info: Vec<(String, String)>,
    pub rtts: Vec<Duration>,
}

/// The peer's end-entity certificate as this side verified it: the serial (hex, as
/// `palisade certs show` prints it) and what it says.
#[derive(Debug, Clone)]
pub struct PeerCert {
    pub serial: String,
    pub summary: CertSummary,
}

impl PeerCert {
    /// From the link's TLS facts; `None` for a plaintext link (or a certificate
    /// x509-parser cannot read, which rustls would not have accepted).
    pub fn of(peer: &palisade::PeerInfo) -> Option<Self> {
        let der = &peer.tls.as_ref()?.certificate;
        Some(Self {
            serial: palisade::tls_load::serial_hex(der)?,
            summary: CertSummary::parse(der)?,
        })
    }

    /// Whole days from `now` (unix seconds) to the end of its validity; negative once
    /// expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.summary.not_after - now).div_euclid(86_400)
    }
}

pub fn run(args: &ProbeArgs) -> Result<ExitCode, CliError> {
    let (_, loaded) = palisade::Settings::load_checked(&args.config, SystemTime::now());
    let Some(config) = loaded.config else {
        println!("{}", loaded.report);
        return Err(CliError::new(
            exit::INVALID,
            format!("{} has errors", args.config.display()),
        )
        .hint(format!("palisade check --config {}", args.config.display())));
    };
    let own = Own {
        config: args.config.clone(),
        node_id: config.node_id.clone(),
        cert: config
            .tls
            .as_ref()
            .and_then(|tls| tls.identity.cert_chain.first())
            .map(|der| der.to_vec()),
    };
    let endpoint = Endpoint::new(config)
        .map_err(|e| CliError::new(exit::INVALID, "the settings cannot work").cause(&e))?;
    let probed = crate::runtime()?.block_on(probe_as(
        &endpoint,
        &args.addr,
        args.expect_name.as_deref(),
        args.pings,
        Some(&own),
    ))?;
    print(&args.addr, &probed);
    Ok(ExitCode::SUCCESS)
}

fn print(addr: &str, p: &Probed) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    println!("probe {addr}: joined");
    println!("  node id:      {}", p.peer.node_id);
    match &p.peer.tls {
        Some(tls) => {
            println!("  TLS:          {} {}", tls.version, tls.cipher_suite);
            println!("  cert names:   {}", tls.names);
        }
        None => println!("  TLS:          off (plaintext)"),
    }
    if let Some(cert) = &p.cert {
        println!("  cert serial:  {}", cert.serial);
        println!("  cert issuer:  {}", cert.summary.issuer);
        println!("  days left:    {}", cert.days_left(now));
    }
    let v = |k| proto::info_value(&p.info, k).unwrap_or("?");
    println!(
        "  key id:       {}",
        p.peer
            .key_id
            .map_or("none (no shared secret)".into(), |k| k.to_string())
    );
    println!("  clock skew:   {} ms", p.peer.clock_skew_ms);
    println!("  peer's links: {}", v("links"));
    println!("  TCP connect:  {:.2} ms", ms(p.tcp));
    println!("  TLS + join:   {:.2} ms", ms(p.join));
    let rtts: Vec<String> = p.rtts.iter().map(|d| format!("{:.3} ms", ms(*d))).collect();
    println!("  ping RTTs:    {}", rtts.join(", "));
    println!("  (all but the peer's links is what this side saw on the link: the certificate as TLS verified it)");
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Dials, joins, asks for INFO, pings; or the failing step as a [`CliError`].
pub async fn probe(
    endpoint: &Endpoint,
    addr: &str,
    expect: Option<&str>,
    pings: u32,
) -> Result<Probed, CliError> {
    probe_as(endpoint, addr, expect, pings, None).await
}

/// The probing identity, to say which of its own files revoke it when the peer says
/// it is revoked.
#[derive(Debug, Clone)]
pub struct Own {
    /// Its config (naming revocation_file and tls_crl_files).
    pub config: PathBuf,
    pub node_id: String,
    /// Its certificate (DER), with TLS.
    pub cert: Option<Vec<u8>>,
}

impl Own {
    /// Exit 12, "revoked: serial ... in FILE" (the entry of this node's own files that
    /// lists it), or that none of them does.
    fn revoked(&self, addr: &str, e: &LinkError) -> CliError {
        let by = match e {
            LinkError::Link(ConnectionError::Join(_)) => "REJECT 13",
            _ => "the TLS alert certificate_revoked",
        };
        let listed = crate::certs::revoke::Sources::for_config(&self.config)
            .and_then(|s| s.revokes_node(self.cert.as_deref(), &self.node_id));
        let message = match listed {
            Some(entry) => format!("revoked: {entry}"),
            None => format!(
                "revoked by the peer ({by}); this node's files do not list it ({} names them)",
                self.config.display()
            ),
        };
        CliError::new(exit::REVOKED, message)
            .cause(e)
            .hint(format!(
                "{addr} refuses this node for good: it was removed from the cluster (`palisade certs revoke`); a new node needs a new certificate (`palisade certs issue`) and must not be on the peer's revocation list"
            ))
    }
}

/// Whether the peer refused this node as revoked: TLS alert `certificate_revoked`, or
/// REJECT 13.
pub fn revoked_by_peer(e: &LinkError) -> bool {
    match e {
        LinkError::Link(ConnectionError::Tls(TlsError::RefusedByPeer { alert })) => {
            alert == "certificate_revoked"
        }
        LinkError::Link(ConnectionError::Join(JoinError::RefusedByPeer(r))) => {
            r.code == RejectCode::Revoked
        }
        _ => false,
    }
}

/// [`probe`], naming this node's own revocation entry when the peer says it is revoked.
pub async fn probe_as(
    endpoint: &Endpoint,
    addr: &str,
    expect: Option<&str>,
    pings: u32,
    own: Option<&Own>,
) -> Result<Probed, CliError> {
    let timeout = Duration::from_secs(5);
    let t0 = Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(CliError::new(
            exit::TCP,
            format!("TCP connect to {addr} failed"),
        )
        .cause(&e)
        .hint("is the node running and listening there? check its `listen` and any firewall")),
        Err(_) => {
            return Err(CliError::new(
                exit::TCP,
                format!("TCP connect to {addr} timed out after {timeout:?}"),
            )
            .hint("is the address reachable?"))
        }
    };
    let tcp = t0.elapsed();
    let t1 = Instant::now();
    let dial = Dial::new(addr).expect_peer_opt(expect);
    let mut conn = palisade::tokio::connect_stream(endpoint, stream, &dial)
        .await
        .map_err(|e| match own {
            Some(own) if revoked_by_peer(&e) => own.revoked(addr, &e),
            _ => classify(addr, &e),
        })?;
    let join = t1.elapsed();
    let peer = conn.peer().clone();
    let after = |what: &str, e: Option<LinkError>| {
        let err = CliError::new(exit::AFTER_JOIN, format!("joined {addr}, but {what}"));
        match e {
            Some(e) => err.cause(&e),
            None => err,
        }
        .hint("is the peer a `palisade node`? other applications need not answer the CLI's pings")
    };
    let info = match exchange(&mut conn, frame(proto::INFO_REQUEST, b""), proto::INFO).await {
        Ok(body) => proto::parse_info(&body),
        Err(e) => return Err(after("it did not answer INFO", e)),
    };
    let mut rtts = Vec::new();
    for i in 0..pings {
        let t = Instant::now();
        match exchange(&mut conn, frame(proto::PING, &i.to_be_bytes()), proto::PONG).await {
            Ok(_) => rtts.push(t.elapsed()),
            Err(e) => return Err(after("a ping went unanswered", e)),
        }
    }
    conn.close(palisade::CloseReason::normal()).await;
    Ok(Probed {
        tcp,
        join,
        cert: PeerCert::of(&peer),
        peer,
        info,
        rtts,
    })
}

/// Sends `request` and waits (up to 5 s) for a frame of kind `reply`; its body.
pub async fn exchange(
    conn: &mut Connection,
    request: Bytes,
    reply: u8,
) -> Result<Bytes, Option<LinkError>> {
    conn.send(request).await.map_err(Some)?;
    let wait = async {
        loop {
            match conn.recv().await {
                Ok(Some(f)) if f.first() == Some(&reply) => return Ok(f.slice(1..)),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(None),
                Err(e) => return Err(Some(e)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .map_err(|_| None)?
}

/// The step a failed dial failed at, as its exit code and message.
pub fn classify(addr: &str, e: &LinkError) -> CliError {
    let (code, step, hint) = step_of(e);
    CliError::new(code, format!("{step} with {addr} failed"))
        .cause(e)
        .hint(hint)
}

/// (exit code, step name, hint) of a failed dial.
pub fn step_of(e: &LinkError) -> (u8, &'static str, &'static str) {
    const TLS_HINT: &str =
        "compare both nodes' CA bundles and certificates: `palisade certs show tls.crt` on each";
    const AUTHZ_HINT: &str = "the certificate is trusted but its names are not allowed: check verify_hostname, allowed_names, node_id_in_cert and --expect-name";
    const JOIN_HINT: &str = "compare `palisade secret id --file SECRET` and cluster_name on both nodes, and their clocks";
    const REVOKED_HINT: &str = "this node was removed from the cluster (`palisade certs revoke`): its certificate, node id or secret is on the peer's revocation list";
    if revoked_by_peer(e) {
        return (exit::REVOKED, "authorization (revoked)", REVOKED_HINT);
    }
    match e {
        LinkError::Io(_) | LinkError::NoAddress(_) => (
            exit::TCP,
            "TCP connect",
            "is the node running and listening there?",
        ),
        LinkError::Setup(_) | LinkError::Config(_) => (exit::TLS, "TLS setup", TLS_HINT),
        LinkError::Link(ConnectionError::Tls(TlsError::CertificateRefused(r))) => match **r {
            CertRefusal::HostnameMismatch { .. }
            | CertRefusal::NameNotAllowed { .. }
            | CertRefusal::NoSharedName { .. } => {
                (exit::AUTHORIZATION, "authorization", AUTHZ_HINT)
            }
            _ => (exit::TLS, "TLS", TLS_HINT),
        },
        LinkError::Link(ConnectionError::Tls(_) | ConnectionError::Preface(_)) => {
            (exit::TLS, "TLS", TLS_HINT)
        }
        LinkError::Link(ConnectionError::Join(j))
            if j.rejection().code == RejectCode::IdentityNotAllowed =>
        {
            (exit::AUTHORIZATION, "authorization", AUTHZ_HINT)
        }
        LinkError::Link(
            ConnectionError::Join(JoinError::RefusedByPeer(_) | JoinError::RefusedPeer(_))
            | ConnectionError::Join(_),
        ) => (exit::JOIN, "the join", JOIN_HINT),
        _ => (exit::JOIN, "the join", JOIN_HINT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, InitArgs, Names, PROBE_ID};

    /// The probe shows the certificate TLS verified, not what the node says of itself:
    /// against an application that answers the CLI's INFO and PING but reports no
    /// certificate, it still prints the serial `certs init` wrote, its issuer and days
    /// left.
    #[test]
    fn the_peer_certificate_shown_is_the_one_tls_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let made = certs::init(
            &InitArgs {
                dir: tmp.path().join("c"),
                nodes: vec!["node-1".into()],
                names: Names {
                    dns: Vec::new(),
                    ip: vec![[127, 0, 0, 1].into()],
                    days: 30,
                },
                cluster: "probe-test".into(),
                host: [127, 0, 0, 1].into(),
                base_port: 1,
                force: false,
            },
            &[1],
        )
        .unwrap();
        let load = |node: &str| {
            let (_, loaded) =
                palisade::Settings::load_checked(made.config(node), SystemTime::now());
            loaded.config.expect("loads")
        };
        let node = load("node-1");
        let der = node.tls.as_ref().unwrap().identity.cert_chain[0].clone();
        let serial = palisade::tls_load::serial_hex(&der).unwrap();
        let runtime = crate::runtime().unwrap();
        let probed = runtime.block_on(async {
            let listener = palisade::tokio::Listener::bind("127.0.0.1:0", node)
                .await
                .unwrap();
            let addr = listener.local_addr().to_string();
            let app = tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await;
                while let Ok(Some(f)) = conn.recv().await {
                    let reply = match f.first() {
                        Some(&proto::INFO_REQUEST) => frame(proto::INFO, b"node_id=node-1\n"),
                        _ => frame(proto::PONG, &f[1..]),
                    };
                    if conn.send(reply).await.is_err() {
                        break;
                    }
                }
            });
            let endpoint = Endpoint::new(load(PROBE_ID)).unwrap();
            let probed = tokio::time::timeout(
                Duration::from_secs(20),
                probe(&endpoint, &addr, Some("node-1"), 1),
            )
            .await
            .expect("bounded")
            .unwrap();
            app.abort();
            probed
        });
        let cert = probed.cert.expect("a TLS link has a certificate");
        assert_eq!(cert.serial, serial);
        assert!(cert.summary.issuer.contains("palisade"), "{cert:?}");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((28..=30).contains(&cert.days_left(now)), "{cert:?}");
        assert_eq!(proto::info_value(&probed.info, "cert_serial"), None);
    }
}
