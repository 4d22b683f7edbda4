//! Rules about report configurations that the control plane (when a configuration is saved)
//! and the worker (when it runs one) must apply alike, so that a configuration saved is one
//! that runs: delivery file names, the retries of an HTTP delivery, secret references and
//! what counts as a credential in a URL.
//!
//! Secret references: a credential is never written into a configuration. Where credentials
//! go (a SQL or HTTP URL, a connector's parameters) the configuration says `${env:NAME}` (the
//! worker's environment variable `NAME`) or `${file:NAME}` (the file `NAME` in the worker's
//! secrets directory), and the worker puts the value in when it runs the job. The control
//! plane stores and shows the reference, never the value.

use std::ops::Range;

/// The longest delivery file name, in bytes (most file systems' limit).
pub const MAX_FILE_NAME: usize = 255;

/// The most retries an HTTP delivery may ask for.
pub const MAX_RETRIES: u32 = 10;

/// The longest name in a secret reference.
pub const MAX_SECRET_NAME: usize = 128;

/// The file name of a directory delivery: `pattern` (or `<job id>.pdf` when it is empty) with
/// `{job_id}` replaced by `job_id`, if it is a plain file name ending in `.pdf`: not empty, at
/// most [`MAX_FILE_NAME`] bytes, no `/`, `\`, NUL or other control character, not starting
/// with `.` (so neither `.` nor `..`). The error says why and what to use.
pub fn delivery_file_name(pattern: &str, job_id: &str) -> Result<String, String> {
    let name = if pattern.is_empty() {
        format!("{job_id}.pdf")
    } else {
        pattern.replace("{job_id}", job_id)
    };
    const USE: &str =
        "use a plain file name ending in .pdf, without / or \\ (it may contain {job_id})";
    let problem = if name.len() > MAX_FILE_NAME {
        format!("{} bytes; at most {MAX_FILE_NAME}", name.len())
    } else if name.contains(['/', '\\']) {
        "has a / or \\; it must name a file in the delivery directory".to_string()
    } else if name.chars().any(char::is_control) {
        "has a control character (a newline, a NUL, …)".to_string()
    } else if name.starts_with('.') {
        "starts with a dot (a hidden file, or . or ..)".to_string()
    } else if !name.ends_with(".pdf") {
        "does not end in .pdf".to_string()
    } else {
        return Ok(name);
    };
    Err(format!(
        "not a file name to deliver to: it {problem}; {USE}"
    ))
}

/// Where a secret reference takes its value from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// `${env:NAME}`: the worker's environment variable `NAME`.
    Env(&'a str),
    /// `${file:NAME}`: the file `NAME` in the worker's secrets directory.
    File(&'a str),
}

impl std::fmt::Display for SecretRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "${{env:{name}}}"),
            SecretRef::File(name) => write!(f, "${{file:{name}}}"),
        }
    }
}

