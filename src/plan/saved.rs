//! Saved plans (`plan --out FILE`, `apply FILE`, `show FILE`): a plan with what it was computed from,
//! so that applying it later can prove nothing it depends on moved.
//!
//! The file records the stack, the state's lineage and serial, the account and region, hashes of the
//! resolved manifest (secret values left out), of the code artifacts and of the secret values (the
//! keyed fingerprints the state stores; never the values), a digest of what AWS had for each
//! resource the plan touches, the reconcile version and the file's format version. It never holds a
//! secret value nor AWS's live attributes themselves (they may hold secrets the manifest does not mark).
//!
//! Applying it recomputes the plan from the manifest given again, the state and a fresh read of only
//! the resources the plan touches, and carries it out only when every recorded fact still holds and
//! the recomputed plan is the saved one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use super::{Action, Choices, Plan};
use crate::canonical::canonical_string as canonical;
use crate::manifest::Manifest;
use crate::providers::Live;
use crate::state::fingerprint::SecretKey;

/// Version of the saved plan file; bumped on any incompatible change.
pub const SAVED_FORMAT_VERSION: u32 = 1;

/// A saved plan, as written to its file (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub saved_plan_format: u32,
    /// The version of reconcile that made it; only the same version applies it.
    pub reconcile_version: String,
    pub stack: String,
    /// The state's lineage (`None`: nothing recorded for the stack yet).
    pub lineage: Option<String>,
    pub state_serial: i64,
    pub account_id: String,
    pub partition: String,
    pub region: String,
    pub manifest_sha256: String,
    pub code_sha256: String,
    pub secrets_sha256: String,
    /// `--target` and `--replace` as given to `plan`.
    pub choices: Choices,
    /// For each resource the plan touches (by state key): a digest of what AWS had (`None`: nothing).
    pub live: BTreeMap<String, Option<String>>,
    /// The plan, as `plan --json` prints it.
    pub plan: Value,
}

/// What a saved plan depends on that is not AWS: the hashes apply compares before any AWS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub manifest_sha256: String,
    pub code_sha256: String,
    pub secrets_sha256: String,
}

impl Inputs {
    /// The hashes of what `manifest` gives; `key`: the state's secret key, that the secret values'
    /// fingerprints are made with.
    pub fn of(manifest: &Manifest, key: Option<&SecretKey>) -> Inputs {
        Inputs { manifest_sha256: manifest_hash(manifest), code_sha256: code_hash(manifest), secrets_sha256: secrets_hash(manifest, key) }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn secret_field(kind: crate::manifest::Kind, name: &str) -> bool {
    kind.schema().is_secret(name)
}

/// A hash of the resolved manifest (after any substitution), secret values left out (their keys
/// stay): the stack, every resource's type, attributes, dependencies and lifecycle settings, the
/// outputs and the `[[moved]]` entries. The order of tables in the file does not matter.
pub fn manifest_hash(manifest: &Manifest) -> String {
    let mut resources: Vec<&crate::manifest::Resource> = manifest.resources.iter().collect();
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    let resources: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let attrs: Map<String, Value> = r
                .attrs
                .iter()
                .map(|(k, v)| (k.clone(), if secret_field(r.kind, k) { super::diff::redact_map(v) } else { v.clone() }))
                .collect();
            serde_json::json!({
                "name": r.name,
                "type": r.kind,
                "attrs": attrs,
                "deps": r.deps,
                "protect": r.protect,
                "retain_on_delete": r.retain_on_delete,
                "ignore_changes": {"all": r.ignore_changes.all, "paths": r.ignore_changes.paths},
            })
        })
        .collect();
    let moved: Vec<Value> = manifest.moved.iter().map(|m| serde_json::json!([m.from, m.to])).collect();
    let doc = serde_json::json!({
        "stack": manifest.stack,
        "resources": resources,
        "outputs": manifest.outputs,
        "moved": moved,
        "remediate": manifest.remediate,
    });
    hex_sha256(canonical(&doc).as_bytes())
}

/// A hash of the code artifacts: each resource's zip hash (Lambda's `CodeSha256`), by resource.
pub fn code_hash(manifest: &Manifest) -> String {
    let code: BTreeMap<&str, &str> =
        manifest.resources.iter().filter_map(|r| Some((r.name.as_str(), r.artifact.as_ref()?.sha256.as_str()))).collect();
    hex_sha256(canonical(&serde_json::json!(code)).as_bytes())
}

