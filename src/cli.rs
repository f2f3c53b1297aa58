//! The operator's commands, over the same ports as the pipeline, against the local store or AWS:
//!
//! ```text
//! wati-ingest [serve]                           the local pipeline (make run)
//! wati-ingest inspect <key | message id>        ledger record and message state, as JSON
//! wati-ingest replay --since T --until T        re-enqueue archived events (T: unix s or RFC 3339)
//! wati-ingest redrive-dlq                       move dead letters back to the queue
//! ```
//! `--aws` runs a command against `LEDGER_TABLE`, `STATE_TABLE`, `QUEUE_URL` and `DLQ_URL`
//! instead of the local store in `DATA_DIR`.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::OffsetDateTime;

use crate::message::MessageView;
use crate::ports::{Ledger, Queue, StateStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Inspect { id: String },
    Replay { since: i64, until: i64 },
    RedriveDlq,
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
}

pub const USAGE: &str = "usage:
  wati-ingest [serve]                        run the local pipeline
  wati-ingest inspect <key | message id>     ledger record and message state (JSON)
  wati-ingest replay --since T --until T     re-enqueue archived events (T: unix seconds or RFC 3339)
  wati-ingest redrive-dlq                    move dead-lettered events back to the queue
add --aws to use LEDGER_TABLE, STATE_TABLE, QUEUE_URL and DLQ_URL instead of DATA_DIR";

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
    }
}
