//! Manifest layer: TOML → validated desired resources with their reference graph.
//!
//! Everything here is checked before any AWS call: unknown types and fields, missing required fields,
//! wrong value types, dangling references, reference cycles and duplicate physical names. Each problem
//! is a [`Diagnostic`] pointing at file:line:column.

pub mod error;
pub mod json_schema;
mod mask;
pub mod refs;
pub mod schema;
pub mod suggest;
pub mod variables;

pub use crate::artifact;
pub use crate::providers::rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use crate::artifact::Artifact;
pub use error::{DEFAULT_MANIFEST, Diagnostic, Location, ManifestError, SourceMap};
pub use schema::{Field, FieldType, Kind};

/// Tag keys the engine puts on everything it creates.
pub const TAG_STACK: &str = "reconcile:stack";
pub const TAG_MANAGED_BY: &str = "reconcile:managed-by";
pub const TAG_RESOURCE: &str = "reconcile:resource";
pub const MANAGED_BY: &str = "reconcile";

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub stack: String,
    /// In file order.
    pub resources: Vec<Resource>,
    /// Stack outputs: name → string with references.
    pub outputs: BTreeMap<String, String>,
    /// `[stack] remediate = true`: `reconcile watch` repairs this stack's drift (as `--remediate` does).
    pub remediate: bool,
    /// `[stack] tags`: added to every taggable resource, under the resource's own tags (already merged
    /// into each resource's `tags`; kept here for display).
    pub stack_tags: BTreeMap<String, String>,
    /// `[[moved]]` entries: state recorded under `from` now belongs to `to`.
    pub moved: Vec<Moved>,
    /// `[variables]` with the values this run was given (sensitive ones masked in `Debug`).
    pub variables: variables::Variables,
    /// Resources switched off with `enabled = false`: not planned (a state record of one is deleted).
    pub disabled: Vec<String>,
    /// Every declared resource with `protect = true`, switched on or off: its record is never deleted
    /// or replaced while the flag is there.
    pub protected: BTreeSet<String>,
    /// The variable values it was loaded with (`--var`, var files, environment), to load it again alike.
    pub inputs: variables::Inputs,
}

/// A `[[moved]]` entry while it is checked: with the spans of the entry, `from` and `to`.
type MovedEntry = (Moved, Range<usize>, Range<usize>, Range<usize>);

/// One `[[moved]]` entry: the resource key `from` was renamed to `to` in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: String,
    pub to: String,
    pub location: Location,
}

/// The field paths `ignore_changes` names: a field, one key of a table field (`tags.owner`), or
/// every field (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreChanges {
    /// `*`: every field (except the ownership tags, which reconcile always keeps).
    pub all: bool,
    /// Field names and `field.key` paths.
    pub paths: BTreeSet<String>,
}

impl IgnoreChanges {
    pub fn is_empty(&self) -> bool {
        !self.all && self.paths.is_empty()
    }

    /// Whether a plan field path (`memory_size`, `tags.owner`, `code_sha256`) is ignored. The
    /// ownership tags never are: reconcile must always be able to tell what it owns.
    pub fn covers(&self, path: &str) -> bool {
        let (top, key) = path.split_once('.').map_or((path, None), |(t, k)| (t, Some(k)));
        if top == "tags" && key.is_some_and(|k| k.starts_with("reconcile:")) {
            return false;
        }
        if self.all {
            return true;
        }
        // A function's code is compared by the hash of its zip: ignoring `code` ignores that hash.
        let top = if top == schema::CODE_SHA256 { "code" } else { top };
        self.paths.contains(top) || self.paths.contains(path)
    }
}

/// One desired resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub kind: Kind,
    /// Attributes with defaults filled in; strings may still hold `${resource.output}` references.
    pub attrs: Map<String, Value>,
    /// Resources this one depends on (references and `depends_on`).
    pub deps: BTreeSet<String>,
    /// Refuse to delete or replace it.
    pub protect: bool,
    /// `ignore_changes`: fields plan, apply and watch leave as they are in AWS once it exists.
    pub ignore_changes: IgnoreChanges,
    /// `retain_on_delete = true`: on destroy, or once it leaves the manifest, reconcile forgets it and
    /// leaves it in AWS (without its ownership tags).
    pub retain_on_delete: bool,
    pub location: Location,
    /// Zipped code, for kinds that carry code.
    pub artifact: Option<Artifact>,
}

impl Manifest {
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The secret values of a run of this manifest: every value of a field its kind marks secret
    /// (each value of a `secret_environment`), and of every sensitive variable, to be kept out of
    /// what leaves the process (AWS errors, logs, the journal, `--json`).
    pub fn secrets(&self) -> crate::redact::Secrets {
        fn leaves(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
                Value::Object(m) => m.values().for_each(|i| leaves(i, out)),
                Value::Null => {}
                other => out.push(other.to_string()),
            }
        }
        let mut values = Vec::new();
        for r in &self.resources {
            for field in r.kind.schema().secret_fields() {
                if let Some(v) = r.attrs.get(field.name) {
                    leaves(v, &mut values);
                }
            }
        }
        for v in self.variables.vars.values().filter(|v| v.sensitive) {
            leaves(&v.value, &mut values);
        }
        crate::redact::Secrets::new(values)
    }
}

impl Resource {
    /// The physical name written in the manifest (a literal, or a reference before apply).
    pub fn physical_name(&self) -> Option<&str> {
        self.attrs.get(self.kind.schema().physical_name).and_then(Value::as_str)
    }
}

/// What the command line (never the manifest) allows a manifest to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Folders outside the manifest's own folder tree that Lambda code may come from.
    pub allow_code_from: Vec<PathBuf>,
    /// Values of the manifest's `[variables]`: `--var`, `--var-file` and `RECONCILE_VAR_*`.
    pub variables: variables::Inputs,
}

static DEFAULT_OPTIONS: std::sync::OnceLock<Options> = std::sync::OnceLock::new();

/// Sets the options [`load`] and [`parse`] use, once, from the command line at start; later calls
/// are ignored. Without it, the defaults hold (code only from the manifest's folder tree).
pub fn set_default_options(options: Options) {
    let _ = DEFAULT_OPTIONS.set(options);
}