/// A hash of the secret values, made of the keyed fingerprints the state stores for them
/// ([`crate::state::fingerprint`]): the values themselves are never written anywhere, and without the
/// key the hash does not let anyone test a guess.
pub fn secrets_hash(manifest: &Manifest, key: Option<&SecretKey>) -> String {
    let mut secrets: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for r in &manifest.resources {
        let mut attrs: Map<String, Value> =
            r.attrs.iter().filter(|(k, _)| secret_field(r.kind, k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if attrs.is_empty() {
            continue;
        }
        crate::state::fingerprint::fingerprint_secrets(r.kind, &mut attrs, key);
        secrets.insert(r.name.as_str(), attrs);
    }
    hex_sha256(canonical(&serde_json::json!(secrets)).as_bytes())
}

/// A digest of what AWS had for one resource (`None`: nothing): its attributes and outputs, keyed with
/// the state's secret key when there is one (what AWS returns may hold secret values — a function's
/// environment —, so an unkeyed hash in the plan file would let its reader test guesses of them).
pub fn live_digest(live: Option<&Live>, key: Option<&SecretKey>) -> Option<String> {
    live.map(|l| {
        let text = canonical(&serde_json::json!({"attrs": l.attrs, "outputs": l.outputs}));
        match key {
            Some(key) => key.fingerprint(&text),
            None => hex_sha256(text.as_bytes()),
        }
    })
}

/// The state keys of the resources the plan touches (creates, updates, replacements, deletes,
/// forgets, moves, adoptions), for which AWS was read: what apply reads again.
pub fn touched(plan: &Plan, live: &HashMap<String, Option<Live>>) -> BTreeSet<String> {
    plan.resources
        .iter()
        .filter(|c| c.action != Action::NoOp || c.adopt.is_some() || c.moved_from.is_some() || c.records_retain)
        .filter(|c| !c.deposed)
        .map(|c| c.moved_from.clone().unwrap_or_else(|| c.name.clone()))
        .filter(|k| live.contains_key(k))
        .collect()
}

/// Digests of what AWS had for `keys`.
pub fn live_digests(
    keys: &BTreeSet<String>,
    live: &HashMap<String, Option<Live>>,
    key: Option<&SecretKey>,
) -> BTreeMap<String, Option<String>> {
    keys.iter().map(|k| (k.clone(), live_digest(live.get(k).and_then(Option::as_ref), key))).collect()
}

/// The plan document as compared between plan time and apply time: what an unchanged resource
/// ignores (`ignore_changes` differences) is left out, since apply does not read it again.
pub fn comparable(plan: &Value) -> Value {
    let mut plan = plan.clone();
    if let Some(resources) = plan.get_mut("resources").and_then(Value::as_array_mut) {
        for r in resources {
            if r.get("action").and_then(Value::as_str) == Some("no_op")
                && let Some(obj) = r.as_object_mut()
            {
                obj.remove("ignored");
            }
        }
    }
    plan
}

/// The first difference between two plan documents, for the refusal: the first resource whose
/// change differs (by name), or else the first top-level field.
pub fn first_difference(saved: &Value, now: &Value) -> String {
    let by_name = |v: &Value| -> BTreeMap<String, Value> {
        v.get("resources")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|r| (r.get("name").and_then(Value::as_str).unwrap_or_default().to_string(), r.clone())).collect())
            .unwrap_or_default()
    };
    let (a, b) = (by_name(saved), by_name(now));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let action = |m: &BTreeMap<String, Value>| {
            m.get(name).map(|r| r.get("action").and_then(Value::as_str).unwrap_or("?").to_string()).unwrap_or_else(|| "absent".into())
        };
        if a.get(name) != b.get(name) {
            return format!("`{name}`: {} in the saved plan, {} now", action(&a), action(&b));
        }
    }
    let keys: BTreeSet<&String> = saved.as_object().into_iter().chain(now.as_object()).flat_map(|m| m.keys()).collect();
    keys.into_iter().find(|k| saved.get(*k) != now.get(*k)).map(|k| format!("its `{k}`")).unwrap_or_else(|| "nothing".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_digest_is_keyed_so_a_plan_file_cannot_confirm_a_guessed_secret() {
        let live = Live {
            attrs: serde_json::json!({"environment": {"PIN": "4711"}}).as_object().cloned().unwrap_or_default(),
            outputs: BTreeMap::new(),
        };
        let text = canonical(&serde_json::json!({"attrs": live.attrs, "outputs": live.outputs}));
        let key = SecretKey::new(vec![7u8; 32], "test").unwrap();
        let keyed = live_digest(Some(&live), Some(&key)).unwrap();
        // The unkeyed hash of the live text (what a reader holding a guess can compute) is not it.
        assert_ne!(keyed, hex_sha256(text.as_bytes()));
        assert_eq!(live_digest(Some(&live), Some(&key)), Some(keyed.clone()), "stable under one key");
        let other = SecretKey::new(vec![8u8; 32], "test").unwrap();
        assert_ne!(live_digest(Some(&live), Some(&other)), Some(keyed));
        assert_eq!(live_digest(None, Some(&key)), None);
    }

    fn manifest(text: &str) -> Manifest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        crate::manifest::load(&path).unwrap()
    }

    const BASE: &str = r#"
