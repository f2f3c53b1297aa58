//! `sweeper` Lambda (scheduled): re-sends events whose enqueue failed after the ledger took them,
//! page after page of marks until a margin before the invocation's timeout, and emits
//! `Redriven`, `RedriveFailed` and `OldestMarkAge` (see `docs/runbook.md`).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use wati_ingest::lambda::{sweep_metrics, sweep_time, sweeper_budget, ConfigError};
use wati_ingest::receiver::{sweep_within, SweepReport};
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::time::now_unix;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wati_ingest::logging::init_lambda();
    let var = |name: &'static str| std::env::var(name).map_err(|_| ConfigError::Missing(name));
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), var("LEDGER_TABLE")?);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), var("QUEUE_URL")?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (ledger, queue) = (ledger.clone(), queue.clone());
        async move {
            let budget = sweeper_budget(sweep_time(now_ms(), event.context.deadline));
            let outcome = sweep_within(&ledger, &queue, &budget).await;
            let report: &SweepReport = match &outcome {
                Ok(report) => report,
                Err(error) => &error.partial,
            };
            tracing::info!(
                redriven = report.redriven,
                failed = report.failed,
                oldest_mark = ?report.oldest_mark,
                stopped = ?report.stopped,
                "sweep done"
            );
            sweep_metrics(report, now_unix()).emit();
            // A listing failure fails the invocation: the Lambda's Errors alarm sees it.
            let report = outcome?;
            Ok::<Value, Error>(json!({
                "redriven": report.redriven,
                "failed": report.failed,
            }))
        }
    }))
    .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
