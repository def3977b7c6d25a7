//! The proxy's configuration: the fault rates, `--only`, `--apigw-limits` and the per-operation `fail`
//! rules, as set on the command line and patched through the control endpoint.

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub throttle_rate: f64,
    pub error_rate: f64,
    pub drop_rate: f64,
    pub seed: u64,
    /// Empty: every service.
    pub only: Vec<String>,
    /// Enforce API Gateway's account limits.
    pub apigw_limits: bool,
    /// Per-operation faults.
    pub fail: Vec<FailRule>,
    /// Calls forwarded whose answer is held back (never sent).
    pub hold: Vec<HoldRule>,
}

/// Forwards chosen calls of one named operation upstream and holds their answers back for good: the
/// call reached AWS, its client never learns the outcome (to kill the client at that moment).
#[derive(Debug, Clone, PartialEq)]
pub struct HoldRule {
    /// SigV4 service name; `None`: any service.
    pub service: Option<String>,
    pub operation: String,
    /// The first call held (1-based).
    pub nth: u64,
    /// How many calls in a row, from the `nth`.
    pub times: u64,
}

impl HoldRule {
    pub fn parse(v: &Value) -> Result<HoldRule, String> {
        let obj = v.as_object().ok_or_else(|| format!("hold: each rule must be a JSON object, got {v}"))?;
        if let Some(k) = obj.keys().find(|k| !["operation", "service", "nth", "times"].contains(&k.as_str())) {
            return Err(format!("hold: unknown key {k:?}"));
        }
        // The same keys mean the same as in a `fail` rule.
        let mut as_fail = obj.clone();
        as_fail.insert("message".into(), json!("held"));
        let f = FailRule::parse(&Value::Object(as_fail)).map_err(|e| e.replacen("fail:", "hold:", 1))?;
        Ok(HoldRule { service: f.service, operation: f.operation, nth: f.nth, times: f.times })
    }

    pub fn to_json(&self) -> Value {
        json!({"service": self.service, "operation": self.operation, "nth": self.nth, "times": self.times})
    }

    pub fn matches(&self, service: &str, operation: &str) -> bool {
        self.operation == operation && self.service.as_deref().is_none_or(|s| s == service)
    }

    /// Whether the `call`-th matching call (1-based) is held.
    pub fn holds_call(&self, call: u64) -> bool {
        call >= self.nth && call - self.nth < self.times
    }
}

/// Fails chosen calls of one named operation (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct FailRule {
    /// SigV4 service name; `None`: any service.
    pub service: Option<String>,
    pub operation: String,
    /// The first call failed (1-based).
    pub nth: u64,
    /// How many calls in a row, from the `nth`.
    pub times: u64,
    pub status: u16,
    /// `None`: the protocol's validation error code.
    pub code: Option<String>,
    pub message: String,
}

