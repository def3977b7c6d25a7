//! `reconcile verify`: runs the probes of [`crate::verify`] against the applied stack and reports a
//! summary table (or one JSON document) and an exit status.

use std::sync::Arc;

use serde::Serialize;

use super::{CliError, Exit, load_manifest, open_state};
use crate::cli::{Global, Probe, VerifyArgs};
use crate::verify::concurrency::{self, FunctionReport};
use crate::verify::http::HttpClient;
use crate::verify::rate_limit::{self, MAX_REQUESTS};
use crate::verify::smoke::{self, ExpectedHeader};
use crate::verify::{Destination, FunctionTarget, Latency, Outcome, Progress, StageTarget, Targets, VerifyError, custom_endpoint, ms_text};

/// The header the seed's handler sets that a browser needs (CORS).
const DEFAULT_HEADER: &str = "Access-Control-Allow-Origin";
/// Smoke requests in flight at once.
const SMOKE_CONNECTIONS: usize = 8;

#[derive(Debug, Serialize)]
struct Document {
    stack: String,
    outcome: Outcome,
    exit_code: u8,
    smoke: Option<smoke::Report>,
    concurrency: Option<concurrency::Report>,
    rate_limit: Option<rate_limit::Report>,
}

/// Which probes, in the order they run (rate-limit last). Without names: smoke and concurrency, each
/// only if the stack has something for it (a stack without functions is not inconclusive for that).
fn selected(args: &VerifyArgs, targets: &Targets) -> Vec<Probe> {
    let mut probes = if args.probes.is_empty() {
        let mut p = Vec::new();
        if !targets.stages.is_empty() {
            p.push(Probe::Smoke);
        }
        if !targets.functions.is_empty() {
            p.push(Probe::Concurrency);
        }
        p
    } else {
        args.probes.clone()
    };
    probes.sort();
    probes.dedup();
    probes
}

fn pick_stages(all: &[StageTarget], wanted: &[String]) -> Result<Vec<StageTarget>, VerifyError> {
    if let Some(unknown) = wanted.iter().find(|w| !all.iter().any(|s| &s.resource == *w)) {
        return Err(VerifyError::UnknownStage(unknown.clone()));
    }
    Ok(all.iter().filter(|s| wanted.is_empty() || wanted.contains(&s.resource)).cloned().collect())
}

fn pick_functions(all: &[FunctionTarget], wanted: &[String]) -> Result<Vec<FunctionTarget>, VerifyError> {
    let matches = |f: &FunctionTarget, w: &String| &f.resource == w || &f.name == w;
    if let Some(unknown) = wanted.iter().find(|w| !all.iter().any(|f| matches(f, w))) {
        return Err(VerifyError::UnknownFunction(unknown.clone()));
    }
    Ok(all.iter().filter(|f| wanted.is_empty() || wanted.iter().any(|w| matches(f, w))).cloned().collect())
}

fn payload(text: &str) -> Result<Vec<u8>, VerifyError> {
    let bytes = match text.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| VerifyError::Payload(format!("cannot read {path}: {e}")))?,
        None => text.as_bytes().to_vec(),
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| VerifyError::Payload(format!("not JSON: {e}")))?;
    Ok(bytes)
}

/// The rate-limit probe's plan, checked before anything is sent.
struct RatePlan {
    stage: StageTarget,
    path: String,
    rule: crate::verify::RateRule,
    settings: rate_limit::Settings,
}

