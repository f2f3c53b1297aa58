//! The state store on DynamoDB (table `STATE_TABLE`), written with conditional `UpdateItem`s so
//! that concurrent batches and redeliveries converge without read-modify-write.
//!
//! Items (see `infra/README.md`):
//! - message `pk = MSG#<id>, sk = MSG`: the fields of [`MessageRecord`]; each status time is set
//!   only if absent or later (`attribute_not_exists(x) OR x > :t`), so it keeps its earliest
//!   value whatever the order; ids, contact and template are set if absent. `contact` (the phone
//!   number, else the BSUID) feeds the `by_contact` index.
//! - alias `pk = ID#<whatsappMessageId or localMessageId>, sk = ID`: the message's id, written
//!   only when the message item gains that id.
//! - link `pk = LINK#<waId or bsuid>, sk = <the other>`: one contact's two names.
//! - quarantine `pk = QUARANTINE#<key>, sk = QUARANTINE`: an event that can never be applied.
//!
//! Contacts are derived at read time from their messages (`by_contact`), with the same pure
//! function as the embedded store.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::message::{Direction, Failure, MessageRecord};
use crate::ports::{QueuedEvent, StateStore, StoreError};
use crate::session::ContactView;
use crate::store::aws::{n, number, s, text, unavailable};

type Item = HashMap<String, AttributeValue>;

const CONTACT_INDEX: &str = "by_contact";

/// The status times, each merged on its own: one conditional update per time an event carries.
const TIMES: [&str; 4] = ["sent_at", "delivered_at", "read_at", "replied_at"];

#[derive(Clone, Debug)]
pub struct DynamoState {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn message_key(id: &str) -> [(&'static str, AttributeValue); 2] {
    [("pk", s(format!("MSG#{id}"))), ("sk", s("MSG"))]
}

/// The texts an event may add to a message, set only where absent.
fn static_fields(facts: &MessageRecord) -> BTreeMap<&'static str, AttributeValue> {
    let mut fields = BTreeMap::new();
    let texts = [
        ("id", &facts.id),
        ("whatsapp_message_id", &facts.whatsapp_message_id),
        ("local_message_id", &facts.local_message_id),
        ("wa_id", &facts.wa_id),
        ("bsuid", &facts.bsuid),
        ("template_name", &facts.template_name),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            fields.insert(name, s(value));
        }
    }
    if let Some(contact) = facts.contact() {
        fields.insert("contact", s(contact));
    }
    if let Some(direction) = facts.direction {
        let direction = match direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        fields.insert("direction", s(direction));
    }
    fields
}

/// One conditional update: the static fields plus at most one time (or the failure).
struct Part {
    set: Vec<String>,
    values: HashMap<String, AttributeValue>,
    condition: Option<String>,
}

impl Part {
    fn new(statics: &BTreeMap<&'static str, AttributeValue>) -> Part {
        let mut part = Part {
            set: Vec::new(),
            values: HashMap::new(),
            condition: None,
        };
        for (name, value) in statics {
            part.set
                .push(format!("{name} = if_not_exists({name}, :{name})"));
            part.values.insert(format!(":{name}"), value.clone());
        }
        part
    }

    fn with_time(mut self, name: &str, at: i64) -> Part {
        self.set.push(format!("{name} = :{name}"));
        self.values.insert(format!(":{name}"), n(at));
        // `>=`: an equal time (the v2 twin of a v1 event) still sets the fields it adds, in one write.
        self.condition = Some(format!("attribute_not_exists({name}) OR {name} >= :{name}"));
        self
    }

    fn with_failure(mut self, failure: &Failure) -> Part {
        self = self.with_time("failed_at", failure.at);
        for (name, value) in [
            ("failed_code", &failure.code),
            ("failed_detail", &failure.detail),
        ] {
            if let Some(value) = value {
                self.set.push(format!("{name} = :{name}"));
                self.values.insert(format!(":{name}"), s(value));
            }
        }
        self
    }
}

