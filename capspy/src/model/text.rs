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

/// A command line as a POSIX shell reads it back into the same words: words with anything but
/// `[A-Za-z0-9_@%+=:,./-]` are single-quoted. For the commands capspy suggests, so they run as
/// printed.
pub fn shell_line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(w: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        return Cow::Borrowed(w);
    }
    Cow::Owned(format!("'{}'", w.replace('\'', "'\\''")))
}

/// A NUL-padded kernel string (a comm, a cgroup path) as text; all of it when it has no NUL.
pub fn kernel_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
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

    #[test]
    fn shell_line_quotes_what_a_shell_would_read_otherwise() {
        assert_eq!(
            shell_line(&[
                "docker",
                "run",
                "--rm",
                "img:1",
                "sh",
                "-c",
                "ping -c1 127.0.0.1 && echo it's"
            ]),
            "docker run --rm img:1 sh -c 'ping -c1 127.0.0.1 && echo it'\\''s'"
        );
        assert_eq!(shell_line(&["", "$HOME", "a\nb"]), "'' '$HOME' 'a\nb'");
        // Read back by a real shell into the same words.
        let words = ["x y", "it's", "$(id)", "a\\b", "*", ""];
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\0' {}", shell_line(&words))])
            .output()
            .unwrap();
        let back: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(back, words);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"ping");
        assert_eq!(kernel_string(&comm), "ping");
        assert_eq!(kernel_string(&[b'a'; 16]), "a".repeat(16));
    }
}
