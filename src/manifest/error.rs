//! Manifest errors: each points at file:line:column.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Maps byte offsets of one source text to lines and columns.
#[derive(Debug, Clone)]
pub struct SourceMap {
    pub file: PathBuf,
    pub text: String,
}

impl SourceMap {
    pub fn new(file: &Path, text: String) -> Self {
        SourceMap { file: file.to_path_buf(), text }
    }

    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { file: self.file.clone(), line, column }
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    pub fn diagnostic(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let location = self.location(offset);
        let (snippet, caret) = window(self.line_text(location.line), location.column);
        Diagnostic { location, message: message.into(), snippet, caret }
    }
}

/// Characters of a long line shown around the column an error points at.
const SNIPPET_CHARS: usize = 120;

/// The part of `line` shown under a message, and the caret's column in it: a long line (a huge
/// string value) is cut around `column` rather than printed whole.
fn window(line: &str, column: usize) -> (String, usize) {
    let count = line.chars().count();
    if count <= SNIPPET_CHARS {
        return (line.to_string(), column);
    }
    let start = column.saturating_sub(1).saturating_sub(SNIPPET_CHARS / 2).min(count.saturating_sub(SNIPPET_CHARS));
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(line.chars().skip(start).take(SNIPPET_CHARS));
    if start + SNIPPET_CHARS < count {
        out.push('…');
    }
    (out, column - start + usize::from(start > 0))
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
    #[serde(skip)]
    pub snippet: String,
    /// The column of `snippet` the caret points at (the snippet of a long line is a part of it).
    #[serde(skip)]
    pub caret: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: {}", self.location, self.message)?;
        // No line to show (an input that could not be read as text).
        if self.snippet.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        let gutter = self.location.line.to_string();
        writeln!(f, "{} | {}", gutter, self.snippet)?;
        write!(f, "{} | {}^", " ".repeat(gutter.len()), " ".repeat(self.caret.saturating_sub(1)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read (missing, not a regular file, over [`crate::input::MAX_MANIFEST`]).
    #[error("cannot read manifest {}: {}{}", .0.path().display(), .0.reason(), how_to_name(.0))]
    Read(#[source] crate::input::InputError),
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

/// The file the manifest is read from when none is named.
pub const DEFAULT_MANIFEST: &str = "reconcile.toml";

/// For a manifest that is not there: how to name one.
fn how_to_name(e: &crate::input::InputError) -> String {
    if !matches!(e, crate::input::InputError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound) {
        return String::new();
    }
    format!(
        "\nname the manifest with `-f PATH` (`--manifest PATH`) or the environment variable `RECONCILE_MANIFEST`; \
         without either, reconcile reads `{DEFAULT_MANIFEST}` in the current folder (docs/getting-started.md starts one)"
    )
}

fn render(diags: &[Diagnostic]) -> String {
    let mut out = diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n");
    if diags.len() > 1 {
        out.push_str(&format!("\n{} errors in manifest", diags.len()));
    }
    out
}

impl ManifestError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ManifestError::Invalid(d) => d,
            ManifestError::Read(_) => &[],
        }
    }
}
