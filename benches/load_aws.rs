//! Load test of the AWS path on the emulators (DynamoDB Local + moto SQS): the receiver's accept
//! rate and latency, its overhead over the bare `PutItem` + `SendMessage` it must make, and the
//! processor's apply rate. Run with `make load-aws` (starts the emulators).
//!
//! Settings: `LOAD_REQUESTS` (default 2000), `LOAD_CONCURRENCY` (16: Lambda instances at once),
//! `LOAD_PROCESSOR_CONCURRENCY` (batches applied at once: 1, or 4 with the broadcast).
//!
//! `LOAD_PROFILE=broadcast` (`make broadcast`, `make bench`): instead of `LOAD_REQUESTS` synthetic
//! events, the callbacks of a broadcast to `BROADCAST_CONTACTS` (150) contacts, the profile
//! `benches/broadcast.rs` replays on the local server (`common/broadcast.rs`, `BROADCAST_SEED`):
//! through the receiver in arrival order, then the processor; no floors. Reports the processor's
//! events/s.

mod common;
#[path = "common/broadcast.rs"]
#[allow(dead_code)]
mod profile;

#[path = "../tests/contract/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use common::{percentile, setting};
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::lambda::{process_sqs_batch, receiver_router, ReceiverConfig};
use wati_ingest::ports::StateStore;
use wati_ingest::processor::Archive;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;

const SECRET: &str = "load-aws-webhook-secret-0123456789";

fn body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "eventType": if n % 2 == 0 { "templateMessageSent" } else { "sentMessageDELIVERED" },
        "id": format!("{:024x}", n / 2),
        "whatsappMessageId": format!("wamid.LOAD{:012}", n / 2),
        "waId": format!("1415555{:04}", n % 1000),
        "templateName": "order_update",
        "timestamp": (1_764_238_453 + n).to_string(),
        "text": "Your order #1039 has shipped and will arrive on Friday.",
        "type": "template",
        "owner": true,
    }))
    .expect("serialise")
}

