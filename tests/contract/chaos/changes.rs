//! The change path of the chaos run: which change documents the rules of `docs/changes.md` say
//! a history must announce, a forward target that fails and hangs, and the comparison of what
//! reached it with both. Written from the rules alone, like `oracle.rs`: ids are computed here
//! (`chg_` and 32 hex digits of the SHA-256 of the change's parts joined by NUL), message items
//! are folded here, and none of the crate's change or merge functions is called.
//!
//! The rules encoded:
//! - a message is stored as one item per id; a callback files its facts under its *home* item
//!   (its first id: Wati's, else the wamid, else the local id) and names its other ids and its
//!   contact names on each of their items (edges: no facts);
//! - an item with facts announces each fact once it holds it, with its value: `received` (a
//!   customer's message) or `sent` with its time, `delivered`, `read`, `replied` with theirs,
//!   `failed` as `[time, code, detail]` (the earliest failure), `contact` as `wa_id:<phone>`,
//!   else `bsuid:<bsuid>`, `template`, `local_id`; a time moving earlier is announced again, so
//!   the *final* value of every fact must be announced, and an earlier-announced value may only
//!   be one that a smaller one later replaced (or a BSUID the phone number later replaced);
//! - `contact.window_closing` and `contact.window_closed`: one per window and kind, for the
//!   window the contact's latest message opened, due from `lead` seconds before its end (closing)
//!   and from its end (closed); the timer runs once, after the history, at `now`;
//! - the newest `contact.updated` (greatest `as_of`) of every (business number, contact) is the
//!   oracle's view of that pair at its `as_of`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::history::{draw, hash_bytes, Callback, Fact, Report};
use super::oracle::{self, CONTACT_FIELDS};

/// A change id: `chg_` and the first 32 hex digits of the SHA-256 of the parts joined by NUL.
pub fn change_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{0}").as_bytes());
    format!("chg_{}", &hex::encode(digest)[..32])
}

/// One time a fact was reported on an item: its value, and whether the callback's own
/// timestamp dated it (else the receipt of whichever delivery was applied did: any time from
/// the first receipt on).
#[derive(Debug, Clone, Copy)]
struct Dated {
    at: i64,
    by_timestamp: bool,
}

/// What every callback says about one item.
#[derive(Default)]
struct Item {
    /// Some once a callback filed its facts here; `true` for a customer's message.
    inbound: Option<bool>,
    times: BTreeMap<&'static str, Vec<Dated>>,
    failures: Vec<(Dated, Option<String>, Option<String>)>,
    phone: Option<String>,
    bsuid: Option<String>,
    template: Option<String>,
    local: Option<String>,
}

/// The `message.updated` ids a history must and may announce.
#[derive(Debug, Default)]
pub struct MessageChanges {
    /// Every item's final facts: id → what it is (for messages).
    pub required: BTreeMap<String, String>,
    /// The required ids, and values a smaller one later replaced.
    pub allowed: BTreeSet<String>,
    /// Facts some callback dates by its receipt (its timestamp is not an event time): which
    /// delivery's receipt was applied first is the run's, so any time from the first receipt
    /// on may be announced for them. (item, fact) → the first receipt.
    pub receipt_dated: BTreeMap<(String, String), i64>,
}

fn dated(report: &Report, receipt: i64) -> Dated {
    let at = oracle::dated(report.timestamp, receipt);
    Dated {
        at,
        by_timestamp: Some(at) == report.timestamp,
    }
}

