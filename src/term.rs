//! Text for a terminal: colour when wanted, cutting and wrapping to the table width. Every check's table view and
//! the report's table are built from these; nothing here knows what a check or a finding is.

use serde_json::Value;
use std::io::{self, Write};

/// Whether to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// `auto` colours only a terminal, and never when `NO_COLOR` is set.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Styles text with ANSI colour when enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

/// An SGR colour, by what it means.
#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Red,
    Yellow,
    Cyan,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn tone(&self, tone: Tone, s: &str) -> String {
        let code = match tone {
            Tone::Red => "1;31",
            Tone::Yellow => "33",
            Tone::Cyan => "36",
        };
        self.paint(code, s)
    }
}

/// The width tables are laid out for.
pub const WIDTH: usize = 100;

/// Cuts a string to at most `max` characters, marking the cut with `…`; control characters escaped ([`escape`]).
pub fn fit(s: &str, max: usize) -> String {
    let s = &*escape(s);
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary: for limits counted in
/// bytes (node-problem-detector's `max_output_length`, label values).
pub fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Wraps text at spaces to `width` columns; a word longer than the width (a long path) is cut into pieces. Leading
/// spaces (a right-aligned first column) are kept. Control characters are escaped first ([`escape`]), so a
/// newline in the text never starts a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    wrap_escaped(&escape(text), width)
}

fn wrap_escaped(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let body = text.trim_start_matches(' ');
    let lead = text.len() - body.len();
    if lead > 0 && lead < width {
        let mut lines = wrap_escaped(body, width - lead);
        if let Some(first) = lines.first_mut() {
            first.insert_str(0, &text[..lead]);
        }
        return lines;
    }
    let mut lines = Vec::new();
    let mut cur = String::new();
    let words = text.split(' ').flat_map(|w| {
        let chars: Vec<char> = w.chars().collect();
        if chars.is_empty() {
            return vec![String::new()];
        }
        chars
            .chunks(width)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
    });
    for word in words {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Makes text safe to print on a terminal: what a pod controls (a comm, a mount point, a kernel-log line) must
/// not move the cursor, recolour the screen or start a line of its own. C0 controls, DEL and C1 controls are
/// shown as escapes (`\e` for ESC, `\n`, `\t`, `\r`, others `\xNN`), and a backslash as `\\`, so that
/// an escape shown is never ambiguous with text that looks like one. Everything wonk prints for people passes
/// through here once: [`fit`] and [`wrap`] call it, and so must any other line printed raw. Bidirectional
/// overrides, which reorder what follows them on screen, are shown as `\u{NNNN}`. Bytes that were not UTF-8
/// reach here as U+FFFD (every reader decodes lossily), which is visible as it is.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let unsafe_char = |c: char| c.is_control() || c == '\\' || bidi(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if bidi(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes as people read them: `12 B`, `1.5 MiB`, `242.0 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An age in seconds as people read it: `42s`, `17m`, `5h`, `3d`.
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `key: value`, with objects flattened one level (`mounted: inode=12 links=0 ...`); nulls are skipped.
pub fn kv_block(w: &mut dyn Write, key: &str, v: &Value, style: Style) -> io::Result<()> {
    let text = match v {
        Value::Null => return Ok(()),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    };
    let lines = wrap(&text, WIDTH - 8 - key.len().min(24));
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            writeln!(w, "    {}: {line}", style.dim(key))?;
        } else {
            writeln!(w, "    {:width$}  {line}", "", width = key.len())?;
        }
    }
    Ok(())
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_and_wrap() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        // A right-aligned first column keeps its padding.
        assert_eq!(wrap("      40 | x", 20), ["      40 | x"]);
        // Escaped once, whatever the indentation.
        assert_eq!(wrap("  a\\b\nc", 20), ["  a\\\\b\\nc"]);
    }

    #[test]
    fn control_characters_are_shown_as_escapes() {
        assert_eq!(escape("plain /path"), "plain /path");
        assert_eq!(
            escape("a\x1b[31mb\nc\td\re\x7ff\u{9b}g\\h\x00"),
            "a\\e[31mb\\nc\\td\\re\\x7ff\\x9bg\\\\h\\x00"
        );
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(fit("a\nb", 10), "a\\nb");
        assert_eq!(wrap("one\ntwo", 100), vec!["one\\ntwo"]);
    }
}