fn default_options() -> Options {
    DEFAULT_OPTIONS.get().cloned().unwrap_or_default()
}

/// The options [`load`] uses, with `var_files` read after the command line's own var files (and
/// before its `--var`s): one environment of a manifest `watch` follows.
pub fn options_with_var_files(var_files: &[PathBuf]) -> Options {
    let mut options = default_options();
    options.variables.var_files.extend(var_files.iter().cloned());
    options
}

/// Validates a new version of `previous`'s file with the variable values `previous` was loaded with.
pub fn parse_like(path: &Path, text: String, previous: &Manifest) -> Result<Manifest, ManifestError> {
    let options = Options { variables: previous.inputs.clone(), ..default_options() };
    parse_with(path, text, &options)
}

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    load_with(path, &default_options())
}

/// [`load`] with explicit options.
pub fn load_with(path: &Path, options: &Options) -> Result<Manifest, ManifestError> {
    let text = match crate::input::read_text(path, crate::input::MAX_MANIFEST, "a manifest") {
        Ok(text) => text,
        Err(crate::input::InputError::NotUtf8 { path, line, column, detail }) => {
            let location = Location { file: path, line, column };
            return Err(ManifestError::Invalid(vec![Diagnostic { location, message: detail, snippet: String::new(), caret: column }]));
        }
        Err(e) => return Err(ManifestError::Read(e)),
    };
    parse_with(path, text, options)
}

/// Validates manifest text; `path` names the file in messages and anchors relative code paths.
pub fn parse(path: &Path, text: String) -> Result<Manifest, ManifestError> {
    parse_with(path, text, &default_options())
}

/// [`parse`] with explicit options.
pub fn parse_with(path: &Path, text: String, options: &Options) -> Result<Manifest, ManifestError> {
    let src = SourceMap::new(path, text);
    let mut v = Validator { src: &src, diags: Vec::new(), options, name_prefix: String::new() };
    let manifest = v.manifest();
    if v.diags.is_empty()
        && let Some(m) = manifest
    {
        return Ok(m);
    }
    let mut diags = v.diags;
    mask::mask_secrets(&src, &mut diags);
    diags.sort_by_key(|d| (d.location.line, d.location.column));
    diags.dedup();
    Err(ManifestError::Invalid(diags))
}

struct Validator<'a> {
    src: &'a SourceMap,
    diags: Vec<Diagnostic>,
    options: &'a Options,
    /// `[stack] name_prefix`: put before every physical name.
    name_prefix: String,
}

/// A resource table before references are checked.
struct Draft {
    name: String,
    kind: Kind,
    attrs: Map<String, Value>,
    /// Each string value's span, to point reference errors at them.
    string_spans: Vec<(Range<usize>, String)>,
    explicit_deps: Vec<(String, Range<usize>)>,
    protect: bool,
    ignore_changes: IgnoreChanges,
    retain_on_delete: bool,
    header: usize,
    /// Each field's value span, to point identity errors at them.
    field_spans: HashMap<&'static str, Range<usize>>,
    artifact: Option<Artifact>,
    /// `enabled = false`: checked, then left out of the manifest.
    enabled: bool,
}

impl<'a> Validator<'a> {
    fn err(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.diags.push(self.src.diagnostic(span.start, message));
    }