fn plan_rate_limit(targets: &Targets, stages: &[StageTarget], args: &VerifyArgs) -> Result<RatePlan, VerifyError> {
    let protected: Vec<(&StageTarget, &crate::verify::WafTarget)> = targets
        .waf
        .iter()
        .filter_map(|w| w.stage.map(|i| (&targets.stages[i], w)))
        .filter(|(s, _)| stages.iter().any(|x| x.resource == s.resource))
        .collect();
    let (stage, waf) = match protected.as_slice() {
        [] => {
            return Err(VerifyError::RateLimit(format!(
                "no web ACL association of this stack protects {}",
                if args.stages.is_empty() { "one of its stages".to_string() } else { format!("--stage {}", args.stages.join(", ")) }
            )));
        }
        [one] => *one,
        many => {
            let names: Vec<_> = many.iter().map(|(s, _)| s.resource.as_str()).collect();
            return Err(VerifyError::RateLimit(format!("web ACLs protect several stages ({}): pick one with --stage", names.join(", "))));
        }
    };
    let rule = waf.rule.clone().map_err(VerifyError::RateLimit)?;
    let tolerance = f64::from(args.tolerance) / 100.0;
    let minimum = rate_limit::Settings::minimum_requests(rule.limit, tolerance);
    let requests = args.requests.unwrap_or_else(|| rate_limit::Settings::default_requests(rule.limit, tolerance));
    if requests < minimum {
        return Err(VerifyError::RateLimit(format!(
            "--requests {requests} cannot show the block: rule `{}` blocks past {} requests per {} s (+{}% tolerance), so at least \
             {minimum} are needed",
            rule.rule, rule.limit, rule.window_s, args.tolerance
        )));
    }
    if requests > MAX_REQUESTS {
        return Err(VerifyError::RateLimit(format!(
            "rule `{}` has a limit of {} requests: showing its block takes {requests} requests, more than the {MAX_REQUESTS} this \
             probe sends at most",
            rule.rule, rule.limit
        )));
    }
    let path = stage.get_paths.first().cloned().unwrap_or_else(|| "/".to_string());
    let settings = rate_limit::Settings {
        requests,
        connections: args.connections,
        tolerance,
        block_delay: args.block_delay,
        timeout: args.request_timeout,
        time_limit: args.time_limit,
    };
    Ok(RatePlan { stage: stage.clone(), path, rule, settings })
}

pub async fn run(g: &Global, args: &VerifyArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let result = prepare_and_probe(g, args, &manifest, &store).await;
    store.close().await;
    let doc = result?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render(&doc, g.quiet));
    }
    Ok(exit_of(doc.outcome))
}

fn exit_of(outcome: Outcome) -> Exit {
    match outcome {
        Outcome::Passed => Exit::Ok,
        Outcome::Failed => Exit::ExpectationFailed,
        Outcome::Inconclusive => Exit::Inconclusive,
    }
}

async fn prepare_and_probe(
    g: &Global,
    args: &VerifyArgs,
    manifest: &crate::manifest::Manifest,
    store: &crate::state::Store,
) -> Result<Document, CliError> {
    let state = store.load(&manifest.stack).await?;
    if state.resources.is_empty() {
        return Err(VerifyError::NotApplied { stack: manifest.stack.clone(), state: store.path().display().to_string() }.into());
    }
    let targets = crate::verify::targets(manifest, &state)?;
    let probes = selected(args, &targets);
    if probes.is_empty() {
        return Err(CliError::Refused(format!("stack `{}` has no stage and no function to probe", manifest.stack)));
    }
    let stages = pick_stages(&targets.stages, &args.stages)?;

    // Everything is checked before anything is sent.
    let http = probes.iter().any(|p| matches!(p, Probe::Smoke | Probe::RateLimit));
    let destination = match (&args.target_url, http) {
        (_, false) => None,
        (Some(url), true) => Some(Destination::target(url)?),
        // The region is given (the stack's own when there is no --region) so that loading the
        // configuration never asks the instance metadata service for one.
        (None, true) => match custom_endpoint(g.region.clone().or_else(|| targets.stages.first().map(|s| s.region.clone()))).await {
            Some(endpoint) => return Err(VerifyError::CustomEndpoint { endpoint }.into()),
            None => Some(Destination::InvokeUrls),
        },
    };
    let expectations = smoke::Expectations {
        status: args.expect_status,
        headers: if args.expect_headers.is_empty() { vec![DEFAULT_HEADER.to_string()] } else { args.expect_headers.clone() }
            .iter()
            .map(|h| ExpectedHeader::parse(h).map_err(|e| CliError::Refused(format!("--expect-header {e}"))))
            .collect::<Result<_, _>>()?,
        json_body: !args.any_body,
    };
    let functions = if probes.contains(&Probe::Concurrency) { pick_functions(&targets.functions, &args.functions)? } else { vec![] };
    let invoke_settings = if probes.contains(&Probe::Concurrency) {
        Some(concurrency::Settings {
            concurrency: args.concurrency,
            rounds: args.rounds,
            payload: payload(&args.payload)?,
            timeout: args.request_timeout,
            time_limit: args.time_limit,
        })
    } else {
        None
    };
    let rate_plan = if probes.contains(&Probe::RateLimit) { Some(plan_rate_limit(&targets, &stages, args)?) } else { None };
    let aws = if probes.contains(&Probe::Concurrency) && !functions.is_empty() {
        let aws = super::connect_for(g, manifest).await?;
        crate::identity::check(store, &manifest.stack, &aws).await?;
        Some(aws)
    } else {
        None
    };

    let progress = Progress::new(!g.quiet && !g.json);
    let mut doc = Document {
        stack: manifest.stack.clone(),
        outcome: Outcome::Passed,
        exit_code: 0,
        smoke: None,
        concurrency: None,
        rate_limit: None,
    };
    for probe in &probes {
        match probe {
            Probe::Smoke => {
                let Some(to) = &destination else { continue };
                progress.note(&format!("smoke: GET each GET route of {} stage(s)…", stages.len()));
                let client = HttpClient::new(SMOKE_CONNECTIONS, args.request_timeout);
                let deadline = tokio::time::Instant::now() + args.time_limit;
                doc.smoke = Some(smoke::run(&stages, to, &expectations, &client, deadline, progress).await);
            }
            Probe::Concurrency => {
                let (Some(aws), Some(settings)) = (&aws, &invoke_settings) else {
                    doc.concurrency = Some(concurrency::Report { outcome: Outcome::Inconclusive, functions: vec![] });
                    continue;
                };
                progress.note(&format!(
                    "concurrency: {} round(s) of {} concurrent invocations of {} function(s)…",
                    settings.rounds,
                    settings.concurrency,
                    functions.len()
                ));
                doc.concurrency = Some(concurrency::run(aws, &functions, settings, progress).await);
            }
            Probe::RateLimit => {
                let (Some(plan), Some(to)) = (&rate_plan, &destination) else { continue };
                doc.rate_limit = Some(probe_rate_limit(plan, to, progress).await);
            }
        }
    }
    doc.outcome = Outcome::worst(
        [doc.smoke.as_ref().map(|r| r.outcome), doc.concurrency.as_ref().map(|r| r.outcome), doc.rate_limit.as_ref().map(|r| r.outcome)]
            .into_iter()
            .flatten(),
    );
    doc.exit_code = exit_of(doc.outcome) as u8;
    Ok(doc)
}

