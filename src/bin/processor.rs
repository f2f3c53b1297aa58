//! `processor` Lambda: applies SQS batches of accepted events to the DynamoDB state table, and
//! archives in the ledger the events the receiver could not record.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use wati_ingest::lambda::{process_sqs_batch, ProcessorConfig};
use wati_ingest::ports::StateStore;
use wati_ingest::processor::Archive;
use wati_ingest::settings::dedup_ttl_seconds;
use wati_ingest::store::aws::DynamoLedger;
use wati_ingest::store::dynamo_state::DynamoState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wati_ingest::logging::init_lambda();
    let config = ProcessorConfig::from_env()?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let state = DynamoState::new(dynamodb.clone(), config.state_table)
        .with_quarantine_retention_days(config.quarantine_retention_days);
    if let Err(error) = state.warm_up().await {
        tracing::warn!(%error, "warm-up failed");
    }
    let archive = Archive::new(
        Arc::new(DynamoLedger::new(dynamodb, config.ledger_table)),
        dedup_ttl_seconds(config.dedup_ttl_days)?,
    );
    let state: Arc<dyn StateStore> = Arc::new(state);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (state, archive) = (Arc::clone(&state), archive.clone());
        async move {
            let report = process_sqs_batch(state, archive, event.payload).await;
            for line in &report.metrics {
                line.emit();
            }
            Ok::<SqsBatchResponse, Error>(report.response)
        }
    }))
    .await
}
