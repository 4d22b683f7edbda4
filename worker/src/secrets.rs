//! Secret references of report configurations, resolved on the worker: `${env:NAME}` is the
//! worker's environment variable `NAME`, `${file:NAME}` the file `NAME` in its secrets
//! directory (`--secrets-dir`). The control plane stores and shows only the references; the
//! values exist on the worker alone, and no message names a value — only the reference.
//! The reference syntax is [`presswork_proto::rules`]'s, the one the control plane checks.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use presswork_proto::rules::{self, SecretRef};

/// The largest secret file read, in bytes.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Where this worker finds the values of secret references.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// `--secrets-dir`: where `${file:NAME}` is read; none, and such references fail.
    dir: Option<PathBuf>,
    /// Instead of the process environment (tests).
    env: Option<BTreeMap<String, String>>,
}

impl Secrets {
    /// Secrets from the process environment and, when given, the files in `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Secrets { dir, env: None }
    }

    /// Secrets from `env` instead of the process environment.
    pub fn with_env(dir: Option<PathBuf>, env: &[(&str, &str)]) -> Self {
        Secrets {
            dir,
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    /// `text` with its secret references replaced by their values. The error names the
    /// reference and says what to do; it never holds a value.
    pub fn resolve(&self, text: &str) -> Result<String, String> {
        rules::resolve_refs(text, |reference| self.value(reference))
    }

    fn value(&self, reference: SecretRef<'_>) -> Result<String, String> {
        match reference {
            SecretRef::Env(name) => {
                let value = match &self.env {
                    Some(env) => env.get(name).cloned(),
                    None => std::env::var(name).ok(),
                };
                value.ok_or_else(|| {
                    format!(
                        "the secret reference {reference} cannot be resolved: the worker's environment has no variable {name} (or it is not UTF-8); set it where the worker starts, or use ${{file:…}}"
                    )
                })
            }
            SecretRef::File(name) => {
                let Some(dir) = &self.dir else {
                    return Err(format!(
                        "the secret reference {reference} cannot be resolved: this worker has no secrets directory; start it with --secrets-dir (PRESSWORK_SECRETS_DIR)"
                    ));
                };
                let path = dir.join(name);
                read_secret(&path).map_err(|problem| {
                    format!(
                        "the secret reference {reference} cannot be resolved: {} {problem}",
                        path.display()
                    )
                })
            }
        }
    }
}

/// A secret file's text without its final line break; at most [`MAX_SECRET_FILE`] bytes.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            "does not exist; create it, readable by the worker".to_string()
        }
        std::io::ErrorKind::PermissionDenied => "is not readable by the worker".to_string(),
        kind => format!("cannot be opened ({kind})"),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({})", e.kind()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "is larger than {MAX_SECRET_FILE} bytes; a secret file holds one value"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_take_their_values_from_the_environment_and_the_secrets_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-pass"), "s3cret\n").unwrap();
        let secrets = Secrets::with_env(Some(dir.path().into()), &[("USER_NAME", "ada")]);
        assert_eq!(
            secrets
                .resolve("postgres://${env:USER_NAME}:${file:pg-pass}@h/db")
                .as_deref(),
            Ok("postgres://ada:s3cret@h/db")
        );
    }

    #[test]
    fn a_reference_that_cannot_be_resolved_is_named_and_no_value_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 70_000]).unwrap();
        let secrets = Secrets::with_env(Some(dir.path().into()), &[("SET", "v4lue")]);
        let cases = [
            ("${env:MISSING}", "${env:MISSING}"),
            ("${file:absent}", "does not exist"),
            ("${file:big}", "is larger than"),
            ("${env:SET}${file:absent}", "${file:absent}"),
        ];
        for (text, expected) in cases {
            let error = secrets.resolve(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("v4lue"), "{error}");
        }
        let no_dir = Secrets::with_env(None, &[]);
        assert!(
            no_dir
                .resolve("${file:x}")
                .unwrap_err()
                .contains("--secrets-dir")
        );
    }
}
