//! Manifest excerpts in errors never show a secret: a diagnostic whose line holds (part of) the value
//! of a secret field (`secret_environment = { … }`, a line of a `[resources.x.secret_environment]`
//! table, a dotted `secret_environment.KEY = …`) shows the line only up to its `=`, then
//! `(sensitive)`; and the secret values found in the manifest are masked in every message.
//!
//! Lines are told apart from the text itself, so this works even when the TOML does not parse (an
//! error on the secret's own line); where it parses, the lines each secret value spans are added
//! (a multi-line string in an inline table).

use std::collections::BTreeSet;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::error::{Diagnostic, SourceMap};
use crate::providers::Kind;
use crate::redact::{SENSITIVE, Secrets};

/// The names of the fields some kind marks secret.
fn secret_fields() -> BTreeSet<&'static str> {
    Kind::ALL.iter().flat_map(|k| k.schema().secret_fields().map(|f| f.name)).collect()
}

/// Whether a TOML key (a dotted key, a table header's path) names a secret field or something in one.
fn names_secret(key: &str, secret: &BTreeSet<&'static str>) -> bool {
    key.split('.').map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'')).any(|p| secret.contains(p))
}

/// The 1-based numbers of the lines that hold secret values.
fn secret_lines(src: &SourceMap, secret: &BTreeSet<&'static str>) -> BTreeSet<usize> {
    let header_of = |t: &str| t.trim_start_matches('[').split(']').next().unwrap_or_default().trim().to_string();
    let is_sensitive = |t: &str| {
        let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        t.contains("sensitive=true")
    };
    // `[variables.NAME]` tables that say `sensitive = true` (told from the text, so this holds when
    // the TOML does not parse): their `default` is a secret.
    let mut sensitive_tables = BTreeSet::new();
    let mut header = String::new();
    for line in src.text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            header = header_of(t);
        } else if header.starts_with("variables.") && is_sensitive(t) {
            sensitive_tables.insert(header.clone());
        }
    }
    let mut lines = BTreeSet::new();
    let mut in_secret_table = false;
    for (i, line) in src.text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            header = header_of(t);
            in_secret_table = names_secret(&header, secret);
            continue;
        }
        let key = t.split('=').next().unwrap_or_default();
        let sensitive_default = (sensitive_tables.contains(&header) && key.trim() == "default")
            // `NAME = { type = "string", sensitive = true, default = "…" }` under `[variables]`.
            || (header == "variables" && is_sensitive(t));
        if in_secret_table || sensitive_default || (t.contains('=') && names_secret(key, secret)) {
            lines.insert(i + 1);
        }
    }
    if let Ok(root) = DeTable::parse(&src.text) {
        for span in secret_spans(root.get_ref(), secret).into_iter().chain(sensitive_defaults(root.get_ref()).into_iter().map(|(s, _)| s)) {
            let (first, last) = (src.location(span.start).line, src.location(span.end.saturating_sub(1).max(span.start)).line);
            lines.extend(first..=last);
        }
    }
    lines
}

/// The spans of the values of secret fields under `[resources]`.
fn secret_spans(root: &DeTable<'_>, secret: &BTreeSet<&'static str>) -> Vec<Range<usize>> {
    let Some(DeValue::Table(resources)) = root.get("resources").map(|v| v.get_ref()) else { return Vec::new() };
    let mut out = Vec::new();
    for (_, resource) in resources.iter() {
        if let DeValue::Table(fields) = resource.get_ref() {
            out.extend(fields.iter().filter(|(k, _)| secret.contains(k.get_ref().as_ref())).map(|(_, v)| v.span()));
        }
    }
    out
}

/// The `default`s of the variables declared `sensitive = true`: their spans and string values.
fn sensitive_defaults(root: &DeTable<'_>) -> Vec<(Range<usize>, Vec<String>)> {
    let Some(DeValue::Table(vars)) = root.get("variables").map(|v| v.get_ref()) else { return Vec::new() };
    let mut out = Vec::new();
    for (_, var) in vars.iter() {
        let DeValue::Table(decl) = var.get_ref() else { continue };
        if !matches!(decl.get("sensitive").map(|v| v.get_ref()), Some(DeValue::Boolean(true))) {
            continue;
        }
        if let Some(default) = decl.get("default") {
            let mut values = Vec::new();
            leaves(default.get_ref(), &mut values);
            out.push((default.span(), values));
        }
    }
    out
}

/// The string leaves of a value.
fn leaves(v: &DeValue<'_>, out: &mut Vec<String>) {
    match v {
        DeValue::String(s) => out.push(s.to_string()),
        DeValue::Array(items) => items.iter().for_each(|i| leaves(i.get_ref(), out)),
        DeValue::Table(t) => t.iter().for_each(|(_, v)| leaves(v.get_ref(), out)),
        _ => {}
    }
}

