//! Wati payloads parsed leniently into typed events, and the idempotency key of each.
//!
//! Wati's payloads are loosely typed: `timestamp` is a string of unix seconds, `sourceType` is an
//! integer in some events and a string in others, unknown fields and event types appear. Only a
//! body that is not a JSON object with a string `eventType` is unusable; every other oddity is
//! tolerated by reading each field we need as "a string or a number, else absent".

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use sha2::{Digest, Sha256};

use crate::channel::normalize_business_number;

/// Longest idempotency key stored as is; longer ones are hashed (DynamoDB keys stop at 2 KiB and
/// ids come from the outside world).
const MAX_PLAIN_KEY_LEN: usize = 256;

/// What an event says happened, with the `_v2` / `_bsuid` variants folded together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `message`: a message in the chat; `owner: false` means the customer wrote it.
    Message,
    /// `newContactMessageReceived`: the first message of a new contact.
    NewContactMessage,
    SessionMessageSent,
    TemplateMessageSent,
    Delivered,
    Read,
    Replied,
    TemplateMessageFailed,
    SessionMessageFailed,
    TemplateReviewed,
    TemplateQualityUpdated,
    /// Any event type we do not know (yet): accepted and archived, never dropped.
    Other(String),
}

impl EventKind {
    /// Parses an `eventType`, ignoring the `_v2` and `_bsuid` variant suffixes.
    pub fn parse(event_type: &str) -> EventKind {
        let base = event_type.strip_suffix("_bsuid").unwrap_or(event_type);
        let base = base.strip_suffix("_v2").unwrap_or(base);
        match base {
            "message" => EventKind::Message,
            "newContactMessageReceived" => EventKind::NewContactMessage,
            "sessionMessageSent" => EventKind::SessionMessageSent,
            "templateMessageSent" => EventKind::TemplateMessageSent,
            "sentMessageDELIVERED" => EventKind::Delivered,
            "sentMessageREAD" => EventKind::Read,
            "sentMessageREPLIED" => EventKind::Replied,
            "templateMessageFailed" => EventKind::TemplateMessageFailed,
            "sessionMessageFailed" => EventKind::SessionMessageFailed,
            "templateReviewed" => EventKind::TemplateReviewed,
            "templateQualityUpdated" => EventKind::TemplateQualityUpdated,
            _ => EventKind::Other(event_type.to_owned()),
        }
    }

    /// The normalised name used in idempotency keys, logs and metrics.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Message => "message",
            EventKind::NewContactMessage => "newContactMessageReceived",
            EventKind::SessionMessageSent => "sessionMessageSent",
            EventKind::TemplateMessageSent => "templateMessageSent",
            EventKind::Delivered => "sentMessageDELIVERED",
            EventKind::Read => "sentMessageREAD",
            EventKind::Replied => "sentMessageREPLIED",
            EventKind::TemplateMessageFailed => "templateMessageFailed",
            EventKind::SessionMessageFailed => "sessionMessageFailed",
            EventKind::TemplateReviewed => "templateReviewed",
            EventKind::TemplateQualityUpdated => "templateQualityUpdated",
            EventKind::Other(raw) => raw,
        }
    }

    /// The name metrics and logs show: the normalised name, or `other` for an event type we do
    /// not know, whose raw value comes from the body (each value would be a new billed custom
    /// metric, and it could carry a phone number or a forged log line).
    pub fn label(&self) -> &str {
        match self {
            EventKind::Other(_) => "other",
            known => known.name(),
        }
    }

    /// Whether the event is about one WhatsApp message (and so is keyed by its identity).
    pub fn is_message_event(&self) -> bool {
        !matches!(
            self,
            EventKind::TemplateReviewed | EventKind::TemplateQualityUpdated | EventKind::Other(_)
        )
    }
}

/// Why a body can never become an event. Such bodies are quarantined, not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error("body has no string eventType")]
    NoEventType,
}

