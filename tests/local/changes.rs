//! The change feed (`GET /v1/changes`) on the real local server: every change of the fixture
//! scenario, page by page from an opaque cursor, a long poll woken by a new change, and the same
//! documents whatever order and how many times Wati delivers.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{fixture, fixtures, message_id, spawn_app, TestApp};

async fn page(app: &TestApp, query: &str) -> (Vec<Value>, String) {
    let (status, body) = app.get(&format!("/v1/changes?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let changes = body["changes"].as_array().expect("changes").clone();
    (changes, body["next"].as_str().expect("next").to_owned())
}

/// Every document, following the cursor `limit` at a time.
async fn all_changes(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut documents = Vec::new();
    let mut cursor = String::new();
    loop {
        let (changes, next) = page(app, &format!("after={cursor}&limit={limit}")).await;
        if changes.is_empty() {
            assert_eq!(
                next,
                cursor.clone().max(next.clone()),
                "an empty page keeps the cursor"
            );
            return documents;
        }
        assert!(changes.len() <= limit);
        documents.extend(changes);
        cursor = next;
    }
}

fn facts_of(documents: &[Value], message: &str) -> BTreeSet<String> {
    documents
        .iter()
        .filter(|d| d["type"] == "message.updated" && d["message"]["id"] == message)
        .map(|d| d["fact"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_feed_lists_every_change_once_page_by_page() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;
    let documents = all_changes(&app, 7).await;
    let ids: BTreeSet<&str> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), documents.len(), "an id is listed once");
    assert_eq!(
        documents,
        all_changes(&app, 1_000).await,
        "pages do not change the feed"
    );

    // Written out from tests/fixtures/README.md: ...03 was sent, delivered, read and replied to,
    // ...05 failed, ...01 was received; each fact once per id it was filed under.
    let replied = facts_of(&documents, &message_id(3));
    for fact in [
        "sent",
        "delivered",
        "read",
        "replied",
        "contact",
        "local_id",
    ] {
        assert!(replied.contains(fact), "...03 {fact}: {replied:?}");
    }
    assert!(facts_of(&documents, &message_id(5)).contains("failed"));
    assert!(facts_of(&documents, &message_id(1)).contains("received"));
    let failed = documents
        .iter()
        .find(|d| d["fact"] == "failed" && d["message"]["id"] == message_id(5))
        .unwrap();
    assert_eq!(failed["message"]["failed_code"], "131026");

    // The newest view of Alice on each number is the one GET /v1/contacts shows.
    let alice = app.get("/v1/contacts/14155550101").await.1;
    for channel in alice["channels"].as_array().unwrap() {
        let newest = documents
            .iter()
            .rev()
            .find(|d| {
                d["type"] == "contact.updated"
                    && d["contact"]["wa_id"] == "14155550101"
                    && d["contact"]["channel_id"] == channel["channel_id"]
            })
            .unwrap_or_else(|| panic!("no contact.updated for {channel}"));
        let mut shown = channel.clone();
        let mut announced = newest["contact"].clone();
        for view in [&mut shown, &mut announced] {
            view["window_open"] = Value::Null; // both are read after the window closed
        }
        assert_eq!(announced, shown);
    }

    // Posting everything again announces nothing new.
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;
    assert_eq!(all_changes(&app, 1_000).await.len(), documents.len());
}

#[tokio::test]
async fn any_delivery_order_gives_the_same_final_facts() {
    let forward = spawn_app().await;
    forward.post_all(&fixtures()).await;
    forward.wait_until_applied().await;
    let mut reversed_events = fixtures();
    reversed_events.reverse();
    let backward = spawn_app().await;
    backward.post_all(&reversed_events).await;
    backward.wait_until_applied().await;
    let (one, two) = (
        all_changes(&forward, 1_000).await,
        all_changes(&backward, 1_000).await,
    );
    for n in 1..=12 {
        let id = message_id(n);
        assert_eq!(facts_of(&one, &id), facts_of(&two, &id), "...{n}");
    }
}

#[tokio::test]
async fn a_long_poll_returns_when_a_change_arrives() {
    let app = spawn_app().await;
    let (empty, start) = page(&app, "limit=10").await;
    assert!(empty.is_empty());
    let waiting = {
        let (client, address, cursor) = (app.client.clone(), app.address.clone(), start.clone());
        tokio::spawn(async move {
            client
                .get(format!("{address}/v1/changes?after={cursor}&wait=20"))
                .bearer_auth(crate::helpers::API_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.post_all(&[fixture("01-")]).await;
    let woken = waiting.await.unwrap();
    assert!(!woken["changes"].as_array().unwrap().is_empty(), "{woken}");
    assert_ne!(woken["next"], Value::from(start));
}

#[tokio::test]
async fn the_feed_needs_the_token_and_its_own_cursors() {
    let app = spawn_app().await;
    let (status, _) = app.get_with_token("/v1/changes", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for query in ["after=42", "after=c1.zz", "limit=0", "limit=1001", "wait=x"] {
        let (status, body) = app.get(&format!("/v1/changes?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}
