//! A stack is pinned to the AWS account, partition and region it lives in.
//!
//! The state records them on the stack's first write ([`pin`], before the first AWS write of `apply`,
//! in `import`, or explicitly with `reconcile pin`). Every command that reads or writes AWS for a
//! stack calls [`check`] first: it asks STS who the caller is (the only AWS call made before a
//! refusal) and refuses when the stack is pinned elsewhere, naming both sides. Without this, a stray
//! `AWS_REGION` or other credentials make a live stack look deleted: plan shows creates, apply builds a
//! second copy and rewrites the state, destroy deletes the (global) IAM roles of the live one.
//!
//! A state written before pinning existed is back-filled: from the ARNs it recorded for regional
//! resources (a Lambda function, a log group, a regional web ACL name their account and region), and
//! only when one of its regional resources is found where the credentials and region point. IAM is
//! global and proves nothing. When nothing proves it, the stack is refused with how to pin it by hand.
//! A stack whose state is empty (destroyed, nothing left half-made in the journal) is not pinned: it
//! may be applied anywhere, and [`release_if_empty`] clears the pin when destroy empties it.

use crate::providers::resource::Placement;
use crate::providers::{self, Aws, ProviderError};
use crate::state::{Identity, ResourceState, StackState, StateError, Store};

/// How many regional resources back-filling reads at most before it gives up.
const BACKFILL_READS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "stack `{stack}` lives in {pinned} ({source_of_pin}), but the credentials and region in use are {current}; \
         refusing to read or change it. Use credentials of account {} and region {} (--region or AWS_REGION){}",
        .pinned.account_id, .pinned.region, .hint
    )]
    Mismatch { stack: String, pinned: Identity, current: Identity, source_of_pin: String, hint: &'static str },
    #[error(
        "stack `{stack}` is not pinned to an AWS account and region yet (its state predates pinning), and {} in {current}: \
         IAM roles are global and prove nothing. Refusing to read or change it. If the stack does live there, pin it with \
         `reconcile pin --account {} --region {}`; otherwise use the credentials and region it lives in",
        .looked_at.as_deref().map(|l| format!("none of its regional resources ({l}) was found")).unwrap_or_else(|| "it has no regional resource to look for".into()),
        .current.account_id, .current.region
    )]
    Unproven { stack: String, current: Identity, looked_at: Option<String> },
    #[error(
        "refusing to pin stack `{stack}` to {wanted}: the state records `{resource}` as {arn}, which is in {there}; \
         the stack's resources are not where the pin would say (the next apply there would build a second copy and lose \
         track of this one). Pin it where its ARNs say, or use the credentials and region it lives in"
    )]
    Contradicted { stack: String, wanted: Identity, resource: String, arn: String, there: String },
    #[error(transparent)]
    Aws(#[from] ProviderError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl IdentityError {
    /// The stack is refused (pinned elsewhere, or cannot be proven to live here), as opposed to a
    /// failure to ask (AWS or the state file failing).
    pub fn is_refusal(&self) -> bool {
        matches!(self, IdentityError::Mismatch { .. } | IdentityError::Unproven { .. } | IdentityError::Contradicted { .. })
    }

    /// A short label for metrics: `pinned_elsewhere` or `unproven`.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::Mismatch { .. } => "pinned_elsewhere",
            IdentityError::Unproven { .. } => "unproven",
            IdentityError::Contradicted { .. } => "contradicted",
            IdentityError::Aws(_) | IdentityError::State(_) => "error",
        }
    }
}

/// Checks that the credentials and region in use are where `stack` lives, back-filling the pin of a
/// state written before pinning existed. Returns where the caller is (to [`pin`] before the first
/// write). Makes one sts:GetCallerIdentity (once per process) and, only to back-fill, reads a few
/// regional resources of the stack.
pub async fn check(store: &Store, stack: &str, aws: &Aws) -> Result<Identity, IdentityError> {
    let current = aws.identity().await?;
    // The account is known: API Gateway calls from here on are paced from the state store's record of
    // its recent use, shared with every process using the store.
    aws.share_pacing(std::sync::Arc::new(store.clone()), &current);
    let state = store.load(stack).await?;
    let pinned = store.identity(stack).await?;
    if state.resources.is_empty() && store.pending_operations(stack).await?.is_empty() {
        // Destroyed (or never applied): nothing to lose, the stack may move.
        return Ok(current);
    }
    match pinned {
        Some(pinned) if pinned == current => Ok(current),
        Some(pinned) => Err(mismatch(stack, pinned, current, "as pinned in the state".into())),
        None => backfill(store, stack, &state, aws, current).await,
    }
}

