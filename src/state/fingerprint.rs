//! Secret values never reach the state: each is recorded as a keyed fingerprint,
//! `hmac-sha256:<hex>` (HMAC-SHA256 under a key the state does not hold), so that reading the state
//! (a copied SQLite file, a PostgreSQL dump) does not let anyone test guesses of a secret, as an
//! unkeyed hash would (`allowed = ["alpha", "beta"]` is read at once).
//!
//! The key, in order: `--secret-key-file` / `RECONCILE_SECRET_KEY_FILE` (a file), `RECONCILE_SECRET_KEY`
//! (the key itself, for a team sharing a PostgreSQL state: every member supplies the same one), else,
//! for a SQLite state, the file `<state>.key` beside it, made (32 random bytes, hex, mode 0600) when
//! the state is first opened without one. A PostgreSQL state without a key records no fingerprint at all, only the marker
//! `(sensitive)`: reconcile never needs one to plan (a secret is compared with the value AWS has live),
//! so nothing but `plan --out` (whose file proves the secrets unchanged with them) needs the key.
//!
//! A fingerprint written by an older version (`sha256:<hex>`, unkeyed) is re-keyed by the next apply
//! where the manifest's value still matches it, and replaced by the marker where it does not
//! ([`Store::rekey_fingerprints`]); from then on the state holds nothing a guess can be tested against.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::backend::{StackTx, on_db};
use super::lease::FencedWrite;
use super::{Result, StateError, Store};
use crate::providers::Kind;
use crate::redact::SENSITIVE;

/// The prefix of a keyed fingerprint.
pub const KEYED: &str = "hmac-sha256:";
/// The prefix of an older version's unkeyed fingerprint.
pub const UNKEYED: &str = "sha256:";
/// The shortest key accepted (bytes).
pub const MIN_KEY_BYTES: usize = 16;

/// The key secret fingerprints are made with. Never printed.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Where the key comes from, as the command line and environment say.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// `--secret-key-file` / `RECONCILE_SECRET_KEY_FILE`.
    pub file: Option<PathBuf>,
    /// `RECONCILE_SECRET_KEY`.
    pub key: Option<String>,
}

impl SecretKey {
    /// A key of these bytes (refused when shorter than [`MIN_KEY_BYTES`]).
    pub fn new(bytes: impl Into<Vec<u8>>, from: &str) -> Result<SecretKey> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(StateError::SecretKey(format!(
                "the secret key from {from} is {} bytes long; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                bytes.len()
            )));
        }
        Ok(SecretKey(bytes))
    }

    /// The key `source` names; for a SQLite state at `state` without one, the key file beside it
    /// (made when missing). `None`: a PostgreSQL state and no key given.
    pub fn find(source: &KeySource, state: &Path, postgres: bool) -> Result<Option<SecretKey>> {
        if let Some(file) = &source.file {
            return read_key_file(file).map(Some);
        }
        if let Some(key) = source.key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            return SecretKey::new(key.as_bytes(), "RECONCILE_SECRET_KEY").map(Some);
        }
        if postgres {
            return Ok(None);
        }
        let file = key_file_beside(state);
        match read_key_file(&file) {
            Ok(key) => Ok(Some(key)),
            Err(StateError::SecretKeyMissing(_)) => create_key_file(&file).map(Some),
            Err(e) => Err(e),
        }
    }

    /// The keyed fingerprint of `value`.
    pub fn fingerprint(&self, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return SENSITIVE.to_string();
        };
        mac.update(value.as_bytes());
        format!("{KEYED}{}", hex(&mac.finalize().into_bytes()))
    }
}

/// The key file of a SQLite state: `<state>.key`, beside it.
pub fn key_file_beside(state: &Path) -> PathBuf {
    let mut name = state.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "reconcile.db".into());
    name.push(".key");
    state.with_file_name(name)
}

fn read_key_file(path: &Path) -> Result<SecretKey> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            SecretKey::new(text.trim().as_bytes(), &path.display().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StateError::SecretKeyMissing(path.to_path_buf())),
        Err(e) => Err(StateError::SecretKey(format!("cannot read the secret key file {}: {e}", path.display()))),
    }
}

