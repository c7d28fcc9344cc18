//! `palisade certs`: a cluster CA and node certificates (rcgen, ECDSA P-256), a shared
//! development pair, a report on any certificate file, and the CA rotation.
//!
//! Layout of `certs init --dir DIR` (file names as Kubernetes TLS secrets name them):
//!
//! ```text
//! DIR/ca/ca.crt, DIR/ca/ca.key        the cluster CA (keep ca.key offline)
//! DIR/secret                          the shared join secret (0600)
//! DIR/<node>/tls.crt, tls.key, ca.crt the node's certificate, key (0600) and CA bundle
//! DIR/<node>/palisade.toml            a config `palisade node --config` runs as is
//! DIR/probe/...                       an identity for `palisade probe` (node id "probe")
//! DIR/revocation.txt                  the revocation list every config names (empty)
//! DIR/crl.pem                         a CRL signed by the CA every config names (empty)
//! ```

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::exit::{self, CliError};
use crate::secret;

pub mod revoke;

/// The identity `certs init` makes for `palisade probe` and the demo's client.
pub const PROBE_ID: &str = "probe";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A cluster CA, a certificate + key per node, a shared secret and a ready
    /// palisade.toml per node.
    Init(InitArgs),
    /// Re-issue one node's certificate and key from the CA in DIR/ca (rotation); without
    /// --dns / --ip it keeps the names of the node's current certificate.
    Issue {
        /// The folder `certs init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// The node (its folder under DIR).
        #[arg(long)]
        node: String,
        #[command(flatten)]
        names: Names,
    },
    /// Remove a node: append its current certificate and its node id to
    /// DIR/revocation.txt and re-sign DIR/crl.pem with the certificate (next CRL number).
    /// Every config `certs init` wrote names both files, so nodes refuse it (and close
    /// its links) at their next reload.
    Revoke {
        /// The folder `certs init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// The node (its folder under DIR).
        #[arg(long)]
        node: String,
        /// Why, written after the entries (default "revoked by palisade certs revoke").
        #[arg(long)]
        reason: Option<String>,
        /// Revoke only the node's current certificate (a compromised key the node will
        /// replace), not its node id: the node may rejoin with a new certificate.
        #[arg(long)]
        certificate_only: bool,
    },
    /// The single self-signed development pair every node shares (tls_trust = "pinned").
    Dev {
        /// Where to write tls.crt, tls.key and palisade.toml.
        #[arg(long)]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Subject, names, issuer, serial, validity of each certificate, and whether palisade
    /// would accept it as a node certificate (with tls.key and ca.crt beside it, or
    /// --key / --ca) and why not; REVOKED when the revocation_file or tls_crl_files of
    /// the palisade.toml beside it (or revocation.txt / crl.pem beside it or one folder
    /// up) list it.
    Show {
        /// PEM certificate files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The private key (default: tls.key beside the certificate).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The CA bundle (default: ca.crt beside the certificate; none: pinned mode).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The node id the certificate is for (default: its common name).
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Rotate the cluster CA without a failed join, in three steps run in order, each
    /// once every node has reloaded the previous one (files are watched; or SIGHUP):
    /// `add` makes DIR/ca-next and appends it to every node's ca.crt (both CAs trusted);
    /// `issue` re-issues every node's certificate from the new CA; `finish` makes the new
    /// CA the only one (DIR/ca, the old one kept in DIR/ca-old).
    RotateCa {
        /// The folder `certs init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// Which step.
        #[arg(long, value_enum)]
        step: RotateStep,
        /// Validity of the new CA in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RotateStep {
    Add,
    Issue,
    Finish,
}

/// Extra names and validity for node certificates.
#[derive(Debug, Clone, Args)]
pub struct Names {
    /// Extra DNS names for every node certificate (the node id is always one).
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
    /// IP addresses for every node certificate (default 127.0.0.1, for loopback).
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Where to write (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// The node ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub names: Names,
    /// The cluster name written to every config.
    #[arg(long, default_value = "palisade")]
    pub cluster: String,
    /// The host the configs listen on and dial.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Node i (from 0) listens on base-port + i.
    #[arg(long, default_value_t = 7401)]
    pub base_port: u16,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(command: CertsCommand) -> Result<ExitCode, CliError> {
    match command {
        CertsCommand::Init(args) => {
            let ports: Vec<u16> = (0..args.nodes.len())
                .map(|i| args.base_port.saturating_add(i as u16))
                .collect();
            let made = init(&args, &ports)?;
            for line in made.summary() {
                println!("{line}");
            }
        }
        CertsCommand::Issue { dir, node, names } => {
            let ca = Ca::load(&dir.join("ca"))?;
            // Without --dns / --ip, the new certificate keeps the current one's names.
            let names = match current_names(&dir.join(&node)) {
                Some(current) if names.dns.is_empty() && names.ip.is_empty() => Names {
                    days: names.days,
                    ..current
                },
                _ => names,
            };
            let serial = ca.issue_into(&dir.join(&node), &node, &names, true)?;
            println!(
                "re-issued {node}'s certificate (serial {serial}) in {}",
                dir.join(&node).display()
            );
        }
        CertsCommand::Revoke {
            dir,
            node,
            reason,
            certificate_only,
        } => {
            revoke::revoke(&dir, &node, reason.as_deref(), certificate_only)?;
        }
        CertsCommand::Dev { dir, force } => dev(&dir, force)?,
        CertsCommand::Show {
            files,
            key,
            ca,
            node_id,
        } => {
            let mut all_ok = true;
            for file in &files {
                all_ok &= show(file, key.as_deref(), ca.as_deref(), node_id.as_deref())?;
            }
            if !all_ok {
                return Ok(ExitCode::from(exit::INVALID));
            }
        }
        CertsCommand::RotateCa { dir, step, days } => rotate_ca(&dir, step, days)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct Made {
    pub dir: PathBuf,
    /// (node id, its folder, its listen address).
    pub nodes: Vec<(String, PathBuf, String)>,
    pub secret: PathBuf,
}

impl Made {
    pub fn config(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("palisade.toml")
    }

    fn summary(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "cluster CA: {}",
            self.dir.join("ca/ca.crt").display()
        )];
        lines.push(format!(
            "revocation: {} and {} (empty; `palisade certs revoke --dir {} --node NAME` adds to both)",
            self.dir.join(revoke::REVOCATION_FILE).display(),
            self.dir.join(revoke::CRL_FILE).display(),
            self.dir.display()
        ));
        lines.push(format!(
            "shared secret: {} (key id {})",
            self.secret.display(),
            secret_id(&self.secret)
        ));
        for (id, dir, listen) in &self.nodes {
            lines.push(format!("{id}: {} (listens on {listen})", dir.display()));
        }
        lines.push(format!(
            "probe identity: {}",
            self.dir.join(PROBE_ID).display()
        ));
        if let Some((id, _, listen)) = self.nodes.first() {
            lines.push(format!(
                "next: palisade check --config {}   then   palisade node --config {}   and   palisade probe --config {} {listen} --expect-name {id}",
                self.config(id).display(),
                self.config(id).display(),
                self.config(PROBE_ID).display()
            ));
        }
        lines
    }
}

fn secret_id(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|t| palisade::settings::key_id_of(&t).to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `certs init`: the CA, a folder per node (and the probe identity), the secret, and the
/// configs. Node `i` listens on `ports[i]` and dials every node before it.
pub fn init(args: &InitArgs, ports: &[u16]) -> Result<Made, CliError> {
    if args
        .nodes
        .iter()
        .any(|n| n.is_empty() || n == "ca" || n == PROBE_ID)
    {
        return Err(CliError::new(exit::INVALID, "bad node ids").hint(format!(
            "node ids must be non-empty and not \"ca\" or \"{PROBE_ID}\""
        )));
    }
    mkdir(&args.dir)?;
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| exit::io("resolve", &args.dir, &e))?;
    // A name of its own: two CAs of one name confuse chain building (a certificate of
    // the other is then reported as a bad signature rather than an unknown issuer).
    let ca = Ca::new(&ca_name(&args.cluster)?, 3650)?;
    ca.save(&dir.join("ca"), args.force)?;
    revoke::write_initial(&dir, &ca, args.force)?;
    let secret_path = dir.join("secret");
    secret::write_private(&secret_path, secret::generate()?.as_bytes(), args.force)?;
    let mut names = args.names.clone();
    if names.ip.is_empty() {
        names.ip.push(args.host);
    }
    let addrs: Vec<String> = ports
        .iter()
        .map(|p| std::net::SocketAddr::new(args.host, *p).to_string())
        .collect();
    let mut nodes = Vec::new();
    for (i, node) in args.nodes.iter().enumerate() {
        let node_dir = dir.join(node);
        ca.issue_into(&node_dir, node, &names, args.force)?;
        write_config(
            &node_dir,
            &args.cluster,
            node,
            addrs.get(i).map(String::as_str),
            addrs.get(..i).unwrap_or(&[]),
            &dir,
            args.force,
        )?;
        nodes.push((
            node.clone(),
            node_dir,
            addrs.get(i).cloned().unwrap_or_default(),
        ));
    }
    let probe_dir = dir.join(PROBE_ID);
    ca.issue_into(&probe_dir, PROBE_ID, &names, args.force)?;
    write_config(
        &probe_dir,
        &args.cluster,
        PROBE_ID,
        None,
        &[],
        &dir,
        args.force,
    )?;
    Ok(Made {
        dir,
        nodes,
        secret: secret_path,
    })
}

/// Writes `node_dir`/palisade.toml; `dir` is the `certs init` folder (the secret and the
/// revocation files).
fn write_config(
    node_dir: &Path,
    cluster: &str,
    node: &str,
    listen: Option<&str>,
    seeds: &[String],
    dir: &Path,
    force: bool,
) -> Result<(), CliError> {
    let secret = dir.join("secret");
    let mut text = format!(
        "# Written by `palisade certs init`. Check it with `palisade check --config THIS_FILE`.\n\
         cluster_name = {cluster:?}\nnode_id = {node:?}\n"
    );
    if let Some(listen) = listen {
        let _ = writeln!(text, "listen = {listen:?}");
    }
    let _ = writeln!(text, "seeds = {seeds:?}");
    let _ = writeln!(
        text,
        "shared_secret_file = {:?}",
        secret.display().to_string()
    );
    let _ = write!(
        text,
        "tls_enabled = true\ntls_trust = \"ca\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
        node_dir.join("tls.crt").display().to_string(),
        node_dir.join("tls.key").display().to_string(),
        node_dir.join("ca.crt").display().to_string(),
    );
    let _ = write!(
        text,
        "# Revoked peers are refused at the next reload: `palisade certs revoke` adds to both.\n\
         revocation_file = {:?}\ntls_crl_files = [{:?}]\n",
        dir.join(revoke::REVOCATION_FILE).display().to_string(),
        dir.join(revoke::CRL_FILE).display().to_string(),
    );
    write_public(&node_dir.join("palisade.toml"), text.as_bytes(), force)
}

/// A CA: its certificate (PEM) and the issuer that signs with its key.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// `palisade CA <cluster> <4 random bytes, hex>`.
fn ca_name(cluster: &str) -> Result<String, CliError> {
    let mut tag = [0u8; 4];
    SystemRandom::new()
        .fill(&mut tag)
        .map_err(|_| CliError::new(exit::IO, "the OS random source failed"))?;
    Ok(format!("palisade CA {cluster} {}", hex::encode(tag)))
}

fn rcgen_err(what: &str, e: rcgen::Error) -> CliError {
    CliError::new(exit::INVALID, format!("cannot {what}")).cause(&e)
}

fn new_key() -> Result<KeyPair, CliError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| rcgen_err("make a key", e))
}

fn serial() -> Result<SerialNumber, CliError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CliError::new(exit::IO, "the OS random source failed"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str, days: u32) -> Result<Self, CliError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial()?);
        validity(&mut params, days);
        let cert = params
            .self_signed(&key)
            .map_err(|e| rcgen_err("make the CA", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA `save` wrote to `dir`.
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| exit::io("read", &path, &e))
        };
        let (cert_pem, key_pem) = (read("ca.crt")?, read("ca.key")?);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| rcgen_err("read the CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| rcgen_err("read the CA certificate", e))?;
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    pub fn save(&self, dir: &Path, force: bool) -> Result<(), CliError> {
        mkdir(dir)?;
        write_public(&dir.join("ca.crt"), self.cert_pem.as_bytes(), force)?;
        secret::write_private(&dir.join("ca.key"), self.key_pem.as_bytes(), force)
    }

    /// A node certificate, its key (PEM) and its serial: CN and DNS name `node`, the
    /// extra names.
    pub fn issue(&self, node: &str, names: &Names) -> Result<(String, String, String), CliError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        let dns = std::iter::once(node).chain(names.dns.iter().map(String::as_str));
        for name in dns {
            let name = name
                .to_owned()
                .try_into()
                .map_err(|e| rcgen_err(&format!("use {name:?} as a DNS name"), e))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(names.ip.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(serial()?);
        validity(&mut params, names.days);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| rcgen_err(&format!("sign {node}'s certificate"), e))?;
        let serial = palisade::tls_load::serial_hex(cert.der()).unwrap_or_default();
        Ok((cert.pem(), key.serialize_pem(), serial))
    }

    /// Writes `node`'s tls.crt, tls.key and ca.crt into `dir`; returns the serial. With
    /// `force`, existing files are replaced by rename (key first), so a node watching them
    /// never reads a half-written file.
    pub fn issue_into(
        &self,
        dir: &Path,
        node: &str,
        names: &Names,
        force: bool,
    ) -> Result<String, CliError> {
        let (cert, key, serial) = self.issue(node, names)?;
        mkdir(dir)?;
        replace(&dir.join("tls.key"), key.as_bytes(), force, true)?;
        replace(&dir.join("tls.crt"), cert.as_bytes(), force, false)?;
        if force || !dir.join("ca.crt").exists() {
            replace(&dir.join("ca.crt"), self.cert_pem.as_bytes(), force, false)?;
        }
        Ok(serial)
    }
}

fn mkdir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| exit::io("create the folder", dir, &e))
}

