//! The registry: every resource kind the engine manages, and the module that implements it.
//!
//! Adding a kind is one new module implementing [`Resource`](super::Resource), one variant below
//! with its arm in [`Kind::provider`] (the match has no fallback, so a kind without a provider does
//! not compile), and its section in `docs/manifest.md` (a unit test checks it is there).

use super::resource::{Provider, Registered};
use super::schema::KindSchema;
use super::{apigateway, iam_role, lambda_alias, lambda_function, lambda_permission, log_group, wafv2};

/// A resource kind the engine knows how to manage. In manifests and state it is written by its
/// type name (`aws_iam_role`…), which its schema holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    IamRole,
    LogGroup,
    LambdaFunction,
    LambdaPermission,
    LambdaAlias,
    RestApi,
    Deployment,
    Stage,
    ApiGatewayAccount,
    WebAcl,
    WebAclAssociation,
}

impl Kind {
    /// Every kind, in the order the manifest reference lists them.
    pub const ALL: &'static [Kind] = &[
        Kind::IamRole,
        Kind::LogGroup,
        Kind::LambdaFunction,
        Kind::LambdaPermission,
        Kind::LambdaAlias,
        Kind::RestApi,
        Kind::Deployment,
        Kind::Stage,
        Kind::ApiGatewayAccount,
        Kind::WebAcl,
        Kind::WebAclAssociation,
    ];

    /// The AWS service a read of the kind calls (its SigV4 name; a stage's web ACL association is read
    /// with the stage).
    pub fn service(self) -> &'static str {
        match self {
            Kind::IamRole => "iam",
            Kind::LogGroup => "logs",
            Kind::LambdaFunction | Kind::LambdaPermission | Kind::LambdaAlias => "lambda",
            Kind::RestApi | Kind::Deployment | Kind::Stage | Kind::ApiGatewayAccount | Kind::WebAclAssociation => "apigateway",
            Kind::WebAcl => "wafv2",
        }
    }

    /// The module that implements the kind.
    pub fn provider(self) -> &'static dyn Provider {
        match self {
            Kind::IamRole => &Registered::<iam_role::IamRole>::NEW,
            Kind::LogGroup => &Registered::<log_group::LogGroup>::NEW,
            Kind::LambdaFunction => &Registered::<lambda_function::LambdaFunction>::NEW,
            Kind::LambdaPermission => &Registered::<lambda_permission::LambdaPermission>::NEW,
            Kind::LambdaAlias => &Registered::<lambda_alias::LambdaAlias>::NEW,
            Kind::RestApi => &Registered::<apigateway::rest_api::RestApi>::NEW,
            Kind::Deployment => &Registered::<apigateway::deployment::Deployment>::NEW,
            Kind::Stage => &Registered::<apigateway::stage::Stage>::NEW,
            Kind::ApiGatewayAccount => &Registered::<apigateway::account::Account>::NEW,
            Kind::WebAcl => &Registered::<wafv2::web_acl::WebAcl>::NEW,
            Kind::WebAclAssociation => &Registered::<wafv2::association::Association>::NEW,
        }
    }

    pub fn schema(self) -> &'static KindSchema {
        self.provider().schema()
    }

    pub fn type_name(self) -> &'static str {
        self.schema().type_name
    }

    pub fn from_type_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.type_name() == name)
    }

    /// A region-wide setting there is one of per account and region: one stack owns it.
    pub fn is_singleton(self) -> bool {
        self.schema().singleton
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.type_name())
    }
}

impl<'de> serde::Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Kind::from_type_name(&name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.type_name()).collect();
            serde::de::Error::custom(format!("unknown resource type `{name}`; expected one of: {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once_under_its_own_name() {
        let mut names = std::collections::BTreeSet::new();
        for k in Kind::ALL {
            assert_eq!(k.provider().kind(), *k, "{k}: the registry hands out another kind's provider");
            assert_eq!(Kind::from_type_name(k.type_name()), Some(*k));
            assert!(names.insert(k.type_name()), "{k}: type name used twice");
            let s = k.schema();
            assert!(
                s.physical_name.is_empty() || s.field(s.physical_name).is_some_and(|f| f.required),
                "{k}: physical name must be required"
            );
            assert_eq!(s.taggable, s.field("tags").is_some(), "{k}: taggable kinds have `tags`");
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), *k);
        }
        // `Kind::ALL` lists every variant: the match has no fallback, so a new variant must be added here too.
        for k in Kind::ALL {
            let listed = match k {
                Kind::IamRole
                | Kind::LogGroup
                | Kind::LambdaFunction
                | Kind::LambdaPermission
                | Kind::LambdaAlias
                | Kind::RestApi
                | Kind::Deployment
                | Kind::Stage
                | Kind::ApiGatewayAccount
                | Kind::WebAcl
                | Kind::WebAclAssociation => true,
            };
            assert!(listed);
        }
    }

    #[test]
    fn every_kind_has_its_section_in_the_manifest_reference() {
        let reference = include_str!("../../docs/manifest.md");
        for k in Kind::ALL {
            let heading = format!("\n## {}\n", k.type_name());
            let start = reference.find(&heading).unwrap_or_else(|| panic!("docs/manifest.md has no `## {k}` section"));
            let body = &reference[start + heading.len()..];
            let section = &body[..body.find("\n## ").unwrap_or(body.len())];
            for field in k.schema().fields {
                assert!(
                    section.contains(&format!("| `{}` |", field.name)),
                    "docs/manifest.md, `## {k}`: no row for field `{}`",
                    field.name
                );
            }
            for (output, _) in k.schema().outputs {
                assert!(section.contains(&format!("| `{output}` |")), "docs/manifest.md, `## {k}`: no row for output `{output}`");
            }
        }
    }
}
