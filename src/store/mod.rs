//! Adapters that implement the [`crate::ports`] traits.

pub mod embedded;
