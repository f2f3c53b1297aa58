//! The DynamoDB state store under faults the emulator does not produce on its own: the response of
//! a write that succeeded is lost (the SDK retries it), the second of an apply's two calls fails
//! (SQS redelivers the event), the contact summary's filing fails once (tried again in place), a
//! contact summary's bucket reaches DynamoDB's item size limit (DynamoDB Local does not refuse a
//! set at 400 KB) or holds an entry this version cannot decode, and items written by the earlier
//! model. Every id must still find the one message, with every fact.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use wati_ingest::event::WatiEvent;
use wati_ingest::message::MessageRecord;
use wati_ingest::ports::{MergeOutcome, StateStore};
use wati_ingest::store::dynamo_state::DynamoState;

use crate::support::Stack;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The service does the work; its answer is replaced by a 500, so the SDK retries.
    LoseResponse,
    /// The call never reaches the service and fails without retry.
    Fail,
    /// The service is asked something harmless instead (`ListTables`) and its answer replaced
    /// by DynamoDB's refusal of an update that would take the item past 400 KB.
    ItemTooLarge,
}

/// A planned fault: the operation, a text its request body must hold ("": any), the fault.
type Planned = (&'static str, &'static str, Fault);

/// Injects planned faults into the next calls of the named operations (whose request body holds
/// the planned text), in order.
#[derive(Debug, Clone, Default)]
struct WireFaults {
    planned: Arc<Mutex<VecDeque<Planned>>>,
    injected: Arc<Mutex<Vec<(String, Fault)>>>,
}

/// Set on an attempt whose response is to be replaced.
#[derive(Debug, Clone, Copy)]
struct Injected(Fault);

impl Storable for Injected {
    type Storer = StoreReplace<Self>;
}

impl WireFaults {
    fn plan(&self, operation: &'static str, fault: Fault) {
        self.plan_on(operation, "", fault);
    }

    /// A fault for the next call of `operation` whose request body holds `text`.
    fn plan_on(&self, operation: &'static str, text: &'static str, fault: Fault) {
        self.planned
            .lock()
            .unwrap()
            .push_back((operation, text, fault));
    }

    fn injected(&self) -> Vec<(String, Fault)> {
        self.injected.lock().unwrap().clone()
    }
}

impl Intercept for WireFaults {
    fn name(&self) -> &'static str {
        "wire-faults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let operation = crate::support::operation_of(context.request());
        let body = context.request().body().bytes().unwrap_or_default();
        let holds = |text: &str| text.is_empty() || String::from_utf8_lossy(body).contains(text);
        let mut planned = self.planned.lock().unwrap();
        let fault = match planned.front() {
            Some((wanted, text, fault)) if *wanted == operation && holds(text) => {
                let fault = *fault;
                planned.pop_front();
                fault
            }
            _ => return Ok(()),
        };
        self.injected
            .lock()
            .unwrap()
            .push((operation.clone(), fault));
        match fault {
            Fault::Fail => Err(format!("injected: {operation} fails").into()),
            Fault::LoseResponse => {
                cfg.interceptor_state().store_put(Injected(fault));
                Ok(())
            }
            Fault::ItemTooLarge => {
                let request = context.request_mut();
                request
                    .headers_mut()
                    .insert("x-amz-target", "DynamoDB_20120810.ListTables");
                request.headers_mut().insert("content-length", "2");
                *request.body_mut() = SdkBody::from("{}");
                cfg.interceptor_state().store_put(Injected(fault));
                Ok(())
            }
        }
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let Some(Injected(fault)) = cfg.load::<Injected>().copied() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Injected>();
        let (status, body) = match fault {
            Fault::ItemTooLarge => (
                400,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Item size to update has exceeded the maximum allowed size"}"#,
            ),
            _ => (
                500,
                r#"{"__type":"InternalServerError","message":"response lost"}"#,
            ),
        };
        let response = axum::http::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.0")
            .body(SdkBody::from(body))
            .expect("valid response");
        *context.response_mut() = HttpResponse::try_from(response).expect("convertible");
        Ok(())
    }
}

async fn store_with(faults: &WireFaults) -> (Stack, DynamoState) {
    let stack = Stack::create().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&stack.config)
        .interceptor(faults.clone())
        .build();
    let state = DynamoState::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        stack.table("StateTable"),
    );
    (stack, state)
}

fn facts(body: &str) -> MessageRecord {
    MessageRecord::from_event(&WatiEvent::parse(body.as_bytes()).unwrap(), 1_700_001_000).unwrap()
}

const SENT_V2: &str = r#"{"eventType":"sessionMessageSent_v2","id":"R","whatsappMessageId":"wamid.R","localMessageId":"L","waId":"14155550101","timestamp":"1700000100"}"#;
const DELIVERED_BY_WAMID: &str = r#"{"eventType":"sentMessageDELIVERED","whatsappMessageId":"wamid.R","timestamp":"1700000200"}"#;
const READ_V1: &str = r#"{"eventType":"sentMessageREAD","id":"R","whatsappMessageId":"wamid.R","timestamp":"1700000300"}"#;

