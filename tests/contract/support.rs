//! The two backends the contract suite runs against, and the AWS resources built from
//! `template.yaml` (so the template and the code cannot drift apart).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;
use wati_ingest::ports::{
    DeadLetters, Erasure, Ledger, QuarantineArchive, Queue, QueuedEvent, StateStore,
};
use wati_ingest::store::aws::{decode_queued, DynamoLedger, SqsQueue};
use wati_ingest::store::aws_erasure::AwsErasure;
use wati_ingest::store::aws_operator::{AwsQuarantine, SqsDeadLetters};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;

/// One backend: its ledger and queue, and a way to read back what was enqueued.
// One per test: the size of the AWS variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Embedded {
        store: EmbeddedStore,
        _dir: tempfile::TempDir,
    },
    Aws {
        ledger: DynamoLedger,
        queue: SqsQueue,
        state: DynamoState,
        sqs: aws_sdk_sqs::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        ledger_table: String,
        quarantines: AwsQuarantine,
        dead_letters: SqsDeadLetters,
        erasure: AwsErasure,
    },
}

impl Backend {
    pub async fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("contract.db")).expect("open");
        Backend::Embedded { store, _dir: dir }
    }

    /// Fresh tables and queues on the emulators, named uniquely for this test.
    pub async fn aws() -> Backend {
        let stack = Stack::create().await;
        let queue = SqsQueue::new(stack.sqs.clone(), stack.queue_url("EventQueue"));
        Backend::on_stack(&stack, queue)
    }

    /// The AWS backend over `stack`'s tables, with `queue` as its queue.
    pub fn on_stack(stack: &Stack, queue: SqsQueue) -> Backend {
        Backend::Aws {
            ledger: DynamoLedger::new(stack.dynamodb.clone(), stack.table("LedgerTable")),
            state: DynamoState::new(stack.dynamodb.clone(), stack.table("StateTable")),
            dynamodb: stack.dynamodb.clone(),
            ledger_table: stack.table("LedgerTable"),
            quarantines: AwsQuarantine {
                client: stack.dynamodb.clone(),
                ledger_table: stack.table("LedgerTable"),
                state_table: stack.table("StateTable"),
            },
            erasure: AwsErasure {
                client: stack.dynamodb.clone(),
                ledger_table: stack.table("LedgerTable"),
                state_table: stack.table("StateTable"),
            },
            dead_letters: SqsDeadLetters {
                client: stack.sqs.clone(),
                dlq_url: stack.queue_url("DeadLetterQueue"),
                queue_url: queue.url().to_owned(),
            },
            queue,
            sqs: stack.sqs.clone(),
        }
    }

    pub fn quarantines(&self) -> &dyn QuarantineArchive {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { quarantines, .. } => quarantines,
        }
    }

    pub fn erasure(&self) -> &dyn Erasure {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { erasure, .. } => erasure,
        }
    }

    pub fn dead_letters(&self) -> &dyn DeadLetters {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { dead_letters, .. } => dead_letters,
        }
    }

    /// Puts `event` among the dead letters, as a processor that gave up on it would.
    pub async fn dead_letter(&self, event: &QueuedEvent) {
        match self {
            Backend::Embedded { store, .. } => {
                store.send(event).await.expect("send");
                let delivery = store.receive(1, 60_000).await.expect("receive");
                let seq = delivery.first().expect("the event").seq;
                store
                    .dead_letter(seq, "boom".into())
                    .await
                    .expect("dead-letter");
            }
            Backend::Aws {
                sqs, dead_letters, ..
            } => SqsQueue::new(sqs.clone(), &dead_letters.dlq_url)
                .send(event)
                .await
                .expect("send to the DLQ"),
        }
    }

    pub fn ledger(&self) -> &dyn Ledger {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { ledger, .. } => ledger,
        }
    }

    pub fn state(&self) -> &dyn StateStore {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { state, .. } => state,
        }
    }

    pub fn queue(&self) -> &dyn Queue {
        match self {
            Backend::Embedded { store, .. } => store,
            Backend::Aws { queue, .. } => queue,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => "embedded",
            Backend::Aws { .. } => "aws",
        }
    }

    /// When the ledger entry of `key` may expire (`None`: never, or no entry): on DynamoDB its
    /// raw TTL attribute `expires_at`, in SQLite the rule a pruner would follow.
    pub async fn ledger_expiry(&self, key: &str) -> Option<i64> {
        match self {
            Backend::Embedded { store, .. } => store.ledger_expiry(key).await.expect("expiry"),
            Backend::Aws {
                dynamodb,
                ledger_table,
                ..
            } => {
                let output = dynamodb
                    .get_item()
                    .table_name(ledger_table)
                    .key("pk", AttributeValue::S(key.to_owned()))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("get item");
                let item = output.item()?;
                let held = item.get("held_expires_at").is_some();
                let expires_at = item
                    .get("expires_at")
                    .map(|v| v.as_n().expect("a number").parse().expect("an integer"));
                assert!(
                    held != expires_at.is_some(),
                    "an item holds its expiry either in expires_at or, marked, in held_expires_at: {item:?}"
                );
                expires_at
            }
        }
    }

    /// Everything currently on the queue, taken off it.
    pub async fn drain_queue(&self) -> Vec<QueuedEvent> {
        match self {
            Backend::Embedded { store, .. } => {
                let deliveries = store.receive(10_000, 60_000).await.expect("receive");
                let seqs = deliveries.iter().map(|d| d.seq).collect();
                store.acknowledge(seqs).await.expect("ack");
                deliveries.into_iter().map(|d| d.event).collect()
            }
            Backend::Aws { queue, sqs, .. } => {
                let mut events = Vec::new();
                loop {
                    let output = sqs
                        .receive_message()
                        .queue_url(queue.url())
                        .max_number_of_messages(10)
                        .wait_time_seconds(0)
                        .send()
                        .await
                        .expect("receive");
                    let messages = output.messages();
                    if messages.is_empty() {
                        return events;
                    }
                    for message in messages {
                        events.push(
                            decode_queued(message.body().unwrap_or_default()).expect("decode"),
                        );
                        sqs.delete_message()
                            .queue_url(queue.url())
                            .receipt_handle(message.receipt_handle().unwrap_or_default())
                            .send()
                            .await
                            .expect("delete");
                    }
                }
            }
        }
    }
}