[stack]
name = "s"

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "L"
retention_in_days = 7

[resources.role]
type = "aws_iam_role"
name = "R"
[resources.role.assume_role_policy]
Version = "2012-10-17"
Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
"#;

    #[test]
    fn the_manifest_hash_follows_the_content_not_the_order_of_tables() {
        let a = manifest(BASE);
        let (first, second) = BASE.split_at(BASE.find("[resources.role]").unwrap());
        let header_end = first.find("[resources.logs]").unwrap();
        let reordered = format!("{}{}\n{}", &first[..header_end], second, &first[header_end..]);
        assert_eq!(manifest_hash(&a), manifest_hash(&manifest(&reordered)));
        let changed = manifest(&BASE.replace("retention_in_days = 7", "retention_in_days = 14"));
        assert_ne!(manifest_hash(&a), manifest_hash(&changed));
        let renamed = manifest(&BASE.replace("name = \"s\"", "name = \"t\""));
        assert_ne!(manifest_hash(&a), manifest_hash(&renamed));
    }

    fn function_manifest(secret: &str, handler_body: &str) -> Manifest {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("code")).unwrap();
        std::fs::write(dir.path().join("code/index.py"), handler_body).unwrap();
        let text = format!(
            r#"{BASE}
[resources.fn]
type = "aws_lambda_function"
function_name = "F"
runtime = "python3.13"
handler = "index.handler"
role = "${{role.arn}}"
code = "code"
secret_environment = {{ DB_PASS = "{secret}" }}
"#
        );
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        crate::manifest::load(&path).unwrap()
    }

    #[test]
    fn secrets_and_code_have_their_own_hashes_and_the_manifest_hash_leaves_secret_values_out() {
        let a = function_manifest("first-secret", "def handler(e, c): return 1\n");
        let b = function_manifest("second-secret", "def handler(e, c): return 1\n");
        let c = function_manifest("first-secret", "def handler(e, c): return 2\n");
        let key = SecretKey::new(*b"a test key, long enough", "test").unwrap();
        let (ia, ib, ic) = (Inputs::of(&a, Some(&key)), Inputs::of(&b, Some(&key)), Inputs::of(&c, Some(&key)));
        assert_eq!(ia.manifest_sha256, ib.manifest_sha256, "a secret value is not in the manifest hash");
        assert_ne!(ia.secrets_sha256, ib.secrets_sha256);
        assert_eq!(ia.code_sha256, ib.code_sha256);
        assert_ne!(ia.code_sha256, ic.code_sha256);
        // (The resolved attributes carry the code's hash too, so new code changes the manifest hash as well.)
        assert_eq!(ia.secrets_sha256, ic.secrets_sha256);
        for h in [&ia.manifest_sha256, &ia.code_sha256, &ia.secrets_sha256] {
            assert!(h.starts_with("sha256:") && h.len() == 71, "{h}");
        }
    }

    #[test]
    fn comparing_leaves_out_what_an_unchanged_resource_ignores() {
        let saved = serde_json::json!({"resources": [{"name": "a", "action": "no_op", "ignored": [{"path": "x"}]}]});
        let now = serde_json::json!({"resources": [{"name": "a", "action": "no_op"}]});
        assert_eq!(comparable(&saved), comparable(&now));
        let changed = serde_json::json!({"resources": [{"name": "a", "action": "update"}]});
        assert_ne!(comparable(&saved), comparable(&changed));
        assert_eq!(first_difference(&saved, &changed), "`a`: no_op in the saved plan, update now");
    }
}
