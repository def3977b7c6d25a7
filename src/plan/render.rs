//! Human rendering of a plan (JSON rendering is `serde_json` over the same data).
//!
//! [`styled`] marks the plan with ANSI colours, Terraform's way: additions green, deletions red,
//! changes yellow. Print it through [`anstream`], which drops the colours when stdout is not a
//! terminal or `NO_COLOR` is set; [`human`] is the same text without them.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use serde_json::Value;

use super::diff;
use super::{Action, FieldChange, OutputChange, Plan, ReplaceOrder, ResourceChange};
use crate::manifest::Kind;

const ADD: Style = AnsiColor::Green.on_default();
const DELETE: Style = AnsiColor::Red.on_default();
const CHANGE: Style = AnsiColor::Yellow.on_default();
const OTHER: Style = AnsiColor::Cyan.on_default();
const BOLD: Style = Style::new().bold();

/// `text` in `style` (the escape codes around it; none for a plain style).
fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// A sigil in its colours (`-/+` red then green).
fn painted_sigil(sigil: &str) -> String {
    match sigil {
        "+" => paint(ADD, "+"),
        "-" => paint(DELETE, "-"),
        "~" => paint(CHANGE, "~"),
        "-/+" => format!("{}/{}", paint(DELETE, "-"), paint(ADD, "+")),
        "+/-" => format!("{}/{}", paint(ADD, "+"), paint(DELETE, "-")),
        "" | " " => sigil.to_string(),
        other => paint(OTHER, other),
    }
}

/// Prints the plan on stdout: in colour on a terminal, plain when piped or under `NO_COLOR`.
pub fn print(plan: &Plan) {
    use std::io::Write as _;
    let mut out = anstream::stdout();
    let _ = out.write_all(styled(plan).as_bytes());
    let _ = out.flush();
}

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

/// The plan as plain text, Terraform-style: one block per changing resource, field by field, and
/// inside lists and tables only what changed (`routes[GET /book].path`).
pub fn human(plan: &Plan) -> String {
    anstream::adapter::strip_str(&styled(plan)).to_string()
}

/// [`human`] with ANSI colours.
pub fn styled(plan: &Plan) -> String {
    let mut out = String::new();
    for w in &plan.warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    if plan.partial {
        let targets: Vec<String> = plan.targets.iter().map(|t| format!("`{t}`")).collect();
        let _ = writeln!(
            out,
            "Warning: partial plan (--target {}): only the targets and what they depend on are planned; other \
             differences between the manifest and AWS may remain (a plan without --target shows them).",
            targets.join(", ")
        );
    }
    if !plan.warnings.is_empty() || plan.partial {
        out.push('\n');
    }
    if !plan.has_changes() && !plan.blockers.is_empty() {
        // Nothing differs, yet what AWS has is not all this stack's (a resource made again by hand).
        let _ = writeln!(out, "No changes planned for stack `{}` ({} resources unchanged).", plan.stack, plan.summary.no_op);
        blockers(&mut out, plan);
        return out;
    }
    if !plan.has_changes() {
        let _ = writeln!(out, "No changes: AWS matches the manifest for stack `{}` ({} resources).", plan.stack, plan.summary.no_op);
        outputs(&mut out, plan, true);
        return out;
    }
    let _ = writeln!(out, "Stack `{}`:\n", plan.stack);
    for r in plan.resources.iter().filter(|r| r.action != Action::NoOp || r.adopt.is_some() || r.moved_from.is_some() || r.records_retain) {
        resource(&mut out, r);
    }
    outputs(&mut out, plan, false);
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
    blockers(&mut out, plan);
    out
}

/// What AWS has in the way (conflicts, what is not ours, account logging), if anything.
fn blockers(out: &mut String, plan: &Plan) {
    if !plan.blockers.is_empty() {
        let _ = writeln!(out, "\nFound in AWS; apply refuses these until they are fixed:");
        for b in &plan.blockers {
            let _ = writeln!(out, "  ! {} ({}): {}", b.resource, b.kind, b.message);
        }
    }
}

/// The stack outputs as far as they are known before apply (`(known after apply)` otherwise), those
/// that change marked `+`, `~` or `-`.
fn outputs(out: &mut String, plan: &Plan, leading_blank: bool) {
    let removed = plan.output_changes.iter().filter(|c| c.action == Action::Delete).map(|c| &c.name);
    let mut names: Vec<&String> = plan.outputs.keys().chain(removed).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return;
    }
    if leading_blank {
        out.push('\n');
    }
    let _ = writeln!(out, "Outputs:");
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in names {
        let pad = " ".repeat(width - name.len());
        let _ = match plan.output_changes.iter().find(|c| &c.name == name) {
            Some(c) => output(out, c, &pad),
            None => match plan.outputs.get(name).map(String::as_str) {
                Some(v) if v.contains(crate::manifest::refs::UNKNOWN) => {
                    writeln!(out, "    {name}{pad} = {}", crate::manifest::refs::UNKNOWN)
                }
                v => writeln!(out, "    {name}{pad} = {}", quoted(v)),
            },
        };
    }
    out.push('\n');
}

