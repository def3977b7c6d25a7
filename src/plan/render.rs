//! Human rendering of a plan (JSON rendering is `serde_json` over the same data).

use std::fmt::Write;

use serde_json::Value;

use super::{Action, FieldChange, OutputChange, Plan, ReplaceOrder, ResourceChange};

fn sigil(a: Action) -> &'static str {
    match a {
        Action::NoOp => " ",
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Forget => "~-",
    }
}

/// The plan as text, Terraform-style: one block per changing resource, field by field.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    for w in &plan.warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    if !plan.warnings.is_empty() {
        out.push('\n');
    }
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes: AWS matches the manifest for stack `{}` ({} resources).", plan.stack, plan.summary.no_op);
        return out;
    }
    let _ = writeln!(out, "Stack `{}`:\n", plan.stack);
    for r in plan.resources.iter().filter(|r| r.action != Action::NoOp || r.adopt.is_some() || r.moved_from.is_some() || r.records_retain) {
        resource(&mut out, r);
    }
    if !plan.output_changes.is_empty() {
        let _ = writeln!(out, "Outputs:");
        let width = plan.output_changes.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &plan.output_changes {
            output(&mut out, c, width);
        }
        out.push('\n');
    }
    let s = &plan.summary;
    let adopt = if s.adopt > 0 { format!("{} to adopt, ", s.adopt) } else { String::new() };
    let outputs = match plan.output_changes.len() {
        0 => String::new(),
        1 => "; 1 output to change".to_string(),
        n => format!("; {n} outputs to change"),
    };
    let adopt = if s.moved > 0 { format!("{adopt}{} to move to a renamed key, ", s.moved) } else { adopt };
    let forget = if s.forget > 0 { format!(", {} to forget (left in AWS)", s.forget) } else { String::new() };
    let _ = writeln!(
        out,
        "Plan: {adopt}{} to create, {} to update, {} to replace, {} to delete{forget}, {} unchanged{outputs}.",
        s.create, s.update, s.replace, s.delete, s.no_op
    );
    if !plan.blockers.is_empty() {
        let _ = writeln!(out, "\nFound in AWS; apply refuses these until they are fixed:");
        for b in &plan.blockers {
            let _ = writeln!(out, "  ! {} ({}): {}", b.resource, b.kind, b.message);
        }
    }
    out
}

fn output(out: &mut String, c: &OutputChange, width: usize) {
    let pad = " ".repeat(width - c.name.len());
    let after = || if c.known_after_apply { crate::manifest::refs::UNKNOWN.to_string() } else { quoted(c.after.as_deref()) };
    let _ = match c.action {
        Action::Create => writeln!(out, "  + {}{pad} = {}", c.name, after()),
        Action::Delete => writeln!(out, "  - {}{pad} = {}", c.name, quoted(c.before.as_deref())),
        _ => writeln!(out, "  ~ {}{pad} = {} → {}", c.name, quoted(c.before.as_deref()), after()),
    };
}

fn quoted(v: Option<&str>) -> String {
    v.map(|v| Value::String(v.into()).to_string()).unwrap_or_default()
}

fn resource(out: &mut String, r: &ResourceChange) {
    let id = r.physical_id.as_deref().map(|id| format!(" [{id}]")).unwrap_or_default();
    let what = match (&r.adopt, r.action, r.deposed) {
        (_, _, true) => "previous one will be deleted",
        (Some(_), Action::NoOp, _) => "will be adopted into the state",
        (Some(_), _, _) => "will be adopted into the state and then",
        _ if r.moved_from.is_some() && r.action == Action::NoOp => "will be moved to this key",
        _ if r.moved_from.is_some() => "will be moved to this key and then",
        _ => "will be",
    };
    let quiet = r.deposed || (r.action == Action::NoOp && (r.adopt.is_some() || r.moved_from.is_some()));
    let quiet = quiet || (r.action == Action::NoOp && r.records_retain);
    let what = if r.action == Action::NoOp && r.records_retain && r.adopt.is_none() && r.moved_from.is_none() {
        if r.retain_on_delete {
            "will be recorded as retain_on_delete (state only, nothing changes in AWS)"
        } else {
            "will no longer be recorded as retain_on_delete (state only, nothing changes in AWS)"
        }
    } else {
        what
    };
    let verb = match r.replace_order() {
        _ if quiet => "",
        Some(ReplaceOrder::CreateBeforeDestroy) => "replaced (new one created first)",
        Some(ReplaceOrder::DeleteBeforeCreate) => "replaced (old one deleted first)",
        None => past(r.action),
    };
    let sigil = match (r.action, r.replace_order()) {
        (Action::NoOp, _) if r.adopt.is_some() => "<=",
        (Action::NoOp, _) if r.moved_from.is_some() => "->",
        (Action::NoOp, _) if r.records_retain => "~",
        (_, Some(ReplaceOrder::CreateBeforeDestroy)) => "+/-",
        (a, _) => sigil(a),
    };
    let _ = write!(out, "  {sigil} {} ({}){id} {what}{}{verb}", r.name, r.kind, if verb.is_empty() { "" } else { " " });
    if let Some(reason) = &r.reason {
        let _ = write!(out, ": {reason}");
    }
    out.push('\n');
    let width = r.changes.iter().map(|c| c.path.len()).max().unwrap_or(0);
    for c in &r.changes {
        field(out, r.action, c, width);
    }
    if !r.ignored.is_empty() {
        let paths: Vec<&str> = r.ignored.iter().map(|c| c.path.as_str()).collect();
        let _ = writeln!(out, "    # ignore_changes: left as AWS has them: {}", paths.join(", "));
    }
    out.push('\n');
}

