//! Least privilege in `template.yaml`, read from the template itself: every grant of every
//! function is listed here, and anything broader (a wildcard action or resource, a SAM policy
//! template that expands to more, a managed policy, a custom role, another table) fails.
//!
//! `cfn-lint` and `checkov` do not see these grants: checkov's IAM checks look only at
//! `AWS::IAM::*` resources, and SAM's `Policies:` become a role only at deploy time.
//!
//! What SAM adds on its own, outside the template (and so outside this test):
//! - `AWSLambdaBasicExecutionRole` on every function: `logs:CreateLogGroup`,
//!   `logs:CreateLogStream`, `logs:PutLogEvents` on `Resource: "*"`. This AWS-managed policy is
//!   the one `Resource: "*"` the functions have; it grants writing logs only.
//! - The SQS event source of `ProcessorFunction`: `SQSPollerPolicy` scoped to `EventQueue`
//!   (receive, delete, change visibility, get attributes).
//! - Resource policies letting API Gateway (`HttpApi` events) and EventBridge (`Schedule`) invoke
//!   the functions, scoped to that API and that rule.
//! - The DynamoDB event source of `NotifierFunction`: `AWSLambdaDynamoDBExecutionRole`-style
//!   stream reads (`DescribeStream`, `GetRecords`, `GetShardIterator`, `ListStreams`) on the
//!   state table's stream.
//!
//! The one IAM resource of the template, the optional `ForwardRole` EventBridge assumes to call
//! the forwarding API destination, is checked by its own test below, like the forward DLQ's
//! queue policy.
//!
//! Also here, read from the template the same way: the webhook ingress (the secret is the
//! route: `the_webhook_route_is_the_secret`, `the_secret_route_reaches_the_receiver`) and the
//! defaults sized for a broadcast (`the_defaults_absorb_a_broadcast`; docs/capacity.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml::{Mapping, Value};

/// `Resource: "*"` is accepted only for these actions, which AWS does not scope to a resource.
/// None is granted today (metrics go out as EMF log lines, not `PutMetricData`).
const STAR_RESOURCE_ACTIONS: [&str; 3] = [
    "cloudwatch:PutMetricData",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
];

/// Actions that only read data or metadata.
const READ_ACTIONS: [&str; 5] = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
];

/// Actions that read items (metadata such as `DescribeTable` excluded).
const ITEM_READ_ACTIONS: [&str; 4] = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
];

/// What the SAM policy templates we know expand to (per the SAM policy template list): a
/// template is accepted only if its expansion is within the function's expected grants.
fn sam_template_actions(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "DynamoDBCrudPolicy" => &[
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        ],
        "DynamoDBReadPolicy" => &[
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
        ],
        "DynamoDBWritePolicy" => &[
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
        ],
        "SQSSendMessagePolicy" => &["sqs:SendMessage*"],
        "SQSPollerPolicy" => &[
            "sqs:ChangeMessageVisibility",
            "sqs:ChangeMessageVisibilityBatch",
            "sqs:DeleteMessage",
            "sqs:DeleteMessageBatch",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ],
        _ => return None,
    })
}

/// The design's grants (infra/README.md, "Functions"): function -> {(action, resource)}, where a
/// resource is a template resource's logical id, optionally with `/index/<name>`.
fn expected_grants() -> BTreeMap<&'static str, BTreeSet<(String, String)>> {
    let grants = |pairs: &[(&[&str], &[&str])]| -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .flat_map(|(actions, resources)| {
                actions.iter().flat_map(move |action| {
                    resources
                        .iter()
                        .map(move |resource| (action.to_string(), resource.to_string()))
                })
            })
            .collect()
    };
    BTreeMap::from([
        (
            // One conditional PutItem, a redrive mark (UpdateItem), one SendMessage; the
            // warm-up's DescribeTable and GetQueueAttributes. No item reads, no state table.
            "ReceiverFunction",
            grants(&[
                (
                    &[
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DescribeTable",
                    ],
                    &["LedgerTable"],
                ),
                (
                    &["sqs:SendMessage", "sqs:GetQueueAttributes"],
                    &["EventQueue"],
                ),
                // The webhook secret, read at init and every few minutes (src/secrets.rs).
                (&["secretsmanager:GetSecretValue"], &["Secrets"]),
            ]),
        ),
        (
            // Adds facts to message items and writes edges and links (UpdateItem, PutItem, also
            // inside TransactWriteItems), no delete; GetItem for the warm-up and the old item a
            // failed condition returns; BatchGetItem to read a message back after its write and
            // file it in the contact summary (UpdateItem). Archives what the receiver could
            // not record with the receiver's conditional PutItem (no read, no update: it never
            // touches redrive marks).
            "ProcessorFunction",
            grants(&[
                (
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                    ],
                    &["StateTable"],
                ),
                (&["dynamodb:PutItem"], &["LedgerTable"]),
            ]),
        ),
        (
            // Lists marks on the sparse index, clears them, re-sends.
            "SweeperFunction",
            grants(&[
                (&["dynamodb:Query"], &["LedgerTable/index/redrive"]),
                (&["dynamodb:UpdateItem"], &["LedgerTable"]),
                (&["sqs:SendMessage"], &["EventQueue"]),
            ]),
        ),
        (
            // Reads a message (strongly consistent BatchGetItem) and its contact (links, both
            // indexes), puts on its own bus, sends failed batches' descriptions to its own DLQ.
            // Writes only window items (a conditional UpdateItem moving a window's end forward).
            "NotifierFunction",
            grants(&[
                (&["dynamodb:UpdateItem"], &["StateTable"]),
                (
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:Query",
                    ],
                    &[
                        "StateTable",
                        "StateTable/index/by_contact",
                        "StateTable/index/by_contact_sent",
                        "StateTable/index/by_bsuid",
                    ],
                ),
                (&["events:PutEvents"], &["ChangeBus"]),
                (&["sqs:SendMessage"], &["NotifierDeadLetterQueue"]),
            ]),
        ),
        (
            // Lists due windows on the sparse index, reads their contacts like the notifier,
            // puts on the bus, marks window items (conditional UpdateItem). No delete, no put.
            "WindowsFunction",
            grants(&[
                (&["dynamodb:Query"], &["StateTable/index/by_next_due"]),
                (
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:Query",
                    ],
                    &[
                        "StateTable",
                        "StateTable/index/by_contact",
                        "StateTable/index/by_contact_sent",
                        "StateTable/index/by_bsuid",
                    ],
                ),
                (&["dynamodb:UpdateItem"], &["StateTable"]),
                (&["events:PutEvents"], &["ChangeBus"]),
            ]),
        ),
        (
            // Reads only: messages and aliases by key, contacts through links and the contact
            // indexes; the API token from the stack's secret.
            "ApiFunction",
            grants(&[
                (&["secretsmanager:GetSecretValue"], &["Secrets"]),
                (
                    &[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:Query",
                    ],
                    &[
                        "StateTable",
                        "StateTable/index/by_contact",
                        "StateTable/index/by_contact_sent",
                        "StateTable/index/by_bsuid",
                    ],
                ),
            ]),
        ),
    ])
}

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("template.yaml"))
        .expect("template.yaml parses")
}