/// The `message.updated` ids of a history, from its callbacks and when each was first received.
pub fn message_changes(callbacks: &[Callback], receipts: &[Option<i64>]) -> MessageChanges {
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for (callback, receipt) in callbacks.iter().zip(receipts) {
        let (Some(report), Some(receipt)) = (&callback.report, receipt) else {
            continue;
        };
        let ids: Vec<&String> = [&report.id, &report.wamid, &report.local]
            .into_iter()
            .flatten()
            .collect();
        let Some(home) = ids.first() else { continue };
        for id in &ids {
            let item = items.entry((*id).clone()).or_default();
            item.phone = item.phone.take().or(report.phone.clone());
            item.bsuid = item.bsuid.take().or(report.bsuid.clone());
            item.local = item.local.take().or(report.local.clone());
        }
        let item = items.get_mut(*home).expect("just filed");
        let at = dated(report, *receipt);
        let (fact, inbound) = match &report.fact {
            Fact::Message { inbound, template } => {
                item.template = item.template.take().or(template.clone());
                ("sent", *inbound)
            }
            Fact::Delivered => ("delivered", false),
            Fact::Read => ("read", false),
            Fact::Replied => ("replied", false),
            Fact::Failed { code, detail } => {
                item.failures.push((at, code.clone(), detail.clone()));
                ("", false)
            }
        };
        // Inbound ranks first: a customer's message stays one whatever else is filed with it.
        item.inbound = Some(item.inbound.unwrap_or(inbound) || inbound);
        if !fact.is_empty() {
            item.times.entry(fact).or_default().push(at);
        }
    }

    let mut changes = MessageChanges::default();
    for (key, item) in &items {
        let Some(inbound) = item.inbound else {
            continue;
        };
        for (fact, reported) in &item.times {
            let fact = match *fact {
                "sent" if inbound => "received",
                other => other,
            };
            let least = reported.iter().map(|d| d.at).min().expect("reported");
            changes.note(key, fact, least.to_string(), true);
            for later in reported.iter().filter(|d| d.at > least) {
                changes.note(key, fact, later.at.to_string(), false);
            }
            // A receipt-dated fact may first be applied from a later delivery's receipt.
            if let Some(first) = reported
                .iter()
                .filter(|d| !d.by_timestamp)
                .map(|d| d.at)
                .min()
            {
                changes
                    .receipt_dated
                    .insert((key.clone(), fact.to_owned()), first);
            }
        }
        if let Some(least) = item.failures.iter().map(|f| f.0.at).min() {
            for (at, code, detail) in &item.failures {
                let value = json!([at.at, code, detail]).to_string();
                changes.note(key, "failed", value, at.at == least);
            }
        }
        match (&item.phone, &item.bsuid) {
            (Some(phone), bsuid) => {
                changes.note(key, "contact", format!("wa_id:{phone}"), true);
                if let Some(bsuid) = bsuid {
                    changes.note(key, "contact", format!("bsuid:{bsuid}"), false);
                }
            }
            (None, Some(bsuid)) => changes.note(key, "contact", format!("bsuid:{bsuid}"), true),
            (None, None) => {}
        }
        if let Some(template) = &item.template {
            changes.note(key, "template", template.clone(), true);
        }
        if let Some(local) = &item.local {
            changes.note(key, "local_id", local.clone(), true);
        }
    }
    changes
}

impl MessageChanges {
    /// The `message.updated` of `fact` with `value` on the item `key`: allowed, and required
    /// when it is the fact's final value.
    fn note(&mut self, key: &str, fact: &str, value: String, required: bool) {
        let id = change_id(&["message", key, fact, &value]);
        if required {
            self.required
                .insert(id.clone(), format!("{key} {fact} {value}"));
        }
        self.allowed.insert(id);
    }

    /// Whether `document` (a `message.updated` of a time fact) is one a receipt-dated fact of
    /// one of its message's items may announce.
    fn receipt_dated(&self, document: &Value, fact: &str, at: i64) -> bool {
        let message = &document["message"];
        ["id", "whatsapp_message_id", "local_message_id"]
            .iter()
            .filter_map(|field| message[*field].as_str())
            .any(|key| {
                self.receipt_dated
                    .get(&(key.to_owned(), fact.to_owned()))
                    .is_some_and(|first| at >= *first)
                    && document["id"] == change_id(&["message", key, fact, &at.to_string()])
            })
    }
}

