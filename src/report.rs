//! What loading a node's settings found: every problem and warning, each with the
//! setting (by its config key), the file involved, the cause and the fix. Loading never
//! stops at the first problem, so an operator sees all of them at once; the `check`
//! command prints this report.

use std::fmt;
use std::path::PathBuf;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; the node runs as it is.
    Note,
    /// The node starts, but something will go wrong (a certificate expiring soon) or
    /// security is weaker than it looks.
    Warning,
    /// The node must not start with these settings: a peer would refuse it, or the
    /// settings would silently weaken security.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One problem or warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The setting to change, by its config key (`tls_cert_file`, `shared_secret_file`,
    /// ...). Its environment variable is `PALISADE_` and the key in upper case.
    pub key: &'static str,
    /// The file the finding is about, when there is one.
    pub file: Option<PathBuf>,
    /// What is wrong, in words.
    pub cause: String,
    /// What to do about it.
    pub fix: String,
}

impl Finding {
    /// An error about `key`.
    pub fn error(key: &'static str, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Severity::Error, key, cause, fix)
    }

    /// A warning about `key`.
    pub fn warning(key: &'static str, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Severity::Warning, key, cause, fix)
    }

    /// A note about `key` (nothing to fix; e.g. what a certificate says).
    pub fn note(key: &'static str, cause: impl Into<String>) -> Self {
        Self::new(Severity::Note, key, cause, "")
    }

    fn new(
        severity: Severity,
        key: &'static str,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            key,
            file: None,
            cause: cause.into(),
            fix: fix.into(),
        }
    }

    /// The same finding, about `file`.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.key)?;
        if let Some(file) = &self.file {
            write!(f, " ({})", file.display())?;
        }
        write!(f, ": {}", self.cause)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Everything loading found, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Whether the node may start: no finding is an error.
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.of(Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.of(Severity::Warning)
    }

    fn of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let (errors, warnings) = (self.errors().count(), self.warnings().count());
        write!(f, "{errors} error(s), {warnings} warning(s)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_warnings_only_is_ok_and_says_what_to_do() {
        let mut report = Report::default();
        report.push(
            Finding::warning(
                "tls_cert_file",
                "the certificate expires in 6 days",
                "renew it",
            )
            .in_file("/etc/palisade/tls.crt"),
        );
        assert!(report.is_ok());
        let shown = report.to_string();
        assert!(
            shown.starts_with(
                "warning: tls_cert_file (/etc/palisade/tls.crt): the certificate expires in 6 days\n  fix: renew it"
            ),
            "{shown}"
        );
        report.push(Finding::error(
            "shared_secret",
            "too short",
            "use 32 bytes or more",
        ));
        assert!(!report.is_ok());
        assert!(report.to_string().ends_with("1 error(s), 1 warning(s)"));
    }
}
