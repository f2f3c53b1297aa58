//! Several business numbers on one account, on both backends: sessions and windows per
//! (number, contact), a status taking its message's number in any order, a second number for a
//! message refused, and data without numbers read as the default number's. Expected values are
//! written out from the README's rules, not computed by the crate.

use wati_ingest::processor::Applied;
use wati_ingest::session::{ChannelView, ContactView, SessionState};

use crate::state::process;
use crate::support::Backend;

const ALICE: &str = "14155550101";
const T: i64 = 1_700_000_000;
/// Read inside every session below.
const NOW: i64 = T + 3_600;
const SECOND_ID: &str = "c-second";
const SECOND_NUMBER: &str = "14155550200";
const DEFAULT_NUMBER: &str = "14155550000";

/// A callback body: `channel` is the JSON of its channel fields (with a leading comma), or "".
fn body(event_type: &str, id: &str, extra: &str, at: i64, channel: &str) -> String {
    format!(r#"{{"eventType":"{event_type}","id":"{id}","timestamp":"{at}"{extra}{channel}}}"#)
}

fn on_second(phone: &str) -> String {
    format!(r#","channelId":"{SECOND_ID}","channelPhoneNumber":{phone}"#)
}

const ON_DEFAULT: &str = r#","channelId":null,"channelPhoneNumber":"14155550000""#;
const FROM_ALICE: &str = r#","waId":"14155550101","owner":false"#;
const TO_ALICE: &str = r#","waId":"14155550101""#;

async fn apply_all(backend: &Backend, bodies: &[String]) {
    for (n, body) in bodies.iter().enumerate() {
        let applied = process(backend, &format!("k-{n}"), body, T + 7_200).await;
        assert!(
            matches!(applied, Applied::Message { .. }),
            "{body}: {applied:?}"
        );
    }
}

async fn alice(backend: &Backend) -> ContactView {
    backend
        .state()
        .contact(ALICE, NOW)
        .await
        .unwrap()
        .expect("Alice")
}

fn counts(view: &ChannelView) -> (SessionState, Option<i64>, u32, u32) {
    (
        view.session.state,
        view.session.started_at.0,
        view.session.business_messages,
        view.session.customer_messages,
    )
}

contract!(each_number_keeps_its_own_session_and_window);
/// Alice writes to the default number at T; the business answers from the default number
/// (delivered T+60); at T+100 she writes to the second number, which answers (delivered T+260,
/// the status arriving first, without channel fields). Two active sessions, two windows.
async fn each_number_keeps_its_own_session_and_window(backend: Backend) {
    apply_all(
        &backend,
        &[
            body("message", "in-1", FROM_ALICE, T, ON_DEFAULT),
            body("sessionMessageSent", "out-1", TO_ALICE, T + 30, ""),
            body("sentMessageDELIVERED", "out-1", "", T + 60, ""),
            body(
                "message",
                "in-2",
                FROM_ALICE,
                T + 100,
                &on_second("\"+1 415 555 0200\""),
            ),
            body("sentMessageDELIVERED", "out-2", "", T + 260, ""),
            body(
                "sessionMessageSent",
                "out-2",
                TO_ALICE,
                T + 200,
                &on_second("14155550200"),
            ),
        ],
    )
    .await;
    let view = alice(&backend).await;
    let default = &view.default;
    assert_eq!(default.channel_id, None);
    assert_eq!(
        default.channel_phone_number.as_deref(),
        Some(DEFAULT_NUMBER)
    );
    assert_eq!(default.last_inbound_at.0, Some(T));
    assert_eq!(default.last_outbound_at.0, Some(T + 30));
    assert_eq!(default.window_expires_at.0, Some(T + 86_400));
    assert_eq!(counts(default), (SessionState::Active, Some(T), 1, 1));

    assert_eq!(view.channels.len(), 2);
    assert_eq!(&view.channels[0], default);
    let second = view.channel(SECOND_NUMBER).expect("the second number");
    assert_eq!(second, &view.channels[1]);
    assert_eq!(second.channel_id.as_deref(), Some(SECOND_ID));
    assert_eq!(second.wa_id.as_deref(), Some(ALICE));
    assert_eq!(second.last_inbound_at.0, Some(T + 100));
    assert_eq!(second.last_outbound_at.0, Some(T + 200));
    assert_eq!(second.window_expires_at.0, Some(T + 100 + 86_400));
    assert!(second.window_open);
    assert_eq!(counts(second), (SessionState::Active, Some(T + 100), 1, 1));

    let reply = backend.state().message("out-2").await.unwrap().unwrap();
    assert_eq!(reply.channel_id.as_deref(), Some(SECOND_ID));
    assert_eq!(reply.channel_phone_number.as_deref(), Some(SECOND_NUMBER));
    assert_eq!(reply.delivered_at, Some(T + 260));
}

contract!(a_status_takes_its_messages_number_in_any_order);
/// A delivered status without channel fields, naming the message only by wamid, before and after
/// the send that names the number: the same message, on the second number, either way.
async fn a_status_takes_its_messages_number_in_any_order(backend: Backend) {
    let status = |n: u32| {
        format!(
            r#"{{"eventType":"sentMessageDELIVERED","whatsappMessageId":"wamid.S{n}","timestamp":"{}"}}"#,
            T + 60
        )
    };
    let sent = |n: u32| {
        body(
            "sessionMessageSent",
            &format!("s{n}"),
            &format!(r#"{TO_ALICE},"whatsappMessageId":"wamid.S{n}""#),
            T + 30,
            &on_second("\"14155550200\""),
        )
    };
    apply_all(&backend, &[status(1), sent(1), sent(2), status(2)]).await;
    for id in ["s1", "wamid.S1", "s2", "wamid.S2"] {
        let message = backend.state().message(id).await.unwrap().expect(id);
        assert_eq!(message.channel_id.as_deref(), Some(SECOND_ID), "{id}");
        assert_eq!(message.delivered_at, Some(T + 60), "{id}");
    }
    let view = alice(&backend).await;
    assert_eq!(view.channels.len(), 1, "nothing on the default number");
    assert_eq!(view.default.session.state, SessionState::None);
    assert_eq!(view.default.last_outbound_at.0, None);
    let second = view.channel(SECOND_NUMBER).expect("second number");
    assert_eq!(counts(second), (SessionState::Inactive, Some(T + 60), 2, 0));
}

contract!(a_second_number_for_a_message_is_refused_whole);
/// A message is on one number: an event that names another channel id or phone for it is
/// quarantined and nothing of it is applied.
async fn a_second_number_for_a_message_is_refused_whole(backend: Backend) {
    apply_all(
        &backend,
        &[body(
            "sessionMessageSent",
            "m",
            TO_ALICE,
            T,
            &on_second("\"14155550200\""),
        )],
    )
    .await;
    let other_id = body(
        "sentMessageREAD",
        "m",
        "",
        T + 10,
        r#","channelId":"c-third""#,
    );
    let other_phone = body(
        "sentMessageDELIVERED",
        "m",
        "",
        T + 5,
        r#","channelPhoneNumber":"14155550300""#,
    );
    for (key, refused) in [("k-id", other_id), ("k-phone", other_phone)] {
        let applied = process(&backend, key, &refused, T + 7_200).await;
        assert!(
            matches!(&applied, Applied::Quarantined { reason } if reason.contains("contradicts")),
            "{key}: {applied:?}"
        );
    }
    let message = backend.state().message("m").await.unwrap().unwrap();
    assert_eq!(
        (message.delivered_at, message.read_at),
        (None, None),
        "nothing of a refused event is applied"
    );
    assert_eq!(message.channel_id.as_deref(), Some(SECOND_ID));
    assert_eq!(message.channel_phone_number.as_deref(), Some(SECOND_NUMBER));
}

contract!(messages_without_a_number_are_the_default_numbers);
/// Everything stored before numbers were parsed states none: it reads as the default number's,
/// and a later conversation on the second number stays apart from it.
async fn messages_without_a_number_are_the_default_numbers(backend: Backend) {
    apply_all(
        &backend,
        &[
            body("message", "old-in", FROM_ALICE, T, ""),
            body("sessionMessageSent", "old-out", TO_ALICE, T + 10, ""),
            body("sentMessageREAD", "old-out", "", T + 20, ""),
        ],
    )
    .await;
    let before = alice(&backend).await;
    assert_eq!(before.channels, vec![before.default.clone()]);
    assert_eq!(before.default.channel_id, None);
    assert_eq!(before.default.channel_phone_number, None);
    assert_eq!(
        counts(&before.default),
        (SessionState::Active, Some(T), 1, 1)
    );

    apply_all(
        &backend,
        &[body(
            "message",
            "new-in",
            FROM_ALICE,
            T + 50,
            &on_second("14155550200"),
        )],
    )
    .await;
    let after = alice(&backend).await;
    // As served: the view's unserved `reads_from` moved with the newer message.
    assert_eq!(
        serde_json::to_value(&after.default).unwrap(),
        serde_json::to_value(&before.default).unwrap(),
        "the default number is untouched"
    );
    let second = after.channel(SECOND_NUMBER).expect("second number");
    assert_eq!(counts(second), (SessionState::Inactive, Some(T + 50), 0, 1));
}
