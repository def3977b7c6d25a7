//! `aws_lambda_alias`: a named pointer to a version of a Lambda function, optionally sending a share of
//! the invocations to a second version (weighted routing).
//!
//! Physical id: `<function_name>:<name>`. Aliases carry no tags: the function is its parent, and whoever
//! owns the function owns its aliases.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_lambda::operation::create_alias::CreateAliasError;
use aws_sdk_lambda::operation::delete_alias::DeleteAliasError;
use aws_sdk_lambda::operation::get_alias::GetAliasError;
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use super::retry::{Backoff, send, send_classified};
use super::schema::{DefaultValue, Field, FieldType as T, KindSchema};
use super::structured::{literal, object, req_str};
use super::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, lambda_function, rules};
use crate::artifact::Artifact;

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_lambda_alias",
    doc: "A named pointer to a version of a Lambda function, with optional weighted routing to a second version.",
    fields: &[
        Field::new("name", T::String, "Alias name, e.g. `live`").required().force_new().check(rules::lambda_alias_name),
        Field::new("function_name", T::String, "Function name, usually `${function.name}`")
            .required()
            .force_new()
            .check(rules::lambda_function_name),
        Field::new("function_version", T::String, "Version the alias points to, usually `${function.version}`")
            .required()
            .check(rules::lambda_function_version),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).check(rules::lambda_description),
        Field::new("routing", T::Json, "`{ version, weight }`: the share (0.0 to 1.0) of invocations sent to a second version")
            .default(DefaultValue::EmptyMap),
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "Alias ARN (the function ARN with `:<name>`)"),
        ("name", "Alias name"),
        ("invoke_arn", "ARN API Gateway uses to invoke the function through the alias"),
        ("function_version", "Version the alias points to"),
    ],
    taggable: false,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["function_name", "name"]),
};

/// Weighted routing: `weight` of the invocations go to `version`, the rest to `function_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub version: String,
    pub weight: f64,
}

/// An alias as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasSpec {
    pub name: String,
    pub function_name: String,
    pub function_version: String,
    pub description: String,
    /// `{}` in the manifest and in `read` when there is none.
    #[serde(with = "routing_table")]
    pub routing: Option<Routing>,
}

/// `routing` as a table: `{}` is no routing.
mod routing_table {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    use super::Routing;

