//! The operator's commands, over the same ports as the pipeline, against the local store or AWS:
//!
//! ```text
//! wati-ingest [serve]                           the local pipeline (make run)
//! wati-ingest inspect <key | message id>        ledger record and message state, as JSON
//! wati-ingest replay --since T --until T        re-enqueue archived events (T: unix s or RFC 3339)
//! wati-ingest redrive-dlq                       move dead letters back to the queue
//! wati-ingest tail [--from-start] [--json]      print change documents as they are recorded
//! wati-ingest forwards                          list changes whose forwarding was dead-lettered
//! wati-ingest forwards resend <change id>|--all make dead-lettered changes pending again
//! wati-ingest backfill-contact-index --aws      give older items their contact index key
//! ```
//! `--aws` runs a command against `LEDGER_TABLE`, `STATE_TABLE`, `QUEUE_URL` and `DLQ_URL`
//! instead of the local store in `DATA_DIR` (`tail` and `forwards` are local only: they read the
//! outbox and the forwarder's table in `DATA_DIR`, safely beside a running server;
//! `backfill-contact-index` is AWS only: the local store migrates itself at start-up).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::OffsetDateTime;

use crate::message::MessageView;
use crate::ports::{Ledger, Queue, StateStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Inspect {
        id: String,
    },
    Replay {
        since: i64,
        until: i64,
    },
    RedriveDlq,
    /// Follow the outbox: from its end, or its start; human lines or one JSON document a line.
    Tail {
        from_start: bool,
        json: bool,
    },
    /// List dead-lettered forwards.
    Forwards,
    /// Make one dead-lettered change (`Some`) or all (`None`) pending again.
    ForwardsResend {
        change: Option<String>,
    },
    /// Give every message item of the state table its `by_contact_sent` key, then mark the table.
    BackfillContactIndex,
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub aws: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown command {0:?}; try `wati-ingest help`")]
    UnknownCommand(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0:?} is neither unix seconds nor an RFC 3339 time")]
    BadTime(String),
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    #[error("--since must not be after --until")]
    EmptyRange,
    #[error("{0} is local only (it reads DATA_DIR); drop --aws")]
    LocalOnly(&'static str),
    #[error("{0} is for AWS only (the local store needs none); add --aws")]
    AwsOnly(&'static str),
}

pub const USAGE: &str = "usage:
  wati-ingest [serve]                        run the local pipeline
  wati-ingest inspect <key | message id>     ledger record and message state (JSON)
  wati-ingest replay --since T --until T     re-enqueue archived events (T: unix seconds or RFC 3339)
  wati-ingest redrive-dlq                    move dead-lettered events back to the queue
  wati-ingest tail [--from-start] [--json]   print change documents as they are recorded (Ctrl-C ends)
  wati-ingest forwards                       list changes whose forwarding was dead-lettered
  wati-ingest forwards resend <change id>|--all
                                             make dead-lettered changes pending again
  wati-ingest backfill-contact-index --aws   give older state items their contact index key
                                             (once, after deploying the by_contact_sent index)
add --aws to use LEDGER_TABLE, STATE_TABLE, QUEUE_URL and DLQ_URL instead of DATA_DIR
(inspect, replay, redrive-dlq)";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, UsageError> {
    let mut aws = false;
    let mut words = Vec::new();
    for arg in args {
        if arg == "--aws" {
            aws = true;
        } else {
            words.push(arg);
        }
    }
    let mut words = words.into_iter();
    let command = match words.next().as_deref() {
        None | Some("serve") => Command::Serve,
        Some("help" | "--help" | "-h") => Command::Help,
        Some("inspect") => Command::Inspect {
            id: words.next().ok_or(UsageError::MissingValue("inspect"))?,
        },
        Some("redrive-dlq") => Command::RedriveDlq,
        Some("backfill-contact-index") => Command::BackfillContactIndex,
        Some("tail") => {
            let (mut from_start, mut json) = (false, false);
            for flag in words.by_ref() {
                match flag.as_str() {
                    "--from-start" => from_start = true,
                    "--json" => json = true,
                    _ => return Err(UsageError::Unexpected(flag)),
                }
            }
            Command::Tail { from_start, json }
        }
        Some("forwards") => match words.next().as_deref() {
            None => Command::Forwards,
            Some("resend") => match words.next() {
                None => return Err(UsageError::MissingValue("forwards resend")),
                Some(all) if all == "--all" => Command::ForwardsResend { change: None },
                Some(change) => Command::ForwardsResend {
                    change: Some(change),
                },
            },
            Some(other) => return Err(UsageError::Unexpected(other.to_owned())),
        },
        Some("replay") => {
            let (mut since, mut until) = (None, None);
            while let Some(flag) = words.next() {
                let slot = match flag.as_str() {
                    "--since" => &mut since,
                    "--until" => &mut until,
                    _ => return Err(UsageError::Unexpected(flag)),
                };
                let name = if flag == "--since" {
                    "--since"
                } else {
                    "--until"
                };
                *slot = Some(parse_time(
                    &words.next().ok_or(UsageError::MissingValue(name))?,
                )?);
            }
            let since = since.ok_or(UsageError::MissingValue("--since"))?;
            let until = until.ok_or(UsageError::MissingValue("--until"))?;
            if since > until {
                return Err(UsageError::EmptyRange);
            }
            Command::Replay { since, until }
        }
        Some(other) => return Err(UsageError::UnknownCommand(other.to_owned())),
    };
    if let Some(extra) = words.next() {
        return Err(UsageError::Unexpected(extra));
    }
    match command {
        Command::Tail { .. } if aws => return Err(UsageError::LocalOnly("tail")),
        Command::Forwards | Command::ForwardsResend { .. } if aws => {
            return Err(UsageError::LocalOnly("forwards"))
        }
        Command::BackfillContactIndex if !aws => {
            return Err(UsageError::AwsOnly("backfill-contact-index"))
        }
        _ => {}
    }
    Ok(Invocation { command, aws })
}

fn parse_time(text: &str) -> Result<i64, UsageError> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    OffsetDateTime::parse(text, &Rfc3339Format)
        .map(|t| t.unix_timestamp())
        .map_err(|_| UsageError::BadTime(text.to_owned()))
}

