//! Exit codes and the error every subcommand returns: what failed, the chain of causes,
//! and a hint, printed cargo style.

use std::fmt::Write as _;
use std::process::ExitCode;

/// The settings or certificates have errors.
pub const INVALID: u8 = 1;
/// A file could not be read or written, or would be overwritten.
pub const IO: u8 = 3;
/// probe: TCP connect failed.
pub const TCP: u8 = 10;
/// probe: TLS failed.
pub const TLS: u8 = 11;
/// probe: authorization failed.
pub const AUTHORIZATION: u8 = 12;
/// probe: this node is revoked: the peer refused its certificate with the TLS alert
/// `certificate_revoked`, or its join with REJECT 13. A revocation is an authorization
/// refusal, so it shares code 12; the message starts with `revoked:` and names the
/// entry of this node's own revocation_file or CRL that lists it, when one does.
pub const REVOKED: u8 = AUTHORIZATION;
/// probe: the join failed.
pub const JOIN: u8 = 13;
/// probe: the link failed after the join.
pub const AFTER_JOIN: u8 = 14;
/// demo: an expectation did not hold.
pub const DEMO_FAILED: u8 = 20;

/// A failure: exit code, message, causes (outermost first), hint.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    pub causes: Vec<String>,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
        }
    }

    /// Adds `error` and its sources to the causes, skipping a source whose text its
    /// parent already shows.
    pub fn cause(mut self, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut next = Some(error);
        let mut last = String::new();
        while let Some(e) = next {
            let text = e.to_string();
            if !last.contains(&text) {
                self.causes.push(text.clone());
            }
            last = text;
            next = e.source();
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The text printed to stderr.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}", self.message);
        for cause in &self.causes {
            let _ = write!(out, "\n  caused by: {cause}");
        }
        if let Some(hint) = &self.hint {
            let _ = write!(out, "\n  hint: {hint}");
        }
        out
    }

    pub fn print_and_exit_code(&self) -> ExitCode {
        eprintln!("{}", self.render());
        ExitCode::from(self.code)
    }
}

/// An I/O failure on `path`.
pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> CliError {
    CliError::new(IO, format!("cannot {what} {}", path.display())).cause(e)
}
