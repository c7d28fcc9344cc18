//! The README's library quickstarts cannot rot: each `examples/quickstart_<runtime>.rs`
//! is compiled into this test and run as the README says (one node from a config file
//! listening, another dialing it from its own), over 127.0.0.1 with PEM files written
//! here; and the README shows each file exactly as it is.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_testkit::certs::{certs_pem, CertSpec, TestCa};

#[allow(dead_code)]
#[path = "../examples/quickstart_async_std.rs"]
mod quickstart_async_std;
#[allow(dead_code)]
#[path = "../examples/quickstart_blocking.rs"]
mod quickstart_blocking;
#[allow(dead_code)]
#[path = "../examples/quickstart_smol.rs"]
mod quickstart_smol;
#[allow(dead_code)]
#[path = "../examples/quickstart_tokio.rs"]
mod quickstart_tokio;

type Run = fn(&str) -> Result<String, String>;

const RUNTIMES: [(&str, Run); 4] = [
    ("tokio", |p| {
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        rt.block_on(quickstart_tokio::run(p))
            .map_err(|e| e.to_string())
    }),
    ("async_std", |p| {
        async_std::task::block_on(quickstart_async_std::run(p)).map_err(|e| e.to_string())
    }),
    ("smol", |p| {
        smol::block_on(quickstart_smol::run(p)).map_err(|e| e.to_string())
    }),
    ("blocking", |p| {
        quickstart_blocking::run(p).map_err(|e| e.to_string())
    }),
];

/// A temp dir of its own, removed at the end.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The files `palisade certs init` would write for `node`, and its config.
fn node_files(dir: &Path, ca: &TestCa, ca_pem: &str, node: &str, tail: &str) -> String {
    let id = ca.issue(&CertSpec::new(node, &[node, "127.0.0.1"]));
    let p = |f: &str| dir.join(format!("{node}.{f}"));
    write(&p("crt"), &id.cert_pem());
    write(&p("key"), &id.key_pem());
    write(&p("ca"), ca_pem);
    let config = p("toml");
    write(
        &config,
        &format!(
            "cluster_name = \"quickstart\"\nnode_id = \"{node}\"\nshared_secret_file = \"{}\"\n\
             tls_enabled = true\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_ca_file = \"{}\"\n{tail}",
            dir.join("secret").display(),
            p("crt").display(),
            p("key").display(),
            p("ca").display()
        ),
    );
    config.display().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_runtime_quickstart_joins_from_config_files() {
    let dir = Dir(std::env::temp_dir().join(format!("palisade-quickstart-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    write(
        &dir.0.join("secret"),
        "quickstart-secret-0123456789abcdefghijklmnop\n",
    );
    let ca = TestCa::new("quickstart CA");
    let ca_pem = certs_pem(std::slice::from_ref(&ca.cert));
    for (name, run) in RUNTIMES {
        let addr = format!("127.0.0.1:{}", free_port());
        let a = node_files(
            &dir.0,
            &ca,
            &ca_pem,
            "node-a",
            &format!("listen = \"{addr}\"\n"),
        );
        let b = node_files(
            &dir.0,
            &ca,
            &ca_pem,
            "node-b",
            &format!("seeds = [\"{addr}\"]\n"),
        );
        let listening = std::thread::spawn(move || run(&a));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "{name}: node-a never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(run(&b).as_deref(), Ok("said hello to node-a"), "{name}");
        let heard = listening.join().unwrap().unwrap();
        assert!(
            heard.starts_with("node-b (127.0.0.1:") && heard.ends_with(") says hello"),
            "{name}: {heard}"
        );
    }
}

/// Each quickstart appears in the README exactly as the file holds it.
#[test]
fn the_readme_shows_each_quickstart_as_compiled() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (name, _) in RUNTIMES {
        let file = format!("examples/quickstart_{name}.rs");
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(&file)).unwrap();
        // The README shows the file from its `use` lines (the doc comment is the prose).
        let code = &text[text.find("\nuse ").map_or(0, |i| i + 1)..];
        let block = format!("<!-- {file} -->\n```rust\n{code}```");
        assert!(
            readme.contains(&block),
            "README.md lacks {file} as it is:\n{block}"
        );
    }
}