/// The secret references in `text`, with where each is. Every `${` must open a reference: an
/// unknown kind, a bad name or a missing `}` is an error saying what is expected.
pub fn secret_refs(text: &str) -> Result<Vec<(Range<usize>, SecretRef<'_>)>, String> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("${").map(|i| i + from) {
        let Some(len) = text[at..].find('}') else {
            return Err(format!(
                "`${{` at byte {at} opens no secret reference (no `}}` follows); write ${{env:NAME}} or ${{file:NAME}}"
            ));
        };
        let inner = &text[at + 2..at + len];
        let reference = match inner.split_once(':') {
            Some(("env", name)) if valid_env_name(name) => SecretRef::Env(name),
            Some(("file", name)) if valid_file_name(name) => SecretRef::File(name),
            Some(("env", _)) => {
                return Err(format!(
                    "the reference at byte {at} does not name an environment variable: use ${{env:NAME}} with 1 to {MAX_SECRET_NAME} letters, digits and _, not starting with a digit"
                ));
            }
            Some(("file", _)) => {
                return Err(format!(
                    "the reference at byte {at} does not name a file: use ${{file:NAME}} with a plain file name of the secrets directory (1 to {MAX_SECRET_NAME} characters, no / or .., not starting with a dot)"
                ));
            }
            _ => {
                return Err(format!(
                    "`${{` at byte {at} opens no secret reference; write ${{env:NAME}} or ${{file:NAME}}"
                ));
            }
        };
        refs.push((at..at + len + 1, reference));
        from = at + len + 1;
    }
    Ok(refs)
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `text` with each secret reference replaced by what `value` gives for it; the first error
/// of `value` (or of the references' syntax) is returned as it is.
pub fn resolve_refs(
    text: &str,
    mut value: impl FnMut(SecretRef<'_>) -> Result<String, String>,
) -> Result<String, String> {
    let mut resolved = String::with_capacity(text.len());
    let mut from = 0;
    for (range, reference) in secret_refs(text)? {
        resolved.push_str(&text[from..range.start]);
        resolved.push_str(&value(reference)?);
        from = range.end;
    }
    resolved.push_str(&text[from..]);
    Ok(resolved)
}

/// Whether `text` is nothing but secret references (and not empty): a value that holds no
/// literal secret.
pub fn only_refs(text: &str) -> bool {
    match secret_refs(text) {
        Ok(refs) => {
            !refs.is_empty() && refs.iter().map(|(r, _)| r.len()).sum::<usize>() == text.len()
        }
        Err(_) => false,
    }
}

/// Whether a parameter or query-string name looks like it holds a credential: `password`,
/// `token`, `sig`, `api_key`, `X-Amz-Signature`, `client_secret`, `Authorization`, …
pub fn credential_name(name: &str) -> bool {
    const WORDS: [&str; 16] = [
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "sig",
        "signature",
        "key",
        "apikey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "sas",
        "jwt",
    ];
    name.to_ascii_lowercase()
        .split(['-', '_', '.'])
        .any(|word| WORDS.contains(&word))
}

/// The parts of a URL that may hold a secret, found without parsing the rest (the control
/// plane and the worker read URLs with different parsers; this one accepts `${…}` anywhere).
struct UrlParts<'a> {
    /// The password of `scheme://user:password@host`, and where it is.
    password: Option<(Range<usize>, &'a str)>,
    /// Each `name=value` of the query string, with where its value is.
    query: Vec<(&'a str, Range<usize>)>,
}

fn url_parts(url: &str) -> UrlParts<'_> {
    let mut parts = UrlParts {
        password: None,
        query: Vec::new(),
    };
    let end = url.find('#').unwrap_or(url.len());
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..end]
        .find(['/', '?'])
        .map_or(end, |i| i + authority_start);
    if let Some(at) = url[authority_start..authority_end].rfind('@') {
        let userinfo = authority_start..authority_start + at;
        if let Some(colon) = url[userinfo.clone()].find(':') {
            let range = userinfo.start + colon + 1..userinfo.end;
            parts.password = Some((range.clone(), &url[range]));
        }
    }
    if let Some(question) = url[authority_end..end].find('?') {
        let mut start = authority_end + question + 1;
        for pair in url[start..end].split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                let value_start = start + name.len() + 1;
                parts
                    .query
                    .push((name, value_start..value_start + value.len()));
            }
            start += pair.len() + 1;
        }
    }
    parts
}

/// What in `url` is a credential written out (not a secret reference): a password, or the
/// value of a query parameter whose name looks like a credential (see [`credential_name`]).
/// Each problem says where and what to do.
pub fn literal_credentials_in_url(url: &str) -> Vec<String> {
    let parts = url_parts(url);
    let mut problems = Vec::new();
    const USE: &str = "put it in the worker's environment or secrets directory and write ${env:NAME} or ${file:NAME} in its place";
    if let Some((_, password)) = parts.password
        && !password.is_empty()
        && !only_refs(password)
    {
        problems.push(format!("the URL holds a password; {USE}"));
    }
    for (name, value) in parts.query {
        let value = &url[value];
        if credential_name(&percent_decoded_name(name)) && !value.is_empty() && !only_refs(value) {
            problems.push(format!(
                "the query parameter `{}` holds a credential; {USE}",
                shown(name)
            ));
        }
    }
    problems
}

/// Checks where `url`'s secret references are: the whole URL, or inside its password or a
/// query parameter's value — the parts that are never shown in logs and messages.
pub fn check_url_refs(url: &str) -> Result<(), String> {
    let refs = secret_refs(url)?;
    if refs.is_empty() || only_refs(url) {
        return Ok(());
    }
    let parts = url_parts(url);
    let hidden = |range: &Range<usize>| {
        parts
            .password
            .as_ref()
            .is_some_and(|(p, _)| p.start <= range.start && range.end <= p.end)
            || parts
                .query
                .iter()
                .any(|(_, v)| v.start <= range.start && range.end <= v.end)
    };
    match refs.iter().find(|(range, _)| !hidden(range)) {
        None => Ok(()),
        Some((_, reference)) => Err(format!(
            "{reference} is in a part of the URL that logs and messages show; a secret reference may be the whole URL, its password (scheme://user:${{env:NAME}}@host/…) or a query parameter's value (?token=${{file:NAME}})"
        )),
    }
}

/// `url` with every written-out credential (see [`literal_credentials_in_url`]) replaced by
/// `***`; secret references are kept, since they are no secret.
pub fn redact_url(url: &str) -> String {
    let parts = url_parts(url);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    if let Some((range, password)) = parts.password
        && !password.is_empty()
        && !only_refs(password)
    {
        ranges.push(range);
    }
    for (name, value) in parts.query {
        if credential_name(&percent_decoded_name(name))
            && !value.is_empty()
            && !only_refs(&url[value.clone()])
        {
            ranges.push(value);
        }
    }
    let mut redacted = String::with_capacity(url.len());
    let mut from = 0;
    for range in ranges {
        redacted.push_str(&url[from..range.start]);
        redacted.push_str("***");
        from = range.end;
    }
    redacted.push_str(&url[from..]);
    redacted
}

