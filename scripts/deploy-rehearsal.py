#!/usr/bin/env python3
"""Deploy rehearsal: template.yaml deployed offline, on moto's CloudFormation.

What `sam deploy` does, without an AWS account: the SAM transform (aws-sam-translator, the
version SAM CLI pins), then CreateStack, then the checks below on what the stack made. Run by
`make rehearse` (part of `make validate`, so of `make test`) in the venv `scripts/tools.sh
rehearsal` installs (moto and aws-sam-translator, exact versions).

1. Template checks (static, on template.yaml and docs/runbook.md): the secret parameters take
   what `openssl rand -hex 32` makes and refuse every value the functions would refuse at
   start-up (the template is never looser than the code); the functions log JSON at INFO (the
   platform at WARN); every alarm on our metrics names a dimension set the metric lines carry,
   Stack included; every metric filter reads fields the webhook's access log writes and is
   alarmed; every access log format uses
   only context variables that cannot hold the request path (the webhook's path is its secret,
   the read API's paths hold phone numbers); every alarm is named after its stack, tells the
   alarm topic, and names a heading of docs/runbook.md that exists; every alarm on our own
   metrics names the `Stack` dimension. The Secrets Manager secret (`Secrets`): no fixed name, a
   description naming the stack, its SecretString the !Sub JSON of the four secret parameters
   (which refuse anything that would break that JSON); referred to only by the SECRET_ARN of
   the functions whose binary reads it (receiver, api), by their one statement granting
   secretsmanager:GetSecretValue on it alone, and by the SecretArn output; no function's
   environment refers to a NoEcho parameter. The read API's routes (the api function's HttpApi
   events, the only API events of the template) are exactly GET /v1/{proxy+}, GET /healthz and
   every route the console's router serves (read from src/console.rs), one method and path each:
   no console request unrouted, nothing broader (no ANY, no other path variable); the webhook
   API has no console route.
2. Rehearsals, once with the defaults and once with every optional part on (Function URL,
   forwarding, a previous webhook secret and read token, an alarm email): the function code
   (a dummy zip with a `bootstrap`) is put into moto's S3 and each function's CodeUri points at
   it; the stack must reach CREATE_COMPLETE with every resource its conditions call for; every
   Output it declares must be there and non-empty (and name the resource it says it names); each
   function's environment, read back with lambda GetFunctionConfiguration, must hold every
   variable its binary reads (READS below, taken from src/), nothing else, and each table,
   queue, bus, secret and setting must be the one this stack made or was given. The secret:
   its value, read back with GetSecretValue, is the JSON of the four parameters given; the
   receiver's and the api's SECRET_ARN is its ARN (and no other function has one); no
   function's environment holds the value of any NoEcho parameter given; of every IAM role the
   stack made (the functions' and the forwarding role), the receiver's and the api's each have
   exactly one statement granting Secrets Manager actions, GetSecretValue on this secret alone,
   the others none, and no managed policy beyond the AWS ones SAM attaches; the SecretArn
   output is its ARN. The read API as made (SAM's OpenAPI body as CloudFormation resolved it):
   those routes and no other, each invoking the api function, which lets this API (and no
   other) invoke it for each console route (lambda GetPolicy); no webhook route is the console's.

moto models most of the template but not every type: those it does not (listed in the output
of each run, e.g. AWS::ApiGatewayV2::*, AWS::CloudWatch::Alarm, AWS::SecretsManager::Secret)
are created as *stand-ins* that record their properties as CloudFormation resolved them, so
references to and from them are still checked (an alarm's topic, a stage's log group, a metric
filter's log group), but AWS's own validation of those resources is not rehearsed. The secret's
stand-in also creates the secret in moto's Secrets Manager from its resolved properties (its
Ref is that secret's ARN, as on AWS), so its value is read back through the API.

Exit status 0 when every check passed, 1 otherwise (each failure printed).
"""

from __future__ import annotations

import argparse
import ast
import copy
import fnmatch
import io
import json
import logging
import os
import re
import sys
import time
import uuid
import warnings
import zipfile
from pathlib import Path

from cfn_template import load_template  # scripts/cfn_template.py: shared with the deploy template
from check_report import Failures  # scripts/check_report.py: the tally both scripts use

ROOT = Path(__file__).resolve().parent.parent
STACK = "rehearsal"
REGION = "us-east-1"
CODE_BUCKET = "rehearsal-code"
CODE_KEY = "bootstrap.zip"

# What each binary reads from its environment, from the code (read-only here; keep in step):
#   src/lambda.rs      ReceiverConfig::from_lookup  (receiver), ProcessorConfig (processor),
#                      ReadApiConfig (api); SECRET_ARN: the Secrets Manager secret the receiver
#                      (webhookSecret, webhookSecretPrevious) and the api (apiToken,
#                      apiTokenPrevious) read their secrets from, at init and every 5 minutes
#   src/bin/sweeper.rs var("LEDGER_TABLE"), var("QUEUE_URL")
#   src/notifier.rs    NotifierConfig::from_lookup (notifier and windows: src/bin/windows.rs)
#   src/settings.rs    how each is checked (required, or a default when unset or empty)
#   src/metrics.rs     STACK_NAME: the Stack dimension of every metric line (every binary; a
#                      line without it would not match the alarms, which name it)
# "required": the code refuses to start without it. "set": the code has a default or reads empty
# as unset, but the template must pass it (a parameter, or the previous secret, empty outside a
# rotation). "default": the template leaves it to the code's default.
READS: dict[str, dict[str, str]] = {
    "receiver": {
        "LEDGER_TABLE": "required",
        "QUEUE_URL": "required",
        "SECRET_ARN": "required",
        "DEDUP_TTL_DAYS": "set",
        "QUARANTINE_RETENTION_DAYS": "set",
        "MAX_BODY_BYTES": "default",
        "STACK_NAME": "set",
    },
    "processor": {
        "STATE_TABLE": "required",
        "LEDGER_TABLE": "required",
        "DEDUP_TTL_DAYS": "set",
        "QUARANTINE_RETENTION_DAYS": "set",
        "STACK_NAME": "set",
    },
    "sweeper": {"LEDGER_TABLE": "required", "QUEUE_URL": "required", "STACK_NAME": "set"},
    "api": {
        "STATE_TABLE": "required",
        "SECRET_ARN": "required",
        "STACK_NAME": "set",
    },
    "notifier": {
        "STATE_TABLE": "required",
        "CHANGE_BUS_NAME": "required",
        "WINDOW_CLOSING_LEAD_MINUTES": "set",
        "STACK_NAME": "set",
    },
    "windows": {
        "STATE_TABLE": "required",
        "CHANGE_BUS_NAME": "required",
        "WINDOW_CLOSING_LEAD_MINUTES": "set",
        "STACK_NAME": "set",
    },
}

# What each variable must name: a resource of this stack (by logical id), or a parameter.
NAMES_RESOURCE = {
    "LEDGER_TABLE": "LedgerTable",
    "STATE_TABLE": "StateTable",
    "QUEUE_URL": "EventQueue",
    "CHANGE_BUS_NAME": "ChangeBus",
    "SECRET_ARN": "Secrets",
}
NAMES_PARAMETER = {
    "DEDUP_TTL_DAYS": "DedupTtlDays",
    "QUARANTINE_RETENTION_DAYS": "QuarantineRetentionDays",
    "WINDOW_CLOSING_LEAD_MINUTES": "WindowClosingLeadMinutes",
}

# Every output the stack must show (the README and docs/runbook.md send operators to them), and
# what it must be: ("ref", X) the physical id of resource X; ("queue-name", X), ("queue-arn", X)
# of queue X; ("bus-arn", X); ("url", X, suffix) a URL on resource X's id or endpoint ending in
# suffix. An output added to the template must be added here.
OUTPUTS = {
    "WebhookUrl": ("url", "WebhookApi", "/webhook/<secret>"),
    "FunctionUrlWebhook": ("url", "ReceiverUrl", "webhook/<secret>"),
    "DashboardUrl": ("url", "Dashboard", f"#dashboards:name=wati-ingest-{STACK}"),
    "AlarmTopicArn": ("ref", "AlarmTopic"),
    "ReadApiUrl": ("url", "HttpApi", "/v1/"),
    "ConsoleUrl": ("url", "HttpApi", "/console"),
    "LedgerTableName": ("ref", "LedgerTable"),
    "StateTableName": ("ref", "StateTable"),
    "EventQueueUrl": ("ref", "EventQueue"),
    "EventQueueName": ("queue-name", "EventQueue"),
    "DeadLetterQueueUrl": ("ref", "DeadLetterQueue"),
    "DeadLetterQueueArn": ("queue-arn", "DeadLetterQueue"),
    "SecretArn": ("secret-arn", "Secrets"),
    "ChangeBusName": ("ref", "ChangeBus"),
    "ChangeBusArn": ("bus-arn", "ChangeBus"),
    "ChangeArchiveName": ("ref", "ChangeArchive"),
    "NotifierDeadLetterQueueUrl": ("ref", "NotifierDeadLetterQueue"),
    "ForwardDeadLetterQueueUrl": ("ref", "ForwardDeadLetterQueue"),
    "OperatorEnvironment": ("cli-env", None),
}

