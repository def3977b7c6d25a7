//! The manifest as a JSON Schema (draft-07), generated from the same tables that validate it: each
//! kind's [`KindSchema`] from the registry ([`Kind::ALL`]), and the manifest's own tables and
//! resource meta-fields below. Editors use it for completion and checks (taplo / Even Better TOML);
//! `reconcile schema` prints it and `docs/manifest.schema.json` keeps a copy (a test checks the copy).
//!
//! The schema is a help for editors, not the validator: `reconcile validate` checks more (AWS's
//! naming rules, references, cycles, duplicate names, code paths). It accepts a `${...}` reference
//! wherever the validator does, so an editor never marks a valid manifest as wrong: wherever a string
//! is (string fields, lists and tables of strings, strings inside JSON documents); in a field of
//! another type (a number, a boolean, a list, a table) a value that is exactly `"${var.NAME}"`, which
//! takes the variable's value and type before validation; in a field with a list of values
//! (`endpoint_type`, `runtime`) one of them or a string holding a `${var.NAME}` (the validator checks
//! the value once substituted).

use serde_json::{Map, Value, json};

use super::schema::{Field, FieldType, Kind, KindSchema};

/// Where the kept copy lives, relative to the repository.
pub const KEPT_COPY: &str = "docs/manifest.schema.json";

/// A key of the manifest that is not a kind's field: resource meta-fields, `[stack]` keys and the
/// top-level tables. Kept in step by hand with the validator in `manifest/mod.rs` (its `match`es on
/// these names).
pub struct Meta {
    pub name: &'static str,
    pub schema: fn() -> Value,
    pub doc: &'static str,
}

/// Keys every resource table may have besides its kind's fields.
pub const RESOURCE_META: &[Meta] = &[
    Meta {
        name: "enabled",
        schema: boolean_or_var,
        doc: "`false` switches the resource off: not planned (a state record of it is deleted), a reference to it is an error, a `depends_on` entry naming it is dropped.",
    },
    Meta { name: "protect", schema: boolean, doc: "Refuse to delete or replace this resource (plan and apply refuse; destroy refuses)." },
    Meta {
        name: "depends_on",
        schema: key_list,
        doc: "Resources this one depends on beyond its references (their keys in this manifest).",
    },
    Meta {
        name: "ignore_changes",
        schema: string_list,
        doc: "Fields plan, apply and watch leave alone (`\"tags.owner\"` for one key of a table, `\"*\"` for every updatable field).",
    },
    Meta {
        name: "retain_on_delete",
        schema: boolean,
        doc: "On destroy, or when it leaves the manifest, forget the resource and leave it in AWS (ownership tags removed).",
    },
];

/// Keys of `[stack]`.
pub const STACK_KEYS: &[Meta] = &[
    Meta {
        name: "name",
        schema: stack_name,
        doc: "The stack's name (1-64 letters, digits, `-` and `_`); the state keys everything by it.",
    },
    Meta {
        name: "name_prefix",
        schema: string,
        doc: "Put before the physical name of every resource that has one (roles, log groups, functions, REST APIs, web ACLs), so copies of a stack live side by side in one account.",
    },
    Meta { name: "description", schema: string, doc: "Free text for people." },
    Meta { name: "remediate", schema: boolean, doc: "`reconcile watch` repairs this stack's drift (as `--remediate` does)." },
    Meta {
        name: "tags",
        schema: tag_map,
        doc: "Tags for every taggable resource of the stack, under each resource's own tags (which win on the same key).",
    },
];

fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn string() -> Value {
    json!({"type": "string"})
}
fn string_list() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}
fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}
/// Tags: strings, and no key in the `reconcile:` namespace (ownership tags are reconcile's own).
fn tag_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "propertyNames": {"not": {"pattern": "^reconcile:"}}})
}
fn key_list() -> Value {
    json!({"type": "array", "items": {"type": "string", "pattern": KEY_PATTERN}})
}
fn stack_name() -> Value {
    json!({"type": "string", "pattern": "^([A-Za-z0-9_-]|\\$\\{var\\.[A-Za-z_][A-Za-z0-9_]*\\})+$"})
}
fn boolean_or_var() -> Value {
    or_var(boolean())
}

/// A value that is exactly one variable reference (`"${var.NAME}"`).
const VAR_REF: &str = "^\\$\\{var\\.[A-Za-z_][A-Za-z0-9_]*\\}$";
/// A string holding a variable reference (substituted before validation).
const HAS_VAR_REF: &str = "\\$\\{var\\.[A-Za-z_][A-Za-z0-9_]*\\}";

