//! Echoing input in messages: errors quote what the client sent (`` `Monthly` is not a report
//! name ``), but never more than a short prefix of it, so a 1 MB id or name cannot make a 1 MB
//! (or, repeated per field, a 1 GB) message. Every error that quotes client input — report
//! configurations, job ids, names — goes through [`shown`].

/// `text` as a message echoes it: at most 64 characters, then `… (N bytes)` when there is
/// more; control characters escaped (`\n`). The worker uses the same rule
/// (`presswork_proto::rules::shown`).
pub fn shown(text: &str) -> String {
    presswork_proto::rules::shown(text)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_megabyte_is_shown_as_its_first_characters_and_its_size() {
        let id = "é".repeat(1 << 19);
        let text = shown(&id);
        assert_eq!(text, format!("{}… (1048576 bytes)", "é".repeat(64)));
        assert_eq!(shown("job-1"), "job-1");
        assert_eq!(shown("a\r\nb"), "a\\r\\nb");
    }
}