/// Records where the stack lives, before its first AWS write (a no-op once pinned there). A stack
/// pinned elsewhere meanwhile (e.g. `reconcile pin --force` since the check) is refused, never re-pinned.
pub async fn pin(store: &Store, stack: &str, here: &Identity) -> Result<(), IdentityError> {
    match store.identity(stack).await? {
        Some(pinned) if pinned == *here => Ok(()),
        Some(pinned) => Err(mismatch(stack, pinned, here.clone(), "as pinned in the state".into())),
        None => {
            tracing::info!(stack, account = %here.account_id, partition = %here.partition, region = %here.region, "stack pinned");
            store.set_identity(stack, here).await?;
            Ok(())
        }
    }
}

/// Refuses a pin by hand (`reconcile pin`, with or without `--force`) that the ARNs the state recorded
/// contradict, naming the resource, as the automatic pinning does: a regional ARN (a function, a log
/// group, a regional web ACL) names its region, and every ARN that names an account (an IAM role's
/// too) names where the stack's resources are.
pub fn check_evidence(stack: &str, state: &StackState, wanted: &Identity) -> Result<(), Box<IdentityError>> {
    for r in state.resources.values() {
        let Some(arn) = r.outputs.get("arn") else { continue };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, partition, _, _, account, _] = parts.as_slice() else { continue };
        let there = match arn_identity(r) {
            Some(there) if there != *wanted => Some(there.to_string()),
            _ if !account.is_empty() && *account != wanted.account_id || !partition.is_empty() && *partition != wanted.partition => {
                Some(format!("account {account} ({partition})"))
            }
            _ => None,
        };
        if let Some(there) = there {
            return Err(Box::new(IdentityError::Contradicted {
                stack: stack.into(),
                wanted: wanted.clone(),
                resource: r.name.clone(),
                arn: arn.clone(),
                there,
            }));
        }
    }
    Ok(())
}

/// Unpins the stack when its state is empty and nothing is left half-made (after a destroy).
pub async fn release_if_empty(store: &Store, stack: &str) -> Result<(), IdentityError> {
    if store.load(stack).await?.resources.is_empty() && store.pending_operations(stack).await?.is_empty() {
        store.clear_identity(stack).await?;
    }
    Ok(())
}

fn mismatch(stack: &str, pinned: Identity, current: Identity, source_of_pin: String) -> IdentityError {
    let hint = if pinned.partition != current.partition { " (another partition: other credentials are needed)" } else { "" };
    IdentityError::Mismatch { stack: stack.into(), pinned, current, source_of_pin, hint }
}

/// Where an ARN the state recorded says the resource lives, for regional kinds whose ARN names both
/// the account and the region (Lambda functions, log groups, regional web ACLs).
fn arn_identity(r: &ResourceState) -> Option<Identity> {
    if r.kind.provider().placement(&r.physical_id) != Placement::RegionalArn {
        return None;
    }
    let arn = r.outputs.get("arn")?;
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, _, region, account, rest] = parts.as_slice() else { return None };
    // A CloudFront web ACL is global (its ARN says us-east-1 whatever the region in use).
    if partition.is_empty() || region.is_empty() || account.is_empty() || rest.starts_with("global/") {
        return None;
    }
    Some(Identity { account_id: account.to_string(), partition: partition.to_string(), region: region.to_string() })
}

/// Regional resources whose presence where the caller points proves the stack lives there.
fn regional(r: &ResourceState) -> bool {
    r.kind.provider().placement(&r.physical_id) != Placement::Anywhere
}