/// The template's tables and queues, created on the emulators under unique names.
pub struct Stack {
    pub config: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    names: HashMap<String, String>,
}

static NEXT_STACK: AtomicU32 = AtomicU32::new(0);

impl Stack {
    pub async fn create() -> Stack {
        Stack::create_streaming(false).await
    }

    /// With `streams`, the tables get the template's DynamoDB streams (the notifier's and the
    /// window timer's tests). Only they: DynamoDB Local keeps every stream's records in one store
    /// and trims the oldest under load (`TrimmedDataAccessException` for a reader behind them).
    pub async fn create_streaming(streams: bool) -> Stack {
        assert!(
            std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok()
                && std::env::var("AWS_ENDPOINT_URL_SQS").is_ok(),
            "the AWS contract tests need the emulators: run `make test` (or \
             `scripts/emulators.sh run -- cargo test`)"
        );
        // The SDK's own defaults (no operation timeout): set-up and assertions must not time out
        // on a loaded CI machine. The chaos test builds the functions' clients with
        // `aws_sdk_config`, the functions' real settings.
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        Stack::create_on_with(config, dynamodb, sqs, streams).await
    }

    /// The template's resources on the emulators these clients talk to (no streams).
    pub async fn create_on(
        config: aws_config::SdkConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Stack {
        Stack::create_on_with(config, dynamodb, sqs, false).await
    }

    /// Like [`Stack::create_on`], `streams` as in [`Stack::create_streaming`]. As a deployment
    /// would, it then runs `wati-ingest backfill-contact-index` (on the empty state table: it
    /// only writes the marker that lets contact reads use `by_contact_sent`).
    pub async fn create_on_with(
        config: aws_config::SdkConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        streams: bool,
    ) -> Stack {
        let stack = Stack::build(config, dynamodb, sqs, streams, None).await;
        DynamoState::new(stack.dynamodb.clone(), stack.table("StateTable"))
            .backfill_contact_index()
            .await
            .expect("backfill the contact index of an empty table");
        stack
    }

    /// The stack as a release before the state table's `index` was deployed: the table without
    /// that index (`None`: with every index), and no backfill run.
    pub async fn create_without_index(index: Option<&str>) -> Stack {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        Stack::build(config, dynamodb, sqs, false, index).await
    }

    async fn build(
        config: aws_config::SdkConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        streams: bool,
        without_index: Option<&str>,
    ) -> Stack {
        let suffix = format!(
            "{}-{}",
            std::process::id(),
            NEXT_STACK.fetch_add(1, Ordering::Relaxed)
        );
        let template = template();
        let resources = template["Resources"].as_mapping().expect("Resources");
        let mut names = HashMap::new();
        let mut arns = HashMap::new();
        // Queues without a redrive policy first, so dead-letter targets exist.
        let mut queues: Vec<(&str, &Value)> = resources
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::SQS::Queue")
            .map(|(id, r)| (id.as_str().expect("logical id"), &r["Properties"]))
            .collect();
        queues.sort_by_key(|(_, p)| p.get("RedrivePolicy").is_some());
        for (id, properties) in queues {
            let name = format!("{id}-{suffix}");
            let mut create = sqs.create_queue().queue_name(&name);
            for attribute in [
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "MaximumMessageSize",
            ] {
                if let Some(value) = properties.get(attribute) {
                    create = create.attributes(QueueAttributeName::from(attribute), scalar(value));
                }
            }
            if let Some(policy) = properties.get("RedrivePolicy") {
                let Value::Tagged(target) = &policy["deadLetterTargetArn"] else {
                    panic!("deadLetterTargetArn must be !GetAtt Queue.Arn");
                };
                let target = scalar(&target.value).trim_end_matches(".Arn").to_owned();
                let redrive = serde_json::json!({
                    "deadLetterTargetArn": arns[&target],
                    "maxReceiveCount": scalar(&policy["maxReceiveCount"]),
                });
                create = create.attributes(QueueAttributeName::RedrivePolicy, redrive.to_string());
            }
            let url = create
                .send()
                .await
                .expect("create queue")
                .queue_url()
                .unwrap()
                .to_owned();
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("queue arn")
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .expect("arn");
            arns.insert(id.to_owned(), arn);
            names.insert(id.to_owned(), url);
        }
        for (id, resource) in resources {
            if resource["Type"] != "AWS::DynamoDB::Table" {
                continue;
            }
            let id = id.as_str().expect("logical id");
            let name = format!("{id}-{suffix}");
            let mut properties = resource["Properties"].clone();
            if let (Some(index), Some(indexes)) = (
                without_index,
                properties
                    .get_mut("GlobalSecondaryIndexes")
                    .and_then(Value::as_sequence_mut),
            ) {
                indexes.retain(|i| i["IndexName"].as_str() != Some(index));
                // DynamoDB refuses an attribute definition no key uses.
                let keyed: Vec<Value> = std::iter::once(&properties["KeySchema"])
                    .chain(
                        properties["GlobalSecondaryIndexes"]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                            .map(|i| &i["KeySchema"]),
                    )
                    .flat_map(|k| k.as_sequence().cloned().unwrap_or_default())
                    .map(|k| k["AttributeName"].clone())
                    .collect();
                if let Some(definitions) = properties
                    .get_mut("AttributeDefinitions")
                    .and_then(Value::as_sequence_mut)
                {
                    definitions.retain(|d| keyed.contains(&d["AttributeName"]));
                }
            }
            create_table(&dynamodb, &name, &properties, streams).await;
            names.insert(id.to_owned(), name);
        }
        Stack {
            config,
            dynamodb,
            sqs,
            names,
        }
    }

    pub fn table(&self, logical_id: &str) -> String {
        self.names[logical_id].clone()
    }

    pub fn queue_url(&self, logical_id: &str) -> String {
        self.names[logical_id].clone()
    }
}

/// `template.yaml`, parsed.
fn template() -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template.yaml parses")
}

