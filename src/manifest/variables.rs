//! `[variables]`: typed inputs of a manifest, given on the command line, in var files or in the
//! environment, and substituted for `${var.name}` wherever a value is before anything else is checked.
//!
//! Precedence (lowest first, as Terraform's): the declaration's `default`, then `RECONCILE_VAR_<name>`
//! in the environment, then each `--var-file` in the order given, then each `--var name=value` in the
//! order given. Every problem is a [`Diagnostic`] pointing at the manifest, the var file, or the
//! `--var` / environment entry it comes from; a sensitive value is never shown in one.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Diagnostic, Location, SourceMap};
use super::schema::{Kind, SENSITIVE};
use super::{refs, shown, suggest};

/// The prefix of environment variables that give variable values: `RECONCILE_VAR_<name>`.
pub const ENV_PREFIX: &str = "RECONCILE_VAR_";

/// The keys a variable declaration takes.
const DECL_KEYS: &[&str] = &["type", "default", "description", "allowed", "pattern", "min", "max", "sensitive"];

/// What the command line and the environment give (never the manifest).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// `--var name=value`, in order; `name=@PATH` reads the value from a file (`@@` is a literal `@`).
    pub vars: Vec<String>,
    /// `--var-file FILE`, in order.
    pub var_files: Vec<PathBuf>,
    /// `RECONCILE_VAR_<name>` entries of the environment: (name, value).
    pub env: Vec<(String, String)>,
}

impl Inputs {
    /// The `RECONCILE_VAR_*` entries of this process's environment.
    pub fn from_env() -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let name = k.to_str()?.strip_prefix(ENV_PREFIX)?.to_string();
                Some((name, v.into_string().ok()?))
            })
            .filter(|(name, _)| !name.is_empty())
            .collect();
        out.sort();
        out
    }
}

// Values given on the command line may be secrets: never in a Debug print.
impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &[String]| v.iter().map(|s| s.split_once('=').map_or(s.as_str(), |(n, _)| n).to_string()).collect::<Vec<_>>();
        f.debug_struct("Inputs")
            .field("vars", &names(&self.vars))
            .field("var_files", &self.var_files)
            .field("env", &self.env.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

/// A variable's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl VarType {
    fn parse(s: &str) -> Option<VarType> {
        Some(match s {
            "string" => VarType::String,
            "number" => VarType::Number,
            "bool" => VarType::Bool,
            "list" => VarType::List,
            "map" => VarType::Map,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Number => "number",
            VarType::Bool => "bool",
            VarType::List => "list",
            VarType::Map => "map",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            VarType::String => "a string",
            VarType::Number => "a number",
            VarType::Bool => "a bool (true or false)",
            VarType::List => "a list (`[\"a\", \"b\"]`)",
            VarType::Map => "a map (`{ key = \"value\" }`)",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            VarType::String => v.is_string(),
            VarType::Number => v.is_number(),
            VarType::Bool => v.is_boolean(),
            VarType::List => v.is_array(),
            VarType::Map => v.is_object(),
        }
    }
}

/// One declared variable with its value.
#[derive(Clone)]
pub struct Variable {
    pub name: String,
    pub ty: VarType,
    pub description: Option<String>,
    pub sensitive: bool,
    /// Where the manifest declares it.
    pub location: Location,
    /// Its value (after precedence).
    pub value: Value,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown_value = if self.sensitive { Value::String(SENSITIVE.into()) } else { self.value.clone() };
        f.debug_struct("Variable")
            .field("name", &self.name)
            .field("type", &self.ty)
            .field("sensitive", &self.sensitive)
            .field("value", &shown_value)
            .finish()
    }
}

/// The manifest's variables, by name, with their values.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    pub vars: BTreeMap<String, Variable>,
}

impl Variables {
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.vars.get(name)
    }

    /// A digest of every value (sensitive ones included, only ever as part of the digest), to tell
    /// whether two runs were given the same values.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (name, v) in &self.vars {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(v.value.to_string().as_bytes());
            h.update([0]);
        }
        format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// A declaration while it is checked.
struct Decl {
    ty: VarType,
    description: Option<String>,
    sensitive: bool,
    allowed: Vec<Value>,
    pattern: Option<(String, regex_lite::Regex)>,
    min: Option<f64>,
    max: Option<f64>,
    /// The default, with the span of its value.
    default: Option<(Value, Range<usize>)>,
    /// The span of the declaration's key.
    span: Range<usize>,
}

/// Where a given value comes from, to point errors at it.
enum Origin<'s> {
    /// A span in a file (the manifest for a default, or a var file).
    File(&'s SourceMap, Range<usize>),
    /// A `--var` argument or an environment variable, with the name of the source (`--var`,
    /// `RECONCILE_VAR_x`), the whole text, and the byte offset of the value in it.
    Arg { what: String, text: String, at: usize },
}

fn diag(origin: &Origin<'_>, sensitive: bool, message: String) -> Diagnostic {
    match origin {
        Origin::File(src, span) => {
            let mut d = src.diagnostic(span.start, message);
            if sensitive {
                mask(&mut d);
            }
            d
        }
        Origin::Arg { what, text, at } => {
            let name_part = &text[..*at];
            let snippet = if sensitive { format!("{name_part}{SENSITIVE}") } else { text.clone() };
            Diagnostic {
                location: Location { file: PathBuf::from(what), line: 1, column: name_part.chars().count() + 1 },
                message,
                snippet,
                caret: name_part.chars().count() + 1,
            }
        }
    }
}