fn resources(template: &Value) -> &Mapping {
    template["Resources"].as_mapping().expect("Resources")
}

fn functions(template: &Value) -> Vec<(String, &Value)> {
    resources(template)
        .iter()
        .filter(|(_, r)| {
            matches!(
                r["Type"].as_str(),
                Some("AWS::Serverless::Function" | "AWS::Lambda::Function")
            )
        })
        .map(|(id, r)| (id.as_str().expect("logical id").to_owned(), r))
        .collect()
}

/// `Value` or a list of them, as a list.
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// A policy resource as a logical id (`!GetAtt X.Arn`, `!Sub "${X.Arn}/index/i"`, their long
/// forms, `!Ref X` for a table name), or the literal string.
fn resource_name(value: &Value) -> Result<String, String> {
    let from_sub = |text: &str| -> String {
        match text.strip_prefix("${").and_then(|t| t.split_once(".Arn}")) {
            Some((id, rest)) => format!("{id}{rest}"),
            None => format!("literal:{text}"),
        }
    };
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Tagged(tagged) => match (tagged.tag.to_string().as_str(), &tagged.value) {
            ("!GetAtt", Value::String(text)) => text
                .strip_suffix(".Arn")
                .map(str::to_owned)
                .ok_or(format!("!GetAtt {text} is not an ARN")),
            ("!Sub", Value::String(text)) => Ok(from_sub(text)),
            ("!Ref", Value::String(id)) => Ok(id.clone()),
            (tag, inner) => Err(format!("unexpected resource {tag} {inner:?}")),
        },
        Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next().unwrap();
            match (key.as_str(), inner) {
                (Some("Fn::GetAtt"), Value::Sequence(parts))
                    if parts.len() == 2 && parts[1] == "Arn" =>
                {
                    Ok(parts[0].as_str().unwrap_or_default().to_owned())
                }
                (Some("Fn::Sub"), Value::String(text)) => Ok(from_sub(text)),
                (Some("Ref"), Value::String(id)) => Ok(id.clone()),
                _ => Err(format!("unexpected resource {value:?}")),
            }
        }
        other => Err(format!("unexpected resource {other:?}")),
    }
}

/// Every (action, resource) one function's `Policies` grant, with SAM templates expanded; an
/// error for anything this test cannot vouch for (a custom role, managed policies, unknown
/// templates, `NotAction`/`NotResource`).
fn granted(function: &str, properties: &Value) -> Result<BTreeSet<(String, String)>, String> {
    if properties.get("Role").is_some() {
        return Err(format!(
            "{function}: a custom Role bypasses these checks; list its grants here first"
        ));
    }
    let mut grants = BTreeSet::new();
    for policy in one_or_many(&properties["Policies"]) {
        match policy {
            Value::String(managed) => {
                return Err(format!(
                    "{function}: managed policy {managed} grants what the template does not show"
                ))
            }
            Value::Mapping(map) if map.contains_key("Statement") => {
                for statement in one_or_many(&policy["Statement"]) {
                    for forbidden in ["NotAction", "NotResource", "NotPrincipal"] {
                        if statement.get(forbidden).is_some() {
                            return Err(format!("{function}: {forbidden} grants everything else"));
                        }
                    }
                    match statement["Effect"].as_str() {
                        Some("Deny") => continue,
                        Some("Allow") => {}
                        _ => return Err(format!("{function}: no Effect in {statement:?}")),
                    }
                    let actions = one_or_many(&statement["Action"]);
                    let resources = one_or_many(&statement["Resource"]);
                    if actions.is_empty() || resources.is_empty() {
                        return Err(format!("{function}: incomplete statement {statement:?}"));
                    }
                    for action in &actions {
                        let action = action.as_str().ok_or(format!("{function}: {action:?}"))?;
                        for resource in &resources {
                            grants.insert((action.to_owned(), resource_name(resource)?));
                        }
                    }
                }
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (name, parameters) = map.iter().next().unwrap();
                let name = name.as_str().unwrap_or_default();
                let actions = sam_template_actions(name).ok_or(format!(
                    "{function}: SAM policy template {name}: list its expansion here"
                ))?;
                let target = ["TableName", "QueueName"]
                    .iter()
                    .find_map(|key| parameters.get(*key))
                    .ok_or(format!("{function}: {name} without a target"))?;
                let target = resource_name(target)?;
                for action in actions {
                    grants.insert((action.to_string(), target.clone()));
                    if action.starts_with("dynamodb:") {
                        // The DynamoDB templates also grant every index of the table.
                        grants.insert((action.to_string(), format!("{target}/index/*")));
                    }
                }
            }
            other => return Err(format!("{function}: unexpected policy {other:?}")),
        }
    }
    Ok(grants)
}

