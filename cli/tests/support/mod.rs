//! What the binary's tests share: running `palisade`, a cluster made with `certs init`,
//! node processes (killed if a test ends without stopping them), probes.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

pub fn palisade(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PALISADE_SHARED_SECRET")
        .output()
        .expect("run palisade")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A base port with `n` free consecutive loopback ports after it.
pub fn free_base(n: u16) -> u16 {
    // Tests of one binary run at once in one process: each call starts further along,
    // so two calls never pick the same (still free) ports.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let first = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 200;
    for attempt in first..first + 200 {
        let base = 20_000 + ((std::process::id() * 7919 + attempt * 104_729) % 40_000) as u16;
        let held: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no free ports");
}

pub fn init(dir: &Path, nodes: &str, base: u16) {
    let out = palisade(&[
        "certs",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--nodes",
        nodes,
        "--base-port",
        &base.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `palisade certs revoke --dir DIR --node NODE [--reason REASON]`, which must succeed;
/// what it printed.
pub fn revoke(dir: &Path, node: &str, reason: Option<&str>) -> String {
    let mut args = vec![
        "certs",
        "revoke",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        node,
    ];
    if let Some(reason) = reason {
        args.extend(["--reason", reason]);
    }
    let out = palisade(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

pub fn config(dir: &Path, node: &str) -> String {
    dir.join(node).join("palisade.toml").display().to_string()
}

/// A node process, SIGKILLed if the test ends without stopping it.
pub struct NodeProc {
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProc {
    pub fn start(dir: &Path, node: &str) -> Self {
        let log = dir.join(format!("{node}.log"));
        let child = Command::new(BIN)
            .args([
                "node",
                "--config",
                &config(dir, node),
                "--reload-interval",
                "500ms",
            ])
            .env_remove("PALISADE_SHARED_SECRET")
            // What it prints (the stats block on SIGUSR1), next to its log.
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn probe(dir: &Path, addr: &str, extra: &[&str]) -> Output {
    let cfg = config(dir, "probe");
    let mut args = vec!["probe", "--config", &cfg, addr];
    args.extend_from_slice(extra);
    palisade(&args)
}

pub fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Probes until `done` holds for the output (10 s at most).
pub fn probe_until(dir: &Path, addr: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = probe(dir, addr, &[]);
        let shown = text(&out);
        if out.status.success() && done(&shown) {
            return shown;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
                .unwrap()
                .chain(std::fs::read_dir(dir).unwrap())
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .map(|p| {
                    format!(
                        "{}:\n{}",
                        p.display(),
                        std::fs::read_to_string(&p).unwrap_or_default()
                    )
                })
                .collect();
            panic!("gave up waiting; last probe:\n{shown}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