# What `wati-ingest <command> --aws` reads (src/bin/wati-ingest.rs, run_aws), and the resource
# each must name: the OperatorEnvironment output sets exactly these.
CLI_AWS_VARIABLES = {
    "LEDGER_TABLE": "LedgerTable",
    "STATE_TABLE": "StateTable",
    "QUEUE_URL": "EventQueue",
    "DLQ_URL": "DeadLetterQueue",
}

# The read API (template.yaml, HttpApi) and the one function it invokes: its routes are the
# ApiFunction's HttpApi events, READ_ROUTES and the console's (console_routes(), read from the
# console's router), each (METHOD, path) exactly, nothing broader. The webhook API has none of
# them.
READ_API = "HttpApi"
READ_API_FUNCTION = "ApiFunction"
READ_ROUTES = {("GET", "/v1/{proxy+}"), ("GET", "/healthz")}
CONSOLE_SOURCE = ROOT / "src" / "console.rs"

# The one Secrets Manager secret of the stack (issue 19, section 5): its logical id, its JSON keys
# and the parameter each is built from (template.yaml, Secrets), and the one grant on it, which
# exactly the functions whose binary reads SECRET_ARN (READS) have, on this secret alone.
SECRET_RESOURCE = "Secrets"
SECRET_KEYS = {
    "webhookSecret": "WebhookSecret",
    "webhookSecretPrevious": "WebhookSecretPrevious",
    "apiToken": "ApiToken",
    "apiTokenPrevious": "ApiTokenPrevious",
}
SECRET_ACTION = "secretsmanager:GetSecretValue"
SECRET_READERS = {binary for binary, reads in READS.items() if "SECRET_ARN" in reads}
# The AWS managed policies SAM attaches to the functions' roles (translate(), below): logs, the
# SQS poller's and the DynamoDB stream's reads; none grants a Secrets Manager action.
MANAGED_WITHOUT_SECRETS = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole",
}

SECRET = "0123456789abcdef" * 4
SECRET_OLD = "fedcba9876543210" * 4
TOKEN = "89abcdef01234567" * 4
TOKEN_OLD = "76543210fedcba98" * 4

SCENARIOS = {
    "defaults": {"WebhookSecret": SECRET, "ApiToken": TOKEN},
    "every option on": {
        "WebhookSecret": SECRET,
        "WebhookSecretPrevious": SECRET_OLD,
        "ApiToken": TOKEN,
        "ApiTokenPrevious": TOKEN_OLD,
        "EnableFunctionUrl": "true",
        "ForwardUrl": "https://consumer.example/wati-changes",
        "ForwardAuthHeaderValue": "rehearsal-api-key-value",
        "AlarmEmail": "ops@example.com",
    },
}


SCENARIO_VALUES: dict[str, list[str]] = {}
for _given in SCENARIOS.values():
    for _key, _value in _given.items():
        SCENARIO_VALUES.setdefault(_key, []).append(_value)


# --- template.yaml as CloudFormation's JSON form (load_template: scripts/cfn_template.py) ---


def evaluate_condition(expr, conditions: dict, parameters: dict):
    """A condition of the template, for these parameter values."""
    if isinstance(expr, dict):
        (key, value), = expr.items()
        if key == "Ref":
            return parameters[value]
        if key == "Condition":
            return evaluate_condition(conditions[value], conditions, parameters)
        if key == "Fn::Equals":
            a, b = (evaluate_condition(v, conditions, parameters) for v in value)
            return str(a) == str(b)
        if key == "Fn::Not":
            return not evaluate_condition(value[0], conditions, parameters)
        if key == "Fn::And":
            return all(evaluate_condition(v, conditions, parameters) for v in value)
        if key == "Fn::Or":
            return any(evaluate_condition(v, conditions, parameters) for v in value)
        raise ValueError(f"condition function {key} not handled")
    return expr


# --- 1. template checks ---------------------------------------------------------------------

# Context variables an access log may use: none of them can carry the request path, the route
# key or the query string (the webhook's path is its secret; the read API's paths hold phone
# numbers and message ids). Excluded on purpose, among others: $context.path, $context.routeKey,
# $context.resourcePath, $context.resourceId, $context.customDomain.basePathMatched,
# $context.domainName and $context.domainPrefix (the host only, but nothing we need), and every
# caller-controlled header ($context.identity.userAgent).
ACCESS_LOG_VARIABLES = {
    "$context.requestId",
    "$context.extendedRequestId",
    "$context.requestTime",
    "$context.requestTimeEpoch",
    "$context.httpMethod",
    "$context.status",
    "$context.responseLength",
    "$context.responseLatency",
    "$context.integrationStatus",
    "$context.integration.status",
    "$context.integrationLatency",
    "$context.integrationErrorMessage",
    "$context.identity.sourceIp",
    "$context.protocol",
    "$context.error.message",
    "$context.error.responseType",
    "$context.apiId",
    "$context.stage",
}


def walk(value, path=()):
    """Every (path, value) pair of a JSON-like tree."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, path + (index,))


def access_log_formats(template: dict) -> list[tuple[str, str]]:
    """(where, format text) of every AccessLogSettings in the template."""
    found = []
    for path, value in walk(template):
        if path and path[-1] == "AccessLogSettings":
            fmt = value.get("Format") if isinstance(value, dict) else None
            where = ".".join(str(p) for p in path)
            if isinstance(fmt, dict) and "Fn::Sub" in fmt:
                fmt = fmt["Fn::Sub"] if isinstance(fmt["Fn::Sub"], str) else fmt["Fn::Sub"][0]
            if not isinstance(fmt, str):
                fmt = json.dumps(fmt)
            found.append((where, fmt))
    return found


def check_access_logs(template: dict, failures: Failures) -> None:
    formats = access_log_formats(template)
    for stage in ("Resources.WebhookApiStage.", "Resources.HttpApi."):
        failures.check(any(where.startswith(stage) for where, _ in formats),
                       f"{stage} has no AccessLogSettings")
    for logical in ("WebhookAccessLogs", "ReadApiAccessLogs"):
        group = template["Resources"].get(logical, {}).get("Properties", {})
        failures.check(group.get("RetentionInDays") == {"Ref": "LogRetentionDays"},
                       f"{logical}: not kept LogRetentionDays")
    for where, fmt in formats:
        variables = set(re.findall(r"\$context(?:\.[A-Za-z0-9_]+)+", fmt))
        failures.check(bool(variables), f"{where}: no $context variable in its Format")
        for variable in sorted(variables - ACCESS_LOG_VARIABLES):
            failures.check(
                False,
                f"{where}: {variable} is not in the access log allowlist (it could hold the path, "
                f"i.e. the webhook secret or a phone number)",
            )
        # Anything that looks like a variable but is not `$context.x` (e.g. `$request.path`,
        # `${...}` of a Sub that could name a parameter) is refused too.
        for other in sorted(set(re.findall(r"\$(?!context\.)[A-Za-z{][A-Za-z0-9_.}]*", fmt))):
            failures.check(False, f"{where}: {other} is not an allowed access log variable")
        sample = re.sub(r"\$context(?:\.[A-Za-z0-9_]+)+", "x", fmt)
        try:
            json.loads(sample)
            ok = True
        except ValueError:
            ok = False
        failures.check(ok, f"{where}: the Format is not one JSON object per request")


ALARMS_SECTION = "## Alarms: what they mean, what to do"


def runbook_headings() -> set[str]:
    """The headings of docs/runbook.md's alarm section (up to its next `## ` heading)."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    start = text.find(f"\n{ALARMS_SECTION}\n")
    if start < 0:
        return set()
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    return {m.group(1).strip() for m in re.finditer(r"^#{3,4} (.+)$", section, re.MULTILINE)}


RUNBOOK_REF = re.compile(r'docs/runbook\.md, "([^"]+)"')


