//! The SQS message body of a queued event: JSON `{"key","received_at","body"}`, written so that
//! SQS takes it whatever the body holds.
//!
//! SQS refuses a message holding any character outside `#x9 | #xA | #xD | #x20–#xD7FF |
//! #xE000–#xFFFD | #x10000–#x10FFFF` (XML 1.0's characters). A Wati body is JSON, and JSON may
//! carry U+FFFE and U+FFFF raw; serde_json escapes control characters but not those two. Here
//! every character SQS would refuse is written as a JSON `\uXXXX` escape, which any JSON reader
//! (and [`decode_queued`]) turns back into the same character.
//!
//! Size: SQS takes at most [`SQS_MAX_MESSAGE_BYTES`] per message and per `SendMessageBatch` (the
//! template's queues allow that full 1 MiB). Escaping at most doubles a body that is valid JSON,
//! which is all the receiver enqueues: `"` and `\` become two bytes, the whitespace `\t \n \r`
//! two, U+FFFE/U+FFFF six for their three; other control characters cannot appear raw in JSON.
//! A key is at most 281 bytes (256, plus `:variant:` and 16 hex digits), 6 bytes a byte at worst.
//! So a webhook of the default `MAX_BODY_BYTES` (262,144) makes at most
//! `2 × 262,144 + 6 × 281 + 74` = 526,048 bytes ([`envelope_bound`]), about half of what SQS takes. An
//! envelope over the limit (only for a body that is not JSON: the receiver on AWS refuses a
//! `MAX_BODY_BYTES` over [`MAX_SENDABLE_BODY_BYTES`], 523,408) is refused here with
//! [`EnvelopeError::TooLarge`] and never reaches SQS.

use std::fmt::Write as _;

use crate::event::log_key;
use crate::ports::QueuedEvent;

/// The largest message, and the largest `SendMessageBatch` request payload, SQS accepts.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// The longest key the receiver makes: 256 bytes (longer ones are hashed), plus `:variant:` and
/// 16 hex digits for the variant of a duplicate.
pub const MAX_KEY_BYTES: usize = 256 + ":variant:".len() + 16;

/// The largest webhook body (valid JSON) whose envelope always fits in one SQS message: the
/// receiver refuses a larger `MAX_BODY_BYTES` on AWS.
pub const MAX_SENDABLE_BODY_BYTES: usize =
    (SQS_MAX_MESSAGE_BYTES - 6 * MAX_KEY_BYTES - ENVELOPE_OVERHEAD_BYTES) / 2;

/// The envelope without its key and body:
/// `{"key":"","received_at":<i64>,"body":"","unarchived":true}`, with the longest `received_at`
/// (`-9223372036854775808`).
pub const ENVELOPE_OVERHEAD_BYTES: usize = 74;