/// Creates the template's table `logical_id` as `name`, without its stream (for benches that
/// need one table, not a stack: `benches/contact_reads.rs`).
#[allow(dead_code)]
pub async fn create_template_table(
    client: &aws_sdk_dynamodb::Client,
    logical_id: &str,
    name: &str,
) {
    let properties = &template()["Resources"][logical_id]["Properties"];
    create_table(client, name, properties, false).await;
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn key_schema(value: &Value) -> Vec<KeySchemaElement> {
    value
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(scalar(&k["AttributeName"]))
                .key_type(KeyType::from(scalar(&k["KeyType"]).as_str()))
                .build()
                .expect("key schema")
        })
        .collect()
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    properties: &Value,
    streams: bool,
) {
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(
            scalar(&properties["BillingMode"]).as_str(),
        ))
        .set_key_schema(Some(key_schema(&properties["KeySchema"])));
    for definition in properties["AttributeDefinitions"]
        .as_sequence()
        .expect("attributes")
    {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(scalar(&definition["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(
                    scalar(&definition["AttributeType"]).as_str(),
                ))
                .build()
                .expect("attribute definition"),
        );
    }
    for index in properties["GlobalSecondaryIndexes"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(scalar(&index["IndexName"]))
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            scalar(&index["Projection"]["ProjectionType"]).as_str(),
                        ))
                        .build(),
                )
                .build()
                .expect("index"),
        );
    }
    // The template's stream (the notifier's source), as DynamoDB Local supports it.
    if let Some(stream) = properties.get("StreamSpecification").filter(|_| streams) {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(
                    scalar(&stream["StreamViewType"]).as_str(),
                ))
                .build()
                .expect("stream specification"),
        );
    }
    match create.send().await {
        Ok(_) => {}
        // A retried create whose first attempt did create the table.
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(error) => panic!("create table {name}: {error:?}"),
    }
    if let Some(ttl) = properties.get("TimeToLiveSpecification") {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(scalar(&ttl["AttributeName"]))
                    .enabled(ttl["Enabled"].as_bool().unwrap_or(false))
                    .build()
                    .expect("ttl"),
            )
            .send()
            .await
            .expect("update ttl");
    }
}

/// The operation an AWS SDK request calls (`PutItem`, `SendMessage`, `PutEvents`…), from its
/// `x-amz-target` header, as the tests' interceptors count and fault it; `?` without one.
pub fn operation_of(request: &aws_sdk_dynamodb::config::http::HttpRequest) -> String {
    let target = request.headers().get("x-amz-target").unwrap_or("?");
    target.rsplit('.').next().unwrap_or(target).to_owned()
}