/// `schema` (of a non-string value), or a string that is exactly one variable reference. (JSON Schema's
/// `pattern` applies to strings only.)
fn or_var(mut schema: Value) -> Value {
    if let Value::Object(o) = &mut schema
        && let Some(Value::String(t)) = o.get("type").cloned()
        && t != "string"
    {
        o.insert("type".into(), json!([t, "string"]));
        o.insert("pattern".into(), json!(VAR_REF));
    }
    schema
}

/// A `[variables.NAME]` declaration.
fn variable() -> Value {
    json!({
        "type": "object",
        "required": ["type"],
        "additionalProperties": false,
        "properties": {
            "type": {"enum": ["string", "number", "bool", "list", "map"], "description": "The value's type; a value that is exactly `\"${var.NAME}\"` takes it."},
            "default": {"description": "The value when none is given (literal: no references)."},
            "description": {"type": "string", "description": "Free text for people."},
            "allowed": {"type": "array", "description": "The only values accepted."},
            "pattern": {"type": "string", "description": "A regular expression the whole value must match (string variables)."},
            "min": {"type": "number", "description": "The smallest value accepted (number variables)."},
            "max": {"type": "number", "description": "The largest value accepted (number variables)."},
            "sensitive": {"type": "boolean", "description": "A secret: never shown, logged or stored; only usable in `secret_environment`."},
        },
    })
}

/// A resource key (see `refs::is_ident`).
const KEY_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

/// The whole manifest's schema.
pub fn generate() -> Value {
    let mut definitions = Map::new();
    for kind in Kind::ALL {
        definitions.insert(kind.type_name().to_string(), resource(kind.schema()));
    }
    let kinds: Vec<Value> = Kind::ALL.iter().map(|k| json!({"$ref": format!("#/definitions/{}", k.type_name())})).collect();
    let type_names: Vec<&str> = Kind::ALL.iter().map(|k| k.type_name()).collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "reconcile manifest",
        "description": "One stack of AWS serverless resources for `reconcile`. Generated by `reconcile schema` from the tables that validate manifests; `reconcile validate` checks more (AWS's naming rules, references, cycles).",
        "type": "object",
        "required": ["stack", "resources"],
        "additionalProperties": false,
        "properties": {
            "stack": {
                "description": "The stack this manifest describes.",
                "type": "object",
                "required": ["name"],
                "additionalProperties": false,
                "properties": meta_properties(STACK_KEYS),
            },
            "variables": {
                "description": "Inputs of the manifest (`[variables.NAME]`), given with --var, --var-file or RECONCILE_VAR_NAME and used as `${var.NAME}` wherever a value is.",
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": variable(),
            },
            "resources": {
                "description": format!("The stack's resources by key (`[resources.KEY]`); `type` is one of: {}.", type_names.join(", ")),
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": KEY_PATTERN},
                "additionalProperties": {"type": "object", "required": ["type"], "properties": {"type": {"enum": type_names}}, "oneOf": kinds},
            },
            "outputs": {
                "description": "Stack outputs: name → string built from resource outputs (`\"${prod_stage.invoke_url}\"`).",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "moved": {
                "description": "Renamed resource keys (`[[moved]]`): the state's record under `from` moves to `to`, nothing is replaced.",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["from", "to"],
                    "additionalProperties": false,
                    "properties": {
                        "from": {"type": "string", "pattern": KEY_PATTERN, "description": "The key the state records."},
                        "to": {"type": "string", "pattern": KEY_PATTERN, "description": "The key in this manifest."},
                    },
                },
            },
        },
        "definitions": definitions,
    })
}

/// The schema as `reconcile schema` prints it and the kept copy holds it (with a final newline).
pub fn text() -> String {
    let mut s = serde_json::to_string_pretty(&generate()).unwrap_or_default();
    s.push('\n');
    s
}

fn meta_properties(list: &[Meta]) -> Value {
    let mut props = Map::new();
    for m in list {
        // Variables are substituted in every table but `[variables]`: a meta-field too may be one.
        let mut s = or_var((m.schema)());
        if let Value::Object(o) = &mut s {
            o.insert("description".into(), json!(m.doc));
        }
        props.insert(m.name.to_string(), s);
    }
    Value::Object(props)
}

fn resource(schema: &KindSchema) -> Value {
    let mut props = Map::new();
    props.insert("type".into(), json!({"const": schema.type_name, "description": schema.doc}));
    if let Value::Object(meta) = meta_properties(RESOURCE_META) {
        props.extend(meta);
    }
    let mut required = vec![json!("type")];
    for f in schema.fields {
        props.insert(f.name.to_string(), field(f));
        if f.required {
            required.push(json!(f.name));
        }
    }
    json!({
        "description": schema.doc,
        "type": "object",
        "required": required,
        "additionalProperties": false,
        "properties": props,
    })
}