def check_alarms(template: dict, failures: Failures) -> None:
    headings = runbook_headings()
    alarms = {
        logical: resource["Properties"]
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    failures.check(len(alarms) > 0, "the template has alarms")
    for logical, alarm in sorted(alarms.items()):
        name = alarm.get("AlarmName")
        sub = name.get("Fn::Sub") if isinstance(name, dict) else None
        failures.check(
            isinstance(sub, str) and "${AWS::StackName}" in sub,
            f"{logical}: AlarmName names its stack (!Sub \"${{AWS::StackName}}-...\")",
        )
        description = alarm.get("AlarmDescription", "")
        refs = RUNBOOK_REF.findall(description if isinstance(description, str) else "")
        failures.check(
            len(refs) == 1,
            f'{logical}: AlarmDescription names one runbook heading (docs/runbook.md, "...")',
        )
        for heading in refs:
            failures.check(
                heading in headings,
                f'{logical}: docs/runbook.md has no heading "{heading}" under "{ALARMS_SECTION}"',
            )
        actions = alarm.get("AlarmActions", [])
        failures.check(
            {"Ref": "AlarmTopic"} in actions, f"{logical}: AlarmActions tell the AlarmTopic"
        )
        # CloudWatch: Period x EvaluationPeriods at most 7 days, at most 1 day for periods
        # under an hour (a parameter counts at its MaxValue).
        periods = alarm.get("EvaluationPeriods")
        if isinstance(periods, dict) and "Ref" in periods:
            periods = template["Parameters"][periods["Ref"]].get("MaxValue")
        span = int(alarm.get("Period", 0)) * int(periods or 0)
        limit = 604_800 if int(alarm.get("Period", 0)) >= 3600 else 86_400
        failures.check(0 < span <= limit,
                       f"{logical}: Period x EvaluationPeriods = {span} s, over {limit} s")


def check_secret_parameters(template: dict, failures: Failures) -> None:
    """The secret parameters take what the README's generator makes and refuse whatever the
    functions would refuse at start-up (src/settings.rs: unset or empty for a current secret,
    only whitespace, shorter than 16 characters), and anything that is not one literal path
    segment: the template is never looser than the code."""
    import secrets

    generated = secrets.token_hex(32)  # what `openssl rand -hex 32` prints
    refused_by_code = [" " * 64, "\t" * 64, "0123456789abcde", "x"]
    not_a_segment = ["/" * 64, "{secret}" * 8, "%2F" + "0" * 61, "0" * 63 + "/"]
    # The Secrets secret is these values !Sub'd into JSON strings: a quote or a backslash would
    # make it invalid JSON (or add a key), which the functions would refuse at init.
    not_json_safe = ['"' * 64, "\\" * 64, "0" * 62 + '",']
    for parameter, previous in [("WebhookSecret", False), ("WebhookSecretPrevious", True),
                                ("ApiToken", False), ("ApiTokenPrevious", True)]:
        spec = template["Parameters"][parameter]
        pattern = spec.get("AllowedPattern")
        if not failures.check(bool(pattern), f"{parameter}: no AllowedPattern"):
            continue
        failures.check(bool(spec.get("ConstraintDescription")),
                       f"{parameter}: no ConstraintDescription")
        failures.check(spec.get("NoEcho") is True, f"{parameter}: not NoEcho")
        takes = [generated] + ([""] if previous else [])
        refuses = refused_by_code + not_a_segment + not_json_safe + ([] if previous else [""])
        for value in takes:
            failures.check(re.fullmatch(pattern, value) is not None,
                           f"{parameter}: {pattern} refuses {value!r}, a value the README makes")
        for value in refuses:
            failures.check(re.fullmatch(pattern, value) is None,
                           f"{parameter}: {pattern} takes {value!r}, which the code or the "
                           f"route refuses")
        for value in SCENARIO_VALUES.get(parameter, []):
            failures.check(re.fullmatch(pattern, value) is not None,
                           f"{parameter}: the rehearsal's value does not match {pattern}")


def metric_filters(template: dict) -> dict[str, dict]:
    """Metric name -> (the filter's properties) of every metric filter of the template."""
    found = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Logs::MetricFilter":
            for transformation in resource["Properties"]["MetricTransformations"]:
                found[transformation["MetricName"]] = {
                    "logical": logical, **resource["Properties"], "transformation": transformation}
    return found


def check_metric_filters(template: dict, failures: Failures) -> None:
    """Each filter reads the webhook's access log, names only fields its format writes, puts a
    dimension its alarm names, and is alarmed."""
    formats = dict(access_log_formats(template))
    webhook_format = formats.get("Resources.WebhookApiStage.Properties.AccessLogSettings", "{}")
    fields = json.loads(re.sub(r"\$context(?:\.[A-Za-z0-9_]+)+", "x", webhook_format))
    filters = metric_filters(template)
    failures.check(len(filters) >= 3, f"metric filters: {sorted(filters)}")
    alarms = [r["Properties"] for r in template["Resources"].values()
              if r["Type"] == "AWS::CloudWatch::Alarm"]
    for metric, spec in sorted(filters.items()):
        logical = spec["logical"]
        failures.check(spec["LogGroupName"] == {"Ref": "WebhookAccessLogs"},
                       f"{logical}: does not read WebhookAccessLogs")
        pattern = spec["FilterPattern"]
        failures.check(pattern.startswith("{") and pattern.endswith("}"),
                       f"{logical}: not a JSON filter pattern")
        for field in re.findall(r"\$\.([A-Za-z0-9_]+)", pattern):
            failures.check(field in fields, f"{logical}: $.{field} is not a field of the access log")
        transformation = spec["transformation"]
        failures.check(transformation.get("MetricNamespace") == "wati-ingest",
                       f"{logical}: namespace {transformation.get('MetricNamespace')}")
        failures.check("DefaultValue" not in transformation,
                       f"{logical}: a DefaultValue (CloudWatch refuses one beside dimensions)")
        dimensions = {d["Key"]: d["Value"] for d in transformation.get("Dimensions", [])}
        failures.check(dimensions == {"ApiId": "$.apiId"} and "apiId" in fields,
                       f"{logical}: dimensions {dimensions}, not ApiId from the log's apiId")
        alarmed = [a for a in alarms if a.get("Namespace") == "wati-ingest"
                   and a.get("MetricName") == metric
                   and a.get("Dimensions") == [{"Name": "ApiId", "Value": {"Ref": "WebhookApi"}}]]
        failures.check(len(alarmed) == 1, f"{metric}: {len(alarmed)} alarms on it with ApiId")


def check_metric_alarm_dimensions(template: dict, failures: Failures) -> None:
    """An alarm on our own metrics names a dimension set the metric lines carry (src/metrics.rs:
    Stack + Function, and Stack + Function + Kind), Stack being this stack: a set the lines do
    not carry matches no data, and the alarm never fires. (Metrics of the access log's filters
    carry the filter's dimension instead: check_metric_filters.)"""
    from_filters = metric_filters(template)
    for logical, resource in sorted(template["Resources"].items()):
        alarm = resource.get("Properties", {})
        if resource["Type"] != "AWS::CloudWatch::Alarm" or alarm.get("Namespace") != "wati-ingest":
            continue
        if alarm.get("MetricName") in from_filters:
            continue
        dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
        failures.check(
            sorted(dimensions) in (["Function", "Stack"], ["Function", "Kind", "Stack"]),
            f"{logical}: dimensions {sorted(dimensions)} are not a set the metric lines carry",
        )
        failures.check(
            dimensions.get("Stack") == {"Ref": "AWS::StackName"},
            f"{logical}: the Stack dimension is not !Ref AWS::StackName",
        )


def check_logging(template: dict, failures: Failures) -> None:
    logging_config = template["Globals"]["Function"].get("LoggingConfig", {})
    failures.check(
        logging_config == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO",
                           "SystemLogLevel": "WARN"},
        f"Globals LoggingConfig is {logging_config}, not JSON / INFO / WARN",
    )
    for logical, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            failures.check(
                "LoggingConfig" not in resource["Properties"],
                f"{logical}: a LoggingConfig of its own (the Globals' is the one)",
            )


