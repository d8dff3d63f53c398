//! Names that come from outside (container names, labels, command names) on a terminal line.

use std::borrow::Cow;

/// `s` with control characters escaped (`\n`, `\u{1b}`), so that a hostile name cannot split a
/// line or drive the terminal. Quotes and shell metacharacters are left as they are: text output
/// is for reading; the formats meant to be pasted or parsed quote on their own.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first 12 characters of a container id, as `docker ps` shows it. Ids read from a store or
/// a baseline file are not trusted to be hex, so the cut is made at a character boundary.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("web-1"), "web-1");
        assert!(matches!(printable("web-1"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\tc\u{1b}[31m"), "a\\nb\\tc\\u{1b}[31m");
        assert_eq!(printable("it's \"x\" $(rm) é"), "it's \"x\" $(rm) é");
    }

    #[test]
    fn short_id_cuts_at_a_character_boundary() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        // 'é' spans bytes 11..13: a byte cut at 12 would panic.
        assert_eq!(short_id("aaaaaaaaaaaébb"), "aaaaaaaaaaaé");
    }
}
