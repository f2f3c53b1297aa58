//! The operator's commands, over the same ports as the pipeline, against the local store or AWS
//! (`wati-ingest --help`, and `--help` after any command):
//!
//! ```text
//! wati-ingest [serve]                                the local pipeline (make run)
//! wati-ingest inspect <key | message id> [--aws]     ledger record, quarantine, message (JSON)
//! wati-ingest replay --since T --until T [--include-quarantined] [--aws]
//! wati-ingest dead-letters [--limit N] [--aws]       what the processor gave up on, and why
//! wati-ingest redrive-dlq [--key K] [--aws]          dead letters back to the queue
//! wati-ingest quarantine [--limit N] [--aws]         quarantined bodies, newest first
//! wati-ingest tail [--from-start] [--json]           change documents as they are recorded
//! wati-ingest forwards [resend <change id> | resend --all]
//! wati-ingest backfill-contact-index --aws           give older items their contact index key, file the summary
//! wati-ingest smoke --webhook-url U --api-url A --token T   after a deploy: samples in, state out
//! ```
//! Local commands read only `DATA_DIR` and refuse one that holds no store (they never create
//! one); `--aws` uses `LEDGER_TABLE`, `STATE_TABLE`, `QUEUE_URL` and `DLQ_URL`. Exit status: 0
//! done, 1 failed, 2 usage error (clap's), 3 nothing found.

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::OffsetDateTime;

use crate::event::{log_key, WatiEvent};
use crate::message::MessageView;
use crate::ports::{
    DeadLetter, Ledger, QuarantineArchive, QuarantineStage, QuarantinedBody, Queue, StateStore,
    StoreError,
};

/// What to run, and where: the local store in `DATA_DIR` or the deployed stack (`--aws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub aws: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Inspect {
        id: String,
    },
    Replay {
        since: i64,
        until: i64,
        /// Also the bodies the receiver quarantined (after a parser fix, the recovery path).
        include_quarantined: bool,
    },
    /// Move dead letters back to the queue: the one under `key`, or all (`None`).
    RedriveDlq {
        key: Option<String>,
    },
    /// List dead letters (at most `limit`) with why they failed.
    DeadLetters {
        limit: usize,
    },
    /// List quarantined bodies (the newest `limit`) with their reasons.
    Quarantine {
        limit: usize,
    },
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
    /// Delete everything kept about one contact ([`crate::erasure`]).
    EraseContact {
        contact: String,
    },
    /// Post samples to a deployment and read them back ([`crate::smoke`]).
    Smoke {
        webhook_url: Redacted,
        api_url: String,
        token: Redacted,
        wait_seconds: u64,
    },
}

/// A value that holds a secret (the webhook URL's path, a token): compared and cloned like a
/// string, never shown by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Exit status of `inspect` when nothing is kept under the id (0: found, 1: failed, 2: usage).
pub const EXIT_NOT_FOUND: u8 = 3;

const ENVIRONMENT: &str = "\
Local commands read only DATA_DIR (default ./.wati-ingest), and refuse a directory that holds no
store. With --aws: LEDGER_TABLE, STATE_TABLE, QUEUE_URL and DLQ_URL (the stack's outputs of the
same names), and the usual AWS credentials and region.
Exit status: 0 done, 1 failed, 2 usage error, 3 nothing found (inspect; redrive-dlq --key;
erase-contact).";

