//! The smoke probe: one GET per GET route of each stage, judged on the status, the headers the
//! handler sets (by default the CORS header `Access-Control-Allow-Origin`) and a JSON body.

use futures::StreamExt;
use serde::Serialize;

use super::http::{Failure, FailureKind, HttpClient};
use super::{Destination, Outcome, Progress, StageTarget, round1};

/// How many of the smoke requests are in flight at once.
const PARALLEL: usize = 8;

/// A header a response must carry, with the value it must have (any value when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedHeader {
    pub name: String,
    pub value: Option<String>,
}

impl ExpectedHeader {
    /// `Name` or `Name: value`.
    pub fn parse(text: &str) -> Result<ExpectedHeader, String> {
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (text.trim(), None),
        };
        if name.is_empty() || ::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{text}` is not a header name (expected `Name` or `Name: value`)"));
        }
        Ok(ExpectedHeader { name: name.to_string(), value })
    }
}

/// What a smoke response must be.
#[derive(Debug, Clone, Serialize)]
pub struct Expectations {
    pub status: u16,
    pub headers: Vec<ExpectedHeader>,
    pub json_body: bool,
}

/// One request and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `hello_api/dev`
    pub stage: String,
    pub stage_resource: String,
    pub path: String,
    pub url: String,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    /// What did not match, one sentence each.
    pub problems: Vec<String>,
    /// The request got no answer.
    pub error: Option<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub expectations: Expectations,
    pub checks: Vec<Check>,
    /// Stages or routes that were not requested, and why.
    pub skipped: Vec<String>,
}

/// Judges one answer against the expectations; returns the problems (none: passed).
pub fn judge(expect: &Expectations, status: u16, headers: &::http::HeaderMap, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if status != expect.status {
        // One line, short: the body is a hint, not the report.
        let text = String::from_utf8_lossy(body);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut snippet: String = words.join(" ").chars().take(120).collect();
        if snippet.len() < words.join(" ").len() {
            snippet.push('…');
        }
        problems.push(format!("status {status}, expected {} (body: {snippet})", expect.status));
    }
    for h in &expect.headers {
        match (headers.get(h.name.as_str()).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()), &h.value) {
            (None, _) => problems.push(format!("no `{}` header", h.name)),
            (Some(got), Some(want)) if got.trim() != want => problems.push(format!("`{}: {got}`, expected `{want}`", h.name)),
            _ => {}
        }
    }
    if expect.json_body && serde_json::from_slice::<serde_json::Value>(body).is_err() {
        problems.push(if body.is_empty() { "empty body, expected JSON".to_string() } else { "the body is not JSON".to_string() });
    }
    problems
}

/// Sends the requests, at most [`PARALLEL`] at once; a request still unanswered at `deadline` (the
/// probe's time limit) is reported as timed out.
pub async fn run(
    stages: &[StageTarget],
    to: &Destination,
    expect: &Expectations,
    client: &HttpClient,
    deadline: tokio::time::Instant,
    progress: Progress,
) -> Report {
    let mut skipped = Vec::new();
    let mut requests = Vec::new();
    for s in stages {
        if s.get_paths.is_empty() {
            skipped.push(format!("{}: its API has no GET route", s.label()));
        }
        skipped.extend(s.skipped.iter().map(|why| format!("{}: {why}", s.label())));
        requests.extend(s.get_paths.iter().map(|p| (s, p.clone(), to.url(s, p))));
    }
    let total = requests.len();
    let mut done = 0;
    progress.status(&format!("smoke: 0/{total}"));
    let mut checks: Vec<(usize, Check)> = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(i, (stage, path, url))| async move {
            let answer = match tokio::time::timeout_at(deadline, client.get(&url)).await {
                Ok(answer) => answer,
                Err(_) => Err(Failure { kind: FailureKind::Timeout, message: "the probe's time limit was reached".into() }),
            };
            let mut check = Check {
                stage: stage.label(),
                stage_resource: stage.resource.clone(),
                path,
                url,
                outcome: Outcome::Passed,
                status: None,
                latency_ms: None,
                problems: Vec::new(),
                error: None,
            };
            match answer {
                Ok(r) => {
                    check.status = Some(r.status);
                    check.latency_ms = Some(round1(r.latency.as_secs_f64() * 1000.0));
                    check.problems = judge(expect, r.status, &r.headers, &r.body);
                }
                Err(e) => {
                    check.problems.push(e.to_string());
                    check.error = Some(e);
                }
            }
            if !check.problems.is_empty() {
                check.outcome = Outcome::Failed;
            }
            (i, check)
        })
        .buffer_unordered(PARALLEL)
        .inspect(|_| {
            done += 1;
            progress.status(&format!("smoke: {done}/{total}"));
        })
        .collect()
        .await;
    progress.clear();
    checks.sort_by_key(|(i, _)| *i);
    let checks: Vec<Check> = checks.into_iter().map(|(_, c)| c).collect();
    let outcome = if checks.is_empty() { Outcome::Inconclusive } else { Outcome::worst(checks.iter().map(|c| c.outcome)) };
    Report { outcome, expectations: expect.clone(), checks, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_expectations() -> Expectations {
        Expectations {
            status: 200,
            headers: vec![
                ExpectedHeader::parse("Access-Control-Allow-Origin").unwrap(),
                ExpectedHeader::parse("Access-Control-Allow-Methods: OPTIONS,GET").unwrap(),
            ],
            json_body: true,
        }
    }

    #[test]
    fn an_answer_like_the_seed_handler_passes_and_each_difference_is_named() {
        let expect = seed_expectations();
        let mut headers = ::http::HeaderMap::new();
        headers.insert("access-control-allow-origin", "*".parse().unwrap());
        headers.insert("access-control-allow-methods", "OPTIONS,GET".parse().unwrap());
        assert_eq!(judge(&expect, 200, &headers, br#"{"message": "lambda 2026/01/01 {}"}"#), Vec::<String>::new());

        headers.insert("access-control-allow-methods", "GET".parse().unwrap());
        headers.remove("access-control-allow-origin");
        assert_eq!(
            judge(&expect, 502, &headers, br#"{"message": "Internal server error"}"#),
            vec![
                r#"status 502, expected 200 (body: {"message": "Internal server error"})"#.to_string(),
                "no `Access-Control-Allow-Origin` header".to_string(),
                "`Access-Control-Allow-Methods: GET`, expected `OPTIONS,GET`".to_string(),
            ]
        );
        let plain = Expectations { headers: vec![], ..expect };
        assert_eq!(judge(&plain, 200, &headers, b"<html>"), vec!["the body is not JSON".to_string()]);
        assert_eq!(judge(&plain, 200, &headers, b""), vec!["empty body, expected JSON".to_string()]);
    }

    #[test]
    fn expected_headers_are_a_name_with_an_optional_value() {
        assert_eq!(ExpectedHeader::parse(" X-A : b c ").unwrap(), ExpectedHeader { name: "X-A".into(), value: Some("b c".into()) });
        assert_eq!(ExpectedHeader::parse("X-A").unwrap().value, None);
        assert!(ExpectedHeader::parse(": v").is_err());
        assert!(ExpectedHeader::parse("bad name: v").is_err());
    }
}
