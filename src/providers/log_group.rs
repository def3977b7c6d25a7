//! `aws_cloudwatch_log_group`: a CloudWatch Logs log group — name, retention, tags.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError;
use aws_sdk_cloudwatchlogs::operation::delete_log_group::DeleteLogGroupError;
use serde::{Deserialize, Serialize};

use super::batch::{self, Lookup};
use super::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use super::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use super::tags::TagChanges;
use super::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};
use crate::artifact::Artifact;

/// Log group retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[i64] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_cloudwatch_log_group",
    doc: "A CloudWatch Logs log group.",
    fields: &[
        Field::new("name", T::String, "Log group name").required().force_new().check(rules::log_group_name),
        Field::new(
            "retention_in_days",
            T::Integer { min: 0, max: 3653 },
            "Retention in days (one of the values CloudWatch accepts; 0 = never expire)",
        )
        .default(DefaultValue::Int(0))
        .int_check(retention),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "Log group ARN (without the trailing `:*`)"),
        ("name", "Log group name"),
        ("creation_time", "When AWS made it (milliseconds since the epoch); a log group re-made under the name has another"),
    ],
    taggable: true,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["name"]),
};

/// 0 (never expire) or a retention CloudWatch Logs offers.
fn retention(days: i64) -> std::result::Result<(), String> {
    if days == 0 || LOG_RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let allowed: Vec<_> = LOG_RETENTION_DAYS.iter().map(|d| d.to_string()).collect();
    Err(format!("is not a value CloudWatch Logs accepts; one of: 0 (never expire), {}", allowed.join(", ")))
}

/// A log group as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGroupSpec {
    pub name: String,
    /// 0 = never expire.
    pub retention_in_days: i64,
    pub tags: BTreeMap<String, String>,
}

pub struct LogGroup;

#[derive(Debug, Clone)]
struct Group {
    name: String,
    arn: String,
    retention: i64,
    /// When AWS made it (ms since the epoch): what tells it from a log group re-made under its name.
    created: Option<i64>,
}

impl Group {
    fn outputs(&self) -> BTreeMap<String, String> {
        let mut outputs = BTreeMap::from([("arn".into(), self.arn.clone()), ("name".into(), self.name.clone())]);
        if let Some(t) = self.created {
            outputs.insert("creation_time".into(), t.to_string());
        }
        outputs
    }
}

impl Group {
    fn of(name: &str, g: &aws_sdk_cloudwatchlogs::types::LogGroup) -> Group {
        // `logGroupArn` is the ARN without the trailing `:*` that other services (API Gateway) expect.
        let arn =
            g.log_group_arn().map(str::to_string).or_else(|| g.arn().map(|a| a.trim_end_matches(":*").to_string())).unwrap_or_default();
        Group { name: name.to_string(), arn, retention: g.retention_in_days().map_or(0, i64::from), created: g.creation_time() }
    }
}

/// The groups whose names start with `prefix`, by name, from at most `max_pages` pages of
/// `DescribeLogGroups` (the batch's collection read; it holds what it got to).
async fn listed(aws: &Aws, prefix: String, max_pages: usize) -> Result<Option<batch::Collection<Group>>> {
    let mut pages = aws.logs.describe_log_groups().log_group_name_prefix(prefix).into_paginator().page_size(50).send();
    let mut items = std::collections::HashMap::new();
    for _ in 0..max_pages {
        let Some(page) = pages.next().await else { break };
        for g in page.map_err(|e| ProviderError::sdk("logs:DescribeLogGroups", e))?.log_groups() {
            if let Some(name) = g.log_group_name() {
                items.insert(name.to_string(), Group::of(name, g));
            }
        }
    }
    Ok(Some(items))
}

/// The group named exactly `name` (DescribeLogGroups filters by prefix).
async fn describe(aws: &Aws, name: &str) -> Result<Option<Group>> {
    let mut token = None;
    loop {
        let out = aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:DescribeLogGroups", e))?;
        if let Some(g) = out.log_groups().iter().find(|g| g.log_group_name() == Some(name)) {
            return Ok(Some(Group::of(name, g)));
        }
        match out.next_token {
            Some(t) => token = Some(t),
            None => return Ok(None),
        }
    }
}

async fn set_retention(aws: &Aws, name: &str, days: i64) -> Result<()> {
    if days > 0 {
        let days = i32::try_from(days).map_err(|_| ProviderError::Other(format!("retention of {days} days is out of range")))?;
        aws.logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:PutRetentionPolicy", e))?;
    } else {
        aws.logs
            .delete_retention_policy()
            .log_group_name(name)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:DeleteRetentionPolicy", e))?;
    }
    Ok(())
}

