//! Items read, counted on the wire: an SDK interceptor that adds up the items DynamoDB answers
//! with (`Items` of a Query or Scan, `Item` of a GetItem, every table's `Responses` of a
//! BatchGetItem): what a read is billed for. Included by path (`tests/contract/contact_reads.rs`,
//! `benches/contact_reads.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct ItemsRead(Arc<AtomicUsize>);

impl ItemsRead {
    /// The items counted since the last take.
    pub fn take(&self) -> usize {
        self.0.swap(0, Ordering::Relaxed)
    }
}

impl Intercept for ItemsRead {
    fn name(&self) -> &'static str {
        "items read"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let body: Value = context
            .response()
            .and_then(|r| r.body().bytes())
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        let batch: usize = body["Responses"].as_object().map_or(0, |tables| {
            tables
                .values()
                .filter_map(Value::as_array)
                .map(Vec::len)
                .sum()
        });
        let items = body["Items"].as_array().map_or(0, Vec::len)
            + usize::from(body["Item"].is_object())
            + batch;
        self.0.fetch_add(items, Ordering::Relaxed);
        Ok(())
    }
}
