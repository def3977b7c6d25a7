//! CloudWatch Logs log groups: name, retention, tags.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Applied, Aws, Desired, Live, ProviderError, Result, changed, int_attr, str_attr, string_map, tag_changes};

struct Group {
    name: String,
    arn: String,
    retention: i64,
}

async fn find(aws: &Aws, name: &str) -> Result<Option<Group>> {
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
            // `logGroupArn` is the ARN without the trailing `:*` that other services (API Gateway) expect.
            let arn =
                g.log_group_arn().map(str::to_string).or_else(|| g.arn().map(|a| a.trim_end_matches(":*").to_string())).unwrap_or_default();
            return Ok(Some(Group { name: name.to_string(), arn, retention: g.retention_in_days().map_or(0, i64::from) }));
        }
        match out.next_token {
            Some(t) => token = Some(t),
            None => return Ok(None),
        }
    }
}

fn outputs(g: &Group) -> BTreeMap<String, String> {
    BTreeMap::from([("arn".into(), g.arn.clone()), ("name".into(), g.name.clone())])
}

pub async fn read(aws: &Aws, name: &str) -> Result<Option<Live>> {
    let Some(group) = find(aws, name).await? else {
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
    let mut attrs = Map::new();
    attrs.insert("name".into(), json!(group.name));
    attrs.insert("retention_in_days".into(), json!(group.retention));
    attrs.insert("tags".into(), super::tags_value(&tags.into_iter().collect::<BTreeMap<_, _>>()));
    Ok(Some(Live { outputs: outputs(&group), attrs }))
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let name = str_attr(d, "name");
    aws.logs
        .create_log_group()
        .log_group_name(name)
        .set_tags(Some(string_map(d, "tags").into_iter().collect()))
        .send()
        .await
        .map_err(|e| ProviderError::sdk("logs:CreateLogGroup", e))?;
    // The group exists from here on: a refused retention leaves it incomplete, recorded, not lost.
    let finish = async {
        let days = int_attr(d, "retention_in_days");
        if days > 0 {
            set_retention(aws, name, days).await?;
        }
        find(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("log group {name} not found right after creating it")))
    };
    match finish.await {
        Ok(group) => Ok(Applied { physical_id: name.to_string(), outputs: outputs(&group) }),
        Err(e) => Err(e.after_create(name, BTreeMap::from([("name".to_string(), name.to_string())]))),
    }
}

async fn set_retention(aws: &Aws, name: &str, days: i64) -> Result<()> {
    if days > 0 {
        aws.logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days as i32)
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

pub async fn update(aws: &Aws, name: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    if changed(current, d, "retention_in_days") {
        set_retention(aws, name, int_attr(d, "retention_in_days")).await?;
    }
    let group = find(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("log group {name} vanished during update")))?;
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        aws.logs
            .tag_resource()
            .resource_arn(&group.arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:TagResource", e))?;
    }
    if !remove.is_empty() {
        aws.logs
            .untag_resource()
            .resource_arn(&group.arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("logs:UntagResource", e))?;
    }
    Ok(Applied { physical_id: name.to_string(), outputs: outputs(&group) })
}

pub async fn delete(aws: &Aws, name: &str) -> Result<()> {
    match aws.logs.delete_log_group().log_group_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
        Err(e) => Err(ProviderError::sdk("logs:DeleteLogGroup", e)),
    }
}