fn write_public(path: &Path, bytes: &[u8], force: bool) -> Result<(), CliError> {
    replace(path, bytes, force, false)
}

/// Writes `path` (0600 when `private`) through a temporary file and a rename; refuses an
/// existing file unless `force`.
fn replace(path: &Path, bytes: &[u8], force: bool, private: bool) -> Result<(), CliError> {
    if !force && path.exists() {
        return Err(
            CliError::new(exit::IO, format!("{} exists", path.display()))
                .hint("pass --force to overwrite it (running nodes reload the new files)"),
        );
    }
    let tmp = path.with_extension("tmp-palisade");
    let _ = std::fs::remove_file(&tmp);
    if private {
        secret::write_private(&tmp, bytes, true)?;
    } else {
        std::fs::write(&tmp, bytes).map_err(|e| exit::io("write", &tmp, &e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| exit::io("replace", path, &e))
}

fn dev(dir: &Path, force: bool) -> Result<(), CliError> {
    mkdir(dir)?;
    let dir = dir
        .canonicalize()
        .map_err(|e| exit::io("resolve", dir, &e))?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "palisade-dev");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(|e| rcgen_err("name", e))?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(serial()?);
    validity(&mut params, 365);
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_err("make the pair", e))?;
    replace(
        &dir.join("tls.key"),
        key.serialize_pem().as_bytes(),
        force,
        true,
    )?;
    replace(&dir.join("tls.crt"), cert.pem().as_bytes(), force, false)?;
    let text = format!(
        "# Development only: every node shares this one certificate (pinned mode).\n\
         cluster_name = \"dev\"\nnode_id = \"dev-1\"\nlisten = \"127.0.0.1:7401\"\n\
         tls_enabled = true\ntls_trust = \"pinned\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
         # shared_secret_file = \"...\"   (make one: palisade secret generate --out FILE)\n",
        dir.join("tls.crt").display().to_string(),
        dir.join("tls.key").display().to_string()
    );
    write_public(&dir.join("palisade.toml"), text.as_bytes(), force)?;
    println!(
        "wrote {}/tls.crt, tls.key (0600) and palisade.toml (tls_trust = \"pinned\")",
        dir.display()
    );
    Ok(())
}