/// Hides a line of a sensitive value: only what comes before the caret is shown.
fn mask(d: &mut Diagnostic) {
    let before: String = d.snippet.chars().take(d.caret.saturating_sub(1)).collect();
    d.snippet = format!("{before}{SENSITIVE}");
}

/// Reads the `[variables]` table and the values `inputs` give; every problem goes to `diags`.
pub(super) fn resolve(src: &SourceMap, table: Option<&Spanned<DeValue<'_>>>, inputs: &Inputs, diags: &mut Vec<Diagnostic>) -> Variables {
    let decls = declarations(src, table, diags);
    let names = || decls.keys().map(String::as_str);
    // name → (value, origin), lowest precedence first; later ones replace earlier ones.
    let mut given: HashMap<String, (Value, Origin<'_>)> = HashMap::new();
    // Variables given a value that was refused (reported there, not again as missing).
    let mut refused: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Variables whose value was read from a file (`--var name=@FILE`), as errors name it instead of
    // quoting it: only its length and where it came from.
    let mut read_from: HashMap<String, String> = HashMap::new();

    for (name, text) in &inputs.env {
        // The environment is shared by every manifest: a variable this one does not declare is not its.
        let Some(decl) = decls.get(name) else { continue };
        let what = format!("{ENV_PREFIX}{name}");
        let origin = Origin::Arg { what: what.clone(), text: format!("{what}={text}"), at: what.len() + 1 };
        match from_text(decl, text, hidden(decl, None)) {
            Ok(v) => {
                given.insert(name.clone(), (v, origin));
            }
            Err(e) => {
                refused.insert(name.to_string());
                diags.push(diag(&origin, decl.sensitive, format!("variable `{name}` {e}")))
            }
        }
    }

    let mut var_sources = Vec::new();
    for path in &inputs.var_files {
        match crate::input::read_text(path, crate::input::MAX_VAR_FILE, "a var file") {
            Ok(text) => var_sources.push(SourceMap::new(path, text)),
            // The line is not shown: a var file may hold secrets.
            Err(crate::input::InputError::NotUtf8 { path, line, column, detail }) => diags.push(Diagnostic {
                location: Location { file: path, line, column },
                message: format!("var file: {detail}"),
                snippet: String::new(),
                caret: column,
            }),
            Err(e) => diags.push(Diagnostic {
                location: Location { file: path.clone(), line: 1, column: 1 },
                message: format!("cannot read var file: {}", e.reason()),
                snippet: String::new(),
                caret: 1,
            }),
        }
    }
    for vsrc in &var_sources {
        let root = match DeTable::parse(&vsrc.text) {
            Ok(r) => r.into_inner(),
            Err(e) => {
                // The line may hold a secret: only what comes before the error is shown.
                let offset = e.span().map_or(0, |s| s.start);
                let mut d = vsrc.diagnostic(offset, format!("invalid TOML in var file: {}", e.message().trim()));
                d.snippet = match d.snippet.split_once('=') {
                    Some((key, _)) => format!("{key}= {SENSITIVE}"),
                    None => SENSITIVE.to_string(),
                };
                d.caret = d.caret.min(d.snippet.chars().count());
                diags.push(d);
                continue;
            }
        };
        for (key, value) in root.iter() {
            let name = key.get_ref().as_ref();
            let Some(decl) = decls.get(name) else {
                // A misspelt name may carry a secret value: the line is shown without it.
                let mut shown_line = vsrc.diagnostic(value.span().start, "");
                mask(&mut shown_line);
                let mut d = vsrc.diagnostic(
                    key.span().start,
                    format!(
                        "var file sets `{}`, which {} does not declare in `[variables]`{}",
                        shown(name),
                        src.file.display(),
                        suggest::did_you_mean(name, names(), str::to_string)
                    ),
                );
                d.snippet = shown_line.snippet;
                diags.push(d);
                continue;
            };
            let origin = Origin::File(vsrc, value.span());
            match from_toml(decl.ty, value.get_ref()) {
                Ok(v) => {
                    given.insert(name.to_string(), (v, origin));
                }
                Err(e) => {
                    refused.insert(name.to_string());
                    diags.push(diag(&origin, decl.sensitive, format!("variable `{name}` {e}")))
                }
            }
        }
    }

    for arg in &inputs.vars {
        let Some((name, raw)) = arg.split_once('=') else {
            let origin = Origin::Arg { what: "--var".into(), text: arg.clone(), at: 0 };
            diags.push(diag(&origin, true, "`--var` takes `name=value` (or `name=@FILE` to read the value from a file)".into()));
            continue;
        };
        let origin = Origin::Arg { what: "--var".into(), text: arg.clone(), at: name.len() + 1 };
        let Some(decl) = decls.get(name) else {
            diags.push(diag(
                &origin,
                true,
                format!(
                    "`--var {}`: {} declares no variable `{}` in `[variables]`{}",
                    shown(name),
                    src.file.display(),
                    shown(name),
                    suggest::did_you_mean(name, names(), str::to_string)
                ),
            ));
            continue;
        };
        read_from.remove(name);
        let text = if let Some(literal) = raw.strip_prefix("@@") {
            format!("@{literal}")
        } else if let Some(path) = raw.strip_prefix('@') {
            match crate::input::read_text(Path::new(path), crate::input::MAX_VAR_VALUE_FILE, "a `--var name=@FILE` value") {
                Ok(t) => t.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&t).to_string(),
                Err(e) => {
                    refused.insert(name.to_string());
                    diags.push(diag(&origin, false, format!("variable `{name}`: cannot read {path}: {}", e.reason())));
                    continue;
                }
            }
        } else {
            raw.to_string()
        };
        if let Some(path) = raw.strip_prefix('@').filter(|_| !raw.starts_with("@@")) {
            read_from.insert(name.to_string(), format!("(the {} bytes read from {path})", text.len()));
        }
        match from_text(decl, &text, hidden(decl, read_from.get(name))) {
            Ok(v) => {
                given.insert(name.to_string(), (v, origin));
            }
            Err(e) => {
                refused.insert(name.to_string());
                diags.push(diag(&origin, decl.sensitive, format!("variable `{name}` {e}")))
            }
        }
    }

    let mut out = Variables::default();
    for (name, decl) in &decls {
        let (value, origin) = match given.remove(name) {
            Some(g) => g,
            None => match &decl.default {
                Some((v, span)) => (v.clone(), Origin::File(src, span.clone())),
                None if refused.contains(name) => continue,
                None => {
                    diags.push(src.diagnostic(
                        decl.span.start,
                        format!(
                            "variable `{name}` has no value and no default: give it with `--var {name}=VALUE`, in a `--var-file`, or as the environment variable `{ENV_PREFIX}{name}`"
                        ),
                    ));
                    continue;
                }
            },
        };
        if let Err(e) = check(decl, &value, hidden(decl, read_from.get(name))) {
            diags.push(diag(&origin, decl.sensitive, format!("variable `{name}` {e}")));
            continue;
        }
        out.vars.insert(
            name.clone(),
            Variable {
                name: name.clone(),
                ty: decl.ty,
                description: decl.description.clone(),
                sensitive: decl.sensitive,
                location: src.location(decl.span.start),
                value,
            },
        );
    }
    out
}