/// One Wati callback, reduced to what the pipeline uses. The raw body is archived separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatiEvent {
    pub kind: EventKind,
    /// Wati's message record id, shared by the sent and status events of one message.
    pub id: Option<String>,
    pub whatsapp_message_id: Option<String>,
    pub local_message_id: Option<String>,
    pub wa_id: Option<String>,
    pub bsuid: Option<String>,
    /// `false`: the customer wrote it; `true`: the business did.
    pub owner: Option<bool>,
    /// Unix seconds, from the event's own `timestamp`.
    pub timestamp: Option<i64>,
    pub template_name: Option<String>,
    pub failed_code: Option<String>,
    pub failed_detail: Option<String>,
    /// Wati's `channelId`: which of the account's business numbers; `None` for the default
    /// number or when the event does not say (see [`crate::channel`]).
    pub channel_id: Option<String>,
    /// `channelPhoneNumber`, normalized ([`normalize_business_number`]).
    pub channel_phone_number: Option<String>,
}

/// The longest failure detail kept in state (Meta's details are a sentence or two); the raw body,
/// in the archive, keeps all of it.
pub const MAX_FAILED_DETAIL_CHARS: usize = 1_000;
/// Meta's template names are at most 512 characters.
pub const MAX_TEMPLATE_NAME_CHARS: usize = 512;
/// Meta's error codes are a few digits.
pub const MAX_FAILED_CODE_CHARS: usize = 64;

/// `text` if it has at most `max` characters; else its first `max - 1` and `…` (a cut that stays
/// on a character boundary, and shows that it is one).
pub fn capped(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some(_) => {
            let end = text
                .char_indices()
                .nth(max - 1)
                .map_or(text.len(), |(at, _)| at);
            format!("{}…", &text[..end])
        }
    }
}

impl WatiEvent {
    /// Parses a raw webhook body. Only a body that is not a JSON object with a string `eventType`
    /// is rejected; every other field is optional and read leniently.
    ///
    /// The body is read in one pass without building a tree: fields we use are borrowed from the
    /// body and copied once, everything else is skipped (but still checked to be JSON). A repeated
    /// field counts with its last value, as a JSON object read into a map would.
    pub fn parse(body: &[u8]) -> Result<WatiEvent, Unusable> {
        // Checked up front: skipped strings are not UTF-8-validated by serde_json, and the
        // archive stores the body as text.
        let text = std::str::from_utf8(body).map_err(|e| Unusable::NotJson(e.to_string()))?;
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<Skipped>(text) {
                Ok(_) => Unusable::NotAnObject,
                Err(e) => Unusable::NotJson(e.to_string()),
            });
        }
        let fields: Fields<'_> =
            serde_json::from_str(text).map_err(|e| Unusable::NotJson(e.to_string()))?;
        let Some(Scalar::Text(event_type)) = fields.event_type else {
            return Err(Unusable::NoEventType);
        };
        Ok(WatiEvent {
            kind: EventKind::parse(&event_type),
            id: fields.id.and_then(Scalar::into_text),
            whatsapp_message_id: fields.whatsapp_message_id.and_then(Scalar::into_text),
            local_message_id: fields.local_message_id.and_then(Scalar::into_text),
            wa_id: fields.wa_id.and_then(Scalar::into_text),
            bsuid: fields.bsuid.and_then(Scalar::into_text),
            owner: fields.owner.and_then(Scalar::into_bool),
            timestamp: fields.timestamp.and_then(Scalar::into_unix_seconds),
            template_name: fields
                .template_name
                .and_then(Scalar::into_text)
                .map(|name| capped(name, MAX_TEMPLATE_NAME_CHARS)),
            failed_code: fields
                .failed_code
                .and_then(Scalar::into_text)
                .map(|code| capped(code, MAX_FAILED_CODE_CHARS)),
            failed_detail: fields
                .failed_detail
                .and_then(Scalar::into_text)
                .map(|detail| capped(detail, MAX_FAILED_DETAIL_CHARS)),
            channel_id: fields.channel_id.and_then(Scalar::into_text),
            channel_phone_number: fields
                .channel_phone_number
                .and_then(Scalar::into_text)
                .and_then(|n| normalize_business_number(&n)),
        })
    }

    /// The message identity used in the idempotency key: Meta's id, else Wati's, else the
    /// sender's correlation id. `None` for events that are not about a message.
    pub fn message_identity(&self) -> Option<&str> {
        if !self.kind.is_message_event() {
            return None;
        }
        self.whatsapp_message_id
            .as_deref()
            .or(self.id.as_deref())
            .or(self.local_message_id.as_deref())
    }

    /// The contact this event names: the phone number when known, else the BSUID.
    pub fn contact(&self) -> Option<&str> {
        self.wa_id.as_deref().or(self.bsuid.as_deref())
    }
}

