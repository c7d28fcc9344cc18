//! Why settings could not be read: each names the key (or environment variable) and
//! says what to write instead.

use std::fmt;
use std::path::PathBuf;

use crate::report::{Finding, Report};

/// One problem reading settings from a file or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsError {
    /// A file could not be read (the config file, or a secret file).
    Unreadable {
        /// The key that names the file (`config` for the config file itself).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// The config file is not valid TOML.
    Syntax {
        /// The file, when known.
        origin: Option<PathBuf>,
        /// 1-based line and column of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key the config file must not have.
    UnknownKey {
        /// The file, when known.
        origin: Option<PathBuf>,
        /// The key as written.
        key: String,
        /// The known key it probably means.
        suggestion: Option<&'static str>,
    },
    /// A table (`[cluster]`, as in Arc's config): palisade's keys are at the top level.
    Table {
        /// The file, when known.
        origin: Option<PathBuf>,
        /// The table's name.
        name: String,
    },
    /// A known key with a value of the wrong shape.
    BadValue {
        /// The file, when known.
        origin: Option<PathBuf>,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A bad value inside a `[[forward]]`, `[[service]]` or `[peers]` table.
    BadTableValue {
        /// The file, when known.
        origin: Option<PathBuf>,
        /// Where: `forward[0].listen`, `service[1].name`, `peers.node-2`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A `PALISADE_*` environment variable palisade does not read.
    UnknownEnv {
        /// The variable.
        var: String,
        /// The variable it probably means.
        suggestion: Option<String>,
    },
    /// An environment variable whose value cannot be read.
    BadEnv {
        /// The variable.
        var: String,
        /// Its key.
        key: &'static str,
        /// What its value must look like.
        expected: String,
    },
}

impl SettingsError {
    /// The config key to change (`config` for the file as a whole).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Unreadable { key, .. }
            | Self::BadValue { key, .. }
            | Self::BadEnv { key, .. } => key,
            Self::Syntax { .. } => "config",
            Self::UnknownKey { suggestion, .. } => suggestion.unwrap_or("config"),
            Self::Table { .. } => "config",
            Self::BadTableValue { key, .. } => ["forward", "service", "peers"]
                .into_iter()
                .find(|t| key.starts_with(t))
                .unwrap_or("config"),
            Self::UnknownEnv { .. } => "environment",
        }
    }

    /// What is wrong.
    pub fn cause(&self) -> String {
        match self {
            Self::Unreadable { path, reason, .. } => {
                format!("cannot read {}: {reason}", path.display())
            }
            Self::Syntax {
                line,
                column,
                message,
                ..
            } => {
                format!("invalid TOML at line {line}, column {column}: {message}")
            }
            Self::UnknownKey { key, .. } => format!("unknown key `{key}`"),
            Self::Table { name, .. } => format!(
                "unknown table `[{name}]`: palisade's keys are at the top level of the file"
            ),
            Self::BadValue { key, message, .. } => format!("bad value for `{key}`: {message}"),
            Self::BadTableValue { key, message, .. } => format!("`{key}`: {message}"),
            Self::UnknownEnv { var, .. } => {
                format!(
                    "unknown environment variable {var} (palisade reads every PALISADE_* variable)"
                )
            }
            Self::BadEnv { var, .. } => format!("{var} has a value palisade cannot read"),
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        let list = "the keys are listed in the README's Configuration section";
        match self {
            Self::Unreadable { key: "config", .. } => {
                "check the path and that this process may read the file".into()
            }
            Self::Unreadable { key, .. } => {
                format!("check `{key}`: the path, and that this process may read the file")
            }
            Self::Syntax { .. } => "fix the TOML syntax at that place".into(),
            Self::UnknownKey {
                suggestion: Some(s),
                ..
            } => format!("did you mean `{s}`?"),
            Self::UnknownKey { .. } => format!("remove it; {list}"),
            Self::Table { name, .. } => {
                format!("remove the `[{name}]` line and move its keys above every other table")
            }
            Self::BadValue { .. } | Self::BadTableValue { .. } => {
                format!("write it as the message says; {list}")
            }
            Self::UnknownEnv {
                suggestion: Some(s),
                ..
            } => format!("did you mean {s}?"),
            Self::UnknownEnv { .. } => {
                format!("unset it; {list} (PALISADE_ + the key in upper case)")
            }
            Self::BadEnv { var, expected, .. } => format!("set {var} to {expected}"),
        }
    }

    fn file(&self) -> Option<&PathBuf> {
        match self {
            Self::Unreadable { path, .. } => Some(path),
            Self::Syntax { origin, .. }
            | Self::UnknownKey { origin, .. }
            | Self::Table { origin, .. }
            | Self::BadValue { origin, .. }
            | Self::BadTableValue { origin, .. } => origin.as_ref(),
            Self::UnknownEnv { .. } | Self::BadEnv { .. } => None,
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.file() {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "{}; {}", self.cause(), self.fix())
    }
}

impl std::error::Error for SettingsError {}

impl From<&SettingsError> for Finding {
    fn from(e: &SettingsError) -> Self {
        let finding = Finding::error(e.key(), e.cause(), e.fix());
        match e.file() {
            Some(file) => finding.in_file(file.clone()),
            None => finding,
        }
    }
}

/// Every problem found reading settings (loading goes on past the first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl SettingsErrors {
    /// The problems as a load report.
    pub fn report(&self) -> Report {
        Report {
            findings: self.0.iter().map(Finding::from).collect(),
        }
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsErrors {}