fn output(out: &mut String, c: &OutputChange, pad: &str) -> std::fmt::Result {
    let after = || if c.known_after_apply { crate::manifest::refs::UNKNOWN.to_string() } else { quoted(c.after.as_deref()) };
    match c.action {
        Action::Create => writeln!(out, "  {} {}{pad} = {}", painted_sigil("+"), c.name, after()),
        Action::Delete => writeln!(out, "  {} {}{pad} = {}", painted_sigil("-"), c.name, quoted(c.before.as_deref())),
        _ => writeln!(out, "  {} {}{pad} = {} → {}", painted_sigil("~"), c.name, quoted(c.before.as_deref()), after()),
    }
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
    let _ = write!(
        out,
        "  {} {} ({}){id} {what}{}{verb}",
        painted_sigil(sigil),
        paint(BOLD, &r.name),
        r.kind,
        if verb.is_empty() { "" } else { " " }
    );
    if let Some(reason) = &r.reason {
        let _ = write!(out, ": {reason}");
    }
    out.push('\n');
    let width = r.changes.iter().map(|c| c.path.len()).max().unwrap_or(0);
    for c in &r.changes {
        field(out, r.kind, r.action, c, width);
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

fn field(out: &mut String, kind: Kind, action: Action, c: &FieldChange, width: usize) {
    let pad = " ".repeat(width - c.path.len());
    let note = if c.forces_replacement && action == Action::Replace {
        format!("  {}", paint(DELETE, "# forces replacement"))
    } else {
        String::new()
    };
    let (before, after) = (c.before.as_ref().map(clip), c.after.as_ref().map(clip));
    match (&before, &after) {
        (None, Some(after)) if action == Action::Create || action == Action::Replace => {
            let _ = writeln!(out, "      {}{pad} = {}{note}", c.path, value(after, 8 + width));
        }
        (None, Some(after)) => {
            let _ = writeln!(out, "    {} {}{pad} = {}{note}", painted_sigil("+"), c.path, value(after, 8 + width));
        }
        (Some(before), None) => {
            let _ = writeln!(out, "    {} {}{pad} = {}{note}", painted_sigil("-"), c.path, value(before, 8 + width));
        }
        (Some(before), Some(after)) => {
            // Lists and tables element by element; an empty nested diff (equal as documents but not as
            // written: an unknown value, a reordering) and plain values show both sides whole.
            let lines = if is_nested(before) || is_nested(after) {
                let top = c.path.split('.').next().unwrap_or(&c.path);
                let identity = kind.schema().field(top).map_or(&[][..], |f| f.identity);
                diff::nested(identity, &c.path, before, after)
            } else {
                Vec::new()
            };
            if lines.is_empty() {
                let _ = writeln!(
                    out,
                    "    {} {}{pad} = {} → {}{note}",
                    painted_sigil("~"),
                    c.path,
                    value(before, 8 + width),
                    value(after, 8 + width)
                );
            }
            for (i, n) in lines.iter().enumerate() {
                let note = if i == 0 { note.as_str() } else { "" };
                nested_line(out, n, note);
            }
        }
        (None, None) => {}
    }
}

/// A changed list of scalars too long for one line: the items removed and added, and how many stay.
fn list_change(out: &mut String, path: &str, before: &[Value], after: &[Value], note: &str) -> std::fmt::Result {
    let (removed, added, kept) = diff::list_items(before, after);
    writeln!(out, "    {} {path} = [{note}", painted_sigil("~"))?;
    for v in removed {
        writeln!(out, "        {} {}", painted_sigil("-"), value(v, 10))?;
    }
    for v in added {
        writeln!(out, "        {} {}", painted_sigil("+"), value(v, 10))?;
    }
    if kept > 0 {
        writeln!(out, "          ({kept} unchanged)")?;
    }
    writeln!(out, "      ]")
}

fn is_nested(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if a.iter().any(Value::is_object))
}

/// One line of a nested diff: `~ routes[GET /book].path = "/book" → "/books"`, or a whole element
/// added or removed.
fn nested_line(out: &mut String, n: &diff::Nested, note: &str) {
    let _ = match (&n.before, &n.after) {
        (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() + a.len() > 4 => list_change(out, &n.path, b, a, note),
        (Some(b), Some(a)) => writeln!(out, "    {} {} = {} → {}{note}", painted_sigil("~"), n.path, value(b, 8), value(a, 8)),
        (None, Some(a)) => writeln!(out, "    {} {} = {}{note}", painted_sigil("+"), n.path, value(a, 8)),
        (Some(b), None) => writeln!(out, "    {} {} = {}{note}", painted_sigil("-"), n.path, value(b, 8)),
        (None, None) => Ok(()),
    };
}

/// Scalars inline; documents pretty-printed and indented under the field.
fn value(v: &Value, indent: usize) -> String {
    match v {
        v if is_nested(v) => {
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

    fn update(kind: Kind, path: &str, before: Value, after: Value) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            stack: "s".into(),
            summary: Summary { update: 1, ..Summary::default() },
            resources: vec![ResourceChange {
                physical_id: Some("id1".into()),
                changes: vec![FieldChange { path: path.into(), before: Some(before), after: Some(after), forces_replacement: false }],
                ..ResourceChange::new("r", kind, Action::Update)
            }],
            ..Plan::default()
        }
    }

    /// The lines of a resource block below its header.
    fn body(text: &str) -> Vec<&str> {
        text.lines().skip_while(|l| !l.starts_with("  ~ r (")).skip(1).take_while(|l| !l.is_empty()).collect()
    }

    #[test]
    fn a_route_path_change_is_one_changed_line() {
        let route = |p: &str, uri: &str| json!({"path": p, "method": "GET", "authorization": "NONE", "integration": {"type": "AWS_PROXY", "uri": uri}});
        let before = json!([route("/order", "arn:a"), route("/book", "arn:b")]);
        let after = json!([route("/books", "arn:b"), route("/order", "arn:a")]);
        let text = human(&update(Kind::RestApi, "routes", before, after));
        assert_eq!(body(&text), vec![r#"    ~ routes[GET /book].path = "/book" → "/books""#], "{text}");
    }

    #[test]
    fn nested_changes_name_the_element_and_show_whole_elements_added_or_removed() {
        let rule = |name: &str, priority: u64, limit: u64| json!({"name": name, "priority": priority, "action": "block", "rate_based": {"limit": limit}});
        let text = human(&update(Kind::WebAcl, "rules", json!([rule("a", 0, 100), rule("b", 1, 100)]), json!([rule("a", 0, 200)])));
        let lines = body(&text);
        assert_eq!(lines[0], "    ~ rules[a].rate_based.limit = 100 → 200", "{text}");
        assert_eq!(lines[1], "    - rules[b] = {", "{text}");
        assert!(lines.contains(&r#"          "name": "b","#), "{text}");

        let statement = |sid: &str, actions: Value| json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*"});
        let logs = json!(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:GetLogEvents"]);
        let fewer = json!(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]);
        let before =
            json!({"Version": "2012-10-17", "Statement": [statement("Invoke", json!("lambda:InvokeFunction")), statement("Logs", logs)]});
        let after =
            json!({"Version": "2012-10-17", "Statement": [statement("Invoke", json!("lambda:InvokeFunction")), statement("Logs", fewer)]});
        let text = human(&update(Kind::IamRole, "inline_policies.write", before, after));
        assert_eq!(
            body(&text),
            vec![
                "    ~ inline_policies.write.Statement[Logs].Action = [",
                r#"        - "logs:GetLogEvents""#,
                "          (3 unchanged)",
                "      ]",
            ],
            "{text}"
        );
    }

    #[test]
    fn colour_marks_the_signs_and_plain_text_has_none() {
        let plan = update(Kind::LambdaFunction, "memory_size", json!(128), json!(256));
        let styled = styled(&plan);
        assert!(styled.contains(&format!("{}~{}", CHANGE.render(), CHANGE.render_reset())), "{styled:?}");
        let plain = human(&plan);
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert_eq!(plain, anstream::adapter::strip_str(&styled).to_string());
        assert!(plain.contains("  ~ r (aws_lambda_function) [id1] will be updated in place\n    ~ memory_size = 128 → 256\n"), "{plain}");
    }

    #[test]
    fn outputs_are_shown_as_known_before_apply_also_without_changes() {
        let mut plan = Plan { stack: "s".into(), summary: Summary { no_op: 2, ..Summary::default() }, ..Plan::default() };
        plan.outputs =
            [("url", "https://x"), ("arn", crate::manifest::refs::UNKNOWN)].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let text = human(&plan);
        assert!(text.starts_with("No changes: AWS matches the manifest for stack `s` (2 resources).\n\nOutputs:\n"), "{text}");
        assert!(text.contains("    arn = (known after apply)\n    url = \"https://x\"\n"), "{text}");
    }
}
