//! `palisade demo`: no arguments, offline. A temporary CA, node certificates and secret
//! (the code of `certs init`), three `palisade node` processes on loopback, intruders
//! refused with their reasons on both ends, a three-step secret rotation and a
//! certificate rotation while traffic flows, throughput and join latency, and a summary
//! of every expectation. Exit 0 only if all held. The node processes are killed and the
//! temp dir removed on every way out, Ctrl-C included (the runtime drops both).

mod remove_node;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use palisade::tokio::Connection;
use palisade::{Dial, Endpoint, LinkError, RejectCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::{Child, Command};

use crate::certs::{self, InitArgs, Names, PROBE_ID};
use crate::exit::{self, CliError};
use crate::node::frame;
use crate::probe::{self, ms, Probed};
use crate::proto;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temp dir (certificates, configs, node logs) and print its path.
    #[arg(long)]
    pub keep: bool,
}

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const WAIT: Duration = Duration::from_secs(15);

pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let tmp = tempfile::Builder::new()
        .prefix("palisade-demo-")
        .tempdir()
        .map_err(|e| CliError::new(exit::IO, "cannot make a temp dir").cause(&e))?;
    let rt = crate::runtime()?;
    let outcome = rt.block_on(async {
        // Handlers first: a Ctrl-C at any later point ends the demo through its cleanup.
        let interrupted = interrupted()?;
        let mut demo = Demo::new(tmp.path().to_path_buf());
        tokio::select! {
            r = demo.run() => r.map(|()| demo),
            _ = interrupted => Err(CliError::new(exit::DEMO_FAILED, "interrupted; nodes stopped, temp dir removed")),
        }
    });
    // The runtime (and with it every node process, kill_on_drop) goes first.
    drop(rt);
    if args.keep {
        println!("kept {}", tmp.keep().display());
    }
    let demo = outcome?;
    println!();
    println!("{:<4} {:<58} observed", "", "expectation");
    for (ok, what, seen) in &demo.expectations {
        println!("{:<4} {what:<58} {seen}", if *ok { "ok" } else { "FAIL" });
    }
    let failed = demo.expectations.iter().filter(|e| !e.0).count();
    println!(
        "{} expectation(s), {failed} failed",
        demo.expectations.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::DEMO_FAILED)
    })
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed before it returns.
fn interrupted() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler =
        |kind| signal(kind).map_err(|e| fail("cannot install a signal handler").cause(&e));
    let (mut int, mut term) = (
        handler(SignalKind::interrupt())?,
        handler(SignalKind::terminate())?,
    );
    Ok(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    })
}

struct NodeProc {
    name: &'static str,
    addr: String,
    child: Child,
    log: PathBuf,
}

impl NodeProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        }
    }
}

struct Demo {
    dir: PathBuf,
    nodes: Vec<NodeProc>,
    expectations: Vec<(bool, String, String)>,
    step: usize,
    /// The traffic link's dialer: it takes the probe's settings at every rotation step,
    /// as a node's dialer does, so its joined link re-joins in place when the nodes
    /// drop the old secret.
    traffic: Option<palisade::tokio::Dialer>,
}

fn fail(message: impl Into<String>) -> CliError {
    CliError::new(exit::DEMO_FAILED, message)
}

/// A base port with three free loopback ports after it.
fn free_ports() -> Result<u16, CliError> {
    for _ in 0..100 {
        let Ok(first) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(base) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if base > 65_000 {
            continue;
        }
        drop(first);
        let held: Vec<_> = (0..3)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == 3 {
            return Ok(base);
        }
    }
    Err(fail("no three free loopback ports"))
}

fn endpoint(config: &Path) -> Result<Endpoint, CliError> {
    let (_, loaded) = palisade::Settings::load_checked(config, SystemTime::now());
    let config = loaded.config.ok_or_else(|| {
        fail(format!(
            "{} does not load:\n{}",
            config.display(),
            loaded.report
        ))
    })?;
    Endpoint::new(config).map_err(|e| fail("settings").cause(&e))
}

/// Dials `addr` from the loopback address `source` (so the node's per-source admission
/// sees each intruder as itself) and joins.
async fn dial_from(
    endpoint: &Endpoint,
    addr: &str,
    source: [u8; 4],
) -> Result<Connection, LinkError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket
        .connect(
            addr.parse()
                .map_err(|_| LinkError::NoAddress(addr.into()))?,
        )
        .await?;
    palisade::tokio::connect_stream(endpoint, stream, &Dial::new(addr)).await
}

