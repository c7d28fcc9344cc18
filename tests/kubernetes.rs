//! `docs/kubernetes.md` cannot rot unnoticed: every YAML document in it is checked for
//! the structure Kubernetes needs (a small check of our own, no YAML crate: no tabs,
//! two-space indentation, `apiVersion`, `kind`, `metadata.name`; and, where python3 has
//! PyYAML, a full parse), the ConfigMap's `palisade.toml` is loaded as a node loads it
//! (with the `PALISADE_*` variables the StatefulSets set), every file it names lies
//! under a volume the StatefulSets mount, and every Secret they mount is one the
//! manifests or the doc's `kubectl create secret` lines make.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use palisade::Settings;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md")).unwrap()
}

/// The fenced blocks of `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}\n");
    text.split(&open)
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap_or("").to_owned() + "\n")
        .collect()
}

/// The YAML documents of every block.
fn documents() -> Vec<String> {
    blocks(&doc(), "yaml")
        .iter()
        .flat_map(|b| b.split("\n---\n").map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The value of the first `key: value` line (any indentation), without a comment.
fn values<'a>(doc: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    doc.lines()
        .filter_map(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(&prefix)
        })
        .map(|v| v.split(" #").next().unwrap_or("").trim())
        .filter(|v| !v.is_empty())
        .collect()
}

#[test]
fn every_manifest_has_the_structure_kubernetes_needs() {
    let docs = documents();
    assert!(docs.len() >= 6, "{} documents", docs.len());
    for d in &docs {
        assert!(!d.contains('\t'), "a tab in:\n{d}");
        for line in d.lines().filter(|l| !l.trim().is_empty()) {
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "odd indentation: {line:?}");
        }
        for key in ["apiVersion:", "kind:", "metadata:"] {
            assert!(
                d.lines().any(|l| l.starts_with(key)),
                "no top-level {key} in:\n{d}"
            );
        }
        let meta = d.split("\nmetadata:\n").nth(1).expect("metadata");
        assert!(
            meta.starts_with("  name: "),
            "metadata without a name:\n{d}"
        );
    }
    // A full parse where PyYAML is at hand (it is not required).
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml; n = sum(1 for _ in yaml.safe_load_all(sys.stdin)); print(n)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(docs.join("\n---\n").as_bytes())?;
            child.wait_with_output()
        });
    match parsed {
        Ok(out) if out.status.success() => {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                docs.len().to_string()
            );
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            println!("python3 has no PyYAML: the structural check only");
        }
        Ok(out) => panic!(
            "YAML does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("no python3 ({e}): the structural check only"),
    }
}

