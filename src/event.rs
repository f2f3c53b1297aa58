//! Wati payloads parsed leniently into typed events, and the idempotency key of each.
//!
//! Wati's payloads are loosely typed: `timestamp` is a string of unix seconds, `sourceType` is an
//! integer in some events and a string in others, unknown fields and event types appear. Only a
//! body that is not a JSON object with a string `eventType` is unusable; every other oddity is
//! tolerated by reading each field we need as "a string or a number, else absent".

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

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
}

impl WatiEvent {
    /// Parses a raw webhook body. Only a body that is not a JSON object with a string `eventType`
    /// is rejected; every other field is optional and read leniently.
    pub fn parse(body: &[u8]) -> Result<WatiEvent, Unusable> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Unusable::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(Unusable::NotAnObject);
        };
        let Some(Value::String(event_type)) = fields.get("eventType") else {
            return Err(Unusable::NoEventType);
        };
        Ok(WatiEvent {
            kind: EventKind::parse(event_type),
            id: text_field(&fields, "id"),
            whatsapp_message_id: text_field(&fields, "whatsappMessageId"),
            local_message_id: text_field(&fields, "localMessageId"),
            wa_id: text_field(&fields, "waId"),
            bsuid: text_field(&fields, "bsuid"),
            owner: bool_field(&fields, "owner"),
            timestamp: unix_seconds_field(&fields, "timestamp"),
            template_name: text_field(&fields, "templateName"),
            failed_code: text_field(&fields, "failedCode"),
            failed_detail: text_field(&fields, "failedDetail"),
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

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An idempotency key as logs show it: the event kind and a digest of the whole key. The key
/// itself holds the wamid, and a wamid is the customer's phone number in base64.
pub fn log_key(key: &str) -> String {
    let kind = key.split(':').next().unwrap_or_default();
    format!("{kind}:#{}", &sha256_hex(key.as_bytes())[..16])
}

/// A string, or a number rendered as one; empty strings count as absent (Wati sends `""`).
fn text_field(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn bool_field(fields: &Map<String, Value>, name: &str) -> Option<bool> {
    match fields.get(name)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// Unix seconds from a string or a number. Values that cannot be a time (negative, or past the
/// year 9999) are treated as absent rather than trusted.
fn unix_seconds_field(fields: &Map<String, Value>, name: &str) -> Option<i64> {
    const MAX_UNIX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let seconds = match fields.get(name)? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    (0..=MAX_UNIX_SECONDS).contains(&seconds).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
