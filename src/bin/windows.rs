//! `windows` Lambda (every minute): announces the customer-service windows that are closing or
//! closed (`contact.window_closing`, `contact.window_closed`) from the state table's sparse
//! `by_next_due` index, on the EventBridge bus `CHANGE_BUS_NAME` ([`wati_ingest::windows`]).
//! Anything not announced or not marked is tried again next minute; a run with failures fails,
//! so the function's Errors alarm sees it.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use wati_ingest::notifier::{EventBridgeBus, NotifierConfig, PublishSettings};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::windows::announce_due_windows;

#[tokio::main]
async fn main() -> Result<(), Error> {
    wati_ingest::logging::init_lambda();
    let config = NotifierConfig::from_env()?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let state = DynamoState::new(aws_sdk_dynamodb::Client::new(&aws), config.state_table);
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), config.bus_name);
    let lead = config.window_lead_seconds;
    let settings = PublishSettings {
        window_lead_seconds: lead,
        ..PublishSettings::default()
    };
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| {
        let (state, bus, settings) = (&state, &bus, &settings);
        async move {
            let now = wati_ingest::time::now_unix();
            let report = announce_due_windows(state, bus, settings, now, lead).await;
            report.metrics.emit();
            tracing::info!(
                due = report.due,
                announced = report.announced,
                moved = report.moved,
                failures = report.failures,
                "windows done"
            );
            if report.failures > 0 {
                return Err(Error::from(format!(
                    "{} window failures (tried again next minute)",
                    report.failures
                )));
            }
            Ok::<Value, Error>(json!({"due": report.due, "announced": report.announced}))
        }
    }))
    .await
}