fn past(a: Action) -> &'static str {
    match a {
        Action::NoOp => "left as it is",
        Action::Create => "created",
        Action::Update => "updated in place",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Forget => "forgotten (left in AWS, not deleted)",
    }
}

/// Longest string shown whole in the text plan; longer ones are cut (the JSON plan keeps them whole).
pub const MAX_SHOWN_CHARS: usize = 200;

/// `v` with every string longer than [`MAX_SHOWN_CHARS`] cut, saying how much was left out.
fn clip(v: &Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > MAX_SHOWN_CHARS => {
            let kept: String = s.chars().take(MAX_SHOWN_CHARS).collect();
            Value::String(format!("{kept}… ({} more characters)", s.chars().count() - MAX_SHOWN_CHARS))
        }
        Value::Array(items) => Value::Array(items.iter().map(clip).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), clip(v))).collect()),
        other => other.clone(),
    }
}

fn field(out: &mut String, action: Action, c: &FieldChange, width: usize) {
    let pad = " ".repeat(width - c.path.len());
    let note = if c.forces_replacement && action == Action::Replace { "  # forces replacement" } else { "" };
    let (before, after) = (c.before.as_ref().map(clip), c.after.as_ref().map(clip));
    match (&before, &after) {
        (None, Some(after)) if action == Action::Create || action == Action::Replace => {
            let _ = writeln!(out, "      {}{pad} = {}{note}", c.path, value(after, 8 + width));
        }
        (None, Some(after)) => {
            let _ = writeln!(out, "    + {}{pad} = {}{note}", c.path, value(after, 8 + width));
        }
        (Some(before), None) => {
            let _ = writeln!(out, "    - {}{pad} = {}{note}", c.path, value(before, 8 + width));
        }
        (Some(before), Some(after)) if before.is_object() && after.is_object() => {
            let _ = writeln!(out, "    ~ {}{note}", c.path);
            let old = serde_json::to_string_pretty(before).unwrap_or_default();
            let new = serde_json::to_string_pretty(after).unwrap_or_default();
            for change in similar::TextDiff::from_lines(&old, &new).iter_all_changes() {
                let tag = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                let _ = write!(out, "        {tag} {change}");
            }
        }
        (Some(before), Some(after)) => {
            let _ = writeln!(out, "    ~ {}{pad} = {} → {}{note}", c.path, value(before, 8 + width), value(after, 8 + width));
        }
        (None, None) => {}
    }
}

/// Scalars inline; documents pretty-printed and indented under the field.
fn value(v: &Value, indent: usize) -> String {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
            pretty.lines().collect::<Vec<_>>().join(&format!("\n{}", " ".repeat(indent)))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::plan::{FORMAT_VERSION, Summary};
    use serde_json::json;

    #[test]
    fn renders_updates_field_by_field() {
        let plan = Plan {
            format_version: FORMAT_VERSION,
            stack: "s".into(),
            state_serial: 1,
            summary: Summary { update: 1, ..Summary::default() },
            resources: vec![ResourceChange {
                physical_id: Some("Hello".into()),
                changes: vec![FieldChange {
                    path: "memory_size".into(),
                    before: Some(json!(256)),
                    after: Some(json!(512)),
                    forces_replacement: false,
                }],
                ..ResourceChange::new("fn", Kind::LambdaFunction, Action::Update)
            }],
            ..Plan::default()
        };
        let text = human(&plan);
        assert!(text.contains("~ fn (aws_lambda_function) [Hello] will be updated in place"), "{text}");
        assert!(text.contains("memory_size = 256 → 512"), "{text}");
        assert!(text.contains("Plan: 0 to create, 1 to update"), "{text}");

        let mut huge = plan.clone();
        huge.resources[0].changes[0] = FieldChange {
            path: "description".into(),
            before: Some(json!("short")),
            after: Some(json!("x".repeat(5_000_000))),
            forces_replacement: false,
        };
        let text = human(&huge);
        assert!(text.len() < 1000, "{} bytes", text.len());
        assert!(text.contains(&format!("\"{}… (4999800 more characters)\"", "x".repeat(MAX_SHOWN_CHARS))), "{text}");
    }
}
