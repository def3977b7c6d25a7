//! `aws_iam_role`: an IAM role — trust policy, inline policies, managed policy attachments, tags.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_iam::operation::create_role::CreateRoleError;
use aws_sdk_iam::types::{EntityType, Role, Tag};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifact::Artifact;
use crate::providers::batch::{self, Lookup};
use crate::providers::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::tags::TagChanges;
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_iam_role",
    doc: "An IAM role with its trust policy, inline policies and managed policy attachments.",
    fields: &[
        Field::new("name", T::String, "Role name").required().force_new().check(rules::iam_role_name),
        Field::new("assume_role_policy", T::Json, "Trust policy document").required().identity(&["Sid"]),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).check(rules::iam_description),
        Field::new("path", T::String, "Path").default(DefaultValue::Str("/")).force_new().check(rules::iam_path),
        Field::new("max_session_duration", T::Integer { min: 3600, max: 43200 }, "Maximum session duration in seconds")
            .default(DefaultValue::Int(3600)),
        Field::new("inline_policies", T::JsonMap, "Inline policies: policy name → policy document")
            .default(DefaultValue::EmptyMap)
            .keys("policy name", rules::iam_policy_name)
            .identity(&["Sid"]),
        Field::new("managed_policy_arns", T::StringList, "ARNs of managed policies to attach").default(DefaultValue::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Role ARN"), ("name", "Role name"), ("id", "Role id")],
    taggable: true,
    singleton: false,
    identity: crate::providers::schema::Identity::FieldsIgnoringCase(&["name"]),
};

/// A role as the manifest gives it and as `read` reports it. Policy documents are free-form JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    pub assume_role_policy: Value,
    pub description: String,
    pub path: String,
    pub max_session_duration: i64,
    /// Policy name → policy document.
    pub inline_policies: BTreeMap<String, Value>,
    pub managed_policy_arns: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// `aws_iam_role`: An IAM role with its trust policy, inline policies and managed policy attachments.
pub struct IamRole;

/// IAM hands policy documents back percent-encoded; parse them into JSON.
fn decode_policy(doc: &str) -> Value {
    let decoded = percent_encoding::percent_decode_str(doc).decode_utf8_lossy();
    serde_json::from_str(&decoded).unwrap_or(Value::String(decoded.into_owned()))
}

fn outputs(role: &Role) -> BTreeMap<String, String> {
    BTreeMap::from([("arn".into(), role.arn().into()), ("name".into(), role.role_name().into()), ("id".into(), role.role_id().into())])
}

fn tag_list(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::Other(e.to_string()))).collect()
}

fn session_duration(seconds: i64) -> Result<i32> {
    i32::try_from(seconds).map_err(|_| ProviderError::Other(format!("max_session_duration of {seconds} seconds is out of range")))
}

/// GetRole; `None` if there is no such role.
async fn get_role(aws: &Aws, name: &str) -> Result<Option<Role>> {
    Ok(aws
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("iam:GetRole", e, |e| {
                if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
            })
        })
        .or_gone()?
        .and_then(|out| out.role))
}

/// The names of the role's inline policies (a missing role is `NotFound`).
async fn inline_policy_names(aws: &Aws, role: &str) -> Result<Vec<String>> {
    aws.iam.list_role_policies().role_name(role).into_paginator().items().send().collect::<Result<Vec<_>, _>>().await.map_err(|e| {
        ProviderError::sdk_classified("iam:ListRolePolicies", e, |e| {
            if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
        })
    })
}

async fn inline_policies(aws: &Aws, role: &str) -> Result<BTreeMap<String, Value>> {
    let names = inline_policy_names(aws, role).await?;
    let docs = try_join_all(names.iter().map(|policy| async move {
        let out = aws
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(policy)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("iam:GetRolePolicy", e))?;
        Ok::<_, ProviderError>((policy.clone(), decode_policy(out.policy_document())))
    }))
    .await?;
    Ok(docs.into_iter().collect())
}

/// The ARNs of the managed policies attached to the role, sorted (a missing role is `NotFound`).
async fn attached_policies(aws: &Aws, role: &str) -> Result<Vec<String>> {
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("iam:ListAttachedRolePolicies", e, |e| {
                if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
            })
        })?;
    let mut arns: Vec<String> = attached.iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
    arns.sort();
    Ok(arns)
}

/// A role's policies as `GetAccountAuthorizationDetails` lists them.
#[derive(Debug, Clone)]
struct Policies {
    inline: BTreeMap<String, Value>,
    /// Sorted.
    managed: Vec<String>,
}