/// The ledger record under `id` (an idempotency key) and the message `id` names, as JSON.
pub async fn inspect(
    ledger: &dyn Ledger,
    state: &dyn StateStore,
    id: &str,
) -> Result<Value, StoreError> {
    let archived = ledger.archived(id).await?.map(
        |event| json!({ "key": event.key, "received_at": event.received_at, "body": event.body }),
    );
    let message = state.message(id).await?.map(|m| MessageView::from(&m));
    Ok(json!({ "ledger": archived, "message": message }))
}

/// Re-enqueues every archived event received in `since..=until`; returns how many.
pub async fn replay(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    since: i64,
    until: i64,
) -> Result<usize, StoreError> {
    let events = ledger.archived_between(since, until).await?;
    for event in &events {
        queue.send(event).await?;
    }
    Ok(events.len())
}

/// A change document as one human line (`wati-ingest tail`), e.g.
/// `2025-11-27T10:15:19Z message.updated delivered 6734a1b2c3d4e5f601000003 (wa_id 14155550101)`.
pub fn change_line(document: &Value) -> String {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let kind = text(&document["type"]).unwrap_or_else(|| "?".into());
    let at = text(&document["recorded_at"]).unwrap_or_else(|| "-".into());
    let who = |view: &Value| match (text(&view["wa_id"]), text(&view["bsuid"])) {
        (Some(wa_id), _) => format!("wa_id {wa_id}"),
        (None, Some(bsuid)) => format!("bsuid {bsuid}"),
        (None, None) => "no contact".into(),
    };
    let number = |view: &Value| match text(&view["channel_phone_number"]) {
        Some(number) => format!("on {number}"),
        None => "on the default number".into(),
    };
    let contact = &document["contact"];
    let window_end = text(&contact["window_expires_at"]).unwrap_or_else(|| "-".into());
    let detail = match kind.as_str() {
        "message.updated" => {
            let message = &document["message"];
            format!(
                "{} {} ({})",
                text(&document["fact"]).unwrap_or_else(|| "?".into()),
                text(&message["id"])
                    .or_else(|| text(&message["whatsapp_message_id"]))
                    .unwrap_or_else(|| "?".into()),
                who(message)
            )
        }
        "contact.updated" => format!(
            "{} {}: session {}, window {}",
            who(contact),
            number(contact),
            text(&contact["session"]["state"]).unwrap_or_else(|| "none".into()),
            if contact["window_open"] == Value::Bool(true) {
                format!("open until {window_end}")
            } else {
                "closed".into()
            }
        ),
        "contact.window_closing" => format!(
            "{} {}: window closes at {window_end}",
            who(contact),
            number(contact)
        ),
        "contact.window_closed" => format!(
            "{} {}: window closed at {window_end}",
            who(contact),
            number(contact)
        ),
        _ => text(&document["id"]).unwrap_or_default(),
    };
    format!("{at} {kind} {detail}")
}