fn declarations(src: &SourceMap, table: Option<&Spanned<DeValue<'_>>>, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, Decl> {
    let mut out = BTreeMap::new();
    let Some(table) = table else { return out };
    let DeValue::Table(t) = table.get_ref() else {
        diags.push(src.diagnostic(table.span().start, "`variables` must be a table: `[variables.NAME]` with `type = \"string\"`"));
        return out;
    };
    let err = |diags: &mut Vec<Diagnostic>, span: Range<usize>, m: String| diags.push(src.diagnostic(span.start, m));
    for (key, value) in t.iter() {
        let name = key.get_ref().to_string();
        if !refs::is_ident(&name) || name.contains('-') {
            err(
                diags,
                key.span(),
                format!("variable name `{}` must start with a letter or `_` and hold only letters, digits and `_`", shown(&name)),
            );
            continue;
        }
        let DeValue::Table(d) = value.get_ref() else {
            err(
                diags,
                value.span(),
                format!("variable `{name}` must be a table: `[variables.{name}]` with `type = \"string\"` (or number, bool, list, map)"),
            );
            continue;
        };
        let ty = match d.get("type").map(|v| (v.span(), v.get_ref())) {
            None => {
                err(diags, key.span(), format!("variable `{name}` has no `type`; one of: string, number, bool, list, map"));
                continue;
            }
            Some((span, DeValue::String(s))) => match VarType::parse(s) {
                Some(t) => t,
                None => {
                    let hint = suggest::did_you_mean(s, ["string", "number", "bool", "list", "map"], str::to_string);
                    err(diags, span, format!("unknown variable type `{}`; one of: string, number, bool, list, map{hint}", shown(s)));
                    continue;
                }
            },
            Some((span, other)) => {
                err(diags, span, format!("`type` must be a string, found {}", other.type_str()));
                continue;
            }
        };
        let mut decl = Decl {
            ty,
            description: None,
            sensitive: false,
            allowed: Vec::new(),
            pattern: None,
            min: None,
            max: None,
            default: None,
            span: key.span(),
        };
        let mut problems: Vec<(Range<usize>, String)> = Vec::new();
        for (k, v) in d.iter() {
            let key_name = k.get_ref().as_ref();
            match (key_name, v.get_ref()) {
                ("type", _) | ("default", _) => {}
                ("description", DeValue::String(s)) => decl.description = Some(s.to_string()),
                ("sensitive", DeValue::Boolean(b)) => decl.sensitive = *b,
                ("allowed", DeValue::Array(items)) => {
                    for item in items.iter() {
                        match from_toml(ty, item.get_ref()) {
                            Ok(x) => decl.allowed.push(x),
                            Err(e) => problems.push((item.span(), format!("`allowed` of variable `{name}`: each value {e}"))),
                        }
                    }
                }
                ("pattern", DeValue::String(s)) if ty == VarType::String => {
                    // Anchored: the whole value must match.
                    match regex_lite::Regex::new(&format!("^(?:{s})$")) {
                        Ok(re) => decl.pattern = Some((s.to_string(), re)),
                        Err(e) => problems.push((v.span(), format!("`pattern` is not a valid regular expression: {e}"))),
                    }
                }
                ("pattern", _) if ty != VarType::String => {
                    problems.push((v.span(), format!("`pattern` applies to string variables; `{name}` is a {}", ty.name())))
                }
                ("min" | "max", DeValue::Integer(_) | DeValue::Float(_)) if ty == VarType::Number => {
                    let n = from_toml(VarType::Number, v.get_ref()).ok().and_then(|n| n.as_f64());
                    if key_name == "min" {
                        decl.min = n;
                    } else {
                        decl.max = n;
                    }
                }
                ("min" | "max", _) if ty != VarType::Number => {
                    problems.push((v.span(), format!("`{key_name}` applies to number variables; `{name}` is a {}", ty.name())))
                }
                (other, found) if DECL_KEYS.contains(&other) => {
                    let want = match other {
                        "description" | "pattern" => "a string",
                        "sensitive" => "a boolean",
                        "allowed" => "an array of allowed values",
                        _ => "a number",
                    };
                    problems.push((v.span(), format!("`{other}` of variable `{name}` must be {want}, found {}", found.type_str())))
                }
                (other, _) => problems.push((
                    k.span(),
                    format!(
                        "unknown key `{}` in variable `{name}`; expected one of: {}{}",
                        shown(other),
                        DECL_KEYS.join(", "),
                        suggest::did_you_mean(other, DECL_KEYS.iter().copied(), str::to_string)
                    ),
                )),
            }
        }
        if let (Some(min), Some(max)) = (decl.min, decl.max)
            && min > max
        {
            problems.push((key.span(), format!("variable `{name}`: `min` ({min}) is above `max` ({max})")));
        }
        let mut ok = problems.is_empty();
        for (span, m) in problems {
            err(diags, span, m);
        }
        if ok && let Some(v) = d.get("default") {
            match from_toml(ty, v.get_ref()).and_then(|x| check(&decl, &x, hidden(&decl, None)).map(|()| x)) {
                Ok(x) => decl.default = Some((x, v.span())),
                Err(e) => {
                    let origin = Origin::File(src, v.span());
                    diags.push(diag(&origin, decl.sensitive, format!("the default of variable `{name}` {e}")));
                    ok = false;
                }
            }
        }
        if ok {
            out.insert(name, decl);
        }
    }
    out
}

