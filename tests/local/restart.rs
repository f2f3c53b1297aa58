//! Durability across crashes: what was accepted is applied after a restart, even after `kill -9`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    fixtures, message_id, spawn_receiver_only, Server, API_TOKEN, WEBHOOK_SECRET,
};

async fn get_message(client: &reqwest::Client, address: &str, id: &str) -> (StatusCode, Value) {
    let response = client
        .get(format!("{address}/v1/messages/{id}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("get");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls until `id` has `status`, or fails after a deadline.
async fn wait_for_status(client: &reqwest::Client, address: &str, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = get_message(client, address, id).await;
        if code == StatusCode::OK && body["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Events accepted by a process that died before applying them are applied after restart.
#[tokio::test]
async fn accepted_but_unapplied_events_are_applied_after_restart() {
    let mut receiver = spawn_receiver_only().await;
    receiver.post_all(&fixtures()).await;
    let counts = receiver.counts().await;
    assert!(counts.queued > 0, "{counts:?}");
    assert_eq!(counts.messages, 0, "nothing applied yet");
    let (status, _) = receiver
        .get(&format!("/v1/messages/{}", message_id(3)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    receiver.stop().await;

    let server = Server::start(receiver.data_dir.path());
    let client = reqwest::Client::new();
    wait_for_status(&client, &server.address, &message_id(3), "replied").await;
    wait_for_status(&client, &server.address, "local-0005", "failed").await;
}

/// `kill -9` in the middle of a stream of webhooks loses no event that was answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_load_loses_no_accepted_event() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path());
    let client = reqwest::Client::new();
    let address = Arc::new(server.address.clone());
    let total = 400;
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..total {
        let (client, address) = (client.clone(), Arc::clone(&address));
        sends.spawn(async move {
            let id = format!("kill9-{n:04}");
            let body = serde_json::json!({
                "eventType": "templateMessageSent",
                "id": id,
                "whatsappMessageId": format!("wamid.{id}"),
                "waId": "14155550199",
                "templateName": "order_update",
                "timestamp": "1764238453",
            });
            let response = client
                .post(format!("{address}/webhook/{WEBHOOK_SECRET}"))
                .json(&body)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == StatusCode::OK => Some(id),
                _ => None,
            }
        });
    }
    let mut accepted = Vec::new();
    let mut finished = 0;
    let mut server = Some(server);
    while let Some(result) = sends.join_next().await {
        finished += 1;
        if let Some(id) = result.expect("task") {
            accepted.push(id);
        }
        if finished == total / 2 {
            server.take().expect("running").kill();
        }
    }
    assert!(
        accepted.len() >= total / 4,
        "too few accepted before the kill: {}",
        accepted.len()
    );

    let restarted = Server::start(data_dir.path());
    for id in &accepted {
        wait_for_status(&client, &restarted.address, id, "sent").await;
    }
}