/// The idempotency key of a body: the normalised event kind and the message identity, so that the
/// v1 and v2 callbacks of one status change collapse into one event; a hash of the body when the
/// event names no message.
pub fn idempotency_key(event: &WatiEvent, body: &[u8]) -> String {
    let key = match event.message_identity() {
        Some(identity) => format!("{}:{}", event.kind.name(), identity),
        None => format!("{}:body-sha256:{}", event.kind.name(), sha256_hex(body)),
    };
    if key.len() <= MAX_PLAIN_KEY_LEN {
        key
    } else {
        format!("sha256:{}", sha256_hex(key.as_bytes()))
    }
}

/// Key under which an unusable body is quarantined: retries of the same body land on one record.
pub fn quarantine_key(body: &[u8]) -> String {
    format!("quarantine:body-sha256:{}", sha256_hex(body))
}

/// The key of another body under an existing key (a v1/v2 twin: one change, two bodies): the key
/// and a digest of the body, so each body is kept once and the same body lands on one record.
pub fn variant_key(key: &str, body: &[u8]) -> String {
    format!("{key}:variant:{}", &sha256_hex(body)[..16])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An idempotency key as logs show it: the event kind and a digest of the whole key. The key
/// itself holds the wamid, and a wamid is the customer's phone number in base64.
pub fn log_key(key: &str) -> String {
    let parsed;
    let kind = match key.split(':').next().unwrap_or_default() {
        // Keys of our own making: a hashed long key, a quarantined body, an undecodable SQS
        // record's.
        own @ ("sha256" | "quarantine" | "sqs") => own,
        // An unknown type's name comes from the body: `other`, never the raw value.
        kind => {
            parsed = EventKind::parse(kind);
            parsed.label()
        }
    };
    format!("{kind}:#{}", &sha256_hex(key.as_bytes())[..16])
}

/// A JSON value as the parser keeps it: scalars as they came (strings borrowed from the body when
/// they hold no escapes), arrays and objects only as "something else".
#[derive(Debug)]
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Integer(i64),
    /// Integers past `i64::MAX` and floats, kept as serde_json renders them.
    OtherNumber(Number),
    Bool(bool),
    Null,
    Composite,
}

impl Scalar<'_> {
    /// A string, or a number rendered as one; empty strings count as absent (Wati sends `""`).
    fn into_text(self) -> Option<String> {
        match self {
            Scalar::Text(s) if !s.is_empty() => Some(s.into_owned()),
            Scalar::Integer(n) => Some(n.to_string()),
            Scalar::OtherNumber(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn into_bool(self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(b),
            Scalar::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Scalar::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
            Scalar::Integer(n) => Some(n != 0),
            _ => None,
        }
    }

    /// Unix seconds from a string or a number. Values that cannot be a time (negative, or past
    /// the year 9999) are treated as absent rather than trusted.
    fn into_unix_seconds(self) -> Option<i64> {
        const MAX_UNIX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let seconds = match self {
            Scalar::Text(s) => s.trim().parse::<i64>().ok()?,
            Scalar::Integer(n) => n,
            _ => return None,
        };
        (0..=MAX_UNIX_SECONDS).contains(&seconds).then_some(seconds)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Scalar::OtherNumber(v.into()), Scalar::Integer))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json yields only finite floats.
        Ok(Number::from_f64(v).map_or(Scalar::Null, Scalar::OtherNumber))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Scalar::Composite)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Scalar::Composite)
    }
}