/// What an error says instead of quoting a value: the sensitive marker for a sensitive variable, what
/// a value read from a file is (`read_from`: its length and path); `None`: the value may be quoted.
fn hidden<'a>(decl: &Decl, read_from: Option<&'a String>) -> Option<&'a str> {
    if decl.sensitive { Some(SENSITIVE) } else { read_from.map(String::as_str) }
}

/// The validations of a declaration: allowed values, pattern, range. Never quotes a sensitive value
/// nor one read from a file (`hidden` says what it is instead).
fn check(decl: &Decl, value: &Value, hidden: Option<&str>) -> Result<(), String> {
    let shown_value = |v: &Value| hidden.map_or_else(|| shown(&v.to_string()), str::to_string);
    if !decl.allowed.is_empty() && !decl.allowed.contains(value) {
        let allowed: Vec<String> = decl.allowed.iter().map(|v| if decl.sensitive { "…".into() } else { v.to_string() }).collect();
        return Err(format!("= {} is not allowed; one of: {}", shown_value(value), allowed.join(", ")));
    }
    if let (Some((pattern, re)), Some(s)) = (&decl.pattern, value.as_str())
        && !re.is_match(s)
    {
        return Err(format!("= {} does not match the pattern `{pattern}`", shown_value(value)));
    }
    if let Some(n) = value.as_f64()
        && (decl.min.is_some_and(|min| n < min) || decl.max.is_some_and(|max| n > max))
    {
        let bound = |b: Option<f64>| b.map_or(String::new(), |b| b.to_string());
        return Err(format!("= {} is out of range {}..={}", shown_value(value), bound(decl.min), bound(decl.max)));
    }
    Ok(())
}

/// A value written in TOML (a var file, a default), checked against `ty`.
fn from_toml(ty: VarType, v: &DeValue<'_>) -> Result<Value, String> {
    let value = to_json(v)?;
    if !ty.accepts(&value) {
        return Err(format!("must be {}, found {}", ty.describe(), v.type_str()));
    }
    literal(&value)?;
    Ok(value)
}

/// A value given as text (`--var`, the environment), read as `decl`'s type; an error quotes it only
/// when `hidden` is `None`.
fn from_text(decl: &Decl, text: &str, hidden: Option<&str>) -> Result<Value, String> {
    let value = match decl.ty {
        VarType::String => Value::String(text.to_string()),
        VarType::Number => {
            let t = text.trim();
            if let Ok(i) = t.parse::<i64>() {
                Value::from(i)
            } else {
                t.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(serde_json::Number::from_f64).map(Value::Number).ok_or_else(
                    || format!("must be a number, found {}", hidden.map_or_else(|| format!("`{}`", shown(text)), str::to_string)),
                )?
            }
        }
        VarType::Bool => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err("must be `true` or `false`".into()),
        },
        VarType::List | VarType::Map => {
            let parsed =
                DeValue::parse(text).map_err(|e| format!("must be {} written in TOML: {}", decl.ty.describe(), e.message().trim()))?;
            return from_toml(decl.ty, parsed.get_ref());
        }
    };
    literal(&value)?;
    Ok(value)
}