/// Every role's policies by role name, from at most `max_pages` pages of
/// `GetAccountAuthorizationDetails` (filter `Role`): the batch's collection read. A caller without
/// `iam:GetAccountAuthorizationDetails` (read-only roles often lack it) gets AccessDenied, and the
/// batch reads each role's policies on its own.
async fn authorization_details(aws: &Aws, max_pages: usize) -> Result<Option<batch::Collection<Policies>>> {
    let mut roles = std::collections::HashMap::new();
    let mut marker = None;
    for _ in 0..max_pages {
        let out = aws
            .iam
            .get_account_authorization_details()
            .filter(EntityType::Role)
            .max_items(1000)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| ProviderError::sdk("iam:GetAccountAuthorizationDetails", e))?;
        for role in out.role_detail_list() {
            let Some(name) = role.role_name() else { continue };
            let inline = role
                .role_policy_list()
                .iter()
                .filter_map(|p| Some((p.policy_name()?.to_string(), decode_policy(p.policy_document()?))))
                .collect();
            let mut managed: Vec<String> =
                role.attached_managed_policies().iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
            managed.sort();
            roles.insert(name.to_string(), Policies { inline, managed });
        }
        match (out.is_truncated, out.marker) {
            (true, Some(next)) => marker = Some(next),
            _ => break,
        }
    }
    Ok(Some(roles))
}

async fn delete_inline(aws: &Aws, role: &str, policy: &str) -> Result<()> {
    aws.iam
        .delete_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("iam:DeleteRolePolicy", e, |e| {
                if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
            })
        })
        .or_gone()
        .map(drop)
}

async fn detach(aws: &Aws, role: &str, arn: &str) -> Result<()> {
    aws.iam
        .detach_role_policy()
        .role_name(role)
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("iam:DetachRolePolicy", e, |e| {
                if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
            })
        })
        .or_gone()
        .map(drop)
}

/// Puts, deletes, attaches and detaches policies to go from `have` to `want`.
async fn sync_policies(
    aws: &Aws,
    name: &str,
    have: (&BTreeMap<String, Value>, &[String]),
    want: (&BTreeMap<String, Value>, &[String]),
) -> Result<()> {
    let ((have_inline, have_arns), (want_inline, want_arns)) = (have, want);
    for (policy, doc) in want_inline {
        if have_inline.get(policy) != Some(doc) {
            aws.iam
                .put_role_policy()
                .role_name(name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .map_err(|e| ProviderError::sdk("iam:PutRolePolicy", e))?;
        }
    }
    for policy in have_inline.keys().filter(|p| !want_inline.contains_key(*p)) {
        delete_inline(aws, name, policy).await?;
    }
    for arn in want_arns.iter().filter(|a| !have_arns.contains(a)) {
        aws.iam
            .attach_role_policy()
            .role_name(name)
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("iam:AttachRolePolicy", e))?;
    }
    for arn in have_arns.iter().filter(|a| !want_arns.contains(a)) {
        detach(aws, name, arn).await?;
    }
    Ok(())
}

