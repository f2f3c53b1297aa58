//! Adapters that implement the [`crate::ports`] traits.

pub mod aws;
pub mod dynamo_state;
pub mod embedded;
pub mod sqs_envelope;
