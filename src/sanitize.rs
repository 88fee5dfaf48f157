//! Hostile text made safe to show (SPEC §8, §9): strings from manifests,
//! mirrors, APIs and children never carry terminal control sequences or URL
//! credentials into output.

/// Control characters other than tab and newline shown escaped (`\x1b`), so a
/// string cannot clear the screen, retitle the terminal or move the cursor.
/// C1 controls (U+0080–U+009F) are escaped too: some terminals act on them.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let n = c as u32;
            if n < 0x100 {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t' && c != '\n') || matches!(c, '\u{2028}' | '\u{2029}')
}

/// One line of text: like [`escape_controls`], newlines escaped too.
pub fn escape_line(s: &str) -> String {
    escape_controls(s).replace('\n', "\\x0a")
}

/// Every `scheme://user:password@host` in `text` with its userinfo replaced
/// by `***`, so a mirror URL with credentials never shows them.
pub fn strip_userinfo(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or whitespace; its
        // userinfo is everything up to the last `@` in it.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Text that reaches a terminal or log: no credentials in URLs, no control sequences.
pub fn for_output(text: &str) -> String {
    escape_controls(&strip_userinfo(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_shown_not_acted_on() {
        assert_eq!(
            escape_controls("a\x1b]0;title\x07b"),
            "a\\x1b]0;title\\x07b"
        );
        assert_eq!(escape_controls("\x1b[2J"), "\\x1b[2J");
        assert_eq!(escape_controls("tab\there\nline"), "tab\there\nline");
        assert_eq!(escape_controls("c1\u{9b}2J"), "c1\\x9b2J");
        assert_eq!(escape_controls("cr\r"), "cr\\x0d");
        assert_eq!(escape_line("a\nb"), "a\\x0ab");
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn userinfo_never_shows() {
        assert_eq!(
            strip_userinfo("error: http://user:pass@host:8/x (HTTP 404)"),
            "error: http://***@host:8/x (HTTP 404)"
        );
        assert_eq!(
            strip_userinfo("a https://tok@h/ and http://u:p@w@h2?q and ftp://plain/"),
            "a https://***@h/ and http://***@h2?q and ftp://plain/"
        );
        assert_eq!(strip_userinfo("no urls, a@b"), "no urls, a@b");
        assert_eq!(strip_userinfo("http://h/p@x"), "http://h/p@x");
        assert_eq!(
            strip_userinfo("{\"u\":\"http://a:b@h\"}"),
            "{\"u\":\"http://***@h\"}"
        );
    }
}
