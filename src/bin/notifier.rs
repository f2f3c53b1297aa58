//! `notifier` Lambda: the state table's stream (DynamoDB Streams, NEW_AND_OLD_IMAGES) in, change
//! documents out on the EventBridge bus `CHANGE_BUS_NAME`; partial batch failures name the first
//! record not fully published (`ReportBatchItemFailures`).

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use wati_ingest::notifier::{handle_stream_batch, EventBridgeBus, NotifierConfig, PublishSettings};
use wati_ingest::store::dynamo_state::DynamoState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wati_ingest::logging::init_lambda();
    let config = NotifierConfig::from_env()?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let state = DynamoState::new(aws_sdk_dynamodb::Client::new(&aws), config.state_table);
    if let Err(error) = state.warm_up().await {
        tracing::warn!(%error, "warm-up failed");
    }
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), config.bus_name);
    let settings = PublishSettings {
        window_lead_seconds: config.window_lead_seconds,
        ..PublishSettings::default()
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| {
        let (state, bus, settings) = (&state, &bus, &settings);
        async move {
            let now = wati_ingest::time::now_unix();
            let report = handle_stream_batch(state, bus, event.payload, settings, now).await;
            report.metrics.emit();
            Ok::<DynamoDbEventResponse, Error>(report.response)
        }
    }))
    .await
}
