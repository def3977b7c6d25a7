//! How the proxy recognises what an AWS request is (its service, protocol and operation) and the error
//! answers AWS gives in each protocol.

use http::HeaderMap;
use serde_json::json;

use crate::config::FailRule;
use crate::faults::Fault;
use crate::http::Reply;

/// A header's value as text (`None` when absent or not visible ASCII).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The SigV4 credential: `Credential=AKID/DATE/REGION/SERVICE/aws4_request` in the `Authorization`
/// header, or `X-Amz-Credential` in a presigned URL, split at its slashes.
fn credential_of(head: &HeaderMap, target: &str) -> Option<Vec<String>> {
    let scope = if let Some(auth) = header(head, "authorization") {
        let i = auth.find("Credential=")?;
        auth[i + "Credential=".len()..].split([',', ' ']).next()?.to_string()
    } else {
        let i = target.find("X-Amz-Credential=")?;
        let raw = target[i + "X-Amz-Credential=".len()..].split('&').next()?;
        raw.replace("%2F", "/").replace("%2f", "/")
    };
    let parts: Vec<String> = scope.split('/').map(str::to_string).collect();
    (parts.len() >= 5).then_some(parts)
}

/// The SigV4 credential scope's service (see [`credential_of`]).
pub fn service_of(head: &HeaderMap, target: &str) -> Option<String> {
    credential_of(head, target).map(|parts| parts[3].to_ascii_lowercase()).filter(|s| !s.is_empty())
}

/// The access key id that signed the request, logged with each request so that the requests of
/// several clients sharing the proxy (and its API Gateway limits) can be told apart in its log.
pub fn access_key_of(head: &HeaderMap, target: &str) -> Option<String> {
    credential_of(head, target).map(|parts| parts[0].clone()).filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsQuery: IAM, STS.
    Query,
    /// awsJson1_0 / awsJson1_1: CloudWatch Logs, WAFv2. The value is the content type.
    AwsJson(&'static str),
    /// restJson1: Lambda, API Gateway.
    RestJson,
}

/// The protocol, told from the request itself (so any service of the same protocol works).
pub fn protocol_of(head: &HeaderMap, body: &[u8]) -> Protocol {
    if header(head, "x-amz-target").is_some() {
        let ct = header(head, "content-type").unwrap_or_default();
        return Protocol::AwsJson(if ct.contains("x-amz-json-1.0") { "application/x-amz-json-1.0" } else { "application/x-amz-json-1.1" });
    }
    let form = header(head, "content-type").is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if form && (body.starts_with(b"Action=") || find(body, b"&Action=").is_some()) {
        return Protocol::Query;
    }
    Protocol::RestJson
}

fn query_namespace(service: &str) -> Option<&'static str> {
    match service {
        "iam" => Some("https://iam.amazonaws.com/doc/2010-05-08/"),
        "sts" => Some("https://sts.amazonaws.com/doc/2011-06-15/"),
        _ => None,
    }
}

/// The answer AWS gives for a throttled (`Fault::Throttle`) or unavailable (`Fault::Error`) request.
pub fn fault_response(fault: Fault, protocol: Protocol, service: &str, request_id: &str, close: bool) -> Reply {
    let throttle = fault == Fault::Throttle;
    let rid = ("x-amzn-RequestId", request_id.to_string());
    match protocol {
        Protocol::Query => {
            let (status, kind, code, message) = if throttle {
                (400, "Sender", "Throttling", "Rate exceeded")
            } else {
                (503, "Receiver", "ServiceUnavailable", "Service is unavailable. Please try again later.")
            };
            let xmlns = query_namespace(service).map(|ns| format!(" xmlns=\"{ns}\"")).unwrap_or_default();
            let body = format!(
                "<ErrorResponse{xmlns}>\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    \
                 <Message>{message}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
            );
            Reply::new(status, vec![("Content-Type", "text/xml".into()), rid], body.into_bytes(), close)
        }
        Protocol::AwsJson(content_type) => {
            let (status, code, message) = if throttle {
                (400, "ThrottlingException", "Rate exceeded")
            } else {
                (503, "ServiceUnavailableException", "Service Unavailable")
            };
            let body = json!({"__type": code, "message": message}).to_string();
            let headers = vec![("Content-Type", content_type.into()), ("x-amzn-ErrorType", code.into()), rid];
            Reply::new(status, headers, body.into_bytes(), close)
        }
        Protocol::RestJson => {
            let (status, code, message) = if throttle {
                (429, "TooManyRequestsException", "Too Many Requests")
            } else {
                (503, "ServiceUnavailableException", "Service Unavailable")
            };
            let body = json!({"message": message}).to_string();
            let headers = vec![("Content-Type", "application/json".into()), ("x-amzn-ErrorType", code.into()), rid];
            Reply::new(status, headers, body.into_bytes(), close)
        }
    }
}