/// Variable values are literal: a `${` in one would be read as a reference once substituted.
fn literal(v: &Value) -> Result<(), String> {
    match v {
        Value::String(s) if s.contains("${") => Err("holds `${`: variable values are literal, they cannot hold references".into()),
        Value::Array(items) => items.iter().try_for_each(literal),
        Value::Object(map) => map.values().try_for_each(literal),
        _ => Ok(()),
    }
}

fn to_json(v: &DeValue<'_>) -> Result<Value, String> {
    Ok(match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map(Value::from).map_err(|_| "is out of range".to_string())?,
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "must be a finite number".to_string())?,
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect::<Result<_, _>>()?),
        DeValue::Table(t) => {
            let mut entries: Vec<_> = t.iter().collect();
            entries.sort_by_key(|(k, _)| k.span().start);
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(k.get_ref().to_string(), to_json(v.get_ref())?);
            }
            Value::Object(map)
        }
    })
}

/// A value as TOML inline text (to be read back as a [`DeValue`]).
fn to_toml(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f:?}")),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(items) => format!("[{}]", items.iter().map(to_toml).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{} = {}", serde_json::to_string(k).unwrap_or_default(), to_toml(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A value as text inside a longer string; `None` for lists and maps.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Each variable's value as TOML text, to be parsed once ([`Typed::new`]) and copied where a value
/// is exactly one reference.
pub(super) fn rendered(vars: &Variables) -> Vec<(String, String)> {
    vars.vars.iter().map(|(name, v)| (name.clone(), to_toml(&v.value))).collect()
}

/// The typed values, parsed from [`rendered`] text.
pub(super) struct Typed<'r> {
    values: HashMap<&'r str, DeValue<'r>>,
}

impl<'r> Typed<'r> {
    pub(super) fn new(rendered: &'r [(String, String)]) -> Typed<'r> {
        let values = rendered.iter().filter_map(|(name, text)| Some((name.as_str(), DeValue::parse(text).ok()?.into_inner()))).collect();
        Typed { values }
    }
}

/// Substitutes `${var.name}` in every value of the manifest but `[variables]`. A value that is exactly
/// one reference takes the variable's type; inside a longer string, a string, number or bool is
/// written as text. A sensitive variable may only be used in a secret field (`secret_environment`).
pub(super) fn substitute<'a>(
    src: &SourceMap,
    root: &mut DeTable<'a>,
    vars: &Variables,
    typed: &Typed<'a>,
    declared: &[String],
    diags: &mut Vec<Diagnostic>,
) {
    let mut s = Subst { src, vars, typed, declared, diags };
    for (key, value) in root.iter_mut() {
        match key.get_ref().as_ref() {
            "variables" => {}
            "resources" => {
                let DeValue::Table(resources) = value.get_mut() else { continue };
                for (_, res) in resources.iter_mut() {
                    let DeValue::Table(fields) = res.get_mut() else { continue };
                    let kind = fields.get("type").and_then(|t| t.get_ref().as_str()).and_then(Kind::from_type_name);
                    for (fname, fvalue) in fields.iter_mut() {
                        let secret = kind.is_some_and(|k| k.schema().is_secret(fname.get_ref()));
                        s.walk(fvalue, secret);
                    }
                }
            }
            _ => s.walk(value, false),
        }
    }
}

struct Subst<'s, 'a> {
    src: &'s SourceMap,
    vars: &'s Variables,
    typed: &'s Typed<'a>,
    declared: &'s [String],
    diags: &'s mut Vec<Diagnostic>,
}

/// A `${var.name}` found in a string: byte range and name.
struct VarRef {
    range: Range<usize>,
    name: String,
}

/// The `${var.…}` references of a string (`$${` is a literal `${`); other `${…}` are left alone.
fn scan(s: &str) -> Result<Vec<VarRef>, (usize, String)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if s[i..].starts_with("$${") {
            i += 3;
            continue;
        }
        if s[i..].starts_with("${var.") {
            let Some(end) = s[i..].find('}') else { return Err((i, "unterminated reference: `${` without `}`".into())) };
            let name = &s[i + 6..i + end];
            if !refs::is_ident(name) {
                return Err((i, format!("malformed variable reference `{}`: expected `${{var.NAME}}`", &s[i..i + end + 1])));
            }
            out.push(VarRef { range: i..i + end + 1, name: name.to_string() });
            i += end + 1;
            continue;
        }
        // The next character (`i` stays on a character boundary: the text may hold any UTF-8).
        i += s[i..].chars().next().map_or(1, char::len_utf8);
    }
    Ok(out)
}