def refers_to(value, name: str) -> bool:
    """Whether this node of the template is a reference to resource or parameter `name`: a Ref,
    a GetAtt, or a Sub whose text names it (its own variables are walked separately)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    (key, argument), = value.items()
    if key == "Ref":
        return argument == name
    if key == "Fn::GetAtt":
        target = argument[0] if isinstance(argument, list) else str(argument).split(".")[0]
        return target == name
    if key == "Fn::Sub":
        text = argument if isinstance(argument, str) else argument[0]
        return re.search(r"\$\{" + re.escape(name) + r"(\.[A-Za-z0-9]+)?\}", text) is not None
    return False


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def function_binaries(template: dict) -> dict[str, str]:
    """Logical id -> binary of every function of the template."""
    return {
        logical: resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def check_secret_template(template: dict, failures: Failures) -> None:
    """The Secrets secret as the contract has it: built from the four secret parameters as one
    JSON object, named by the template only as each reading function's SECRET_ARN, in its one
    GetSecretValue grant and in the SecretArn output; no secret in any function's environment."""
    resources = template["Resources"]
    secret = resources.get(SECRET_RESOURCE, {})
    properties = secret.get("Properties", {})
    if not failures.check(secret.get("Type") == "AWS::SecretsManager::Secret",
                          f"{SECRET_RESOURCE}: not an AWS::SecretsManager::Secret"):
        return
    failures.check("Condition" not in secret, f"{SECRET_RESOURCE}: has a Condition (its readers "
                                              f"are always there)")
    failures.check("Name" not in properties,
                   f"{SECRET_RESOURCE}: a fixed Name (two stacks in one region would collide)")
    failures.check("GenerateSecretString" not in properties,
                   f"{SECRET_RESOURCE}: GenerateSecretString (the value is the parameters')")
    description = properties.get("Description")
    failures.check(isinstance(description, dict) and isinstance(description.get("Fn::Sub"), str)
                   and "${AWS::StackName}" in description["Fn::Sub"],
                   f"{SECRET_RESOURCE}: Description does not name the stack (!Sub ...${{AWS::StackName}})")
    string = properties.get("SecretString")
    sub = string.get("Fn::Sub") if isinstance(string, dict) else None
    try:
        parsed = json.loads(sub) if isinstance(sub, str) else None
    except ValueError:
        parsed = None
    wanted = {key: f"${{{parameter}}}" for key, parameter in SECRET_KEYS.items()}
    failures.check(parsed == wanted,
                   f"{SECRET_RESOURCE}: SecretString is not !Sub of the JSON {json.dumps(wanted)}: "
                   f"{string!r:.200}")

    binaries = function_binaries(template)
    readers = {logical for logical, binary in binaries.items() if binary in SECRET_READERS}
    failures.check(readers == {"ReceiverFunction", "ApiFunction"},
                   f"functions whose binary reads SECRET_ARN: {sorted(readers)}")
    no_echo = [name for name, spec in template["Parameters"].items() if spec.get("NoEcho")]
    failures.check(set(SECRET_KEYS.values()) <= set(no_echo),
                   f"the secret's parameters are not all NoEcho: {sorted(no_echo)}")

    # Every reference to the secret, and what it may be.
    allowed = set()
    for logical in readers:
        allowed.add(("Resources", logical, "Properties", "Environment", "Variables", "SECRET_ARN"))
    allowed.add(("Outputs", "SecretArn", "Value"))
    grants = {logical: [] for logical in binaries}
    for logical in binaries:
        for index, policy in enumerate(as_list(resources[logical]["Properties"].get("Policies", []))):
            if isinstance(policy, str):
                failures.check("secret" not in policy.lower(),
                               f"{logical}: managed policy {policy} (Secrets Manager?)")
                continue
            if not isinstance(policy, dict):
                continue
            if "Statement" not in policy:
                failures.check(not any("secret" in key.lower() for key in policy),
                               f"{logical}: SAM policy template {sorted(policy)} on secrets")
                continue
            for number, statement in enumerate(as_list(policy["Statement"])):
                actions = [str(a).lower() for a in as_list(statement.get("Action", []))]
                if ("NotAction" in statement or "NotResource" in statement
                        or any(a == "*" or a.split(":")[0] in ("*", "secretsmanager")
                               or a.startswith("secretsmanager") for a in actions)
                        or any(refers_to(r, SECRET_RESOURCE)
                               for r in as_list(statement.get("Resource", [])))):
                    grants[logical].append(statement)
                    allowed.add(("Resources", logical, "Properties", "Policies", index,
                                 "Statement", number, "Resource"))
                    allowed.add(("Resources", logical, "Properties", "Policies", index,
                                 "Statement", "Resource"))
    exact = {"Effect": "Allow", "Action": SECRET_ACTION, "Resource": {"Ref": SECRET_RESOURCE}}

    def normal(statement: dict) -> dict:
        return {key: (value[0] if isinstance(value, list) and len(value) == 1 else value)
                for key, value in statement.items()}

    for logical, statements in sorted(grants.items()):
        if logical in readers:
            failures.check([normal(s) for s in statements] == [exact],
                           f"{logical}: its Secrets Manager grants are {statements}, not the one "
                           f"{exact}")
        else:
            failures.check(statements == [],
                           f"{logical}: Secrets Manager grants {statements}, but its binary "
                           f"{binaries[logical]} does not read the secret")
    # The template's own IAM resources (the forwarding role): no Secrets Manager action at all.
    for logical, resource in sorted(resources.items()):
        if not resource["Type"].startswith("AWS::IAM::"):
            continue
        granting = [statement for path, value in walk(resource.get("Properties", {}))
                    if path and path[-1] == "Statement" for statement in as_list(value)
                    if isinstance(statement, dict) and statement.get("Effect") == "Allow"
                    and grants_secret_actions(statement)]
        failures.check(not granting, f"{logical}: grants Secrets Manager actions {granting}")
    referring = [path for path, value in walk(template) if refers_to(value, SECRET_RESOURCE)]
    stray = [".".join(map(str, path)) for path in referring if path not in allowed]
    failures.check(not stray, f"{stray} refer to the secret (only the readers' SECRET_ARN and "
                              f"grant, and the SecretArn output may)")
    failures.check(("Outputs", "SecretArn", "Value") in referring
                   and template["Outputs"]["SecretArn"]["Value"] == {"Ref": SECRET_RESOURCE},
                   f"the SecretArn output is not !Ref {SECRET_RESOURCE}")
    resolved = [".".join(map(str, path)) for path, value in walk(template)
                if isinstance(value, str) and "{{resolve:secretsmanager" in value]
    failures.check(not resolved, f"{resolved}: Secrets Manager dynamic references (the value "
                                 f"would be resolved into the resource, readable there)")

    # No function's environment (nor the Globals') carries a NoEcho parameter.
    environments = {"Globals": template.get("Globals", {}).get("Function", {}).get("Environment", {})}
    for logical in binaries:
        environments[logical] = resources[logical]["Properties"].get("Environment", {})
    for logical, environment in sorted(environments.items()):
        variables = environment.get("Variables", {})
        failures.check((logical in readers) == ("SECRET_ARN" in variables),
                       f"{logical}: SECRET_ARN " + ("missing, and its binary reads it"
                                                    if logical in readers else
                                                    "set, but its binary does not read the secret"))
        if "SECRET_ARN" in variables:
            failures.check(variables["SECRET_ARN"] == {"Ref": SECRET_RESOURCE},
                           f"{logical}: SECRET_ARN is {variables['SECRET_ARN']}, not !Ref "
                           f"{SECRET_RESOURCE}")
        for parameter in no_echo:
            where = [".".join(map(str, path)) for path, value in walk(environment)
                     if refers_to(value, parameter)]
            failures.check(not where, f"{logical}: its environment holds the NoEcho parameter "
                                      f"{parameter} ({', '.join(where)})")


def console_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the console's router serves: src/console.rs,
    console_routes(), each `.route("/console...", get(...))`; a method chain (get(a).post(b))
    gives one route per method, axum's any() the method ANY."""
    text = CONSOLE_SOURCE.read_text() if CONSOLE_SOURCE.is_file() else ""
    body = re.search(r"\bfn console_routes\b.*?\n\}\n", text, re.DOTALL)
    routes = set()
    for call in re.split(r"\.route\(", body.group(0) if body else "")[1:]:
        found = re.match(r'\s*"([^"]*)"\s*,(.*)', call, re.DOTALL)
        if not found:
            routes.add(("?", call.strip()[:60]))
            continue
        handlers = re.split(r"\.(?:layer|with_state|merge|nest|fallback)\(", found.group(2))[0]
        for method in re.findall(r"\b(get|post|put|patch|delete|head|options|any)\(", handlers):
            routes.add((method.upper(), found.group(1)))
    return routes


def read_api_events(template: dict, failures: Failures) -> dict[tuple[str, str], str]:
    """(METHOD, path) of every API event of the template's functions -> where it is; each must
    be an HttpApi event of READ_API_FUNCTION on READ_API."""
    events: dict[tuple[str, str], str] = {}
    for logical, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            if event.get("Type") not in ("HttpApi", "Api"):
                continue
            where = f"{logical}.Events.{name}"
            properties = event.get("Properties", {})
            failures.check(logical == READ_API_FUNCTION and event["Type"] == "HttpApi"
                           and properties.get("ApiId") == {"Ref": READ_API},
                           f"{where}: an API event that is not an HttpApi event of "
                           f"{READ_API_FUNCTION} on the read API ({READ_API})")
            route = (str(properties.get("Method", "")).upper(), str(properties.get("Path", "")))
            failures.check(route not in events, f"{where}: {route} routed twice")
            events[route] = where
    return events


