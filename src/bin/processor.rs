//! `processor` Lambda: applies SQS batches of accepted events to the DynamoDB state table.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use wati_ingest::lambda::{process_sqs_batch, ConfigError};
use wati_ingest::ports::StateStore;
use wati_ingest::store::dynamo_state::DynamoState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table = std::env::var("STATE_TABLE").map_err(|_| ConfigError::Missing("STATE_TABLE"))?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let state = DynamoState::new(aws_sdk_dynamodb::Client::new(&aws), table);
    if let Err(error) = state.warm_up().await {
        tracing::warn!(%error, "warm-up failed");
    }
    let state: Arc<dyn StateStore> = Arc::new(state);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let state = Arc::clone(&state);
        async move {
            let report = process_sqs_batch(state, event.payload).await;
            for line in &report.metrics {
                line.emit();
            }
            Ok::<SqsBatchResponse, Error>(report.response)
        }
    }))
    .await
}