/// The operation a request calls: the query `Action` (IAM, STS), the `X-Amz-Target` operation
/// (CloudWatch Logs, WAFv2), or for restJson services (API Gateway, Lambda) the one told from the
/// method and path.
pub fn operation_of(protocol: Protocol, service: &str, method: &str, target: &str, head: &HeaderMap, body: &[u8]) -> Option<String> {
    match protocol {
        Protocol::Query => {
            let query = target.split_once('?').map(|(_, q)| q.as_bytes()).unwrap_or_default();
            body.split(|&b| b == b'&')
                .chain(query.split(|&b| b == b'&'))
                .find_map(|p| p.strip_prefix(b"Action="))
                .map(|a| String::from_utf8_lossy(a).into_owned())
        }
        Protocol::AwsJson(_) => header(head, "x-amz-target").and_then(|t| t.rsplit('.').next()).map(str::to_string),
        Protocol::RestJson => rest_operation(service, method, target).map(str::to_string),
    }
}

/// The API Gateway and Lambda operations reconcile calls, told apart by method and path.
pub fn rest_operation(service: &str, method: &str, target: &str) -> Option<&'static str> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = method.to_ascii_uppercase();
    let m = method.as_str();
    let op = match (service, segments.as_slice()) {
        ("apigateway", ["account"]) => match m {
            "GET" => "GetAccount",
            "PATCH" => "UpdateAccount",
            _ => return None,
        },
        ("apigateway", ["tags", ..]) => match m {
            "PUT" => "TagResource",
            "DELETE" => "UntagResource",
            "GET" => "GetTags",
            _ => return None,
        },
        ("apigateway", ["restapis", rest @ ..]) => match (m, rest) {
            ("POST", []) => "CreateRestApi",
            ("GET", []) => "GetRestApis",
            ("GET", [_]) => "GetRestApi",
            ("PATCH", [_]) => "UpdateRestApi",
            ("PUT", [_]) => "PutRestApi",
            ("DELETE", [_]) => "DeleteRestApi",
            ("GET", [_, "resources"]) => "GetResources",
            ("POST", [_, "resources", _]) => "CreateResource",
            ("GET", [_, "resources", _]) => "GetResource",
            ("PATCH", [_, "resources", _]) => "UpdateResource",
            ("DELETE", [_, "resources", _]) => "DeleteResource",
            ("PUT", [_, "resources", _, "methods", _]) => "PutMethod",
            ("GET", [_, "resources", _, "methods", _]) => "GetMethod",
            ("PATCH", [_, "resources", _, "methods", _]) => "UpdateMethod",
            ("DELETE", [_, "resources", _, "methods", _]) => "DeleteMethod",
            ("PUT", [_, "resources", _, "methods", _, "integration"]) => "PutIntegration",
            ("GET", [_, "resources", _, "methods", _, "integration"]) => "GetIntegration",
            ("PATCH", [_, "resources", _, "methods", _, "integration"]) => "UpdateIntegration",
            ("DELETE", [_, "resources", _, "methods", _, "integration"]) => "DeleteIntegration",
            ("PUT", [_, "resources", _, "methods", _, "integration", "responses", _]) => "PutIntegrationResponse",
            ("GET", [_, "resources", _, "methods", _, "integration", "responses", _]) => "GetIntegrationResponse",
            ("DELETE", [_, "resources", _, "methods", _, "integration", "responses", _]) => "DeleteIntegrationResponse",
            ("PUT", [_, "resources", _, "methods", _, "responses", _]) => "PutMethodResponse",
            ("GET", [_, "resources", _, "methods", _, "responses", _]) => "GetMethodResponse",
            ("DELETE", [_, "resources", _, "methods", _, "responses", _]) => "DeleteMethodResponse",
            ("POST", [_, "deployments"]) => "CreateDeployment",
            ("GET", [_, "deployments"]) => "GetDeployments",
            ("GET", [_, "deployments", _]) => "GetDeployment",
            ("PATCH", [_, "deployments", _]) => "UpdateDeployment",
            ("DELETE", [_, "deployments", _]) => "DeleteDeployment",
            ("POST", [_, "stages"]) => "CreateStage",
            ("GET", [_, "stages"]) => "GetStages",
            ("GET", [_, "stages", _]) => "GetStage",
            ("PATCH", [_, "stages", _]) => "UpdateStage",
            ("DELETE", [_, "stages", _]) => "DeleteStage",
            _ => return None,
        },
        ("lambda", [_, "tags", ..]) => match m {
            "POST" => "TagResource",
            "DELETE" => "UntagResource",
            "GET" => "ListTags",
            _ => return None,
        },
        ("lambda", [_, "functions", rest @ ..]) => match (m, rest) {
            ("POST", []) => "CreateFunction",
            ("GET", []) => "ListFunctions",
            ("GET", [_]) => "GetFunction",
            ("DELETE", [_]) => "DeleteFunction",
            ("GET", [_, "configuration"]) => "GetFunctionConfiguration",
            ("PUT", [_, "configuration"]) => "UpdateFunctionConfiguration",
            ("PUT", [_, "code"]) => "UpdateFunctionCode",
            ("POST", [_, "policy"]) => "AddPermission",
            ("GET", [_, "policy"]) => "GetPolicy",
            ("DELETE", [_, "policy", _]) => "RemovePermission",
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

/// The answer of a `fail` rule, in the request's protocol.
pub fn rule_response(rule: &FailRule, protocol: Protocol, service: &str, request_id: &str, close: bool) -> Reply {
    let rid = ("x-amzn-RequestId", request_id.to_string());
    let (status, message) = (rule.status, rule.message.as_str());
    match protocol {
        Protocol::Query => {
            let code = rule.code.as_deref().unwrap_or("ValidationError");
            let kind = if status < 500 { "Sender" } else { "Receiver" };
            let xmlns = query_namespace(service).map(|ns| format!(" xmlns=\"{ns}\"")).unwrap_or_default();
            let body = format!(
                "<ErrorResponse{xmlns}>\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    \
                 <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                xml_escape(code),
                xml_escape(message)
            );
            Reply::new(status, vec![("Content-Type", "text/xml".into()), rid], body.into_bytes(), close)
        }
        Protocol::AwsJson(content_type) => {
            let code = rule.code.as_deref().unwrap_or("ValidationException");
            let body = json!({"__type": code, "message": message}).to_string();
            let headers = vec![("Content-Type", content_type.into()), ("x-amzn-ErrorType", code.into()), rid];
            Reply::new(status, headers, body.into_bytes(), close)
        }
        Protocol::RestJson => {
            let code = rule.code.as_deref().unwrap_or("BadRequestException");
            let body = json!({"message": message}).to_string();
            let headers = vec![("Content-Type", "application/json".into()), ("x-amzn-ErrorType", code.into()), rid];
            Reply::new(status, headers, body.into_bytes(), close)
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `METHOD TARGET` plus the operation of an RPC-style request (`X-Amz-Target`, or `Action=` of a form
/// body), for log lines.
pub fn describe(method: &str, target: &str, head: &HeaderMap, body: &[u8]) -> String {
    if let Some(t) = header(head, "x-amz-target") {
        return format!("{method} {target} {t}");
    }
    let action = body
        .split(|&b| b == b'&')
        .find_map(|p| p.strip_prefix(b"Action="))
        .filter(|a| a.len() <= 64)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    match action {
        Some(a) => format!("{method} {target} Action={a}"),
        None => format!("{method} {target}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head's headers (the start line is skipped).
    fn head(raw: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in raw.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            headers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.trim().parse().unwrap());
        }
        headers
    }

    /// An answer as it reads on the wire, header names spelled as given.
    fn text(reply: Reply) -> String {
        let status = http::StatusCode::from_u16(reply.status).unwrap();
        let mut out = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
        for (n, v) in &reply.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        out + &String::from_utf8(reply.body).unwrap()
    }

    #[test]
    fn service_comes_from_the_credential_scope() {
        let h = head(
            "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=abc\r\n\r\n",
        );
        assert_eq!(service_of(&h, "/").as_deref(), Some("iam"));
        let h = head("GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(
            service_of(&h, "/x?X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Flambda%2Faws4_request&a=b").as_deref(),
            Some("lambda")
        );
        assert_eq!(service_of(&h, "/x"), None);
    }

    #[test]
    fn access_key_comes_from_the_credential() {
        let h = head(
            "GET /restapis HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=watcher/20250101/us-east-1/apigateway/aws4_request, \
             SignedHeaders=host, Signature=abc\r\n\r\n",
        );
        assert_eq!(access_key_of(&h, "/restapis").as_deref(), Some("watcher"));
        let h = head("GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(
            access_key_of(&h, "/x?X-Amz-Credential=AKID2%2F20250101%2Fus-east-1%2Flambda%2Faws4_request&a=b").as_deref(),
            Some("AKID2")
        );
        assert_eq!(access_key_of(&h, "/x"), None);
        let h = head("GET /x HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=/20250101/us-east-1/iam/aws4_request\r\n\r\n");
        assert_eq!(access_key_of(&h, "/x"), None, "an empty key id is no key id");
    }

    #[test]
    fn protocol_comes_from_the_request_shape() {
        let q = head("POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\r\n");
        assert_eq!(protocol_of(&q, b"Action=GetRole&Version=2010-05-08"), Protocol::Query);
        let j = head("POST / HTTP/1.1\r\nX-Amz-Target: Logs_20140328.CreateLogGroup\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(protocol_of(&j, b"{}"), Protocol::AwsJson("application/x-amz-json-1.1"));
        let r = head("GET /2015-03-31/functions/f HTTP/1.1\r\n\r\n");
        assert_eq!(protocol_of(&r, b""), Protocol::RestJson);
    }
    #[test]
    fn throttling_answers_have_the_protocol_shape() {
        let q = text(fault_response(Fault::Throttle, Protocol::Query, "iam", "rid", false));
        assert!(q.starts_with("HTTP/1.1 400 "), "{q}");
        assert!(q.contains("<Code>Throttling</Code>") && q.contains("<Type>Sender</Type>") && q.contains("<RequestId>rid</RequestId>"));
        let j = text(fault_response(Fault::Throttle, Protocol::AwsJson("application/x-amz-json-1.1"), "logs", "rid", false));
        assert!(
            j.starts_with("HTTP/1.1 400 ")
                && j.contains("x-amzn-ErrorType: ThrottlingException")
                && j.contains(r#""__type":"ThrottlingException""#)
        );
        let r = text(fault_response(Fault::Throttle, Protocol::RestJson, "lambda", "rid", true));
        assert!(
            r.starts_with("HTTP/1.1 429 ") && r.contains("x-amzn-ErrorType: TooManyRequestsException") && r.contains("Connection: close")
        );
        let e = text(fault_response(Fault::Error, Protocol::RestJson, "apigateway", "rid", false));
        assert!(e.starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn operations_are_named_for_every_protocol() {
        let q = head("POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
        let body = b"Action=PutRolePolicy&Version=2010-05-08&RoleName=r";
        assert_eq!(operation_of(protocol_of(&q, body), "iam", "POST", "/", &q, body).as_deref(), Some("PutRolePolicy"));
        let j =
            head("POST / HTTP/1.1\r\nX-Amz-Target: Logs_20140328.PutRetentionPolicy\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(operation_of(protocol_of(&j, b"{}"), "logs", "POST", "/", &j, b"{}").as_deref(), Some("PutRetentionPolicy"));
        let w = head("POST / HTTP/1.1\r\nX-Amz-Target: AWSWAF_20190729.CreateWebACL\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(operation_of(protocol_of(&w, b"{}"), "wafv2", "POST", "/", &w, b"{}").as_deref(), Some("CreateWebACL"));
        let r = head("PATCH /restapis/a1b2/stages/prod HTTP/1.1\r\nContent-Type: application/json\r\n\r\n");
        assert_eq!(
            operation_of(protocol_of(&r, b"{}"), "apigateway", "PATCH", "/restapis/a1b2/stages/prod", &r, b"{}").as_deref(),
            Some("UpdateStage")
        );
        let cases = [
            ("apigateway", "POST", "/restapis", "CreateRestApi"),
            ("apigateway", "POST", "/restapis/a1/stages", "CreateStage"),
            ("apigateway", "GET", "/restapis/a1/stages/prod", "GetStage"),
            ("apigateway", "DELETE", "/restapis/a1/stages/prod", "DeleteStage"),
            ("apigateway", "POST", "/restapis/a1/deployments", "CreateDeployment"),
            ("apigateway", "PUT", "/restapis/a1/resources/r1/methods/GET/integration", "PutIntegration"),
            ("apigateway", "PUT", "/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Frestapis%2Fa1", "TagResource"),
            ("apigateway", "DELETE", "/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Frestapis%2Fa1?tagKeys=x", "UntagResource"),
            ("apigateway", "PATCH", "/account", "UpdateAccount"),
            ("lambda", "POST", "/2015-03-31/functions", "CreateFunction"),
            ("lambda", "GET", "/2015-03-31/functions/HelloLambdaTest", "GetFunction"),
            ("lambda", "PUT", "/2015-03-31/functions/HelloLambdaTest/configuration", "UpdateFunctionConfiguration"),
            ("lambda", "PUT", "/2015-03-31/functions/HelloLambdaTest/code", "UpdateFunctionCode"),
            ("lambda", "POST", "/2015-03-31/functions/HelloLambdaTest/policy", "AddPermission"),
            ("lambda", "DELETE", "/2015-03-31/functions/HelloLambdaTest/policy/sid", "RemovePermission"),
            ("lambda", "POST", "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af", "TagResource"),
        ];
        for (service, method, path, want) in cases {
            assert_eq!(rest_operation(service, method, path), Some(want), "{method} {path}");
        }
        assert_eq!(rest_operation("apigateway", "POST", "/restapis/a1/stages/prod"), None);
        assert_eq!(rest_operation("lambda", "PATCH", "/restapis/a1/stages/prod"), None, "the service decides the table");
    }
    #[test]
    fn fail_rule_answers_have_the_protocol_shape() {
        let rule = |code: Option<&str>| FailRule {
            service: None,
            operation: "X".into(),
            nth: 1,
            times: 1,
            status: 400,
            code: code.map(str::to_string),
            message: "no <way>".into(),
        };
        let q = text(rule_response(&rule(Some("MalformedPolicyDocument")), Protocol::Query, "iam", "rid", false));
        assert!(
            q.starts_with("HTTP/1.1 400 Bad Request") && q.contains("<Code>MalformedPolicyDocument</Code>") && q.contains("no &lt;way&gt;"),
            "{q}"
        );
        let j = text(rule_response(&rule(None), Protocol::AwsJson("application/x-amz-json-1.1"), "logs", "rid", false));
        assert!(j.contains("x-amzn-ErrorType: ValidationException") && j.contains(r#""__type":"ValidationException""#), "{j}");
        let r = text(rule_response(&rule(None), Protocol::RestJson, "apigateway", "rid", false));
        assert!(r.contains("x-amzn-ErrorType: BadRequestException") && r.contains(r#""message":"no <way>""#), "{r}");
    }
}