/// The grants of `function` in the template, or a failure saying why they cannot be checked.
fn grants_of(template: &Value, function: &str) -> BTreeSet<(String, String)> {
    granted(function, &template["Resources"][function]["Properties"])
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Problems with a set of grants that hold whatever the design: wildcards and raw ARNs.
fn wildcard_problems(function: &str, grants: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut problems = Vec::new();
    for (action, target) in grants {
        if !action.contains(':') || action.contains('*') || action.contains('?') {
            problems.push(format!("{function}: wildcard action {action}"));
        }
        if target.contains('*')
            && !(target == "*" && STAR_RESOURCE_ACTIONS.contains(&action.as_str()))
        {
            problems.push(format!(
                "{function}: {action} on wildcard resource {target}"
            ));
        }
        if target.starts_with("literal:") || target.starts_with("arn:") {
            problems.push(format!(
                "{function}: {action} on a hand-written ARN {target}"
            ));
        }
    }
    problems
}

/// No wildcard actions, no wildcard resources except where AWS requires them, nothing broader
/// than the design for any function, and every function of the template is accounted for.
#[test]
fn every_function_has_exactly_its_designed_grants() {
    let template = template();
    assert!(
        template["Globals"]["Function"].get("Policies").is_none()
            && template["Globals"]["Function"].get("Role").is_none(),
        "Globals must not grant anything to every function"
    );
    let expected = expected_grants();
    let functions = functions(&template);
    let names: BTreeSet<&str> = functions.iter().map(|(name, _)| name.as_str()).collect();
    let designed: BTreeSet<&str> = expected.keys().copied().collect();
    assert_eq!(
        names, designed,
        "every function needs its designed grants listed here"
    );

    for (function, _) in &functions {
        let grants = grants_of(&template, function);
        let problems = wildcard_problems(function, &grants);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(
            &grants,
            &expected[function.as_str()],
            "{function}: grants differ from the design (infra/README.md)"
        );
    }
}

/// The processor writes the ledger only as the receiver does (one conditional `PutItem`): it
/// reads no archived body and touches no redrive mark; and it archives with the receiver's dedup
/// window, so its entries are the ones the receiver would have written.
#[test]
fn the_processor_only_puts_into_the_ledger_with_the_receivers_window() {
    let template = template();
    let on_ledger: BTreeSet<String> = grants_of(&template, "ProcessorFunction")
        .into_iter()
        .filter(|(_, target)| target.starts_with("LedgerTable"))
        .map(|(action, target)| format!("{action} on {target}"))
        .collect();
    assert_eq!(
        on_ledger,
        BTreeSet::from(["dynamodb:PutItem on LedgerTable".to_owned()])
    );
    let variables = |function: &str| {
        template["Resources"][function]["Properties"]["Environment"]["Variables"].clone()
    };
    let (receiver, processor) = (
        variables("ReceiverFunction"),
        variables("ProcessorFunction"),
    );
    for variable in ["LEDGER_TABLE", "DEDUP_TTL_DAYS"] {
        assert!(
            processor.get(variable).is_some(),
            "processor: {variable} unset"
        );
        assert_eq!(
            resource_name(&processor[variable]).unwrap(),
            resource_name(&receiver[variable]).unwrap(),
            "{variable} differs between receiver and processor"
        );
    }
}

/// The receiver can write the ledger and send to the queue, and read no item anywhere: above
/// all, nothing on the state table. The one thing it reads is the stack's secret.
#[test]
fn the_receiver_cannot_read_state_or_items() {
    let template = template();
    for (action, target) in grants_of(&template, "ReceiverFunction") {
        assert!(
            !target.starts_with("StateTable"),
            "receiver: {action} on {target}"
        );
        assert!(
            !ITEM_READ_ACTIONS.contains(&action.as_str()),
            "receiver: item read {action} on {target}"
        );
        assert!(
            target.starts_with("LedgerTable")
                || target == "EventQueue"
                || (target == "Secrets" && action == "secretsmanager:GetSecretValue"),
            "receiver: {action} on {target}"
        );
    }
}

/// The read API only reads, and only the state table (and its token from the stack's secret).
#[test]
fn the_api_only_reads_state() {
    let template = template();
    for (action, target) in grants_of(&template, "ApiFunction") {
        if (action.as_str(), target.as_str()) == ("secretsmanager:GetSecretValue", "Secrets") {
            continue;
        }
        assert!(
            READ_ACTIONS.contains(&action.as_str()),
            "api: {action} is not read-only"
        );
        assert!(
            target.starts_with("StateTable"),
            "api: {action} on {target}"
        );
    }
}

/// Each function's table and queue settings name the resources it is granted, so a grant cannot
/// point at one table while the code uses another.
#[test]
fn environment_names_the_granted_resources() {
    let template = template();
    for (function, resource) in functions(&template) {
        let grants = grants_of(&template, &function);
        let variables = &resource["Properties"]["Environment"]["Variables"];
        for variable in ["LEDGER_TABLE", "STATE_TABLE", "QUEUE_URL", "SECRET_ARN"] {
            let Some(value) = variables.get(variable) else {
                continue;
            };
            let target = resource_name(value).unwrap();
            assert!(
                grants
                    .iter()
                    .any(|(_, granted)| granted.split('/').next().is_some_and(|id| id == target)),
                "{function}: {variable} names {target}, which it is granted nothing on"
            );
        }
    }
}

/// No IAM resource of its own (they would escape the checks above) but the forwarding role
/// (checked by `forwarding_grants_only_its_destination_and_dead_letter_queue`), and the only
/// public invoke permissions are the optional Function URL's of the receiver (`InvokeFunctionUrl`
/// and, only through the URL, `InvokeFunction`), which authenticates by the secret in its path.
#[test]
fn no_other_principal_or_role_is_granted_anything() {
    let template = template();
    for (id, resource) in resources(&template) {
        let kind = resource["Type"].as_str().unwrap_or_default();
        assert!(
            !kind.starts_with("AWS::IAM::") || id.as_str() == Some("ForwardRole"),
            "{id:?}: {kind} is not covered by these checks"
        );
        assert!(
            kind != "AWS::SQS::QueuePolicy" || id.as_str() == Some("ForwardDeadLetterQueuePolicy"),
            "{id:?}: {kind} is not covered by these checks"
        );
        if kind == "AWS::Lambda::Permission" {
            let properties = &resource["Properties"];
            if properties["Principal"] == "*" {
                match id.as_str() {
                    Some("ReceiverUrlPermission") => {
                        assert_eq!(properties["Action"], "lambda:InvokeFunctionUrl");
                        assert_eq!(properties["FunctionUrlAuthType"], "NONE");
                    }
                    // Since October 2025 a function URL also needs InvokeFunction: only through
                    // the URL, never for any caller of the Lambda API.
                    Some("ReceiverUrlInvokePermission") => {
                        assert_eq!(properties["Action"], "lambda:InvokeFunction");
                        assert_eq!(properties["InvokedViaFunctionUrl"], true);
                    }
                    other => panic!("{other:?}: a public invoke permission"),
                }
                assert_eq!(resource["Condition"], "WithFunctionUrl", "{id:?}");
                assert_eq!(
                    resource_name(&properties["FunctionName"]).unwrap(),
                    "ReceiverFunction"
                );
            }
        }
        if kind == "AWS::Lambda::Url" {
            assert_eq!(
                resource_name(&resource["Properties"]["TargetFunctionArn"]).unwrap(),
                "ReceiverFunction",
                "{id:?}: only the receiver may have a public URL"
            );
        }
    }
}

/// The checks above catch what they are meant to: broader grants written the ways a template
/// could drift.
#[test]
fn broader_grants_are_caught() {
    let broader = [
        "Policies: [{Statement: [{Effect: Allow, Action: '*', Resource: '*'}]}]",
        "Policies: [{Statement: [{Effect: Allow, Action: 'dynamodb:*', Resource: !GetAtt LedgerTable.Arn}]}]",
        "Policies: [{Statement: [{Effect: Allow, Action: dynamodb:GetItem, Resource: '*'}]}]",
        "Policies: [{Statement: [{Effect: Allow, Action: dynamodb:GetItem, Resource: !GetAtt StateTable.Arn}]}]",
        "Policies: [{Statement: [{Effect: Allow, Action: dynamodb:PutItem, Resource: !Sub '${LedgerTable.Arn}/*'}]}]",
        "Policies: [{DynamoDBCrudPolicy: {TableName: !Ref LedgerTable}}]",
        "Policies: [AmazonDynamoDBFullAccess]",
        "Policies: [{Statement: [{Effect: Allow, NotAction: 'iam:*', Resource: '*'}]}]",
        "Role: !GetAtt SomeRole.Arn",
    ];
    let expected = &expected_grants()["ReceiverFunction"];
    for properties in broader {
        let parsed: Value = serde_yaml::from_str(properties).unwrap();
        let caught = match granted("ReceiverFunction", &parsed) {
            Err(_) => true,
            Ok(grants) => {
                !wildcard_problems("ReceiverFunction", &grants).is_empty() || &grants != expected
            }
        };
        assert!(caught, "not caught: {properties}");
    }
    // And the receiver's real grants, written as a SAM template would be, pass.
    let exact: Value = serde_yaml::from_str(
        "Policies: [{Statement: [
            {Effect: Allow, Action: [dynamodb:PutItem, dynamodb:UpdateItem, dynamodb:DescribeTable],
             Resource: {'Fn::GetAtt': [LedgerTable, Arn]}},
            {Effect: Allow, Action: [sqs:SendMessage, sqs:GetQueueAttributes],
             Resource: !GetAtt EventQueue.Arn},
            {Effect: Allow, Action: secretsmanager:GetSecretValue, Resource: !Ref Secrets}]}]",
    )
    .unwrap();
    assert_eq!(&granted("ReceiverFunction", &exact).unwrap(), expected);
}

