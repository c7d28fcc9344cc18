//! A scratch folder where tests run the `openssl` command, as an operator would, to make
//! certificates and keys palisade must read. Removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder for one test's openssl-made files.
#[derive(Debug)]
pub struct OpensslDir(PathBuf);

impl OpensslDir {
    /// A new empty folder named after `name` and this process, or `None` (and a line
    /// saying the test is skipped) when the `openssl` command is missing.
    pub fn new(name: &str) -> Option<Self> {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("skipped: the openssl command is not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Some(Self(dir))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// A file in the folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Runs `openssl ARGS` in the folder; panics with its stderr when it fails.
    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a text file in the folder.
    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text)
            .unwrap_or_else(|e| panic!("cannot write {file}: {e}"));
    }

    /// Reads a text file from the folder.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
    }
}

impl Drop for OpensslDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