    fn manifest(&mut self) -> Option<Manifest> {
        let root = match DeTable::parse(&self.src.text) {
            Ok(root) => root,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let msg = e.message().trim().to_string();
                self.diags.push(self.src.diagnostic(offset, format!("invalid TOML: {msg}")));
                return None;
            }
        };
        let root_span = root.span();
        let root = root.into_inner();
        // Variables are known before anything else: substitute them, then check the result as if it
        // had been written so (errors still point at the `${var.name}` in the manifest).
        let vars = variables::resolve(self.src, root.get("variables"), &self.options.variables, &mut self.diags);
        let declared: Vec<String> = match root.get("variables").map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        };
        let rendered = variables::rendered(&vars);
        let typed = variables::Typed::new(&rendered);
        let mut root = root;
        variables::substitute(self.src, &mut root, &vars, &typed, &declared, &mut self.diags);
        // A value that did not resolve would only repeat the variable's own error further on. A file
        // without a `[stack]` (empty, or not a manifest at all) is said first, though: that, not a
        // `--var` it does not declare, is what is wrong.
        if !self.diags.is_empty() {
            if root.get("stack").is_none() {
                self.err(&root_span, "missing `[stack]` table with `name = \"...\"`");
            }
            return None;
        }
        let mut stack = None;
        let mut resources_table = None;
        let mut outputs_table = None;
        let mut moved_table = None;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "stack" => stack = Some(value),
                "resources" => resources_table = Some(value),
                "outputs" => outputs_table = Some(value),
                "moved" => moved_table = Some(value),
                "variables" => {}
                other => self.err(
                    &key.span(),
                    format!(
                        "unknown top-level key `{other}`; expected `stack`, `variables`, `resources`, `outputs` or `[[moved]]`{}",
                        suggest::did_you_mean(other, ["stack", "variables", "resources", "outputs", "moved"], str::to_string)
                    ),
                ),
            }
        }
        let mut remediate = false;
        let mut stack_tags = BTreeMap::new();
        let stack_name = match stack {
            None => {
                self.err(&root_span, "missing `[stack]` table with `name = \"...\"`");
                None
            }
            Some(v) => self.stack(v, &mut remediate, &mut stack_tags),
        };
        let mut drafts = Vec::new();
        match resources_table {
            None => self.err(&root_span, "missing `[resources]`: a manifest declares at least one resource"),
            Some(v) => match v.get_ref() {
                DeValue::Table(t) => {
                    for (key, value) in t.iter() {
                        if let Some(d) = self.resource(key, value) {
                            drafts.push(d);
                        }
                    }
                }
                other => self.err(&v.span(), format!("`resources` must be a table, found {}", other.type_str())),
            },
        }
        drafts.sort_by_key(|d| d.header);
        // Switched off: checked like the others, then gone (a reference to one is an error, a
        // `depends_on` entry naming one is dropped).
        let disabled: BTreeSet<String> = drafts.iter().filter(|d| !d.enabled).map(|d| d.name.clone()).collect();
        let protected: BTreeSet<String> = drafts.iter().filter(|d| d.protect).map(|d| d.name.clone()).collect();
        drafts.retain(|d| d.enabled);
        let outputs = outputs_table.map(|t| self.outputs(t)).unwrap_or_default();
        let moved = moved_table.map(|t| self.moved(t, &drafts)).unwrap_or_default();
        // Stack tags count against each resource's limit like its own tags.
        for d in drafts.iter().filter(|d| d.kind.schema().taggable) {
            let own = d.attrs.get("tags").and_then(Value::as_object);
            let merged = stack_tags.keys().filter(|k| !own.is_some_and(|o| o.contains_key(*k))).count() + own.map_or(0, Map::len);
            let user_tags = rules::MAX_TAGS - rules::OWNERSHIP_TAGS;
            // (Too many of its own is reported at its `tags` already.)
            if merged > user_tags && own.map_or(0, Map::len) <= user_tags {
                let header = d.header;
                self.err(
                    &(header..header),
                    format!(
                        "resource `{}` has {merged} tags with the stack's `[stack] tags`: AWS allows {} per resource and reconcile adds {} ownership tags, so at most {user_tags}",
                        d.name,
                        rules::MAX_TAGS,
                        rules::OWNERSHIP_TAGS
                    ),
                );
            }
        }
        let resources = self.link(drafts, &outputs, &disabled);
        let stack = stack_name?;
        let resources = resources?;
        let resources = resources
            .into_iter()
            .map(|mut r| {
                if r.kind.schema().taggable {
                    add_stack_tags(&mut r.attrs, &stack_tags);
                    add_ownership_tags(&mut r.attrs, &stack, &r.name);
                }
                r
            })
            .collect();
        Some(Manifest {
            path: self.src.file.clone(),
            stack,
            resources,
            outputs: outputs.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            remediate,
            stack_tags,
            moved,
            variables: vars,
            disabled: disabled.into_iter().collect(),
            protected,
            inputs: self.options.variables.clone(),
        })
    }

    /// `[[moved]]` entries: each names a `from` key and a `to` key the manifest declares; no two
    /// entries move from (or to) the same key, and no entry moves from a key another moves to (a chain).
    fn moved(&mut self, value: &Spanned<DeValue<'_>>, drafts: &[Draft]) -> Vec<Moved> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(&value.span(), "`moved` must be an array of tables: `[[moved]]` with `from = \"old_key\"` and `to = \"new_key\"`");
            return Vec::new();
        };
        let mut entries: Vec<MovedEntry> = Vec::new();
        for item in items {
            let DeValue::Table(t) = item.get_ref() else {
                self.err(&item.span(), "each `[[moved]]` entry must be a table with `from` and `to`");
                continue;
            };
            let mut from = None;
            let mut to = None;
            for (k, v) in t.iter() {
                let slot = match k.get_ref().as_ref() {
                    "from" => &mut from,
                    "to" => &mut to,
                    other => {
                        self.err(&k.span(), format!("unknown key `{other}` in `[[moved]]`; expected `from` and `to`"));
                        continue;
                    }
                };
                match v.get_ref() {
                    DeValue::String(s) if refs::is_ident(s) => *slot = Some((s.to_string(), v.span())),
                    DeValue::String(s) => self.err(&v.span(), format!("`{}` is not a resource key", shown(s))),
                    other => {
                        self.err(&v.span(), format!("`{}` must be a resource key (a string), found {}", k.get_ref(), other.type_str()))
                    }
                }
            }
            let (Some((from, from_span)), Some((to, to_span))) = (from, to) else {
                if !self.diags.iter().any(|d| d.location.line == self.src.location(item.span().start).line) {
                    self.err(&item.span(), "a `[[moved]]` entry needs both `from = \"old_key\"` and `to = \"new_key\"`");
                }
                continue;
            };
            let location = self.src.location(item.span().start);
            entries.push((Moved { from, to, location }, item.span(), from_span, to_span));
        }
        let declared = |name: &str| drafts.iter().any(|d| d.name == name);
        let mut out = Vec::new();
        for (i, (m, _, from_span, to_span)) in entries.iter().enumerate() {
            let earlier = &entries[..i];
            if m.from == m.to {
                self.err(from_span, format!("`[[moved]]` from `{}` to itself", m.from));
            } else if let Some((other, ..)) = entries.iter().find(|(o, ..)| o.to == m.from || o.from == m.to) {
                self.err(
                    from_span,
                    format!(
                        "`[[moved]]` entries form a chain (`{}` → `{}` and `{}` → `{}`, line {}): move each old key straight to its final key",
                        m.from, m.to, other.from, other.to, other.location.line
                    ),
                );
            } else if !declared(&m.to) {
                self.err(to_span, format!("`[[moved]]` to `{}`: the manifest declares no resource `{}`", m.to, m.to));
            } else if declared(&m.from) {
                self.err(
                    from_span,
                    format!(
                        "`[[moved]]` from `{}`: the manifest still declares `{}`; a moved key must be gone from `[resources]`",
                        m.from, m.from
                    ),
                );
            } else if let Some((first, ..)) = earlier.iter().find(|(o, ..)| o.from == m.from) {
                self.err(
                    from_span,
                    format!(
                        "`[[moved]]` from `{}` again: the entry at line {} already moves it (to `{}`)",
                        m.from, first.location.line, first.to
                    ),
                );
            } else if let Some((first, ..)) = earlier.iter().find(|(o, ..)| o.to == m.to) {
                self.err(
                    to_span,
                    format!(
                        "`[[moved]]` to `{}` again: the entry at line {} already moves `{}` to it",
                        m.to, first.location.line, first.from
                    ),
                );
            } else {
                out.push(m.clone());
            }
        }
        out
    }

    fn stack(&mut self, value: &Spanned<DeValue<'_>>, remediate: &mut bool, tags: &mut BTreeMap<String, String>) -> Option<String> {
        let DeValue::Table(t) = value.get_ref() else {
            self.err(&value.span(), "`stack` must be a table with `name = \"...\"`");
            return None;
        };
        let mut name = None;
        for (key, v) in t.iter() {
            match key.get_ref().as_ref() {
                "name" => match v.get_ref() {
                    DeValue::String(s) if is_stack_name(s) => name = Some(s.to_string()),
                    DeValue::String(_) => self.err(&v.span(), "stack name must be 1-64 characters: letters, digits, `-` and `_`"),
                    other => self.err(&v.span(), format!("`stack.name` must be a string, found {}", other.type_str())),
                },
                "description" => {}
                "name_prefix" => match v.get_ref() {
                    DeValue::String(s) if s.is_empty() || is_stack_name(s) => self.name_prefix = s.to_string(),
                    DeValue::String(_) => {
                        self.err(&v.span(), "`stack.name_prefix` must be up to 64 characters: letters, digits, `-` and `_`")
                    }
                    other => self.err(&v.span(), format!("`stack.name_prefix` must be a string, found {}", other.type_str())),
                },
                "remediate" => match v.get_ref() {
                    DeValue::Boolean(b) => *remediate = *b,
                    other => self.err(&v.span(), format!("`stack.remediate` must be a boolean, found {}", other.type_str())),
                },
                "tags" => match v.get_ref() {
                    DeValue::Table(t) => {
                        for (k, tv) in t.iter() {
                            let key = k.get_ref();
                            if key.starts_with("reconcile:") {
                                self.err(&k.span(), format!("tag key `{key}` is reserved: the `reconcile:` prefix marks ownership"));
                                continue;
                            }
                            if let Err(e) = rules::tag_key(key) {
                                self.err(&k.span(), format!("tag key `{}` {e}", shown(key)));
                                continue;
                            }
                            match tv.get_ref() {
                                DeValue::String(s) if s.contains("${") => self.err(
                                    &tv.span(),
                                    "stack tags are literal strings: a `${...}` reference belongs in a resource's own `tags`",
                                ),
                                DeValue::String(s) => match rules::tag_value(s) {
                                    Ok(()) => {
                                        tags.insert(key.to_string(), s.to_string());
                                    }
                                    Err(e) => self.err(&tv.span(), format!("the value of tag `{}` {e}", shown(key))),
                                },
                                other => self.err(&tv.span(), format!("`stack.tags.{key}` must be a string, found {}", other.type_str())),
                            }
                        }
                    }
                    other => self.err(&v.span(), format!("`stack.tags` must be a table of strings, found {}", other.type_str())),
                },
                other => self.err(
                    &key.span(),
                    format!(
                        "unknown key `{other}` in `[stack]`; expected `name`, `name_prefix`, `description`, `remediate` or `tags`{}",
                        suggest::did_you_mean(other, ["name", "name_prefix", "description", "remediate", "tags"], str::to_string)
                    ),
                ),
            }
        }
        if name.is_none() && !self.diags.iter().any(|d| d.message.starts_with("stack name")) {
            self.err(&value.span(), "`[stack]` needs `name = \"...\"`");
        }
        name
    }

    fn outputs(&mut self, value: &Spanned<DeValue<'_>>) -> BTreeMap<String, (String, Range<usize>)> {
        let mut out = BTreeMap::new();
        let DeValue::Table(t) = value.get_ref() else {
            self.err(&value.span(), "`outputs` must be a table of strings");
            return out;
        };
        for (key, v) in t.iter() {
            match v.get_ref() {
                DeValue::String(s) => {
                    out.insert(key.get_ref().to_string(), (s.to_string(), v.span()));
                }
                other => self.err(&v.span(), format!("output `{}` must be a string, found {}", key.get_ref(), other.type_str())),
            }
        }
        out
    }

    fn resource(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>) -> Option<Draft> {
        let name = key.get_ref().to_string();
        if !refs::is_ident(&name) {
            self.err(
                &key.span(),
                format!("resource name `{name}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"),
            );
        }
        let DeValue::Table(table) = value.get_ref() else {
            self.err(&value.span(), format!("resource `{name}` must be a table"));
            return None;
        };
        let header = key.span().start;
        let Some(type_value) = table.get("type") else {
            self.err(&key.span(), format!("resource `{name}` has no `type`; one of: {}", type_list()));
            return None;
        };
        let kind = match type_value.get_ref() {
            DeValue::String(t) => match Kind::from_type_name(t) {
                Some(k) => k,
                None => {
                    let types = Kind::ALL.iter().map(|k| k.type_name());
                    self.err(
                        &type_value.span(),
                        format!("unknown resource type `{t}`; one of: {}{}", type_list(), suggest::did_you_mean(t, types, str::to_string)),
                    );
                    return None;
                }
            },
            other => {
                self.err(&type_value.span(), format!("`type` must be a string, found {}", other.type_str()));
                return None;
            }
        };
        let schema = kind.schema();
        let mut draft = Draft {
            name: name.clone(),
            kind,
            attrs: Map::new(),
            string_spans: Vec::new(),
            explicit_deps: Vec::new(),
            protect: false,
            ignore_changes: IgnoreChanges::default(),
            retain_on_delete: false,
            header,
            field_spans: HashMap::new(),
            artifact: None,
            enabled: true,
        };
        let mut failed = BTreeSet::new();
        for (fkey, fvalue) in table.iter() {
            let fname = fkey.get_ref().as_ref();
            match fname {
                "type" => continue,
                "enabled" => match fvalue.get_ref() {
                    DeValue::Boolean(b) => draft.enabled = *b,
                    other => self.err(
                        &fvalue.span(),
                        format!("`enabled` must be a boolean (or `\"${{var.NAME}}\"` of a bool variable), found {}", other.type_str()),
                    ),
                },
                "protect" => match fvalue.get_ref() {
                    DeValue::Boolean(b) => draft.protect = *b,
                    other => self.err(&fvalue.span(), format!("`protect` must be a boolean, found {}", other.type_str())),
                },
                "depends_on" => match self.string_list(fvalue) {
                    Some(items) => draft.explicit_deps = items,
                    None => self.err(&fvalue.span(), "`depends_on` must be an array of resource names"),
                },
                "retain_on_delete" => match fvalue.get_ref() {
                    DeValue::Boolean(b) => draft.retain_on_delete = *b,
                    other => self.err(&fvalue.span(), format!("`retain_on_delete` must be a boolean, found {}", other.type_str())),
                },
                "ignore_changes" => match self.string_list(fvalue) {
                    Some(items) => draft.ignore_changes = self.ignore_changes(kind, items),
                    None => self.err(
                        &fvalue.span(),
                        "`ignore_changes` must be an array of field names (`\"memory_size\"`, `\"tags.owner\"`, `\"*\"`)",
                    ),
                },
                _ => {
                    let Some(field) = schema.field(fname) else {
                        let known: Vec<_> = schema.fields.iter().map(|f| f.name).collect();
                        let hint = suggest::did_you_mean(fname, known.iter().copied().chain(RESOURCE_KEYS.iter().copied()), str::to_string);
                        self.err(&fkey.span(), format!("unknown field `{fname}` for {kind}; known fields: {}{hint}", known.join(", ")));
                        continue;
                    };
                    let prefixed;
                    let mut fvalue = fvalue;
                    draft.field_spans.insert(field.name, fvalue.span());
                    if fname == schema.physical_name {
                        // `[stack] name_prefix`, checked with the name (AWS's length rules see the whole name).
                        if let DeValue::String(s) = fvalue.get_ref()
                            && !self.name_prefix.is_empty()
                        {
                            prefixed = Spanned::new(fvalue.span(), DeValue::String(format!("{}{s}", self.name_prefix).into()));
                            fvalue = &prefixed;
                        }
                    }
                    match self.field_value(&mut draft, field, fvalue) {
                        Some(v) => {
                            draft.attrs.insert(fname.to_string(), v);
                        }
                        None => {
                            failed.insert(field.name);
                        }
                    }
                }
            }
        }
        // A key both plain and secret: Lambda has one value for it, so one of the two never converges.
        for field in schema.secret_fields() {
            let (Some(plain), Some(DeValue::Table(secret))) =
                (field.name.strip_prefix("secret_"), table.get(field.name).map(|v| v.get_ref()))
            else {
                continue;
            };
            let Some(Value::Object(plain_map)) = draft.attrs.get(plain) else { continue };
            for (k, _) in secret.iter() {
                if plain_map.contains_key(k.get_ref().as_ref()) {
                    self.err(
                        &k.span(),
                        format!(
                            "`{}` is in both `{plain}` and `{}`; keep it in one of them (`{}` if its value is secret)",
                            k.get_ref(),
                            field.name,
                            field.name
                        ),
                    );
                }
            }
        }
        for (field, message) in kind.provider().check(&draft.attrs) {
            let at = table.get(field).map_or(key.span(), |v| v.span());
            self.err(&at, message);
        }
        for field in schema.fields {
            if draft.attrs.contains_key(field.name) {
                continue;
            }
            if field.required {
                if !failed.contains(field.name) {
                    self.err(
                        &key.span(),
                        format!("resource `{name}` ({kind}) is missing required field `{}` ({})", field.name, field.ty.describe()),
                    );
                }
            } else if let Some(d) = field.default {
                draft.attrs.insert(field.name.to_string(), d.value());
            }
        }
        Some(draft)
    }

    /// Checks each `ignore_changes` entry against the kind's fields: a field, `field.key` for a table
    /// field, or `*`.
    fn ignore_changes(&mut self, kind: Kind, items: Vec<(String, Range<usize>)>) -> IgnoreChanges {
        let schema = kind.schema();
        let mut out = IgnoreChanges::default();
        for (item, span) in items {
            // The span covers the quotes: point at the name itself.
            let at = span.start + 1..span.end;
            if item == "*" {
                out.all = true;
                continue;
            }
            let (top, key) = item.split_once('.').map_or((item.as_str(), None), |(t, k)| (t, Some(k)));
            let Some(field) = schema.field(top) else {
                let known: Vec<_> = schema.fields.iter().map(|f| f.name).collect();
                self.err(&at, format!("`ignore_changes`: {kind} has no field `{}`; fields: {}, or `*`", shown(top), known.join(", ")));
                continue;
            };
            match key {
                None => {}
                Some("") => {
                    self.err(&at, format!("`ignore_changes`: `{}` names no key of `{top}`", shown(&item)));
                    continue;
                }
                Some(_) if !matches!(field.ty, FieldType::StringMap | FieldType::JsonMap) => {
                    self.err(
                        &at,
                        format!(
                            "`ignore_changes`: `{top}` is {}, not a table: only a table's keys can be named (`{top}`, not `{}`)",
                            field.ty.describe(),
                            shown(&item)
                        ),
                    );
                    continue;
                }
                Some(k) if top == "tags" && k.starts_with("reconcile:") => {
                    self.err(&at, format!("`ignore_changes`: the ownership tag `{k}` is always kept by reconcile"));
                    continue;
                }
                Some(_) => {}
            }
            out.paths.insert(item);
        }
        out
    }

    fn string_list(&mut self, value: &Spanned<DeValue<'_>>) -> Option<Vec<(String, Range<usize>)>> {
        let DeValue::Array(items) = value.get_ref() else {
            return None;
        };
        items
            .iter()
            .map(|i| match i.get_ref() {
                DeValue::String(s) => Some((s.to_string(), i.span())),
                _ => None,
            })
            .collect()
    }

    fn field_value(&mut self, draft: &mut Draft, field: &Field, value: &Spanned<DeValue<'_>>) -> Option<Value> {
        let span = value.span();
        let wrong = |v: &mut Self, found: &DeValue<'_>| {
            v.err(&span, format!("`{}` must be {}, found {}", field.name, field.ty.describe(), found.type_str()));
            None
        };
        let out = match (field.ty, value.get_ref()) {
            (FieldType::String, DeValue::String(s)) => {
                if !field.one_of.is_empty() && !field.one_of.contains(&s.as_ref()) {
                    self.err(&span, format!("`{}` = \"{}\" is not supported; one of: {}", field.name, shown(s), field.one_of.join(", ")));
                    return None;
                }
                if let Some(check) = field.check
                    && !s.contains("${")
                    && let Err(e) = check(s)
                {
                    self.err(&span, format!("`{}` {e}", field.name));
                    return None;
                }
                draft.string_spans.push((span.clone(), s.to_string()));
                json!(s)
            }
            (FieldType::Integer { min, max }, DeValue::Integer(i)) => {
                let Some(n) = i64::from_str_radix(i.as_str(), i.radix()).ok() else {
                    self.err(&span, format!("`{}` is out of range", field.name));
                    return None;
                };
                if n < min || n > max {
                    self.err(&span, format!("`{}` = {n} is out of range {min}..={max}", field.name));
                    return None;
                }
                if let Some(check) = field.int_check
                    && let Err(e) = check(n)
                {
                    self.err(&span, format!("`{}` = {n} {e}", field.name));
                    return None;
                }
                json!(n)
            }
            (FieldType::Boolean, DeValue::Boolean(b)) => json!(b),
            (FieldType::StringList, DeValue::Array(_)) => match self.string_list(value) {
                Some(items) => {
                    let vals: Vec<Value> = items.iter().map(|(s, _)| json!(s)).collect();
                    draft.string_spans.extend(items.into_iter().map(|(s, r)| (r, s)));
                    Value::Array(vals)
                }
                None => {
                    self.err(&span, format!("`{}` must be an array of strings", field.name));
                    return None;
                }
            },
            (FieldType::StringMap, DeValue::Table(t)) => {
                let mut map = Map::new();
                for (k, v) in t.iter() {
                    match v.get_ref() {
                        DeValue::String(s) => {
                            if field.name == "tags" && k.get_ref().starts_with("reconcile:") {
                                self.err(
                                    &k.span(),
                                    format!("tag key `{}` is reserved: the `reconcile:` prefix marks ownership", k.get_ref()),
                                );
                            } else if field.name == "tags" {
                                if let Err(e) = rules::tag_key(k.get_ref()) {
                                    self.err(&k.span(), format!("tag key `{}` {e}", shown(k.get_ref())));
                                }
                                let text: &str = s;
                                if let Err(e) = Some(text).filter(|t| !t.contains("${")).map_or(Ok(()), rules::tag_value) {
                                    self.err(&v.span(), format!("the value of tag `{}` {e}", shown(k.get_ref())));
                                }
                            } else if let Some((what, check)) = field.keys
                                && let Err(e) = check(k.get_ref())
                            {
                                self.err(&k.span(), format!("{what} `{}` {e}", shown(k.get_ref())));
                            }
                            draft.string_spans.push((v.span(), s.to_string()));
                            map.insert(k.get_ref().to_string(), json!(s));
                        }
                        other => {
                            self.err(&v.span(), format!("`{}.{}` must be a string, found {}", field.name, k.get_ref(), other.type_str()));
                        }
                    }
                }
                let user_tags = rules::MAX_TAGS - rules::OWNERSHIP_TAGS;
                if field.name == "tags" && map.len() > user_tags {
                    self.err(
                        &span,
                        format!(
                            "{} tags: AWS allows {} per resource and reconcile adds {} ownership tags, so at most {user_tags}",
                            map.len(),
                            rules::MAX_TAGS,
                            rules::OWNERSHIP_TAGS
                        ),
                    );
                }
                Value::Object(map)
            }
            (FieldType::Json, DeValue::Table(_)) => {
                let doc = self.json(draft, value);
                match draft.kind.provider().structured(field.name, doc) {
                    Ok(v) => v,
                    Err(msg) => {
                        self.err(&span, format!("`{}`: {msg}", field.name));
                        return None;
                    }
                }
            }
            (FieldType::JsonList, DeValue::Array(items)) => {
                let mut list = Vec::new();
                let mut ok = true;
                let mut seen: HashMap<(&str, String), usize> = HashMap::new();
                // Elements with one identity (a route's method and path) are one thing in AWS: listed
                // twice, the second would fail (or overwrite the first) in the middle of an apply.
                let by_identity = !field.identity.is_empty() && !field.identity.iter().all(|k| field.unique.contains(k));
                let mut identities: HashMap<Vec<String>, (usize, Range<usize>)> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    if !matches!(item.get_ref(), DeValue::Table(_)) {
                        self.err(&item.span(), format!("`{}[{i}]` must be a table, found {}", field.name, item.get_ref().type_str()));
                        ok = false;
                        continue;
                    }
                    let doc = self.json(draft, item);
                    match draft.kind.provider().structured(field.name, doc) {
                        Ok(v) => {
                            {
                                for &key in field.unique {
                                    let Some(value) = v.get(key).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)) else {
                                        continue;
                                    };
                                    if let Some(first) = seen.insert((key, value.clone()), i) {
                                        self.err(&item.span(), format!(
                                            "`{f}[{i}]`: {key} {value} is already used by `{f}[{first}]`; AWS needs each one's {key} to be unique",
                                            f = field.name
                                        ));
                                        ok = false;
                                    }
                                }
                            }
                            let identity: Option<Vec<String>> = field
                                .identity
                                .iter()
                                .map(|k| v.get(*k).map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)))
                                .collect();
                            if by_identity && let Some(identity) = identity {
                                if let Some((first, first_span)) = identities.get(&identity) {
                                    let at = self.src.location(first_span.start);
                                    self.err(&item.span(), format!(
                                        "`{f}[{i}]` ({}) is already declared by `{f}[{first}]` ({at}); AWS holds one per {}: keep one of them",
                                        identity.join(" "),
                                        field.identity.join(" and "),
                                        f = field.name
                                    ));
                                    ok = false;
                                } else {
                                    identities.insert(identity, (i, item.span()));
                                }
                            }
                            list.push(v);
                        }
                        Err(msg) => {
                            self.err(&item.span(), format!("`{}[{i}]`: {msg}", field.name));
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return None;
                }
                Value::Array(list)
            }
            (FieldType::JsonMap, DeValue::Table(t)) => {
                let mut map = Map::new();
                for (k, v) in t.iter() {
                    match v.get_ref() {
                        DeValue::Table(_) => {
                            if let Some((what, check)) = field.keys
                                && let Err(e) = check(k.get_ref())
                            {
                                self.err(&k.span(), format!("{what} `{}` {e}", shown(k.get_ref())));
                            }
                            let doc = self.json(draft, v);
                            map.insert(k.get_ref().to_string(), doc);
                        }
                        other => {
                            self.err(
                                &v.span(),
                                format!("`{}.{}` must be a table (JSON document), found {}", field.name, k.get_ref(), other.type_str()),
                            );
                        }
                    }
                }
                Value::Object(map)
            }
            (FieldType::Path, DeValue::String(s)) if s.trim().is_empty() => {
                self.err(&span, format!("`{}` must name a file or folder", field.name));
                return None;
            }
            (FieldType::Path, DeValue::String(s)) => {
                let base = self.src.file.parent().unwrap_or(Path::new("."));
                let packaged =
                    artifact::confine(base, Path::new(s.as_ref()), &self.options.allow_code_from).and_then(|p| artifact::package(&p));
                match packaged {
                    Ok(a) => {
                        draft.attrs.insert(schema::CODE_SHA256.into(), json!(a.sha256));
                        draft.artifact = Some(a);
                    }
                    Err(e) => {
                        self.err(&span, format!("`{}`: {e}", field.name));
                        return None;
                    }
                }
                json!(s)
            }
            (_, other) => return wrong(self, other),
        };
        Some(out)
    }

    fn json(&mut self, draft: &mut Draft, value: &Spanned<DeValue<'_>>) -> Value {
        match value.get_ref() {
            DeValue::String(s) => {
                draft.string_spans.push((value.span(), s.to_string()));
                json!(s)
            }
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map(Value::from).unwrap_or(Value::Null),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number),
            DeValue::Boolean(b) => json!(b),
            DeValue::Datetime(d) => json!(d.to_string()),
            DeValue::Array(items) => Value::Array(items.iter().map(|i| self.json(draft, i)).collect()),
            DeValue::Table(t) => {
                let mut entries: Vec<_> = t.iter().collect();
                entries.sort_by_key(|(k, _)| k.span().start);
                Value::Object(entries.into_iter().map(|(k, v)| (k.get_ref().to_string(), self.json(draft, v))).collect())
            }
        }
    }

    /// Checks references, explicit dependencies, cycles and duplicate physical names.
    fn link(
        &mut self,
        drafts: Vec<Draft>,
        outputs: &BTreeMap<String, (String, Range<usize>)>,
        disabled: &BTreeSet<String>,
    ) -> Option<Vec<Resource>> {
        let kinds: HashMap<&str, Kind> = drafts.iter().map(|d| (d.name.as_str(), d.kind)).collect();
        let mut deps: Vec<BTreeSet<String>> = Vec::with_capacity(drafts.len());
        let check = |v: &mut Self, span: &Range<usize>, s: &str, deps: &mut BTreeSet<String>| match refs::scan(s) {
            Err(refs::RefError::Unterminated { offset }) => v.err_in_string(span, s, offset, "unterminated reference: `${` without `}`"),
            Err(refs::RefError::Malformed { offset, text }) => {
                v.err_in_string(span, s, offset, &format!("malformed reference `{text}`: expected `${{resource.output}}`"))
            }
            Ok(found) => {
                for r in found {
                    match kinds.get(r.resource.as_str()) {
                        None if disabled.contains(&r.resource) => v.err_in_string(
                            span,
                            s,
                            r.offset,
                            &format!(
                                "reference `{}`: resource `{}` is switched off (`enabled = false`), so it has no outputs; switch it on or drop the reference",
                                r.text, r.resource
                            ),
                        ),
                        None => {
                            let hint = suggest::did_you_mean(&r.resource, kinds.keys().copied(), |c| format!("${{{c}.{}}}", r.output));
                            v.err_in_string(
                                span,
                                s,
                                r.offset,
                                &format!("reference `{}` names no resource `{}` in this manifest{hint}", r.text, r.resource),
                            )
                        }
                        Some(kind) if !kind.schema().has_output(&r.output) => {
                            let outs: Vec<_> = kind.schema().outputs.iter().map(|(o, _)| *o).collect();
                            let hint = suggest::did_you_mean(&r.output, outs.iter().copied(), |c| format!("${{{}.{c}}}", r.resource));
                            v.err_in_string(
                                span,
                                s,
                                r.offset,
                                &format!(
                                    "reference `{}`: {} has no output `{}`; outputs: {}{hint}",
                                    r.text,
                                    kind,
                                    r.output,
                                    outs.join(", ")
                                ),
                            )
                        }
                        Some(_) => {
                            deps.insert(r.resource);
                        }
                    }
                }
            }
        };
        for d in &drafts {
            let mut set = BTreeSet::new();
            for (span, s) in &d.string_spans {
                check(self, span, s, &mut set);
            }
            for (dep, span) in &d.explicit_deps {
                if kinds.contains_key(dep.as_str()) {
                    set.insert(dep.clone());
                } else if disabled.contains(dep) {
                    // Switched off: nothing to wait for.
                } else {
                    let hint = suggest::did_you_mean(dep, kinds.keys().copied(), str::to_string);
                    self.err(span, format!("`depends_on` names no resource `{dep}` in this manifest{hint}"));
                }
            }
            deps.push(set);
        }
        for (s, span) in outputs.values() {
            check(self, span, s, &mut BTreeSet::new());
        }
        // A stage that logs waits for the region's CloudWatch role setting the manifest makes: API
        // Gateway refuses logging settings until it is there.
        // (Not when the account setting itself depends on the stage: that ordering is the user's.)
        let accounts: Vec<usize> = (0..drafts.len()).filter(|i| drafts[*i].kind == Kind::ApiGatewayAccount).collect();
        for i in 0..drafts.len() {
            if drafts[i].kind == Kind::Stage && stage_logs(&drafts[i].attrs) {
                for &a in &accounts {
                    if !reaches(&drafts, &deps, a, &drafts[i].name) {
                        deps[i].insert(drafts[a].name.clone());
                    }
                }
            }
        }

        // Cycles, through the strongly connected components of the dependency graph.
        let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..drafts.len()).map(|i| graph.add_node(i)).collect();
        let index: HashMap<&str, usize> = drafts.iter().enumerate().map(|(i, d)| (d.name.as_str(), i)).collect();
        for (i, set) in deps.iter().enumerate() {
            for dep in set {
                if let Some(&j) = index.get(dep.as_str()) {
                    graph.add_edge(nodes[i], nodes[j], ());
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && deps[graph[scc[0]]].contains(&drafts[graph[scc[0]]].name);
            if scc.len() > 1 || self_loop {
                let mut members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
                members.sort();
                let first = &drafts[members[0]];
                let mut path: Vec<&str> = members.iter().map(|i| drafts[*i].name.as_str()).collect();
                path.push(first.name.as_str());
                let header = first.header;
                self.err(&(header..header), format!("reference cycle: {}", path.join(" → ")));
            }
        }

        // One owner per physical resource: two declarations whose identity (each kind's own rule,
        // `KindSchema::identity`) is the same expression would be one resource under two keys.
        let mut seen: HashMap<(Kind, Vec<String>), usize> = HashMap::new();
        for (i, d) in drafts.iter().enumerate() {
            let identity = d.kind.schema().identity;
            let Some(key) = identity.key(&d.attrs) else { continue };
            match seen.get(&(d.kind, key.clone())) {
                None => {
                    seen.insert((d.kind, key), i);
                }
                Some(&first) => {
                    let first = &drafts[first];
                    let message = same_identity(identity, d, first, &self.src.location(first.header));
                    let fields = identity.fields();
                    let span = fields.last().and_then(|f| d.field_spans.get(f)).cloned().unwrap_or(d.header..d.header);
                    self.err(&span, message);
                }
            }
        }

        if !self.diags.is_empty() {
            return None;
        }
        Some(
            drafts
                .into_iter()
                .zip(deps)
                .map(|(d, deps)| Resource {
                    location: self.src.location(d.header),
                    name: d.name,
                    kind: d.kind,
                    attrs: d.attrs,
                    deps,
                    protect: d.protect,
                    ignore_changes: d.ignore_changes,
                    retain_on_delete: d.retain_on_delete,
                    artifact: d.artifact,
                })
                .collect(),
        )
    }

    /// Points at `offset` inside the string value at `span`, when the raw text lets us find it.
    fn err_in_string(&mut self, span: &Range<usize>, value: &str, offset: usize, message: &str) {
        let raw = self.src.text.get(span.clone()).unwrap_or("");
        let needle = &value[offset..];
        let needle = &needle[..needle.find('}').map_or(needle.len(), |i| i + 1)];
        let at = raw.find(needle).map_or(span.start, |i| span.start + i);
        self.err(&(at..at), message.to_string());
    }
}

