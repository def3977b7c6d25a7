//! The one trait every resource kind implements ([`Resource`]), and its object-safe face
//! ([`Provider`]) that the engine calls through the registry ([`Kind::provider`]).
//!
//! A kind module holds everything the kind knows: its schema, a typed spec (the resolved attributes,
//! deserialised once, so providers never read fields by string), its physical id, how to find what
//! an interrupted create left behind, derived outputs, and read / create / update / delete. Which AWS
//! errors mean "not found" and "already exists" is decided where the SDK's typed error is still at
//! hand (see [`ProviderError::sdk_classified`](super::ProviderError::sdk_classified)).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::registry::Kind;
use super::schema::KindSchema;
use super::{Applied, Aws, Desired, Live, ProviderError, Result};
use crate::artifact::Artifact;

/// A resource as read from AWS, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<S> {
    /// Its attributes in the manifest's shape.
    pub spec: S,
    /// What other resources may reference (`${name.output}`).
    pub outputs: BTreeMap<String, String>,
}

/// How the plan tells, before a create, whether what it would create already exists in AWS outside
/// this state (made by another state file, a lost one, or by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// Nothing to check: AWS assigns the id (a deployment), or the create adopts what is there (a
    /// region-wide setting).
    Nothing,
    /// The physical id is the name, unique in AWS: read it.
    Read(String),
    /// Unique in AWS, but not by physical id: the kind's `find` looks for it (a web ACL, by scope and name).
    Find,
    /// AWS keeps no name unique (REST APIs): the name is looked up in the kind's `list_names`,
    /// listed once per plan; `noun` is what the conflict message calls the resource.
    Listed { name: String, noun: &'static str },
}

/// Where a resource lives, for telling which account and region a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Global, or a part of something else: it says nothing about the region (IAM roles, permissions,
    /// associations, the account setting, CloudFront web ACLs).
    Anywhere,
    /// In one region: found where the caller points, it shows the stack lives there.
    Regional,
    /// In one region, and its `arn` output names the account and the region.
    RegionalArn,
}