def check_read_api_routes(template: dict, failures: Failures) -> None:
    """The read API routes exactly READ_ROUTES and every route the console serves (src/console.rs)
    to READ_API_FUNCTION: no console request left unrouted, no route the function does not
    serve, no ANY and no path variable beyond /v1/{proxy+}; no console route on the webhook
    API."""
    console = console_routes()
    failures.check(bool(console) and all(method.isalpha() and (path == "/console"
                                                            or path.startswith("/console/"))
                                         for method, path in console),
                   f"{CONSOLE_SOURCE.relative_to(ROOT)}: console_routes() not read as routes "
                   f"under /console: {sorted(console)}")
    routes = read_api_events(template, failures)
    wanted = READ_ROUTES | console
    unrouted = sorted(wanted - set(routes))
    failures.check(not unrouted,
                   f"{READ_API_FUNCTION}: the read API does not route "
                   f"{', '.join(' '.join(r) for r in unrouted)} to it (its HttpApi events; the "
                   f"console's router serves them: {CONSOLE_SOURCE.relative_to(ROOT)})")
    broader = sorted(set(routes) - wanted)
    failures.check(not broader,
                   "routes the api function does not serve (each route is one exact method and "
                   "path of the read API or of the console's router, no ANY, no {proxy+}): "
                   + ", ".join(f"{' '.join(r)} ({routes[r]})" for r in broader))
    # The webhook API's routes (plain AWS::ApiGatewayV2::Route resources): none of the console's,
    # none on the read API (whose routes are SAM's imported definition).
    for logical, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::ApiGatewayV2::Route":
            continue
        properties = resource.get("Properties", {})
        key = properties.get("RouteKey", "")
        key = key.get("Fn::Sub", key) if isinstance(key, dict) else key
        key = key[0] if isinstance(key, list) else key
        path = str(key).split(" ", 1)[-1]
        failures.check(not (path == "/console" or path.startswith("/console/")),
                       f"{logical}: {key} is a console route on "
                       f"{properties.get('ApiId')}: the console is on the read API only")
        failures.check(properties.get("ApiId") != {"Ref": READ_API},
                       f"{logical}: a route beside the read API's SAM definition (deleted when "
                       f"it is next re-imported): add an HttpApi event instead")


def check_template(template: dict, failures: Failures) -> None:
    check_read_api_routes(template, failures)
    check_access_logs(template, failures)
    check_secret_parameters(template, failures)
    check_secret_template(template, failures)
    check_metric_alarm_dimensions(template, failures)
    check_metric_filters(template, failures)
    check_alarms(template, failures)
    check_logging(template, failures)


# --- 2. the rehearsal -----------------------------------------------------------------------

STANDINS: dict[str, dict] = {}  # logical id -> {"type", "properties", "attributes"}
STANDIN_TYPES: dict[str, int] = {}
STANDIN_MODELS: list[type] = []  # moto finds models by __subclasses__, which holds weak references


