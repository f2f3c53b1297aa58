//! `sweeper` Lambda (scheduled): re-sends events whose enqueue failed after the ledger took them.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use wati_ingest::lambda::ConfigError;
use wati_ingest::metrics::{MetricLine, Unit};
use wati_ingest::receiver::sweep;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};

/// Marks handled per invocation; the schedule runs it again for the rest.
const SWEEP_LIMIT: u32 = 500;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let var = |name: &'static str| std::env::var(name).map_err(|_| ConfigError::Missing(name));
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), var("LEDGER_TABLE")?);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), var("QUEUE_URL")?);
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| {
        let (ledger, queue) = (ledger.clone(), queue.clone());
        async move {
            let redriven = sweep(&ledger, &queue, SWEEP_LIMIT).await?;
            tracing::info!(redriven, "sweep done");
            MetricLine::new("sweeper")
                .metric("Redriven", Unit::Count, redriven as f64)
                .emit();
            Ok::<Value, Error>(json!({ "redriven": redriven }))
        }
    }))
    .await
}