impl Resource for LogGroup {
    type Spec = LogGroupSpec;
    const KIND: Kind = Kind::LogGroup;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &LogGroupSpec) -> Option<String> {
        Some(spec.name.clone())
    }

    fn name_check(spec: &LogGroupSpec) -> NameCheck {
        NameCheck::Read(spec.name.clone())
    }

    fn placement(_id: &str) -> Placement {
        Placement::RegionalArn
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// The creation time AWS reports (ms since the epoch): a log group re-made under the same name has another (its ARN is the same).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("creation_time").cloned()
    }

    fn derived_outputs(_spec: &LogGroupSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// An update sets the retention a failed create did not.
    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, name: &str) -> Result<Option<Observed<LogGroupSpec>>> {
        let group = match batch::lookup(aws, Kind::LogGroup, name, |prefix, max_pages| listed(aws, prefix, max_pages)).await {
            Lookup::Found(group) => Some(group),
            Lookup::Gone | Lookup::Unknown => describe(aws, name).await?,
        };
        let Some(group) = group else {
            return Ok(None);
        };
        let tags = aws
            .logs
            .list_tags_for_resource()
            .resource_arn(&group.arn)
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:ListTagsForResource", e))?
            .tags
            .unwrap_or_default();
        let spec = LogGroupSpec { name: group.name.clone(), retention_in_days: group.retention, tags: tags.into_iter().collect() };
        Ok(Some(Observed { outputs: group.outputs(), spec }))
    }

    async fn find(aws: &Aws, spec: &LogGroupSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<LogGroupSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &LogGroupSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let name = spec.name.as_str();
        aws.logs.create_log_group().log_group_name(name).set_tags(Some(spec.tags.clone().into_iter().collect())).send().await.map_err(
            |e| {
                ProviderError::sdk_classified("logs:CreateLogGroup", e, |e| match e {
                    CreateLogGroupError::ResourceAlreadyExistsException(_) => ErrorClass::AlreadyExists,
                    _ => ErrorClass::Other,
                })
            },
        )?;
        // The group exists from here on: a refused retention leaves it incomplete, recorded, not lost.
        let finish = async {
            if spec.retention_in_days > 0 {
                set_retention(aws, name, spec.retention_in_days).await?;
            }
            describe(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("log group {name} not found right after creating it")))
        };
        match finish.await {
            Ok(group) => Ok(Applied { physical_id: name.to_string(), outputs: group.outputs() }),
            Err(e) => Err(e.after_create(name, BTreeMap::from([("name".to_string(), name.to_string())]))),
        }
    }

    async fn update(
        aws: &Aws,
        name: &str,
        current: &LogGroupSpec,
        desired: &LogGroupSpec,
        _artifact: Option<&Artifact>,
    ) -> Result<Applied> {
        if current.retention_in_days != desired.retention_in_days {
            set_retention(aws, name, desired.retention_in_days).await?;
        }
        let group = describe(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("log group {name} vanished during update")))?;
        let arn = group.arn.as_str();
        TagChanges::between(&current.tags, &desired.tags)
            .apply(
                |set| async move {
                    aws.logs
                        .tag_resource()
                        .resource_arn(arn)
                        .set_tags(Some(set.into_iter().collect()))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("logs:TagResource", e))
                },
                |keys| async move {
                    aws.logs
                        .untag_resource()
                        .resource_arn(arn)
                        .set_tag_keys(Some(keys))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| ProviderError::sdk("logs:UntagResource", e))
                },
            )
            .await?;
        Ok(Applied { physical_id: name.to_string(), outputs: group.outputs() })
    }

    async fn delete(aws: &Aws, name: &str) -> Result<()> {
        aws.logs
            .delete_log_group()
            .log_group_name(name)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                ProviderError::sdk_classified("logs:DeleteLogGroup", e, |e| match e {
                    DeleteLogGroupError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
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
    fn spec_round_trip() {
        let attrs = json!({"name": "/aws/apigw/dev", "retention_in_days": 14, "tags": {"reconcile:stack": "s", "team": "x"}});
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::LogGroup.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("/aws/apigw/dev"));
        let wrong = json!({"name": "g", "retention_in_days": "14", "tags": {}});
        assert!(matches!(provider.normalize(wrong.as_object().unwrap()), Err(ProviderError::Spec { .. })), "no silent default");
        let unknown = json!({"name": "g", "retention_in_days": 1, "tags": {}, "retention": 3});
        assert!(provider.normalize(unknown.as_object().unwrap()).is_err(), "an unknown field is refused, not dropped");
    }
}
