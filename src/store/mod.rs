//! Adapters that implement the [`crate::ports`] traits.

pub mod aws;
pub mod embedded;