impl Resource for IamRole {
    type Spec = RoleSpec;
    const KIND: Kind = Kind::IamRole;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &RoleSpec) -> Option<String> {
        Some(spec.name.clone())
    }

    fn name_check(spec: &RoleSpec) -> NameCheck {
        NameCheck::Read(spec.name.clone())
    }

    fn placement(_id: &str) -> Placement {
        // IAM is global.
        Placement::Anywhere
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// RoleId: IAM gives every role a new one, also one re-made under the same name.
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("id").cloned()
    }

    fn derived_outputs(_spec: &RoleSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// An update puts the policies a failed create did not.
    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, name: &str) -> Result<Option<Observed<RoleSpec>>> {
        let Some(role) = get_role(aws, name).await? else {
            return Ok(None);
        };
        let (inline_policies, managed_policy_arns) =
            match batch::lookup(aws, Kind::IamRole, name, |_, max_pages| authorization_details(aws, max_pages)).await {
                Lookup::Found(p) => (p.inline, p.managed),
                Lookup::Gone | Lookup::Unknown => tokio::try_join!(inline_policies(aws, name), attached_policies(aws, name))?,
            };
        let spec = RoleSpec {
            name: role.role_name().to_string(),
            assume_role_policy: role.assume_role_policy_document().map_or(Value::Null, decode_policy),
            description: role.description().unwrap_or_default().to_string(),
            path: role.path().to_string(),
            max_session_duration: role.max_session_duration().map_or(3600, i64::from),
            inline_policies,
            managed_policy_arns,
            tags: role.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
        };
        Ok(Some(Observed { outputs: outputs(&role), spec }))
    }

    async fn find(aws: &Aws, spec: &RoleSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<RoleSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &RoleSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let name = spec.name.as_str();
        let out = aws
            .iam
            .create_role()
            .role_name(name)
            .path(&spec.path)
            .assume_role_policy_document(spec.assume_role_policy.to_string())
            .set_description((!spec.description.is_empty()).then(|| spec.description.clone()))
            .max_session_duration(session_duration(spec.max_session_duration)?)
            .set_tags(Some(tag_list(&spec.tags)?))
            .send()
            .await
            .map_err(|e| {
                ProviderError::sdk_classified("iam:CreateRole", e, |e| match e {
                    CreateRoleError::EntityAlreadyExistsException(_) => ErrorClass::AlreadyExists,
                    _ => ErrorClass::Other,
                })
            })?;
        let role = out.role.ok_or_else(|| ProviderError::Other("iam:CreateRole returned no role".into()))?;
        let outputs = outputs(&role);
        // The role exists from here on: a refused policy leaves it incomplete, to be recorded, not lost.
        if let Err(e) = sync_policies(aws, name, (&BTreeMap::new(), &[]), (&spec.inline_policies, &spec.managed_policy_arns)).await {
            return Err(e.after_create(name, outputs));
        }
        Ok(Applied { physical_id: name.to_string(), outputs })
    }

    async fn update(aws: &Aws, name: &str, current: &RoleSpec, desired: &RoleSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        if current.assume_role_policy != desired.assume_role_policy {
            aws.iam
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(desired.assume_role_policy.to_string())
                .send()
                .await
                .map_err(|e| ProviderError::sdk("iam:UpdateAssumeRolePolicy", e))?;
        }
        if current.description != desired.description || current.max_session_duration != desired.max_session_duration {
            aws.iam
                .update_role()
                .role_name(name)
                .description(&desired.description)
                .max_session_duration(session_duration(desired.max_session_duration)?)
                .send()
                .await
                .map_err(|e| ProviderError::sdk("iam:UpdateRole", e))?;
        }
        sync_policies(
            aws,
            name,
            (&current.inline_policies, &current.managed_policy_arns),
            (&desired.inline_policies, &desired.managed_policy_arns),
        )
        .await?;
        TagChanges::between(&current.tags, &desired.tags)
            .apply(
                |set| async move {
                    aws.iam
                        .tag_role()
                        .role_name(name)
                        .set_tags(Some(tag_list(&set)?))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("iam:TagRole", e))
                },
                |keys| async move {
                    aws.iam
                        .untag_role()
                        .role_name(name)
                        .set_tag_keys(Some(keys))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("iam:UntagRole", e))
                },
            )
            .await?;
        let role = get_role(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("role {name} vanished during update")))?;
        Ok(Applied { physical_id: name.to_string(), outputs: outputs(&role) })
    }

    /// Detaches and deletes the role's policies (IAM refuses to delete a role that has any), then the role.
    async fn delete(aws: &Aws, name: &str) -> Result<()> {
        let Some((inline, attached)) = tokio::try_join!(inline_policy_names(aws, name), attached_policies(aws, name)).or_gone()? else {
            return Ok(());
        };
        for arn in &attached {
            detach(aws, name, arn).await?;
        }
        for policy in &inline {
            delete_inline(aws, name, policy).await?;
        }
        aws.iam
            .delete_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| {
                ProviderError::sdk_classified("iam:DeleteRole", e, |e| {
                    if e.is_no_such_entity_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
                })
            })
            .or_gone()
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_percent_encoded_policy() {
        let v = decode_policy("%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%5B%5D%7D");
        assert_eq!(v, json!({"Version": "2012-10-17", "Statement": []}));
    }

    #[test]
    fn spec_round_trip() {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        let logs = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["logs:PutLogEvents"], "Resource": "${logs.arn}"}]});
        let attrs = json!({
            "name": "hello-role",
            "assume_role_policy": trust,
            "description": "runs hello",
            "path": "/service/",
            "max_session_duration": 7200,
            "inline_policies": {"logs": logs},
            "managed_policy_arns": ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
            "tags": {"reconcile:stack": "s", "team": "x"},
        });
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::IamRole.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("hello-role"));
        let mut wrong = attrs.clone();
        wrong.insert("max_session_duration".into(), json!("7200"));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut wrong = attrs.clone();
        wrong.insert("managed_policy_arns".into(), json!([1]));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent drop of a bad list item");
        let mut unknown = attrs.clone();
        unknown.insert("policies".into(), json!({}));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }
}
