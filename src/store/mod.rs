//! Adapters that implement the [`crate::ports`] traits.

pub mod aws;
pub mod aws_erasure;
pub mod aws_operator;
pub mod aws_secrets;
pub mod dynamo_state;
pub mod embedded;
pub mod sqs_envelope;