/// Every id finds one message with every fact applied so far.
async fn assert_one_message(state: &DynamoState, delivered: Option<i64>, read: Option<i64>) {
    let by_id = state.message("R").await.unwrap().expect("by Wati's id");
    assert_eq!(by_id.whatsapp_message_id.as_deref(), Some("wamid.R"));
    assert_eq!(by_id.local_message_id.as_deref(), Some("L"));
    assert_eq!(
        (by_id.sent_at, by_id.delivered_at, by_id.read_at),
        (Some(1_700_000_100), delivered, read)
    );
    for id in ["wamid.R", "L"] {
        assert_eq!(
            state.message(id).await.unwrap().as_ref(),
            Some(&by_id),
            "by {id}"
        );
    }
    let contact = state.contact("14155550101", 1_700_000_400).await.unwrap();
    let delivered_count = u32::from(delivered.is_some() || read.is_some());
    assert_eq!(
        contact.unwrap().default.session.business_messages,
        delivered_count,
        "one message, not two"
    );
}

/// The old model wrote the wamid and local-id aliases only when its update reported that the
/// item gained them: a lost response made the retry see them present and write none.
#[tokio::test]
async fn a_lost_response_still_links_every_id() {
    let faults = WireFaults::default();
    let (_stack, state) = store_with(&faults).await;
    faults.plan("UpdateItem", Fault::LoseResponse);
    faults.plan("TransactWriteItems", Fault::LoseResponse);
    assert_eq!(
        state.apply(&facts(SENT_V2), None).await.unwrap(),
        MergeOutcome::Merged
    );
    assert_eq!(
        faults.injected().len(),
        2,
        "both faults hit: {:?}",
        faults.injected()
    );
    // A status naming only the wamid joins the same message instead of starting a second.
    faults.plan("UpdateItem", Fault::LoseResponse);
    state.apply(&facts(DELIVERED_BY_WAMID), None).await.unwrap();
    faults.plan("UpdateItem", Fault::LoseResponse);
    state.apply(&facts(READ_V1), None).await.unwrap();
    assert_eq!(faults.injected().len(), 4);
    assert_one_message(&state, Some(1_700_000_200), Some(1_700_000_300)).await;
}

/// The fast path's update fails its condition (no links yet), then the linking write fails:
/// the event is retried by SQS and the retry writes everything.
#[tokio::test]
async fn the_second_write_failing_is_repaired_by_the_redelivery() {
    let faults = WireFaults::default();
    let (_stack, state) = store_with(&faults).await;
    faults.plan("TransactWriteItems", Fault::Fail);
    assert!(state.apply(&facts(SENT_V2), None).await.is_err());
    assert_eq!(
        faults.injected(),
        [("TransactWriteItems".to_owned(), Fault::Fail)]
    );
    // Nothing half-written: no id finds a message yet.
    for id in ["R", "wamid.R", "L"] {
        assert_eq!(state.message(id).await.unwrap(), None, "{id}");
    }
    state.apply(&facts(SENT_V2), None).await.unwrap();
    state.apply(&facts(DELIVERED_BY_WAMID), None).await.unwrap();
    assert_one_message(&state, Some(1_700_000_200), None).await;
}