/// The alarms on `Namespace` / `metric` with dimension `dimension` = `value` (a literal, or the
/// logical id a `!Ref` names).
fn alarms_on<'t>(
    template: &'t Value,
    namespace: &str,
    metric: &str,
    dimension: &str,
    value: &str,
) -> Vec<&'t Value> {
    resources(template)
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| &r["Properties"])
        .filter(|p| p["Namespace"] == namespace && p["MetricName"] == metric)
        .filter(|p| {
            one_or_many(&p["Dimensions"]).iter().any(|d| {
                d["Name"] == dimension && resource_name(&d["Value"]).is_ok_and(|v| v == value)
            })
        })
        .collect()
}

/// An alarm that fires on the first datapoint above its threshold and tells the alarm topic.
fn assert_fires_on_first_breach(alarm: &Value, what: &str) {
    assert_eq!(
        alarm["ComparisonOperator"], "GreaterThanThreshold",
        "{what}"
    );
    assert_eq!(alarm["EvaluationPeriods"].as_u64(), Some(1), "{what}");
    let actions = one_or_many(&alarm["AlarmActions"]);
    assert!(
        actions
            .iter()
            .any(|a| resource_name(a).is_ok_and(|t| t == "AlarmTopic")),
        "{what}: no action on AlarmTopic"
    );
}

/// The sweeper's crashes and timeouts, its failed re-sends and the age of the oldest redrive
/// mark are alarmed; every sweeper metric alarmed on is one the sweeper emits; and a run ends
/// before the next is due, with its sweep ending a margin before its timeout.
#[test]
fn the_sweeper_is_alarmed_and_its_runs_do_not_overlap() {
    use wati_ingest::lambda::{SWEEPER_METRICS, SWEEP_DEADLINE_MARGIN};
    let template = template();

    let errors = alarms_on(
        &template,
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        "SweeperFunction",
    );
    assert_eq!(errors.len(), 1, "one alarm on the sweeper's Lambda errors");
    assert_fires_on_first_breach(errors[0], "sweeper errors");
    assert_eq!(errors[0]["Threshold"].as_f64(), Some(0.0));

    let failed = alarms_on(
        &template,
        "wati-ingest",
        "RedriveFailed",
        "Function",
        "sweeper",
    );
    assert_eq!(failed.len(), 1, "one alarm on failed re-sends");
    assert_fires_on_first_breach(failed[0], "sweeper failures");
    assert_eq!(failed[0]["Threshold"].as_f64(), Some(0.0));
    assert_eq!(failed[0]["Statistic"], "Sum");

    let age = alarms_on(
        &template,
        "wati-ingest",
        "OldestMarkAge",
        "Function",
        "sweeper",
    );
    assert_eq!(age.len(), 1, "one alarm on the oldest mark's age");
    assert_eq!(age[0]["Statistic"], "Maximum");
    assert_eq!(
        resource_name(&age[0]["Threshold"]).unwrap(),
        "OldestRedriveMarkAgeSeconds"
    );
    let default_age = template["Parameters"]["OldestRedriveMarkAgeSeconds"]["Default"]
        .as_f64()
        .expect("a default age");
    assert_eq!(default_age, 1_800.0, "30 minutes, six sweeper runs");
    assert_fires_on_first_breach(age[0], "oldest mark age");

    for (id, resource) in resources(&template) {
        let properties = &resource["Properties"];
        if resource["Type"] != "AWS::CloudWatch::Alarm" || properties["Namespace"] != "wati-ingest"
        {
            continue;
        }
        let of_sweeper = one_or_many(&properties["Dimensions"])
            .iter()
            .any(|d| d["Name"] == "Function" && d["Value"] == "sweeper");
        let metric = properties["MetricName"].as_str().unwrap_or_default();
        assert!(
            !of_sweeper || SWEEPER_METRICS.contains(&metric),
            "{id:?} alarms on {metric}, which the sweeper does not emit"
        );
    }

    let sweeper = &resources(&template)["SweeperFunction"]["Properties"];
    let timeout = sweeper["Timeout"].as_u64().expect("a timeout");
    let schedule = sweeper["Events"]["Every5Minutes"]["Properties"]["Schedule"]
        .as_str()
        .expect("a schedule");
    assert_eq!(schedule, "rate(5 minutes)");
    assert!(timeout < 300, "a run ends before the next is due");
    assert!(
        timeout > SWEEP_DEADLINE_MARGIN.as_secs() * 2,
        "the sweep gets most of the run"
    );
    assert_eq!(sweeper["ReservedConcurrentExecutions"].as_u64(), Some(1));
    assert_eq!(
        sweeper["EventInvokeConfig"]["MaximumRetryAttempts"].as_u64(),
        Some(0),
        "the schedule, not an async retry, runs a failed sweep again"
    );
}

