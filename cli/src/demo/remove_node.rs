//! The demo's "removing a node" step: node-3's certificate is revoked with `certs
//! revoke`, and the other nodes, which watch the revocation list and the CRL, close its
//! links at their next reload, refuse its redials with the reason, and keep their own
//! link to each other.

use std::time::{Duration, Instant};

use super::{links_of, Demo};
use crate::exit::CliError;

/// How long the nodes get to notice (their reload interval is 300 ms).
const NOTICE: Duration = Duration::from_secs(10);

impl Demo {
    pub(super) async fn remove_node(&mut self) -> Result<(), CliError> {
        self.say(
            "removing a node: `palisade certs revoke --node node-3` (revocation.txt and crl.pem, which every node watches)",
        );
        let before = links_of(&self.probe(0).await?);
        let started = Instant::now();
        crate::certs::revoke::revoke(
            &self.dir.join("cluster"),
            "node-3",
            Some("demo: node-3 removed"),
            false,
        )?;
        let mut after = (Vec::new(), Vec::new());
        while started.elapsed() < NOTICE {
            after = (
                links_of(&self.probe(0).await?),
                links_of(&self.probe(1).await?),
            );
            if !after
                .0
                .iter()
                .chain(&after.1)
                .any(|l| l.starts_with("node-3#"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        let gone = !after
            .0
            .iter()
            .chain(&after.1)
            .any(|l| l.starts_with("node-3#"));
        self.expect(
            gone,
            "node-3's links closed on node-1 and node-2 at their next reload (CLOSE 6)",
            format!(
                "after {} ms; node-1 {:?}, node-2 {:?}",
                took.as_millis(),
                after.0,
                after.1
            ),
        );
        let kept = |links: &[String]| -> Vec<String> {
            links
                .iter()
                .filter(|l| l.starts_with("node-2#"))
                .cloned()
                .collect()
        };
        self.expect(
            kept(&before) == kept(&after.0) && !kept(&before).is_empty(),
            "node-1's link to node-2 untouched (the same link)",
            format!("{:?} -> {:?}", kept(&before), kept(&after.0)),
        );
        // node-3 keeps redialing; node-1 and node-2 refuse it at TLS and say why.
        let mut seen = (None, None);
        while started.elapsed() < NOTICE * 2 {
            seen = (
                line_with(&self.nodes[2].log(), "certificate_revoked"),
                line_with(&self.nodes[0].log(), "revoked:"),
            );
            if seen.0.is_some() && seen.1.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.expect(
            seen.0.is_some() && seen.1.is_some(),
            "node-3's redials refused, with the reason on both ends",
            format!(
                "node-3: {}\nnode-1: {}",
                seen.0.as_deref().unwrap_or("(nothing yet)"),
                seen.1.as_deref().unwrap_or("(nothing yet)")
            ),
        );
        Ok(())
    }
}

/// The last log line containing `needle`, without its timestamp and level.
fn line_with(log: &str, needle: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    let text = line
        .split_once("  INFO ")
        .or_else(|| line.split_once("  WARN "))
        .or_else(|| line.split_once(" ERROR "))
        .map_or(line, |(_, rest)| rest);
    Some(text.trim().to_owned())
}
