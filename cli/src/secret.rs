//! `palisade secret`: make a shared secret, print a secret's key id.
//!
//! How palisade reads a secret given as text (a file, `PALISADE_SHARED_SECRET`): the
//! text without surrounding ASCII whitespace, as UTF-8 bytes exactly as written (it is
//! not hex- or base64-decoded). So the newline `generate` prints, or an editor adds to a
//! file, is never part of the secret, and the same secret from a file and from the
//! environment has the same key id.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use ring::rand::{SecureRandom, SystemRandom};

use crate::exit::{self, CliError};

/// Random bytes in a generated secret (its text is their hex: 64 characters).
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a new secret: 32 random bytes (OS random) as 64 hex characters. The loader
    /// trims surrounding whitespace, so the trailing newline is harmless.
    Generate {
        /// Write it to this file (mode 0600, refused if it exists unless --force)
        /// instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite --out.
        #[arg(long)]
        force: bool,
    },
    /// Print the key id of a secret, as a node computes it: the same id on two nodes
    /// means the same secret (the secret itself is never shown).
    Id {
        /// A file holding the secret.
        #[arg(long, conflicts_with = "env")]
        file: Option<PathBuf>,
        /// An environment variable holding it (default PALISADE_SHARED_SECRET).
        #[arg(long)]
        env: Option<String>,
    },
}

pub fn run(command: SecretCommand) -> Result<ExitCode, CliError> {
    match command {
        SecretCommand::Generate { out, force } => {
            let secret = generate()?;
            match out {
                Some(path) => {
                    write_private(&path, secret.as_bytes(), force)?;
                    eprintln!(
                        "wrote a new secret to {} (key id {})",
                        path.display(),
                        palisade::settings::key_id_of(&secret)
                    );
                }
                None => println!("{secret}"),
            }
        }
        SecretCommand::Id { file, env } => {
            let text = match (file, env) {
                (Some(path), _) => std::fs::read_to_string(&path)
                    .map_err(|e| exit::io("read the secret file", &path, &e))?,
                (None, var) => {
                    let var = var.unwrap_or_else(|| "PALISADE_SHARED_SECRET".into());
                    std::env::var(&var).map_err(|e| {
                        CliError::new(exit::IO, format!("cannot read the secret from ${var}"))
                            .cause(&e)
                            .hint("give --file PATH or --env VARIABLE")
                    })?
                }
            };
            let bytes = palisade::settings::secret_bytes(&text).len();
            println!("{}", palisade::settings::key_id_of(&text));
            if bytes < SECRET_BYTES {
                eprintln!("warning: this secret is {bytes} bytes; nodes refuse secrets under 32 bytes (make one with `palisade secret generate`)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A new secret's text: [`SECRET_BYTES`] bytes of OS randomness, hex.
pub fn generate() -> Result<String, CliError> {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CliError::new(exit::IO, "the OS random source failed"))?;
    Ok(hex::encode(bytes))
}

/// Writes `bytes` to `path` with mode 0600 from its creation, refusing an existing file
/// unless `force`.
pub fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        let err = exit::io("write", path, &e);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            err.hint("it exists; pass --force to overwrite it")
        } else {
            err
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    file.write_all(bytes)
        .map_err(|e| exit::io("write", path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_enough_distinct_and_loadable() {
        let (a, b) = (
            generate().map_err(|e| e.render()),
            generate().map_err(|e| e.render()),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * SECRET_BYTES);
        let secret =
            palisade::SharedSecret::new(palisade::settings::secret_bytes(&format!("{a}\n")));
        assert!(secret.is_ok());
    }
}
