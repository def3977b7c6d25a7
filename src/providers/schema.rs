//! What a resource kind accepts: the schema types each kind module fills in (pure data, read by
//! validation, planning and the manifest reference).

use serde_json::{Value, json};

/// The shape a field's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// An integer within an inclusive range.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    StringList,
    /// A table of string values (tags, environment variables).
    StringMap,
    /// Any TOML table, kept as a JSON document (IAM policy documents).
    Json,
    /// A table whose values are JSON documents (inline policies by name).
    JsonMap,
    /// An array of tables (API routes, WAF rules); compared as a set.
    JsonList,
    /// A path relative to the manifest file (Lambda code: a file or a folder).
    Path,
}

impl FieldType {
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Integer { .. } => "an integer",
            FieldType::Boolean => "a boolean",
            FieldType::StringList => "an array of strings",
            FieldType::StringMap => "a table of strings",
            FieldType::Json => "a table (JSON document)",
            FieldType::JsonMap => "a table of tables (JSON documents by name)",
            FieldType::JsonList => "an array of tables",
            FieldType::Path => "a path (string) relative to the manifest",
        }
    }
}

/// A field's default when the manifest leaves it out.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Int(i64),
    Str(&'static str),
    Bool(bool),
    EmptyMap,
    EmptyList,
}

impl DefaultValue {
    pub fn value(self) -> Value {
        match self {
            DefaultValue::Int(i) => json!(i),
            DefaultValue::Str(s) => json!(s),
            DefaultValue::Bool(b) => json!(b),
            DefaultValue::EmptyMap => json!({}),
            DefaultValue::EmptyList => json!([]),
        }
    }
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Changing it means the resource must be replaced.
    pub force_new: bool,
    pub default: Option<DefaultValue>,
    /// One of these values, if set.
    pub one_of: &'static [&'static str],
    /// Values never shown (plan, JSON, logs) nor stored (the state keeps a hash).
    pub secret: bool,
    /// The rule AWS holds a literal string value to (names, lengths, characters), checked at validate
    /// time; a value holding a `${...}` reference is only known at apply, and AWS checks it then.
    pub check: Option<Check>,
    /// For tables: the rule each key is held to, and what a key is called in messages
    /// ("policy name", "environment variable name").
    pub keys: Option<(&'static str, Check)>,
    /// For integers: the rule a value is held to beyond its range (a list of values AWS accepts).
    pub int_check: Option<IntCheck>,
    /// For arrays of tables: members whose value must differ from item to item (WAF rule names and
    /// priorities).
    pub unique: &'static [&'static str],
    /// For values holding arrays of tables (routes, WAF rules, policy statements): the members that
    /// identify an element, in the order the plan shows them (`routes[GET /book]`). The plan matches
    /// the elements of the old and new lists by them, so it shows what changed inside an element
    /// rather than the whole list twice; an element without them is matched by its position.
    /// Applies to arrays of tables at any depth of the value (`Statement` inside a policy).
    pub identity: &'static [&'static str],
    pub doc: &'static str,
}

/// Checks one literal integer; the error says what AWS accepts.
pub type IntCheck = fn(i64) -> Result<(), String>;

/// Checks one literal string; the error says what AWS accepts, without repeating the value.
pub type Check = fn(&str) -> Result<(), String>;

impl Field {
    pub const fn new(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: false,
            force_new: false,
            default: None,
            one_of: &[],
            secret: false,
            check: None,
            keys: None,
            int_check: None,
            unique: &[],
            identity: &[],
            doc,
        }
    }
    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    pub const fn force_new(mut self) -> Field {
        self.force_new = true;
        self
    }
    pub const fn default(mut self, d: DefaultValue) -> Field {
        self.default = Some(d);
        self
    }
    pub const fn secret(mut self) -> Field {
        self.secret = true;
        self
    }
    pub const fn one_of(mut self, values: &'static [&'static str]) -> Field {
        self.one_of = values;
        self
    }
    pub const fn check(mut self, check: Check) -> Field {
        self.check = Some(check);
        self
    }
    pub const fn keys(mut self, what: &'static str, check: Check) -> Field {
        self.keys = Some((what, check));
        self
    }
    pub const fn int_check(mut self, check: IntCheck) -> Field {
        self.int_check = Some(check);
        self
    }
    pub const fn unique(mut self, members: &'static [&'static str]) -> Field {
        self.unique = members;
        self
    }
    pub const fn identity(mut self, members: &'static [&'static str]) -> Field {
        self.identity = members;
        self
    }
}

#[derive(Debug)]
pub struct KindSchema {
    pub type_name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// The field that holds the resource's physical name (unique per kind and account); "" if none.
    pub physical_name: &'static str,
    /// Replacement creates the new one first, moves dependents, then deletes the old one.
    pub create_before_destroy: bool,
    /// A setting, not a resource: delete leaves it in place.
    pub retain_on_delete: bool,
    /// What other resources may reference as `${name.output}`.
    pub outputs: &'static [(&'static str, &'static str)],
    /// Whether the kind carries tags (ownership tags are added to every taggable resource).
    pub taggable: bool,
    /// A region-wide setting there is one of per account and region: one stack owns it.
    pub singleton: bool,
    /// What names one physical resource of the kind in an account and region: two declarations
    /// with the same identity would be one resource owned by two keys, so validate refuses them.
    pub identity: Identity,
}

/// A kind's physical identity: which field values, written in the manifest, name one resource in AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// AWS assigns the id at create (deployments): two declarations are two resources.
    Assigned,
    /// These fields' values together (as written, with variables substituted; a `${resource.output}`
    /// reference compares as its text, so two identical references are one value). `[]`: a setting
    /// there is one of per account and region, so any two declarations collide.
    Fields(&'static [&'static str]),
    /// Like `Fields`, but AWS treats the names as one whatever their case (IAM role names).
    FieldsIgnoringCase(&'static [&'static str]),
}

impl Identity {
    /// The fields it is made of.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Identity::Assigned => &[],
            Identity::Fields(f) | Identity::FieldsIgnoringCase(f) => f,
        }
    }

    /// The identity of a resource with these attributes, normalised so that equal keys are one
    /// physical resource; `None` for an assigned id or when a field is missing.
    pub fn key(self, attrs: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
        let fold = matches!(self, Identity::FieldsIgnoringCase(_));
        if self == Identity::Assigned {
            return None;
        }
        self.fields()
            .iter()
            .map(|f| {
                let v = attrs.get(*f)?;
                let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                // A reference's text is not folded: `${A.name}` and `${a.name}` are other resources.
                Some(if fold && !s.contains("${") { s.to_ascii_lowercase() } else { s })
            })
            .collect()
    }
}

impl KindSchema {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// The fields whose values are never shown nor stored ([`Field::secret`]).
    pub fn secret_fields(&self) -> impl Iterator<Item = &'static Field> + use<> {
        self.fields.iter().filter(|f| f.secret)
    }
    /// Whether `name` is one of [`KindSchema::secret_fields`].
    pub fn is_secret(&self, name: &str) -> bool {
        self.field(name).is_some_and(|f| f.secret)
    }
    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|(o, _)| *o == name)
    }
}

/// The `tags` field every taggable kind has.
pub const TAGS: Field = Field::new(
    "tags",
    FieldType::StringMap,
    "Tags; the ownership tags `reconcile:stack`, `reconcile:managed-by` and `reconcile:resource` are added",
)
.default(DefaultValue::EmptyMap);

/// Fields computed from the manifest rather than written in it: the Base64 SHA-256 of a function's
/// code zip, next to its `code` path.
pub const CODE_SHA256: &str = "code_sha256";