/// One resource kind. Every item is required: a kind that misses a piece does not compile.
pub trait Resource: Send + Sync + 'static {
    /// The kind's attributes, as the manifest gives them (defaults filled in, references resolved)
    /// and as `read` reports them.
    type Spec: Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static;

    const KIND: Kind;

    /// Fields, defaults, outputs: what validation, planning and the manifest reference read.
    fn schema() -> &'static KindSchema;

    /// The physical id the spec fixes (a name), or `None` when AWS assigns it at create.
    fn physical_id(spec: &Self::Spec) -> Option<String>;

    /// How the plan checks that a create would not clash with, or duplicate, something in AWS.
    fn name_check(spec: &Self::Spec) -> NameCheck;

    /// Where the resource with physical id `id` lives.
    fn placement(id: &str) -> Placement;

    /// Every resource of the kind in the account and region, as (physical id, name): for kinds whose
    /// [`name_check`](Resource::name_check) is [`NameCheck::Listed`]. Others keep the default.
    fn list_names(_aws: &Aws) -> impl Future<Output = Result<Vec<(String, String)>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The resource this one belongs to, as (kind, physical id); the parent's owner owns an
    /// untaggable child.
    fn parent(id: &str) -> Option<(Kind, String)>;

    /// The physical id as AWS identifies the resource, for telling whether two ids name the same one.
    fn canonical_id(id: &str) -> String;

    /// The id AWS gave this very resource when it was made (an IAM RoleId, a log group's creation
    /// time, a REST API or web ACL id…), taken from its outputs: as `read` reports them, or as the
    /// state recorded them at create, adoption or import. Something deleted and re-made under the
    /// same name gets another one, so a live id that differs from the recorded one is not the
    /// resource this state made, whatever its tags say. `None` where AWS assigns nothing that tells
    /// two makings apart (a function's ARN is the same for a re-made function; its tags decide).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String>;

    /// Outputs that follow from the spec alone, known at plan time before the resource exists.
    fn derived_outputs(spec: &Self::Spec) -> BTreeMap<String, String>;

    /// Outputs an update from `current` to `desired` gives new values AWS assigns (a function's
    /// published version): unknown until apply, so what refers to them is planned to change. Kinds
    /// whose outputs an update keeps keep the default.
    fn unknown_after_update(_current: &Self::Spec, _desired: &Self::Spec) -> Vec<&'static str> {
        Vec::new()
    }

    /// Whether an update finishes a resource whose create did not (see [`ProviderError::Incomplete`]);
    /// if not, such a resource is replaced.
    fn finishes_incomplete() -> bool;

    /// Reads the resource with physical id `id`; `None` if it does not exist.
    fn read(aws: &Aws, id: &str) -> impl Future<Output = Result<Option<Observed<Self::Spec>>>> + Send;

    /// Looks for what an interrupted create may have made from `spec`; `taken` holds the physical ids
    /// the state already owns. Tag ownership is checked by the caller.
    fn find(
        aws: &Aws,
        spec: &Self::Spec,
        taken: &HashSet<String>,
    ) -> impl Future<Output = Result<Option<(String, Observed<Self::Spec>)>>> + Send;

    fn create(aws: &Aws, spec: &Self::Spec, artifact: Option<&Artifact>) -> impl Future<Output = Result<Applied>> + Send;

    /// Brings the resource `id` from `current` (as last read) to `desired`.
    fn update(
        aws: &Aws,
        id: &str,
        current: &Self::Spec,
        desired: &Self::Spec,
        artifact: Option<&Artifact>,
    ) -> impl Future<Output = Result<Applied>> + Send;

    /// Deletes the resource; one already gone is success.
    fn delete(aws: &Aws, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Validates one structured value (an element of an array of tables, a JSON document) of `field`
    /// and fills in its defaults, so that it has the canonical shape `read` reports. Kinds without
    /// structured fields keep the default.
    fn structured(_field: &str, value: Value) -> std::result::Result<Value, String> {
        Ok(value)
    }

    /// Rules across fields, checked at validate time on the literal attributes (references are
    /// still `${...}` text): each problem with the field to point at. Kinds without such rules keep
    /// the default.
    fn check(_attrs: &Map<String, Value>) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A [`Resource`] as the engine calls it: attributes as JSON maps, futures boxed.
pub trait Provider: Send + Sync {
    fn kind(&self) -> Kind;
    fn schema(&self) -> &'static KindSchema;
    /// The typed spec of `attrs`, back as the JSON map `read` reports (defaults and canonical
    /// shapes included): the manifest attributes → spec → live attributes round trip.
    fn normalize(&self, attrs: &Map<String, Value>) -> Result<Map<String, Value>>;
    fn physical_id(&self, attrs: &Map<String, Value>) -> Result<Option<String>>;
    fn name_check(&self, attrs: &Map<String, Value>) -> Result<NameCheck>;
    fn placement(&self, id: &str) -> Placement;
    fn list_names<'a>(&'a self, aws: &'a Aws) -> BoxFuture<'a, Result<Vec<(String, String)>>>;
    fn parent(&self, id: &str) -> Option<(Kind, String)>;
    fn canonical_id(&self, id: &str) -> String;
    fn assigned_id(&self, outputs: &BTreeMap<String, String>) -> Option<String>;
    fn derived_outputs(&self, attrs: &Map<String, Value>) -> Result<BTreeMap<String, String>>;
    fn unknown_after_update(&self, current: &Map<String, Value>, desired: &Map<String, Value>) -> Result<Vec<&'static str>>;
    fn finishes_incomplete(&self) -> bool;
    fn read<'a>(&'a self, aws: &'a Aws, id: &'a str) -> BoxFuture<'a, Result<Option<Live>>>;
    fn find<'a>(
        &'a self,
        aws: &'a Aws,
        attrs: &'a Map<String, Value>,
        taken: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<(String, Live)>>>;
    fn create<'a>(&'a self, aws: &'a Aws, desired: Desired<'a>) -> BoxFuture<'a, Result<Applied>>;
    fn update<'a>(
        &'a self,
        aws: &'a Aws,
        id: &'a str,
        current: &'a Map<String, Value>,
        desired: Desired<'a>,
    ) -> BoxFuture<'a, Result<Applied>>;
    fn delete<'a>(&'a self, aws: &'a Aws, id: &'a str) -> BoxFuture<'a, Result<()>>;
    fn structured(&self, field: &str, value: Value) -> std::result::Result<Value, String>;
    fn check(&self, attrs: &Map<String, Value>) -> Vec<(&'static str, String)>;
}

/// The registry's entry for kind `R`.
pub struct Registered<R>(PhantomData<fn() -> R>);

impl<R> Registered<R> {
    pub const NEW: Registered<R> = Registered(PhantomData);
}

fn spec<R: Resource>(attrs: &Map<String, Value>) -> Result<R::Spec> {
    serde_json::from_value::<R::Spec>(Value::Object(attrs.clone()))
        .map_err(|e| ProviderError::Spec { kind: R::KIND.type_name(), detail: e.to_string() })
}

