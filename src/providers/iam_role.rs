//! IAM roles: trust policy, inline policies, managed policy attachments, tags.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use futures::future::try_join_all;
use serde_json::{Map, Value, json};

use super::{Applied, Aws, Desired, Live, ProviderError, Result, changed, int_attr, str_attr, string_list, tag_changes};

fn err<E>(
    op: &'static str,
) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>) -> ProviderError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| ProviderError::sdk(op, e)
}

/// IAM hands policy documents back percent-encoded; parse them into JSON.
pub fn decode_policy(doc: &str) -> Value {
    let decoded = percent_encoding::percent_decode_str(doc).decode_utf8_lossy();
    serde_json::from_str(&decoded).unwrap_or(Value::String(decoded.into_owned()))
}

fn outputs(arn: &str, name: &str, id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("arn".into(), arn.into()), ("name".into(), name.into()), ("id".into(), id.into())])
}

fn tags(desired: &Map<String, Value>) -> Result<Vec<Tag>> {
    super::string_map(desired, "tags")
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::Other(e.to_string())))
        .collect()
}

pub async fn read(aws: &Aws, name: &str) -> Result<Option<Live>> {
    let role = match aws.iam.get_role().role_name(name).send().await {
        Ok(out) => match out.role {
            Some(role) => role,
            None => return Ok(None),
        },
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {
            return Ok(None);
        }
        Err(e) => return Err(ProviderError::sdk("iam:GetRole", e)),
    };
    let (inline, attached) = tokio::try_join!(inline_policies(aws, name), attached_policies(aws, name))?;
    let tags: Map<String, Value> = role.tags().iter().map(|t| (t.key().to_string(), json!(t.value()))).collect();
    let mut attrs = Map::new();
    attrs.insert("name".into(), json!(role.role_name()));
    attrs.insert("assume_role_policy".into(), role.assume_role_policy_document().map(decode_policy).unwrap_or(Value::Null));
    attrs.insert("description".into(), json!(role.description().unwrap_or_default()));
    attrs.insert("path".into(), json!(role.path()));
    attrs.insert("max_session_duration".into(), json!(role.max_session_duration().unwrap_or(3600)));
    attrs.insert("inline_policies".into(), Value::Object(inline));
    attrs.insert("managed_policy_arns".into(), json!(attached));
    attrs.insert("tags".into(), Value::Object(tags));
    Ok(Some(Live { attrs, outputs: outputs(role.arn(), role.role_name(), role.role_id()) }))
}

async fn inline_policies(aws: &Aws, role: &str) -> Result<Map<String, Value>> {
    let names: Vec<String> = aws
        .iam
        .list_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("iam:ListRolePolicies"))?;
    let docs = try_join_all(names.iter().map(|policy| async move {
        let out = aws.iam.get_role_policy().role_name(role).policy_name(policy).send().await.map_err(err("iam:GetRolePolicy"))?;
        Ok::<_, ProviderError>((policy.clone(), decode_policy(out.policy_document())))
    }))
    .await?;
    Ok(docs.into_iter().collect())
}

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
        .map_err(err("iam:ListAttachedRolePolicies"))?;
    let mut arns: Vec<String> = attached.iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect();
    arns.sort();
    Ok(arns)
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let name = str_attr(d, "name");
    let description = str_attr(d, "description");
    let out = aws
        .iam
        .create_role()
        .role_name(name)
        .path(str_attr(d, "path"))
        .assume_role_policy_document(d.get("assume_role_policy").map(Value::to_string).unwrap_or_default())
        .set_description((!description.is_empty()).then(|| description.to_string()))
        .max_session_duration(int_attr(d, "max_session_duration") as i32)
        .set_tags(Some(tags(d)?))
        .send()
        .await
        .map_err(err("iam:CreateRole"))?;
    let role = out.role.ok_or_else(|| ProviderError::Other("iam:CreateRole returned no role".into()))?;
    let outputs = outputs(role.arn(), role.role_name(), role.role_id());
    // The role exists from here on: a refused policy leaves it incomplete, to be recorded, not lost.
    if let Err(e) = sync_policies(aws, name, &Map::new(), d).await {
        return Err(e.after_create(name, outputs));
    }
    Ok(Applied { physical_id: name.to_string(), outputs })
}

/// Puts, deletes, attaches and detaches policies to go from `current` to `desired`.
async fn sync_policies(aws: &Aws, name: &str, current: &Map<String, Value>, desired: &Map<String, Value>) -> Result<()> {
    let empty = Map::new();
    let have = current.get("inline_policies").and_then(Value::as_object).unwrap_or(&empty);
    let want = desired.get("inline_policies").and_then(Value::as_object).unwrap_or(&empty);
    for (policy, doc) in want {
        if have.get(policy) != Some(doc) {
            aws.iam
                .put_role_policy()
                .role_name(name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .map_err(err("iam:PutRolePolicy"))?;
        }
    }
    for policy in have.keys().filter(|p| !want.contains_key(*p)) {
        match aws.iam.delete_role_policy().role_name(name).policy_name(policy).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {}
            Err(e) => return Err(ProviderError::sdk("iam:DeleteRolePolicy", e)),
        }
    }
    let have = string_list(current, "managed_policy_arns");
    let want = string_list(desired, "managed_policy_arns");
    for arn in want.iter().filter(|a| !have.contains(a)) {
        aws.iam.attach_role_policy().role_name(name).policy_arn(arn).send().await.map_err(err("iam:AttachRolePolicy"))?;
    }
    for arn in have.iter().filter(|a| !want.contains(a)) {
        detach(aws, name, arn).await?;
    }
    Ok(())
}