/// wati-ingest: Wati's webhooks into message and session state; the local pipeline and the
/// operator's commands.
#[derive(Debug, Parser)]
#[command(name = "wati-ingest", version, after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run the whole pipeline locally: receiver, queue, processor, read API (the default)
    Serve,
    /// Show what is kept under an idempotency key or a message id: the ledger record, any
    /// quarantined body and the message state, as JSON (exit 3 when nothing is)
    Inspect {
        /// The key Wati was answered with, or any id of the message (Wati's, Meta's wamid,
        /// localMessageId)
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Put archived events received in a time range back on the queue (applying is idempotent)
    Replay {
        /// From this time (unix seconds or RFC 3339), inclusive
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        since: i64,
        /// Until this time (unix seconds or RFC 3339), inclusive
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        until: i64,
        /// Also the bodies the receiver quarantined (after a parser fix)
        #[arg(long)]
        include_quarantined: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Move dead-lettered events back to the queue: all, or the one under --key
    RedriveDlq {
        /// Only the dead letter with this idempotency key
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List dead-lettered events with why they failed
    DeadLetters {
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// List quarantined bodies (newest first) with their reasons
    Quarantine {
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Print change documents as they are recorded (local; Ctrl-C ends)
    Tail {
        /// From the first change kept, not from now
        #[arg(long)]
        from_start: bool,
        /// One JSON document a line instead of a human line
        #[arg(long)]
        json: bool,
    },
    /// List changes whose forwarding was dead-lettered (local), or resend them
    Forwards {
        #[command(subcommand)]
        action: Option<ForwardsAction>,
    },
    /// After a deploy: post a uniquely identified sample of each kind of callback, read the
    /// state (and the change) back, print each hop's latency and what is wrong (exit 1)
    Smoke {
        /// The webhook URL with the secret, as pasted into Wati (local:
        /// http://127.0.0.1:3000/webhook/<secret>). Prefer the SMOKE_WEBHOOK_URL variable: an
        /// argument is visible to other users in the process list
        #[arg(long, env = "SMOKE_WEBHOOK_URL", hide_env_values = true)]
        webhook_url: String,
        /// The read API's URL (the ReadApiUrl output; local: http://127.0.0.1:3000)
        #[arg(long, env = "SMOKE_API_URL")]
        api_url: String,
        /// The read API's bearer token (ApiToken; local: DATA_DIR/api_token). Prefer the
        /// API_TOKEN variable: an argument is visible to other users in the process list
        #[arg(long, env = "API_TOKEN", hide_env_values = true)]
        token: String,
        /// How long to wait for the state and the change once the webhooks are answered
        #[arg(long = "wait", default_value_t = 60, value_name = "SECONDS")]
        wait_seconds: u64,
    },
    /// Delete everything kept about one contact (a person's right to erasure): its messages,
    /// ids, links and window timers, and every archived, quarantined, queued or dead-lettered
    /// body, or change document, that names it or one of its messages. Prints what it deleted
    /// (exit 3 when nothing was kept); run it again if interrupted, and once the contact's
    /// traffic has stopped (a later webhook is new data)
    EraseContact {
        /// The contact's phone number (waId) or BSUID; its linked names go with it
        contact: String,
        /// Required: nothing asks again, and an erasure cannot be undone
        #[arg(long, required = true)]
        yes: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Give older state items their contact index key, once, after deploying the
    /// by_contact_sent index (AWS only)
    BackfillContactIndex {
        /// Required: this command runs against the deployed state table
        #[arg(long, required = true)]
        aws: bool,
    },
}

#[derive(Debug, Args)]
struct Target {
    /// Run against the deployed tables and queues (LEDGER_TABLE, STATE_TABLE, QUEUE_URL,
    /// DLQ_URL) instead of DATA_DIR
    #[arg(long)]
    aws: bool,
}

#[derive(Debug, Subcommand)]
enum ForwardsAction {
    /// Make dead-lettered changes pending again: one by its id, or --all
    Resend {
        /// The change id (chg_...)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        change: Option<String>,
        /// Every dead-lettered change
        #[arg(long)]
        all: bool,
    },
}

/// Parses the arguments after the program name. `--help` and `--version` come back as errors
/// too: [`clap::Error::exit`] prints them on stdout and exits 0, usage errors on stderr with 2.
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let program = std::iter::once(std::ffi::OsString::from("wati-ingest"));
    let cli = Cli::try_parse_from(program.chain(args.into_iter().map(Into::into)))?;
    let local = |command| Invocation {
        command,
        aws: false,
    };
    Ok(match cli.command.unwrap_or(CliCommand::Serve) {
        CliCommand::Serve => local(Command::Serve),
        CliCommand::Inspect { id, target } => Invocation {
            command: Command::Inspect { id },
            aws: target.aws,
        },
        CliCommand::Replay {
            since,
            until,
            include_quarantined,
            target,
        } => {
            if since > until {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    "--since must not be after --until",
                ));
            }
            Invocation {
                command: Command::Replay {
                    since,
                    until,
                    include_quarantined,
                },
                aws: target.aws,
            }
        }
        CliCommand::RedriveDlq { key, target } => Invocation {
            command: Command::RedriveDlq { key },
            aws: target.aws,
        },
        CliCommand::DeadLetters { limit, target } => Invocation {
            command: Command::DeadLetters { limit },
            aws: target.aws,
        },
        CliCommand::Quarantine { limit, target } => Invocation {
            command: Command::Quarantine { limit },
            aws: target.aws,
        },
        CliCommand::Tail { from_start, json } => local(Command::Tail { from_start, json }),
        CliCommand::Forwards { action: None } => local(Command::Forwards),
        CliCommand::Forwards {
            action: Some(ForwardsAction::Resend { change, .. }),
        } => local(Command::ForwardsResend { change }),
        CliCommand::Smoke {
            webhook_url,
            api_url,
            token,
            wait_seconds,
        } => local(Command::Smoke {
            webhook_url: Redacted(webhook_url),
            api_url,
            token: Redacted(token),
            wait_seconds,
        }),
        CliCommand::EraseContact {
            contact, target, ..
        } => Invocation {
            command: Command::EraseContact { contact },
            aws: target.aws,
        },
        CliCommand::BackfillContactIndex { .. } => Invocation {
            command: Command::BackfillContactIndex,
            aws: true,
        },
    })
}

fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    OffsetDateTime::parse(text, &Rfc3339Format)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("{text:?} is neither unix seconds nor an RFC 3339 time"))
}