async fn backfill(store: &Store, stack: &str, state: &StackState, aws: &Aws, current: Identity) -> Result<Identity, IdentityError> {
    // The ARNs the state recorded already say where the stack was made: no read needed to refuse.
    for r in state.resources.values() {
        if let Some(there) = arn_identity(r).filter(|there| *there != current) {
            return Err(mismatch(stack, there, current, format!("from the ARN of `{}` in the state", r.name)));
        }
    }
    // Prefer resources with an ARN to compare, then the others (REST API ids are random per region).
    let mut candidates: Vec<&ResourceState> = state.resources.values().filter(|r| regional(r)).collect();
    candidates.sort_by_key(|r| arn_identity(r).is_none());
    let mut looked_at = Vec::new();
    for r in candidates.into_iter().take(BACKFILL_READS) {
        looked_at.push(format!("`{}`", r.name));
        let Some(live) = providers::read(aws, r.kind, &r.physical_id).await? else { continue };
        if let Some(recorded) = r.outputs.get("arn").filter(|_| arn_identity(r).is_some())
            && live.outputs.get("arn") != Some(recorded)
        {
            continue;
        }
        tracing::info!(
            stack,
            resource = %r.name,
            account = %current.account_id,
            region = %current.region,
            "state predates pinning: found the stack's resource here; pinning the stack"
        );
        store.set_identity(stack, &current).await?;
        return Ok(current);
    }
    Err(IdentityError::Unproven { stack: stack.into(), current, looked_at: (!looked_at.is_empty()).then(|| looked_at.join(", ")) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use std::collections::BTreeMap;

    fn resource(kind: Kind, physical_id: &str, arn: Option<&str>) -> ResourceState {
        ResourceState {
            name: "r".into(),
            kind,
            physical_id: physical_id.into(),
            attributes: serde_json::json!({}),
            outputs: arn.map(|a| BTreeMap::from([("arn".to_string(), a.to_string())])).unwrap_or_default(),
            depends_on: vec![],
        }
    }

    #[test]
    fn arns_of_regional_resources_say_where_the_stack_lives() {
        let f = resource(Kind::LambdaFunction, "F", Some("arn:aws:lambda:eu-west-1:111111111111:function:F"));
        assert_eq!(
            arn_identity(&f),
            Some(Identity { account_id: "111111111111".into(), partition: "aws".into(), region: "eu-west-1".into() })
        );
        let g = resource(Kind::LogGroup, "G", Some("arn:aws-cn:logs:cn-north-1:222222222222:log-group:G:*"));
        assert_eq!(arn_identity(&g).map(|i| (i.partition, i.region)), Some(("aws-cn".into(), "cn-north-1".into())));
        // IAM is global; CloudFront web ACLs too; an API Gateway ARN names no account.
        assert_eq!(arn_identity(&resource(Kind::IamRole, "R", Some("arn:aws:iam::111111111111:role/R"))), None);
        let global = resource(Kind::WebAcl, "CLOUDFRONT/a/b", Some("arn:aws:wafv2:us-east-1:111111111111:global/webacl/a/b"));
        assert_eq!(arn_identity(&global), None);
        assert!(!regional(&global));
        assert_eq!(arn_identity(&resource(Kind::RestApi, "abc", Some("arn:aws:apigateway:us-east-1::/restapis/abc"))), None);
        assert!(regional(&resource(Kind::RestApi, "abc", None)));
        assert!(!regional(&resource(Kind::IamRole, "R", None)));
        // An alias's ARN is its function's, qualified: regional, with the account.
        let alias = resource(Kind::LambdaAlias, "F:live", Some("arn:aws:lambda:eu-west-1:111111111111:function:F:live"));
        assert_eq!(arn_identity(&alias).map(|i| i.region), Some("eu-west-1".into()));
        assert!(!regional(&resource(Kind::LambdaPermission, "F/sid", None)));
    }

    #[test]
    fn a_pin_by_hand_that_the_recorded_arns_contradict_is_refused() {
        let here = Identity { account_id: "111111111111".into(), partition: "aws".into(), region: "eu-west-1".into() };
        let state = |r: ResourceState| StackState { resources: [(r.name.clone(), r)].into_iter().collect(), ..StackState::default() };
        let function = state(resource(Kind::LambdaFunction, "F", Some("arn:aws:lambda:eu-west-1:111111111111:function:F")));
        check_evidence("s", &function, &here).unwrap();
        let elsewhere = Identity { region: "us-east-1".into(), ..here.clone() };
        let e = check_evidence("s", &function, &elsewhere).unwrap_err();
        assert!(e.is_refusal());
        assert!(e.to_string().contains("the state records `r` as arn:aws:lambda:eu-west-1:111111111111:function:F, which is in account 111111111111 (aws) in eu-west-1"), "{e}");
        // IAM is global, but its ARN names the account.
        let role = state(resource(Kind::IamRole, "R", Some("arn:aws:iam::111111111111:role/R")));
        check_evidence("s", &role, &elsewhere).unwrap();
        let other = Identity { account_id: "222222222222".into(), ..here.clone() };
        let e = check_evidence("s", &role, &other).unwrap_err();
        assert!(e.to_string().contains("which is in account 111111111111 (aws)"), "{e}");
        // An API Gateway ARN names no account; a CloudFront web ACL's region is not where it lives.
        let api = state(resource(Kind::RestApi, "abc", Some("arn:aws:apigateway:us-east-1::/restapis/abc")));
        check_evidence("s", &api, &here).unwrap();
        let global = state(resource(Kind::WebAcl, "CLOUDFRONT/a/b", Some("arn:aws:wafv2:us-east-1:111111111111:global/webacl/a/b")));
        check_evidence("s", &global, &here).unwrap();
    }

    #[tokio::test]
    async fn pins_are_stored_and_cleared() {
        let store = Store::memory().await.unwrap();
        let here = Identity { account_id: "123456789012".into(), partition: "aws".into(), region: "us-east-1".into() };
        assert_eq!(store.identity("s").await.unwrap(), None);
        pin(&store, "s", &here).await.unwrap();
        assert_eq!(store.identity("s").await.unwrap(), Some(here.clone()));
        assert_eq!(store.load("s").await.unwrap().serial, 0, "pinning is not a change of the resources");
        store.put_resource("s", &resource(Kind::LogGroup, "G", None)).await.unwrap();
        release_if_empty(&store, "s").await.unwrap();
        assert_eq!(store.identity("s").await.unwrap(), Some(here.clone()), "a stack with resources stays pinned");
        store.delete_resource("s", "r").await.unwrap();
        release_if_empty(&store, "s").await.unwrap();
        assert_eq!(store.identity("s").await.unwrap(), None, "an empty stack may move");
    }
}
