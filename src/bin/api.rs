//! `api` Lambda: the read API (`/v1/messages`, `/v1/contacts`, `/healthz`) over DynamoDB.
//! Its own function so that the receiver needs no read access to state.

use wati_ingest::lambda::{managed_credentials, read_api_router, ReadApiConfig};
use wati_ingest::secrets::{Credential, RefreshPolicy};
use wati_ingest::store::dynamo_state::DynamoState;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    wati_ingest::logging::init_lambda();
    let config = ReadApiConfig::from_env()?;
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let state = DynamoState::new(aws_sdk_dynamodb::Client::new(&aws), &config.state_table);
    let (tokens, ready) = tokio::join!(
        managed_credentials(
            aws_sdk_secretsmanager::Client::new(&aws),
            &config.secret_arn,
            Credential::ApiToken,
            RefreshPolicy::default()
        ),
        state.warm_up()
    );
    if let Err(error) = ready {
        tracing::warn!(%error, "warm-up failed");
    }
    lambda_http::run(read_api_router(tokens?, state)).await
}