async fn probe_rate_limit(plan: &RatePlan, to: &Destination, progress: Progress) -> rate_limit::Report {
    let (rule, s) = (&plan.rule, &plan.settings);
    let url = to.url(&plan.stage, &plan.path);
    progress.note(&format!(
        "rate-limit: up to {} GETs of {url} over {} connections (rule `{}`: {} per {} s); this IP will be blocked from {} for \
         several minutes",
        s.requests,
        s.connections,
        rule.rule,
        rule.limit,
        rule.window_s,
        plan.stage.label()
    ));
    let client = Arc::new(HttpClient::new(s.connections as usize, s.timeout));
    let (samples, stopped) = rate_limit::run(&url, rule, s, client, progress).await;
    let analysis = rate_limit::analyse(&samples, rule, s);
    let (outcome, reason) = rate_limit::verdict(&analysis, rule, s, &stopped);
    let mut notes = Vec::new();
    if rule.aggregate_key != crate::providers::wafv2::web_acl::AggregateKey::Ip {
        notes.push(format!(
            "rule `{}` aggregates by {}, not by IP: other traffic may count with the probe's, or the probe's requests may not \
             count together",
            rule.rule,
            crate::verify::key_label(rule.aggregate_key)
        ));
    }
    if analysis.first_403.is_some() {
        notes.push(format!(
            "this IP stays blocked from {} until its rate over the last {} s falls below the limit",
            plan.stage.label(),
            rule.window_s
        ));
    }
    rate_limit::Report {
        outcome,
        reason,
        stage: plan.stage.label(),
        stage_resource: plan.stage.resource.clone(),
        url,
        rule: rule.clone(),
        requests_planned: s.requests,
        connections: s.connections,
        tolerance_pct: crate::verify::round1(s.tolerance * 100.0),
        block_delay_s: s.block_delay.as_secs_f64(),
        stopped,
        analysis,
        notes,
    }
}

// ---- text output ----

fn latency_text(l: Option<&Latency>) -> String {
    l.map(Latency::describe).unwrap_or_else(|| "no latency (nothing succeeded)".to_string())
}

fn function_row(f: &FunctionReport) -> [String; 4] {
    let target = format!("{} ({}×{})", f.function, f.concurrency, f.rounds_run);
    let detail = match (&f.reason, f.outcome) {
        (Some(why), Outcome::Inconclusive) => why.clone(),
        _ => format!(
            "{} ok, {} function errors, {} throttled, {} failed calls; {}",
            f.counts.successes,
            f.counts.function_errors,
            f.counts.throttles,
            f.counts.other_errors,
            latency_text(f.latency.as_ref())
        ),
    };
    ["concurrency".into(), target, f.outcome.label().into(), detail]
}

