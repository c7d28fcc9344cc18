//! Removing a node from a running three-node cluster, end to end with `palisade node`
//! processes, as an operator would (issue 20):
//!
//! - (a) `certs revoke --node node-3`: node-3's links close on node-1 and node-2 at their
//!   next reload, its redials are refused with the reason, and the node-1 <-> node-2 link
//!   is the same link throughout;
//! - (b) the shared secret rotated on node-1 and node-2 only (the three steps): node-3 is
//!   cut at the reload that drops the old secret, and no link between node-1 and node-2
//!   drops.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// A node's links (`node-2#1`, ...), by probing it; the probe's output when it fails.
fn links(dir: &Path, addr: &str) -> Result<Vec<String>, String> {
    let out = probe(dir, addr, &[]);
    if !out.status.success() {
        return Err(text(&out));
    }
    Ok(field(&text(&out), "peer's links:")
        .split(',')
        .filter(|l| l.starts_with("node-"))
        .map(str::to_owned)
        .collect())
}

/// Waits (bounded) until `done` holds for node-1's and node-2's links; how long it took.
fn until_links(
    dir: &Path,
    base: u16,
    limit: Duration,
    done: impl Fn(&[String], &[String]) -> bool,
) -> (Duration, Vec<String>, Vec<String>) {
    let started = Instant::now();
    loop {
        let seen = links(dir, &format!("127.0.0.1:{base}"))
            .and_then(|one| Ok((one, links(dir, &format!("127.0.0.1:{}", base + 1))?)));
        if let Ok((one, two)) = &seen {
            if done(one, two) {
                return (started.elapsed(), one.clone(), two.clone());
            }
        }
        assert!(
            started.elapsed() < limit,
            "gave up after {limit:?}: {seen:?}\nnode logs:\n{}",
            ["node-1", "node-2", "node-3"]
                .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn with(links: &[String], peer: &str) -> Vec<String> {
    links
        .iter()
        .filter(|l| l.starts_with(&format!("{peer}#")))
        .cloned()
        .collect()
}

/// A cluster of three nodes, joined to each other.
fn cluster(dir: &Path) -> (u16, Vec<NodeProc>) {
    let base = free_base(3);
    init(dir, "node-1,node-2,node-3", base);
    let nodes: Vec<NodeProc> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| NodeProc::start(dir, n))
        .collect();
    until_links(dir, base, Duration::from_secs(15), |one, two| {
        !with(one, "node-2").is_empty()
            && !with(one, "node-3").is_empty()
            && !with(two, "node-3").is_empty()
    });
    (base, nodes)
}

fn wait_log(node: &NodeProc, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let log = node.log();
        if let Some(line) = log.lines().rev().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < limit,
            "no {needle:?} in the log within {limit:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_revoked_node_is_cut_at_the_next_reload_and_the_others_keep_their_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let (base, nodes) = cluster(&dir);
    let before = links(&dir, &format!("127.0.0.1:{base}")).unwrap();

    revoke(&dir, "node-3", Some("stolen disk"));

    // The nodes check their files every 500 ms (NodeProc): well within a few reloads.
    let (took, one, two) = until_links(&dir, base, Duration::from_secs(10), |one, two| {
        with(one, "node-3").is_empty() && with(two, "node-3").is_empty()
    });
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        with(&one, "node-2"),
        with(&before, "node-2"),
        "node-1's link to node-2 is the same link"
    );
    assert!(!with(&two, "node-1").is_empty());

    // Both ends say why: node-1 closed node-3's link naming the entry, node-3 was told.
    let closed = wait_log(
        &nodes[0],
        "closed the link: revoked",
        Duration::from_secs(5),
    );
    assert!(
        closed.contains("revocation.txt:11") && closed.contains("stolen disk"),
        "{closed}"
    );
    let told = wait_log(
        &nodes[2],
        "closed by the peer: revoked",
        Duration::from_secs(5),
    );
    assert!(told.contains("revocation.txt:11"), "{told}");
    // node-3 dials again and is refused in TLS, with the reason on both ends.
    let refused = wait_log(&nodes[2], "certificate_revoked", Duration::from_secs(10));
    assert!(refused.contains("certificate is revoked"), "{refused}");
    let refusal = wait_log(
        &nodes[0],
        "refused a link: the peer's certificate is revoked",
        Duration::from_secs(10),
    );
    assert!(refusal.contains("revocation.txt:11"), "{refusal}");
}

/// Rewrites the secret keys of `name`'s config.
fn write_secrets(dir: &Path, name: &str, primary: &Path, accepted: Option<&Path>) {
    let path = config(dir, name);
    let mut text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("shared_secret_file") && !l.starts_with("accepted_secret_files"))
        .map(|l| format!("{l}\n"))
        .collect();
    text += &format!("shared_secret_file = {:?}\n", primary.display().to_string());
    if let Some(accepted) = accepted {
        text += &format!(
            "accepted_secret_files = [{:?}]\n",
            accepted.display().to_string()
        );
    }
    std::fs::write(&path, text).unwrap();
}

/// Rewrites `node`'s secret keys and SIGHUPs it; waits for the reload.
fn set_secrets(dir: &Path, node: &NodeProc, name: &str, primary: &Path, accepted: Option<&Path>) {
    write_secrets(dir, name, primary, accepted);
    let reloads = node.log().matches("reloaded (config)").count();
    assert!(Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    while node.log().matches("reloaded (config)").count() == reloads {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} did not reload:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_secret_rotated_without_one_node_cuts_it_and_drops_no_other_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let (base, nodes) = cluster(&dir);
    let before = links(&dir, &format!("127.0.0.1:{base}")).unwrap();
    let old = dir.join("secret");
    let new = dir.join("secret.next");
    let out = palisade(&["secret", "generate", "--out", new.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // The three steps, on node-1 and node-2 only.
    for (primary, accepted) in [(&old, Some(&new)), (&new, Some(&old)), (&new, None)] {
        for (i, name) in ["node-1", "node-2"].iter().enumerate() {
            set_secrets(
                &dir,
                &nodes[i],
                name,
                primary,
                accepted.map(|p| p.as_path()),
            );
        }
        // The test's probe goes along, so it can still look.
        write_secrets(&dir, "probe", primary, accepted.map(|p| p.as_path()));
    }
    let (_, one, two) = until_links(&dir, base, Duration::from_secs(10), |one, two| {
        with(one, "node-3").is_empty() && with(two, "node-3").is_empty()
    });
    assert_eq!(
        with(&one, "node-2"),
        with(&before, "node-2"),
        "node-1's link to node-2 is the same link: it re-joined in place"
    );
    assert!(!with(&two, "node-1").is_empty());
    assert!(
        nodes[0].log().contains("re-joined node-2") || nodes[1].log().contains("re-joined node-1"),
        "{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    // node-3 was cut by the failed re-join, and its redials are refused: it has no
    // secret the others accept.
    wait_log(&nodes[2], "re-join", Duration::from_secs(5));
    wait_log(&nodes[2], "unknown key", Duration::from_secs(10));
}
