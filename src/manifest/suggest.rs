//! "did you mean `...`?" for a misspelt name: the closest known name, if one is close enough.
//!
//! Used for resource keys (references, `depends_on`), fields, types, outputs and the keys of
//! `[stack]`, routes and WAF rules. Variables (`${var.name}`) will use [`did_you_mean`] over the
//! declared variable names the same way.

/// The candidate closest to `word`, when it is close enough to be a likely misspelling: at most one
/// edit (a transposition counts as one) for short names, two up to 8 characters, three beyond; a
/// difference of case alone always qualifies. `None` when nothing is close, or `word` itself is known.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = match word.chars().count() {
        0 => return None,
        1..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == word {
            return None;
        }
        let d = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
        if d <= allowed && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `"; did you mean `x`?"` for the closest candidate (see [`closest`]), or nothing; `show` renders the
/// suggestion (a whole corrected reference, say).
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>, show: impl Fn(&str) -> String) -> String {
    closest(word, candidates).map(|c| format!("; did you mean `{}`?", show(c))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["hello_function", "hello_role", "api", "memory_size", "timeout"];
        assert_eq!(closest("hello_fucntion", names), Some("hello_function"));
        assert_eq!(closest("memroy_size", names), Some("memory_size"));
        assert_eq!(closest("Timeout", names), Some("timeout"));
        assert_eq!(closest("apj", names), Some("api"));
        assert_eq!(closest("outptu", ["output", "arn"]), Some("output"));
        assert_eq!(closest("resorce", ["resource"]), Some("resource"));
        assert_eq!(closest("something_else", names), None);
        assert_eq!(closest("xyz", names), None);
        assert_eq!(closest("api", names), None, "a known name needs no suggestion");
        assert_eq!(did_you_mean("hello_rol", names, |c| format!("${{{c}.arn}}")), "; did you mean `${hello_role.arn}`?");
        assert_eq!(did_you_mean("zzz", names, str::to_string), "");
    }
}