/// Everything kept under `id` (an idempotency key or a message id), as JSON: the key and the
/// form logs show it in, the ledger's archived event, any quarantined bodies, and the message the
/// id names (or, for a key, the message its archived event is about). `None` when nothing is.
pub async fn inspect(
    ledger: &dyn Ledger,
    state: &dyn StateStore,
    quarantines: &dyn QuarantineArchive,
    id: &str,
) -> Result<Option<Value>, StoreError> {
    let archived = ledger.archived(id).await?;
    let quarantined = quarantines.quarantined_under(id).await?;
    let mut message = state.message(id).await?;
    if message.is_none() {
        let body = archived.as_ref().map(|event| event.body.as_bytes());
        let about = body.and_then(|body| WatiEvent::parse(body).ok());
        if let Some(named) = about.as_ref().and_then(WatiEvent::message_identity) {
            message = state.message(named).await?;
        }
    }
    if archived.is_none() && quarantined.is_empty() && message.is_none() {
        return Ok(None);
    }
    let quarantine: Vec<Value> = quarantined.iter().map(quarantined_json).collect();
    Ok(Some(json!({
        "id": id,
        "log_key": log_key(id),
        "ledger": archived.map(|event| json!({
            "key": event.key, "received_at": event.received_at, "body": event.body
        })),
        "quarantine": quarantine,
        "message": message.as_ref().map(MessageView::from),
    })))
}

fn quarantined_json(kept: &QuarantinedBody) -> Value {
    json!({
        "stage": kept.stage.name(),
        "key": kept.entry.key,
        "log_key": log_key(&kept.entry.key),
        "reason": kept.entry.reason,
        "received_at": kept.entry.received_at,
        "body": String::from_utf8_lossy(&kept.entry.body),
    })
}

/// Re-enqueues every archived event received in `since..=until`, and with `quarantines` the
/// bodies the receiver quarantined then; returns how many.
pub async fn replay(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    quarantines: Option<&dyn QuarantineArchive>,
    since: i64,
    until: i64,
) -> Result<usize, StoreError> {
    let mut events = ledger.archived_between(since, until).await?;
    if let Some(quarantines) = quarantines {
        events.extend(
            quarantines
                .receiver_quarantined_between(since, until)
                .await?,
        );
    }
    for event in &events {
        queue.send(event).await?;
    }
    Ok(events.len())
}

