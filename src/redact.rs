//! The secret values of a run, kept out of everything that leaves the process.
//!
//! A [`Secrets`] holds every value of the run's secret fields (`secret_environment`, any field a
//! kind's schema marks secret) and of its sensitive variables, in each form it may come back in: as
//! given, JSON-escaped (an AWS error quoting a request's JSON, ASCII-only as Python's `json.dumps`
//! writes it, or not), and percent-encoded (a query or form body, an IAM-style document; `%20` or
//! `+` for a space, upper- or lower-case hex). [`Secrets::redact`] replaces each of them by
//! [`SENSITIVE`]. A value of fewer than [`SHORT`] characters is replaced only where it stands quoted
//! (as in a JSON text): anywhere else it would mask ordinary words and numbers.
//!
//! It is passed, never ambient: the AWS handle of a run carries it (`Aws::with_secrets`), and the
//! provider layer's entry points redact every error they hand up with it; the apply layer redacts
//! again what it writes to the journal and the report.

use std::borrow::Cow;

/// What a secret value is shown as.
pub const SENSITIVE: &str = "(sensitive)";

/// Values shorter than this (in characters) are replaced only where they stand quoted (`"v"`,
/// `'v'`, `` `v` ``): anywhere else they would mask ordinary words and numbers of every message.
pub const SHORT: usize = 4;

/// The secret values of one run, in every form they are looked for.
#[derive(Clone, Default)]
pub struct Secrets {
    /// (text looked for, its replacement); longest first, so a value containing another is replaced whole.
    needles: Vec<(String, String)>,
}

// The values themselves never go into a Debug print.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("forms", &self.needles.len()).finish()
    }
}

impl Secrets {
    /// The secret values `values` (empty ones are ignored: they cannot be told from nothing).
    pub fn new<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Secrets {
        let mut needles: Vec<(String, String)> = Vec::new();
        for v in values.into_iter().filter(|v| !v.as_ref().is_empty()) {
            let v = v.as_ref();
            if v.chars().count() >= SHORT {
                needles.extend(forms(v).into_iter().map(|f| (f, SENSITIVE.to_string())));
            } else {
                for f in forms(v) {
                    for q in ['"', '\'', '`'] {
                        needles.push((format!("{q}{f}{q}"), format!("{q}{SENSITIVE}{q}")));
                    }
                }
            }
        }
        needles.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Secrets { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every form of every secret value replaced by [`SENSITIVE`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (needle, replacement) in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), replacement));
            }
        }
        out
    }

    /// [`Secrets::redact`], as an owned string.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }
}

/// The forms a value may come back in.
fn forms(v: &str) -> Vec<String> {
    let json = json_escaped(v, false);
    let json_ascii = json_escaped(v, true);
    let mut out = vec![v.to_string()];
    for text in [v, json.as_str(), json_ascii.as_str()] {
        out.push(text.to_string());
        for upper in [true, false] {
            for plus in [true, false] {
                out.push(percent_encoded(text, upper, plus));
            }
        }
    }
    out
}

/// `v` as it appears inside a JSON string (without the quotes); `ascii`: every non-ASCII character
/// as `\uXXXX` (UTF-16, as Python's `json.dumps` and Java's escapers write it).
fn json_escaped(v: &str, ascii: bool) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    if !ascii {
        return inner.to_string();
    }
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// `v` percent-encoded: every byte but the unreserved ones (`A-Z a-z 0-9 - _ . ~`) as `%XX`; `plus`:
/// a space as `+` (a form body).
fn percent_encoded(v: &str, upper: bool, plus: bool) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' if plus => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_replaced() {
        let s = Secrets::new(["pa ss\"wörd/1", ""]);
        for text in [
            "value pa ss\"wörd/1 here",
            r#"{"DB_PASS":"pa ss\"wörd/1"}"#,
            r#"{"DB_PASS": "pa ss\"w\u00f6rd/1"}"#,
            "Variables=pa%20ss%22w%C3%B6rd%2F1",
            "Variables=pa+ss%22w%c3%b6rd%2f1",
            "doc=%7B%22A%22%3A%22pa%20ss%5C%22w%C3%B6rd%2F1%22%7D",
        ] {
            let shown = s.redact(text);
            assert!(shown.contains(SENSITIVE), "{text} → {shown}");
            for part in ["pa ss", "pa%20ss", "pa+ss", "w%C3%B6rd", "w%c3%b6rd", "\\u00f6rd"] {
                assert!(!shown.contains(part), "{text} → {shown}");
            }
        }
        assert_eq!(s.redact("nothing secret"), "nothing secret");
        assert!(Secrets::new([""]).is_empty(), "an empty value is no secret");
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let s = Secrets::new(["abcd", "xxabcdxx"]);
        assert_eq!(s.redact("1 xxabcdxx 2 abcd"), "1 (sensitive) 2 (sensitive)");
        assert!(!format!("{s:?}").contains("abcd"), "never in a Debug print");
    }

    #[test]
    fn a_short_secret_is_replaced_where_it_stands_quoted() {
        let s = Secrets::new(["b", "42"]);
        assert_eq!(
            s.redact(r#"both: {"A":"b","PIN":"42"} at 42 `b`"#),
            r#"both: {"A":"(sensitive)","PIN":"(sensitive)"} at 42 `(sensitive)`"#
        );
    }
}
