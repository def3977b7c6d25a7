//! Property-based fuzzing of the manifest parser and validator ([`super::parse`]) with proptest.
//!
//! No input may panic `parse`, and every diagnostic it returns must point inside the text it was
//! given (line within `1..=lines + 1`, column within that line, at least 1). Three properties, each
//! with a fixed default number of cases so that the whole suite stays at a few seconds in a debug
//! build:
//!
//! | test | input | default cases |
//! | --- | --- | --- |
//! | [`arbitrary_text_never_panics`] | arbitrary unicode, random bytes converted lossily, TOML token soup, soup of manifest lines | [`ARBITRARY_CASES`] |
//! | [`seed_mutations_never_panic`] | `manifests/apigw-lambda-basic.toml` with 1–4 mutations: line deleted, duplicated or swapped, truncation, a token replaced by a nasty value, `${...}` references inserted | [`SEED_CASES`] |
//! | [`generated_manifests_validate_as_expected`] | manifests from a small grammar over the schema ([`Kind::ALL`], each [`Field`]'s type), well- or ill-typed, with references that may dangle or form cycles | [`GRAMMAR_CASES`] |
//!
//! The grammar property also checks the outcome: a manifest the generator built without any flaw
//! (well-typed values, all required fields, references to existing resources and outputs, no
//! cycle, no duplicate physical name) must parse, with the dependencies the generator expects; one
//! with a deliberate flaw must be rejected. [`deep_nesting_is_refused_without_overflow`] covers,
//! deterministically, what random inputs never reach: nesting deep enough to overflow the stack.
//!
//! Run them; `--nocapture` shows how many inputs each property exercised (and how many were
//! accepted, or refused by the validator rather than by the TOML parser):
//!
//! ```text
//! cargo test --lib manifest::fuzz -- --nocapture
//! ```
//!
//! A longer campaign: `PROPTEST_CASES` replaces every property's case count (a release build is
//! several times faster), e.g.
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --lib manifest::fuzz -- --nocapture
//! ```
//!
//! The other `PROPTEST_*` variables keep their meaning (`PROPTEST_RNG_SEED` replays a run).
//! Nothing is written to disk (`failure_persistence: None`); a failure is shrunk and reported with
//! the offending manifest text, and shrinking stops after a minute unless `PROPTEST_MAX_SHRINK_TIME`
//! says otherwise.
#![allow(clippy::type_complexity, clippy::needless_range_loop)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{TestCaseError, TestRunner};

use serde_json::json;

use super::*;

/// Default cases of [`arbitrary_text_never_panics`].
const ARBITRARY_CASES: u32 = 3000;
/// Default cases of [`seed_mutations_never_panic`].
const SEED_CASES: u32 = 400;
/// Default cases of [`generated_manifests_validate_as_expected`].
const GRAMMAR_CASES: u32 = 600;

/// `default_cases`, unless `PROPTEST_CASES` says otherwise; never writes failure files.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default_cases);
    let base = ProptestConfig::with_cases(cases);
    let max_shrink_time = if base.max_shrink_time == 0 { 60_000 } else { base.max_shrink_time };
    ProptestConfig { failure_persistence: None, max_shrink_time, ..base }
}

/// Runs one property and prints how many inputs it exercised (shrinking steps included).
fn run<S: Strategy>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let count = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config(default_cases));
    let start = Instant::now();
    let result = runner.run(&strategy, |input| {
        count.fetch_add(1, Ordering::Relaxed);
        test(input)
    });
    eprintln!("manifest fuzz: {name}: {} inputs in {:.2?}", count.load(Ordering::Relaxed), start.elapsed());
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Parses `text` as the file `path`; a panic (in parsing or in rendering the error) becomes a
/// failure that shows the input. Checks that an error has diagnostics and that each points inside
/// the text.
fn check(path: &Path, text: &str) -> Result<Result<Manifest, ManifestError>, TestCaseError> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        parse(path, text.to_string()).inspect_err(|e| {
            let _ = e.to_string();
        })
    }));
    let result = match outcome {
        Ok(r) => r,
        Err(p) => {
            return Err(TestCaseError::fail(format!(
                "parse panicked: {}\n--- input ({} bytes) ---\n{text:?}",
                panic_message(p.as_ref()),
                text.len()
            )));
        }
    };
    if let Err(e) = &result {
        let diags = e.diagnostics();
        prop_assert!(!diags.is_empty(), "an error without diagnostics: {e:?}\n--- input ---\n{text:?}");
        let max_line = text.lines().count() + 1;
        let lines: Vec<&str> = text.split('\n').collect();
        for d in diags {
            let at = &d.location;
            prop_assert_eq!(&at.file, path);
            prop_assert!(
                (1..=max_line).contains(&at.line) && at.column >= 1,
                "diagnostic outside the text ({} lines): {at} {}\n--- input ---\n{text:?}",
                max_line - 1,
                d.message
            );
            let width = lines.get(at.line - 1).map_or(0, |l| l.chars().count());
            prop_assert!(
                at.column <= width + 1,
                "diagnostic column past the end of line {} ({width} chars): {at} {}\n--- input ---\n{text:?}",
                at.line,
                d.message
            );
        }
    }
    Ok(result)
}

/// How far inputs got: accepted, or refused by the validator (past the TOML parser).
#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    validated: AtomicUsize,
}