fn links_of(p: &Probed) -> Vec<String> {
    let mut links: Vec<String> = proto::info_value(&p.info, "links")
        .unwrap_or_default()
        .split(',')
        .filter(|l| l.starts_with("node-"))
        .map(str::to_owned)
        .collect();
    links.sort();
    links
}

impl Demo {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            nodes: Vec::new(),
            expectations: Vec::new(),
            step: 0,
            traffic: None,
        }
    }

    fn say(&mut self, what: &str) {
        self.step += 1;
        println!("[{}] {what}", self.step);
    }

    fn expect(&mut self, ok: bool, what: impl Into<String>, seen: impl Into<String>) {
        let (what, seen) = (what.into(), seen.into());
        println!("    {} {what}: {seen}", if ok { "ok  " } else { "FAIL" });
        self.expectations.push((ok, what, seen));
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.join("cluster").join(node).join("palisade.toml")
    }

    async fn probe(&self, node: usize) -> Result<Probed, CliError> {
        let addr = &self.nodes[node].addr;
        probe::probe(
            &endpoint(&self.config(PROBE_ID))?,
            addr,
            Some(self.nodes[node].name),
            1,
        )
        .await
    }

    async fn run(&mut self) -> Result<(), CliError> {
        self.say("certificates: a cluster CA, three node certificates, a probe identity and a shared secret (certs init)");
        let base = free_ports()?;
        let made = certs::init(
            &InitArgs {
                dir: self.dir.join("cluster"),
                nodes: NODES.iter().map(|s| (*s).to_owned()).collect(),
                names: Names {
                    dns: Vec::new(),
                    ip: Vec::new(),
                    days: 30,
                },
                cluster: "demo".into(),
                host: [127, 0, 0, 1].into(),
                base_port: base,
                force: false,
            },
            &[base, base + 1, base + 2],
        )?;
        println!("    in {}", made.dir.display());

        self.say("three `palisade node` processes on loopback");
        let exe =
            std::env::current_exe().map_err(|e| fail("cannot find this program").cause(&e))?;
        let started = Instant::now();
        for (i, name) in NODES.iter().enumerate() {
            let log = self.dir.join(format!("{name}.log"));
            let file = std::fs::File::create(&log).map_err(|e| exit::io("create", &log, &e))?;
            let child = Command::new(&exe)
                .args(["node", "--config"])
                .arg(self.config(name))
                .args(["--reload-interval", "300ms"])
                .env_remove("PALISADE_SHARED_SECRET")
                .stdout(std::process::Stdio::null())
                .stderr(file)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| fail("cannot start a node").cause(&e))?;
            let addr = format!("127.0.0.1:{}", base + i as u16);
            println!(
                "    {name}: pid {} listening on {addr}",
                child.id().unwrap_or(0)
            );
            self.nodes.push(NodeProc {
                name,
                addr,
                child,
                log,
            });
        }
        let mut all_joined = false;
        while started.elapsed() < WAIT && !all_joined {
            tokio::time::sleep(Duration::from_millis(100)).await;
            all_joined =
                (0..3).all(|i| self.nodes[i].log().matches("INFO joined node-").count() >= 2);
        }
        let formed = started.elapsed();
        self.expect(
            all_joined,
            "three nodes start and join each other (3 links)",
            format!("cluster formed {:.0} ms after start", ms(formed)),
        );
        let mut links_before = Vec::new();
        let mut joins = Vec::new();
        for i in 0..3 {
            let p = self.probe(i).await?;
            joins.push(p.join);
            println!(
                "    {}: links [{}]",
                self.nodes[i].name,
                links_of(&p).join(", ")
            );
            links_before.push(links_of(&p));
        }
        joins.sort();
        self.expect(
            links_before.iter().all(|l| l.len() == 2),
            "every node has one link to each other node",
            format!(
                "{:?}",
                links_before.iter().map(Vec::len).collect::<Vec<_>>()
            ),
        );
        let join_ms = ms(joins[1]);

        self.intruders().await?;

        self.say("traffic starts on a link to node-1 while the rotations run");
        let dialer = palisade::tokio::Dialer::new(endpoint(&self.config(PROBE_ID))?);
        let client = dialer
            .connect(&self.nodes[0].addr)
            .await
            .map_err(|e| fail("the traffic link did not join").cause(&e))?;
        self.traffic = Some(dialer);
        let traffic = Traffic::start(client);

        self.rotate_secret().await?;
        self.rotate_cert().await?;

        self.say("after the rotations: the same links, traffic unbroken");
        let mut links_after = Vec::new();
        for i in 0..3 {
            links_after.push(links_of(&self.probe(i).await?));
        }
        self.expect(
            links_after == links_before,
            "no node-to-node link dropped during the rotations",
            format!("{links_after:?}"),
        );
        let stats = traffic.stop().await;
        self.expect(
            stats.error.is_none() && stats.pongs > 0,
            "traffic link kept up through every rotation",
            match &stats.error {
                None => format!(
                    "{} MiB sent, {} ping(s) answered, worst RTT {:.2} ms",
                    stats.bytes >> 20,
                    stats.pongs,
                    ms(stats.worst_rtt)
                ),
                Some(e) => e.clone(),
            },
        );

        self.say("throughput: 2 s of 16 KiB frames to node-1, then a ping to see them all arrive");
        let client =
            palisade::tokio::connect_with(&endpoint(&self.config(PROBE_ID))?, &self.nodes[0].addr)
                .await
                .map_err(|e| fail("the throughput link did not join").cause(&e))?;
        let (mib_s, frames) = throughput(client).await?;
        self.expect(
            mib_s > 0.0,
            "throughput over one TLS link (debug builds are slower)",
            format!("{mib_s:.1} MiB/s ({frames} frames)"),
        );
        self.expect(
            true,
            "join latency (TCP connect excluded: TLS + join)",
            format!("median {join_ms:.2} ms of 3 probes"),
        );

        self.remove_node().await?;

        self.say("SIGTERM to every node: links closed with CLOSE, exit 0");
        for n in &self.nodes {
            n.signal("-TERM");
        }
        let mut codes = Vec::new();
        for i in 0..3 {
            let status =
                tokio::time::timeout(Duration::from_secs(10), self.nodes[i].child.wait()).await;
            codes.push(status.ok().and_then(Result::ok).and_then(|s| s.code()));
        }
        let closed = self
            .nodes
            .iter()
            .all(|n| n.log().contains("CLOSE sent") || n.log().contains("closed by the peer"));
        self.expect(
            codes.iter().all(|c| *c == Some(0)) && closed,
            "every node exits 0 after closing its links",
            format!("exit codes {codes:?}"),
        );
        Ok(())
    }

    /// Waits (3 s at most) for a refusal of `source` in node-1's log; its reason.
    async fn node_refusal(&self, source: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let log = self.nodes[0].log();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("refused a link") && l.contains(&format!("peer={source}:")))
            {
                let reason = line.split_once("refused a link: ").map_or(line, |(_, r)| r);
                return Some(
                    reason
                        .rsplit_once(" peer=")
                        .map_or(reason, |(r, _)| r)
                        .to_owned(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, CliError> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| exit::io("write", &path, &e))?;
        Ok(path)
    }

    async fn intruder(
        &mut self,
        what: &str,
        config: &Path,
        source: [u8; 4],
        client_ok: impl Fn(&LinkError) -> bool,
        node_says: &str,
    ) -> Result<(), CliError> {
        let src = std::net::Ipv4Addr::from(source).to_string();
        let result = dial_from(&endpoint(config)?, &self.nodes[0].addr, source).await;
        let node_side = self.node_refusal(&src).await;
        let (ok, seen) = match (&result, &node_side) {
            (Err(e), Some(reason)) => (
                client_ok(e) && reason.contains(node_says),
                format!("intruder: {e}\n{:63}node-1: {reason}", ""),
            ),
            (Ok(_), _) => (false, "the intruder joined!".to_owned()),
            (Err(e), None) => (false, format!("intruder: {e}; node-1 logged no refusal")),
        };
        self.expect(ok, what, seen);
        Ok(())
    }

    async fn intruders(&mut self) -> Result<(), CliError> {
        let cluster = self.dir.join("cluster");
        let probe_cfg = std::fs::read_to_string(cluster.join(PROBE_ID).join("palisade.toml"))
            .map_err(|e| exit::io("read", &cluster, &e))?;
        let without = |text: &str, key: &str| -> String {
            text.lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        };

        self.say("intruder 1: the right certificate, the wrong shared secret (from 127.0.0.11)");
        let secret = self.write("wrong-secret", &crate::secret::generate()?)?;
        let cfg = format!(
            "{}shared_secret_file = {:?}\n",
            without(&probe_cfg, "shared_secret_file"),
            secret.display().to_string()
        );
        let cfg = self.write("intruder-secret.toml", &cfg)?;
        self.intruder(
            "wrong secret refused at the join",
            &cfg,
            [127, 0, 0, 11],
            |e| {
                matches!(
                    e.reject_code(),
                    Some(RejectCode::UnknownKey | RejectCode::AuthenticationFailed)
                )
            },
            "unknown key",
        )
        .await?;

        self.say("intruder 2: a certificate from another CA (from 127.0.0.12)");
        let foreign = certs::init(
            &InitArgs {
                dir: self.dir.join("foreign"),
                nodes: vec!["node-9".into()],
                names: Names {
                    dns: Vec::new(),
                    ip: Vec::new(),
                    days: 30,
                },
                cluster: "demo".into(),
                host: [127, 0, 0, 1].into(),
                base_port: 1,
                force: false,
            },
            &[1],
        )?;
        // It trusts the real CA too, so it is the node that must refuse it.
        let bundle = [cluster.join("ca/ca.crt"), foreign.dir.join("ca/ca.crt")]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<String>();
        let bundle_path = self.write("foreign-bundle.crt", &bundle)?;
        let foreign_cfg = std::fs::read_to_string(foreign.dir.join(PROBE_ID).join("palisade.toml"))
            .map_err(|e| exit::io("read", &foreign.dir, &e))?;
        let cfg = format!(
            "{}shared_secret_file = {:?}\ntls_ca_file = {:?}\n",
            without(&without(&foreign_cfg, "tls_ca_file"), "shared_secret_file"),
            made_secret(&cluster),
            bundle_path.display().to_string()
        );
        let cfg = self.write("intruder-ca.toml", &cfg)?;
        self.intruder(
            "certificate from another CA refused in TLS",
            &cfg,
            [127, 0, 0, 12],
            |e| {
                matches!(
                    e,
                    LinkError::Link(palisade::ConnectionError::Tls(_))
                        | LinkError::Link(palisade::ConnectionError::UnexpectedEof { .. })
                )
            },
            "not in this node's CA bundle",
        )
        .await?;

        self.say("intruder 3: plaintext palisade to the TLS port (from 127.0.0.13)");
        let plain = format!(
            "cluster_name = \"demo\"\nnode_id = \"probe\"\nshared_secret_file = {:?}\n",
            made_secret(&cluster)
        );
        let cfg = self.write("intruder-plain.toml", &plain)?;
        self.intruder(
            "plaintext to a TLS port refused",
            &cfg,
            [127, 0, 0, 13],
            |e| e.to_string().contains("TLS"),
            "requires TLS",
        )
        .await?;

        self.say("intruder 4: a recorded join (real TLS + HELLO bytes) replayed on a new connection (from 127.0.0.14)");
        let recorded = self.record_join().await?;
        let mut stream = {
            let socket = TcpSocket::new_v4().map_err(|e| fail("socket").cause(&e))?;
            socket
                .bind(([127, 0, 0, 14], 0).into())
                .map_err(|e| fail("bind 127.0.0.14").cause(&e))?;
            socket
                .connect(self.nodes[0].addr.parse().map_err(|_| fail("address"))?)
                .await
                .map_err(|e| fail("connect").cause(&e))?
        };
        let _ = stream.write_all(&recorded).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        let node_side = self.node_refusal("127.0.0.14").await;
        // A TLS alert record is content type 21.
        let alert = answer.windows(3).any(|w| w[0] == 21 && w[1] == 3);
        let joined_hint = "no join";
        self.expect(
            node_side.is_some(),
            "replayed join refused by TLS before its HELLO (the proof is bound to the TLS session)",
            format!(
                "replayer: sent {} recorded bytes, got {} bytes back{}, {joined_hint}\n{:63}node-1: {}",
                recorded.len(),
                answer.len(),
                if alert { " incl. a TLS alert" } else { "" },
                "",
                node_side.unwrap_or_else(|| "no refusal logged".into())
            ),
        );
        Ok(())
    }

    /// Joins node-1 through a recording relay; the bytes the client sent.
    async fn record_join(&self) -> Result<Vec<u8>, CliError> {
        let relay = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| fail("relay").cause(&e))?;
        let relay_addr = relay
            .local_addr()
            .map_err(|e| fail("relay").cause(&e))?
            .to_string();
        let target = self.nodes[0].addr.clone();
        let task = tokio::spawn(async move {
            let (mut inbound, _) = relay.accept().await.ok()?;
            let mut outbound = TcpStream::connect(&target).await.ok()?;
            let (mut ir, mut iw) = inbound.split();
            let (mut or, mut ow) = outbound.split();
            let mut recorded = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            let down = tokio::io::copy(&mut or, &mut iw);
            let up = async {
                loop {
                    match ir.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            recorded.extend_from_slice(&buf[..n]);
                            if ow.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = ow.shutdown().await;
            };
            tokio::join!(down, up).0.ok();
            Some(recorded)
        });
        let conn = palisade::tokio::connect_with(&endpoint(&self.config(PROBE_ID))?, &relay_addr)
            .await
            .map_err(|e| fail("the recorded join failed").cause(&e))?;
        conn.close(palisade::CloseReason::normal()).await;
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .ok_or_else(|| fail("the relay recorded nothing"))
    }

    /// Rewrites the secret keys of every node's config (and the probe's), SIGHUPs the
    /// nodes and waits until each has reloaded.
    async fn set_secrets(
        &mut self,
        primary: &Path,
        accepted: Option<&Path>,
    ) -> Result<bool, CliError> {
        for name in NODES.iter().chain([&PROBE_ID]) {
            let path = self.config(name);
            let text = std::fs::read_to_string(&path).map_err(|e| exit::io("read", &path, &e))?;
            let mut text: String = text
                .lines()
                .filter(|l| {
                    !l.starts_with("shared_secret_file") && !l.starts_with("accepted_secret_files")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            text += &format!("shared_secret_file = {:?}\n", primary.display().to_string());
            if let Some(accepted) = accepted {
                text += &format!(
                    "accepted_secret_files = [{:?}]\n",
                    accepted.display().to_string()
                );
            }
            std::fs::write(&path, text).map_err(|e| exit::io("write", &path, &e))?;
        }
        if let Some(dialer) = &self.traffic {
            // The demo's own link follows the probe's settings, as a node's links do.
            let config = endpoint(&self.config(PROBE_ID))?.config().clone();
            dialer
                .reconfigure(config)
                .map_err(|e| fail("the traffic dialer refused the new settings").cause(&e))?;
        }
        let before: Vec<usize> = self
            .nodes
            .iter()
            .map(|n| n.log().matches("reloaded (config)").count())
            .collect();
        for n in &self.nodes {
            n.signal("-HUP");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .nodes
                .iter()
                .zip(&before)
                .all(|(n, b)| n.log().matches("reloaded (config)").count() > *b)
            {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    async fn joins_with(&self, secret: &Path) -> Result<Result<String, LinkError>, CliError> {
        let text = std::fs::read_to_string(self.config(PROBE_ID))
            .map_err(|e| exit::io("read", &self.config(PROBE_ID), &e))?;
        let text: String = text
            .lines()
            .filter(|l| {
                !l.starts_with("shared_secret_file") && !l.starts_with("accepted_secret_files")
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + &format!("shared_secret_file = {:?}\n", secret.display().to_string());
        let cfg = self.write("probe-with.toml", &text)?;
        let mut seen = Vec::new();
        for n in &self.nodes {
            match palisade::tokio::connect_with(&endpoint(&cfg)?, &n.addr).await {
                Ok(c) => {
                    seen.push(format!(
                        "{} key id {}",
                        n.name,
                        c.peer().key_id.map_or("-".into(), |k| k.to_string())
                    ));
                    c.close(palisade::CloseReason::normal()).await;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(seen.join(", ")))
    }

    async fn rotate_secret(&mut self) -> Result<(), CliError> {
        let cluster = self.dir.join("cluster");
        let old = cluster.join("secret");
        let new = cluster.join("secret.next");
        crate::secret::write_private(&new, crate::secret::generate()?.as_bytes(), false)?;
        let id = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|t| palisade::settings::key_id_of(&t).to_string())
                .unwrap_or_default()
        };
        let (old_id, new_id) = (id(&old), id(&new));

        self.say(&format!("secret rotation 1/3: every node accepts the new secret (key id {new_id}) besides the current one ({old_id}); SIGHUP"));
        let reloaded = self.set_secrets(&old, Some(&new)).await?;
        let a = self.joins_with(&old).await?;
        let b = self.joins_with(&new).await?;
        self.expect(
            reloaded && a.is_ok() && b.is_ok(),
            "step 1: old and new secret both join every node",
            format!("old: {}; new: {}", show(&a), show(&b)),
        );

        self.say("secret rotation 2/3: every node joins with the new secret, still accepts the old; SIGHUP");
        let reloaded = self.set_secrets(&new, Some(&old)).await?;
        let a = self.joins_with(&old).await?;
        let b = self.joins_with(&new).await?;
        self.expect(
            reloaded && a.is_ok() && b.is_ok(),
            "step 2: both still join (new is primary)",
            format!("old: {}; new: {}", show(&a), show(&b)),
        );

        self.say("secret rotation 3/3: the old secret removed everywhere; SIGHUP");
        let reloaded = self.set_secrets(&new, None).await?;
        let a = self.joins_with(&old).await?;
        let b = self.joins_with(&new).await?;
        let old_refused = matches!(&a, Err(e) if e.reject_code() == Some(RejectCode::UnknownKey));
        self.expect(
            reloaded && old_refused && b.is_ok(),
            "step 3: only the new secret joins",
            format!("old: {}; new: {}", show(&a), show(&b)),
        );
        Ok(())
    }

    async fn rotate_cert(&mut self) -> Result<(), CliError> {
        self.say("certificate rotation: node-2 gets a new certificate and key (files replaced; the node watches them)");
        let before = self.probe(1).await?;
        let old = before.cert.map(|c| c.serial).unwrap_or_default();
        let cluster = self.dir.join("cluster");
        let ca = certs::Ca::load(&cluster.join("ca"))?;
        let names = Names {
            dns: Vec::new(),
            ip: vec![[127, 0, 0, 1].into()],
            days: 30,
        };
        let serial = ca.issue_into(&cluster.join("node-2"), "node-2", &names, true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = old.clone();
        while Instant::now() < deadline && seen != serial {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(p) = self.probe(1).await {
                seen = p.cert.map(|c| c.serial).unwrap_or_default();
            }
        }
        self.expect(
            seen == serial,
            "node-2 serves the new certificate without a restart",
            format!("serial {old} -> {seen}"),
        );
        Ok(())
    }
}

fn made_secret(cluster: &Path) -> String {
    cluster.join("secret").display().to_string()
}

fn show(r: &Result<String, LinkError>) -> String {
    match r {
        Ok(s) => format!("joined ({s})"),
        Err(e) => format!(
            "refused ({})",
            e.reject_code()
                .map_or_else(|| e.to_string(), |c| c.to_string())
        ),
    }
}

#[derive(Debug, Default)]
struct TrafficStats {
    bytes: u64,
    pongs: u64,
    worst_rtt: Duration,
    error: Option<String>,
}

/// 16 KiB frames and a ping every 50 ms on one link until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<TrafficStats>,
}

impl Traffic {
    fn start(mut conn: Connection) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut stats = TrafficStats::default();
            let payload = frame(proto::TRAFFIC, &[7u8; 16 * 1024]);
            let sent = AtomicU64::new(0);
            while !stopped.load(Ordering::Relaxed) {
                for _ in 0..8 {
                    if let Err(e) = conn.send(payload.clone()).await {
                        stats.error = Some(format!("send failed: {e}"));
                        return stats;
                    }
                    sent.fetch_add(payload.len() as u64, Ordering::Relaxed);
                }
                let t = Instant::now();
                match probe::exchange(&mut conn, frame(proto::PING, b"t"), proto::PONG).await {
                    Ok(_) => {
                        stats.pongs += 1;
                        stats.worst_rtt = stats.worst_rtt.max(t.elapsed());
                    }
                    Err(e) => {
                        stats.error = Some(format!(
                            "ping failed: {}",
                            e.map_or("no answer".into(), |e| e.to_string())
                        ));
                        return stats;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stats.bytes = sent.load(Ordering::Relaxed);
            conn.close(palisade::CloseReason::normal()).await;
            stats
        });
        Self { stop, task }
    }

    async fn stop(self) -> TrafficStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_else(|e| TrafficStats {
            error: Some(e.to_string()),
            ..Default::default()
        })
    }
}

async fn throughput(mut conn: Connection) -> Result<(f64, u64), CliError> {
    let payload = frame(proto::TRAFFIC, &[9u8; 16 * 1024]);
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        conn.send(payload.clone())
            .await
            .map_err(|e| fail("throughput send").cause(&e))?;
        frames += 1;
    }
    probe::exchange(&mut conn, frame(proto::PING, b"end"), proto::PONG)
        .await
        .map_err(|_| fail("the final ping went unanswered"))?;
    let secs = start.elapsed().as_secs_f64();
    conn.close(palisade::CloseReason::normal()).await;
    Ok((
        (frames * payload.len() as u64) as f64 / secs / (1024.0 * 1024.0),
        frames,
    ))
}
