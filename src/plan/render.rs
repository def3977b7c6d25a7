//! Human rendering of a plan (JSON rendering is `serde_json` over the same data).

use std::fmt::Write;

use serde_json::Value;

use super::{Action, FieldChange, Plan, ResourceChange};

fn sigil(a: Action) -> &'static str {
    match a {
        Action::NoOp => " ",
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

/// The plan as text, Terraform-style: one block per changing resource, field by field.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes: AWS matches the manifest for stack `{}` ({} resources).", plan.stack, plan.summary.no_op);
        return out;
    }
    let _ = writeln!(out, "Stack `{}`:\n", plan.stack);
    for r in plan.resources.iter().filter(|r| r.action != Action::NoOp || r.adopt.is_some()) {
        resource(&mut out, r);
    }
    let s = &plan.summary;
    let adopt = if s.adopt > 0 { format!("{} to adopt, ", s.adopt) } else { String::new() };
    let _ = writeln!(
        out,
        "Plan: {adopt}{} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
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

fn resource(out: &mut String, r: &ResourceChange) {
    let id = r.physical_id.as_deref().map(|id| format!(" [{id}]")).unwrap_or_default();
    let what = match (&r.adopt, r.action, r.deposed) {
        (_, _, true) => "previous one will be deleted",
        (Some(_), Action::NoOp, _) => "will be adopted into the state",
        (Some(_), _, _) => "will be adopted into the state and then",
        _ => "will be",
    };
    let verb = if r.deposed || (r.adopt.is_some() && r.action == Action::NoOp) { "" } else { past(r.action) };
    let sigil = if r.adopt.is_some() && r.action == Action::NoOp { "<=" } else { sigil(r.action) };
    let _ = write!(out, "  {sigil} {} ({}){id} {what}{}{verb}", r.name, r.kind, if verb.is_empty() { "" } else { " " });
    if let Some(reason) = &r.reason {
        let _ = write!(out, ": {reason}");
    }
    out.push('\n');
    let width = r.changes.iter().map(|c| c.path.len()).max().unwrap_or(0);
    for c in &r.changes {
        field(out, r.action, c, width);
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
    }
}

fn field(out: &mut String, action: Action, c: &FieldChange, width: usize) {
    let pad = " ".repeat(width - c.path.len());
    let note = if c.forces_replacement && action == Action::Replace { "  # forces replacement" } else { "" };
    match (&c.before, &c.after) {
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
                name: "fn".into(),
                kind: Kind::LambdaFunction,
                action: Action::Update,
                physical_id: Some("Hello".into()),
                reason: None,
                changes: vec![FieldChange {
                    path: "memory_size".into(),
                    before: Some(json!(256)),
                    after: Some(json!(512)),
                    forces_replacement: false,
                }],
                depends_on: vec![],
                adopt: None,
                deposed: false,
                current: None,
            }],
            outputs: Default::default(),
            interrupted_operations: vec![],
            known_outputs: Default::default(),
            blockers: vec![],
        };
        let text = human(&plan);
        assert!(text.contains("~ fn (aws_lambda_function) [Hello] will be updated in place"), "{text}");
        assert!(text.contains("memory_size = 256 → 512"), "{text}");
        assert!(text.contains("Plan: 0 to create, 1 to update"), "{text}");
    }
}