impl DynamoState {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoState {
            client,
            table: table.into(),
        }
    }

    /// Opens the HTTPS connection before the first request needs it.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.ping().await
    }

    /// Applies one part; returns the attributes the item had before for the fields it set
    /// (`UPDATED_OLD`), or the whole old item when a later time already stood (`ALL_OLD`).
    async fn update(&self, id: &str, part: Part) -> Result<(Item, bool), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(
                message_key(id)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            ))
            .update_expression(format!("SET {}", part.set.join(", ")))
            .set_expression_attribute_values(Some(part.values))
            .return_values(ReturnValue::UpdatedOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(condition) = part.condition {
            update = update.condition_expression(condition);
        }
        match update.send().await {
            Ok(output) => Ok((output.attributes().cloned().unwrap_or_default(), true)),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(old)) => {
                    Ok((old.item().cloned().unwrap_or_default(), false))
                }
                _ => Err(unavailable("update message", error)),
            },
        }
    }

    /// Writes facts to the message filed under `id`; returns the fields the item newly gained.
    async fn write_facts(
        &self,
        id: &str,
        facts: &MessageRecord,
    ) -> Result<Vec<&'static str>, StoreError> {
        let statics = static_fields(facts);
        let mut parts: Vec<Part> = Vec::new();
        let times = [
            facts.sent_at,
            facts.delivered_at,
            facts.read_at,
            facts.replied_at,
        ];
        for (name, at) in TIMES.iter().zip(times) {
            if let Some(at) = at {
                parts.push(Part::new(&statics).with_time(name, at));
            }
        }
        if let Some(failure) = &facts.failure {
            parts.push(Part::new(&statics).with_failure(failure));
        }
        if parts.is_empty() {
            parts.push(Part::new(&statics));
        }
        let mut gained = Vec::new();
        for part in parts {
            let (old, applied) = self.update(id, part).await?;
            let missing: Vec<&'static str> = statics
                .keys()
                .copied()
                .filter(|name| !old.contains_key(*name))
                .collect();
            if !applied && !missing.is_empty() {
                // An earlier time stood, but this event still brings fields the item lacks.
                self.update(id, Part::new(&statics)).await?;
            }
            for name in missing {
                if !gained.contains(&name) {
                    gained.push(name);
                }
            }
        }
        Ok(gained)
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map(|output| output.item().cloned())
            .map_err(|e| unavailable("get item", e))
    }

    /// The id a message is filed under, if any item is filed under this id or names it.
    async fn resolve(&self, id: &str) -> Result<Option<String>, StoreError> {
        if self.get_item(format!("MSG#{id}"), "MSG").await?.is_some() {
            return Ok(Some(id.to_owned()));
        }
        Ok(self
            .get_item(format!("ID#{id}"), "ID")
            .await?
            .and_then(|item| text(&item, "message")))
    }

    /// Points `alias` at `primary`; if it pointed at another item (a message first known only by
    /// this alias), folds that item's facts into `primary` and deletes it.
    /// An item filed under its own alias (no Wati id yet) gets a self-pointing alias, so that the
    /// event that finally names its Wati id finds it here and folds it.
    async fn link_alias(&self, alias: &str, primary: &str) -> Result<(), StoreError> {
        let old = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("ID#{alias}")))
            .item("sk", s("ID"))
            .item("message", s(primary))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("write alias", e))?
            .attributes()
            .and_then(|item| text(item, "message"));
        let Some(orphan) = old.filter(|old| old != primary) else {
            return Ok(());
        };
        if let Some(item) = self.get_item(format!("MSG#{orphan}"), "MSG").await? {
            self.write_facts(primary, &record_from_item(&item)).await?;
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(
                    message_key(&orphan)
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ))
                .send()
                .await
                .map_err(|e| unavailable("delete folded message", e))?;
        }
        Ok(())
    }

    async fn link_contact(&self, wa_id: &str, bsuid: &str) -> Result<(), StoreError> {
        for (from, to) in [(wa_id, bsuid), (bsuid, wa_id)] {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("LINK#{from}")))
                .item("sk", s(to))
                .send()
                .await
                .map_err(|e| unavailable("link contact names", e))?;
        }
        Ok(())
    }

    async fn messages_of(&self, contact: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CONTACT_INDEX)
                .key_condition_expression("contact = :contact")
                .expression_attribute_values(":contact", s(contact))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("query contact messages", e))?;
            items.extend(output.items().iter().cloned());
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    async fn names_of(&self, contact: &str) -> Result<Vec<String>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("LINK#{contact}")))
            .send()
            .await
            .map_err(|e| unavailable("query contact links", e))?;
        let mut names = vec![contact.to_owned()];
        names.extend(output.items().iter().filter_map(|item| text(item, "sk")));
        Ok(names)
    }
}