/// `wati-ingest quarantine`: one line per quarantined body (stage, time, key as logs show it,
/// size, reason), or a line saying there are none.
pub fn quarantine_lines(kept: &[QuarantinedBody]) -> Vec<String> {
    if kept.is_empty() {
        return vec!["no quarantined bodies".into()];
    }
    kept.iter()
        .map(|kept| {
            format!(
                "{} {} {} key={} ({}) bytes={} reason: {}",
                at(kept.entry.received_at),
                kept.stage.name(),
                log_key(&kept.entry.key),
                kept.entry.key,
                if kept.stage == QuarantineStage::Receiver {
                    "never parsed"
                } else {
                    "accepted, not applicable"
                },
                kept.entry.body.len(),
                one_line(&kept.entry.reason)
            )
        })
        .collect()
}

/// `wati-ingest dead-letters`: one line per dead letter, or a line saying there are none.
pub fn dead_letter_lines(dead: &[DeadLetter]) -> Vec<String> {
    if dead.is_empty() {
        return vec!["no dead letters".into()];
    }
    dead.iter()
        .map(|d| {
            format!(
                "{} {} key={} attempts={} reason: {}",
                at(d.received_at),
                log_key(&d.key),
                d.key,
                d.attempts,
                one_line(&d.reason)
            )
        })
        .collect()
}

fn at(unix_seconds: i64) -> String {
    crate::time::Rfc3339(Some(unix_seconds))
        .render()
        .unwrap_or_else(|| unix_seconds.to_string())
}