/// A value the pipeline does not read, checked as strictly as a `serde_json::Value` would be
/// (escapes, numbers, the nesting limit) so that every accepted body is one any JSON parser
/// reads, but never stored. serde's `IgnoredAny` skips more leniently and without a depth limit.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor).map(|_| Skipped)
    }
}

/// An object key, borrowed from the body unless it holds escapes (serde's `Cow` always copies).
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_str(ScalarVisitor)? {
            Scalar::Text(name) => Ok(FieldName(name)),
            _ => Err(de::Error::custom("object keys are strings")),
        }
    }
}

/// The top-level fields the pipeline reads; a field seen twice keeps its last value.
#[derive(Default)]
struct Fields<'a> {
    event_type: Option<Scalar<'a>>,
    id: Option<Scalar<'a>>,
    whatsapp_message_id: Option<Scalar<'a>>,
    local_message_id: Option<Scalar<'a>>,
    wa_id: Option<Scalar<'a>>,
    bsuid: Option<Scalar<'a>>,
    owner: Option<Scalar<'a>>,
    timestamp: Option<Scalar<'a>>,
    template_name: Option<Scalar<'a>>,
    failed_code: Option<Scalar<'a>>,
    failed_detail: Option<Scalar<'a>>,
    channel_id: Option<Scalar<'a>>,
    channel_phone_number: Option<Scalar<'a>>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(FieldName(name)) = map.next_key::<FieldName<'de>>()? {
            let slot = match name.as_ref() {
                "eventType" => &mut fields.event_type,
                "id" => &mut fields.id,
                "whatsappMessageId" => &mut fields.whatsapp_message_id,
                "localMessageId" => &mut fields.local_message_id,
                "waId" => &mut fields.wa_id,
                "bsuid" => &mut fields.bsuid,
                "owner" => &mut fields.owner,
                "timestamp" => &mut fields.timestamp,
                "templateName" => &mut fields.template_name,
                "failedCode" => &mut fields.failed_code,
                "failedDetail" => &mut fields.failed_detail,
                "channelId" => &mut fields.channel_id,
                "channelPhoneNumber" => &mut fields.channel_phone_number,
                _ => {
                    map.next_value::<Skipped>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Scalar<'de>>()?);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// The cap rule as the issue states it: at most `max` characters, a cut one ending in `…`.
    fn cut(text: String, max: usize) -> String {
        if text.chars().count() <= max {
            return text;
        }
        let mut kept: String = text.chars().take(max - 1).collect();
        kept.push('…');
        kept
    }

    /// A 200,000-character failure detail is not what state keeps (the archive keeps the body).
    #[test]
    fn long_text_fields_are_capped_on_a_character_boundary() {
        let body = |detail: &str, name: &str| {
            serde_json::json!({"eventType": "templateMessageFailed", "id": "m",
                "failedDetail": detail, "templateName": name, "failedCode": "1".repeat(100)})
            .to_string()
        };
        let long = "é".repeat(200_000);
        let event = WatiEvent::parse(body(&long, &"n".repeat(600)).as_bytes()).unwrap();
        let detail = event.failed_detail.unwrap();
        assert_eq!(detail.chars().count(), 1_000);
        assert!(detail.ends_with("é…"), "{}", &detail[detail.len() - 8..]);
        assert_eq!(event.template_name.unwrap().chars().count(), 512);
        assert_eq!(event.failed_code.unwrap().chars().count(), 64);
        let exact = "x".repeat(1_000);
        let event = WatiEvent::parse(body(&exact, "order_update").as_bytes()).unwrap();
        assert_eq!(
            event.failed_detail.as_deref(),
            Some(exact.as_str()),
            "at the cap: kept whole"
        );
        assert_eq!(event.template_name.as_deref(), Some("order_update"));
        assert_eq!(
            WatiEvent::parse(body(&long, "n").as_bytes()),
            parse_via_value(body(&long, "n").as_bytes())
        );
    }

    /// The parser as first written, over a `serde_json::Value` tree: the reference the one-pass
    /// parser must agree with on every input.
    fn parse_via_value(body: &[u8]) -> Result<WatiEvent, Unusable> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Unusable::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(Unusable::NotAnObject);
        };
        let Some(Value::String(event_type)) = fields.get("eventType") else {
            return Err(Unusable::NoEventType);
        };
        let text = |name: &str| match fields.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let owner = match fields.get("owner") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            Some(Value::Number(n)) => n.as_i64().map(|n| n != 0),
            _ => None,
        };
        let timestamp = match fields.get("timestamp") {
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        }
        .filter(|s| (0..=253_402_300_799).contains(s));
        Ok(WatiEvent {
            kind: EventKind::parse(event_type),
            id: text("id"),
            whatsapp_message_id: text("whatsappMessageId"),
            local_message_id: text("localMessageId"),
            wa_id: text("waId"),
            bsuid: text("bsuid"),
            owner,
            timestamp,
            template_name: text("templateName").map(|t| cut(t, 512)),
            failed_code: text("failedCode").map(|t| cut(t, 64)),
            failed_detail: text("failedDetail").map(|t| cut(t, 1_000)),
            channel_id: text("channelId"),
            channel_phone_number: text("channelPhoneNumber")
                .and_then(|n| normalize_business_number(&n)),
        })
    }

    /// Same event, or the same kind of rejection (serde_json's messages differ by path).
    fn same_outcome(a: &Result<WatiEvent, Unusable>, b: &Result<WatiEvent, Unusable>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(Unusable::NotJson(_)), Err(Unusable::NotJson(_))) => true,
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }

    fn parse(json: &str) -> WatiEvent {
        WatiEvent::parse(json.as_bytes()).expect("usable event")
    }

    #[test]
    fn logged_keys_keep_the_kind_and_hide_the_wamid() {
        let key = "sentMessageREAD:wamid.HBgLMTQxNTU1NTAxMDEVAgASGBQzQUIx";
        let logged = log_key(key);
        assert!(logged.starts_with("sentMessageREAD:#"), "{logged}");
        assert!(!logged.contains("HBgL"), "{logged}");
        assert_eq!(logged, log_key(key), "stable, so log lines correlate");
        assert_ne!(logged, log_key("sentMessageREAD:wamid.other"));
    }

    /// A type we do not know is logged as `other`: its name comes from the body, and could hold
    /// a phone number or a forged log line.
    #[test]
    fn logged_keys_of_unknown_types_say_other() {
        let forged = "x\n{\"level\":\"ERROR\"} 14155550101:body-sha256:00";
        let logged = log_key(forged);
        assert!(logged.starts_with("other:#"), "{logged}");
        assert!(
            !logged.contains('\n') && !logged.contains("1415"),
            "{logged}"
        );
        assert!(log_key("sha256:abcd").starts_with("sha256:#"));
        assert!(log_key("quarantine:body-sha256:ab").starts_with("quarantine:#"));
        assert!(log_key("sqs:message-id").starts_with("sqs:#"));
        assert!(log_key("message:wamid.X").starts_with("message:#"));
    }

    #[test]
    fn variants_fold_into_one_kind() {
        for (raw, kind) in [
            ("sentMessageDELIVERED", EventKind::Delivered),
            ("sentMessageDELIVERED_v2", EventKind::Delivered),
            ("sessionMessageSent_v2_bsuid", EventKind::SessionMessageSent),
            ("sessionMessageSent_bsuid", EventKind::SessionMessageSent),
            (
                "templateMessageSent_v2_bsuid",
                EventKind::TemplateMessageSent,
            ),
            ("message_bsuid", EventKind::Message),
            (
                "newContactMessageReceived_bsuid",
                EventKind::NewContactMessage,
            ),
        ] {
            assert_eq!(EventKind::parse(raw), kind, "{raw}");
        }
    }

    #[test]
    fn unknown_types_are_kept_verbatim() {
        assert_eq!(
            EventKind::parse("sentMessageSENT"),
            EventKind::Other("sentMessageSENT".into())
        );
        assert_eq!(
            EventKind::parse("paymentCaptured_v2").name(),
            "paymentCaptured_v2"
        );
    }

    #[test]
    fn unusable_bodies_are_named() {
        assert!(matches!(
            WatiEvent::parse(b"not json"),
            Err(Unusable::NotJson(_))
        ));
        assert_eq!(WatiEvent::parse(b"[1,2]"), Err(Unusable::NotAnObject));
        assert_eq!(WatiEvent::parse(b"{}"), Err(Unusable::NoEventType));
        assert_eq!(
            WatiEvent::parse(br#"{"eventType":7}"#),
            Err(Unusable::NoEventType)
        );
        assert!(WatiEvent::parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn channel_fields_are_read_leniently() {
        let channel = |fields: &str| {
            let event = parse(&format!(r#"{{"eventType":"message","id":"m"{fields}}}"#));
            (event.channel_id, event.channel_phone_number)
        };
        let some = |id: &str, phone: &str| (Some(id.to_owned()), Some(phone.to_owned()));
        assert_eq!(
            channel(r#","channelId":"c2","channelPhoneNumber":"+1 415 555 0200""#),
            some("c2", "14155550200")
        );
        assert_eq!(
            channel(r#","channelId":7,"channelPhoneNumber":14155550200"#),
            some("7", "14155550200")
        );
        for absent in [
            "",
            r#","channelId":null,"channelPhoneNumber":null"#,
            r#","channelId":"","channelPhoneNumber":"""#,
            r#","channelId":{},"channelPhoneNumber":[1]"#,
            r#","channelPhoneNumber":"  ""#,
        ] {
            assert_eq!(channel(absent), (None, None), "{absent}");
        }
    }

    #[test]
    fn odd_field_types_are_tolerated() {
        let event = parse(
            r#"{"eventType":"message","id":12345,"waId":14155550101,"timestamp":"1764238453",
                "owner":"false","sourceType":1,"data":"https://x/y.jpg","replyContextId":"",
                "text":{"weird":true},"whatsappMessageId":null,"unknown":[1]}"#,
        );
        assert_eq!(event.id.as_deref(), Some("12345"));
        assert_eq!(event.wa_id.as_deref(), Some("14155550101"));
        assert_eq!(event.owner, Some(false));
        assert_eq!(event.timestamp, Some(1_764_238_453));
        assert_eq!(event.whatsapp_message_id, None);
    }

    #[test]
    fn timestamps_out_of_range_are_absent() {
        assert_eq!(
            parse(r#"{"eventType":"x","timestamp":"-5"}"#).timestamp,
            None
        );
        assert_eq!(
            parse(r#"{"eventType":"x","timestamp":"99999999999999"}"#).timestamp,
            None
        );
        assert_eq!(
            parse(r#"{"eventType":"x","timestamp":"soon"}"#).timestamp,
            None
        );
        assert_eq!(
            parse(r#"{"eventType":"x","timestamp":1764238453}"#).timestamp,
            Some(1764238453)
        );
        // Wati's own doc samples hold truncated values; they are still numbers.
        assert_eq!(
            parse(r#"{"eventType":"x","timestamp":"17651326"}"#).timestamp,
            Some(17651326)
        );
    }

    #[test]
    fn v1_and_v2_of_one_status_share_a_key() {
        let v1 = br#"{"eventType":"sentMessageREAD","id":"a1","whatsappMessageId":"wamid.X","timestamp":"5"}"#;
        let v2 = br#"{"eventType":"sentMessageREAD_v2","id":"a1","whatsappMessageId":"wamid.X","localMessageId":"l1","timestamp":"5"}"#;
        let key = |b: &[u8]| idempotency_key(&WatiEvent::parse(b).unwrap(), b);
        assert_eq!(key(v1), key(v2));
        assert_eq!(key(v1), "sentMessageREAD:wamid.X");
    }

    #[test]
    fn identity_falls_back_from_wamid_to_id_to_local_id() {
        let key = |b: &[u8]| idempotency_key(&WatiEvent::parse(b).unwrap(), b);
        assert_eq!(
            key(br#"{"eventType":"sentMessageDELIVERED","id":"a1"}"#),
            "sentMessageDELIVERED:a1"
        );
        assert_eq!(
            key(br#"{"eventType":"templateMessageFailed","localMessageId":"l9"}"#),
            "templateMessageFailed:l9"
        );
    }

    #[test]
    fn different_statuses_of_one_message_have_different_keys() {
        let key = |b: &[u8]| idempotency_key(&WatiEvent::parse(b).unwrap(), b);
        assert_ne!(
            key(br#"{"eventType":"sentMessageREAD","id":"a1"}"#),
            key(br#"{"eventType":"sentMessageDELIVERED","id":"a1"}"#)
        );
    }

    #[test]
    fn events_without_identity_are_keyed_by_body() {
        let a = br#"{"eventType":"templateReviewed","newTemplateStatus":2}"#;
        let b = br#"{"eventType":"templateReviewed","newTemplateStatus":3}"#;
        let key = |b: &[u8]| idempotency_key(&WatiEvent::parse(b).unwrap(), b);
        assert!(key(a).starts_with("templateReviewed:body-sha256:"));
        assert_ne!(key(a), key(b));
        assert_eq!(key(a), key(a));
        // Template events carry template ids, not message ids: two reviews must not collide.
        let c = br#"{"eventType":"templateReviewed","id":"t1","newTemplateStatus":2}"#;
        let d = br#"{"eventType":"templateReviewed","id":"t1","newTemplateStatus":3}"#;
        assert_ne!(key(c), key(d));
    }

    #[test]
    fn huge_identities_give_bounded_keys() {
        let id = "x".repeat(10_000);
        let body = format!(r#"{{"eventType":"sentMessageREAD","id":"{id}"}}"#);
        let key = idempotency_key(&WatiEvent::parse(body.as_bytes()).unwrap(), body.as_bytes());
        assert!(key.len() <= MAX_PLAIN_KEY_LEN, "{}", key.len());
    }

    #[test]
    fn every_fixture_parses_as_the_reference_parser_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            let (fast, reference) = (WatiEvent::parse(&body), parse_via_value(&body));
            assert!(reference.is_ok());
            assert_eq!(fast, reference);
            seen += 1;
        }
        assert!(seen >= 10, "{seen} fixtures");
    }

    #[test]
    fn odd_but_valid_json_parses_as_the_reference_parser_does() {
        for body in [
            r#"{"eventType":"message","id":"a","id":"b"}"#,
            r#"{"eventType":"message","id":"a","id":null}"#,
            r#"{"eventType":"x","eventType":"sentMessageREAD","id":"a"}"#,
            r#"{"event\u0054ype":"sentMessageREAD","\u0069d":"a\n\u00e9"}"#,
            r#"{"eventType":"message","id":18446744073709551615,"waId":-1.5e3,"timestamp":1e3}"#,
            r#"{"eventType":"message","owner":2,"timestamp":" 17 "}"#,
            r#"{"eventType":"message","owner":18446744073709551615}"#,
            r#"{"eventType":"message","waId":{"a":[1,{"b":"\ud83d\ude00"}]},"id":[]}"#,
            r#"  {"eventType":""}  "#,
            r#"{"eventType":"message"} x"#,
            r#"{"eventType":"message","id":"\ud800"}"#,
            r#"{"eventType":"message","x":"cut \ud83d"}"#,
            r#"{"eventType":"message","x":{"\udc00":1}}"#,
            "{\"eventType\":\"message\",\"x\":\"\u{1}\"}",
            r#"{"eventType":"message","#,
            r#"["eventType"]"#,
            r#""eventType""#,
            "null",
            "",
            "  ",
        ] {
            let (fast, reference) = (
                WatiEvent::parse(body.as_bytes()),
                parse_via_value(body.as_bytes()),
            );
            assert!(
                same_outcome(&fast, &reference),
                "{body}: {fast:?} vs {reference:?}"
            );
        }
        // Invalid UTF-8 inside a field we skip: still not JSON, as serde_json's tree parser says.
        let body = b"{\"eventType\":\"message\",\"text\":\"\xff\"}";
        assert!(matches!(WatiEvent::parse(body), Err(Unusable::NotJson(_))));
        assert!(matches!(parse_via_value(body), Err(Unusable::NotJson(_))));
    }

    proptest! {
        /// No input makes the parser panic, and a usable result always has a non-empty key.
        #[test]
        fn parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(event) = WatiEvent::parse(&body) {
                prop_assert!(!idempotency_key(&event, &body).is_empty());
            }
        }

        /// Any JSON object with a string eventType is usable, whatever else it holds.
        #[test]
        fn any_object_with_event_type_is_usable(
            event_type in "[a-zA-Z_]{1,30}",
            extra in proptest::collection::hash_map("[a-zA-Z]{1,12}", any_json(), 0..8),
        ) {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            object.insert("eventType".into(), Value::String(event_type));
            let body = serde_json::to_vec(&Value::Object(object)).unwrap();
            prop_assert!(WatiEvent::parse(&body).is_ok());
        }
    }

    proptest! {
        /// The one-pass parser and the tree parser agree on any bytes...
        #[test]
        fn one_pass_parser_agrees_with_the_tree_parser_on_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (fast, reference) = (WatiEvent::parse(&body), parse_via_value(&body));
            prop_assert!(same_outcome(&fast, &reference), "{:?} vs {:?}", fast, reference);
        }

        /// ...and on objects made of the fields it reads, with values of every JSON type,
        /// repeated fields included (written as text, since a map cannot hold a key twice).
        #[test]
        fn one_pass_parser_agrees_with_the_tree_parser_on_objects(
            entries in proptest::collection::vec(
                (prop_oneof![
                    Just("eventType"), Just("id"), Just("whatsappMessageId"),
                    Just("localMessageId"), Just("waId"), Just("bsuid"), Just("owner"),
                    Just("timestamp"), Just("templateName"), Just("failedCode"),
                    Just("failedDetail"), Just("text"), Just("sourceType"),
                ], prop_oneof![
                    any_json(),
                    "(true|false|TRUE|[0-9 -]{1,12})".prop_map(Value::String),
                    any::<u64>().prop_map(|n| Value::Number(n.into())),
                    any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                    Just(Value::String("sentMessageREAD_v2".into())),
                ]),
                0..14,
            ),
        ) {
            let members: Vec<String> = entries
                .iter()
                .map(|(name, value)| format!("{}:{}", Value::from(*name), value))
                .collect();
            let body = format!("{{{}}}", members.join(","));
            let (fast, reference) = (WatiEvent::parse(body.as_bytes()), parse_via_value(body.as_bytes()));
            prop_assert!(same_outcome(&fast, &reference), "{}: {:?} vs {:?}", body, fast, reference);
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::hash_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