    pub fn serialize<S: Serializer>(routing: &Option<Routing>, s: S) -> Result<S::Ok, S::Error> {
        match routing {
            Some(r) => r.serialize(s),
            None => Map::new().serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Routing>, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(m) if m.is_empty() => Ok(None),
            v => serde_json::from_value(v).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// The manifest's `routing` table, checked: `{}`, or a version and a weight from 0.0 to 1.0.
fn routing(value: Value) -> std::result::Result<Option<Routing>, String> {
    let map = object(value, &["version", "weight"])?;
    if map.is_empty() {
        return Ok(None);
    }
    let version = req_str(&map, "version")?;
    literal(&version, "version", rules::lambda_published_version)?;
    let weight = match map.get("weight") {
        Some(v) => v.as_f64().ok_or("`weight` must be a number from 0.0 to 1.0")?,
        None => return Err("missing `weight`".into()),
    };
    if !(0.0..=1.0).contains(&weight) {
        return Err(format!("`weight` must be from 0.0 to 1.0 (the share of invocations `version` gets); it is {weight}"));
    }
    Ok(Some(Routing { version, weight }))
}

fn physical_id(function_name: &str, name: &str) -> String {
    format!("{function_name}:{name}")
}

fn parse_id(id: &str) -> Result<(&str, &str)> {
    match id.rsplit_once(':') {
        Some((f, a)) if !f.is_empty() && !a.is_empty() => Ok((f, a)),
        _ => Err(ProviderError::Other(format!("malformed lambda alias id `{id}`: expected `<function_name>:<alias>`"))),
    }
}

fn outputs(arn: &str, name: &str, version: &str, region: &str) -> BTreeMap<String, String> {
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    BTreeMap::from([
        ("arn".into(), arn.to_string()),
        ("name".into(), name.to_string()),
        ("invoke_arn".into(), format!("arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")),
        ("function_version".into(), version.to_string()),
    ])
}

/// The routing as Lambda takes it; no routing is an empty weight table (which clears it on update).
fn routing_config(routing: &Option<Routing>) -> AliasRoutingConfiguration {
    let weights = routing.iter().map(|r| (r.version.clone(), r.weight)).collect();
    AliasRoutingConfiguration::builder().set_additional_version_weights(Some(weights)).build()
}

/// Lambda refuses alias changes while the function is being updated; that clears up on its own. A
/// taken alias name is a `ResourceConflictException` too, and must not be retried.
fn is_update_in_progress(e: &ProviderError) -> bool {
    e.code() == Some("ResourceConflictException") && !e.message().to_ascii_lowercase().contains("already exist")
}

pub struct LambdaAlias;

impl Resource for LambdaAlias {
    type Spec = AliasSpec;
    const KIND: Kind = Kind::LambdaAlias;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &AliasSpec) -> Option<String> {
        Some(physical_id(&spec.function_name, &spec.name))
    }

    fn name_check(spec: &AliasSpec) -> NameCheck {
        NameCheck::Read(physical_id(&spec.function_name, &spec.name))
    }

    fn placement(_id: &str) -> Placement {
        Placement::RegionalArn
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        let (function, _) = id.rsplit_once(':')?;
        let name = lambda_function::function_name(function);
        Some((Kind::LambdaFunction, name.split(':').next().unwrap_or(name).to_string()))
    }

    fn canonical_id(id: &str) -> String {
        lambda_function::function_name(id).to_string()
    }

    /// The alias ARN (the same for a re-made alias; the alias belongs to its function, whose tags decide).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("arn").cloned()
    }

    fn derived_outputs(_spec: &AliasSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Moving the alias changes the version it reports.
    fn unknown_after_update(current: &AliasSpec, desired: &AliasSpec) -> Vec<&'static str> {
        if current.function_version != desired.function_version { vec!["function_version"] } else { Vec::new() }
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<AliasSpec>>> {
        let (function_name, name) = parse_id(id)?;
        let out = aws
            .lambda
            .get_alias()
            .function_name(function_name)
            .name(name)
            .send()
            .await
            .map_err(|e| {
                ProviderError::sdk_classified("lambda:GetAlias", e, |e| match e {
                    GetAliasError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()?;
        let Some(out) = out else { return Ok(None) };
        // AWS allows one additional version.
        let routing = out
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .and_then(|w| w.iter().next())
            .map(|(version, weight)| Routing { version: version.clone(), weight: *weight });
        let version = out.function_version().unwrap_or_default();
        let spec = AliasSpec {
            name: out.name().unwrap_or(name).to_string(),
            function_name: function_name.to_string(),
            function_version: version.to_string(),
            description: out.description().unwrap_or_default().to_string(),
            routing,
        };
        Ok(Some(Observed { outputs: outputs(out.alias_arn().unwrap_or_default(), &spec.name, version, &aws.region), spec }))
    }

    async fn find(aws: &Aws, spec: &AliasSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<AliasSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &AliasSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let request = aws
            .lambda
            .create_alias()
            .function_name(&spec.function_name)
            .name(&spec.name)
            .function_version(&spec.function_version)
            .description(&spec.description)
            .set_routing_config(spec.routing.as_ref().map(|_| routing_config(&spec.routing)));
        let out = send_classified(
            "lambda:CreateAlias",
            Backoff::PROPAGATION,
            is_update_in_progress,
            |e| match e {
                // A conflict is also "an update is in progress"; only "already exists" is a name clash.
                CreateAliasError::ResourceConflictException(c)
                    if c.message().is_some_and(|m| m.to_ascii_lowercase().contains("already exist")) =>
                {
                    ErrorClass::AlreadyExists
                }
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await?;
        let id = physical_id(&spec.function_name, &spec.name);
        let version = out.function_version().unwrap_or(&spec.function_version);
        Ok(Applied { outputs: outputs(out.alias_arn().unwrap_or_default(), &spec.name, version, &aws.region), physical_id: id })
    }

    async fn update(aws: &Aws, id: &str, _current: &AliasSpec, desired: &AliasSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let (function_name, name) = parse_id(id)?;
        let request = aws
            .lambda
            .update_alias()
            .function_name(function_name)
            .name(name)
            .function_version(&desired.function_version)
            .description(&desired.description)
            .routing_config(routing_config(&desired.routing));
        let out = send("lambda:UpdateAlias", Backoff::PROPAGATION, is_update_in_progress, || request.clone().send()).await?;
        let version = out.function_version().unwrap_or(&desired.function_version);
        Ok(Applied { outputs: outputs(out.alias_arn().unwrap_or_default(), name, version, &aws.region), physical_id: id.to_string() })
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        let (function_name, name) = parse_id(id)?;
        let request = aws.lambda.delete_alias().function_name(function_name).name(name);
        send_classified(
            "lambda:DeleteAlias",
            Backoff::PROPAGATION,
            is_update_in_progress,
            |e| match e {
                DeleteAliasError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await
        .or_gone()
        .map(drop)
    }

    fn structured(field: &str, value: Value) -> std::result::Result<Value, String> {
        match field {
            "routing" => Ok(routing(value)?.map_or_else(|| json!({}), |r| json!({"version": r.version, "weight": r.weight}))),
            _ => Ok(value),
        }
    }

    /// Routing needs a published version to split from, and a different one to split to.
    fn check(attrs: &Map<String, Value>) -> Vec<(&'static str, String)> {
        let literal = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.contains("${")).map(str::to_string);
        let Some(to) = literal(attrs.get("routing").and_then(|r| r.get("version"))) else { return Vec::new() };
        match literal(attrs.get("function_version")) {
            Some(v) if v == "$LATEST" => {
                vec![("routing", "weighted routing needs `function_version` to be a published version, not `$LATEST`".into())]
            }
            Some(v) if v == to => vec![(
                "routing",
                format!("`routing.version` is {to}, the version the alias already points to; name a second version to send invocations to"),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trip() {
        let provider = Kind::LambdaAlias.provider();
        let attrs = json!({"name": "live", "function_name": "Hello", "function_version": "3", "description": "production",
                           "routing": {"version": "4", "weight": 0.1}});
        let attrs = attrs.as_object().unwrap();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("Hello:live"));
        let spec: AliasSpec = serde_json::from_value(Value::Object(attrs.clone())).unwrap();
        assert_eq!(spec.routing, Some(Routing { version: "4".into(), weight: 0.1 }));
        let plain = json!({"name": "live", "function_name": "Hello", "function_version": "$LATEST", "description": "", "routing": {}});
        let plain = plain.as_object().unwrap();
        assert_eq!(&provider.normalize(plain).unwrap(), plain, "no routing is `{{}}` both ways");
        let mut wrong = attrs.clone();
        wrong.insert("function_version".into(), json!(3));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut unknown = attrs.clone();
        unknown.insert("qualifier".into(), json!("x"));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
        assert_eq!(provider.parent("Hello:live"), Some((Kind::LambdaFunction, "Hello".into())));
        assert_eq!(provider.parent("arn:aws:lambda:us-east-1:1:function:Hello:live"), Some((Kind::LambdaFunction, "Hello".into())));
        assert_eq!(provider.canonical_id("arn:aws:lambda:us-east-1:1:function:Hello:live"), "Hello:live");
    }

    #[test]
    fn routing_is_validated_and_canonical() {
        let provider = Kind::LambdaAlias.provider();
        assert_eq!(provider.structured("routing", json!({"weight": 1, "version": "7"})), Ok(json!({"version": "7", "weight": 1.0})));
        assert_eq!(provider.structured("routing", json!({})), Ok(json!({})));
        assert_eq!(provider.structured("routing", json!({"version": "${fn.version}", "weight": 0.5})).unwrap()["version"], "${fn.version}");
        let refused = |v: Value| provider.structured("routing", v).unwrap_err();
        assert_eq!(
            refused(json!({"version": "7", "weight": 1.5})),
            "`weight` must be from 0.0 to 1.0 (the share of invocations `version` gets); it is 1.5"
        );
        assert_eq!(
            refused(json!({"version": "7", "weight": -0.1})),
            "`weight` must be from 0.0 to 1.0 (the share of invocations `version` gets); it is -0.1"
        );
        assert_eq!(refused(json!({"version": "7", "weight": "0.1"})), "`weight` must be a number from 0.0 to 1.0");
        assert_eq!(refused(json!({"version": "7"})), "missing `weight`");
        assert_eq!(refused(json!({"weight": 0.1})), "missing `version`");
        assert_eq!(refused(json!({"version": 7, "weight": 0.1})), "`version` must be a string");
        assert_eq!(
            refused(json!({"version": "$LATEST", "weight": 0.1})),
            "`version` must be a published version number (digits, like `3`)"
        );
        assert_eq!(refused(json!({"version": "7", "weight": 0.1, "share": 1})), "unknown key `share`; expected one of: version, weight");
        let check = |attrs: Value| provider.check(attrs.as_object().unwrap());
        assert_eq!(
            check(json!({"function_version": "$LATEST", "routing": {"version": "2", "weight": 0.5}})),
            vec![("routing", "weighted routing needs `function_version` to be a published version, not `$LATEST`".to_string())]
        );
        assert_eq!(check(json!({"function_version": "2", "routing": {"version": "2", "weight": 0.5}})).len(), 1);
        assert!(check(json!({"function_version": "${fn.version}", "routing": {"version": "2", "weight": 0.5}})).is_empty());
        assert!(check(json!({"function_version": "1", "routing": {}})).is_empty());
    }
}
