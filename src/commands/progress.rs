//! The one place that decides how progress is shown: lines on stderr, none with --quiet or --json.

use crate::apply::{Event, Reporter};
use crate::plan::Action;

pub struct Progress {
    pub enabled: bool,
}

fn doing(a: Action) -> &'static str {
    match a {
        Action::NoOp => "checking",
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "deleting",
        Action::Forget => "forgetting",
    }
}

fn done(a: Action) -> &'static str {
    match a {
        Action::NoOp => "unchanged",
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Forget => "forgotten (left in AWS)",
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started { name, action } => {
                tracing::info!(resource = name, action = action.verb(), "started");
                if self.enabled {
                    eprintln!("  {name}: {}…", doing(action));
                }
            }
            Event::Finished { name, action, elapsed } => {
                tracing::info!(resource = name, action = action.verb(), elapsed_ms = elapsed.as_millis() as u64, "finished");
                if self.enabled {
                    eprintln!("  {name}: {} in {:.1}s", done(action), elapsed.as_secs_f64());
                }
            }
            Event::Failed { name, action, error } => {
                tracing::warn!(resource = name, action = action.verb(), error, "failed");
                eprintln!("  {name}: {} FAILED: {error}", doing(action));
            }
            Event::Skipped { name, because, .. } => {
                eprintln!("  {name}: {because}");
            }
        }
    }
}
