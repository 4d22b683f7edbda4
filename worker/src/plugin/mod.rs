//! Out-of-process connectors: programs in any language that a job's stage runs as a child
//! process, speaking JSON lines over stdin and stdout (docs/pdk.md is the reference for their
//! authors).
//!
//! - [`protocol`]: the messages, and a bounded line reader.
//! - [`process`]: one run of a connector — process group, pipes, cancel (message + SIGTERM,
//!   SIGKILL after the grace), reaping, leftovers.
//! - [`check`]: the conformance kit (`presswork-worker connector-check`).
//! - [`Connectors`]: the connectors registered on this worker, by name.

pub mod check;
pub mod process;
pub mod protocol;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use process::{ConnectorProgram, ConnectorRun, Ending, GroupMember, live_group_members};

/// How long a connector has to exit after SIGTERM before it is SIGKILLed, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The connectors a worker may run, by name, and the grace period they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connectors {
    programs: BTreeMap<String, PathBuf>,
    grace: Duration,
}

impl Default for Connectors {
    fn default() -> Self {
        Connectors {
            programs: BTreeMap::new(),
            grace: DEFAULT_GRACE,
        }
    }
}

impl Connectors {
    /// Registers `--connector NAME=PATH` entries and every executable file of each
    /// `--connector-dir DIR` (named after the file without its extension). Errors name the
    /// setting and say what to do.
    pub fn from_settings(
        named: &[String],
        dirs: &[PathBuf],
        grace: Duration,
    ) -> anyhow::Result<Connectors> {
        let mut connectors = Connectors {
            programs: BTreeMap::new(),
            grace,
        };
        for entry in named {
            let (name, path) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--connector `{entry}` (PRESSWORK_CONNECTORS) is not NAME=PATH; e.g. --connector sales=/opt/connectors/sales.py"
                )
            })?;
            connectors.add(name, Path::new(path), "--connector")?;
        }
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read --connector-dir {} (PRESSWORK_CONNECTOR_DIR): {e}; give a directory of connector programs",
                    dir.display()
                )
            })?;
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| process::is_executable_file(p))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                connectors.add(&name, &path, "--connector-dir")?;
            }
        }
        Ok(connectors)
    }

    fn add(&mut self, name: &str, path: &Path, setting: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            is_connector_name(name),
            "{setting}: connector name `{name}` ({}) is not usable: use 1 to 64 lower-case letters, digits, '-' or '_'",
            path.display()
        );
        let path = std::path::absolute(path)
            .map_err(|e| anyhow::anyhow!("{setting}: cannot resolve {}: {e}", path.display()))?;
        anyhow::ensure!(
            process::is_executable_file(&path),
            "{setting}: connector `{name}` at {} is not an executable file; check the path and chmod +x it",
            path.display()
        );
        if let Some(other) = self.programs.get(name) {
            anyhow::bail!(
                "{setting}: connector name `{name}` is given twice ({} and {}); rename one of them",
                other.display(),
                path.display()
            );
        }
        self.programs.insert(name.to_string(), path);
        Ok(())
    }

    /// The connector registered as `name`.
    pub fn get(&self, name: &str) -> Option<ConnectorProgram> {
        self.programs.get(name).map(|path| ConnectorProgram {
            name: name.to_string(),
            path: path.clone(),
        })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.programs.keys().map(String::as_str).collect()
    }

    /// How long a connector has to exit after SIGTERM.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// 1 to 64 lower-case ASCII letters, digits, `-` or `_`.
fn is_connector_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn connectors_come_from_names_and_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sales = executable(dir.path(), "sales.py");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("mkdir");
        executable(&plugins, "crm_export");
        std::fs::write(plugins.join("README.md"), "not a program").expect("write");
        let connectors = Connectors::from_settings(
            &[format!("sales={}", sales.display())],
            std::slice::from_ref(&plugins),
            Duration::from_secs(2),
        )
        .expect("valid");
        assert_eq!(connectors.names(), ["crm_export", "sales"]);
        assert_eq!(
            connectors.get("crm_export").map(|c| c.path),
            Some(plugins.join("crm_export"))
        );
        assert_eq!(connectors.grace(), Duration::from_secs(2));
        assert_eq!(connectors.get("nope"), None);
    }

    #[test]
    fn bad_settings_are_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sales = executable(dir.path(), "sales.py");
        let error = |named: &[String]| {
            Connectors::from_settings(named, &[], DEFAULT_GRACE)
                .expect_err("refused")
                .to_string()
        };
        assert!(error(&["sales".into()]).contains("is not NAME=PATH"));
        let message = error(&[format!("Sales={}", sales.display())]);
        assert!(message.contains("lower-case letters"), "{message}");
        let message = error(&[format!("sales={}", dir.path().join("missing").display())]);
        assert!(message.contains("is not an executable file"), "{message}");
        let plain = dir.path().join("plain.py");
        std::fs::write(&plain, "print()").expect("write");
        let message = error(&[format!("plain={}", plain.display())]);
        assert!(message.contains("chmod +x"), "{message}");
        let message = error(&[
            format!("sales={}", sales.display()),
            format!("sales={}", sales.display()),
        ]);
        assert!(message.contains("is given twice"), "{message}");
        let message = Connectors::from_settings(&[], &[dir.path().join("nodir")], DEFAULT_GRACE)
            .expect_err("no such dir")
            .to_string();
        assert!(message.contains("cannot read --connector-dir"), "{message}");
    }
}