impl FailRule {
    pub fn parse(v: &Value) -> Result<FailRule, String> {
        let obj = v.as_object().ok_or_else(|| format!("fail: each rule must be a JSON object, got {v}"))?;
        let text = |k: &str| -> Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(other) => Err(format!("fail: `{k}` must be a non-empty string, got {other}")),
            }
        };
        let uint = |k: &str, default: u64| -> Result<u64, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| format!("fail: `{k}` must be an integer of at least 1, got {v}")),
            }
        };
        if let Some(k) = obj.keys().find(|k| !["operation", "service", "nth", "times", "status", "code", "message"].contains(&k.as_str())) {
            return Err(format!("fail: unknown key {k:?}"));
        }
        let operation = text("operation")?.ok_or("fail: every rule needs an `operation` (e.g. \"UpdateStage\")")?;
        let status = uint("status", 400)?;
        if !(400..=599).contains(&status) {
            return Err(format!("fail: `status` must be an HTTP error status (400-599), got {status}"));
        }
        Ok(FailRule {
            service: text("service")?.map(|s| s.to_ascii_lowercase()),
            operation,
            nth: uint("nth", 1)?,
            times: uint("times", 1)?,
            status: status as u16,
            code: text("code")?,
            message: text("message")?.unwrap_or_else(|| "injected by faultproxy".into()),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "operation": self.operation,
            "nth": self.nth,
            "times": self.times,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        })
    }

    /// The rule as it answers a request with body `body`: `{environment}` in its message becomes the
    /// request's Lambda environment (`Environment.Variables`) as compact JSON, as Lambda quotes it
    /// in its answer to an environment over 4 KB (`{}` when the request has none).
    pub fn answering(&self, body: &[u8]) -> FailRule {
        if !self.message.contains("{environment}") {
            return self.clone();
        }
        let vars = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b.get("Environment").and_then(|e| e.get("Variables")).cloned())
            .unwrap_or_else(|| json!({}));
        FailRule { message: self.message.replace("{environment}", &vars.to_string()), ..self.clone() }
    }

    pub fn matches(&self, service: &str, operation: &str) -> bool {
        self.operation == operation && self.service.as_deref().is_none_or(|s| s == service)
    }

    /// Whether the `call`-th matching call (1-based) is failed.
    pub fn fails_call(&self, call: u64) -> bool {
        call >= self.nth && call - self.nth < self.times
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("throttle_rate", self.throttle_rate), ("error_rate", self.error_rate), ("drop_rate", self.drop_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        let sum = self.throttle_rate + self.error_rate + self.drop_rate;
        if sum > 1.0 + 1e-9 {
            return Err(format!("throttle_rate + error_rate + drop_rate must be at most 1, got {sum}"));
        }
        Ok(())
    }

    pub fn applies_to(&self, service: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == service)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "throttle_rate": self.throttle_rate,
            "error_rate": self.error_rate,
            "drop_rate": self.drop_rate,
            "seed": self.seed,
            "only": self.only,
            "apigw_limits": self.apigw_limits,
            "fail": self.fail.iter().map(FailRule::to_json).collect::<Vec<_>>(),
            "hold": self.hold.iter().map(HoldRule::to_json).collect::<Vec<_>>(),
        })
    }

    /// This configuration with the keys of `patch` (a JSON object) applied.
    pub fn patched(&self, patch: &Value) -> Result<Config, String> {
        let Some(obj) = patch.as_object() else {
            return Err("the body must be a JSON object".into());
        };
        let mut c = self.clone();
        for (key, value) in obj {
            let key = key.replace('-', "_");
            let uint = || value.as_u64().ok_or_else(|| format!("{key} must be a non-negative integer, got {value}"));
            let rate = || value.as_f64().ok_or_else(|| format!("{key} must be a number, got {value}"));
            match key.as_str() {
                "latency_ms" => c.latency_ms = uint()?,
                "jitter_ms" => c.jitter_ms = uint()?,
                "seed" => c.seed = uint()?,
                "throttle_rate" => c.throttle_rate = rate()?,
                "error_rate" => c.error_rate = rate()?,
                "drop_rate" => c.drop_rate = rate()?,
                "only" => c.only = parse_only(value)?,
                "apigw_limits" => {
                    c.apigw_limits = value.as_bool().ok_or_else(|| format!("{key} must be true or false, got {value}"))?;
                }
                "fail" => {
                    c.fail = match value {
                        Value::Null => Vec::new(),
                        Value::Array(rules) => rules.iter().map(FailRule::parse).collect::<Result<_, _>>()?,
                        other => return Err(format!("fail must be an array of rules, got {other}")),
                    };
                }
                "hold" => {
                    c.hold = match value {
                        Value::Null => Vec::new(),
                        Value::Array(rules) => rules.iter().map(HoldRule::parse).collect::<Result<_, _>>()?,
                        other => return Err(format!("hold must be an array of rules, got {other}")),
                    };
                }
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_only(value: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("only: {v} is not a string")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("only must be an array of service names or a comma-separated string, got {other}")),
    };
    Ok(normalize_services(items))
}

pub fn normalize_services(items: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated_and_patched() {
        let c = Config {
            latency_ms: 0,
            jitter_ms: 0,
            throttle_rate: 0.0,
            error_rate: 0.0,
            drop_rate: 0.0,
            seed: 1,
            only: vec![],
            apigw_limits: false,
            fail: Vec::new(),
            hold: Vec::new(),
        };
        let p = c.patched(&json!({"throttle-rate": 0.5, "only": "IAM, logs"})).unwrap();
        assert_eq!(p.throttle_rate, 0.5);
        assert_eq!(p.only, ["iam", "logs"]);
        assert!(c.patched(&json!({"throttle_rate": 0.7, "error_rate": 0.4})).is_err());
        assert!(c.patched(&json!({"nope": 1})).is_err());
        assert!(c.patched(&json!({"only": null})).unwrap().only.is_empty());
        assert!(c.patched(&json!({"apigw-limits": true})).unwrap().apigw_limits);
        assert!(c.patched(&json!({"apigw_limits": "yes"})).is_err());
        let held = c.patched(&json!({"hold": [{"operation": "CreateDeployment", "nth": 2}]})).unwrap();
        assert_eq!(held.hold, vec![HoldRule { service: None, operation: "CreateDeployment".into(), nth: 2, times: 1 }]);
        assert!(held.hold[0].holds_call(2) && !held.hold[0].holds_call(1) && !held.hold[0].holds_call(3));
        assert!(c.patched(&json!({"hold": [{"operation": "CreateDeployment", "status": 500}]})).is_err());
    }
}