/// Whether a stage's attributes turn on access logging or execution logging (including data trace),
/// which API Gateway accepts only once the region's account setting names a CloudWatch role.
/// The error for `second`, whose physical identity is `first`'s (declared at `at`).
fn same_identity(identity: schema::Identity, second: &Draft, first: &Draft, at: &Location) -> String {
    let kind = second.kind;
    let fields = identity.fields();
    if fields.is_empty() {
        return format!(
            "`{}`: there is one {kind} per account and region, and `{}` ({at}) already declares it; keep one of them \
             (two would set the region's setting in turn on every apply and never converge)",
            second.name, first.name
        );
    }
    let shown: Vec<String> =
        fields.iter().map(|f| format!("{f} = {}", second.attrs.get(*f).map_or_else(String::new, |v| v.to_string()))).collect();
    let case = if matches!(identity, schema::Identity::FieldsIgnoringCase(_))
        && fields.iter().any(|f| second.attrs.get(*f) != first.attrs.get(*f))
    {
        " (AWS treats these names as one whatever their case)"
    } else {
        ""
    };
    format!(
        "`{}`: {kind} with {} is the same resource in AWS as `{}` ({at}){case}; one resource has one owner: \
         keep one declaration, or give this one another {}",
        second.name,
        shown.join(", "),
        first.name,
        fields.last().copied().unwrap_or("name")
    )
}