/// Forwarding: EventBridge alone assumes `ForwardRole`, which may only invoke the forwarding API
/// destination; the forward DLQ takes messages only from EventBridge on behalf of the forwarding
/// rule; all of it exists only with the `WithForwarding` condition.
#[test]
fn forwarding_grants_only_its_destination_and_dead_letter_queue() {
    let template = template();
    let resources = resources(&template);
    for id in [
        "ForwardConnection",
        "ForwardDestination",
        "ForwardRole",
        "ForwardRule",
        "ForwardDeadLetterQueue",
        "ForwardDeadLetterQueuePolicy",
        "ForwardDeadLetterAlarm",
    ] {
        assert_eq!(resources[id]["Condition"], "WithForwarding", "{id}");
    }
    let role = &resources["ForwardRole"]["Properties"];
    let trust = one_or_many(&role["AssumeRolePolicyDocument"]["Statement"]);
    assert_eq!(trust.len(), 1);
    assert_eq!(trust[0]["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert!(role.get("ManagedPolicyArns").is_none());
    let mut grants = BTreeSet::new();
    for policy in one_or_many(&role["Policies"]) {
        for statement in one_or_many(&policy["PolicyDocument"]["Statement"]) {
            assert_eq!(statement["Effect"], "Allow");
            for action in one_or_many(&statement["Action"]) {
                for target in one_or_many(&statement["Resource"]) {
                    grants.insert((
                        action.as_str().unwrap().to_owned(),
                        resource_name(target).unwrap(),
                    ));
                }
            }
        }
    }
    assert_eq!(
        grants,
        BTreeSet::from([(
            "events:InvokeApiDestination".to_owned(),
            "ForwardDestination".to_owned()
        )])
    );
    let target = &one_or_many(&resources["ForwardRule"]["Properties"]["Targets"])[0];
    assert_eq!(resource_name(&target["RoleArn"]).unwrap(), "ForwardRole");
    assert_eq!(
        resource_name(&target["DeadLetterConfig"]["Arn"]).unwrap(),
        "ForwardDeadLetterQueue"
    );
    let policy = &resources["ForwardDeadLetterQueuePolicy"]["Properties"];
    let statements = one_or_many(&policy["PolicyDocument"]["Statement"]);
    assert_eq!(statements.len(), 1);
    let statement = statements[0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(
        resource_name(&statement["Resource"]).unwrap(),
        "ForwardDeadLetterQueue"
    );
    assert_eq!(
        resource_name(&statement["Condition"]["ArnEquals"]["aws:SourceArn"]).unwrap(),
        "ForwardRule"
    );
}

/// The notifier reads its stream from the start, reports partial failures, bisects, bounds its
/// retries and sends what it gives up on to its own DLQ; its Lambda errors, its stream age and
/// its DLQ are alarmed, and every notifier metric alarmed on is one it emits.
#[test]
fn the_notifier_is_wired_and_alarmed() {
    use wati_ingest::notifier::NOTIFIER_METRICS;
    let template = template();
    let resources = resources(&template);
    assert_eq!(
        resources["StateTable"]["Properties"]["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    let notifier = &resources["NotifierFunction"]["Properties"];
    assert_eq!(
        resource_name(&notifier["Environment"]["Variables"]["CHANGE_BUS_NAME"]).unwrap(),
        "ChangeBus"
    );
    let source = &notifier["Events"]["Stream"];
    assert_eq!(source["Type"], "DynamoDB");
    let source = &source["Properties"];
    assert_eq!(source["StartingPosition"], "TRIM_HORIZON");
    assert_eq!(
        source["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    assert_eq!(source["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert!(source["MaximumRetryAttempts"]
        .as_u64()
        .is_some_and(|n| n <= 100));
    assert!(source["MaximumRecordAgeInSeconds"]
        .as_u64()
        .is_some_and(|n| n <= 86_400));
    assert_eq!(
        resource_name(&source["DestinationConfig"]["OnFailure"]["Destination"]).unwrap(),
        "NotifierDeadLetterQueue"
    );
    assert_eq!(
        resource_name(&resources["ChangeArchive"]["Properties"]["SourceArn"]).unwrap(),
        "ChangeBus"
    );

    let errors = alarms_on(
        &template,
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        "NotifierFunction",
    );
    assert_eq!(errors.len(), 1, "one alarm on the notifier's Lambda errors");
    assert_fires_on_first_breach(errors[0], "notifier errors");
    let age = alarms_on(
        &template,
        "AWS/Lambda",
        "IteratorAge",
        "FunctionName",
        "NotifierFunction",
    );
    assert_eq!(age.len(), 1, "one alarm on the stream's iterator age");
    assert_eq!(age[0]["Threshold"].as_f64(), Some(300_000.0), "5 minutes");
    assert_fires_on_first_breach(age[0], "notifier iterator age");
    for (queue, what) in [
        ("NotifierDeadLetterQueue", "notifier DLQ"),
        ("ForwardDeadLetterQueue", "forward DLQ"),
    ] {
        let alarms: Vec<&Value> = resources
            .values()
            .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
            .map(|r| &r["Properties"])
            .filter(|p| p["MetricName"] == "ApproximateNumberOfMessagesVisible")
            .filter(|p| {
                one_or_many(&p["Dimensions"]).iter().any(|d| {
                    matches!(&d["Value"], Value::Tagged(t)
                        if t.value.as_str() == Some(format!("{queue}.QueueName").as_str()))
                })
            })
            .collect();
        assert_eq!(alarms.len(), 1, "one alarm on the {what}");
        assert_fires_on_first_breach(alarms[0], what);
    }
    for (id, resource) in resources {
        let properties = &resource["Properties"];
        if resource["Type"] != "AWS::CloudWatch::Alarm" || properties["Namespace"] != "wati-ingest"
        {
            continue;
        }
        let of_notifier = one_or_many(&properties["Dimensions"])
            .iter()
            .any(|d| d["Name"] == "Function" && d["Value"] == "notifier");
        let metric = properties["MetricName"].as_str().unwrap_or_default();
        assert!(
            !of_notifier || NOTIFIER_METRICS.contains(&metric),
            "{id:?} alarms on {metric}, which the notifier does not emit"
        );
    }
}

/// The window timer: every minute, one run at a time ending before the next, not retried
/// asynchronously (the next minute finds the same windows); the same lead time as the notifier;
/// its Lambda errors alarmed; every windows metric alarmed on is one it emits; the sparse index
/// it queries is on the state table with the keys the code writes.
#[test]
fn the_window_timer_is_wired_and_alarmed() {
    use wati_ingest::windows::{DUE_INDEX, WINDOWS_METRICS};
    let template = template();
    let resources = resources(&template);
    let windows = &resources["WindowsFunction"]["Properties"];
    let schedule = windows["Events"]["EveryMinute"]["Properties"]["Schedule"]
        .as_str()
        .expect("a schedule");
    assert_eq!(schedule, "rate(1 minute)");
    assert!(windows["Timeout"].as_u64().is_some_and(|t| t < 60));
    assert_eq!(windows["ReservedConcurrentExecutions"].as_u64(), Some(1));
    assert_eq!(
        windows["EventInvokeConfig"]["MaximumRetryAttempts"].as_u64(),
        Some(0)
    );
    let notifier = &resources["NotifierFunction"]["Properties"];
    for function in [windows, notifier] {
        let variables = &function["Environment"]["Variables"];
        assert_eq!(
            resource_name(&variables["WINDOW_CLOSING_LEAD_MINUTES"]).unwrap(),
            "WindowClosingLeadMinutes"
        );
        assert_eq!(
            resource_name(&variables["CHANGE_BUS_NAME"]).unwrap(),
            "ChangeBus"
        );
    }
    let lead = &template["Parameters"]["WindowClosingLeadMinutes"];
    assert_eq!(lead["Default"].as_u64(), Some(60));
    assert_eq!(lead["MaxValue"].as_u64(), Some(1_439), "under a day");

    let index = resources["StateTable"]["Properties"]["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"] == DUE_INDEX)
        .expect("the due-time index");
    let keys: Vec<(&str, &str)> = index["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [("due_shard", "HASH"), ("next_due", "RANGE")]);

    let errors = alarms_on(
        &template,
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        "WindowsFunction",
    );
    assert_eq!(errors.len(), 1, "one alarm on the window timer's errors");
    let alarm = errors[0];
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["Threshold"].as_f64(), Some(0.0));
    let actions = one_or_many(&alarm["AlarmActions"]);
    assert!(actions
        .iter()
        .any(|a| resource_name(a).is_ok_and(|t| t == "AlarmTopic")));
    let minutes = alarm["Period"].as_u64().unwrap() * alarm["EvaluationPeriods"].as_u64().unwrap();
    assert!(minutes <= 900, "alarmed within 15 minutes of failing");
    for (id, resource) in resources {
        let properties = &resource["Properties"];
        if resource["Type"] != "AWS::CloudWatch::Alarm" || properties["Namespace"] != "wati-ingest"
        {
            continue;
        }
        let of_windows = one_or_many(&properties["Dimensions"])
            .iter()
            .any(|d| d["Name"] == "Function" && d["Value"] == "windows");
        let metric = properties["MetricName"].as_str().unwrap_or_default();
        assert!(
            !of_windows || WINDOWS_METRICS.contains(&metric),
            "{id:?} alarms on {metric}, which the window timer does not emit"
        );
    }
}

/// The `!Sub` text of a value (`!Sub "..."` or `{"Fn::Sub": "..."}`), if it is one.
fn sub_text(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged.value.as_str(),
        Value::Mapping(map) if map.len() == 1 => map.get("Fn::Sub").and_then(Value::as_str),
        _ => None,
    }
}

/// Every template name (parameter, resource, pseudo parameter) a value refers to: `!Ref`,
/// `!GetAtt` and the `${...}` of `!Sub`, in short and long forms, at any depth.
fn references(value: &Value) -> BTreeSet<String> {
    fn in_sub(text: &str, into: &mut BTreeSet<String>) {
        for part in text.split("${").skip(1) {
            if let Some((name, _)) = part.split_once('}') {
                let name = name.split('.').next().unwrap_or_default();
                if !name.starts_with('!') {
                    into.insert(name.to_owned());
                }
            }
        }
    }
    fn walk(value: &Value, into: &mut BTreeSet<String>) {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                match (tag.as_str(), &tagged.value) {
                    ("!Ref", Value::String(name)) => {
                        into.insert(name.clone());
                    }
                    ("!GetAtt", Value::String(path)) => {
                        into.insert(path.split('.').next().unwrap_or_default().to_owned());
                    }
                    ("!Sub", Value::String(text)) => in_sub(text, into),
                    (_, inner) => walk(inner, into),
                }
            }
            Value::Mapping(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        (Some("Ref"), Value::String(name)) => {
                            into.insert(name.clone());
                        }
                        (Some("Fn::Sub"), Value::String(text)) => in_sub(text, into),
                        _ => walk(inner, into),
                    }
                }
            }
            Value::Sequence(items) => {
                // `!Sub [text, {variables}]`: the text's names, then the variables' values.
                if let Some(Value::String(text)) = items.first() {
                    in_sub(text, into);
                }
                items.iter().for_each(|item| walk(item, into));
            }
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    walk(value, &mut names);
    names
}

/// The `Default` of a numeric parameter.
fn default_number(template: &Value, parameter: &str) -> f64 {
    template["Parameters"][parameter]["Default"]
        .as_f64()
        .unwrap_or_else(|| panic!("{parameter}: a numeric default"))
}

/// The webhook ingress (docs/capacity.md, "Ingress"): an API whose only routes are the secret
/// itself, one route per accepted secret, so that a request without it is answered 404 by API
/// Gateway and neither invokes a Lambda nor takes the webhook route's throttle. The secrets go
/// only where they must (the receiver's variables and the route keys): not into Outputs, the
/// receiver's resource policy, per-route metrics or access logs.
#[test]
fn the_webhook_route_is_the_secret() {
    let template = template();
    let resources = resources(&template);

    let api = &resources["WebhookApi"];
    assert_eq!(api["Type"], "AWS::ApiGatewayV2::Api");
    assert_eq!(api["Properties"]["ProtocolType"], "HTTP");
    for imported in ["Body", "BodyS3Location"] {
        assert!(
            api["Properties"].get(imported).is_none(),
            "an imported definition would delete the routes below when it is next re-imported"
        );
    }

    // Every route of the template: (route key's `!Sub` text, condition), by logical id.
    let mut routes = BTreeMap::new();
    for (id, resource) in resources {
        if resource["Type"] != "AWS::ApiGatewayV2::Route" {
            continue;
        }
        let id = id.as_str().unwrap().to_owned();
        let properties = &resource["Properties"];
        assert_eq!(resource_name(&properties["ApiId"]).unwrap(), "WebhookApi");
        assert_eq!(
            sub_text(&properties["Target"]),
            Some("integrations/${WebhookIntegration}"),
            "{id}"
        );
        assert!(properties.get("AuthorizationType").is_none(), "{id}");
        let key = sub_text(&properties["RouteKey"]).expect("a route key naming its secret");
        routes.insert(id, (key.to_owned(), resource["Condition"].as_str()));
    }
    assert_eq!(
        routes,
        BTreeMap::from([
            (
                "WebhookRoute".to_owned(),
                ("POST /webhook/${WebhookSecret}".to_owned(), None)
            ),
            (
                "WebhookPreviousRoute".to_owned(),
                (
                    "POST /webhook/${WebhookSecretPrevious}".to_owned(),
                    Some("WithPreviousSecret")
                )
            ),
        ]),
        "POST /webhook/<secret> for each accepted secret, and no other route"
    );
    // The previous secret's route exists only while it is set and differs from the current one
    // (a second route with the same key would fail the deployment, naming the key).
    let expected: Value = serde_yaml::from_str(
        "!And [!Not [!Equals [!Ref WebhookSecretPrevious, '']],
               !Not [!Equals [!Ref WebhookSecretPrevious, !Ref WebhookSecret]]]",
    )
    .unwrap();
    assert_eq!(template["Conditions"]["WithPreviousSecret"], expected);

    // A secret is one literal path segment: no "/", no "{...}" (a path variable would match
    // every request), nothing a URL would escape. 64 lowercase hex characters, as `openssl rand
    // -hex 32` (README, runbook) and the local server make them: stricter than the functions'
    // own check (at least 16 characters). scripts/deploy-rehearsal.py tries values against them.
    for (parameter, pattern) in [
        ("WebhookSecret", "^[0-9a-f]{64}$"),
        ("WebhookSecretPrevious", "^([0-9a-f]{64})?$"),
        ("ApiToken", "^[0-9a-f]{64}$"),
        ("ApiTokenPrevious", "^([0-9a-f]{64})?$"),
    ] {
        let declared = &template["Parameters"][parameter];
        assert_eq!(declared["NoEcho"].as_bool(), Some(true), "{parameter}");
        assert_eq!(declared["AllowedPattern"], pattern, "{parameter}");
    }

    let integration = &resources["WebhookIntegration"]["Properties"];
    assert_eq!(resource_name(&integration["ApiId"]).unwrap(), "WebhookApi");
    assert_eq!(integration["IntegrationType"], "AWS_PROXY");
    assert_eq!(integration["PayloadFormatVersion"], "2.0");
    assert_eq!(
        resource_name(&integration["IntegrationUri"]).unwrap(),
        "ReceiverFunction"
    );

    let stage = &resources["WebhookApiStage"]["Properties"];
    assert_eq!(resource_name(&stage["ApiId"]).unwrap(), "WebhookApi");
    assert_eq!(stage["StageName"], "$default");
    assert_eq!(stage["AutoDeploy"].as_bool(), Some(true));
    let defaults = &stage["DefaultRouteSettings"];
    assert_eq!(
        resource_name(&defaults["ThrottlingRateLimit"]).unwrap(),
        "WebhookThrottleRateLimit"
    );
    assert_eq!(
        resource_name(&defaults["ThrottlingBurstLimit"]).unwrap(),
        "WebhookThrottleBurstLimit"
    );
    assert_ne!(
        defaults["DetailedMetricsEnabled"].as_bool(),
        Some(true),
        "per-route metrics carry the route key, i.e. the secret, as a dimension"
    );
    assert!(
        stage.get("RouteSettings").is_none(),
        "RouteSettings would name the secret's route key"
    );
    // The access log: every variable of its Format is held to an allowlist without the path or
    // the route key by scripts/deploy-rehearsal.py (make rehearse); here, the obvious ones.
    let format = stage["AccessLogSettings"]["Format"]
        .as_str()
        .expect("the webhook stage's access log format");
    for copies_the_key in [
        "$context.path",
        "$context.routeKey",
        "$context.resourcePath",
    ] {
        assert!(
            !format.contains(copies_the_key),
            "the access log would copy the secret: {copies_the_key}"
        );
    }

    // No SAM HttpApi event reaches the receiver: its route would be POST /webhook/{secret}, a
    // path variable every request matches. The read API keeps its own, smaller budget.
    assert!(resources["ReceiverFunction"]["Properties"]
        .get("Events")
        .is_none());
    for (function, resource) in functions(&template) {
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .map(|events| events.values().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if event["Type"] == "HttpApi" {
                assert_eq!(function, "ApiFunction");
                let path = event["Properties"]["Path"].as_str().unwrap();
                assert!(!path.starts_with("/webhook"), "{function}: {path}");
            }
        }
    }
    let read_api = &resources["HttpApi"]["Properties"]["DefaultRouteSettings"];
    assert_eq!(
        (
            read_api["ThrottlingRateLimit"].as_u64(),
            read_api["ThrottlingBurstLimit"].as_u64()
        ),
        (Some(200), Some(500))
    );

    // API Gateway may invoke the receiver through the webhook API only, by a source ARN that
    // names no secret (a resource policy is readable with lambda:GetPolicy).
    let permission = &resources["WebhookInvokePermission"]["Properties"];
    assert_eq!(
        resource_name(&permission["FunctionName"]).unwrap(),
        "ReceiverFunction"
    );
    assert_eq!(permission["Principal"], "apigateway.amazonaws.com");
    assert_eq!(permission["Action"], "lambda:InvokeFunction");
    let source = sub_text(&permission["SourceArn"]).expect("a source ARN");
    assert!(
        source.ends_with(":${WebhookApi}/*/POST/webhook/*"),
        "{source}"
    );
    for (id, resource) in resources {
        let properties = &resource["Properties"];
        if resource["Type"] == "AWS::Lambda::Permission"
            && properties["Principal"] == "apigateway.amazonaws.com"
        {
            assert!(
                properties.get("SourceArn").is_some(),
                "{id:?}: any API could invoke it"
            );
        }
    }

    // Where each NoEcho parameter may be used: nowhere else, above all not in Outputs (shown in
    // clear by DescribeStacks) or Metadata.
    let secrets: Vec<String> = template["Parameters"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, p)| p["NoEcho"].as_bool() == Some(true))
        .map(|(name, _)| name.as_str().unwrap().to_owned())
        .collect();
    assert!(secrets.len() >= 4, "{secrets:?}");
    let allowed: BTreeSet<(&str, &str)> = BTreeSet::from([
        // The secret's value, which the functions read (their environment holds its ARN only).
        ("Secrets", "WebhookSecret"),
        ("Secrets", "WebhookSecretPrevious"),
        ("Secrets", "ApiToken"),
        ("Secrets", "ApiTokenPrevious"),
        ("WebhookRoute", "WebhookSecret"),
        ("WebhookPreviousRoute", "WebhookSecretPrevious"),
        ("ForwardConnection", "ForwardAuthHeaderValue"),
    ]);
    for (id, resource) in resources {
        let id = id.as_str().unwrap();
        for name in references(resource) {
            if secrets.contains(&name) {
                assert!(
                    allowed.contains(&(id, name.as_str())),
                    "{id} uses the NoEcho parameter {name}"
                );
            }
        }
    }
    for (id, output) in template["Outputs"].as_mapping().unwrap() {
        for name in references(output) {
            assert!(!secrets.contains(&name), "output {id:?} shows {name}");
        }
    }
    if let Some(metadata) = template.get("Metadata") {
        for name in references(metadata) {
            assert!(!secrets.contains(&name), "Metadata shows {name}");
        }
    }
}

/// The deployed defaults absorb a broadcast of 1,000 callbacks/s (docs/capacity.md, inputs
/// there): the webhook route takes twice that, the processor applies twice that, each SDK call of
/// the receiver ends within its Lambda's timeout, itself under the integration's, and the
/// unthrottled Function URL, when on, caps the receiver's share of the account's concurrency.
#[test]
fn the_defaults_absorb_a_broadcast() {
    use wati_ingest::lambda::{RECEIVER_SEQUENTIAL_OPERATIONS, SDK_OPERATION_TIMEOUT};
    /// Callbacks per second the defaults are sized for (v1 and v2 of a broadcast counted).
    const BROADCAST_PER_S: f64 = 1_000.0;
    /// One processor batch of 10 on AWS, an estimate: its slowest record makes 5 calls one after
    /// the other (its writes, its read-back, its contact summary's bucket), 10-15 ms each, plus
    /// the invocation (docs/capacity.md).
    const BATCH_SECONDS: f64 = 0.1;
    let template = template();
    let resources = resources(&template);

    let rate = default_number(&template, "WebhookThrottleRateLimit");
    let burst = default_number(&template, "WebhookThrottleBurstLimit");
    assert!(rate >= 2.0 * BROADCAST_PER_S, "rate {rate}");
    assert!(burst >= 2.0 * BROADCAST_PER_S, "burst {burst}");
    assert!(
        rate <= 2_500.0 && burst <= 5_000.0,
        "under the account's API Gateway quota in every region (2,500/s where lowest)"
    );

    let processor = &resources["ProcessorFunction"]["Properties"];
    let source = &processor["Events"]["Queue"]["Properties"];
    let batch = source["BatchSize"].as_f64().unwrap();
    assert_eq!(batch, 10.0, "the batch the apply time was measured on");
    assert!(source["MaximumBatchingWindowInSeconds"].as_f64().unwrap() <= 1.0);
    assert_eq!(
        resource_name(&source["ScalingConfig"]["MaximumConcurrency"]).unwrap(),
        "ProcessorMaxConcurrency"
    );
    let concurrency = default_number(&template, "ProcessorMaxConcurrency");
    let applied_per_s = concurrency * batch / BATCH_SECONDS;
    assert!(
        applied_per_s >= 2.0 * BROADCAST_PER_S,
        "{applied_per_s} events/s"
    );
    // AWS's advice for an SQS event source: a visibility timeout of at least 6 x the function's.
    let visibility = resources["EventQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .unwrap();
    assert!(visibility >= 6 * processor["Timeout"].as_u64().unwrap());

    let receiver = &resources["ReceiverFunction"]["Properties"];
    let timeout = receiver["Timeout"].as_u64().unwrap();
    let longest = SDK_OPERATION_TIMEOUT.as_secs() * u64::from(RECEIVER_SEQUENTIAL_OPERATIONS);
    assert!(
        timeout > longest,
        "a slow DynamoDB or SQS ends in the receiver's own answer ({longest} s), not a timeout"
    );
    let integration = resources["WebhookIntegration"]["Properties"]["TimeoutInMillis"]
        .as_u64()
        .unwrap();
    assert!(timeout * 1000 < integration && integration <= 30_000);
    let expected: Value = serde_yaml::from_str(
        "!If [WithFunctionUrl, !Ref ReceiverReservedConcurrency, !Ref AWS::NoValue]",
    )
    .unwrap();
    assert_eq!(receiver["ReservedConcurrentExecutions"], expected);
    assert_eq!(
        default_number(&template, "ReceiverReservedConcurrency"),
        100.0
    );

    // What Wati would be refused without the receiver knowing is alarmed: the webhook API's own
    // 4xx (a 429 over the throttle, a flood's 404s) and the receiver's Lambda throttles.
    let refused = alarms_on(&template, "AWS/ApiGateway", "4xx", "ApiId", "WebhookApi");
    assert_eq!(refused.len(), 1, "one alarm on the webhook API's 4xx");
    assert_fires_on_first_breach(refused[0], "webhook API 4xx");
    let throttled = alarms_on(
        &template,
        "AWS/Lambda",
        "Throttles",
        "FunctionName",
        "ReceiverFunction",
    );
    assert_eq!(throttled.len(), 1, "one alarm on the receiver's throttles");
    assert_fires_on_first_breach(throttled[0], "receiver throttles");
    assert_eq!(throttled[0]["Threshold"].as_f64(), Some(0.0));
}

/// What API Gateway sends the receiver for the secret's own route (its route key is the
/// template's, with the secret in it; no path parameters): the receiver's router takes it like
/// any other shape of the webhook, for the current and, during a rotation, the previous secret.
#[tokio::test]
async fn the_secret_route_reaches_the_receiver() {
    use std::sync::Arc;
    use tower::ServiceExt;
    use wati_ingest::auth::SecretSet;
    use wati_ingest::http::{webhook_routes, WebhookService};
    use wati_ingest::metrics::MetricsSink;
    use wati_ingest::receiver::{Receiver, ReceiverSettings};
    use wati_ingest::store::embedded::EmbeddedStore;

    const CURRENT: &str = "6f1c0d9e8b7a65432100fedcba9876543210aabbccddeeff0011223344556677";
    const PREVIOUS: &str = "previous-secret-0123456789abcdef";
    let template = template();
    let route_key = |id: &str, secret: &str| {
        let text = sub_text(&template["Resources"][id]["Properties"]["RouteKey"]).unwrap();
        text.replace("${WebhookSecret}", secret)
            .replace("${WebhookSecretPrevious}", secret)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("w.db")).unwrap();
    let router = webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::over_intake(Arc::new(store), ReceiverSettings::default()),
        secrets: SecretSet::new([CURRENT, PREVIOUS]).unwrap().into(),
        max_body_bytes: 256 * 1024,
        metrics: MetricsSink::Off,
    }));
    for (route, secret, id) in [
        ("WebhookRoute", CURRENT, "6734a1b2c3d4e5f601000003"),
        ("WebhookPreviousRoute", PREVIOUS, "6734a1b2c3d4e5f601000004"),
    ] {
        let key = route_key(route, secret);
        let (method, path) = key.split_once(' ').unwrap();
        assert_eq!(path, format!("/webhook/{secret}"));
        let body = format!(
            r#"{{"eventType":"sentMessageDELIVERED","id":"{id}","timestamp":"1764238518"}}"#
        );
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": key,
            "rawPath": path,
            "rawQueryString": "",
            "headers": {"content-type": "application/json", "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "a1b2c3d4e5",
                "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", "domainPrefix": "a1b2c3d4e5",
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "Wati"},
                "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "routeKey": key, "stage": "$default",
                "time": "26/Nov/2026:10:00:00 +0000", "timeEpoch": 1_795_600_000_000u64
            },
            "body": body,
            "isBase64Encoded": false
        });
        let request = lambda_http::request::from_str(&event.to_string()).expect("a Lambda event");
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{route}");
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["status"], "accepted", "{route}: {answer}");
    }
}

/// Every table holds customer data (or the archive of it): deleting the stack or replacing a
/// table keeps it (`DeletionPolicy` and `UpdateReplacePolicy: Retain`), and a `DeleteTable` is
/// refused until deletion protection is turned off (docs/runbook.md, "Removing a stack").
#[test]
fn tables_survive_the_stack() {
    let template = template();
    let tables: Vec<_> = resources(&template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::DynamoDB::Table")
        .collect();
    assert!(tables.len() >= 2, "the ledger and the state table");
    for (id, table) in tables {
        assert_eq!(table["DeletionPolicy"], "Retain", "{id:?}");
        assert_eq!(table["UpdateReplacePolicy"], "Retain", "{id:?}");
        assert_eq!(
            table["Properties"]["DeletionProtectionEnabled"], true,
            "{id:?}"
        );
    }
}