/// A query parameter name with its `%XX` escapes decoded (`X%2DAmz%2DSignature`), lossily.
fn percent_decoded_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How much of an input a message echoes, in characters.
pub const SHOWN_CHARS: usize = 64;

/// `text` as a message echoes it: at most [`SHOWN_CHARS`] characters, then `… (N bytes)` when
/// there is more, control characters escaped (`\n`), so that a 1 MB name or a newline in it
/// cannot blow up or forge a message.
pub fn shown(text: &str) -> String {
    let cut = text
        .char_indices()
        .nth(SHOWN_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let mut out = String::with_capacity(cut + 24);
    for c in text[..cut].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_file_names() {
        for good in ["report.pdf", "sales-{job_id}.pdf", "a b.pdf", ""] {
            assert!(delivery_file_name(good, "job-1").is_ok(), "{good:?}");
        }
        assert_eq!(
            delivery_file_name("sales-{job_id}.pdf", "j1").as_deref(),
            Ok("sales-j1.pdf")
        );
        assert_eq!(delivery_file_name("", "j1").as_deref(), Ok("j1.pdf"));
        let long = format!("{}.pdf", "a".repeat(252));
        let bad = [
            "a\0.pdf",
            "a\n.pdf",
            "a\\b.pdf",
            "../x.pdf",
            "..",
            "a/b.pdf",
            ".hidden.pdf",
            "report.txt",
            long.as_str(),
        ];
        for name in bad {
            let error = delivery_file_name(name, "j").unwrap_err();
            assert!(error.starts_with("not a file name"), "{name:?}: {error}");
        }
        assert!(delivery_file_name(&format!("{}.pdf", "a".repeat(251)), "j").is_ok());
    }

    #[test]
    fn secret_references_are_parsed() {
        assert_eq!(
            secret_refs("postgres://u:${env:PG_PASS}@h/${file:db-name.txt}")
                .unwrap()
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            [SecretRef::Env("PG_PASS"), SecretRef::File("db-name.txt")]
        );
        for bad in [
            "${env:}",
            "${env:1A}",
            "${env:A-B}",
            "${file:../x}",
            "${file:a/b}",
            "${file:..}",
            "${file:.env}",
            "${vault:x}",
            "${env:X",
        ] {
            assert!(secret_refs(bad).is_err(), "{bad:?}");
        }
        let resolved = resolve_refs("a${env:X}b${file:y}c", |r| {
            Ok(match r {
                SecretRef::Env(n) => format!("<{n}>"),
                SecretRef::File(n) => format!("[{n}]"),
            })
        });
        assert_eq!(resolved.as_deref(), Ok("a<X>b[y]c"));
        assert!(only_refs("${env:A}${file:b}"));
        assert!(!only_refs("x${env:A}"));
        assert!(!only_refs(""));
    }

    #[test]
    fn credentials_in_urls_are_found_and_redacted() {
        let literal = [
            "postgres://u:pw@h/db",
            "https://h/x?sig=abc",
            "https://h/x?a=1&X-Amz-Signature=abc",
            "https://h/x?api_key=abc",
            "https://h/x?access_token=abc#top",
            "https://h/x?password=p",
            "https://h/x?client_secret=s",
            "https://h/x?X%2DAmz%2DSignature=abc",
        ];
        for url in literal {
            assert_eq!(literal_credentials_in_url(url).len(), 1, "{url}");
            let redacted = redact_url(url);
            assert!(redacted.contains("***"), "{redacted}");
            assert!(
                !redacted.contains("pw@") && !redacted.contains("abc"),
                "{redacted}"
            );
        }
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        let clean = [
            "postgres://u:${env:PG_PASS}@h/db",
            "postgres://u@h/db",
            "https://h/x?format=csv&page=2",
            "https://h/x?token=${file:api-token}",
            "sqlite:///var/data/x.db",
            "${env:DATABASE_URL}",
        ];
        for url in clean {
            assert_eq!(
                literal_credentials_in_url(url),
                Vec::<String>::new(),
                "{url}"
            );
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn secret_references_go_where_nothing_shows_them() {
        for ok in [
            "postgres://u:${env:PG_PASS}@h/db",
            "https://h/x?token=${file:api-token}&a=1",
            "${env:DATABASE_URL}",
            "https://h/x",
        ] {
            assert_eq!(check_url_refs(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://${env:HOST}/x",
            "https://h/${env:TOKEN}/x",
            "postgres://${env:USER}@h/db",
            "x${env:URL}",
        ] {
            assert!(check_url_refs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn echoed_text_is_shortened() {
        assert_eq!(shown("abc"), "abc");
        let long = "x".repeat(1 << 20);
        let text = shown(&long);
        assert!(text.len() < 100, "{text}");
        assert!(text.ends_with("… (1048576 bytes)"), "{text}");
        assert_eq!(shown("a\nb"), "a\\nb");
    }
}