/// Items of the earlier model (one merged item per message under its primary id, single-valued
/// times, `ID#` aliases) read as they were, and new events for those messages join them.
#[tokio::test]
async fn items_of_the_earlier_model_read_and_take_new_events() {
    let faults = WireFaults::default();
    let (stack, state) = store_with(&faults).await;
    let table = stack.table("StateTable");
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let old_items: Vec<HashMap<String, AttributeValue>> = vec![
        HashMap::from([
            ("pk".into(), s("MSG#R")),
            ("sk".into(), s("MSG")),
            ("id".into(), s("R")),
            ("whatsapp_message_id".into(), s("wamid.R")),
            ("local_message_id".into(), s("L")),
            ("wa_id".into(), s("14155550101")),
            ("contact".into(), s("14155550101")),
            ("direction".into(), s("outbound")),
            ("template_name".into(), s("welcome")),
            ("sent_at".into(), n(1_700_000_100)),
            ("delivered_at".into(), n(1_700_000_250)),
        ]),
        HashMap::from([
            ("pk".into(), s("ID#wamid.R")),
            ("sk".into(), s("ID")),
            ("message".into(), s("R")),
        ]),
        HashMap::from([
            ("pk".into(), s("ID#L")),
            ("sk".into(), s("ID")),
            ("message".into(), s("R")),
        ]),
    ];
    for item in old_items {
        stack
            .dynamodb
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    // What the runbook has operators run after deploying the contact index: the earlier items
    // get their `sent_key` (the contact read below finds them through it).
    assert_eq!(state.backfill_contact_index().await.unwrap(), 1);
    assert_one_message(&state, Some(1_700_000_250), None).await;
    // An earlier delivery time naming only the wamid arrives under the new model: it files a
    // new item under the wamid, which the alias still joins to the message.
    state.apply(&facts(DELIVERED_BY_WAMID), None).await.unwrap();
    assert_one_message(&state, Some(1_700_000_200), None).await;
    state.apply(&facts(READ_V1), None).await.unwrap();
    assert_one_message(&state, Some(1_700_000_200), Some(1_700_000_300)).await;
    let message = state.message("L").await.unwrap().unwrap();
    assert_eq!(message.template_name.as_deref(), Some("welcome"));
}

/// A bucket of the contact summary refuses an entry for its size (some 700 messages in two
/// hours): the name is marked overflowed and its contact reads go through the message items, so
/// the message whose entry was refused still counts. Planted: the overflow mark not written, or
/// not read: the refused message is missing from the view (one customer message, not two).
#[tokio::test]
async fn a_full_summary_bucket_sends_reads_to_the_items() {
    let faults = WireFaults::default();
    let (stack, state) = store_with(&faults).await;
    let contact = "14155550111";
    let received = |id: &str, at: i64| {
        facts(&format!(
            r#"{{"eventType":"message","id":"{id}","waId":"{contact}","owner":false,"timestamp":"{at}"}}"#
        ))
    };
    faults.plan_on("UpdateItem", "RECENT#", Fault::ItemTooLarge);
    assert_eq!(
        state
            .apply(&received("full-A", 1_700_000_100), None)
            .await
            .unwrap(),
        MergeOutcome::Merged
    );
    assert_eq!(
        faults.injected(),
        [("UpdateItem".to_owned(), Fault::ItemTooLarge)]
    );
    // A later message, filed normally: the latest, which the summary's reader takes from the
    // contact index whatever its buckets hold.
    state
        .apply(&received("full-B", 1_700_000_200), None)
        .await
        .unwrap();
    let overflow = stack
        .dynamodb
        .get_item()
        .table_name(stack.table("StateTable"))
        .key("pk", AttributeValue::S(format!("RECENT#{contact}")))
        .key("sk", AttributeValue::S("OVERFLOW".into()))
        .send()
        .await
        .unwrap();
    assert!(overflow.item().is_some(), "the name is marked overflowed");
    let view = state.contact(contact, 1_700_000_400).await.unwrap();
    assert_eq!(
        view.expect("a view").default.session.customer_messages,
        2,
        "the message whose entry was refused counts"
    );
}

/// A summary entry this version cannot decode (another version's, or a bug's) sends the read to
/// the message items instead of leaving its message out. Planted: the entry skipped, and the
/// message it stood for is missing from the view.
#[tokio::test]
async fn a_summary_entry_that_does_not_decode_sends_reads_to_the_items() {
    let faults = WireFaults::default();
    let (stack, state) = store_with(&faults).await;
    let contact = "14155550112";
    for (id, at) in [("odd-A", 1_700_000_100), ("odd-B", 1_700_000_200)] {
        let body = format!(
            r#"{{"eventType":"message","id":"{id}","waId":"{contact}","owner":false,"timestamp":"{at}"}}"#
        );
        state.apply(&facts(&body), None).await.unwrap();
    }
    // Every bucket of the contact now holds one entry nobody can read, and nothing else.
    let table = stack.table("StateTable");
    let buckets = stack
        .dynamodb
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("RECENT#{contact}")))
        .send()
        .await
        .unwrap();
    assert!(!buckets.items().is_empty());
    for bucket in buckets.items() {
        stack
            .dynamodb
            .put_item()
            .table_name(&table)
            .item("pk", bucket["pk"].clone())
            .item("sk", bucket["sk"].clone())
            .item(
                "entries",
                AttributeValue::Ss(vec!["{not a snapshot".into()]),
            )
            .send()
            .await
            .unwrap();
    }
    let view = state.contact(contact, 1_700_000_400).await.unwrap();
    assert_eq!(
        view.expect("a view").default.session.customer_messages,
        2,
        "both messages, from their items"
    );
}

/// The contact summary's read-back fails once (a transaction in flight on the item, throttling):
/// filing is tried again in place, and the event is applied without waiting for SQS to deliver
/// it again. Planted: one attempt only, and the apply fails.
#[tokio::test]
async fn a_failed_filing_is_tried_again_in_place() {
    let faults = WireFaults::default();
    let (stack, state) = store_with(&faults).await;
    faults.plan("BatchGetItem", Fault::Fail);
    faults.plan("UpdateItem", Fault::Fail);
    assert_eq!(
        state.apply(&facts(SENT_V2), None).await.unwrap(),
        MergeOutcome::Merged
    );
    assert_eq!(
        faults.injected(),
        [
            ("BatchGetItem".to_owned(), Fault::Fail),
            ("UpdateItem".to_owned(), Fault::Fail)
        ],
        "the read-back failed, then (on the next attempt) the bucket write"
    );
    assert_one_message(&state, None, None).await;
    let filed = stack
        .dynamodb
        .query()
        .table_name(stack.table("StateTable"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("RECENT#14155550101".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(filed.items().len(), 1, "filed in one bucket");
}