fn record_from_item(item: &Item) -> MessageRecord {
    MessageRecord {
        id: text(item, "id"),
        whatsapp_message_id: text(item, "whatsapp_message_id"),
        local_message_id: text(item, "local_message_id"),
        wa_id: text(item, "wa_id"),
        bsuid: text(item, "bsuid"),
        direction: text(item, "direction").map(|d| match d.as_str() {
            "inbound" => Direction::Inbound,
            _ => Direction::Outbound,
        }),
        template_name: text(item, "template_name"),
        sent_at: number(item, "sent_at"),
        delivered_at: number(item, "delivered_at"),
        read_at: number(item, "read_at"),
        replied_at: number(item, "replied_at"),
        failure: number(item, "failed_at").map(|at| Failure {
            at,
            code: text(item, "failed_code"),
            detail: text(item, "failed_detail"),
        }),
    }
}

#[async_trait]
impl StateStore for DynamoState {
    async fn apply(&self, facts: &MessageRecord) -> Result<(), StoreError> {
        // Wati's id files the message; an event without it goes where its other ids point.
        let primary = match &facts.id {
            Some(id) => id.clone(),
            None => {
                let mut found = None;
                for alias in facts.all_ids() {
                    if let Some(id) = self.resolve(alias).await? {
                        found = Some(id);
                        break;
                    }
                }
                match found.or_else(|| facts.primary_id().map(str::to_owned)) {
                    Some(id) => id,
                    None => return Ok(()),
                }
            }
        };
        let gained = self.write_facts(&primary, facts).await?;
        // Aliases and links are written once, when the message first learns the id or name.
        let aliases = [
            ("whatsapp_message_id", &facts.whatsapp_message_id),
            ("local_message_id", &facts.local_message_id),
        ];
        for (field, alias) in aliases {
            if let (true, Some(alias)) = (gained.contains(&field), alias) {
                self.link_alias(alias, &primary).await?;
            }
        }
        let names_new = gained.contains(&"wa_id") || gained.contains(&"bsuid");
        if let (true, Some(wa_id), Some(bsuid)) = (names_new, &facts.wa_id, &facts.bsuid) {
            self.link_contact(wa_id, bsuid).await?;
        }
        Ok(())
    }

    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("QUARANTINE#{}", event.key)))
            .item("sk", s("QUARANTINE"))
            .item("reason", s(reason))
            .item("received_at", n(event.received_at))
            .item("body", AttributeValue::B(Blob::new(event.body.as_bytes())))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("quarantine", e))
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let Some(primary) = self.resolve(id).await? else {
            return Ok(None);
        };
        Ok(self
            .get_item(format!("MSG#{primary}"), "MSG")
            .await?
            .map(|item| record_from_item(&item)))
    }

    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError> {
        let mut messages: BTreeMap<String, MessageRecord> = BTreeMap::new();
        for name in self.names_of(contact).await? {
            for item in self.messages_of(&name).await? {
                if let Some(pk) = text(&item, "pk") {
                    messages.insert(pk, record_from_item(&item));
                }
            }
        }
        let messages: Vec<MessageRecord> = messages.into_values().collect();
        Ok(ContactView::from_messages(contact, &messages, now))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get_item("HEALTH".into(), "HEALTH").await.map(|_| ())
    }
}