/// The string values of secret fields (and of sensitive variables' defaults), to mask in messages.
fn secret_values(root: &DeTable<'_>, secret: &BTreeSet<&'static str>) -> Vec<String> {
    let mut out: Vec<String> = sensitive_defaults(root).into_iter().flat_map(|(_, v)| v).collect();
    let Some(DeValue::Table(resources)) = root.get("resources").map(|v| v.get_ref()) else { return out };
    for (_, resource) in resources.iter() {
        if let DeValue::Table(fields) = resource.get_ref() {
            for (_, v) in fields.iter().filter(|(k, _)| secret.contains(k.get_ref().as_ref())) {
                leaves(v.get_ref(), &mut out);
            }
        }
    }
    out
}

/// Masks the secret parts of `diags` that point into `src`.
pub(super) fn mask_secrets(src: &SourceMap, diags: &mut [Diagnostic]) {
    let secret = secret_fields();
    let lines = secret_lines(src, &secret);
    let values = DeTable::parse(&src.text).map(|root| secret_values(root.get_ref(), &secret)).unwrap_or_default();
    let values = Secrets::new(values);
    for d in diags.iter_mut().filter(|d| d.location.file == src.file) {
        d.message = values.redact_string(std::mem::take(&mut d.message));
        if !lines.contains(&d.location.line) {
            continue;
        }
        let line = src.text.lines().nth(d.location.line - 1).unwrap_or_default();
        d.snippet = match line.split_once('=') {
            Some((key, _)) => format!("{key}= {SENSITIVE}"),
            None => SENSITIVE.to_string(),
        };
        d.caret = d.caret.min(d.snippet.chars().count()).max(1);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn masked(text: &str, line: usize, message: &str) -> Diagnostic {
        let src = SourceMap::new(Path::new("m.toml"), text.to_string());
        let start: usize = text.lines().take(line - 1).map(|l| l.len() + 1).sum();
        let mut diags = vec![src.diagnostic(start + 2, message)];
        mask_secrets(&src, &mut diags);
        diags.remove(0)
    }

    #[test]
    fn lines_holding_secret_values_are_shown_up_to_their_key() {
        let text = "[resources.f]\ntype = \"aws_lambda_function\"\nsecret_environment = { PW = \"hunter2-x\" }\n[resources.g]\nsecret_environment.K = \"k-s3cret\"\n\
                    [resources.h.secret_environment]\nOTHER = \"table-s3cret\"\n[resources.i]\nname = \"plain\"\n";
        let d = masked(text, 3, "bad value `hunter2-x`");
        assert_eq!(d.snippet, "secret_environment = (sensitive)");
        assert_eq!(d.message, "bad value `(sensitive)`");
        assert_eq!(masked(text, 5, "x").snippet, "secret_environment.K = (sensitive)");
        assert_eq!(masked(text, 7, "`table-s3cret`").snippet, "OTHER = (sensitive)");
        assert_eq!(masked(text, 7, "`table-s3cret`").message, "`(sensitive)`");
        assert_eq!(masked(text, 9, "x").snippet, "name = \"plain\"", "other lines are shown as they are");
        // Invalid TOML on the secret's own line: still masked.
        let broken = "[resources.f]\nsecret_environment = { PW = \"hunter2-x }\n";
        let d = masked(broken, 2, "invalid TOML");
        assert!(!d.snippet.contains("hunter2"), "{}", d.snippet);
    }

    #[test]
    fn a_sensitive_variables_default_is_masked_in_excerpts_and_messages() {
        let text = "[variables.db_password]\ntype = \"string\"\nsensitive = true\ndefault = \"p4ss-w0rd-x\"\n\
                    [variables.region]\ntype = \"string\"\ndefault = \"eu-west-1\"\n";
        let d = masked(text, 4, "`p4ss-w0rd-x` does not match");
        assert_eq!(d.snippet, "default = (sensitive)");
        assert_eq!(d.message, "`(sensitive)` does not match");
        assert_eq!(masked(text, 7, "x").snippet, "default = \"eu-west-1\"", "a variable not sensitive is shown");
        // Invalid TOML on the default's own line (a bad escape), and the inline form under [variables].
        let broken = "[variables.db_password]\nsensitive = true\ndefault = \"p4ss\\w0rd\"\n";
        assert!(!masked(broken, 3, "invalid escape").snippet.contains("p4ss"));
        let inline = "[variables]\ndb_password = { type = \"string\", sensitive = true, default = \"hunter2-prod\", pattern = \"[\" }\n";
        assert!(!masked(inline, 2, "bad pattern").snippet.contains("hunter2"));
    }
}