/// Prints what `file` holds and whether palisade would accept it; returns that.
fn show(
    file: &Path,
    key: Option<&Path>,
    ca: Option<&Path>,
    node_id: Option<&str>,
) -> Result<bool, CliError> {
    use palisade::core::tls::CertSummary;
    let mut report = palisade::Report::default();
    let Some(certs) = palisade::pem::load_certs("tls_cert_file", file, &mut report) else {
        println!("{}:\n{report}", file.display());
        return Ok(false);
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    println!("{}:", file.display());
    let mut leaf_cn = None;
    let mut revoked = None;
    for (i, der) in certs.iter().enumerate() {
        let Some(s) = CertSummary::parse(der) else {
            println!("  [{i}] not an X.509 certificate palisade can read");
            continue;
        };
        if i == 0 {
            leaf_cn = s.names.common_name.clone();
        }
        println!("  [{i}] subject: {}", s.subject);
        println!("      names:   {}", s.names);
        println!("      issuer:  {}", s.issuer);
        println!(
            "      serial:  {}",
            palisade::tls_load::serial_hex(der).unwrap_or_default()
        );
        println!(
            "      valid:   {} to {} ({} day(s) left)",
            date(s.not_before),
            date(s.not_after),
            (s.not_after - now).div_euclid(86_400)
        );
        if i == 0 {
            revoked = revoke::Sources::near(file).revokes(der);
            if let Some(why) = &revoked {
                println!("      REVOKED ({why})");
            }
        }
    }
    if let Some(why) = revoked {
        println!("  verdict: palisade would REFUSE it: REVOKED ({why})");
        return Ok(false);
    }
    let beside = |name: &str| file.parent().map(|d| d.join(name)).filter(|p| p.exists());
    let key = key.map(Path::to_path_buf).or_else(|| beside("tls.key"));
    let ca = ca.map(Path::to_path_buf).or_else(|| beside("ca.crt"));
    let Some(key) = key else {
        println!("  verdict: not checked as a node certificate: no tls.key beside it (give --key)");
        return Ok(true);
    };
    let mut tls = palisade::settings::TlsSettings {
        tls_enabled: true,
        tls_cert_file: Some(file.to_path_buf()),
        tls_key_file: Some(key),
        ..Default::default()
    };
    match &ca {
        Some(ca) => tls.tls_ca_file = Some(ca.clone()),
        None => tls.tls_trust = palisade::settings::TlsTrust::Pinned,
    }
    let node = node_id.map(str::to_owned).or(leaf_cn).unwrap_or_default();
    let mut report = palisade::Report::default();
    let accepted = palisade::load_tls(&tls, &node, SystemTime::now(), &mut report).is_some();
    for finding in report
        .findings
        .iter()
        .filter(|f| f.severity != palisade::Severity::Note)
    {
        println!("  {}", finding.to_string().replace('\n', "\n  "));
    }
    let mode = match &ca {
        Some(ca) => format!("node {node:?}, CA {}", ca.display()),
        None => format!("node {node:?}, pinned mode (no ca.crt)"),
    };
    if accepted {
        println!("  verdict: palisade would accept it ({mode})");
    } else {
        println!("  verdict: palisade would REFUSE it ({mode}): see the errors above");
    }
    Ok(accepted)
}

fn date(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Node folders under `dir`: those holding a tls.crt, except the CA's.
fn node_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| exit::io("list", dir, &e))? {
        let path = entry.map_err(|e| exit::io("list", dir, &e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.join("tls.crt").exists() && !name.starts_with("ca") {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

fn rotate_ca(dir: &Path, step: RotateStep, days: u32) -> Result<(), CliError> {
    let next_dir = dir.join("ca-next");
    match step {
        RotateStep::Add => {
            let old = std::fs::read_to_string(dir.join("ca/ca.crt"))
                .map_err(|e| exit::io("read", &dir.join("ca/ca.crt"), &e))?;
            let next = Ca::new(&ca_name("next")?, days)?;
            next.save(&next_dir, false)?;
            for (node, path) in node_dirs(dir)? {
                replace(
                    &path.join("ca.crt"),
                    format!("{old}{}", next.cert_pem).as_bytes(),
                    true,
                    false,
                )?;
                println!("{node}: ca.crt now trusts the old and the new CA");
            }
            println!("next, once every node has reloaded: palisade certs rotate-ca --dir {} --step issue", dir.display());
        }
        RotateStep::Issue => {
            let next = Ca::load(&next_dir)?;
            let names = Names {
                dns: Vec::new(),
                ip: Vec::new(),
                days: 365,
            };
            for (node, path) in node_dirs(dir)? {
                // Keep each node's own names: read them from its current certificate.
                let names = current_names(&path).unwrap_or_else(|| names.clone());
                let (cert, key, _) = next.issue(&node, &names)?;
                replace(&path.join("tls.key"), key.as_bytes(), true, true)?;
                replace(&path.join("tls.crt"), cert.as_bytes(), true, false)?;
                println!("{node}: certificate re-issued by the new CA");
            }
            println!("next, once every node has reloaded: palisade certs rotate-ca --dir {} --step finish", dir.display());
        }
        RotateStep::Finish => {
            let next = Ca::load(&next_dir)?;
            let old_dir = dir.join("ca-old");
            let _ = std::fs::remove_dir_all(&old_dir);
            std::fs::rename(dir.join("ca"), &old_dir)
                .map_err(|e| exit::io("move", &dir.join("ca"), &e))?;
            std::fs::rename(&next_dir, dir.join("ca"))
                .map_err(|e| exit::io("move", &next_dir, &e))?;
            for (node, path) in node_dirs(dir)? {
                replace(&path.join("ca.crt"), next.cert_pem.as_bytes(), true, false)?;
                println!("{node}: ca.crt trusts the new CA only");
            }
            println!("done; the old CA is in {}", old_dir.display());
        }
    }
    Ok(())
}

/// The extra DNS names and IPs of the certificate in `dir`/tls.crt.
fn current_names(dir: &Path) -> Option<Names> {
    let mut report = palisade::Report::default();
    let certs = palisade::pem::load_certs("tls_cert_file", &dir.join("tls.crt"), &mut report)?;
    let s = palisade::core::tls::CertSummary::parse(certs.first()?)?;
    let cn = s.names.common_name.clone().unwrap_or_default();
    Some(Names {
        dns: s.names.dns.into_iter().filter(|d| *d != cn).collect(),
        ip: s.names.ips,
        days: 365,
    })
}
