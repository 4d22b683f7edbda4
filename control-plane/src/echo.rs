//! Client input echoed in messages, bounded: an error names what was wrong without repeating
//! a megabyte the caller sent.

/// Characters of a caller's text shown in a message at most.
const SHOWN_CHARS: usize = 64;

/// `text` quoted for a message: whole when short, else its first characters and its length.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn short_text_is_shown_whole_and_long_text_is_cut_with_its_length() {
        assert_eq!(shown("demo-fast"), "\"demo-fast\"");
        let long = "x".repeat(1 << 20);
        let text = shown(&long);
        assert!(text.len() < 100, "{text}");
        assert!(text.ends_with("… (1048576 bytes)"), "{text}");
        // Never cut inside a character.
        assert!(shown(&"é".repeat(100)).starts_with("\"éé"));
    }
}