/// Whether resource `from` (an index into `drafts`) depends on `target`, directly or through others.
fn reaches(drafts: &[Draft], deps: &[BTreeSet<String>], from: usize, target: &str) -> bool {
    let index: HashMap<&str, usize> = drafts.iter().enumerate().map(|(i, d)| (d.name.as_str(), i)).collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(i) = todo.pop() {
        for d in &deps[i] {
            if d == target {
                return true;
            }
            if let Some(&j) = index.get(d.as_str()).filter(|j| seen.insert(**j)) {
                todo.push(j);
            }
        }
    }
    false
}

pub fn stage_logs(attrs: &Map<String, Value>) -> bool {
    let s = |k: &str| attrs.get(k).and_then(Value::as_str).unwrap_or_default();
    !s("access_log_destination_arn").is_empty()
        || !matches!(s("logging_level"), "" | "OFF")
        || attrs.get("data_trace_enabled").and_then(Value::as_bool).unwrap_or(false)
}

/// Merges the stack's tags under a resource's own: a key the resource sets keeps its value.
fn add_stack_tags(attrs: &mut Map<String, Value>, stack_tags: &BTreeMap<String, String>) {
    if stack_tags.is_empty() {
        return;
    }
    let tags = attrs.entry("tags").or_insert_with(|| json!({}));
    if let Value::Object(map) = tags {
        for (k, v) in stack_tags {
            map.entry(k.clone()).or_insert_with(|| json!(v));
        }
    }
}

fn add_ownership_tags(attrs: &mut Map<String, Value>, stack: &str, resource: &str) {
    let tags = attrs.entry("tags").or_insert_with(|| json!({}));
    if let Value::Object(map) = tags {
        map.insert(TAG_STACK.into(), json!(stack));
        map.insert(TAG_MANAGED_BY.into(), json!(MANAGED_BY));
        map.insert(TAG_RESOURCE.into(), json!(resource));
    }
}

/// A name as messages show it: a long one is cut (it may be huge; the location points at it anyway).
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX { s.to_string() } else { format!("{}…", s.chars().take(MAX).collect::<String>()) }
}

/// The keys a resource table takes besides its kind's fields.
const RESOURCE_KEYS: &[&str] = &["type", "enabled", "protect", "depends_on"];

fn type_list() -> String {
    Kind::ALL.iter().map(|k| k.type_name()).collect::<Vec<_>>().join(", ")
}

fn is_stack_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;