#[test]
fn the_config_map_loads_as_a_node_and_names_only_mounted_files() {
    let docs = documents();
    let config_map = docs
        .iter()
        .find(|d| d.contains("\nkind: ConfigMap\n"))
        .unwrap();
    let toml: String = config_map
        .split("palisade.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned() + "\n")
        .collect();
    let sets: Vec<&String> = docs
        .iter()
        .filter(|d| d.contains("\nkind: StatefulSet\n"))
        .collect();
    assert_eq!(sets.len(), 2);
    for (i, set) in sets.iter().enumerate() {
        let mut settings =
            Settings::from_toml_str(&toml, None).expect("the ConfigMap's palisade.toml");
        let env: Vec<(String, String)> = values(set, "name")
            .into_iter()
            .filter(|n| n.starts_with("PALISADE_"))
            .map(|n| (n.to_owned(), "orders-0".to_owned()))
            .collect();
        assert!(env.iter().any(|(n, _)| n == "PALISADE_NODE_ID"));
        settings
            .apply_env(env.clone())
            .expect("every PALISADE_* variable is a setting");
        assert_eq!(settings.node_id, "orders-0");
        let mounts = values(set, "mountPath");
        let mut named: Vec<String> = Vec::new();
        named.extend(
            settings
                .tls
                .tls_cert_file
                .iter()
                .chain(&settings.tls.tls_key_file)
                .chain(&settings.tls.tls_ca_file)
                .map(|p| p.display().to_string()),
        );
        if i == 0 {
            // The node container: the secret as files.
            named.extend(
                settings
                    .shared_secret_file
                    .iter()
                    .chain(&settings.accepted_secret_files)
                    .map(|p| p.display().to_string()),
            );
            named.extend(values(set, "args").iter().filter_map(|a| {
                a.split('"')
                    .find(|s| s.ends_with(".toml"))
                    .map(str::to_owned)
            }));
        } else {
            // The application: the secret from the environment, the config path too.
            assert!(env.iter().any(|(n, _)| n == "PALISADE_SHARED_SECRET"));
        }
        for path in &named {
            assert!(
                mounts.iter().any(|m| path.starts_with(&format!("{m}/"))),
                "{path} is under no volume mount {mounts:?}"
            );
        }
        // Every Secret mounted or referenced is made by the manifests or the kubectl lines.
        let made: BTreeSet<String> = docs
            .iter()
            .flat_map(|d| {
                values(d, "secretName")
                    .into_iter()
                    .filter(|_| d.contains("kind: Certificate"))
            })
            .map(str::to_owned)
            .chain(blocks(&doc(), "sh").iter().flat_map(|b| {
                b.lines()
                    .filter_map(|l| {
                        l.split("create secret ")
                            .nth(1)?
                            .split_whitespace()
                            .nth(1)
                            .map(str::to_owned)
                    })
                    .collect::<Vec<_>>()
            }))
            .collect();
        for used in values(set, "secretName") {
            assert!(made.contains(used), "{used} is made nowhere: {made:?}");
        }
    }
}

/// The sidecar example: its ConfigMap's settings load (the `[[forward]]` / `[[service]]`
/// tables parse as TOML and are read by `palisade node`'s forwarding, not by
/// `Settings`), every file it names is under a mount of the palisade container, the
/// audit log's directory is writable, and the probes and the scrape annotation use the
/// port `metrics_listen` binds.
#[test]
fn the_sidecar_pod_probes_and_scrapes_metrics_listen() {
    let docs = documents();
    let config_map = docs
        .iter()
        .find(|d| d.contains("\nkind: ConfigMap\n") && d.contains("[[forward]]"))
        .expect("the sidecar's ConfigMap");
    let toml: String = config_map
        .split("palisade.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned() + "\n")
        .collect();
    let whole: toml::Table = toml.parse().expect("the sidecar's palisade.toml");
    assert!(whole["forward"].is_array() && whole["service"].is_array());
    let top: String = toml.split("\n[[").next().unwrap().to_owned();
    let top: String = top
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.to_owned() + "\n")
        .collect();
    let settings = Settings::from_toml_str(&top, None).expect("its keys");
    let port = settings
        .metrics_listen
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("metrics_listen");
    let pod = docs
        .iter()
        .find(|d| d.contains("\nkind: Pod\n"))
        .expect("the sidecar Pod");
    assert_eq!(values(pod, "prometheus.io/port"), [format!("\"{port}\"")]);
    assert_eq!(values(pod, "prometheus.io/path"), ["/metrics"]);
    let (_, palisade) = pod
        .split_once("- name: palisade\n")
        .expect("the palisade container");
    let palisade = palisade.split("\n  volumes:\n").next().unwrap();
    let probes: Vec<&str> = values(palisade, "path");
    assert_eq!(probes, ["/healthz", "/readyz"]);
    assert_eq!(values(palisade, "port"), [port.as_str(), port.as_str()]);
    let mounts = values(palisade, "mountPath");
    for path in settings
        .tls
        .tls_cert_file
        .iter()
        .chain(&settings.tls.tls_key_file)
        .chain(&settings.tls.tls_ca_file)
        .chain(&settings.shared_secret_file)
        .chain(&settings.audit_log)
    {
        let path = path.display().to_string();
        assert!(
            mounts.iter().any(|m| path.starts_with(&format!("{m}/"))),
            "{path} is under no volume mount {mounts:?}"
        );
    }
    let audit_dir = settings.audit_log.as_ref().unwrap().parent().unwrap();
    let audit_mount = palisade
        .split(&format!("mountPath: {}\n", audit_dir.display()))
        .nth(1)
        .unwrap_or("");
    assert!(
        !audit_mount
            .lines()
            .next()
            .unwrap_or("")
            .contains("readOnly: true"),
        "the audit log's volume is writable"
    );
}