impl<'a> Subst<'_, 'a> {
    fn err_at(&mut self, span: &Range<usize>, value: &str, offset: usize, message: String) {
        let raw = self.src.text.get(span.clone()).unwrap_or("");
        let needle = &value[offset..];
        let needle = &needle[..needle.find('}').map_or(needle.len(), |i| i + 1)];
        let at = raw.find(needle).map_or(span.start, |i| span.start + i);
        self.diags.push(self.src.diagnostic(at, message));
    }

    fn walk(&mut self, value: &mut Spanned<DeValue<'a>>, secret: bool) {
        let span = value.span();
        match value.get_mut() {
            DeValue::Array(items) => items.iter_mut().for_each(|i| self.walk(i, secret)),
            DeValue::Table(t) => t.iter_mut().for_each(|(_, v)| self.walk(v, secret)),
            DeValue::String(s) if s.contains("${var.") => {
                let text = s.to_string();
                if let Some(new) = self.string(&span, &text, secret) {
                    *value = new;
                }
            }
            _ => {}
        }
    }

    /// The value a string with variable references becomes; `None` on error (reported).
    fn string(&mut self, span: &Range<usize>, s: &str, secret: bool) -> Option<Spanned<DeValue<'a>>> {
        let found = match scan(s) {
            Ok(found) => found,
            Err((offset, message)) => {
                self.err_at(span, s, offset, message);
                return None;
            }
        };
        let mut ok = true;
        for r in &found {
            match self.vars.get(&r.name) {
                Some(v) if v.sensitive && !secret => {
                    self.err_at(
                        span,
                        s,
                        r.range.start,
                        format!(
                            "variable `{}` is sensitive: it can only be used in a secret field (`secret_environment`), never where it would be shown or stored (names, tags, outputs, plain fields)",
                            r.name
                        ),
                    );
                    ok = false;
                }
                Some(_) => {}
                None if self.declared.contains(&r.name) => ok = false, // its own error is reported already
                None => {
                    let hint = suggest::did_you_mean(&r.name, self.declared.iter().map(String::as_str), |c| format!("${{var.{c}}}"));
                    let message = if self.declared.is_empty() {
                        format!("reference `${{var.{}}}`: the manifest declares no `[variables]`", r.name)
                    } else {
                        format!("reference `${{var.{}}}` names no variable `{}` in `[variables]`{hint}", r.name, r.name)
                    };
                    self.err_at(span, s, r.range.start, message);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        // Exactly one reference: the variable's own type.
        if let [r] = found.as_slice()
            && r.range == (0..s.len())
        {
            let typed = self.typed.values.get(r.name.as_str())?.clone();
            return Some(respan(typed, span));
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for r in &found {
            out.push_str(&s[last..r.range.start]);
            let Some(text) = self.vars.get(&r.name).and_then(|v| as_text(&v.value)) else {
                let ty = self.vars.get(&r.name).map_or("list", |v| v.ty.name());
                self.err_at(
                    span,
                    s,
                    r.range.start,
                    format!(
                        "variable `{}` is a {ty}: a list or map can only be a whole value (`\"${{var.{}}}\"`), not part of a string",
                        r.name, r.name
                    ),
                );
                return None;
            };
            out.push_str(&text);
            last = r.range.end;
        }
        out.push_str(&s[last..]);
        Some(Spanned::new(span.clone(), DeValue::String(out.into())))
    }
}

/// `value` with every span set to `span` (the reference it replaces), so errors point there.
fn respan<'a>(value: DeValue<'a>, span: &Range<usize>) -> Spanned<DeValue<'a>> {
    let value = match value {
        DeValue::Array(mut items) => {
            for item in items.iter_mut() {
                let inner = std::mem::replace(item.get_mut(), DeValue::Boolean(false));
                *item = respan(inner, span);
            }
            DeValue::Array(items)
        }
        DeValue::Table(t) => {
            let mut out = DeTable::new();
            for (k, v) in t {
                out.insert(Spanned::new(span.clone(), k.into_inner()), respan(v.into_inner(), span));
            }
            DeValue::Table(out)
        }
        other => other,
    };
    Spanned::new(span.clone(), value)
}