/// `wati-ingest forwards`: one line per dead-lettered change, or a line saying there are none.
pub fn dead_forward_lines(dead: &[crate::store::embedded::DeadForward]) -> Vec<String> {
    if dead.is_empty() {
        return vec!["no dead-lettered forwards".into()];
    }
    let at = |ms: Option<i64>| {
        crate::time::Rfc3339(ms.map(|ms| ms / 1_000))
            .render()
            .unwrap_or_else(|| "-".into())
    };
    dead.iter()
        .map(|d| {
            format!(
                "{} {} attempts={} first={} last={} reason: {}",
                d.change_id,
                if d.change_type.is_empty() {
                    "?"
                } else {
                    &d.change_type
                },
                d.attempts,
                at(d.first_attempt_at),
                at(d.last_attempt_at),
                d.reason
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parse(args("")).unwrap().command, Command::Serve);
        assert_eq!(
            parse(args("inspect local-0003 --aws")).unwrap(),
            Invocation {
                command: Command::Inspect {
                    id: "local-0003".into()
                },
                aws: true
            }
        );
        assert_eq!(
            parse(args("replay --since 100 --until 2025-11-27T10:14:13Z"))
                .unwrap()
                .command,
            Command::Replay {
                since: 100,
                until: 1_764_238_453
            }
        );
        assert_eq!(
            parse(args("redrive-dlq")).unwrap().command,
            Command::RedriveDlq
        );
        assert_eq!(
            parse(args("tail")).unwrap().command,
            Command::Tail {
                from_start: false,
                json: false
            }
        );
        assert_eq!(
            parse(args("tail --json --from-start")).unwrap().command,
            Command::Tail {
                from_start: true,
                json: true
            }
        );
        assert_eq!(parse(args("forwards")).unwrap().command, Command::Forwards);
        assert_eq!(
            parse(args("forwards resend chg_1")).unwrap().command,
            Command::ForwardsResend {
                change: Some("chg_1".into())
            }
        );
        assert_eq!(
            parse(args("forwards resend --all")).unwrap().command,
            Command::ForwardsResend { change: None }
        );
    }

    #[test]
    fn change_lines_are_readable() {
        let delivered = json!({
            "id": "chg_1", "type": "message.updated", "fact": "delivered",
            "recorded_at": "2025-11-27T10:15:19Z",
            "message": {"id": "6734a1b2c3d4e5f601000003", "wa_id": "14155550101", "bsuid": null}
        });
        assert_eq!(
            change_line(&delivered),
            "2025-11-27T10:15:19Z message.updated delivered 6734a1b2c3d4e5f601000003 \
             (wa_id 14155550101)"
        );
        let view = json!({
            "id": "chg_2", "type": "contact.updated", "recorded_at": "2025-11-27T10:15:19Z",
            "contact": {"wa_id": null, "bsuid": "US.1", "channel_phone_number": "14155550200",
                "window_open": true, "window_expires_at": "2025-11-28T10:14:13Z",
                "session": {"state": "active"}}
        });
        assert_eq!(
            change_line(&view),
            "2025-11-27T10:15:19Z contact.updated bsuid US.1 on 14155550200: session active, \
             window open until 2025-11-28T10:14:13Z"
        );
        let closed = json!({
            "id": "chg_3", "type": "contact.window_closed", "recorded_at": "2025-11-28T10:14:13Z",
            "contact": {"wa_id": "14155550101", "channel_phone_number": null,
                "window_expires_at": "2025-11-28T10:14:13Z"}
        });
        assert_eq!(
            change_line(&closed),
            "2025-11-28T10:14:13Z contact.window_closed wa_id 14155550101 on the default number: \
             window closed at 2025-11-28T10:14:13Z"
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert_eq!(
            parse(args("delete")).unwrap_err(),
            UsageError::UnknownCommand("delete".into())
        );
        assert_eq!(
            parse(args("inspect")).unwrap_err(),
            UsageError::MissingValue("inspect")
        );
        assert_eq!(
            parse(args("replay --since 5")).unwrap_err(),
            UsageError::MissingValue("--until")
        );
        assert_eq!(
            parse(args("replay --since 9 --until 5")).unwrap_err(),
            UsageError::EmptyRange
        );
        assert_eq!(
            parse(args("replay --since soon --until 5")).unwrap_err(),
            UsageError::BadTime("soon".into())
        );
        assert_eq!(
            parse(args("redrive-dlq now")).unwrap_err(),
            UsageError::Unexpected("now".into())
        );
        assert_eq!(
            parse(args("tail --follow")).unwrap_err(),
            UsageError::Unexpected("--follow".into())
        );
        assert_eq!(
            parse(args("forwards resend")).unwrap_err(),
            UsageError::MissingValue("forwards resend")
        );
        assert_eq!(
            parse(args("forwards --aws")).unwrap_err(),
            UsageError::LocalOnly("forwards")
        );
        assert_eq!(
            parse(args("tail --aws")).unwrap_err(),
            UsageError::LocalOnly("tail")
        );
        assert_eq!(
            parse(args("backfill-contact-index")).unwrap_err(),
            UsageError::AwsOnly("backfill-contact-index")
        );
        assert_eq!(
            parse(args("backfill-contact-index --aws")).unwrap(),
            Invocation {
                command: Command::BackfillContactIndex,
                aws: true
            }
        );
    }
}