/// Makes a new key file (32 random bytes as hex, mode 0600), atomically: written complete under a
/// private name beside it, then linked into place, so another process making one at the same time
/// never reads a half-written key; whoever links second reads the first one's key instead.
fn create_key_file(path: &Path) -> Result<SecretKey> {
    use std::io::Write;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| StateError::SecretKey(format!("cannot draw a random secret key: {e}")))?;
    let text = hex(&bytes);
    let failed = |e: std::io::Error| StateError::SecretKey(format!("cannot create the secret key file {}: {e}", path.display()));
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut unique = [0u8; 8];
    getrandom::getrandom(&mut unique).map_err(|e| StateError::SecretKey(format!("cannot draw a random name: {e}")))?;
    name.push(format!(".{}.{}.tmp", std::process::id(), hex(&unique)));
    let tmp = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "made the key of the state's secret fingerprints");
            SecretKey::new(text.into_bytes(), &path.display().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(failed(e)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` is a fingerprint this version wrote (`hmac-sha256:` and 64 hex digits) or the marker.
fn is_recorded_form(s: &str) -> bool {
    s == SENSITIVE || s.strip_prefix(KEYED).is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is an older version's unkeyed fingerprint.
fn is_unkeyed(s: &str) -> bool {
    s.strip_prefix(UNKEYED).is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replaces every value of the kind's secret fields (each value of a map, or the field's value
/// itself) by its keyed fingerprint (without a key: by the marker). A value already in a recorded
/// form stays; an unkeyed fingerprint becomes the marker.
pub fn fingerprint_secrets(kind: Kind, attrs: &mut Map<String, Value>, key: Option<&SecretKey>) {
    let fields: Vec<&str> = kind.schema().secret_fields().map(|f| f.name).collect();
    fingerprint_fields(&fields, attrs, key);
}

/// [`fingerprint_secrets`] of the fields named `fields`, whatever their shape: a map's values, a
/// list's items, or a scalar itself (stored in clear by the version before this one).
fn fingerprint_fields(fields: &[&str], attrs: &mut Map<String, Value>, key: Option<&SecretKey>) {
    let seal = |v: &mut Value| {
        let text = match &*v {
            Value::Null => return,
            Value::String(s) if is_recorded_form(s) => return,
            Value::String(s) if is_unkeyed(s) => {
                *v = Value::String(SENSITIVE.into());
                return;
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *v = Value::String(key.map_or_else(|| SENSITIVE.to_string(), |k| k.fingerprint(&text)));
    };
    for field in fields {
        match attrs.get_mut(*field) {
            Some(Value::Object(map)) => map.values_mut().for_each(seal),
            Some(Value::Array(items)) => items.iter_mut().for_each(seal),
            Some(v) => seal(v),
            None => {}
        }
    }
}

/// Re-keys the unkeyed fingerprints of `recorded` (a resource's recorded attributes) from `desired`
/// (the manifest's values): where sha256(desired value) is the recorded one, its keyed fingerprint
/// (or the marker without a key); anywhere else the marker. Whether anything changed.
fn rekey(kind: Kind, recorded: &mut Map<String, Value>, desired: Option<&Map<String, Value>>, key: Option<&SecretKey>) -> bool {
    let mut changed = false;
    for field in kind.schema().secret_fields() {
        let want = desired.and_then(|d| d.get(field.name));
        let mut fix = |v: &mut Value, want: Option<&Value>| {
            let Value::String(s) = v else { return };
            if !is_unkeyed(s) {
                return;
            }
            let plain = want.map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_string));
            let fresh = match (plain, key) {
                (Some(p), Some(k)) if format!("{UNKEYED}{}", hex(&Sha256::digest(p.as_bytes()))) == *s => k.fingerprint(&p),
                _ => SENSITIVE.to_string(),
            };
            *v = Value::String(fresh);
            changed = true;
        };
        match recorded.get_mut(field.name) {
            Some(Value::Object(map)) => {
                for (k, v) in map.iter_mut() {
                    fix(v, want.and_then(|w| w.get(k)));
                }
            }
            Some(v @ Value::String(_)) => fix(v, want),
            _ => {}
        }
    }
    changed
}

impl Store {
    /// This store, making secret fingerprints with `key` (`None`: recording only the marker).
    pub fn with_secret_key(mut self, key: Option<SecretKey>) -> Store {
        self.secret_key = key.map(std::sync::Arc::new);
        self
    }

    /// The key of the secret fingerprints, if this run has one.
    pub fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_deref()
    }

    /// Re-keys the unkeyed fingerprints (an older version's `sha256:`) the state holds for `stack`,
    /// from the manifest's values (`desired`, by resource key): see the module documentation. No AWS
    /// call; bumps the serial only if something changed. How many resources changed.
    pub async fn rekey_fingerprints(&self, stack: &str, desired: &std::collections::HashMap<String, Map<String, Value>>) -> Result<usize> {
        let rows: Vec<(String, String, String)> = on_db!(self.db()?, pool => {
            sqlx::query_as("SELECT name, kind, attributes FROM resources WHERE stack = $1 AND attributes LIKE '%\"sha256:%'")
                .bind(stack)
                .fetch_all(pool)
                .await?
        });
        let mut updates = Vec::new();
        for (name, kind, attributes) in rows {
            let Some(kind) = Kind::from_type_name(&kind) else { continue };
            let Ok(Value::Object(mut attrs)) = serde_json::from_str::<Value>(&attributes) else { continue };
            if rekey(kind, &mut attrs, desired.get(&name), self.secret_key()) {
                updates.push((name, Value::Object(attrs).to_string()));
            }
        }
        if updates.is_empty() {
            return Ok(0);
        }
        let fence = self.fence(stack)?;
        let n = updates.len();
        on_db!(self.db()?, pool => {
            let mut tx = pool.write_fenced(self.fence.as_deref(), self.file.as_ref()).await?;
            tx.bump(stack, fence).await?;
            for (name, attributes) in &updates {
                sqlx::query("UPDATE resources SET attributes = $1 WHERE stack = $2 AND name = $3")
                    .bind(attributes)
                    .bind(stack)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, StateError>(())
        })?;
        tracing::info!(stack, resources = n, "re-keyed the secret fingerprints an older version left unkeyed");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> SecretKey {
        SecretKey::new(*b"0123456789abcdef0123456789abcdef", "test").unwrap()
    }

    #[test]
    fn a_fingerprint_is_keyed_and_cannot_be_matched_by_hashing_a_guess() {
        let mut attrs = Map::new();
        attrs.insert("secret_environment".into(), json!({"PW": "alpha"}));
        fingerprint_secrets(Kind::LambdaFunction, &mut attrs, Some(&key()));
        let fp = attrs["secret_environment"]["PW"].as_str().unwrap().to_string();
        assert!(fp.starts_with(KEYED) && fp.len() == KEYED.len() + 64, "{fp}");
        let unkeyed = hex(&Sha256::digest(b"alpha"));
        assert!(!fp.contains(&unkeyed), "an unkeyed hash of the guess does not match");
        let other = SecretKey::new(*b"another key, sixteen bytes or more", "test").unwrap();
        assert_ne!(other.fingerprint("alpha"), fp, "another key gives another fingerprint");
        // Idempotent: recording a record again leaves its fingerprints as they are.
        let again = attrs.clone();
        fingerprint_secrets(Kind::LambdaFunction, &mut attrs, Some(&key()));
        assert_eq!(attrs, again);
        // No key: only the marker.
        let mut attrs = Map::new();
        attrs.insert("secret_environment".into(), json!({"PW": "alpha", "OLD": format!("sha256:{unkeyed}")}));
        fingerprint_secrets(Kind::LambdaFunction, &mut attrs, None);
        assert_eq!(attrs["secret_environment"], json!({"PW": SENSITIVE, "OLD": SENSITIVE}));
        assert!(SecretKey::new(*b"short", "x").is_err());
    }

    #[test]
    fn a_scalar_secret_field_is_fingerprinted_too() {
        let mut attrs = Map::new();
        attrs.insert("token".into(), json!("beta"));
        attrs.insert("pin".into(), json!(1234));
        attrs.insert("plain".into(), json!("shown"));
        fingerprint_fields(&["token", "pin"], &mut attrs, Some(&key()));
        assert_eq!(attrs["token"], json!(key().fingerprint("beta")));
        assert_eq!(attrs["pin"], json!(key().fingerprint("1234")));
        assert_eq!(attrs["plain"], json!("shown"));
        // Even a value that looks like an older fingerprint is not kept as it is.
        let mut attrs = Map::new();
        attrs.insert("token".into(), json!("sha256:not-a-real-hash"));
        fingerprint_fields(&["token"], &mut attrs, Some(&key()));
        assert_eq!(attrs["token"], json!(key().fingerprint("sha256:not-a-real-hash")));
    }

    #[test]
    fn unkeyed_fingerprints_are_rekeyed_where_the_manifest_still_matches_and_dropped_elsewhere() {
        let old = |v: &str| format!("sha256:{}", hex(&Sha256::digest(v.as_bytes())));
        let mut recorded = Map::new();
        recorded.insert("secret_environment".into(), json!({"SAME": old("kept"), "ROTATED": old("before"), "GONE": old("x")}));
        let mut desired = Map::new();
        desired.insert("secret_environment".into(), json!({"SAME": "kept", "ROTATED": "after"}));
        assert!(rekey(Kind::LambdaFunction, &mut recorded, Some(&desired), Some(&key())));
        assert_eq!(recorded["secret_environment"], json!({"SAME": key().fingerprint("kept"), "ROTATED": SENSITIVE, "GONE": SENSITIVE}));
        assert!(!rekey(Kind::LambdaFunction, &mut recorded, Some(&desired), Some(&key())), "once");
    }

    #[test]
    fn a_sqlite_state_gets_a_key_file_beside_it_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("reconcile.db");
        let a = SecretKey::find(&KeySource::default(), &state, false).unwrap().unwrap();
        let file = dir.path().join("reconcile.db.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let b = SecretKey::find(&KeySource::default(), &state, false).unwrap().unwrap();
        assert_eq!(a.fingerprint("v"), b.fingerprint("v"), "read back, not made again");
        assert!(SecretKey::find(&KeySource::default(), &state, true).unwrap().is_none(), "PostgreSQL without a key");
        let given = KeySource { key: Some("a team key of enough bytes".into()), file: None };
        assert!(SecretKey::find(&given, &state, true).unwrap().is_some());
        // Many processes opening a new state at once all get the one key.
        let fresh = dir.path().join("fresh.db");
        let keys: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| SecretKey::find(&KeySource::default(), &fresh, false).unwrap().unwrap().fingerprint("v")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        let missing = KeySource { file: Some(dir.path().join("nope")), key: None };
        assert!(SecretKey::find(&missing, &state, false).is_err(), "a named key file must exist");
    }
}
