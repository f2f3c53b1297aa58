//! Stream records as message items: the Lambda event's attribute values converted to the SDK's
//! (what [`item_from_attributes`] reads), and which records the notifier handles.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::changes::{item_changes, FactChange};
use crate::message_items::MessageItem;
use crate::store::aws::text;
use crate::store::dynamo_state::item_from_attributes;

/// One attribute value of a Lambda stream event as the DynamoDB SDK's (what
/// [`item_from_attributes`] reads).
pub fn sdk_attribute(value: &serde_dynamo::AttributeValue) -> AttributeValue {
    use serde_dynamo::AttributeValue as Lambda;
    match value {
        Lambda::N(number) => AttributeValue::N(number.clone()),
        Lambda::S(text) => AttributeValue::S(text.clone()),
        Lambda::Bool(b) => AttributeValue::Bool(*b),
        Lambda::B(bytes) => AttributeValue::B(Blob::new(bytes.clone())),
        Lambda::Null(null) => AttributeValue::Null(*null),
        Lambda::M(map) => AttributeValue::M(sdk_item(map)),
        Lambda::L(list) => AttributeValue::L(list.iter().map(sdk_attribute).collect()),
        Lambda::Ss(set) => AttributeValue::Ss(set.clone()),
        Lambda::Ns(set) => AttributeValue::Ns(set.clone()),
        Lambda::Bs(set) => AttributeValue::Bs(set.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

/// A whole image (or key) of a stream record as the DynamoDB SDK's item.
pub fn sdk_item(
    item: &HashMap<String, serde_dynamo::AttributeValue>,
) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(name, value)| (name.clone(), sdk_attribute(value)))
        .collect()
}

/// What a stream record is to the notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChange {
    /// A write of the message item under `after.key`: the item before (`None`: it was created)
    /// and after.
    Message {
        before: Option<Box<MessageItem>>,
        after: Box<MessageItem>,
        /// The correlation id the write left on the item (`caused_by`), for the documents.
        caused_by: Option<String>,
    },
    /// Not a message item's write, or nothing to compare: acknowledged without a document.
    Ignored(&'static str),
}

impl StreamChange {
    /// The facts the write changed (none for an ignored record).
    pub fn changes(&self) -> Vec<FactChange> {
        match self {
            StreamChange::Message { before, after, .. } => {
                item_changes(before.as_ref().map(|b| &b.record), &after.record)
            }
            StreamChange::Ignored(_) => Vec::new(),
        }
    }
}

/// Reads a stream record: only an `INSERT` or `MODIFY` of a message item, with its new image,
/// is a message change.
pub fn classify(record: &EventRecord) -> StreamChange {
    if record.event_name == "REMOVE" {
        return StreamChange::Ignored("remove");
    }
    if record.change.new_image.is_empty() {
        return StreamChange::Ignored("no new image");
    }
    let new = sdk_item(&record.change.new_image);
    let keys = if record.change.keys.is_empty() {
        new.clone()
    } else {
        sdk_item(&record.change.keys)
    };
    let Some(pk) = text(&keys, "pk").or_else(|| text(&new, "pk")) else {
        return StreamChange::Ignored("no key");
    };
    let sk = text(&keys, "sk").or_else(|| text(&new, "sk"));
    let Some(key) = pk
        .strip_prefix("MSG#")
        .filter(|_| sk.as_deref() == Some("MSG"))
    else {
        return StreamChange::Ignored("not a message item");
    };
    let before = (!record.change.old_image.is_empty()).then(|| {
        Box::new(item_from_attributes(
            key.to_owned(),
            &sdk_item(&record.change.old_image),
        ))
    });
    StreamChange::Message {
        before,
        after: Box::new(item_from_attributes(key.to_owned(), &new)),
        caused_by: text(&new, "caused_by"),
    }
}
