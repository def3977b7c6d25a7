"""Plain sequential boto3 scripts for the benchmark: the same AWS calls reconcile makes, one after the other.

* `apply_seed(...)` creates the seed stack (manifests/apigw-lambda-basic.toml) from empty with the calls
  reconcile's providers make for a create, in a dependency order, one call at a time. API Gateway's
  account limits are kept the way a careful script keeps them: before `CreateRestApi` /
  `CreateDeployment` it sleeps until 3 s / 5 s (+50 ms of margin) have passed since the previous one
  was sent (the benchmark's proxy answers 429 otherwise).
* `read_resources(...)` reads what a plan lists (type + physical id), with the calls reconcile's
  `read` functions make, one at a time.

Both count their calls by operation (botocore `after-call` events: one per operation, retries
included as separate HTTP attempts are not visible here, so the proxy's counters are the reference).
"""

import io
import json
import os
import time
import zipfile
from collections import Counter

import boto3
from botocore.config import Config

STACK_TAGS = {"reconcile:managed-by": "reconcile"}
SPACING = {"CreateRestApi": 3.0, "CreateDeployment": 5.0}
# Kept on top of the spacing, measured from when the previous call was sent: a request sent exactly
# 3.000 s after the previous one can arrive a millisecond early and find the bucket not yet refilled.
MARGIN = 0.05


class Calls:
    """Counts calls per (service, operation) through botocore events; keeps limited-op spacing."""

    def __init__(self):
        self.count = Counter()
        self.last = {}
        self.waited = 0.0

    def hook(self, service):
        def after_call(model, **_):
            self.count[(service, model.name)] += 1

        return after_call

    def space(self, op):
        gap = SPACING[op]
        last = self.last.get(op)
        if last is not None:
            wait = last + gap + MARGIN - time.monotonic()
            if wait > 0:
                self.waited += wait
                time.sleep(wait)
        self.last[op] = time.monotonic()


def clients(endpoint, calls):
    cfg = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=4)
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    out = {}
    for svc in ["iam", "logs", "lambda", "apigateway", "wafv2", "sts"]:
        c = session.client(svc, endpoint_url=endpoint, config=cfg)
        c.meta.events.register("after-call", calls.hook(svc))
        out[svc] = c
    return out