def register_standins(template: dict) -> None:
    """A moto CloudFormation model for every type of the template moto has none for."""
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel

    parsing.get_model_map.cache_clear()
    modelled = set(parsing.get_model_map())
    missing = {r["Type"] for r in template["Resources"].values()} - modelled

    def attributes_of(cfn_type: str, physical: str, region: str, account: str) -> dict:
        arn = f"arn:aws:standin:{region}:{account}:{physical}"
        return {
            "AWS::ApiGatewayV2::Api": {
                "ApiEndpoint": f"https://{physical}.execute-api.{region}.amazonaws.com",
                "ApiId": physical,
            },
            "AWS::Lambda::Url": {
                "FunctionUrl": f"https://{physical}.lambda-url.{region}.on.aws/",
                "FunctionArn": arn,
            },
            "AWS::Events::Connection": {"Arn": f"arn:aws:events:{region}:{account}:connection/{physical}",
                                        "SecretArn": arn},
            "AWS::Events::ApiDestination": {
                "Arn": f"arn:aws:events:{region}:{account}:api-destination/{physical}"
            },
            "AWS::SecretsManager::Secret": {"Id": physical},
        }.get(cfn_type, {"Arn": arn})

    def create_secret(properties: dict, resource_name: str, account: str, region: str) -> str:
        from moto.secretsmanager.models import secretsmanager_backends

        created = secretsmanager_backends[account][region].create_secret(
            name=properties.get("Name") or resource_name,
            secret_string=properties.get("SecretString"),
            secret_binary=None,
            description=properties.get("Description"),
            tags=properties.get("Tags"),
            kms_key_id=properties.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        return json.loads(created)["ARN"]

    for cfn_type in sorted(missing):

        def make(cfn_type: str):
            class StandIn(CloudFormationModel):
                # moto files its models by the module's second dotted name.
                __module__ = "moto.rehearsal_standins"

                @staticmethod
                def cloudformation_type() -> str:
                    return cfn_type

                @staticmethod
                def cloudformation_name_type() -> str:
                    return ""

                @classmethod
                def has_cfn_attr(cls, attr: str) -> bool:
                    return True

                @classmethod
                def create_from_cloudformation_json(cls, resource_name, cloudformation_json,
                                                    account_id, region_name, **kwargs):
                    logical = kwargs["LogicalId"]
                    STANDIN_TYPES[cfn_type] = STANDIN_TYPES.get(cfn_type, 0) + 1
                    properties = cloudformation_json.get("Properties", {})
                    instance = cls()
                    if cfn_type == "AWS::ApiGatewayV2::Api":
                        physical = uuid.uuid4().hex[:10]
                    elif cfn_type == "AWS::ApiGatewayV2::Stage":
                        physical = properties.get("StageName", "$default")
                    elif cfn_type == "AWS::CloudWatch::Alarm":
                        physical = properties.get("AlarmName") or resource_name
                    elif cfn_type == "AWS::SecretsManager::Secret":
                        # Made in moto's Secrets Manager from the resolved properties, so that
                        # the checks read it back (GetSecretValue) as the functions would; its
                        # Ref is its ARN, as on AWS.
                        physical = create_secret(properties, resource_name, account_id,
                                                 region_name)
                    else:
                        physical = resource_name
                    instance.physical_resource_id = physical
                    instance.attributes = attributes_of(cfn_type, physical, region_name,
                                                        account_id)
                    STANDINS[logical] = {"type": cfn_type, "properties": properties,
                                         "physical": physical}
                    return instance

                @classmethod
                def update_from_cloudformation_json(cls, *args, **kwargs):
                    raise NotImplementedError("stand-ins are not updated")

                @classmethod
                def delete_from_cloudformation_json(cls, *args, **kwargs):
                    return None

                def get_cfn_attribute(self, attribute_name: str):
                    if attribute_name not in self.attributes:
                        raise ValueError(
                            f"stand-in {cfn_type} has no attribute {attribute_name} in this script"
                        )
                    return self.attributes[attribute_name]

            StandIn.__name__ = "StandIn" + re.sub(r"\W", "", cfn_type)
            return StandIn

        STANDIN_MODELS.append(make(cfn_type))
    parsing.get_model_map.cache_clear()
    parsing.get_model_list.cache_clear() if hasattr(parsing.get_model_list, "cache_clear") else None


def translate(template: dict) -> dict:
    """The SAM transform, offline, with every function's code at s3://CODE_BUCKET/CODE_KEY."""
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"

    class ManagedPolicies:
        def load(self) -> dict:
            names = ["AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole",
                     "AWSLambdaDynamoDBExecutionRole"]
            return {n: f"arn:aws:iam::aws:policy/service-role/{n}" for n in names}

    return transform(sam, {}, ManagedPolicies())


def moto_workarounds(cfn: dict) -> list[str]:
    """Changes moto needs that CloudFormation does not; each is reported."""
    done = []
    for logical, resource in cfn["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Events::Archive" and isinstance(
            properties.get("EventPattern"), dict
        ):
            # moto's archive takes only a JSON string; CloudFormation takes either.
            properties["EventPattern"] = json.dumps(properties["EventPattern"])
            done.append(f"{logical}.EventPattern passed as a JSON string")
    return done


def patch_moto() -> list[str]:
    """Where moto's models answer a !Ref unlike CloudFormation; each is reported."""
    from moto.events import models as events

    done = []
    for model in (events.EventBus, events.Archive):
        if not hasattr(model, "physical_resource_id"):
            # CloudFormation's Ref of a bus or an archive is its name; moto has no physical id
            # for either and would hand the object itself to whatever refers to it.
            model.physical_resource_id = property(lambda self: self.name)
            done.append(f"{model.cloudformation_type()}: Ref gives its name, as on AWS")
    return done


def dummy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, "#!/bin/sh\nexit 1\n")
    return buffer.getvalue()


def rehearse(name: str, template: dict, cfn: dict, given: dict, failures: Failures) -> None:
    import boto3

    started = time.monotonic()
    parameters = {
        key: str(spec.get("Default", "")) for key, spec in template["Parameters"].items()
    }
    parameters.update(given)
    parameters["AWS::StackName"] = STACK
    conditions = cfn.get("Conditions", {})
    holds = {c: bool(evaluate_condition(e, conditions, parameters)) for c, e in conditions.items()}

    STANDINS.clear()
    STANDIN_TYPES.clear()
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=CODE_BUCKET)
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=dummy_zip())

    cloudformation = boto3.client("cloudformation", region_name=REGION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(cfn),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
        )
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    failures.check(
        stack["StackStatus"] == "CREATE_COMPLETE",
        f"[{name}] stack status {stack['StackStatus']} ({stack.get('StackStatusReason', '')})",
    )
    resources = {
        r["LogicalResourceId"]: r
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=STACK)
        for r in page["StackResourceSummaries"]
        if r["LogicalResourceId"]  # moto lists a resource left out by its condition as blank
    }
    expected = {
        logical
        for logical, resource in cfn["Resources"].items()
        if holds.get(resource.get("Condition"), True)
    }
    failures.check(
        expected <= set(resources),
        f"[{name}] resources not created: {sorted(expected - set(resources))}",
    )
    failures.check(
        set(resources) <= expected,
        f"[{name}] resources created against their condition: {sorted(set(resources) - expected)}",
    )
    # (moto answers every resource's status CREATE_COMPLETE: a resource that fails fails the
    # CreateStack call itself.)
    physical = {logical: r.get("PhysicalResourceId", "") for logical, r in resources.items()}

    # Outputs: every one the template declares (its condition holding), non-empty; one that
    # is a !Ref of a resource names that resource.
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    declared = {
        key: spec
        for key, spec in template["Outputs"].items()
        if holds.get(spec.get("Condition"), True)
    }
    failures.check(
        set(OUTPUTS) <= set(template["Outputs"]),
        f"[{name}] outputs the template no longer declares: "
        f"{sorted(set(OUTPUTS) - set(template['Outputs']))}",
    )
    failures.check(
        set(template["Outputs"]) <= set(OUTPUTS),
        f"[{name}] outputs this script does not know (add them to OUTPUTS): "
        f"{sorted(set(template['Outputs']) - set(OUTPUTS))}",
    )
    sqs = boto3.client("sqs", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    for key, spec in declared.items():
        value = outputs.get(key)
        if not failures.check(bool(value), f"[{name}] output {key} missing or empty"):
            continue
        if key not in OUTPUTS:
            continue
        kind, target = OUTPUTS[key][:2]
        if kind == "ref":
            want = physical.get(target)
        elif kind == "queue-name":
            want = physical.get(target, "").rsplit("/", 1)[-1]
        elif kind == "queue-arn":
            want = sqs.get_queue_attributes(
                QueueUrl=physical[target], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        elif kind == "bus-arn":
            want = events.describe_event_bus(Name=physical[target])["Arn"]
        elif kind == "secret-arn":
            secretsmanager = boto3.client("secretsmanager", region_name=REGION)
            want = secretsmanager.describe_secret(SecretId=physical[target])["ARN"]
        elif kind == "cli-env":
            words = value.split()
            want = "export " + " ".join(
                f"{variable}={physical.get(resource)}"
                for variable, resource in CLI_AWS_VARIABLES.items()
            )
            failures.check(
                words[:1] == ["export"]
                and {w.split("=", 1)[0] for w in words[1:]} == set(CLI_AWS_VARIABLES),
                f"[{name}] output {key} must export exactly {sorted(CLI_AWS_VARIABLES)}: {value!r}",
            )
        else:  # url
            on = STANDINS.get(target, {}).get("physical") or physical.get(target)
            want = value if (on and on in value and value.startswith("https://")
                             and value.endswith(OUTPUTS[key][2])) else f"https://…{on}…{OUTPUTS[key][2]}"
        failures.check(value == want, f"[{name}] output {key} = {value!r}, expected {want!r}")
        failures.check(
            all(secret not in value for secret in (SECRET, SECRET_OLD, TOKEN, TOKEN_OLD)),
            f"[{name}] output {key} shows a secret",
        )
    failures.check(
        set(outputs) <= set(declared),
        f"[{name}] outputs against their condition: {sorted(set(outputs) - set(declared))}",
    )

    # Each function's environment, as Lambda holds it.
    lambda_ = boto3.client("lambda", region_name=REGION)
    functions = {
        logical: spec
        for logical, spec in template["Resources"].items()
        if spec["Type"] == "AWS::Serverless::Function"
    }
    binaries_seen = set()
    for logical, spec in sorted(functions.items()):
        binary = spec.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if not failures.check(binary in READS, f"{logical}: binary {binary!r} not in READS"):
            continue
        binaries_seen.add(binary)
        configuration = lambda_.get_function_configuration(FunctionName=physical[logical])
        variables = configuration.get("Environment", {}).get("Variables", {})
        reads = READS[binary]
        for variable, how in reads.items():
            if how == "default":
                continue
            present = variable in variables
            failures.check(present, f"[{name}] {logical} ({binary}) lacks {variable}, which it reads")
            if present and how == "required":
                failures.check(
                    variables[variable].strip() != "",
                    f"[{name}] {logical}: {variable} is empty, and {binary} requires it",
                )
        for variable in sorted(set(variables) - set(reads)):
            failures.check(False, f"[{name}] {logical}: {variable} is set, but {binary} never reads it")
        for variable, value in variables.items():
            value = str(value)  # moto keeps a Number parameter's type; Lambda holds strings
            if variable in NAMES_RESOURCE:
                target = NAMES_RESOURCE[variable]
                failures.check(
                    value == physical.get(target),
                    f"[{name}] {logical}: {variable} = {value!r}, not this stack's {target} "
                    f"({physical.get(target)!r})",
                )
            elif variable == "STACK_NAME":
                failures.check(value == STACK, f"[{name}] {logical}: STACK_NAME is {value!r}")
            elif variable in NAMES_PARAMETER:
                parameter = NAMES_PARAMETER[variable]
                failures.check(
                    value == parameters[parameter],
                    f"[{name}] {logical}: {variable} is not the {parameter} given",
                )
    failures.check(
        binaries_seen == set(READS),
        f"[{name}] binaries without a function: {sorted(set(READS) - binaries_seen)}",
    )

    # The resources the variables name exist in their services (not only in the stack's list).
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    tables = set(dynamodb.list_tables()["TableNames"])
    for table in ("LedgerTable", "StateTable"):
        failures.check(physical.get(table) in tables, f"[{name}] {table} is not a DynamoDB table")
    queues = set(sqs.list_queues().get("QueueUrls", []))
    failures.check(physical.get("EventQueue") in queues, f"[{name}] EventQueue is not a queue")
    buses = {b["Name"] for b in events.list_event_buses()["EventBuses"]}
    failures.check(
        f"wati-ingest-changes-{STACK}" in buses, f"[{name}] the change bus is not on EventBridge"
    )
    # moto gives an EventBus no physical id; the bus a function names must still be this one.
    for logical in functions:
        bus = lambda_.get_function_configuration(FunctionName=physical[logical]).get(
            "Environment", {}).get("Variables", {}).get("CHANGE_BUS_NAME")
        if bus is not None:
            failures.check(bus in buses, f"[{name}] {logical}: CHANGE_BUS_NAME {bus!r} is no bus")

    secret_summary = check_secret(name, template, parameters, physical, functions, failures)
    check_standins(name, parameters, physical, failures)
    check_dashboard(name, physical, failures)

    # The optional parts this scenario turns on.
    if holds.get("WithFunctionUrl"):
        concurrency = lambda_.get_function_concurrency(FunctionName=physical["ReceiverFunction"])
        failures.check(
            str(concurrency.get("ReservedConcurrentExecutions"))
            == parameters["ReceiverReservedConcurrency"],
            f"[{name}] the receiver's reserved concurrency is not ReceiverReservedConcurrency",
        )
    routes = sorted(
        s["properties"].get("RouteKey", "")
        for s in STANDINS.values()
        if s["type"] == "AWS::ApiGatewayV2::Route"
    )
    wanted = [f"POST /webhook/{parameters['WebhookSecret']}"]
    if holds.get("WithPreviousSecret"):
        wanted.append(f"POST /webhook/{parameters['WebhookSecretPrevious']}")
    failures.check(routes == sorted(wanted), f"[{name}] webhook routes are not one per secret")
    read_api_summary = check_read_api(name, physical, failures)

    if holds.get("WithForwarding"):
        by_type = {s["type"]: s for s in STANDINS.values()}
        connection = by_type["AWS::Events::Connection"]["properties"]
        key = connection.get("AuthParameters", {}).get("ApiKeyAuthParameters", {})
        failures.check(
            key.get("ApiKeyName") == parameters["ForwardAuthHeaderName"]
            and key.get("ApiKeyValue") == parameters["ForwardAuthHeaderValue"],
            f"[{name}] the forward connection's API key is not ForwardAuthHeaderName/Value",
        )
        destination = by_type["AWS::Events::ApiDestination"]
        failures.check(
            destination["properties"].get("InvocationEndpoint") == parameters["ForwardUrl"],
            f"[{name}] the API destination does not POST to ForwardUrl",
        )
        rule = physical["ForwardRule"].split("|")[0]
        targets = events.list_targets_by_rule(
            Rule=rule, EventBusName=f"wati-ingest-changes-{STACK}")["Targets"]
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=physical["ForwardDeadLetterQueue"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        failures.check(
            [(t["Arn"], t.get("DeadLetterConfig", {}).get("Arn")) for t in targets]
            == [(f"arn:aws:events:{REGION}:123456789012:api-destination/"
                 f"{destination['physical']}", dlq_arn)],
            f"[{name}] the forward rule's target is not the API destination with the forward DLQ: "
            f"{targets}",
        )

    moto_lacks = ", ".join(f"{t} ({n})" for t, n in sorted(STANDIN_TYPES.items()))
    print(
        f"rehearsal [{name}]: {stack['StackStatus']}, {len(resources)} resources, "
        f"{len(outputs)} outputs, {len(functions)} functions' environments checked "
        f"({time.monotonic() - started:.1f} s)"
    )
    print(f"  not modelled by moto's CloudFormation (stand-ins record the resolved properties; "
          f"AWS's own checks of these are not rehearsed): {moto_lacks}")
    print(f"  {secret_summary}")
    print(f"  {read_api_summary}")


def grants_secret_actions(statement: dict) -> bool:
    """Whether an Allow statement may grant some Secrets Manager action (a wildcard, the
    service's prefix, or NotAction, which grants every action it does not name)."""
    if "NotAction" in statement:
        return True
    return any(fnmatch.fnmatchcase("secretsmanager", str(action).lower().split(":")[0])
               for action in as_list(statement.get("Action", [])))


def check_secret(name: str, template: dict, parameters: dict, physical: dict, functions: dict,
                 failures: Failures) -> str:
    """The secret as the stack made it: its value the four parameters as JSON; the readers'
    SECRET_ARN its ARN; no secret value in any function's environment; GetSecretValue on it
    granted by exactly one statement of the readers' roles, naming it alone, and nothing of
    Secrets Manager granted to any other role of the stack."""
    import boto3

    lambda_ = boto3.client("lambda", region_name=REGION)
    secretsmanager = boto3.client("secretsmanager", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    arn = physical.get(SECRET_RESOURCE, "")
    try:
        described = secretsmanager.describe_secret(SecretId=arn)
        value = secretsmanager.get_secret_value(SecretId=arn)["SecretString"]
    except Exception as error:  # noqa: BLE001 - any failure here is the check's
        failures.check(False, f"[{name}] {SECRET_RESOURCE} ({arn!r}) is no secret: {error}")
        return f"secret: {SECRET_RESOURCE} not found in Secrets Manager"
    failures.check(described["ARN"] == arn and arn.startswith(f"arn:aws:secretsmanager:{REGION}:"),
                   f"[{name}] {SECRET_RESOURCE}: Ref {arn!r} is not its ARN {described['ARN']!r}")
    failures.check(STACK in described.get("Description", ""),
                   f"[{name}] {SECRET_RESOURCE}: its description does not name the stack: "
                   f"{described.get('Description')!r}")
    try:
        held = json.loads(value)
    except ValueError:
        held = None
    wanted = {key: parameters[parameter] for key, parameter in SECRET_KEYS.items()}
    failures.check(held == wanted, f"[{name}] {SECRET_RESOURCE}: its value is not the JSON of "
                                   f"{sorted(SECRET_KEYS.values())} as given")

    # Every function's environment: SECRET_ARN on the readers only, this secret's ARN; no value
    # of a NoEcho parameter anywhere (a secret given to the stack, the forwarding key included).
    given_secrets = {parameter: parameters[parameter] for parameter, spec in
                     template["Parameters"].items()
                     if spec.get("NoEcho") and parameters.get(parameter)}
    readers, roles = set(), {}
    for logical, spec in sorted(functions.items()):
        binary = spec.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        configuration = lambda_.get_function_configuration(FunctionName=physical[logical])
        variables = configuration.get("Environment", {}).get("Variables", {})
        roles[configuration["Role"].rsplit("/", 1)[-1]] = logical
        if binary in SECRET_READERS:
            readers.add(logical)
            failures.check(variables.get("SECRET_ARN") == arn,
                           f"[{name}] {logical}: SECRET_ARN {variables.get('SECRET_ARN')!r} is not "
                           f"this stack's secret {arn!r}")
        else:
            failures.check("SECRET_ARN" not in variables,
                           f"[{name}] {logical}: SECRET_ARN set, but {binary} may not read it")
        shown = sorted(parameter for parameter, secret in given_secrets.items()
                       if any(secret in str(v) for v in variables.values()))
        failures.check(not shown, f"[{name}] {logical}: its environment holds the value of {shown}")
    failures.check({"ReceiverFunction", "ApiFunction"} <= readers,
                   f"[{name}] the secret's readers are {sorted(readers)}")

    # Every role of the stack (the functions' and the forwarding role): what it grants of
    # Secrets Manager, inline or through a managed policy.
    every_role = [r["RoleName"] for page in iam.get_paginator("list_roles").paginate()
                  for r in page["Roles"]]
    for role in every_role:
        owner = roles.get(role, role)
        statements = []
        for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
            if isinstance(document, str):
                # moto keeps the inline policies of a role CloudFormation made as the Python
                # repr of the document (AWS: URL-encoded JSON, which boto3 decodes).
                try:
                    document = json.loads(document)
                except ValueError:
                    document = ast.literal_eval(document)
            statements += [s for s in as_list(document.get("Statement", []))
                           if s.get("Effect") == "Allow" and grants_secret_actions(s)]
        managed = [p["PolicyArn"] for p in
                   iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
        failures.check(set(managed) <= MANAGED_WITHOUT_SECRETS,
                       f"[{name}] {owner}: managed policies {sorted(set(managed) - MANAGED_WITHOUT_SECRETS)}"
                       f" may grant Secrets Manager actions")
        if owner in readers:
            exact = [s for s in statements
                     if as_list(s.get("Action")) == [SECRET_ACTION]
                     and as_list(s.get("Resource")) == [arn] and "Condition" not in s]
            failures.check(len(statements) == 1 and exact == statements,
                           f"[{name}] {owner}: Secrets Manager grants {statements}, not the one "
                           f"{SECRET_ACTION} on {arn}")
        else:
            failures.check(statements == [],
                           f"[{name}] {owner}: grants Secrets Manager actions {statements}; only "
                           f"{sorted(readers)} may read the secret")
    failures.check(set(roles) <= set(every_role),
                   f"[{name}] a function's role is not in IAM: {sorted(set(roles) - set(every_role))}")
    return (f"secret: {SECRET_RESOURCE} (the stand-in creates it in moto's Secrets Manager from its "
            f"resolved properties; read back with GetSecretValue): the JSON of "
            f"{len(SECRET_KEYS)} parameters; SECRET_ARN and GetSecretValue on it alone: "
            f"{', '.join(sorted(readers))}; {len(every_role)} roles' grants and "
            f"{len(functions)} environments checked for secrets")


def check_read_api(name: str, physical: dict, failures: Failures) -> str:
    """The read API as CloudFormation made it: its definition (SAM's OpenAPI body, resolved)
    routes exactly READ_ROUTES and the console's routes, each to READ_API_FUNCTION; that
    function lets this API invoke it on each route (its resource policy, read back with lambda
    GetPolicy); the webhook API has no console route."""
    import boto3

    lambda_ = boto3.client("lambda", region_name=REGION)
    function = lambda_.get_function_configuration(FunctionName=physical[READ_API_FUNCTION])
    api = STANDINS.get(READ_API, {})
    served = {}
    for path, operations in (api.get("properties", {}).get("Body", {}).get("paths") or {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict):
                integration = operation.get("x-amazon-apigateway-integration", {})
                served[(method.upper(), path)] = str(integration.get("uri", ""))
    wanted = READ_ROUTES | console_routes()
    failures.check(set(served) == wanted,
                   f"[{name}] the read API routes {sorted(served)}, not {sorted(wanted)}")
    for (method, path), uri in sorted(served.items()):
        failures.check(f"/functions/{function['FunctionArn']}/invocations" in uri,
                       f"[{name}] the read API's {method} {path} invokes {uri!r}, not "
                       f"{READ_API_FUNCTION}")
    try:
        policy = json.loads(lambda_.get_policy(FunctionName=physical[READ_API_FUNCTION])["Policy"])
    except lambda_.exceptions.ResourceNotFoundException:
        policy = {"Statement": []}
    allowed = [statement.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn", "")
               for statement in policy["Statement"]
               if statement.get("Principal", {}).get("Service") == "apigateway.amazonaws.com"
               and statement.get("Action") == "lambda:InvokeFunction"]
    prefix = f"arn:aws:execute-api:{REGION}:123456789012:{api.get('physical')}/*/"
    for method, path in sorted(console_routes()):
        failures.check(f"{prefix}{method}{path}" in allowed,
                       f"[{name}] the read API may not invoke {READ_API_FUNCTION} for {method} "
                       f"{path}: its permissions are {allowed}")
    failures.check(all(arn.startswith(prefix) for arn in allowed),
                   f"[{name}] {READ_API_FUNCTION} may be invoked by another API: {allowed}")
    for logical, standin in sorted(STANDINS.items()):
        if standin["type"] == "AWS::ApiGatewayV2::Route":
            key = str(standin["properties"].get("RouteKey", ""))
            path = key.split(" ", 1)[-1]
            failures.check(not (path == "/console" or path.startswith("/console/")),
                           f"[{name}] {logical}: {key} on the webhook API: the console is on "
                           f"the read API only")
    return (f"read API: {len(served)} routes, each to {READ_API_FUNCTION} "
            f"({', '.join(' '.join(r) for r in sorted(served))}); {len(allowed)} invoke "
            f"permissions on it, each for this API; no console route on the webhook API")


def physical_api_id() -> str:
    return STANDINS.get("WebhookApi", {}).get("physical", "")


def check_dashboard(name: str, physical: dict, failures: Failures) -> None:
    """The dashboard's body is JSON, and every graph of our own metrics names this stack."""
    import boto3

    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    body = cloudwatch.get_dashboard(DashboardName=physical["Dashboard"])["DashboardBody"]
    try:
        widgets = json.loads(body)["widgets"]
    except (ValueError, KeyError):
        failures.check(False, f"[{name}] the dashboard's body is not JSON with widgets")
        return
    for widget in widgets:
        previous: list = []
        for row in widget.get("properties", {}).get("metrics", []):
            fields = [f for f in row if not isinstance(f, dict)]
            if fields == ["..."]:
                fields = previous
            # "." repeats the field of the row before.
            fields = [previous[i] if f == "." and i < len(previous) else f
                      for i, f in enumerate(fields)]
            previous = fields
            if fields and fields[0] == "wati-ingest" and fields[1].startswith("WebhookApi"):
                dimensions = dict(zip(fields[2::2], fields[3::2]))
                failures.check(
                    dimensions.get("ApiId") == physical_api_id(),
                    f"[{name}] dashboard: {fields[1]} not on this stack's webhook API",
                )
            elif fields and fields[0] == "wati-ingest":
                dimensions = dict(zip(fields[2::2], fields[3::2]))
                failures.check(
                    dimensions.get("Stack") == STACK,
                    f"[{name}] dashboard {widget['properties'].get('title')!r}: {fields[1]} "
                    f"without the Stack dimension ({dimensions})",
                )


def check_standins(name: str, parameters: dict, physical: dict, failures: Failures) -> None:
    """What moto could not create, checked on the properties CloudFormation resolved."""
    import boto3

    logs = boto3.client("logs", region_name=REGION)
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups()["logGroups"]}
    group_arns = {g["arn"] for g in groups.values()} | {
        g["arn"].removesuffix(":*") for g in groups.values()
    }
    sns = boto3.client("sns", region_name=REGION)
    topics = {t["TopicArn"] for t in sns.list_topics()["Topics"]}
    for logical, standin in sorted(STANDINS.items()):
        kind, properties = standin["type"], standin["properties"]
        if kind == "AWS::CloudWatch::Alarm":
            failures.check(
                properties.get("AlarmName", "").startswith(f"{STACK}-"),
                f"[{name}] {logical}: AlarmName {properties.get('AlarmName')!r} does not start "
                f"with the stack's name",
            )
            actions = properties.get("AlarmActions", [])
            failures.check(
                bool(actions) and set(actions) <= topics,
                f"[{name}] {logical}: AlarmActions {actions} are not this stack's topic",
            )
            for dimension in properties.get("Dimensions", []):
                failures.check(
                    dimension.get("Value") not in (None, ""),
                    f"[{name}] {logical}: dimension {dimension.get('Name')} resolved empty",
                )
                if dimension.get("Name") == "Stack":
                    failures.check(dimension["Value"] == STACK,
                                   f"[{name}] {logical}: Stack dimension is not the stack's name")
                if dimension.get("Name") == "FunctionName":
                    failures.check(
                        dimension["Value"] in physical.values(),
                        f"[{name}] {logical}: FunctionName {dimension['Value']!r} is not this "
                        f"stack's function",
                    )
        elif kind == "AWS::ApiGatewayV2::Stage" and "AccessLogSettings" in properties:
            destination = properties["AccessLogSettings"].get("DestinationArn")
            failures.check(
                destination in group_arns,
                f"[{name}] {logical}: access logs go to {destination!r}, no log group of this stack",
            )
        if kind == "AWS::CloudWatch::Alarm" and any(
                d.get("Name") == "ApiId" for d in properties.get("Dimensions", [])):
            failures.check(
                [d["Value"] for d in properties["Dimensions"]] == [physical_api_id()],
                f"[{name}] {logical}: ApiId is not this stack's webhook API",
            )
        elif kind == "AWS::Logs::MetricFilter":
            failures.check(
                properties.get("LogGroupName") in groups,
                f"[{name}] {logical}: LogGroupName {properties.get('LogGroupName')!r} is no "
                f"log group of this stack",
            )
    logged = [logical for logical, standin in STANDINS.items()
              if standin["type"] == "AWS::ApiGatewayV2::Stage"
              and "AccessLogSettings" in standin["properties"]]
    failures.check(len(logged) == 2, f"[{name}] stages with access logs: {sorted(logged)}")
    names = [s["properties"].get("AlarmName") for s in STANDINS.values()
             if s["type"] == "AWS::CloudWatch::Alarm"]
    failures.check(len(names) == len(set(names)), f"[{name}] two alarms share a name")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    arguments = parser.parse_args()

    started = time.monotonic()
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ["AWS_REGION"] = REGION
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[variable] = "rehearsal"
    os.environ.pop("AWS_PROFILE", None)

    # moto logs each type it has no model for; the stand-ins' summary says it once per run.
    logging.getLogger("moto.cloudformation.parsing").setLevel(logging.ERROR)

    failures = Failures()
    template = load_template(Path(arguments.template))
    check_template(template, failures)
    print(f"template checks: {failures.checks} checks, {len(failures.items)} failed")

    cfn = translate(template)
    for logical, resource in sorted(cfn["Resources"].items()):
        if resource["Type"] == "AWS::Lambda::Function":
            # SAM gives every function the Globals' logging (moto does not keep LoggingConfig).
            failures.check(
                resource["Properties"].get("LoggingConfig")
                == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"},
                f"{logical}: LoggingConfig after the SAM transform is "
                f"{resource['Properties'].get('LoggingConfig')}",
            )
    for change in moto_workarounds(cfn):
        print(f"  moto workaround: {change}")
    register_standins(cfn)
    for change in patch_moto():
        print(f"  moto workaround: {change}")

    from moto import mock_aws

    for name, given in SCENARIOS.items():
        with mock_aws():
            rehearse(name, template, cfn, given, failures)

    return failures.summary("deploy rehearsal", time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
