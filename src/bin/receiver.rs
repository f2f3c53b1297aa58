//! `receiver` Lambda: authenticate, record in the DynamoDB ledger, enqueue to SQS, answer Wati.

use wati_ingest::lambda::{managed_credentials, receiver_router, ReceiverConfig};
use wati_ingest::secrets::{Credential, RefreshPolicy};
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    wati_ingest::logging::init_lambda();
    let config = ReceiverConfig::from_env()?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), &config.ledger_table);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), &config.queue_url);
    // Open both TLS connections during init, not on Wati's first request, while the secret is
    // read. A failure to warm up is not fatal (the request path has its own fallbacks); one to
    // read the secret is: without it every webhook would be refused.
    let (secrets, ledger_ready, queue_ready) = tokio::join!(
        managed_credentials(
            aws_sdk_secretsmanager::Client::new(&aws),
            &config.secret_arn,
            Credential::WebhookSecret,
            RefreshPolicy::default()
        ),
        ledger.warm_up(),
        queue.warm_up()
    );
    let secrets = secrets?;
    for (what, ready) in [("ledger", ledger_ready), ("queue", queue_ready)] {
        if let Err(error) = ready {
            tracing::warn!(what, %error, "warm-up failed");
        }
    }
    lambda_http::run(receiver_router(&config, secrets, ledger, queue)).await
}