/// Whether a TOML file is a manifest (has a top-level `[stack]`): a var file sitting next to manifests
/// is not. `None` when it is not TOML at all.
pub fn has_stack_table(text: &str) -> Option<bool> {
    DeTable::parse(text).ok().map(|t| t.get_ref().contains_key("stack"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, ManifestError, Options, parse_with};
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn scans_text_with_characters_of_several_bytes() {
        let refs = scan("${é.name}${var.prod_stage} ü ${var.b}é").expect("scan");
        assert_eq!(refs.iter().map(|r| (r.name.as_str(), r.range.clone())).collect::<Vec<_>>(), [("prod_stage", 10..27), ("b", 31..39)]);
        assert!(scan("é${var.}").is_err(), "a malformed reference after a multi-byte character is reported, not a panic");
    }

    const HEAD: &str = r#"
[stack]
name = "s-${var.env}"
name_prefix = "${var.env}-"

[variables.env]
type = "string"
allowed = ["dev", "prod"]

[variables.mem]
type = "number"
default = 128
min = 128
max = 10240

[variables.tags]
type = "map"
default = { team = "web" }

[variables.layers]
type = "list"
default = []

[variables.on]
type = "bool"
default = true

[variables.pw]
type = "string"
default = "changeme"
sensitive = true

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "logs"
tags = "${var.tags}"
enabled = "${var.on}"

[resources.role]
type = "aws_iam_role"
name = "role"
description = "role of ${var.env}, ${var.mem} MB"
depends_on = ["logs"]
[resources.role.assume_role_policy]
Version = "2012-10-17"
Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
"#;

    fn inputs(vars: &[&str], env: &[(&str, &str)], files: &[&Path]) -> Options {
        Options {
            variables: Inputs {
                vars: vars.iter().map(|s| s.to_string()).collect(),
                var_files: files.iter().map(|p| p.to_path_buf()).collect(),
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            ..Options::default()
        }
    }

    fn parse(text: &str, options: &Options) -> Result<Manifest, ManifestError> {
        parse_with(Path::new("/tmp/x/stack.toml"), text.to_string(), options)
    }

    fn errors(text: &str, options: &Options) -> String {
        parse(text, options).unwrap_err().to_string()
    }

    #[test]
    fn a_whole_reference_takes_the_variables_type_and_a_longer_string_interpolates_text() {
        let m = parse(HEAD, &inputs(&["env=dev", "mem=512", r#"tags={ team = "api", cost = "7" }"#], &[], &[])).unwrap();
        assert_eq!(m.stack, "s-dev");
        let logs = m.resource("logs").unwrap();
        assert_eq!(logs.attrs["name"], json!("dev-logs"), "name_prefix is put before physical names");
        assert_eq!(logs.attrs["tags"]["team"], json!("api"));
        assert_eq!(logs.attrs["tags"]["cost"], json!("7"));
        let role = m.resource("role").unwrap();
        assert_eq!(role.attrs["name"], json!("dev-role"));
        assert_eq!(role.attrs["description"], json!("role of dev, 512 MB"));
        assert!(role.deps.contains("logs"));
        assert_eq!(m.variables.get("mem").unwrap().value, json!(512));
        // A number variable as an integer field: typed, and checked against the field's range.
        let text = format!(
            "{HEAD}\n[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"h\"\nrole = \"${{role.arn}}\"\ncode = \"/dev/null\"\nmemory_size = \"${{var.mem}}\"\n"
        );
        let e = errors(&text, &inputs(&["env=dev", "mem=20000"], &[], &[]));
        assert!(e.contains("variable `mem` = 20000 is out of range 128..=10240"), "{e}");
        let e = errors(&text.replace("\"${var.mem}\"", "\"${var.on}\""), &inputs(&["env=dev"], &[], &[]));
        assert!(e.contains("`memory_size` must be"), "{e}");
        assert!(e.contains("found boolean"), "{e}");
    }

    #[test]
    fn a_value_read_from_a_file_is_never_quoted_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shadow");
        std::fs::write(&file, "root:$6$s3cr3t-hash-7f:19000:0:99999:7:::\n").unwrap();
        let arg = format!("env=@{}", file.display());
        let e = errors(HEAD, &inputs(&[&arg], &[], &[]));
        assert!(e.contains(&format!("variable `env` = (the 41 bytes read from {}) is not allowed", file.display())), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("root:"), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", &format!("mem=@{}", file.display())], &[], &[]));
        assert!(e.contains("variable `mem` must be a number, found (the 41 bytes read from"), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("root:"), "{e}");
        // Given on the command line, a value is quoted (the user typed it).
        let e = errors(HEAD, &inputs(&["env=staging"], &[], &[]));
        assert!(e.contains("variable `env` = \"staging\" is not allowed"), "{e}");
    }

    #[test]
    fn precedence_is_default_then_environment_then_var_files_in_order_then_var() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(&a, "env = \"dev\"\nmem = 256\n").unwrap();
        std::fs::write(&b, "mem = 384\n").unwrap();
        let value = |o: &Options, name: &str| parse(HEAD, o).unwrap().variables.get(name).unwrap().value.clone();
        assert_eq!(value(&inputs(&["env=dev"], &[], &[]), "mem"), json!(128), "the default");
        assert_eq!(value(&inputs(&["env=dev"], &[("mem", "200")], &[]), "mem"), json!(200), "environment over default");
        assert_eq!(value(&inputs(&[], &[("mem", "200")], &[&a]), "mem"), json!(256), "var file over environment");
        assert_eq!(value(&inputs(&[], &[("mem", "200")], &[&a, &b]), "mem"), json!(384), "a later var file over an earlier");
        assert_eq!(value(&inputs(&["mem=999"], &[("mem", "200")], &[&b, &a]), "mem"), json!(999), "--var over all");
        assert_eq!(value(&inputs(&["mem=1000", "mem=1001", "env=prod"], &[], &[]), "mem"), json!(1001), "the last --var");
        // The environment is shared by every manifest: a variable this one does not declare is ignored.
        assert_eq!(value(&inputs(&["env=dev"], &[("unrelated", "x")], &[]), "env"), json!("dev"));
        // name=@FILE reads the value from a file (one trailing newline dropped); @@ is a literal @.
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let o = inputs(&["env=dev", &format!("pw=@{}", secret.display())], &[], &[]);
        assert_eq!(value(&o, "pw"), json!("from-a-file"));
        assert_eq!(value(&inputs(&["env=dev", "pw=@@literal"], &[], &[]), "pw"), json!("@literal"));
    }

    #[test]
    fn missing_ill_typed_unknown_and_invalid_values_point_at_their_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("dev.toml");
        std::fs::write(&vars, "env = \"dev\"\n\nmem = \"lots\"\nmme = 5\n").unwrap();
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "pw = \"s3cret-unterminated\n").unwrap();
        let e = errors(HEAD, &inputs(&["env=dev"], &[], &[&broken]));
        assert!(e.contains("broken.toml:1:26: error: invalid TOML in var file"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "pww = \"s3cret-typo\"\n").unwrap();
        let e = errors(HEAD, &inputs(&["env=dev"], &[], &[&typo]));
        assert!(e.contains("typo.toml:1:1: error: var file sets `pww`") && e.contains("did you mean `pw`?"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = errors(HEAD, &inputs(&[], &[], &[]));
        assert!(e.contains("/tmp/x/stack.toml:6:12: error: variable `env` has no value and no default"), "{e}");
        let e = errors(HEAD, &inputs(&[], &[], &[&vars]));
        assert!(e.contains(&format!("{}:3:7: error: variable `mem` must be a number, found string", vars.display())), "{e}");
        assert!(e.contains(&format!("{}:4:1: error: var file sets `mme`", vars.display())), "{e}");
        assert!(e.contains("did you mean `mem`?"), "{e}");
        let e = errors(HEAD, &inputs(&["env=staging"], &[], &[]));
        assert!(e.contains("variable `env` = \"staging\" is not allowed; one of: \"dev\", \"prod\""), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", "on=yes"], &[], &[]));
        assert!(e.contains("variable `on` must be `true` or `false`"), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", "mem=64"], &[], &[]));
        assert!(e.contains("--var:1:5: error: variable `mem` = 64 is out of range 128..=10240"), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", "envv=x"], &[], &[]));
        assert!(e.contains("declares no variable `envv`") && e.contains("did you mean `env`?"), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", "tags=[1]"], &[], &[]));
        assert!(e.contains("variable `tags` must be a map"), "{e}");
        let e = errors(&HEAD.replace("\"role of ${var.env}", "\"role of ${var.evn}"), &inputs(&["env=dev"], &[], &[]));
        assert!(e.contains("names no variable `evn`") && e.contains("did you mean `${var.env}`?"), "{e}");
        assert!(e.contains("stack.toml:42:24:"), "{e}");
        let e = errors(&HEAD.replace("\"role of ${var.env}", "\"role of ${var.tags}"), &inputs(&["env=dev"], &[], &[]));
        assert!(e.contains("variable `tags` is a map: a list or map can only be a whole value"), "{e}");
        let e = errors(HEAD, &inputs(&["env=dev", "pw=${role.arn}"], &[], &[]));
        assert!(e.contains("variable values are literal"), "{e}");
        let bad_decl = HEAD.replace("min = 128\n", "min = 128\nmxa = 3\n").replace("type = \"map\"", "type = \"dict\"");
        let e = errors(&bad_decl, &inputs(&["env=dev"], &[], &[]));
        assert!(e.contains("unknown key `mxa` in variable `mem`") && e.contains("did you mean `max`?"), "{e}");
        assert!(e.contains("unknown variable type `dict`"), "{e}");
    }

    #[test]
    fn a_sensitive_value_is_usable_only_in_secret_fields_and_never_shown_in_errors() {
        let text = format!(
            "{HEAD}\n[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"h\"\nrole = \"${{role.arn}}\"\ncode = \"/dev/null\"\nsecret_environment = {{ PW = \"${{var.pw}}\" }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.py"), "def h(e, c): pass\n").unwrap();
        let text = text.replace("code = \"/dev/null\"", "code = \".\"");
        let m = parse_with(&dir.path().join("stack.toml"), text.clone(), &inputs(&["env=dev", "pw=hunter2-s3cret"], &[], &[])).unwrap();
        assert_eq!(m.resource("fn").unwrap().attrs["secret_environment"]["PW"], json!("hunter2-s3cret"));
        assert!(!format!("{:?}", m.variables).contains("hunter2-s3cret"), "Debug of the variables masks it");
        let e =
            errors(&text.replace("secret_environment = { PW", "environment = { PW"), &inputs(&["env=dev", "pw=hunter2-s3cret"], &[], &[]));
        assert!(e.contains("variable `pw` is sensitive"), "{e}");
        let e = errors(&format!("{text}\n[outputs]\nleak = \"${{var.pw}}\"\n"), &inputs(&["env=dev", "pw=hunter2-s3cret"], &[], &[]));
        assert!(e.contains("variable `pw` is sensitive"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let sensitive_number = HEAD.replace("type = \"number\"\ndefault = 128", "type = \"number\"\nsensitive = true\ndefault = 128");
        let e = errors(&sensitive_number, &inputs(&["env=dev", "mem=s3cret-typo"], &[], &[]));
        assert!(e.contains("variable `mem` must be a number, found (sensitive)"), "{e}");
        assert!(!e.contains("s3cret-typo"), "{e}");
        assert!(!format!("{:?}", inputs(&["pw=hunter2"], &[("pw", "hunter3")], &[])).contains("hunter"));
    }

    #[test]
    fn a_disabled_resource_is_left_out_its_depends_on_entries_dropped_and_references_refused() {
        let m = parse(HEAD, &inputs(&["env=dev", "on=false"], &[], &[])).unwrap();
        assert!(m.resource("logs").is_none());
        assert_eq!(m.disabled, vec!["logs".to_string()]);
        assert!(m.resource("role").unwrap().deps.is_empty(), "the depends_on entry is dropped");
        let text = HEAD.replace("description = \"role of", "tags = { x = \"${logs.arn}\" }\ndescription = \"role of");
        let e = errors(&text, &inputs(&["env=dev", "on=false"], &[], &[]));
        assert!(e.contains("resource `logs` is switched off"), "{e}");
        assert!(e.contains("stack.toml:42:15:"), "{e}");
        let e = errors(&HEAD.replace("enabled = \"${var.on}\"", "enabled = \"no\""), &inputs(&["env=dev"], &[], &[]));
        assert!(e.contains("`enabled` must be a boolean"), "{e}");
    }
}