impl Tally {
    fn count(&self, result: &Result<Manifest, ManifestError>) {
        match result {
            Ok(_) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(e) if !e.diagnostics().iter().any(|d| d.message.starts_with("invalid TOML")) => {
                self.validated.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => 0,
        };
    }
    fn report(&self, name: &str) {
        eprintln!(
            "manifest fuzz: {name}: {} accepted, {} refused by the validator (valid TOML)",
            self.accepted.load(Ordering::Relaxed),
            self.validated.load(Ordering::Relaxed)
        );
    }
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

// ---------------------------------------------------------------------------------------------
// 1. Arbitrary text.

/// Pieces of TOML and of manifests, glued at random.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    " = ",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "#",
    ",",
    ".",
    "{",
    "}",
    "${",
    "$${",
    "\\",
    "\\u",
    "\\U0010FFFF",
    "\\ud800",
    "stack",
    "name",
    "resources",
    "outputs",
    "type",
    "depends_on",
    "protect",
    "aws_iam_role",
    "aws_lambda_function",
    "aws_api_gateway_rest_api",
    "routes",
    "rules",
    "visibility",
    "tags",
    "a",
    "b",
    "a.arn",
    "é",
    "𝕏",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "0",
    "-1",
    "1e9",
    "0x1F",
    "0o7",
    "0b1",
    "1_000",
    "+inf",
    "nan",
    "1.5",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "99999999999999999999",
];

/// Whole lines of manifests, valid and not, in a random order: reaches the validator far more often
/// than character soup.
const LINES: &[&str] = &[
    "[stack]",
    "name = \"s\"",
    "name = \"bad name\"",
    "name = \"é\"",
    "description = 5",
    "stack = \"x\"",
    "[resources]",
    "[resources.a]",
    "[resources.b]",
    "[resources.\"é\"]",
    "[resources.a.assume_role_policy]",
    "[resources.a.tags]",
    "[[resources.a.rules]]",
    "[[resources.b.routes]]",
    "type = \"aws_iam_role\"",
    "type = \"aws_cloudwatch_log_group\"",
    "type = \"aws_lambda_function\"",
    "type = \"aws_lambda_permission\"",
    "type = \"aws_api_gateway_rest_api\"",
    "type = \"aws_api_gateway_deployment\"",
    "type = \"aws_api_gateway_stage\"",
    "type = \"aws_api_gateway_account\"",
    "type = \"aws_wafv2_web_acl\"",
    "type = \"aws_wafv2_web_acl_association\"",
    "type = 1",
    "assume_role_policy = { Version = \"2012-10-17\" }",
    "assume_role_policy = \"${b.arn}\"",
    "Version = \"2012-10-17\"",
    "role = \"${a.arn}\"",
    "role = \"${a.arn\"",
    "role = \"é${a.é}\"",
    "name = \"${b.name}\"",
    "name = \"\\u00e9${a\"",
    "function_name = \"${a.nope}\"",
    "depends_on = [\"a\", \"b\"]",
    "depends_on = [\"ghost\"]",
    "depends_on = \"a\"",
    "protect = true",
    "protect = \"yes\"",
    "retention_in_days = 7",
    "retention_in_days = 2",
    "memory_size = 99999999999999999999",
    "memory_size = 0x100",
    "runtime = \"python3.13\"",
    "handler = \"index.handler\"",
    "code = \"lambda\"",
    "code = 5",
    "tags = { k = \"v\", \"reconcile:x\" = \"y\" }",
    "k = \"v\"",
    "routes = [{ path = \"/\", method = \"GET\", integration = { type = \"MOCK\" } }]",
    "routes = [1]",
    "path = \"/x\"",
    "method = \"get\"",
    "integration = { type = \"AWS_PROXY\" }",
    "visibility = { metric_name = \"m\" }",
    "priority = 1",
    "action = \"block\"",
    "statement = { geo_match = { country_codes = [] } }",
    "statement = { rate_based = { limit = 5 } }",
    "resources.a.type = \"aws_iam_role\"",
    "resources.b = { type = \"aws_cloudwatch_log_group\", name = \"${a.name}\" }",
    "outputs.x = \"${b.arn}\"",
    "[outputs.y]",
    "[outputs]",
    "x = \"${a.arn}\"",
    "y = \"${ghost.id}\"",
    "z = 1",
    "bogus = 1",
    "# comment ${a.arn}",
    "",
];

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect::<String>()),
        1 => vec(any::<u8>(), 0..600).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => vec(select(TOKENS), 0..150).prop_map(|t| t.concat()),
        3 => vec(select(LINES), 0..40).prop_map(|l| l.join("\n")),
        2 => (vec(select(LINES), 0..40), vec(select(TOKENS), 0..8), any::<Index>())
            .prop_map(|(lines, noise, at)| {
                // A line soup with some token noise spliced into it.
                let mut text = lines.join("\n");
                let mut cut = at.index(text.len() + 1);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.insert_str(cut, &noise.concat());
                text
            }),
    ]
}

/// Any text: `parse` never panics; an error's diagnostics point inside the text. The file lives in
/// a folder that does not exist, so code paths never reach real files.
#[test]
fn arbitrary_text_never_panics() {
    let path = Path::new("/nonexistent-reconcile-fuzz/stack.toml");
    let tally = Tally::default();
    run("arbitrary text", ARBITRARY_CASES, arbitrary_text(), |text| {
        tally.count(&check(path, &text)?);
        Ok(())
    });
    tally.report("arbitrary text");
}

// ---------------------------------------------------------------------------------------------
// 2. Mutations of the seed manifest.

fn seed_path() -> PathBuf {
    manifests_dir().join("apigw-lambda-basic.toml")
}