fn field(f: &Field) -> Value {
    let mut s = match f.ty {
        // A reference (`${...}`) is a string: nothing narrower than `string` is said about free strings.
        FieldType::String | FieldType::Path => string(),
        FieldType::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FieldType::Boolean => boolean(),
        FieldType::StringList => string_list(),
        FieldType::StringMap => string_map(),
        FieldType::Json => json!({"type": "object"}),
        FieldType::JsonMap => json!({"type": "object", "additionalProperties": {"type": "object"}}),
        FieldType::JsonList => json!({"type": "array", "items": {"type": "object"}}),
    };
    let Value::Object(o) = &mut s else { return s };
    let mut doc = f.doc.to_string();
    if f.force_new {
        doc.push_str(" (changing it replaces the resource)");
    }
    if f.secret {
        doc.push_str(" (secret: never shown, the state keeps a keyed fingerprint)");
    }
    o.insert("description".into(), json!(doc));
    // The validator holds a `one_of` field to its values once variables are substituted: one of
    // them, or a string holding a variable (another reference is refused).
    if !f.one_of.is_empty() {
        o.insert("anyOf".into(), json!([{"enum": f.one_of}, {"pattern": HAS_VAR_REF}]));
    }
    if let Some(d) = f.default {
        o.insert("default".into(), d.value());
    }
    if f.name == "tags"
        && let Some(names) = tag_map().get("propertyNames")
    {
        o.insert("propertyNames".into(), names.clone());
    }
    // A value that is exactly `"${var.NAME}"` takes the variable's type: a number, a list, a table.
    or_var(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_copy_matches_the_generated_schema() {
        let kept = include_str!("../../docs/manifest.schema.json");
        assert!(
            kept == text(),
            "{KEPT_COPY} is out of date with the schema tables; regenerate it with\n    cargo run -- schema > {KEPT_COPY}"
        );
    }

    /// Keys of `value` the object schema `schema` does not declare, and required keys it misses.
    fn unknown_and_missing(schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        let props = schema["properties"].as_object().unwrap();
        for k in value.as_object().unwrap().keys() {
            if !props.contains_key(k) {
                out.push(format!("{at}.{k}: not in the schema"));
            }
        }
        for r in schema["required"].as_array().into_iter().flatten() {
            if value.get(r.as_str().unwrap()).is_none() {
                out.push(format!("{at}: required `{r}` missing"));
            }
        }
        out
    }

    #[test]
    fn the_seed_manifest_fits_the_schema_and_every_field_is_described() {
        let schema = generate();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/apigw-lambda-basic.toml")).unwrap();
        let seed: Value = serde_json::to_value(toml::from_str::<toml::Table>(&text).unwrap()).unwrap();
        let mut problems = unknown_and_missing(&schema, &seed, "");
        problems.extend(unknown_and_missing(&schema["properties"]["stack"], &seed["stack"], "stack"));
        for (key, r) in seed["resources"].as_object().unwrap() {
            let kind = r["type"].as_str().unwrap();
            let def = &schema["definitions"][kind];
            assert!(def.is_object(), "{kind} has no definition");
            problems.extend(unknown_and_missing(def, r, &format!("resources.{key}")));
        }
        assert!(problems.is_empty(), "{problems:#?}");
        for kind in Kind::ALL {
            let def = &schema["definitions"][kind.type_name()];
            for f in kind.schema().fields {
                let p = &def["properties"][f.name];
                assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{kind}.{}: no description", f.name);
                assert!(p.get("type").is_some(), "{kind}.{}: no type", f.name);
            }
            assert_eq!(def["properties"]["type"]["const"], kind.type_name());
        }
    }

    #[test]
    fn references_are_accepted_wherever_the_validator_takes_them() {
        // Every field the validator lets hold a `${...}` reference is typed `string` (or holds strings).
        let schema = generate();
        for kind in Kind::ALL {
            for f in kind.schema().fields {
                let p = &schema["definitions"][kind.type_name()]["properties"][f.name];
                match f.ty {
                    FieldType::String | FieldType::Path if f.one_of.is_empty() => {
                        assert_eq!(p["type"], "string", "{kind}.{}", f.name);
                        assert!(p.get("pattern").is_none() && p.get("enum").is_none(), "{kind}.{}: a reference must fit", f.name);
                    }
                    FieldType::StringList => assert_eq!(p["items"]["type"], "string"),
                    FieldType::StringMap => assert_eq!(p["additionalProperties"]["type"], "string"),
                    _ => {}
                }
            }
        }
        // The lifecycle meta-fields are there by their exact names.
        let role = &schema["definitions"]["aws_iam_role"]["properties"];
        for meta in ["enabled", "protect", "depends_on", "ignore_changes", "retain_on_delete"] {
            assert!(role.get(meta).is_some(), "{meta}");
        }
        assert_eq!(schema["properties"]["stack"]["properties"]["tags"]["additionalProperties"]["type"], "string");
        assert_eq!(schema["properties"]["moved"]["items"]["required"], json!(["from", "to"]));
    }

    /// The schema's complaints about `text` (a TOML manifest), as a real JSON Schema validator (an
    /// editor's) reports them.
    fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
        let doc: Value = serde_json::to_value(toml::from_str::<toml::Table>(text).unwrap()).unwrap();
        validator.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
    }

    /// The TOML manifests written as raw strings (`r#"…"#` holding a `[stack]` table) in the tests.
    fn manifests_in_tests() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("tests"), root.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, piece) in text.split("r#\"").skip(1).enumerate() {
                let Some((body, _)) = piece.split_once("\"#") else { continue };
                if body.contains("[stack]") && toml::from_str::<toml::Table>(body).is_ok() {
                    out.push((format!("{}#{n}", file.strip_prefix(root).unwrap_or(&file).display()), body.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_manifest_validate_accepts_fits_the_schema_by_a_json_schema_validator() {
        let validator = jsonschema::validator_for(&generate()).unwrap();
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"));
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            crate::manifest::parse(&path, text.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(schema_errors(&validator, &text), Vec::<String>::new(), "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 1, "no manifest under manifests/");
        // The tests' own manifests that validate accepts (relative code paths as under manifests/).
        let mut good = 0;
        for (name, text) in manifests_in_tests() {
            if crate::manifest::parse(&dir.join("from-tests.toml"), text.clone()).is_ok() {
                assert_eq!(schema_errors(&validator, &text), Vec::<String>::new(), "{name}:\n{text}");
                good += 1;
            }
        }
        assert!(good >= 5, "only {good} manifests found in the tests");
    }

    /// A small stack with `fields` in a REST API, a function and a log group.
    fn stack(api: &str, function: &str, logs: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n\n[variables.endpoint]\ntype = \"string\"\ndefault = \"EDGE\"\n\n\
             [variables.runtime]\ntype = \"string\"\ndefault = \"python3.13\"\n\n[variables.timeout]\ntype = \"number\"\ndefault = 30\n\n\
             [variables.days]\ntype = \"number\"\ndefault = 14\n\n[variables.keep]\ntype = \"bool\"\ndefault = true\n\n\
             [variables.policies]\ntype = \"list\"\ndefault = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n\n\
             [resources.role]\ntype = \"aws_iam_role\"\nname = \"r\"\nassume_role_policy = {{ Version = \"2012-10-17\" }}\n\
             managed_policy_arns = \"${{var.policies}}\"\nprotect = \"${{var.keep}}\"\n\n\
             [resources.api]\ntype = \"aws_api_gateway_rest_api\"\nname = \"a\"\n{api}\n\n\
             [resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nhandler = \"index.handler\"\nrole = \"${{role.arn}}\"\n\
             code = \"apigw-lambda-basic/lambda\"\n{function}\n\n\
             [resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"l\"\n{logs}\n"
        )
    }

    #[test]
    fn variables_in_enum_number_boolean_and_list_fields_fit_and_bad_values_are_refused_by_both() {
        let validator = jsonschema::validator_for(&generate()).unwrap();
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"));
        let at = dir.join("vars.toml");
        let good = stack(
            "endpoint_type = \"${var.endpoint}\"",
            "runtime = \"${var.runtime}\"\ntimeout = \"${var.timeout}\"",
            "retention_in_days = \"${var.days}\"",
        );
        crate::manifest::parse(&at, good.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schema_errors(&validator, &good), Vec::<String>::new());
        let literal = stack("endpoint_type = \"EDGE\"", "runtime = \"python3.13\"\ntimeout = 30", "retention_in_days = 14");
        crate::manifest::parse(&at, literal.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schema_errors(&validator, &literal), Vec::<String>::new());

        let bad = [
            ("endpoint_type = \"FAST\"", "runtime = \"python3.13\"", ""),
            ("", "runtime = \"cobol\"", ""),
            ("", "runtime = \"python3.13\"\ntimeout = \"ten\"", ""),
            ("", "runtime = \"python3.13\"\ntimeout = 0", ""),
            ("", "runtime = \"python3.13\"", "retention_in_days = \"${role.arn}\""),
            ("", "runtime = \"${role.arn}\"", ""),
            ("", "runtime = \"python3.13\"\nmemory = 128", ""),
            ("", "runtime = \"python3.13\"", "retention_in_days = true"),
        ];
        for (api, function, logs) in bad {
            let text = stack(api, function, logs);
            assert!(crate::manifest::parse(&at, text.clone()).is_err(), "validate accepts:\n{api}{function}{logs}");
            assert!(!schema_errors(&validator, &text).is_empty(), "the schema accepts:\n{api}{function}{logs}");
        }
    }
}