/// A stored reason on one terminal line: control characters (a forged newline) escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
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

    fn parsed(text: &str) -> Invocation {
        parse(args(text)).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> clap::error::ErrorKind {
        parse(args(text)).expect_err(text).kind()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parsed("").command, Command::Serve);
        assert_eq!(parsed("serve").command, Command::Serve);
        assert_eq!(
            parsed("inspect local-0003 --aws"),
            Invocation {
                command: Command::Inspect {
                    id: "local-0003".into()
                },
                aws: true
            }
        );
        assert_eq!(
            parsed("replay --since 100 --until 2025-11-27T10:14:13Z").command,
            Command::Replay {
                since: 100,
                until: 1_764_238_453,
                include_quarantined: false
            }
        );
        assert_eq!(
            parsed("replay --since -5 --until 0 --include-quarantined"),
            Invocation {
                command: Command::Replay {
                    since: -5,
                    until: 0,
                    include_quarantined: true
                },
                aws: false
            }
        );
        assert_eq!(
            parsed("redrive-dlq").command,
            Command::RedriveDlq { key: None }
        );
        assert_eq!(
            parsed("redrive-dlq --key k1 --aws"),
            Invocation {
                command: Command::RedriveDlq {
                    key: Some("k1".into())
                },
                aws: true
            }
        );
        assert_eq!(
            parsed("dead-letters").command,
            Command::DeadLetters { limit: 100 }
        );
        assert_eq!(
            parsed("quarantine --limit 5 --aws"),
            Invocation {
                command: Command::Quarantine { limit: 5 },
                aws: true
            }
        );
        assert_eq!(
            parsed("tail").command,
            Command::Tail {
                from_start: false,
                json: false
            }
        );
        assert_eq!(
            parsed("tail --json --from-start").command,
            Command::Tail {
                from_start: true,
                json: true
            }
        );
        assert_eq!(parsed("forwards").command, Command::Forwards);
        assert_eq!(
            parsed("forwards resend chg_1").command,
            Command::ForwardsResend {
                change: Some("chg_1".into())
            }
        );
        assert_eq!(
            parsed("forwards resend --all").command,
            Command::ForwardsResend { change: None }
        );
        assert_eq!(
            parsed("backfill-contact-index --aws"),
            Invocation {
                command: Command::BackfillContactIndex,
                aws: true
            }
        );
    }

    /// Help and version are answers, not commands: `inspect --help` does not look up "--help".
    #[test]
    fn help_and_version_are_answered_by_clap() {
        use clap::error::ErrorKind;
        assert_eq!(refused("--help"), ErrorKind::DisplayHelp);
        assert_eq!(refused("inspect --help"), ErrorKind::DisplayHelp);
        assert_eq!(refused("replay -h"), ErrorKind::DisplayHelp);
        assert_eq!(refused("--version"), ErrorKind::DisplayVersion);
        let help = parse(args("--help")).unwrap_err().to_string();
        for command in [
            "inspect",
            "replay",
            "redrive-dlq",
            "dead-letters",
            "quarantine",
            "tail",
            "forwards",
        ] {
            assert!(help.contains(command), "{command} missing from:\n{help}");
        }
        assert!(help.contains("DATA_DIR"), "{help}");
        Cli::command().debug_assert();
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
        use clap::error::ErrorKind;
        assert_eq!(refused("delete"), ErrorKind::InvalidSubcommand);
        // `--aws` alone is not a command: it used to start a local server.
        assert_eq!(refused("--aws"), ErrorKind::UnknownArgument);
        assert_eq!(refused("serve --aws"), ErrorKind::UnknownArgument);
        assert_eq!(refused("inspect"), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            refused("replay --since 5"),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused("replay --since 9 --until 5"),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            refused("replay --since soon --until 5"),
            ErrorKind::ValueValidation
        );
        assert_eq!(refused("redrive-dlq now"), ErrorKind::UnknownArgument);
        assert_eq!(
            refused("dead-letters --limit many"),
            ErrorKind::ValueValidation
        );
        assert_eq!(refused("tail --follow"), ErrorKind::UnknownArgument);
        assert_eq!(
            refused("forwards resend"),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            refused("forwards resend chg_1 --all"),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(refused("forwards --aws"), ErrorKind::UnknownArgument);
        assert_eq!(refused("tail --aws"), ErrorKind::UnknownArgument);
        assert_eq!(
            refused("backfill-contact-index"),
            ErrorKind::MissingRequiredArgument
        );
    }

    /// `{:?}` of a parsed command never shows the secret URL or the token.
    #[test]
    fn secrets_in_arguments_are_never_shown() {
        let invocation = parsed(
            "smoke --webhook-url http://h/webhook/SECRET-0123456789abcdef --api-url http://h \
             --token TOKEN-0123456789abcdef",
        );
        let shown = format!("{invocation:?}");
        assert!(
            !shown.contains("SECRET-") && !shown.contains("TOKEN-"),
            "{shown}"
        );
        let Command::Smoke {
            webhook_url, token, ..
        } = invocation.command
        else {
            panic!("not smoke: {invocation:?}");
        };
        let config = crate::smoke::SmokeConfig {
            webhook_url: webhook_url.0,
            api_url: "http://h".into(),
            token: token.0,
            wait: std::time::Duration::from_secs(1),
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("SECRET-") && !shown.contains("TOKEN-"),
            "{shown}"
        );
        assert!(shown.contains("http://h"), "{shown}");
    }

    /// A reason read from the store cannot forge a second line on the operator's terminal.
    #[test]
    fn listed_reasons_stay_on_one_line() {
        let lines = dead_letter_lines(&[DeadLetter {
            key: "k".into(),
            received_at: 0,
            attempts: 3,
            reason: "boom\n2025-01-01T00:00:00Z forged".into(),
        }]);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'), "{}", lines[0]);
        assert!(
            lines[0].ends_with("reason: boom\\n2025-01-01T00:00:00Z forged"),
            "{}",
            lines[0]
        );
        assert_eq!(dead_letter_lines(&[]), vec!["no dead letters".to_owned()]);
        assert_eq!(
            quarantine_lines(&[]),
            vec!["no quarantined bodies".to_owned()]
        );
    }
}
