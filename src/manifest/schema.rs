//! What each resource kind accepts: pure data, shared by validation, planning and the manifest reference.

use serde_json::{Value, json};

/// A resource kind the engine knows how to manage.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    #[serde(rename = "aws_iam_role")]
    IamRole,
    #[serde(rename = "aws_cloudwatch_log_group")]
    LogGroup,
    #[serde(rename = "aws_lambda_function")]
    LambdaFunction,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::IamRole, Kind::LogGroup, Kind::LambdaFunction];

    pub fn type_name(self) -> &'static str {
        self.schema().type_name
    }

    pub fn from_type_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.type_name() == name)
    }

    pub fn schema(self) -> &'static KindSchema {
        match self {
            Kind::IamRole => &IAM_ROLE,
            Kind::LogGroup => &LOG_GROUP,
            Kind::LambdaFunction => &LAMBDA_FUNCTION,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

/// The shape a field's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// An integer within an inclusive range.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    StringList,
    /// A table of string values (tags, environment variables).
    StringMap,
    /// Any TOML table, kept as a JSON document (IAM policy documents).
    Json,
    /// A table whose values are JSON documents (inline policies by name).
    JsonMap,
    /// A path relative to the manifest file (Lambda code: a file or a folder).
    Path,
}

impl FieldType {
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Integer { .. } => "an integer",
            FieldType::Boolean => "a boolean",
            FieldType::StringList => "an array of strings",
            FieldType::StringMap => "a table of strings",
            FieldType::Json => "a table (JSON document)",
            FieldType::JsonMap => "a table of tables (JSON documents by name)",
            FieldType::Path => "a path (string) relative to the manifest",
        }
    }
}

/// A field's default when the manifest leaves it out.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    Int(i64),
    Str(&'static str),
    EmptyMap,
    EmptyList,
}

impl Default {
    pub fn value(self) -> Value {
        match self {
            Default::Int(i) => json!(i),
            Default::Str(s) => json!(s),
            Default::EmptyMap => json!({}),
            Default::EmptyList => json!([]),
        }
    }
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Changing it means the resource must be replaced.
    pub force_new: bool,
    pub default: Option<Default>,
    /// One of these values, if set.
    pub one_of: &'static [&'static str],
    pub doc: &'static str,
}

impl Field {
    const fn new(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: false,
            force_new: false,
            default: None,
            one_of: &[],
            doc,
        }
    }
    const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    const fn force_new(mut self) -> Field {
        self.force_new = true;
        self
    }
    const fn default(mut self, d: Default) -> Field {
        self.default = Some(d);
        self
    }
    const fn one_of(mut self, values: &'static [&'static str]) -> Field {
        self.one_of = values;
        self
    }
}

#[derive(Debug)]
pub struct KindSchema {
    pub type_name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// The field that holds the resource's physical name (unique per kind and account).
    pub physical_name: &'static str,
    /// What other resources may reference as `${name.output}`.
    pub outputs: &'static [(&'static str, &'static str)],
    /// Whether the kind carries tags (ownership tags are added to every taggable resource).
    pub taggable: bool,
}

impl KindSchema {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|(o, _)| *o == name)
    }
}

use FieldType as T;

const TAGS: Field = Field::new(
    "tags",
    T::StringMap,
    "Tags; the ownership tags `reconcile:stack` and `reconcile:managed-by` are added",
)
.default(Default::EmptyMap);

/// Log group retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[i64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

pub const LAMBDA_RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided.al2",
    "provided.al2023",
];

static IAM_ROLE: KindSchema = KindSchema {
    type_name: "aws_iam_role",
    doc: "An IAM role with its trust policy, inline policies and managed policy attachments.",
    fields: &[
        Field::new("name", T::String, "Role name")
            .required()
            .force_new(),
        Field::new("assume_role_policy", T::Json, "Trust policy document").required(),
        Field::new("description", T::String, "Description").default(Default::Str("")),
        Field::new("path", T::String, "Path")
            .default(Default::Str("/"))
            .force_new(),
        Field::new(
            "max_session_duration",
            T::Integer {
                min: 3600,
                max: 43200,
            },
            "Maximum session duration in seconds",
        )
        .default(Default::Int(3600)),
        Field::new(
            "inline_policies",
            T::JsonMap,
            "Inline policies: policy name → policy document",
        )
        .default(Default::EmptyMap),
        Field::new(
            "managed_policy_arns",
            T::StringList,
            "ARNs of managed policies to attach",
        )
        .default(Default::EmptyList),
        TAGS,
    ],
    physical_name: "name",
    outputs: &[
        ("arn", "Role ARN"),
        ("name", "Role name"),
        ("id", "Role id"),
    ],
    taggable: true,
};

static LOG_GROUP: KindSchema = KindSchema {
    type_name: "aws_cloudwatch_log_group",
    doc: "A CloudWatch Logs log group.",
    fields: &[
        Field::new("name", T::String, "Log group name")
            .required()
            .force_new(),
        Field::new(
            "retention_in_days",
            T::Integer { min: 0, max: 3653 },
            "Retention in days (one of the values CloudWatch accepts; 0 = never expire)",
        )
        .default(Default::Int(0)),
        TAGS,
    ],
    physical_name: "name",
    outputs: &[
        ("arn", "Log group ARN (without the trailing `:*`)"),
        ("name", "Log group name"),
    ],
    taggable: true,
};

static LAMBDA_FUNCTION: KindSchema = KindSchema {
    type_name: "aws_lambda_function",
    doc: "A Lambda function whose code is a file or folder next to the manifest, zipped in-process.",
    fields: &[
        Field::new("function_name", T::String, "Function name")
            .required()
            .force_new(),
        Field::new("runtime", T::String, "Runtime identifier")
            .required()
            .one_of(LAMBDA_RUNTIMES),
        Field::new("handler", T::String, "Handler, e.g. `index.handler`").required(),
        Field::new(
            "role",
            T::String,
            "Execution role ARN, usually `${role.arn}`",
        )
        .required(),
        Field::new(
            "code",
            T::Path,
            "File or folder with the code, relative to the manifest",
        )
        .required(),
        Field::new(
            "memory_size",
            T::Integer {
                min: 128,
                max: 10240,
            },
            "Memory in MB",
        )
        .default(Default::Int(128)),
        Field::new(
            "timeout",
            T::Integer { min: 1, max: 900 },
            "Timeout in seconds",
        )
        .default(Default::Int(3)),
        Field::new("description", T::String, "Description").default(Default::Str("")),
        Field::new("architecture", T::String, "Instruction set")
            .default(Default::Str("x86_64"))
            .one_of(&["x86_64", "arm64"]),
        Field::new("environment", T::StringMap, "Environment variables").default(Default::EmptyMap),
        TAGS,
    ],
    physical_name: "function_name",
    outputs: &[
        ("arn", "Function ARN"),
        ("name", "Function name"),
        ("invoke_arn", "ARN API Gateway uses to invoke the function"),
        ("code_sha256", "Base64 SHA-256 of the deployed zip"),
    ],
    taggable: true,
};

/// Fields computed from the manifest rather than written in it.
pub const CODE_SHA256: &str = "code_sha256";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_type_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_type_name(k.type_name()), Some(*k));
            let s = k.schema();
            assert!(
                s.field(s.physical_name).is_some_and(|f| f.required),
                "{k}: physical name field must be required"
            );
        }
    }
}