/// Unix seconds of an RFC 3339 time the documents carry.
pub fn unix(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The contact a view names (its phone number, else its BSUID) and its `channel_id`
/// (`""`: the default number).
fn view_key(view: &Value) -> (String, String) {
    let name = view["wa_id"]
        .as_str()
        .or(view["bsuid"].as_str())
        .unwrap_or_default();
    (
        name.to_owned(),
        view["channel_id"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The window documents one timer run at `now` must announce: for every (business number,
/// contact) whose window ends within `lead` seconds, its closing; ended, its close.
pub fn window_changes(
    contacts: &[oracle::Expected],
    now: i64,
    lead: i64,
) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    for contact in contacts {
        for view in contact.view["channels"].as_array().into_iter().flatten() {
            let Some(end) = view["window_expires_at"].as_str().and_then(unix) else {
                continue;
            };
            let kind = if now >= end {
                "contact.window_closed"
            } else if now >= end - lead {
                "contact.window_closing"
            } else {
                continue;
            };
            let (name, channel) = view_key(view);
            expected.insert(
                change_id(&[kind, &name, &channel, &end.to_string()]),
                format!("{kind} {name} on {channel:?} at {end}"),
            );
        }
    }
    expected
}

// ---------------------------------------------------------------------------------------------
// A forward target that fails

/// Shares of attempts a [`FlakyTarget`] answers `500` and leaves hanging past the forwarder's
/// timeout.
pub const TARGET_FAILS: f64 = 0.2;
pub const TARGET_HANGS: f64 = 0.05;

#[derive(Default)]
struct TargetState {
    seed: u64,
    hang: Duration,
    attempts: AtomicUsize,
    failed: AtomicUsize,
    hung: AtomicUsize,
    tries: Mutex<BTreeMap<String, u64>>,
    /// Every document acknowledged (`2xx`), in arrival order, repeats included.
    received: Mutex<Vec<Value>>,
}

/// An HTTP endpoint playing the user's system: it fails a fifth of the attempts and hangs on one
/// in twenty, decided by the seed, the change id and the attempt.
#[derive(Clone)]
pub struct FlakyTarget {
    state: Arc<TargetState>,
    pub address: SocketAddr,
}

async fn take(
    State(state): State<Arc<TargetState>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let attempt = {
        let mut tries = state.tries.lock().unwrap();
        let n = tries.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    let roll = draw(&[state.seed, hash_bytes(id.as_bytes()), attempt]);
    if roll < TARGET_HANGS {
        state.hung.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(state.hang).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if roll < TARGET_HANGS + TARGET_FAILS {
        state.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(document) => {
            state.received.lock().unwrap().push(document);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl FlakyTarget {
    /// Listening on a free port; a hanging attempt is answered after `hang` (make it longer than
    /// the forwarder's timeout).
    pub async fn start(seed: u64, hang: Duration) -> FlakyTarget {
        let state = Arc::new(TargetState {
            seed,
            hang,
            ..TargetState::default()
        });
        let app = axum::Router::new()
            .route("/changes", axum::routing::post(take))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FlakyTarget { state, address }
    }

    pub fn url(&self) -> String {
        format!("http://{}/changes", self.address)
    }

    pub fn received(&self) -> Vec<Value> {
        self.state.received.lock().unwrap().clone()
    }

    /// Attempts, `500`s and hangs so far.
    pub fn faults(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([
            (
                "attempts".into(),
                self.state.attempts.load(Ordering::SeqCst),
            ),
            (
                "answered_500".into(),
                self.state.failed.load(Ordering::SeqCst),
            ),
            ("hung".into(), self.state.hung.load(Ordering::SeqCst)),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison

/// How the documents delivered compare with the pipeline's own announcements and the rules.
#[derive(Debug, Default, Serialize)]
pub struct ChangesVerified {
    /// Documents delivered, repeats included, and distinct ids among them.
    pub deliveries: usize,
    pub distinct: usize,
    pub by_type: BTreeMap<String, usize>,
    /// Ids the pipeline announced (its outbox, or the notifier run again without faults).
    pub announced: usize,
    /// Announced but never delivered: lost on the change path. Must be 0.
    pub not_delivered: usize,
    /// Delivered but never announced. Must be 0.
    pub not_announced: usize,
    /// The rules' final facts never delivered. Must be 0.
    pub facts_missing: usize,
    /// `message.updated` ids the rules allow no history of this run to produce. Must be 0.
    pub facts_unexpected: usize,
    /// Window documents: the rules' missing, and delivered ones the rules do not expect. 0.
    pub windows_expected: usize,
    pub windows_missing: usize,
    pub windows_unexpected: usize,
    /// (business number, contact) pairs compared, without any `contact.updated` (must be 0),
    /// whose newest one differs from the oracle's view at its `as_of` (must be 0), and whose
    /// newest `as_of` is shared by documents of different content (one of them matched).
    pub contact_views: usize,
    pub contact_views_without_update: usize,
    pub contact_views_stale: usize,
    pub contact_views_tied: usize,
    /// The forward target's (or the bus's) faults.
    pub transport: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl ChangesVerified {
    pub fn mismatches(&self) -> usize {
        self.not_delivered
            + self.not_announced
            + self.facts_missing
            + self.facts_unexpected
            + self.windows_missing
            + self.windows_unexpected
            + self.contact_views_without_update
            + self.contact_views_stale
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 12 {
            self.examples.push(text);
        }
    }
}

/// Compares the documents `delivered` with the ids the pipeline `announced` and with the rules:
/// a history's callbacks and first receipts, windows due at `now` with `lead`.
pub fn verify_changes(
    callbacks: &[Callback],
    receipts: &[Option<i64>],
    delivered: &[Value],
    announced: &BTreeSet<String>,
    now: i64,
    lead: i64,
) -> ChangesVerified {
    let mut verified = ChangesVerified {
        deliveries: delivered.len(),
        announced: announced.len(),
        ..ChangesVerified::default()
    };
    let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
    for document in delivered {
        let id = document["id"].as_str().unwrap_or_default().to_owned();
        by_id.entry(id).or_insert(document);
    }
    verified.distinct = by_id.len();
    for document in by_id.values() {
        let kind = document["type"].as_str().unwrap_or("?").to_owned();
        *verified.by_type.entry(kind).or_default() += 1;
    }
    let delivered_ids: BTreeSet<String> = by_id.keys().cloned().collect();
    for id in announced.difference(&delivered_ids) {
        verified.not_delivered += 1;
        verified.example(format!("announced, never delivered: {id}"));
    }
    for id in delivered_ids.difference(announced) {
        verified.not_announced += 1;
        verified.example(format!("delivered, never announced: {id}"));
    }

    let facts = message_changes(callbacks, receipts);
    for (id, what) in &facts.required {
        if !delivered_ids.contains(id) {
            verified.facts_missing += 1;
            verified.example(format!("final fact never delivered: {what} ({id})"));
        }
    }
    for (id, document) in &by_id {
        if document["type"] != "message.updated" || facts.allowed.contains(id) {
            continue;
        }
        let receipt_dated = document["occurred_at"]
            .as_str()
            .and_then(unix)
            .zip(document["fact"].as_str())
            .is_some_and(|(at, fact)| facts.receipt_dated(document, fact, at));
        if !receipt_dated {
            verified.facts_unexpected += 1;
            verified.example(format!(
                "unexpected message.updated {} {} on {}",
                document["fact"], document["occurred_at"], document["message"]["id"]
            ));
        }
    }

    let oracle_now = oracle::expect(callbacks, receipts, now);
    let windows = window_changes(&oracle_now.contacts, now, lead);
    verified.windows_expected = windows.len();
    for (id, what) in &windows {
        if !delivered_ids.contains(id) {
            verified.windows_missing += 1;
            verified.example(format!("window document never delivered: {what}"));
        }
    }
    for (id, document) in &by_id {
        let kind = document["type"].as_str().unwrap_or_default();
        if kind.starts_with("contact.window_") && !windows.contains_key(id) {
            verified.windows_unexpected += 1;
            verified.example(format!(
                "unexpected {kind} for {:?} ending {}",
                view_key(&document["contact"]),
                document["contact"]["window_expires_at"]
            ));
        }
    }

    // The newest contact.updated of every (business number, contact) pair.
    let mut newest: BTreeMap<(String, String), (String, Vec<&Value>)> = BTreeMap::new();
    for document in by_id.values() {
        if document["type"] != "contact.updated" {
            continue;
        }
        let as_of = document["as_of"].as_str().unwrap_or_default().to_owned();
        let entry = newest
            .entry(view_key(&document["contact"]))
            .or_insert_with(|| (as_of.clone(), Vec::new()));
        if as_of > entry.0 {
            *entry = (as_of.clone(), Vec::new());
        }
        if as_of == entry.0 {
            entry.1.push(&document["contact"]);
        }
    }
    let mut oracles: BTreeMap<i64, oracle::Oracle> = BTreeMap::new();
    let paths: Vec<String> = CONTACT_FIELDS.iter().map(|f| (*f).to_owned()).collect();
    for contact in &oracle_now.contacts {
        let names: BTreeSet<&String> = contact.names.iter().map(|(_, v)| v).collect();
        for view in contact.view["channels"].as_array().into_iter().flatten() {
            verified.contact_views += 1;
            let key = view_key(view);
            let Some((as_of, views)) = newest.get(&key) else {
                verified.contact_views_without_update += 1;
                verified.example(format!("no contact.updated for {key:?}"));
                continue;
            };
            let distinct: BTreeSet<String> = views.iter().map(|v| v.to_string()).collect();
            if distinct.len() > 1 {
                verified.contact_views_tied += 1;
            }
            let at = unix(as_of).expect("as_of is a time");
            let then = oracles
                .entry(at)
                .or_insert_with(|| oracle::expect(callbacks, receipts, at));
            let expected = then
                .contacts
                .iter()
                .find(|c| c.names.iter().any(|(_, v)| names.contains(v)))
                .and_then(|c| {
                    c.view["channels"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|v| view_key(v) == key)
                        .cloned()
                })
                .unwrap_or(Value::Null);
            let differing: Vec<Vec<String>> = views
                .iter()
                .map(|v| oracle::differences(&paths, &expected, v))
                .collect();
            if differing.iter().all(|d| !d.is_empty()) {
                verified.contact_views_stale += 1;
                verified.example(format!(
                    "newest contact.updated of {key:?} (as of {as_of}) differs in {:?}",
                    differing[0]
                ));
            }
        }
    }
    verified
}
