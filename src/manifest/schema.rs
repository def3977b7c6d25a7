//! What each resource kind accepts. The schemas live with their kinds (`crate::providers`); this
//! module adds what the manifest layer does with them: secrets and structured values.

use serde_json::Value;

pub use crate::providers::Kind;
pub use crate::providers::lambda_function::LAMBDA_RUNTIMES;
pub use crate::providers::log_group::LOG_RETENTION_DAYS;
pub use crate::providers::schema::{CODE_SHA256, Check, DefaultValue, Field, FieldType, Identity, KindSchema};

/// What a secret value is shown as.
pub use crate::redact::SENSITIVE;

/// Moves the live values of keys the manifest declares secret from the plain map (`environment`)
/// to the secret one (`secret_environment`), so both compare like for like.
pub fn split_secrets(kind: Kind, live: &mut serde_json::Map<String, Value>, desired: &serde_json::Map<String, Value>) {
    split_secrets_known(kind, live, desired, None);
}

/// Like [`split_secrets`], also for the keys `recorded` (the state's last applied attributes) holds as
/// secret: a key that was secret stays secret when it leaves the manifest or moves to the plain map,
/// so its live value is only ever compared (and shown) as a secret.
pub fn split_secrets_known(
    kind: Kind,
    live: &mut serde_json::Map<String, Value>,
    desired: &serde_json::Map<String, Value>,
    recorded: Option<&serde_json::Map<String, Value>>,
) {
    for field in kind.schema().secret_fields() {
        let Some(plain) = field.name.strip_prefix("secret_") else { continue };
        let keys_of = |m: Option<&serde_json::Map<String, Value>>| -> Vec<String> {
            m.and_then(|m| m.get(field.name)).and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
        };
        let mut keys = keys_of(Some(desired));
        keys.extend(keys_of(recorded));
        let mut secret = serde_json::Map::new();
        if let Some(Value::Object(map)) = live.get_mut(plain) {
            for k in keys {
                if let Some(v) = map.remove(&k) {
                    secret.insert(k, v);
                }
            }
        }
        live.insert(field.name.to_string(), Value::Object(secret));
    }
}
