use std::io::Write;

use super::Exit;
use crate::cli::{DriftArgs, Global};
use crate::state::{DriftEvent, Listing};

use super::{CliError, open_state};

/// Lists drift recorded by `watch`, from the state file only.
pub async fn run(g: &Global, args: &DriftArgs) -> Result<Exit, CliError> {
    // For cron and CI, a state file that is not there is an error, not "no drift".
    let store = if args.exit_code { super::open_existing_state(g).await? } else { open_state(g).await? };
    let listing = match (args.all, args.ignored) {
        (true, _) => Listing::All,
        (false, true) => Listing::OpenAndIgnored,
        (false, false) => Listing::Open,
    };
    let events = store.drift_events_with(args.stack.as_deref(), listing).await;
    store.close().await;
    let events = events?;
    // With --exit-code, the status says whether drift is open (whatever the listing shows).
    let exit = if args.exit_code && counts(&events) > 0 { Exit::Changes } else { Exit::Ok };
    if g.json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&events).unwrap_or_default())).map(|_| exit);
    }
    if events.is_empty() {
        if !g.quiet {
            return emit(&format!("{}\n", if args.all { "No drift recorded." } else { "No open drift." })).map(|_| exit);
        }
        return Ok(exit);
    }
    let mut text = String::new();
    let mut stack = "";
    for e in &events {
        if e.stack != stack {
            stack = &e.stack;
            text.push_str(&format!("{}Stack {stack}:\n", if std::ptr::eq(e, &events[0]) { "" } else { "\n" }));
        }
        text.push_str(&format!("  {}\n", line(e)));
    }
    emit(&text).map(|_| exit)
}

/// How many events count for `--exit-code`: the open ones.
fn counts(events: &[DriftEvent]) -> usize {
    events.iter().filter(|e| e.is_open() && !e.ignored).count()
}

/// Writes to stdout; a reader that stopped reading (`| head`) ends the listing quietly, as for any
/// Unix filter, instead of a panic.
fn emit(text: &str) -> Result<Exit, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
        Err(e) => Err(e.into()),
    }
}

fn line(e: &DriftEvent) -> String {
    let what = if e.field == crate::state::DELETED {
        format!("{}: deleted outside reconcile", e.resource)
    } else {
        format!("{}.{}: expected {}, actual {}", e.resource, e.field, short(&e.expected), short(&e.actual))
    };
    let what = if e.ignored { format!("{what} [ignored: ignore_changes]") } else { what };
    let when = format!("first seen {}, last seen {}", e.first_seen, e.last_seen);
    match (&e.resolved_at, &e.how) {
        (Some(at), how) => format!("{what} ({when}; resolved {at}: {})", how.as_deref().unwrap_or("resolved")),
        (None, _) => format!("{what} ({when})"),
    }
}

/// A value on one line, cut at 60 characters.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
}
