//! `wati-ingest`: the whole pipeline as one local process on the embedded store, and the
//! operator's commands on the local store or on AWS (see [`wati_ingest::cli`]).

use std::process::ExitCode;

use wati_ingest::cli::{self, Command, Invocation, EXIT_NOT_FOUND};
use wati_ingest::erasure::erase_contact;
use wati_ingest::local::{bind_on, open_existing_store, LocalConfig, LocalPipeline, SecretSource};
use wati_ingest::ports::{
    ChangeFeed, DeadLetters, Erasure, Ledger, QuarantineArchive, Queue, StateStore,
};
use wati_ingest::settings;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::store::aws_erasure::AwsErasure;
use wati_ingest::store::aws_operator::{AwsQuarantine, SqsDeadLetters};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;

type Error = Box<dyn std::error::Error>;

/// How a command ended, beyond success and failure.
enum Done {
    Ok,
    NotFound,
}

#[tokio::main]
async fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
        Ok(invocation) => invocation,
        // Help and version on stdout with 0; usage errors on stderr with 2.
        Err(error) => error.exit(),
    };
    wati_ingest::logging::init_local();
    let outcome = match invocation {
        Invocation {
            command: Command::Serve,
            ..
        } => serve().await.map(|()| Done::Ok),
        Invocation {
            command:
                Command::Smoke {
                    webhook_url,
                    api_url,
                    token,
                    wait_seconds,
                },
            ..
        } => {
            smoke(wati_ingest::smoke::SmokeConfig {
                webhook_url: webhook_url.0,
                api_url,
                token: token.0,
                wait: std::time::Duration::from_secs(wait_seconds),
            })
            .await
        }
        Invocation {
            command,
            aws: false,
        } => run_local(command).await,
        Invocation { command, aws: true } => run_aws(command).await,
    };
    match outcome {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::NotFound) => ExitCode::from(EXIT_NOT_FOUND),
        Err(error) => {
            eprintln!("wati-ingest: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Error> {
    let config = LocalConfig::from_env()?;
    let pipeline = LocalPipeline::open(&config)?;
    let (listener, address) = bind_on(config.bind, config.port).await?;
    let kept = config
        .data_dir
        .join(wati_ingest::local::WEBHOOK_SECRET_FILE);
    let secret = match config.webhook_secret_source {
        SecretSource::Environment => "$WEBHOOK_SECRET".to_owned(),
        // Shown in full once, when it is made: logs of systemd or a container keep stdout.
        SecretSource::Generated => config.webhook_secret.clone(),
        SecretSource::DataDir => format!("<the secret in {}>", kept.display()),
    };
    println!("wati-ingest listening on http://{address}");
    println!("webhook URL: http://{address}/webhook/{secret}");
    if config.webhook_secret_source == SecretSource::Generated {
        println!(
            "(the secret was generated now and is kept in {}; later starts print its path only)",
            kept.display()
        );
    }
    match config.api_token_source {
        SecretSource::Environment => println!("read API token: $API_TOKEN"),
        SecretSource::DataDir | SecretSource::Generated => println!(
            "read API token: in {}",
            config.data_dir.join("api_token").display()
        ),
    }
    println!("data: {}", config.data_dir.display());
    if let (Some(forward), Some(host)) = (&config.forward, pipeline.forward_host()) {
        // The host only: the URL's path and query may hold a token.
        match forward.secret_source {
            SecretSource::Environment => {
                println!("forwarding changes to {host}, signed with $FORWARD_SECRET")
            }
            SecretSource::DataDir | SecretSource::Generated => println!(
                "forwarding changes to {host}, signing secret: in {}",
                config
                    .data_dir
                    .join(wati_ingest::local::FORWARD_SECRET_FILE)
                    .display()
            ),
        }
    }
    let _processor = pipeline.spawn_processor();
    let _window_timer = pipeline.spawn_window_timer();
    let _pruner = pipeline.spawn_pruner();
    let _forwarder = pipeline.spawn_forwarder();
    pipeline.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// A command on the store in `DATA_DIR` (safe while `make run` serves it: SQLite WAL, so it takes
/// no lock on the directory). Reads no other setting.
async fn run_local(command: Command) -> Result<Done, Error> {
    let (data_dir, store) = open_existing_store(|name| std::env::var(name).ok())?;
    match command {
        Command::Tail { from_start, json } => {
            let after = if from_start {
                0
            } else {
                store.last_change_seq().await?
            };
            eprintln!(
                "following the changes in {} ({}; Ctrl-C ends)",
                data_dir.display(),
                if from_start {
                    "from the start"
                } else {
                    "from now"
                }
            );
            tokio::select! {
                followed = tail(&store, after, json) => followed?,
                _ = tokio::signal::ctrl_c() => {},
            };
            Ok(Done::Ok)
        }
        Command::Forwards => {
            for line in cli::dead_forward_lines(&store.dead_forwards().await?) {
                println!("{line}");
            }
            Ok(Done::Ok)
        }
        Command::ForwardsResend { change } => {
            let named = change.clone();
            let resent = store.resend_forwards(change).await?;
            if resent == 0 {
                if let Some(change) = named {
                    eprintln!("wati-ingest: {change} is not a dead-lettered forward");
                    return Ok(Done::NotFound);
                }
            }
            println!("{resent} dead-lettered forwards pending again");
            Ok(Done::Ok)
        }
        command => {
            let stores = Stores {
                ledger: &store,
                queue: &store,
                state: &store,
                quarantines: &store,
                dead_letters: &store,
                erasure: &store,
            };
            run(command, stores).await
        }
    }
}

/// A command on the deployed tables and queues named by the environment.
async fn run_aws(command: Command) -> Result<Done, Error> {
    let var = |name: &'static str| settings::required(name, std::env::var(name).ok().as_deref());
    // Every variable first: a missing one is reported before any AWS call is made.
    let (ledger_table, state_table) = (var("LEDGER_TABLE")?, var("STATE_TABLE")?);
    let needs_queue = matches!(
        command,
        Command::Replay { .. } | Command::RedriveDlq { .. } | Command::DeadLetters { .. }
    );
    let queue_url = if needs_queue {
        var("QUEUE_URL")?
    } else {
        String::new()
    };
    let dlq_url = if matches!(
        command,
        Command::RedriveDlq { .. } | Command::DeadLetters { .. }
    ) {
        var("DLQ_URL")?
    } else {
        String::new()
    };
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let ledger = DynamoLedger::new(dynamodb.clone(), ledger_table.clone());
    let state = DynamoState::new(dynamodb.clone(), state_table.clone());
    if command == Command::BackfillContactIndex {
        let keyed = state.backfill_contact_index().await?;
        println!(
            "gave {keyed} items their contact index key and filed every message in the contact \
             summary; contact reads now use the summary"
        );
        return Ok(Done::Ok);
    }
    let queue = SqsQueue::new(sqs.clone(), &queue_url);
    let erasure = AwsErasure {
        client: dynamodb.clone(),
        ledger_table: ledger_table.clone(),
        state_table: state_table.clone(),
    };
    let quarantines = AwsQuarantine {
        client: dynamodb,
        ledger_table,
        state_table,
    };
    let dead_letters = SqsDeadLetters {
        client: sqs,
        dlq_url,
        queue_url,
    };
    let stores = Stores {
        ledger: &ledger,
        queue: &queue,
        state: &state,
        quarantines: &quarantines,
        dead_letters: &dead_letters,
        erasure: &erasure,
    };
    run(command, stores).await
}

/// What the commands below run over: the local store (all five) or a stack's tables and queues.
struct Stores<'a> {
    ledger: &'a dyn Ledger,
    queue: &'a dyn Queue,
    state: &'a dyn StateStore,
    quarantines: &'a dyn QuarantineArchive,
    dead_letters: &'a dyn DeadLetters,
    erasure: &'a dyn Erasure,
}

async fn run(command: Command, stores: Stores<'_>) -> Result<Done, Error> {
    match command {
        Command::Inspect { id } => {
            match cli::inspect(stores.ledger, stores.state, stores.quarantines, &id).await? {
                Some(found) => println!("{}", serde_json::to_string_pretty(&found)?),
                None => {
                    eprintln!(
                        "wati-ingest: nothing kept under {id:?} (no ledger record, quarantined \
                         body or message)"
                    );
                    return Ok(Done::NotFound);
                }
            }
        }
        Command::Replay {
            since,
            until,
            include_quarantined,
        } => {
            let quarantines = include_quarantined.then_some(stores.quarantines);
            let sent = cli::replay(stores.ledger, stores.queue, quarantines, since, until).await?;
            println!("replayed {sent} events received between {since} and {until}");
        }
        Command::RedriveDlq { key } => {
            let moved = stores.dead_letters.redrive(key.as_deref()).await?;
            println!("redrove {moved} dead-lettered events");
            if moved == 0 && key.is_some() {
                return Ok(Done::NotFound);
            }
        }
        Command::DeadLetters { limit } => {
            for line in cli::dead_letter_lines(&stores.dead_letters.dead_letters(limit).await?) {
                println!("{line}");
            }
        }
        Command::Quarantine { limit } => {
            let kept = stores.quarantines.recent_quarantined(limit).await?;
            for line in cli::quarantine_lines(&kept) {
                println!("{line}");
            }
        }
        Command::EraseContact { contact } => {
            let (ids, erased) = erase_contact(stores.erasure, &contact).await?;
            let report = serde_json::json!({
                "names": ids.names.len(),
                "messages": ids.message_ids.len(),
                "erased": erased,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            if erased.total() == 0 {
                eprintln!("wati-ingest: nothing kept about that contact");
                return Ok(Done::NotFound);
            }
        }
        // Served by `main`; local-only commands are run by `run_local`, the backfill by
        // `run_aws`.
        Command::Serve
        | Command::Tail { .. }
        | Command::Forwards
        | Command::ForwardsResend { .. }
        | Command::BackfillContactIndex
        | Command::Smoke { .. } => {}
    }
    Ok(Done::Ok)
}

/// `smoke`: every hop on stdout; exit 1 when one failed.
async fn smoke(config: wati_ingest::smoke::SmokeConfig) -> Result<Done, Error> {
    let run = wati_ingest::smoke::run_id()?;
    let samples = wati_ingest::smoke::samples(&run, wati_ingest::time::now_unix());
    println!(
        "smoke run {run}: contact {}, webhooks to {}",
        samples.contact,
        wati_ingest::smoke::shown_host(&config.webhook_url)
    );
    let report = wati_ingest::smoke::smoke(&config, &samples).await;
    for line in report.lines() {
        println!("{line}");
    }
    if report.passed() {
        println!("smoke passed");
        Ok(Done::Ok)
    } else {
        Err("smoke failed: see the FAIL lines above".into())
    }
}

/// Prints every change recorded after `after`, as it is recorded, until stdout closes.
async fn tail(store: &EmbeddedStore, mut after: i64, json: bool) -> Result<(), Error> {
    use std::io::Write;
    loop {
        let entries = store.changes_after(after, 500).await?;
        if entries.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let mut out = std::io::stdout().lock();
        for entry in &entries {
            let line = if json {
                entry.document.clone()
            } else {
                match serde_json::from_str(&entry.document) {
                    Ok(document) => cli::change_line(&document),
                    Err(_) => entry.document.clone(),
                }
            };
            let written = writeln!(out, "{line}").and_then(|()| out.flush());
            if let Err(error) = written {
                // `tail | head`: the reader is gone, which ends the tail.
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error.into());
            }
        }
        after = entries.last().map_or(after, |entry| entry.seq);
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}