/// Whether SQS accepts `c` in a message body (the allowed set in this module's doc).
pub fn sqs_allows(c: char) -> bool {
    matches!(c,
        '\u{9}' | '\u{A}' | '\u{D}'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// `key` is the log form of the event's key (it may hold a phone number).
    #[error("the SQS message for {key} would be {bytes} bytes; SQS takes at most {SQS_MAX_MESSAGE_BYTES}")]
    TooLarge { key: String, bytes: usize },
}

/// The SQS message body for `event`: only characters SQS accepts, and [`decode_queued`] gives
/// `event` back exactly.
pub fn encode_queued(event: &QueuedEvent) -> Result<String, EnvelopeError> {
    let mut envelope =
        String::with_capacity(ENVELOPE_OVERHEAD_BYTES + event.key.len() + event.body.len() + 16);
    envelope.push_str("{\"key\":");
    push_json_string(&mut envelope, &event.key);
    // Writing to a String cannot fail.
    let _ = write!(envelope, ",\"received_at\":{},\"body\":", event.received_at);
    push_json_string(&mut envelope, &event.body);
    if event.unarchived {
        envelope.push_str(",\"unarchived\":true");
    }
    envelope.push('}');
    if envelope.len() > SQS_MAX_MESSAGE_BYTES {
        return Err(EnvelopeError::TooLarge {
            key: log_key(&event.key),
            bytes: envelope.len(),
        });
    }
    Ok(envelope)
}

/// Decodes an SQS message body written by [`encode_queued`] (or by plain serde_json, as older
/// releases wrote it).
pub fn decode_queued(body: &str) -> Result<QueuedEvent, serde_json::Error> {
    serde_json::from_str(body)
}

/// The most bytes [`encode_queued`] can write for a body of `body_bytes` that is valid JSON and a
/// key of `key_bytes` (see the module doc).
pub const fn envelope_bound(body_bytes: usize, key_bytes: usize) -> usize {
    2 * body_bytes + 6 * key_bytes + ENVELOPE_OVERHEAD_BYTES
}

/// `text` as a JSON string literal holding only characters SQS accepts.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // JSON wants every other control character escaped; SQS wants U+FFFE, U+FFFF escaped.
            // (A Rust string holds no lone surrogate, so nothing else is refused.)
            c if c < '\u{20}' || !sqs_allows(c) => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// SQS's allowed set, written from the XML 1.0 `Char` production by listing its boundaries
    /// rather than its ranges: each boundary code point and its neighbours, with the verdict the
    /// specification gives them.
    #[test]
    fn the_allowed_set_is_the_xml_char_production() {
        let verdicts: &[(u32, bool)] = &[
            (0x0, false),
            (0x1, false),
            (0x8, false),
            (0x9, true),
            (0xA, true),
            (0xB, false),
            (0xC, false),
            (0xD, true),
            (0xE, false),
            (0x1F, false),
            (0x20, true),
            (0x7F, true),
            (0xD7FF, true),
            (0xE000, true),
            (0xFFFD, true),
            (0xFFFE, false),
            (0xFFFF, false),
            (0x10000, true),
            (0x1F600, true),
            (0x10FFFF, true),
        ];
        for &(code, allowed) in verdicts {
            let c = char::from_u32(code).expect("a scalar value");
            assert_eq!(sqs_allows(c), allowed, "U+{code:04X}");
        }
        // Every code point below U+0020 but the three whitespace characters is refused.
        let allowed_controls: Vec<u32> = (0..0x20u32)
            .filter(|&code| sqs_allows(char::from_u32(code).unwrap()))
            .collect();
        assert_eq!(allowed_controls, vec![0x9, 0xA, 0xD]);
        // Past the control characters, only U+FFFE and U+FFFF are refused among the scalar values.
        let refused: Vec<u32> = (0x20..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| !sqs_allows(c))
            .map(u32::from)
            .collect();
        assert_eq!(refused, vec![0xFFFE, 0xFFFF]);
    }

    /// Characters to build hostile strings from: every boundary of the allowed set, JSON's
    /// special characters, control characters, the edges of the surrogate range, astral ones.
    fn hostile_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => any::<char>(),
            2 => (0u32..0x20).prop_map(|code| char::from_u32(code).unwrap()),
            2 => prop::sample::select(vec![
                '\u{FFFE}', '\u{FFFF}', '\u{FFFD}', '\u{D7FF}', '\u{E000}', '\u{10000}',
                '\u{10FFFF}', '\u{1F600}', '"', '\\', '/', '\u{7F}', '\u{2028}', '\u{2029}',
                '\u{FEFF}', '\u{0}',
            ]),
        ]
    }

    fn hostile_string(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(hostile_char(), 0..max).prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever the key and body, the envelope holds only characters SQS accepts, and
        /// decodes to the very same event.
        #[test]
        fn any_event_is_sent_in_sqs_characters_and_decoded_exactly(
            key in hostile_string(40),
            body in hostile_string(200),
            received_at in any::<i64>(),
        ) {
            let event = QueuedEvent { key, received_at, body, unarchived: received_at % 2 == 0 };
            let envelope = encode_queued(&event).expect("small events fit");
            if let Some(refused) = envelope.chars().find(|&c| !sqs_allows(c)) {
                prop_assert!(false, "U+{:04X} in the envelope", u32::from(refused));
            }
            prop_assert_eq!(&decode_queued(&envelope).expect("decodes"), &event);
            prop_assert!(
                envelope.len() <= ENVELOPE_OVERHEAD_BYTES + 6 * (event.key.len() + event.body.len())
            );
        }

        /// A body that is JSON (all the receiver enqueues) at most doubles in the envelope.
        #[test]
        fn a_json_body_at_most_doubles(texts in prop::collection::vec(hostile_string(30), 0..8)) {
            let body = serde_json::to_string(&serde_json::json!({
                "eventType": "message",
                "texts": texts,
            }))
            .unwrap();
            let event = QueuedEvent { key: String::new(), received_at: i64::MIN, body, unarchived: true };
            let envelope = encode_queued(&event).unwrap();
            prop_assert!(envelope.len() <= envelope_bound(event.body.len(), 0));
        }
    }

    /// The envelope format stays the one deployed processors read: a JSON object of three
    /// fields, with raw UTF-8 where SQS allows it.
    #[test]
    fn the_envelope_is_the_documented_json() {
        let event = QueuedEvent {
            key: "message:wamid.X".into(),
            received_at: 1_764_238_453,
            body: "{\"text\":\"ü\u{FFFF}\u{1F600}\"}\n".into(),
            unarchived: false,
        };
        assert_eq!(
            encode_queued(&event).unwrap(),
            r#"{"key":"message:wamid.X","received_at":1764238453,"body":"{\"text\":\"ü\uffff😀\"}\n"}"#
        );
        let older = serde_json::to_string(&event).unwrap();
        assert_eq!(
            decode_queued(&older).unwrap(),
            event,
            "older messages still decode"
        );
    }

    /// The largest webhook the receiver takes by default, built to grow the most, with the
    /// longest key grown the most, fits in one SQS message; the bound is exact for it.
    #[test]
    fn the_largest_default_webhook_fits_in_one_message() {
        let max_body = crate::http::DEFAULT_MAX_BODY_BYTES;
        let head = "{\"eventType\":\"message\",\"text\":\"";
        let tail = "\"}";
        // `\"` escapes: two bytes that become four.
        let fill = "\\\"".repeat((max_body - head.len() - tail.len()) / 2);
        let body = format!("{head}{fill}{tail}");
        assert!(body.len() <= max_body && max_body - body.len() < 2);
        serde_json::from_str::<serde_json::Value>(&body).expect("the body is JSON");
        // The longest key, of U+0001, each written as six bytes.
        let key = "\u{1}".repeat(MAX_KEY_BYTES);
        let event = QueuedEvent {
            key,
            received_at: i64::MIN,
            body,
            unarchived: false,
        };
        let envelope = encode_queued(&event).unwrap();
        let bound = envelope_bound(event.body.len(), event.key.len());
        assert!(envelope.len() <= bound, "{} > {bound}", envelope.len());
        assert!(bound - envelope.len() < 64, "the bound is close");
        assert_eq!(MAX_KEY_BYTES, 281);
        assert_eq!(
            envelope_bound(max_body, MAX_KEY_BYTES),
            526_048,
            "the module doc's figure"
        );
        assert!(max_body <= MAX_SENDABLE_BODY_BYTES);
        assert_eq!(MAX_SENDABLE_BODY_BYTES, 523_408);
        assert!(envelope_bound(MAX_SENDABLE_BODY_BYTES, MAX_KEY_BYTES) <= SQS_MAX_MESSAGE_BYTES);
        assert!(envelope_bound(MAX_SENDABLE_BODY_BYTES + 1, MAX_KEY_BYTES) > SQS_MAX_MESSAGE_BYTES);
    }

    /// An envelope SQS would refuse for its size is refused here, before any request.
    #[test]
    fn an_envelope_over_the_sqs_limit_is_refused() {
        let event = QueuedEvent {
            key: "message:wamid.big".into(),
            received_at: 1,
            // Not JSON: 6 bytes per character once escaped.
            body: "\u{1}".repeat(SQS_MAX_MESSAGE_BYTES / 6 + 1),
            unarchived: false,
        };
        match encode_queued(&event) {
            Err(EnvelopeError::TooLarge { key, bytes }) => {
                assert!(bytes > SQS_MAX_MESSAGE_BYTES);
                assert!(
                    !key.contains("wamid"),
                    "the key is logged in its hashed form"
                );
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let fits = QueuedEvent {
            body: "a".repeat(SQS_MAX_MESSAGE_BYTES - ENVELOPE_OVERHEAD_BYTES - 20),
            ..event
        };
        assert!(encode_queued(&fits).is_ok());
    }
}
