//! Where the bearer token comes from: `PRESSWORK_TOKEN` when set, else the file
//! `presswork login` wrote (`<config dir>/presswork/token`), else none.
//!
//! The file is private to its owner: the directory is created with mode 0700 and the file
//! with mode 0600 from the start (never widened and narrowed later). A token is never
//! printed; errors name the file, not its contents.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// The file that holds the token of the last `presswork login`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFile {
    path: PathBuf,
}

/// A bearer token and where it came from. Its `Debug` form leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token, without surrounding white space.
    pub value: String,
    /// Where it came from, for messages that tell the user what to fix.
    pub source: TokenSource,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Where a token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The `PRESSWORK_TOKEN` environment variable.
    Environment,
    /// The file `presswork login` wrote.
    File,
}

impl TokenFile {
    /// The token file at `path` (tests pass a temporary directory).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `<config dir>/presswork/token` under the user's configuration directory (e.g.
    /// `~/.config/presswork/token`), or `None` when the platform names no such directory
    /// (no home directory).
    pub fn in_config_dir(config_dir: Option<PathBuf>) -> Option<Self> {
        config_dir.map(|dir| Self::at(dir.join("presswork").join("token")))
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, action: &'static str, error: io::Error) -> CliError {
        CliError::TokenFile {
            path: self.path.clone(),
            action,
            error,
        }
    }

    /// The stored token, or `None` when there is no file or it is blank.
    pub fn load(&self) -> Result<Option<String>, CliError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(non_blank(&text).map(str::to_owned)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.failed("read", error)),
        }
    }

    /// Stores `token`, replacing any earlier one. The directory is created with mode 0700
    /// when missing; the token is written to a fresh file created with mode 0600 and then
    /// renamed over the old one, so the file is never readable by others, not even for a
    /// moment, and a failed write leaves the earlier token in place.
    pub fn save(&self, token: &str) -> Result<(), CliError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        private_dir_builder()
            .create(dir)
            .map_err(|error| self.failed("create the directory of", error))?;
        let mut staging = self.path.clone().into_os_string();
        staging.push(".new");
        let staging = PathBuf::from(staging);
        // A leftover from an interrupted login; create_new below refuses to reuse it.
        match fs::remove_file(&staging) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(self.failed("replace", error)),
        }
        let written = private_file_options()
            .open(&staging)
            .and_then(|mut file| {
                file.write_all(token.as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&staging, &self.path));
        written.map_err(|error| {
            let _ = fs::remove_file(&staging);
            self.failed("write", error)
        })
    }

    /// Removes the stored token; `false` when there was none.
    pub fn remove(&self) -> Result<bool, CliError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.failed("remove", error)),
        }
    }
}

#[cfg(unix)]
fn private_dir_builder() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
}

#[cfg(not(unix))]
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    builder
}

#[cfg(unix)]
fn private_file_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    options
}

fn non_blank(token: &str) -> Option<&str> {
    Some(token.trim()).filter(|token| !token.is_empty())
}

/// The token to send: `PRESSWORK_TOKEN` when set and not blank, else the stored one (when
/// there is a token file), else none — the control plane then answers UNAUTHENTICATED and
/// the error says how to sign in.
pub fn resolve(
    environment: Option<&str>,
    file: Option<&TokenFile>,
) -> Result<Option<Token>, CliError> {
    if let Some(value) = environment.and_then(non_blank) {
        return Ok(Some(Token {
            value: value.to_owned(),
            source: TokenSource::Environment,
        }));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    Ok(file.load()?.map(|value| Token {
        value,
        source: TokenSource::File,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_in(dir: &tempfile::TempDir) -> TokenFile {
        TokenFile::in_config_dir(Some(dir.path().join("config"))).unwrap()
    }

    #[test]
    fn the_file_is_presswork_token_under_the_config_dir() {
        let file = TokenFile::in_config_dir(Some(PathBuf::from("/home/ada/.config"))).unwrap();
        assert_eq!(file.path(), Path::new("/home/ada/.config/presswork/token"));
        assert_eq!(TokenFile::in_config_dir(None), None);
    }

    #[test]
    fn a_saved_token_loads_back_and_is_replaced_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir);
        assert_eq!(file.load().unwrap(), None);
        file.save("first").unwrap();
        assert_eq!(file.load().unwrap().as_deref(), Some("first"));
        file.save("second").unwrap();
        assert_eq!(file.load().unwrap().as_deref(), Some("second"));
        assert!(file.remove().unwrap());
        assert!(!file.remove().unwrap());
        assert_eq!(file.load().unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_0700_and_the_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir);
        file.save("secret").unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(file.path().parent().unwrap()), 0o700);

        // A file someone widened is replaced by a private one, not rewritten in place.
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
        file.save("again").unwrap();
        assert_eq!(mode(file.path()), 0o600);
    }

    #[test]
    fn a_leftover_from_an_interrupted_save_does_not_block_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir);
        file.save("first").unwrap();
        let leftover = file.path().with_file_name("token.new");
        fs::write(&leftover, "stale").unwrap();
        file.save("second").unwrap();
        assert_eq!(file.load().unwrap().as_deref(), Some("second"));
        assert!(!leftover.exists());
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as one.
        let file = TokenFile::at(dir.path());
        let error = file.load().unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&dir.path().display().to_string()),
            "{error}"
        );
    }

    fn resolved(
        environment: Option<&str>,
        file: Option<&TokenFile>,
    ) -> Option<(String, TokenSource)> {
        resolve(environment, file)
            .unwrap()
            .map(|token| (token.value, token.source))
    }

    #[test]
    fn the_environment_wins_then_the_file_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir);
        assert_eq!(resolved(None, Some(&file)), None);
        assert_eq!(resolved(None, None), None);

        file.save("stored").unwrap();
        let stored = Some(("stored".to_owned(), TokenSource::File));
        assert_eq!(resolved(None, Some(&file)), stored);
        assert_eq!(
            resolved(Some(" from-env\n"), Some(&file)),
            Some(("from-env".to_owned(), TokenSource::Environment))
        );
        // Set but empty (or blank) counts as unset.
        for blank in ["", "  "] {
            assert_eq!(resolved(Some(blank), Some(&file)), stored);
        }
        assert_eq!(resolved(Some(""), None), None);
    }

    #[test]
    fn debug_output_leaves_the_token_out() {
        let token = Token {
            value: "s3cret".to_owned(),
            source: TokenSource::File,
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("File"), "{shown}");
    }
}