async fn detach(aws: &Aws, role: &str, arn: &str) -> Result<()> {
    match aws.iam.detach_role_policy().role_name(role).policy_arn(arn).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => Ok(()),
        Err(e) => Err(ProviderError::sdk("iam:DetachRolePolicy", e)),
    }
}

pub async fn update(aws: &Aws, name: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    if changed(current, d, "assume_role_policy") {
        aws.iam
            .update_assume_role_policy()
            .role_name(name)
            .policy_document(d.get("assume_role_policy").map(Value::to_string).unwrap_or_default())
            .send()
            .await
            .map_err(err("iam:UpdateAssumeRolePolicy"))?;
    }
    if changed(current, d, "description") || changed(current, d, "max_session_duration") {
        aws.iam
            .update_role()
            .role_name(name)
            .description(str_attr(d, "description"))
            .max_session_duration(int_attr(d, "max_session_duration") as i32)
            .send()
            .await
            .map_err(err("iam:UpdateRole"))?;
    }
    sync_policies(aws, name, current, d).await?;
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        let tags = set
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::Other(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        aws.iam.tag_role().role_name(name).set_tags(Some(tags)).send().await.map_err(err("iam:TagRole"))?;
    }
    if !remove.is_empty() {
        aws.iam.untag_role().role_name(name).set_tag_keys(Some(remove)).send().await.map_err(err("iam:UntagRole"))?;
    }
    let role = aws.iam.get_role().role_name(name).send().await.map_err(err("iam:GetRole"))?.role;
    let role = role.ok_or_else(|| ProviderError::Other(format!("role {name} vanished during update")))?;
    Ok(Applied { physical_id: name.to_string(), outputs: outputs(role.arn(), role.role_name(), role.role_id()) })
}

pub async fn delete(aws: &Aws, name: &str) -> Result<()> {
    let (inline, attached) = match tokio::try_join!(
        async {
            aws.iam
                .list_role_policies()
                .role_name(name)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(err("iam:ListRolePolicies"))
        },
        attached_policies(aws, name)
    ) {
        Ok(v) => v,
        Err(e) if e.code() == Some("NoSuchEntity") => return Ok(()),
        Err(e) => return Err(e),
    };
    for arn in &attached {
        detach(aws, name, arn).await?;
    }
    for policy in &inline {
        match aws.iam.delete_role_policy().role_name(name).policy_name(policy).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => {}
            Err(e) => return Err(ProviderError::sdk("iam:DeleteRolePolicy", e)),
        }
    }
    match aws.iam.delete_role().role_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => Ok(()),
        Err(e) => Err(ProviderError::sdk("iam:DeleteRole", e)),
    }
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::{Kind, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_iam_role",
    doc: "An IAM role with its trust policy, inline policies and managed policy attachments.",
    fields: &[
        Field::new("name", T::String, "Role name").required().force_new().check(rules::iam_role_name),
        Field::new("assume_role_policy", T::Json, "Trust policy document").required(),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).check(rules::iam_description),
        Field::new("path", T::String, "Path").default(DefaultValue::Str("/")).force_new().check(rules::iam_path),
        Field::new("max_session_duration", T::Integer { min: 3600, max: 43200 }, "Maximum session duration in seconds")
            .default(DefaultValue::Int(3600)),
        Field::new("inline_policies", T::JsonMap, "Inline policies: policy name → policy document")
            .default(DefaultValue::EmptyMap)
            .keys("policy name", rules::iam_policy_name),
        Field::new("managed_policy_arns", T::StringList, "ARNs of managed policies to attach").default(DefaultValue::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("arn", "Role ARN"), ("name", "Role name"), ("id", "Role id")],
    taggable: true,
    singleton: false,
};

/// `aws_iam_role`: An IAM role with its trust policy, inline policies and managed policy attachments.
pub struct IamRole;

impl Resource for IamRole {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::IamRole;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &Self::Spec) -> Option<String> {
        Some(super::str_attr(spec, "name").to_string())
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    fn derived_outputs(_spec: &Self::Spec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<Self::Spec>>> {
        Ok(read(aws, id).await?.map(|l| Observed { spec: l.attrs, outputs: l.outputs }))
    }

    async fn find(
        aws: &Aws,
        spec: &Self::Spec,
        _taken: &std::collections::HashSet<String>,
    ) -> Result<Option<(String, Observed<Self::Spec>)>> {
        crate::providers::resource::find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &Self::Spec, artifact: Option<&crate::artifact::Artifact>) -> Result<Applied> {
        create(aws, Desired { attrs: spec, artifact }).await
    }

    async fn update(
        aws: &Aws,
        id: &str,
        current: &Self::Spec,
        desired: &Self::Spec,
        artifact: Option<&crate::artifact::Artifact>,
    ) -> Result<Applied> {
        update(aws, id, current, Desired { attrs: desired, artifact }).await
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        delete(aws, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_encoded_policy() {
        let v = decode_policy("%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%5B%5D%7D");
        assert_eq!(v, json!({"Version": "2012-10-17", "Statement": []}));
    }
}