def lambda_zip(folder):
    """A zip of the folder (files sorted, fixed timestamps), like reconcile's artifact."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _, files in sorted(os.walk(folder)):
            for f in sorted(files):
                path = os.path.join(root, f)
                info = zipfile.ZipInfo(os.path.relpath(path, folder), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with open(path, "rb") as fh:
                    z.writestr(info, fh.read())
    return buf.getvalue()


def tags(stack, resource, extra=None):
    t = {"reconcile:stack": stack, "reconcile:resource": resource, **STACK_TAGS}
    t.update(extra or {})
    return t


def iam_tags(stack, resource):
    return [{"Key": k, "Value": v} for k, v in tags(stack, resource).items()]


ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","user":"$context.identity.user",'
    '"caller":"$context.identity.caller","requestTime":"$context.requestTime","httpMethod":"$context.httpMethod",'
    '"resourcePath":"$context.resourcePath","status":"$context.status","protocol":"$context.protocol",'
    '"responseLength":"$context.responseLength"}'
)


def assume(service):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def apply_seed(endpoint, code_folder, stack="apigw-lambda-basic"):
    """Creates the seed stack from empty, sequentially. Returns (seconds, Calls)."""
    calls = Calls()
    aws = clients(endpoint, calls)
    iam, logs, lam, apigw, waf, sts = (aws[s] for s in ["iam", "logs", "lambda", "apigateway", "wafv2", "sts"])
    region = "us-east-1"
    code = lambda_zip(code_folder)
    start = time.monotonic()

    # IAM: the function's role, the API Gateway CloudWatch role.
    role = iam.create_role(
        RoleName="HelloLambdaTest-role", Path="/", AssumeRolePolicyDocument=assume("lambda.amazonaws.com"),
        Description="Execution role of the HelloLambdaTest function", MaxSessionDuration=3600,
        Tags=iam_tags(stack, "hello_lambda_role"),
    )["Role"]
    iam.attach_role_policy(
        RoleName="HelloLambdaTest-role",
        PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    )
    cw_role = iam.create_role(
        RoleName="ApiGwPushToCloudWatchLogs", Path="/", AssumeRolePolicyDocument=assume("apigateway.amazonaws.com"),
        Description="API Gateway account role for CloudWatch logging", MaxSessionDuration=3600,
        Tags=iam_tags(stack, "apigw_cloudwatch_role"),
    )["Role"]
    iam.attach_role_policy(
        RoleName="ApiGwPushToCloudWatchLogs",
        PolicyArn="arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
    )

    # Log groups.
    log_arns = {}
    for res, name in [("dev_access_logs", "DevLogGroupAccessLog"), ("prod_access_logs", "ProdLogGroupAccessLog")]:
        logs.create_log_group(logGroupName=name, tags=tags(stack, res))
        logs.put_retention_policy(logGroupName=name, retentionInDays=731)
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        log_arns[res] = next(g for g in groups if g["logGroupName"] == name)["logGroupArn"]

    # Lambda.
    fn = lam.create_function(
        FunctionName="HelloLambdaTest", Runtime="python3.13", Handler="index.handler", Role=role["Arn"],
        Code={"ZipFile": code}, MemorySize=512, Timeout=10, Description="", Architectures=["x86_64"],
        Environment={"Variables": {}}, Tags=tags(stack, "hello_function"),
    )
    lam.get_waiter("function_active_v2").wait(FunctionName="HelloLambdaTest", WaiterConfig={"Delay": 1})
    fn_arn = fn["FunctionArn"]
    invoke_uri = f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{fn_arn}/invocations"

    # The role API Gateway assumes to invoke the function.
    invoke_role = iam.create_role(
        RoleName="ApiGwInvokeLambda", Path="/", AssumeRolePolicyDocument=assume("apigateway.amazonaws.com"),
        Description="Assumed by API Gateway to invoke HelloLambdaTest", MaxSessionDuration=3600,
        Tags=iam_tags(stack, "api_invoke_role"),
    )["Role"]
    iam.put_role_policy(
        RoleName="ApiGwInvokeLambda", PolicyName="invoke-lambda",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [fn_arn]}]}),
    )
    iam.put_role_policy(
        RoleName="ApiGwInvokeLambda", PolicyName="write-logs",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
            "logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogGroups", "logs:DescribeLogStreams",
            "logs:PutLogEvents", "logs:GetLogEvents", "logs:FilterLogEvents"], "Resource": ["*"]}]}),
    )

    # API Gateway account setting.
    apigw.update_account(patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": cw_role["Arn"]}])

    def rest_api(res, name, path, method_responses, credentials):
        calls.space("CreateRestApi")
        api = apigw.create_rest_api(
            name=name, endpointConfiguration={"types": ["REGIONAL"]}, tags=tags(stack, res))
        api_id = api["id"]
        items = apigw.get_resources(restApiId=api_id, embed=["methods"], limit=500)["items"]
        root = next(i["id"] for i in items if i["path"] == "/")
        rid = apigw.create_resource(restApiId=api_id, parentId=root, pathPart=path.strip("/"))["id"]
        apigw.put_method(restApiId=api_id, resourceId=rid, httpMethod="GET", authorizationType="NONE")
        for code_ in method_responses:
            apigw.put_method_response(restApiId=api_id, resourceId=rid, httpMethod="GET", statusCode=code_)
        kw = {"credentials": credentials} if credentials else {}
        apigw.put_integration(restApiId=api_id, resourceId=rid, httpMethod="GET", type="AWS_PROXY",
                              uri=invoke_uri, integrationHttpMethod="POST", **kw)
        for code_ in method_responses:
            apigw.put_integration_response(restApiId=api_id, resourceId=rid, httpMethod="GET", statusCode=code_)
        return api_id

    account = sts.get_caller_identity()["Account"]

    # ApiGwDemo: API, permission, deployment, prod stage.
    demo = rest_api("api_demo", "ApiGwDemo", "/order", [], None)
    lam.add_permission(
        FunctionName="HelloLambdaTest", StatementId="AllowApiGwDemoGetOrder", Action="lambda:InvokeFunction",
        Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:{region}:{account}:{demo}/*/GET/order",
    )
    calls.space("CreateDeployment")
    demo_dep = apigw.create_deployment(restApiId=demo)["id"]
    apigw.create_stage(restApiId=demo, stageName="prod", deploymentId=demo_dep)

    # HelloApiGw: API, deployment, dev and prod stages with access logs.
    hello = rest_api("hello_api", "HelloApiGw", "/book", ["200"], invoke_role["Arn"])
    calls.space("CreateDeployment")
    hello_dep = apigw.create_deployment(restApiId=hello)["id"]
    for stage, res in [("dev", "dev_access_logs"), ("prod", "prod_access_logs")]:
        apigw.create_stage(restApiId=hello, stageName=stage, deploymentId=hello_dep)
        apigw.update_stage(restApiId=hello, stageName=stage, patchOperations=[
            {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": log_arns[res]},
            {"op": "replace", "path": "/accessLogSettings/format", "value": ACCESS_LOG_FORMAT},
            {"op": "replace", "path": "/*/*/logging/dataTrace", "value": "true"},
            {"op": "replace", "path": "/*/*/logging/loglevel", "value": "INFO"},
        ])

    # WAF web ACL and its association with the prod stage.
    acl = waf.create_web_acl(
        Name="ApiGwWebAcl", Scope="REGIONAL", DefaultAction={"Allow": {}},
        VisibilityConfig={"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": "ApiGwWebAcl"},
        Rules=[
            {"Name": "AWSManagedRulesCommonRuleSet", "Priority": 10, "OverrideAction": {"None": {}},
             "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": "AWSManagedRulesCommonRuleSet"}},
             "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True,
                                  "MetricName": "AWSIPReputationList"}},
            {"Name": "RuleGeoRestrict", "Priority": 2, "Action": {"Block": {}},
             "Statement": {"GeoMatchStatement": {"CountryCodes": ["SG"]}},
             "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True,
                                  "MetricName": "GeoMatch"}},
            {"Name": "LimiteRequestsThreshold", "Priority": 1, "Action": {"Block": {}},
             "Statement": {"RateBasedStatement": {"Limit": 2000, "AggregateKeyType": "IP",
                                                  "EvaluationWindowSec": 300}},
             "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True,
                                  "MetricName": "LimitRequestsThreshold"}},
        ],
        Tags=[{"Key": k, "Value": v} for k, v in tags(stack, "waf_acl").items()],
    )
    stage_arn = f"arn:aws:apigateway:{region}::/restapis/{hello}/stages/prod"
    waf.associate_web_acl(WebACLArn=acl["Summary"]["ARN"], ResourceArn=stage_arn)
    return time.monotonic() - start, calls


def read_resources(endpoint, resources):
    """Reads each (type, physical_id) the way reconcile's providers do, one call at a time.

    Returns (seconds, Calls)."""
    calls = Calls()
    aws = clients(endpoint, calls)
    iam, logs, lam, apigw, waf, sts = (aws[s] for s in ["iam", "logs", "lambda", "apigateway", "wafv2", "sts"])
    start = time.monotonic()
    need_account = False
    for kind, pid in resources:
        if kind == "aws_iam_role":
            iam.get_role(RoleName=pid)
            for name in iam.list_role_policies(RoleName=pid)["PolicyNames"]:
                iam.get_role_policy(RoleName=pid, PolicyName=name)
            iam.list_attached_role_policies(RoleName=pid)
        elif kind == "aws_cloudwatch_log_group":
            groups = logs.describe_log_groups(logGroupNamePrefix=pid)["logGroups"]
            arn = next(g for g in groups if g["logGroupName"] == pid)["logGroupArn"]
            logs.list_tags_for_resource(resourceArn=arn)
        elif kind == "aws_lambda_function":
            lam.get_function(FunctionName=pid)
        elif kind == "aws_lambda_permission":
            lam.get_policy(FunctionName=pid.split("/")[0])
        elif kind == "aws_api_gateway_rest_api":
            apigw.get_rest_api(restApiId=pid)
            apigw.get_resources(restApiId=pid, embed=["methods"], limit=500)
            need_account = True
        elif kind == "aws_api_gateway_deployment":
            api, dep = pid.split("/", 1)
            apigw.get_deployment(restApiId=api, deploymentId=dep)
        elif kind == "aws_api_gateway_stage":
            api, stage = pid.split("/", 1)
            apigw.get_stage(restApiId=api, stageName=stage)
        elif kind == "aws_api_gateway_account":
            apigw.get_account()
        elif kind == "aws_wafv2_web_acl":
            scope, name, acl_id = pid.split("/", 2)
            acl = waf.get_web_acl(Name=name, Scope=scope, Id=acl_id)["WebACL"]
            waf.list_tags_for_resource(ResourceARN=acl["ARN"])
        elif kind == "aws_wafv2_web_acl_association":
            waf.get_web_acl_for_resource(ResourceArn=pid)
        else:
            raise ValueError(f"no reader for {kind}")
    if need_account:
        sts.get_caller_identity()
    return time.monotonic() - start, calls
