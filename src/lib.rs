//! wati-ingest: Wati webhook callbacks in, exact message statuses and 24-hour sessions out.
//!
//! The pipeline, in the order an event travels:
//!
//! ```text
//!  POST /webhook/{secret}                                        GET /v1/messages/{id}
//!        |                                                       GET /v1/contacts/{waId}
//!    http (router) --> receiver --> Ledger + Queue --> processor --> StateStore --> http
//! ```
//!
//! Domain core, pure and without I/O:
//! - [`event`]: Wati payloads parsed leniently into [`event::WatiEvent`]; idempotency keys.
//! - [`message`]: a message's state as a merge of facts (order- and duplicate-proof); its status.
//! - [`message_items`]: how both state stores file a message under each of its ids without
//!   read-modify-write, refuse contradictions, and join the items back at read time.
//! - [`session`]: a contact's 24-hour sessions and service window, folded from its timeline.
//! - [`recent`]: how much of a contact's history its view reads (48 hours and the latest message
//!   of each direction), so that a contact read does not grow with its history.
//! - [`contact_summary`]: a contact's recent messages filed as snapshots beside the items, so
//!   that a contact read costs a few reads whatever the contact's pace.
//! - [`contact_page`]: a contact's messages a page at a time, newest first (cursor, merge).
//! - [`failure_reasons`]: what a failed message's Meta error code means and what to do.
//! - [`erasure`]: which stored things name a contact (`erase-contact`).
//! - [`secrets`]: credentials re-read from Secrets Manager (a rotation without a redeploy).
//! - [`auth`]: constant-time secret checks; [`time`]: unix seconds to RFC 3339.
//! - [`settings`]: environment variables checked (each refusal names its variable).
//!
//! Pipeline over small traits:
//! - [`ports`]: the `Ledger`, `Queue` and `StateStore` traits and the records between them.
//! - [`receiver`]: the receive algorithm (one ledger write, one enqueue, 200 unless nothing is durable).
//! - [`processor`]: apply a queued event (and archive it when the receiver could not); the local
//!   queue consumer.
//! - [`http`]: the one router (webhook, read API, health) for the local server and Lambda.
//! - [`console`]: `/console`, the page for the people who answer customers (sign-in, a
//!   contact's window and messages, failures explained), over the read API's service.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines (no API calls on the hot path).
//! - [`logging`]: every binary's log filter (the libraries that would log a raw request pinned at
//!   INFO).
//!
//! Adapters and runtimes:
//! - [`store::embedded`]: SQLite ledger, durable queue and state, with group commit.
//! - [`store::aws`]: the ledger on DynamoDB and the queue on SQS; [`store::sqs_envelope`]: the
//!   queue message in SQS's character set.
//! - [`store::dynamo_state`]: the state on DynamoDB, as [`message_items`] without read-modify-write.
//! - [`local`]: the whole pipeline as one process (`make run`).
//! - [`forward`]: push forwarding of the outbox's change documents to `FORWARD_URL`, signed per
//!   Standard Webhooks, retried, dead-lettered (local).
//! - [`smoke`]: the after-deploy check (`wati-ingest smoke`): samples posted, state and change
//!   read back, each hop timed and explained.
//! - [`cli`]: operator commands (inspect, replay, dead-letters, redrive-dlq, quarantine) on the
//!   local store or AWS; `tail` and `forwards` on the local store.
//! - [`notifier`]: the state table's stream to change documents on EventBridge
//!   (`src/bin/notifier.rs`), with the ids the embedded store gives the same changes.
//! - [`windows`]: the AWS window timer, `contact.window_closing`/`window_closed` from the state
//!   table's sparse due-time index (`src/bin/windows.rs`, every minute).
//! - [`lambda`]: the AWS composition (configuration, the receiver's router) for `src/bin/receiver.rs`.

pub mod auth;
pub mod changes;
pub mod channel;
pub mod cli;
pub mod console;
pub mod contact_page;
pub mod contact_summary;
pub mod erasure;
pub mod event;
pub mod failure_reasons;
pub mod forward;
pub mod http;
pub mod http_client;
pub mod lambda;
pub mod local;
pub mod logging;
pub mod message;
pub mod message_items;
pub mod metrics;
pub mod notifier;
pub mod ports;
pub mod processor;
pub mod receiver;
pub mod recent;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod smoke;
pub mod store;
pub mod time;
pub mod windows;