fn render(doc: &Document, quiet: bool) -> String {
    let mut out = String::new();
    let mut rows: Vec<[String; 4]> = Vec::new();
    if let Some(s) = &doc.smoke {
        for c in &s.checks {
            let detail = if c.problems.is_empty() {
                format!("{} in {} ({})", c.status.unwrap_or_default(), ms_text(c.latency_ms.unwrap_or_default()), c.url)
            } else {
                format!("{} ({})", c.problems.join("; "), c.url)
            };
            rows.push(["smoke".into(), format!("{} GET {}", c.stage, c.path), c.outcome.label().into(), detail]);
        }
        if s.checks.is_empty() {
            rows.push(["smoke".into(), "-".into(), s.outcome.label().into(), "no GET route to request".into()]);
        }
        if !quiet {
            for why in &s.skipped {
                out.push_str(&format!("smoke: skipped {why}\n"));
            }
        }
    }
    if let Some(c) = &doc.concurrency {
        rows.extend(c.functions.iter().map(function_row));
        if c.functions.is_empty() {
            rows.push(["concurrency".into(), "-".into(), c.outcome.label().into(), "no function to invoke".into()]);
        }
    }
    if let Some(r) = &doc.rate_limit {
        if !quiet {
            out.push_str(&histogram_text(r));
        }
        let detail = format!(
            "{}; {} requests in {:.1} s, {:.1}/s; statuses {}",
            r.reason,
            r.analysis.sent,
            r.analysis.duration_s,
            r.analysis.rate_rps,
            r.analysis.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        );
        rows.push(["rate-limit".into(), format!("{} GET {}", r.stage, r.url), r.outcome.label().into(), detail]);
        if !quiet {
            for n in &r.notes {
                out.push_str(&format!("note: {n}\n"));
            }
        }
    }
    if !quiet {
        out.push_str(&table(&["Probe", "Target", "Result", "Detail"], &rows));
    }
    let failed = rows.iter().filter(|r| r[2] == Outcome::Failed.label()).count();
    let unsure = rows.iter().filter(|r| r[2] == Outcome::Inconclusive.label()).count();
    let n = rows.len();
    let checks = if n == 1 { "1 check".to_string() } else { format!("{n} checks") };
    out.push_str(&match doc.outcome {
        Outcome::Passed => format!("\nVerify passed: {checks}.\n"),
        Outcome::Failed => format!("\nVerify FAILED: {failed} of {checks} failed, {unsure} inconclusive.\n"),
        Outcome::Inconclusive => format!("\nVerify inconclusive: {unsure} of {checks} could not tell.\n"),
    });
    out
}

fn histogram_text(r: &rate_limit::Report) -> String {
    let h = &r.analysis.histogram;
    let mut keys: Vec<&String> = h.buckets.iter().flat_map(|b| b.counts.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut header = vec!["from".to_string()];
    header.extend(keys.iter().map(|k| k.to_string()));
    let rows: Vec<Vec<String>> = h
        .buckets
        .iter()
        .map(|b| {
            let mut row = vec![format!("{}s", b.from_s)];
            row.extend(keys.iter().map(|k| b.counts.get(*k).copied().unwrap_or(0).to_string()));
            row
        })
        .collect();
    let mut out = format!(
        "rate-limit: {} — rule `{}` of `{}`: {} per {} s per {}; answers per {} s\n",
        r.url,
        r.rule.rule,
        r.rule.acl_resource,
        r.rule.limit,
        r.rule.window_s,
        crate::verify::key_label(r.rule.aggregate_key),
        h.bucket_s
    );
    let widths: Vec<usize> =
        (0..header.len()).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ");
    out.push_str(&format!("  {}\n", line(&header)));
    for row in &rows {
        out.push_str(&format!("  {}\n", line(row)));
    }
    if let Some(k) = r.analysis.first_403 {
        let e = r.analysis.expected_first_403;
        out.push_str(&format!("  first 403: request {k} (expected {}–{})\n", e.from, e.to));
    }
    out.push('\n');
    out
}

fn table(header: &[&str; 4], rows: &[[String; 4]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r).take(3) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!("{:<w0$}  {:<w1$}  {:<w2$}  {}\n", cells[0], cells[1], cells[2], cells[3], w0 = widths[0], w1 = widths[1], w2 = widths[2])
    };
    let mut out = line(*header);
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}