/// Values that replace a token of the seed: empty, broken and tricky references, extreme numbers,
/// empty arrays and tables, a 10 000-character string, a NUL, multi-byte text around references.
fn nasty_values() -> Vec<String> {
    let mut v: Vec<String> = [
        r#""""#,
        r#""${""#,
        r#""${x.y}""#,
        r#""${hello_function.nope}""#,
        r#""${hello_function.arn}""#,
        "-1",
        "0",
        "99999999999999999999",
        "-9223372036854775808",
        "[]",
        "{}",
        r#""$${a.b}""#,
        r#""\u0000""#,
        r#""é${""#,
        r#""${é.x}ü""#,
        r#""\u00e9${hello_function.arn""#,
        r#"'${hello_function}'"#,
        r#""${a.b}}""#,
        r#""${}""#,
        r#""${.}""#,
        "1.5",
        "nan",
        "-inf",
        "1e400",
        "1979-05-27T07:32:00Z",
        "true",
        "[1, \"x\", {}]",
        "{ a = { b = { c = [] } } }",
        r#""""
multi
line ${hello_function.arn}""""#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("\"{}\"", "a".repeat(10_000)));
    v.push(format!("\"{}${{\"", "é".repeat(3_000)));
    v.push(format!("[{}]", vec!["\"${hello_function.arn}\""; 200].join(", ")));
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// At a byte offset, moved back to a char boundary.
    Truncate(Index),
    /// A quoted string, a number, `true`/`false` or a key becomes the value.
    ReplaceToken(Index, String),
    /// A reference goes just inside the opening quote of a string.
    InsertRef(Index, String),
}

/// Byte ranges of the tokens of TOML text, and whether each is a quoted string. Rough (no
/// multi-line strings), which is fine for mutations.
fn tokens(text: &str) -> Vec<(Range<usize>, bool)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i < b.len() && b[i] == q {
                    i += 1;
                }
                // Every end is an ASCII byte or the end of the text: a char boundary.
                let mut end = i.min(b.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                i = end;
                out.push((start..end, true));
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'+' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-' || b[i] == b'+') {
                    i += 1;
                }
                out.push((start..i, false));
            }
            _ => i += 1,
        }
    }
    out
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<&str> = text.split('\n').collect();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
            lines.join("\n")
        }
        Mutation::DuplicateLine(i) => {
            let i = i.index(lines.len());
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        Mutation::Truncate(i) => {
            let mut cut = i.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_string()
        }
        Mutation::ReplaceToken(i, value) => {
            let toks = tokens(text);
            if toks.is_empty() {
                return text.to_string();
            }
            let (r, _) = &toks[i.index(toks.len())];
            format!("{}{}{}", &text[..r.start], value, &text[r.end..])
        }
        Mutation::InsertRef(i, reference) => {
            let strings: Vec<_> = tokens(text).into_iter().filter(|(_, s)| *s).collect();
            if strings.is_empty() {
                return text.to_string();
            }
            let at = strings[i.index(strings.len())].0.start + 1;
            format!("{}{}{}", &text[..at], reference, &text[at..])
        }
    }
}

/// Mutated seed manifests: `parse` never panics, and it either accepts the text or returns
/// diagnostics inside the file. Parsed with the seed's own path so its Lambda code path resolves.
#[test]
fn seed_mutations_never_panic() {
    let path = seed_path();
    let seed = std::fs::read_to_string(&path).unwrap();
    // The unmutated seed is valid: mutations start from a manifest that reaches every check.
    assert!(parse(&path, seed.clone()).is_ok(), "the seed manifest does not parse");

    let mut names: Vec<String> = seed
        .lines()
        .filter_map(|l| l.strip_prefix("[resources."))
        .map(|rest| rest.split(['.', ']']).next().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "resource names of the seed: {names:?}");
    names.extend(["nope".to_string(), "é".to_string()]);
    let outputs = vec!["arn", "id", "name", "invoke_arn", "execution_arn", "model_hash", "nope", ""];

    let mutation = prop_oneof![
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        2 => any::<Index>().prop_map(Mutation::DuplicateLine),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        4 => (any::<Index>(), select(nasty_values())).prop_map(|(i, v)| Mutation::ReplaceToken(i, v)),
        3 => (any::<Index>(), select(names), select(outputs), any::<bool>())
            .prop_map(|(i, n, o, closed)| Mutation::InsertRef(i, format!("${{{n}.{o}{}", if closed { "}" } else { "" }))),
    ];
    let tally = Tally::default();
    run("seed mutations", SEED_CASES, vec(mutation, 1..=4), |mutations| {
        let mut text = seed.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        tally.count(&check(&path, &text)?);
        Ok(())
    });
    tally.report("seed mutations");
}

// ---------------------------------------------------------------------------------------------
// 3. Manifests from a grammar over the schema.

/// Choices for the generator, drawn in order from a tape of random numbers; past its end every
/// draw is 0. Shrinking lowers the numbers towards 0, and choice 0 is always the plainest one
/// (no flaw, no optional part), so failures shrink to small manifests.
struct Tape<'a> {
    data: &'a [u32],
    pos: usize,
}

impl Tape<'_> {
    fn next(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }
    /// 0..n.
    fn pick(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }
    /// True with `percent`% probability; false on a zero draw.
    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 >= 100 - percent.min(100)
    }
    fn select<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.pick(items.len())]
    }
}

/// A TOML value, before rendering.
#[derive(Debug, Clone)]
enum Tv {
    Str(String),
    Int(i64),
    /// Literal TOML text (floats, dates, other integer notations).
    Raw(String),
    Bool(bool),
    Arr(Vec<Tv>),
    Tbl(Vec<(String, Tv)>),
}

fn tbl(entries: Vec<(&str, Tv)>) -> Tv {
    Tv::Tbl(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn s(v: &str) -> Tv {
    Tv::Str(v.to_string())
}

/// A basic string, escaped.
fn basic_string(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') { k.to_string() } else { basic_string(k) }
}

/// Strings in several literal pieces; none ends with `$` (it would turn a following `${` into the
/// escape `$${`).
const LITERALS: &[&str] = &[
    "",
    "x",
    "hello world",
    "arn:aws:iam::123456789012:role/x",
    "é ü 𝕏 ✓",
    "$${lit.x}",
    "tab\there",
    "say \"hi\"",
    "back\\slash",
    "cost $5",
    "line\nbreak",
    "nul\u{0}",
    "{json}",
    "'single'",
];

const ROUTE_PATHS: &[&str] = &["/", "/a", "/a/b", "/{id}", "/é/{proxy+}"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY", "get", "Post"];
const INTEGRATION_TYPES: &[&str] = &["AWS_PROXY", "AWS", "HTTP", "HTTP_PROXY", "MOCK"];
/// Values at least one of which each AWS rule accepts (see `Gen::checked`).
const ACCEPTED: &[&str] = &["ok-1", "/", "", "lambda:InvokeFunction", "1"];

const CODE_PATHS: &[&str] = &["apigw-lambda-basic/lambda", "apigw-lambda-basic/lambda/index.py", "./apigw-lambda-basic/lambda/"];

/// What the grammar generator made, and what the validator must say about it.
#[derive(Debug)]
struct Generated {
    text: String,
    stack: String,
    /// Resource names, in file order, with their kinds.
    resources: Vec<(String, Kind)>,
    /// Dependencies the generator wrote (valid references and `depends_on`), by resource.
    deps: BTreeMap<String, BTreeSet<String>>,
    /// Flaws the generator put in on purpose (empty: the manifest must be valid).
    flaws: Vec<String>,
}

struct Gen<'t> {
    tape: Tape<'t>,
    /// No deliberate flaw and only backward references: the manifest is valid.
    clean: bool,
    names: Vec<String>,
    kinds: Vec<Kind>,
    /// A valid name and type: references to it resolve.
    usable: Vec<bool>,
    /// The resource whose fields are being generated; `names.len()` for outputs.
    current: usize,
    /// Valid references found in the current resource.
    refs: BTreeSet<String>,
    flaws: Vec<String>,
}

impl Gen<'_> {
    /// A deliberate flaw, `percent`% of the time outside clean mode.
    fn flaw(&mut self, percent: u32) -> bool {
        !self.clean && self.tape.chance(percent)
    }

    fn literal(&mut self) -> String {
        self.tape.select(LITERALS).to_string()
    }

    /// `value` if AWS accepts it (or it holds a reference, which only AWS checks); otherwise, in clean
    /// mode, a value AWS accepts instead, and outside it a deliberate flaw.
    fn checked(&mut self, value: String, check: schema::Check, what: &str) -> String {
        if value.contains("${") || check(&value).is_ok() {
            return value;
        }
        if self.clean {
            return ACCEPTED.iter().find(|v| check(v).is_ok()).map_or_else(String::new, |v| v.to_string());
        }
        self.flaws.push(format!("{what} = {value:?}, which AWS refuses"));
        value
    }

    /// A string value, maybe with a reference in it.
    fn string(&mut self) -> String {
        let mut out = self.literal();
        if self.tape.chance(35) {
            out.push_str(&self.reference());
            if self.tape.chance(30) {
                out.push_str(&self.literal());
            }
        }
        out
    }

    /// `${resource.output}`: usually to an earlier resource; a flaw may break it; outside clean
    /// mode it may point forward or at itself (a cycle is then detected, and expected, later).
    fn reference(&mut self) -> String {
        let n = self.names.len();
        if self.flaw(6) {
            let first = self.names[0].clone();
            let (text, what) = match self.tape.pick(6) {
                0 => ("${ghost.arn}".to_string(), "reference to no resource"),
                1 => (format!("${{{first}.nope}}"), "reference to no output"),
                2 => (format!("${{{first}}}"), "malformed reference"),
                3 => ("${a.b.c}".to_string(), "malformed reference"),
                4 => ("${}".to_string(), "malformed reference"),
                _ => (format!("${{{first}.arn"), "unterminated reference"),
            };
            self.flaws.push(format!("{what} `{text}`"));
            return text;
        }
        let target = if self.current >= n || self.tape.chance(if self.clean { 0 } else { 10 }) {
            self.tape.pick(n)
        } else if self.current > 0 {
            self.tape.pick(self.current)
        } else {
            return String::new();
        };
        let outputs = self.kinds[target].schema().outputs;
        let output = outputs[self.tape.pick(outputs.len())].0;
        let name = self.names[target].clone();
        if !self.usable[target] {
            self.flaws.push(format!("reference to the invalid resource `{name}`"));
        } else if self.current < n {
            self.refs.insert(name.clone());
        }
        format!("${{{name}.{output}}}")
    }

    fn integer(&mut self, n: i64) -> Tv {
        if n < 0 || !self.tape.chance(20) {
            return Tv::Int(n);
        }
        let digits = n.to_string();
        Tv::Raw(match self.tape.pick(5) {
            0 => format!("+{n}"),
            1 => format!("0x{n:X}"),
            2 => format!("0o{n:o}"),
            3 => format!("0b{n:b}"),
            _ => {
                // Underscores between every digit.
                let mut out = String::new();
                for (i, c) in digits.chars().enumerate() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.push(c);
                }
                out
            }
        })
    }

    fn string_map(&mut self, kind: Kind, field: &str) -> Tv {
        let tags = field == "tags";
        let key_check: Option<schema::Check> = match (kind, field) {
            (_, "tags") => Some(super::rules::tag_key),
            (Kind::LambdaFunction, _) => Some(super::rules::lambda_env_name),
            _ => None,
        };
        let mut entries = Vec::new();
        for j in 0..self.tape.pick(4) {
            let key = match self.tape.pick(5) {
                0 => format!("k{j}"),
                1 => format!("Env_{j}"),
                2 => format!("quoted key {j}"),
                3 => format!("é{j}"),
                _ => format!("aws:tag-{j}"),
            };
            // Secret keys never share a name with plain ones (that is a validation error of its own).
            let prefix = if field == "secret_environment" { "S" } else { "" };
            let key = format!("{prefix}{key}");
            let key = match key_check {
                Some(check) if check(&key).is_err() && self.clean => format!("{prefix}k{j}"),
                Some(check) if check(&key).is_err() => {
                    self.flaws.push(format!("`{field}` key {key:?}, which AWS refuses"));
                    key
                }
                _ => key,
            };
            let value = self.string();
            let value = if tags { self.checked(value, super::rules::tag_value, "tag value") } else { value };
            entries.push((key, Tv::Str(value)));
        }
        if tags && self.flaw(10) {
            self.flaws.push("reserved tag key".into());
            entries.push(("reconcile:x".into(), s("v")));
        }
        Tv::Tbl(entries)
    }

    /// An IAM-style policy document, with extra TOML value kinds now and then.
    fn policy(&mut self) -> Tv {
        if self.tape.chance(10) {
            return Tv::Tbl(vec![]);
        }
        let statement = tbl(vec![("Effect", s("Allow")), ("Action", Tv::Arr(vec![s("s3:*")])), ("Resource", Tv::Str(self.string()))]);
        let mut doc = vec![("Version".to_string(), s("2012-10-17")), ("Statement".to_string(), Tv::Arr(vec![statement]))];
        if self.tape.chance(20) {
            let extra = ["1.5", "-0.0", "inf", "nan", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "-42", "true"];
            for (j, raw) in extra.iter().enumerate() {
                if self.tape.chance(30) {
                    doc.push((format!("x{j}"), Tv::Raw(raw.to_string())));
                }
            }
        }
        Tv::Tbl(doc)
    }

    /// An alias's weighted routing: none, or a second version (a reference, or a literal no
    /// generated `function_version` uses) and a weight.
    fn routing(&mut self) -> Tv {
        if self.tape.chance(40) {
            return Tv::Tbl(vec![]);
        }
        let version = self.string();
        let version = if version.contains("${") { version } else { "2".to_string() };
        let weight = Tv::Raw(self.tape.select(&["0.0", "0.25", "1.0", "1"]).to_string());
        tbl(vec![("version", Tv::Str(version)), ("weight", weight)])
    }

    fn visibility(&mut self, metric_required: bool) -> Tv {
        let mut v = Vec::new();
        if metric_required || self.tape.chance(50) {
            let metric = self.string();
            let metric = self.checked(metric, super::rules::waf_metric_name, "metric_name");
            v.push(("metric_name", Tv::Str(metric)));
        }
        if self.tape.chance(30) {
            v.push(("sampled_requests", Tv::Bool(self.tape.chance(50))));
        }
        if self.tape.chance(30) {
            v.push(("cloudwatch_metrics", Tv::Bool(self.tape.chance(50))));
        }
        tbl(v)
    }

    fn route(&mut self) -> Tv {
        let mut route = vec![("path", s(self.tape.select(ROUTE_PATHS))), ("method", s(self.tape.select(METHODS)))];
        if self.tape.chance(30) {
            route.push(("authorization", s(self.tape.select(&["NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS"]))));
        }
        if self.tape.chance(30) {
            route.push(("method_responses", Tv::Arr(vec![s("200"), s("404")])));
        }
        let kind = self.tape.select(INTEGRATION_TYPES);
        let mut integration = vec![("type", s(kind))];
        if kind != "MOCK" || self.tape.chance(30) {
            integration.push(("uri", Tv::Str(format!("arn:{}", self.string()))));
        }
        if self.tape.chance(30) {
            integration.push(("http_method", s(self.tape.select(METHODS))));
        }
        if self.tape.chance(30) {
            integration.push(("credentials", Tv::Str(self.string())));
        }
        if self.tape.chance(30) {
            integration.push(("integration_responses", Tv::Arr(vec![s("200")])));
        }
        route.push(("integration", tbl(integration)));
        if self.flaw(20) {
            let (what, fix): (&str, fn(&mut Vec<(&str, Tv)>)) = match self.tape.pick(8) {
                0 => ("route path without `/`", |r| r[0].1 = s("noslash")),
                1 => ("route path with a trailing `/`", |r| r[0].1 = s("/a/")),
                2 => ("route path with an empty segment", |r| r[0].1 = s("/a//b")),
                3 => ("unknown method", |r| r[1].1 = s("FETCH")),
                4 => ("route without integration", |r| r.retain(|(k, _)| *k != "integration")),
                5 => ("unknown route key", |r| r.push(("bogus", Tv::Int(1)))),
                6 => ("integration without uri", |r| {
                    r.retain(|(k, _)| *k != "integration");
                    r.push(("integration", tbl(vec![("type", s("AWS_PROXY"))])));
                }),
                _ => ("route path not a string", |r| r[0].1 = Tv::Int(1)),
            };
            self.flaws.push(what.into());
            fix(&mut route);
        }
        tbl(route)
    }

    fn rule(&mut self) -> Tv {
        let name = self.string();
        let name = self.checked(name, super::rules::waf_name, "rule name");
        let mut rule = vec![("name", Tv::Str(name)), ("priority", Tv::Int(self.tape.pick(100) as i64))];
        let managed = match self.tape.pick(3) {
            0 => {
                let mut group = vec![("name", s("AWSManagedRulesCommonRuleSet"))];
                if self.tape.chance(50) {
                    group.push(("vendor", s("AWS")));
                }
                rule.push(("statement", tbl(vec![("managed_rule_group", tbl(group))])));
                true
            }
            1 => {
                let codes = (0..=self.tape.pick(3)).map(|i| s(["SG", "US", "DE"][i])).collect();
                rule.push(("statement", tbl(vec![("geo_match", tbl(vec![("country_codes", Tv::Arr(codes))]))])));
                false
            }
            _ => {
                let limit = match self.tape.pick(3) {
                    0 => 10,
                    1 => 2_000_000_000,
                    _ => 10 + (self.tape.next() % 1_999_999_991) as i64,
                };
                let mut body = vec![("limit", self.integer(limit))];
                if self.tape.chance(50) {
                    body.push(("aggregate_key_type", s(self.tape.select(&["IP", "FORWARDED_IP", "CONSTANT", "CUSTOM_KEYS"]))));
                }
                if self.tape.chance(50) {
                    body.push(("evaluation_window_sec", Tv::Int(self.tape.select(&[60, 120, 300, 600]))));
                }
                rule.push(("statement", tbl(vec![("rate_based", tbl(body))])));
                false
            }
        };
        if managed {
            rule.push(("override_action", s(self.tape.select(&["none", "count"]))));
        } else {
            rule.push(("action", s(self.tape.select(&["block", "allow", "count"]))));
        }
        if self.tape.chance(50) {
            let vis = self.visibility(false);
            rule.push(("visibility", vis));
        }
        if self.flaw(20) {
            let (what, fix): (&str, fn(&mut Vec<(&str, Tv)>)) = match self.tape.pick(8) {
                0 => ("priority not an integer", |r| r[1].1 = Tv::Raw("1.5".into())),
                1 => ("rule without statement", |r| r.retain(|(k, _)| *k != "statement")),
                2 => ("statement with two kinds", |r| {
                    r.retain(|(k, _)| *k != "statement");
                    r.push((
                        "statement",
                        tbl(vec![
                            ("geo_match", tbl(vec![("country_codes", Tv::Arr(vec![s("SG")]))])),
                            ("rate_based", tbl(vec![("limit", Tv::Int(100))])),
                        ]),
                    ));
                }),
                3 => ("geo match without country codes", |r| {
                    r.retain(|(k, _)| *k != "statement");
                    r.push(("statement", tbl(vec![("geo_match", tbl(vec![("country_codes", Tv::Arr(vec![]))]))])));
                }),
                4 => ("rate limit out of range", |r| {
                    r.retain(|(k, _)| *k != "statement");
                    r.push(("statement", tbl(vec![("rate_based", tbl(vec![("limit", Tv::Int(5))]))])));
                }),
                5 => ("evaluation window not allowed", |r| {
                    r.retain(|(k, _)| *k != "statement");
                    r.push((
                        "statement",
                        tbl(vec![("rate_based", tbl(vec![("limit", Tv::Int(100)), ("evaluation_window_sec", Tv::Int(7))]))]),
                    ));
                }),
                6 => ("both action and override_action", |r| {
                    r.retain(|(k, _)| *k != "action" && *k != "override_action");
                    r.push(("action", s("block")));
                    r.push(("override_action", s("none")));
                }),
                _ => ("unknown rule key", |r| r.push(("bogus", Tv::Bool(true)))),
            };
            self.flaws.push(what.into());
            fix(&mut rule);
        }
        tbl(rule)
    }

    /// A value of the field's type.
    fn well_typed(&mut self, kind: Kind, field: &Field) -> Tv {
        match field.ty {
            FieldType::String if !field.one_of.is_empty() => s(self.tape.select(field.one_of)),
            FieldType::String => {
                let value = self.string();
                Tv::Str(match field.check {
                    Some(check) => self.checked(value, check, field.name),
                    None => value,
                })
            }
            FieldType::Integer { min, max } => {
                let n = if kind == Kind::LogGroup && field.name == "retention_in_days" {
                    if self.tape.chance(10) { 0 } else { self.tape.select(schema::LOG_RETENTION_DAYS) }
                } else {
                    match self.tape.pick(3) {
                        0 => min,
                        1 => max,
                        _ => min + (self.tape.next() as i64).rem_euclid(max - min + 1),
                    }
                };
                self.integer(n)
            }
            FieldType::Boolean => Tv::Bool(self.tape.chance(50)),
            FieldType::StringList => {
                let items = (0..self.tape.pick(4)).map(|_| Tv::Str(self.string())).collect();
                Tv::Arr(items)
            }
            FieldType::StringMap => self.string_map(kind, field.name),
            FieldType::Json if kind == Kind::WebAcl && field.name == "visibility" => self.visibility(true),
            FieldType::Json if kind == Kind::LambdaAlias && field.name == "routing" => self.routing(),
            FieldType::Json => self.policy(),
            FieldType::JsonMap => {
                let docs = (0..self.tape.pick(3)).map(|j| (format!("policy-{j}"), self.policy())).collect();
                Tv::Tbl(docs)
            }
            FieldType::JsonList if kind == Kind::RestApi && field.name == "routes" => {
                let routes: Vec<Tv> = (0..self.tape.pick(4)).map(|_| self.route()).collect();
                // A route listed twice (one method and path; methods in any case) is refused.
                let mut seen = std::collections::BTreeSet::new();
                for route in &routes {
                    let Tv::Tbl(entries) = route else { continue };
                    let get = |k: &str| {
                        entries.iter().find(|(e, _)| e == k).and_then(|(_, v)| if let Tv::Str(s) = v { Some(s.clone()) } else { None })
                    };
                    if let (Some(path), Some(method)) = (get("path"), get("method"))
                        && !seen.insert((path.clone(), method.to_uppercase()))
                    {
                        self.flaws.push(format!("route {method} {path} listed twice"));
                    }
                }
                Tv::Arr(routes)
            }
            FieldType::JsonList if kind == Kind::WebAcl && field.name == "rules" => {
                let mut rules: Vec<Tv> = (0..self.tape.pick(4)).map(|_| self.rule()).collect();
                // WAF needs each rule's name and priority to be unique: the generator keeps them so.
                for (i, rule) in rules.iter_mut().enumerate() {
                    if let Tv::Tbl(entries) = rule {
                        for (k, v) in entries.iter_mut() {
                            match (k.as_str(), v) {
                                ("name", Tv::Str(name)) => name.push_str(&format!("-{i}")),
                                ("priority", Tv::Int(p)) => *p = *p * 4 + i as i64,
                                _ => {}
                            }
                        }
                    }
                }
                Tv::Arr(rules)
            }
            // A list of tables no validator looks into (none today).
            FieldType::JsonList => Tv::Arr(vec![]),
            FieldType::Path => s(self.tape.select(CODE_PATHS)),
        }
    }

    /// A value the validator must refuse for the field.
    fn ill_typed(&mut self, kind: Kind, field: &Field) -> Tv {
        let mut options: Vec<Tv> = match field.ty {
            FieldType::String => vec![Tv::Int(1), Tv::Bool(true), Tv::Arr(vec![]), Tv::Tbl(vec![])],
            FieldType::Integer { min, max } => vec![
                s("5"),
                Tv::Raw("1.5".into()),
                Tv::Int(min - 1),
                Tv::Int(max + 1),
                Tv::Raw("99999999999999999999".into()),
                Tv::Bool(false),
            ],
            FieldType::Boolean => vec![s("true"), Tv::Int(1)],
            FieldType::StringList => vec![s("x"), Tv::Arr(vec![Tv::Int(1)]), Tv::Arr(vec![s("ok"), Tv::Bool(true)]), Tv::Tbl(vec![])],
            FieldType::StringMap => vec![s("x"), Tv::Arr(vec![]), tbl(vec![("k", Tv::Int(1))])],
            FieldType::Json => vec![s("x"), Tv::Int(1), Tv::Arr(vec![])],
            FieldType::JsonMap => vec![s("x"), Tv::Arr(vec![]), tbl(vec![("p", s("x"))])],
            FieldType::JsonList => vec![s("x"), Tv::Arr(vec![Tv::Int(1)]), Tv::Tbl(vec![])],
            FieldType::Path => vec![Tv::Int(1), s("does-not-exist/nowhere")],
        };
        if !field.one_of.is_empty() {
            options.push(s("NOPE"));
        }
        if kind == Kind::LogGroup && field.name == "retention_in_days" {
            options.push(Tv::Int(2));
        }
        if kind == Kind::LambdaAlias && field.name == "routing" {
            options.push(tbl(vec![("version", s("2")), ("weight", Tv::Raw("1.5".into()))]));
            options.push(tbl(vec![("version", s("2"))]));
        }
        if kind == Kind::WebAcl && field.name == "visibility" {
            options.push(Tv::Tbl(vec![]));
            options.push(tbl(vec![("metric_name", Tv::Int(1))]));
            options.push(tbl(vec![("metric_name", s("m")), ("bogus", Tv::Bool(true))]));
            options.push(tbl(vec![("metric_name", s("m")), ("sampled_requests", s("yes"))]));
        }
        let i = self.tape.pick(options.len());
        options.swap_remove(i)
    }

    /// Renders a value inline.
    fn inline(&mut self, v: &Tv) -> String {
        match v {
            Tv::Str(v) => {
                let literal_ok = !v.contains('\'') && !v.chars().any(|c| c.is_control());
                if literal_ok && self.tape.chance(25) { format!("'{v}'") } else { basic_string(v) }
            }
            Tv::Int(n) => n.to_string(),
            Tv::Raw(r) => r.clone(),
            Tv::Bool(b) => b.to_string(),
            Tv::Arr(items) => {
                let items: Vec<String> = items.iter().map(|i| self.inline(i)).collect();
                format!("[{}]", items.join(", "))
            }
            Tv::Tbl(entries) => {
                if entries.is_empty() {
                    return "{}".into();
                }
                let entries: Vec<String> = entries.iter().map(|(k, v)| format!("{} = {}", toml_key(k), self.inline(v))).collect();
                format!("{{ {} }}", entries.join(", "))
            }
        }
    }

    /// Renders `key = value` under the table `path`: inline, as dotted keys, as a sub-table or as an
    /// array of tables. Lines go to `lines`; sub-tables to `sections`, written after them.
    fn render_entry(&mut self, path: &str, key: &str, v: &Tv, lines: &mut Vec<String>, sections: &mut Vec<String>) {
        let k = toml_key(key);
        match v {
            Tv::Tbl(entries) if self.tape.chance(25) => {
                let sub = format!("{path}.{k}");
                let mut sub_lines = Vec::new();
                let mut sub_sections = Vec::new();
                for (ek, ev) in entries {
                    self.render_entry(&sub, ek, ev, &mut sub_lines, &mut sub_sections);
                }
                sections.push(format!("[{sub}]\n{}", sub_lines.iter().map(|l| format!("{l}\n")).collect::<String>()));
                sections.extend(sub_sections);
            }
            Tv::Tbl(entries) if !entries.is_empty() && self.tape.chance(15) => {
                for (ek, ev) in entries {
                    let value = self.inline(ev);
                    lines.push(format!("{k}.{} = {value}", toml_key(ek)));
                }
            }
            Tv::Arr(items) if !items.is_empty() && items.iter().all(|i| matches!(i, Tv::Tbl(_))) && self.tape.chance(40) => {
                let sub = format!("{path}.{k}");
                for item in items {
                    let Tv::Tbl(entries) = item else { unreachable!() };
                    let mut sub_lines = Vec::new();
                    let mut sub_sections = Vec::new();
                    for (ek, ev) in entries {
                        self.render_entry(&sub, ek, ev, &mut sub_lines, &mut sub_sections);
                    }
                    // Sub-tables of an array element must follow its own header.
                    sections.push(format!(
                        "[[{sub}]]\n{}{}",
                        sub_lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
                        sub_sections.concat()
                    ));
                }
            }
            _ => {
                let value = self.inline(v);
                lines.push(format!("{k} = {value}"));
            }
        }
    }
}

fn generate(data: &[u32]) -> Generated {
    let mut tape = Tape { data, pos: 0 };
    let clean = !tape.chance(50);
    let n = 1 + tape.pick(6);
    let mut g =
        Gen { tape, clean, names: Vec::new(), kinds: Vec::new(), usable: Vec::new(), current: 0, refs: BTreeSet::new(), flaws: Vec::new() };

    // Names, kinds and whether each resource table is sound enough to be referenced.
    let mut type_values = Vec::new();
    for i in 0..n {
        let kind = g.tape.select(Kind::ALL);
        let (name, valid_name) = if g.flaw(4) {
            ([format!("{i}bad"), format!("bad name{i}"), format!("é{i}"), String::new()][g.tape.pick(4)].clone(), false)
        } else {
            ([format!("r{i}"), format!("_R-{i}"), format!("res_{i}")][g.tape.pick(3)].clone(), true)
        };
        let type_value = if g.flaw(3) { Some([None, Some(s("aws_nope")), Some(Tv::Int(1))][g.tape.pick(3)].clone()) } else { None };
        if !valid_name {
            g.flaws.push(format!("invalid resource name `{name}`"));
        }
        if let Some(t) = &type_value {
            g.flaws.push(format!("resource `{name}` with type {t:?}"));
        }
        g.usable.push(valid_name && type_value.is_none());
        g.names.push(name);
        g.kinds.push(kind);
        type_values.push(type_value);
    }

    let mut sections: Vec<String> = Vec::new();
    // Top-level lines, before any header.
    let mut prelude = String::new();
    let mut deps = BTreeMap::new();
    // (kind, physical identity) → first resource with it.
    let mut physical: BTreeMap<(Kind, Vec<String>), String> = BTreeMap::new();
    for i in 0..n {
        g.current = i;
        g.refs.clear();
        let kind = g.kinds[i];
        let name = g.names[i].clone();
        let path = format!("resources.{}", toml_key(&name));
        let mut lines = Vec::new();
        let mut subs = Vec::new();
        match &type_values[i] {
            None => lines.push(format!("type = {}", basic_string(kind.type_name()))),
            Some(None) => {}
            Some(Some(t)) => {
                let t = g.inline(t);
                lines.push(format!("type = {t}"));
            }
        }
        let schema = kind.schema();
        // The literal values of the fields of the kind's physical identity.
        let mut identity: BTreeMap<&str, String> = BTreeMap::new();
        for field in schema.fields {
            let include = if field.required { !g.flaw(3) } else { g.tape.chance(50) };
            if !include {
                if field.required {
                    g.flaws.push(format!("`{name}` without `{}`", field.name));
                }
                // Left out, an identity field has its default (a web ACL's scope is REGIONAL).
                if let Some(crate::providers::schema::DefaultValue::Str(d)) = field.default
                    && schema.identity.fields().contains(&field.name)
                {
                    identity.insert(field.name, d.to_string());
                }
                continue;
            }
            let value = if g.flaw(5) {
                let v = g.ill_typed(kind, field);
                g.flaws.push(format!("`{name}.{}` = {v:?}", field.name));
                v
            } else if field.name == schema.physical_name && !g.tape.chance(20) {
                // Mostly unique names; sometimes a shared one (a duplicate within the kind).
                Tv::Str(if g.clean || !g.tape.chance(20) { format!("{name}-physical") } else { "shared".into() })
            } else {
                g.well_typed(kind, field)
            };
            if let Tv::Str(v) = &value
                && schema.identity.fields().contains(&field.name)
            {
                identity.insert(field.name, v.clone());
            }
            g.render_entry(&path, field.name, &value, &mut lines, &mut subs);
        }
        // Two resources with one physical identity (the kind's own rule) are refused.
        let fields = schema.identity.fields();
        if schema.identity != crate::manifest::schema::Identity::Assigned && fields.iter().all(|f| identity.contains_key(f)) {
            let fold = matches!(schema.identity, crate::manifest::schema::Identity::FieldsIgnoringCase(_));
            let key: Vec<String> = fields
                .iter()
                .map(|f| identity[f].clone())
                .map(|v| if fold && !v.contains("${") { v.to_ascii_lowercase() } else { v })
                .collect();
            if let Some(first) = physical.insert((kind, key.clone()), name.clone()) {
                g.flaws.push(format!("`{name}` and `{first}` share the {kind} identity {key:?}"));
            }
        }
        if g.tape.chance(15) {
            let v = if g.flaw(20) {
                g.flaws.push(format!("`{name}.protect` not a boolean"));
                "\"yes\"".to_string()
            } else {
                g.tape.chance(50).to_string()
            };
            lines.push(format!("protect = {v}"));
        }
        if g.tape.chance(20) {
            let mut items = Vec::new();
            for _ in 0..=g.tape.pick(2) {
                if g.flaw(15) {
                    g.flaws.push(format!("`{name}` depends on a missing resource"));
                    items.push(basic_string("ghost"));
                    continue;
                }
                let target = if g.tape.chance(if g.clean { 0 } else { 10 }) {
                    g.tape.pick(n)
                } else if i > 0 {
                    g.tape.pick(i)
                } else {
                    continue;
                };
                let t = g.names[target].clone();
                if g.usable[target] {
                    g.refs.insert(t.clone());
                } else {
                    g.flaws.push(format!("`{name}` depends on the invalid resource `{t}`"));
                }
                items.push(basic_string(&t));
            }
            lines.push(format!("depends_on = [{}]", items.join(", ")));
        }
        if g.flaw(3) {
            g.flaws.push(format!("unknown field in `{name}`"));
            lines.push("bogus_field = 1".into());
        }
        if g.tape.chance(30) {
            // Field order does not matter.
            let len = lines.len();
            if len > 1 {
                let (a, b) = (g.tape.pick(len), g.tape.pick(len));
                lines.swap(a, b);
            }
        }
        deps.insert(name.clone(), std::mem::take(&mut g.refs));
        if i == 0 && subs.is_empty() && g.tape.chance(15) {
            // A dotted key before any header: `resources.r0 = { type = ..., ... }` (still first in file order).
            prelude.push_str(&format!("{path} = {{ {} }}\n", lines.join(", ")));
            continue;
        }
        sections.push(format!("[{path}]\n{}", lines.iter().map(|l| format!("{l}\n")).collect::<String>()));
        sections.extend(subs);
    }

    // Outputs: references to anything.
    g.current = n;
    if g.tape.chance(50) {
        let mut lines = Vec::new();
        for j in 0..=g.tape.pick(3) {
            let v = if g.flaw(5) {
                g.flaws.push("output not a string".into());
                "1".to_string()
            } else {
                let r = g.reference();
                let v = format!("{}{r}", g.literal());
                g.inline(&Tv::Str(v))
            };
            lines.push(format!("out{j} = {v}"));
        }
        sections.push(format!("[outputs]\n{}", lines.iter().map(|l| format!("{l}\n")).collect::<String>()));
    }

    // The stack.
    let stack = ["demo", "A_b-9", &"s".repeat(64)][g.tape.pick(3)].to_string();
    let stack_section = if g.flaw(8) {
        match g.tape.pick(5) {
            0 => {
                g.flaws.push("no [stack]".into());
                None
            }
            1 => {
                g.flaws.push("[stack] without name".into());
                Some("[stack]\ndescription = \"d\"\n".to_string())
            }
            2 => {
                g.flaws.push("`stack` not a table".into());
                prelude.push_str("stack = \"x\"\n");
                None
            }
            3 => {
                g.flaws.push("unknown top-level key".into());
                prelude.push_str("bogus = 1\n");
                Some(format!("[stack]\nname = {}\n", basic_string(&stack)))
            }
            _ => {
                let bad = ["", "has space", "é", &"s".repeat(65)][g.tape.pick(4)].to_string();
                g.flaws.push(format!("invalid stack name {bad:?}"));
                Some(format!("[stack]\nname = {}\n", basic_string(&bad)))
            }
        }
    } else {
        let description = if g.tape.chance(30) { "description = \"Fuzz ${not.a.reference}\"\n" } else { "" };
        Some(format!("[stack]\nname = {}\n{description}", basic_string(&stack)))
    };
    if let Some(st) = stack_section {
        // The stack table may come last.
        if g.tape.chance(20) {
            sections.push(st);
        } else {
            sections.insert(0, st);
        }
    }

    // Cycles, when nothing else is wrong (otherwise the expectation is an error anyway).
    if g.flaws.is_empty()
        && let Some(cycle) = find_cycle(&deps)
    {
        g.flaws.push(format!("reference cycle through `{cycle}`"));
    }

    let text = format!("{prelude}{}", sections.join("\n"));
    let resources = g.names.iter().cloned().zip(g.kinds.iter().copied()).collect();
    Generated { text, stack, resources, deps, flaws: g.flaws }
}

/// A resource on a dependency cycle (a self-reference counts), if any.
fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(node: &'a str, deps: &'a BTreeMap<String, BTreeSet<String>>, state: &mut BTreeMap<&'a str, bool>) -> Option<&'a str> {
        match state.get(node) {
            Some(false) => return Some(node),
            Some(true) => return None,
            None => {}
        }
        state.insert(node, false);
        for next in deps.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, deps, state) {
                return Some(c);
            }
        }
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    deps.keys().find_map(|k| visit(k, deps, &mut state)).map(str::to_string)
}

/// Manifests from the grammar: `parse` never panics; a manifest without deliberate flaws parses,
/// with the expected resources, kinds and dependencies; one with a flaw is refused.
#[test]
fn generated_manifests_validate_as_expected() {
    let path = manifests_dir().join("generated.toml");
    let valid = AtomicUsize::new(0);
    let schema = jsonschema::validator_for(&super::json_schema::generate()).expect("the manifest schema compiles");
    run("generated manifests", GRAMMAR_CASES, vec(any::<u32>(), 2048), |data| {
        let generated = generate(&data);
        let text = &generated.text;
        let result = check(&path, text)?;
        if !generated.flaws.is_empty() {
            prop_assert!(result.is_err(), "accepted a manifest with flaws {:?}:\n{text}", generated.flaws);
            return Ok(());
        }
        valid.fetch_add(1, Ordering::Relaxed);
        let m = match result {
            Ok(m) => m,
            Err(e) => return Err(TestCaseError::fail(format!("refused a valid manifest:\n{e}\n--- manifest ---\n{text}"))),
        };
        prop_assert_eq!(&m.stack, &generated.stack);
        // The JSON Schema accepts what validate accepts (an editor never marks it as wrong).
        let doc: serde_json::Value =
            serde_json::to_value(toml::from_str::<toml::Table>(text).map_err(|e| TestCaseError::fail(e.to_string()))?)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let misfits: Vec<String> = schema.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path())).collect();
        prop_assert!(misfits.is_empty(), "the JSON Schema refuses a manifest validate accepts: {misfits:#?}\n{text}");
        let got: Vec<(String, Kind)> = m.resources.iter().map(|r| (r.name.clone(), r.kind)).collect();
        prop_assert_eq!(&got, &generated.resources, "resources of:\n{}", text);
        for r in &m.resources {
            // What the generator wrote, and for a stage that logs, the manifest's account settings
            // (an implicit dependency: API Gateway refuses logging until the setting is there).
            let written = &generated.deps[&r.name];
            let implicit: BTreeSet<&String> = r.deps.difference(written).collect();
            prop_assert!(written.is_subset(&r.deps), "dependencies of `{}` lost in:\n{}", r.name, text);
            prop_assert!(
                implicit.is_empty()
                    || r.kind == Kind::Stage
                        && super::stage_logs(&r.attrs)
                        && implicit.iter().all(|d| m.resource(d).is_some_and(|a| a.kind == Kind::ApiGatewayAccount)),
                "dependencies of `{}` beyond those written, {:?}, in:\n{}",
                r.name,
                implicit,
                text
            );
            for field in r.kind.schema().fields {
                prop_assert!(r.attrs.contains_key(field.name), "`{}.{}` has no value in:\n{}", r.name, field.name, text);
            }
            if r.kind.schema().taggable {
                prop_assert_eq!(&r.attrs["tags"][TAG_RESOURCE], &json!(r.name));
            }
            prop_assert_eq!(r.artifact.is_some(), r.kind == Kind::LambdaFunction);
        }
        Ok(())
    });
    eprintln!("manifest fuzz: generated manifests: {} of them without flaws (must parse)", valid.load(Ordering::Relaxed));
}

/// Nesting deep enough to overflow a recursive parser or validator is refused with a diagnostic
/// (the TOML parser has a depth limit); random inputs never get that deep, so it is checked here.
#[test]
fn deep_nesting_is_refused_without_overflow() {
    let path = manifests_dir().join("generated.toml");
    let head = "[stack]\nname = \"s\"\n[resources.r]\ntype = \"aws_iam_role\"\nname = \"n\"\n";
    for depth in [50, 10_000, 200_000] {
        let cases = [
            format!("{head}assume_role_policy = {{ a = {}1{} }}\n", "[".repeat(depth), "]".repeat(depth)),
            format!("{head}assume_role_policy = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth)),
            format!("{head}assume_role_policy.{} = 1\n", vec!["a"; depth].join(".")),
            format!("{}\n", "[".repeat(depth)),
        ];
        for text in cases {
            let result = check(&path, &text).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
            if depth > 1_000 {
                assert!(result.is_err(), "depth {depth} accepted");
            }
        }
    }
}