/// Runs `work(n)` for n in 0..total with `concurrency` workers; returns sorted latencies and time.
async fn drive<F, Fut>(total: usize, concurrency: usize, work: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (work, next) = (Arc::clone(&work), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return latencies;
                }
                let sent = Instant::now();
                work(n).await;
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(latencies) = workers.join_next().await {
        all.extend(latencies.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    (all, elapsed)
}

fn row(name: &str, latencies: &[Duration], elapsed: Duration) {
    println!(
        "| {name} | {:.0}/s | {:.2} ms | {:.2} ms |",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let broadcast = std::env::var("LOAD_PROFILE").is_ok_and(|profile| profile == "broadcast");
    let concurrency = setting("LOAD_CONCURRENCY", 16);
    let processors = setting("LOAD_PROCESSOR_CONCURRENCY", if broadcast { 4 } else { 1 }).max(1);
    let contacts = setting("BROADCAST_CONTACTS", 150);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(if broadcast {
        profile::broadcast(contacts, setting("BROADCAST_SEED", 18) as u64)
            .into_iter()
            .map(|callback| callback.body)
            .collect()
    } else {
        (0..setting("LOAD_REQUESTS", 2000)).map(body).collect()
    });
    let requests = bodies.len();
    let stack = support::Stack::create().await;
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), stack.table("LedgerTable"));
    let queue_url = stack.queue_url("EventQueue");
    let queue = SqsQueue::new(stack.sqs.clone(), &queue_url);
    let (_, _) = tokio::join!(ledger.warm_up(), queue.warm_up());
    let config = ReceiverConfig {
        ledger_table: stack.table("LedgerTable"),
        queue_url: queue_url.clone(),
        secret_arn: String::new(),
        dedup_ttl_days: 7,
        max_body_bytes: 256 * 1024,
        quarantine_retention_days: 30,
    };
    let router = receiver_router(
        &config,
        SecretSet::new([SECRET]).expect("secret").into(),
        ledger,
        queue,
    );

    if broadcast {
        println!(
            "| step (broadcast to {contacts} contacts: {requests} callbacks, v1 + v2; receiver \
             concurrency {concurrency}, {processors} batches applied at once) | rate | p50 | p99 |"
        );
    } else {
        println!("| step ({requests} events, concurrency {concurrency}) | rate | p50 | p99 |");
    }
    println!("|---|---|---|---|");
    let floors = match broadcast {
        true => None,
        false => Some(floors(&stack, &queue_url, &bodies, concurrency).await),
    };

    let receiver_bodies = Arc::clone(&bodies);
    let (latencies, elapsed) = drive(requests, concurrency, move |n| {
        let (router, bodies) = (router.clone(), Arc::clone(&receiver_bodies));
        async move {
            let request = axum::http::Request::post(format!("/webhook/{SECRET}"))
                .body(axum::body::Body::from(bodies[n].clone()))
                .expect("request");
            let response = router.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
        }
    })
    .await;
    let receiver_p50 = percentile(&latencies, 0.5);
    row("receiver: request to 200", &latencies, elapsed);
    let receiver = result_fields("receiver", &latencies, elapsed);

    let processed = process(&stack, &queue_url, processors).await;
    let (applied, failed) = (processed.applied, processed.failed);
    let batches = &processed.batches;
    println!(
        "| processor: batches of 10, {processors} at once (rate incl. SQS receive/delete; latency = apply only) | {:.0}/s | {:.2} ms per batch | {:.2} ms per batch |",
        processed.per_s(),
        percentile(batches, 0.5).as_secs_f64() * 1e3,
        percentile(batches, 0.99).as_secs_f64() * 1e3
    );
    println!();
    let Some(((sequential_p50, sequential), (floor_p50, floor))) = floors else {
        println!("events applied: {applied} of {requests}; records failed: {failed}");
        // One machine-readable line for scripts (`make bench`).
        println!(
            "RESULT bench=load_aws_broadcast contacts={contacts} callbacks={requests} \
             concurrency={concurrency} processors={processors} {receiver} processor_per_s={:.1} \
             processor_s={:.3} processor_batch_p50_ms={:.3} processor_batch_p99_ms={:.3} \
             applied={applied} failed={failed}",
            processed.per_s(),
            processed.elapsed.as_secs_f64(),
            percentile(batches, 0.5).as_secs_f64() * 1e3,
            percentile(batches, 0.99).as_secs_f64() * 1e3,
        );
        return;
    };
    assert_eq!(failed, 0, "records failed");
    println!(
        "receiver p50 over the floor (both calls at once): {:.3}, over the sequential floor: \
         {:.3}; events applied: {applied}",
        receiver_p50.as_secs_f64() / floor_p50.as_secs_f64(),
        receiver_p50.as_secs_f64() / sequential_p50.as_secs_f64()
    );
    // One machine-readable line for scripts/performance-report.py (`make bench`).
    println!(
        "RESULT bench=load_aws requests={requests} concurrency={concurrency} {sequential} {floor} \
         {receiver} processor_per_s={:.1} processor_batch_p50_ms={:.3} \
         processor_batch_p99_ms={:.3} overhead_p50={:.4} overhead_concurrent_p50={:.4} \
         applied={applied}",
        processed.per_s(),
        percentile(batches, 0.5).as_secs_f64() * 1e3,
        percentile(batches, 0.99).as_secs_f64() * 1e3,
        receiver_p50.as_secs_f64() / sequential_p50.as_secs_f64(),
        receiver_p50.as_secs_f64() / floor_p50.as_secs_f64()
    );
}

/// The floors: the two calls the receiver must make, with the same clients, nothing else; one
/// after the other (the receiver before it issued them together), then at once (its floor now).
/// Each floor's p50 and its `RESULT` fields; the queue is purged after each (on moto: AWS allows
/// one purge a minute).
async fn floors(
    stack: &support::Stack,
    queue_url: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    concurrency: usize,
) -> ((Duration, String), (Duration, String)) {
    let requests = bodies.len();
    let mut floors = Vec::new();
    for (concurrently, name, label) in [
        (
            false,
            "floor",
            "bare PutItem then SendMessage (sequential floor)",
        ),
        (
            true,
            "floor_concurrent",
            "bare PutItem and SendMessage at once (floor)",
        ),
    ] {
        let (dynamodb, sqs, table, url) = (
            stack.dynamodb.clone(),
            stack.sqs.clone(),
            stack.table("LedgerTable"),
            queue_url.to_owned(),
        );
        let floor_bodies = Arc::clone(bodies);
        let (latencies, elapsed) = drive(requests, concurrency, move |n| {
            let (dynamodb, sqs, table, url, bodies) = (
                dynamodb.clone(),
                sqs.clone(),
                table.clone(),
                url.clone(),
                Arc::clone(&floor_bodies),
            );
            async move {
                let put = dynamodb
                    .put_item()
                    .table_name(table)
                    .item("pk", AttributeValue::S(format!("{name}:{n}")))
                    .item("body", AttributeValue::B(Blob::new(bodies[n].clone())))
                    .condition_expression("attribute_not_exists(pk)")
                    .send();
                let send = sqs
                    .send_message()
                    .queue_url(url)
                    .message_body(String::from_utf8_lossy(&bodies[n]).into_owned())
                    .send();
                if concurrently {
                    let (put, send) = futures_util::join!(put, send);
                    put.expect("put");
                    send.expect("send");
                } else {
                    put.await.expect("put");
                    send.await.expect("send");
                }
            }
        })
        .await;
        row(label, &latencies, elapsed);
        floors.push((
            percentile(&latencies, 0.5),
            result_fields(name, &latencies, elapsed),
        ));
        // Drop the floor's messages: each floor and the receiver start on an empty queue (moto's
        // SendMessage slows as its queue grows), and the processor sees only receiver output.
        stack
            .sqs
            .purge_queue()
            .queue_url(queue_url)
            .send()
            .await
            .expect("purge");
    }
    let concurrent = floors.pop().expect("two floors");
    (floors.pop().expect("two floors"), concurrent)
}

/// What the processor did with the queue.
struct Processed {
    applied: usize,
    /// Records the processor reported failed (left on the queue).
    failed: usize,
    /// Each batch's apply time, sorted.
    batches: Vec<Duration>,
    elapsed: Duration,
}

impl Processed {
    fn per_s(&self) -> f64 {
        self.applied as f64 / self.elapsed.as_secs_f64()
    }
}

/// Drains the queue as the Lambda event source does: `processors` pollers, each receiving up to
/// 10 messages, applying them with [`process_sqs_batch`] and deleting those applied.
async fn process(stack: &support::Stack, queue_url: &str, processors: usize) -> Processed {
    let state: Arc<dyn StateStore> = Arc::new(DynamoState::new(
        stack.dynamodb.clone(),
        stack.table("StateTable"),
    ));
    let archive = Archive::new(
        Arc::new(DynamoLedger::new(
            stack.dynamodb.clone(),
            stack.table("LedgerTable"),
        )),
        7 * 86_400,
    );
    let started = Instant::now();
    let mut pollers = tokio::task::JoinSet::new();
    for _ in 0..processors {
        let (sqs, queue_url) = (stack.sqs.clone(), queue_url.to_owned());
        let (state, archive) = (Arc::clone(&state), archive.clone());
        pollers.spawn(async move {
            let (mut applied, mut failed, mut batches) = (0, 0, Vec::new());
            loop {
                let output = sqs
                    .receive_message()
                    .queue_url(&queue_url)
                    .max_number_of_messages(10)
                    .send()
                    .await
                    .expect("receive");
                let messages = output.messages();
                if messages.is_empty() {
                    return (applied, failed, batches);
                }
                let mut event = SqsEvent::default();
                for message in messages {
                    let mut record = SqsMessage::default();
                    record.message_id = message.message_id().map(str::to_owned);
                    record.body = message.body().map(str::to_owned);
                    event.records.push(record);
                }
                let batch_started = Instant::now();
                let response = process_sqs_batch(Arc::clone(&state), archive.clone(), event)
                    .await
                    .response;
                batches.push(batch_started.elapsed());
                let failures: Vec<String> = response
                    .batch_item_failures
                    .into_iter()
                    .map(|failure| failure.item_identifier)
                    .collect();
                failed += failures.len();
                applied += messages.len() - failures.len();
                let mut delete = sqs.delete_message_batch().queue_url(&queue_url);
                for (i, message) in messages.iter().enumerate() {
                    let id = message.message_id().unwrap_or_default();
                    if failures.iter().any(|failure| failure == id) {
                        continue;
                    }
                    delete = delete.entries(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(message.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("entry"),
                    );
                }
                if failures.len() < messages.len() {
                    delete.send().await.expect("delete batch");
                }
            }
        });
    }
    let (mut applied, mut failed, mut batches) = (0, 0, Vec::new());
    while let Some(poller) = pollers.join_next().await {
        let (poller_applied, poller_failed, poller_batches) = poller.expect("poller");
        applied += poller_applied;
        failed += poller_failed;
        batches.extend(poller_batches);
    }
    let elapsed = started.elapsed();
    batches.sort_unstable();
    Processed {
        applied,
        failed,
        batches,
        elapsed,
    }
}

/// `<name>_per_s=… <name>_p50_ms=… <name>_p99_ms=…` for the RESULT line.
fn result_fields(name: &str, latencies: &[Duration], elapsed: Duration) -> String {
    format!(
        "{name}_per_s={:.1} {name}_p50_ms={:.3} {name}_p99_ms={:.3}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3
    )
}
