//! The managed secret's source on AWS: `GetSecretValue` on the one secret named by `SECRET_ARN`
//! (the only Secrets Manager call, and the only secret, the template grants).

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;

use crate::secrets::{SecretFetchError, SecretFetcher};

pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerSource {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: &str) -> Self {
        SecretsManagerSource {
            client,
            secret_id: secret_id.to_owned(),
        }
    }
}

#[async_trait]
impl SecretFetcher for SecretsManagerSource {
    /// The secret's `AWSCURRENT` version as text.
    async fn fetch(&self) -> Result<String, SecretFetchError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            // Code and message only: the SDK's Display says "service error", and its Debug could
            // carry more of the exchange than a log should.
            .map_err(|error| {
                SecretFetchError(match (error.code(), error.message()) {
                    (Some(code), Some(message)) => format!("GetSecretValue: {code}: {message}"),
                    (Some(code), None) => format!("GetSecretValue: {code}"),
                    _ => format!("GetSecretValue: {}", describe_transport(&error)),
                })
            })?;
        output.secret_string.ok_or_else(|| {
            SecretFetchError("GetSecretValue: the secret holds binary, not a JSON string".into())
        })
    }
}

/// A failure with no service error (timeout, connection refused): its kind, without the request.
fn describe_transport<E, R>(error: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String {
    use aws_sdk_secretsmanager::error::SdkError;
    match error {
        SdkError::ConstructionFailure(_) => "the request could not be built".into(),
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timed out".into(),
        SdkError::DispatchFailure(failure) if failure.is_io() => "connection failed".into(),
        SdkError::DispatchFailure(_) => "the request could not be sent".into(),
        SdkError::ResponseError(_) => "the response could not be read".into(),
        SdkError::ServiceError(_) => "service error".into(),
        _ => "unknown failure".into(),
    }
}