fn live<R: Resource>(o: Observed<R::Spec>) -> Result<Live> {
    match serde_json::to_value(&o.spec) {
        Ok(Value::Object(attrs)) => Ok(Live { attrs, outputs: o.outputs }),
        Ok(other) => Err(ProviderError::Spec { kind: R::KIND.type_name(), detail: format!("spec serialised as {other}, not a table") }),
        Err(e) => Err(ProviderError::Spec { kind: R::KIND.type_name(), detail: e.to_string() }),
    }
}

impl<R: Resource> Provider for Registered<R> {
    fn kind(&self) -> Kind {
        R::KIND
    }
    fn schema(&self) -> &'static KindSchema {
        R::schema()
    }
    fn normalize(&self, attrs: &Map<String, Value>) -> Result<Map<String, Value>> {
        live::<R>(Observed { spec: spec::<R>(attrs)?, outputs: BTreeMap::new() }).map(|l| l.attrs)
    }
    fn physical_id(&self, attrs: &Map<String, Value>) -> Result<Option<String>> {
        Ok(R::physical_id(&spec::<R>(attrs)?))
    }
    fn name_check(&self, attrs: &Map<String, Value>) -> Result<NameCheck> {
        Ok(R::name_check(&spec::<R>(attrs)?))
    }
    fn list_names<'a>(&'a self, aws: &'a Aws) -> BoxFuture<'a, Result<Vec<(String, String)>>> {
        Box::pin(R::list_names(aws))
    }
    fn placement(&self, id: &str) -> Placement {
        R::placement(id)
    }
    fn parent(&self, id: &str) -> Option<(Kind, String)> {
        R::parent(id)
    }
    fn canonical_id(&self, id: &str) -> String {
        R::canonical_id(id)
    }
    fn assigned_id(&self, outputs: &BTreeMap<String, String>) -> Option<String> {
        R::assigned_id(outputs).filter(|id| !id.is_empty())
    }
    fn derived_outputs(&self, attrs: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
        Ok(R::derived_outputs(&spec::<R>(attrs)?))
    }
    fn unknown_after_update(&self, current: &Map<String, Value>, desired: &Map<String, Value>) -> Result<Vec<&'static str>> {
        Ok(R::unknown_after_update(&spec::<R>(current)?, &spec::<R>(desired)?))
    }
    fn finishes_incomplete(&self) -> bool {
        R::finishes_incomplete()
    }
    fn read<'a>(&'a self, aws: &'a Aws, id: &'a str) -> BoxFuture<'a, Result<Option<Live>>> {
        Box::pin(async move { R::read(aws, id).await?.map(live::<R>).transpose() })
    }
    fn find<'a>(
        &'a self,
        aws: &'a Aws,
        attrs: &'a Map<String, Value>,
        taken: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<Option<(String, Live)>>> {
        Box::pin(async move {
            let spec = spec::<R>(attrs)?;
            match R::find(aws, &spec, taken).await? {
                Some((id, o)) => Ok(Some((id, live::<R>(o)?))),
                None => Ok(None),
            }
        })
    }
    fn create<'a>(&'a self, aws: &'a Aws, desired: Desired<'a>) -> BoxFuture<'a, Result<Applied>> {
        Box::pin(async move { R::create(aws, &spec::<R>(desired.attrs)?, desired.artifact).await })
    }
    fn update<'a>(
        &'a self,
        aws: &'a Aws,
        id: &'a str,
        current: &'a Map<String, Value>,
        desired: Desired<'a>,
    ) -> BoxFuture<'a, Result<Applied>> {
        Box::pin(async move { R::update(aws, id, &spec::<R>(current)?, &spec::<R>(desired.attrs)?, desired.artifact).await })
    }
    fn delete<'a>(&'a self, aws: &'a Aws, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(R::delete(aws, id))
    }
    fn structured(&self, field: &str, value: Value) -> std::result::Result<Value, String> {
        R::structured(field, value)
    }
    fn check(&self, attrs: &Map<String, Value>) -> Vec<(&'static str, String)> {
        R::check(attrs)
    }
}

/// Finds by physical id, for kinds whose spec fixes it: what an interrupted create made is simply
/// there under its name.
pub async fn find_by_name<R: Resource>(aws: &Aws, spec: &R::Spec) -> Result<Option<(String, Observed<R::Spec>)>> {
    let Some(id) = R::physical_id(spec) else { return Ok(None) };
    Ok(R::read(aws, &id).await?.map(|o| (id, o)))
}
