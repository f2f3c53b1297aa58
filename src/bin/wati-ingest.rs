//! `wati-ingest`: the whole pipeline as one local process on the embedded store, and the
//! operator's commands (`inspect`, `replay`, `redrive-dlq`) on the local store or on AWS, and
//! `tail` and `forwards` on the local store.

use std::process::ExitCode;

use wati_ingest::cli::{self, Command, Invocation};
use wati_ingest::local::{bind, LocalConfig, LocalPipeline, SecretSource};
use wati_ingest::ports::{ChangeFeed, Ledger, Queue, StateStore};
use wati_ingest::settings;
use wati_ingest::store::aws::{redrive_dlq, DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let invocation = match cli::parse(std::env::args().skip(1)) {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("wati-ingest: {error}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let outcome = match invocation {
        Invocation {
            command: Command::Help,
            ..
        } => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Invocation {
            command: Command::Serve,
            ..
        } => serve().await,
        Invocation {
            command,
            aws: false,
        } => run_local(command).await,
        Invocation { command, aws: true } => run_aws(command).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wati-ingest: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Error> {
    let config = LocalConfig::from_env()?;
    let pipeline = LocalPipeline::open(&config)?;
    let (listener, address) = bind(config.port).await?;
    let secret = match config.webhook_secret_source {
        SecretSource::Environment => "$WEBHOOK_SECRET",
        SecretSource::DataDir | SecretSource::Generated => config.webhook_secret.as_str(),
    };
    // stdout, not the log: this is the one place the URL (and so the secret) is shown.
    println!("wati-ingest listening on http://{address}");
    println!("webhook URL: http://{address}/webhook/{secret}");
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
    let _forwarder = pipeline.spawn_forwarder();
    pipeline.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// A command on the store in `DATA_DIR` (safe while `make run` serves it: SQLite WAL, so it takes
/// no lock on the directory).
async fn run_local(command: Command) -> Result<(), Error> {
    let config = LocalConfig::from_env()?;
    let store = config.open_store()?;
    match command {
        Command::Tail { from_start, json } => {
            let after = if from_start {
                0
            } else {
                store.last_change_seq().await?
            };
            eprintln!(
                "following the changes in {} ({}; Ctrl-C ends)",
                config.data_dir.display(),
                if from_start {
                    "from the start"
                } else {
                    "from now"
                }
            );
            return tokio::select! {
                followed = tail(&store, after, json) => followed,
                _ = tokio::signal::ctrl_c() => Ok(()),
            };
        }
        Command::Forwards => {
            for line in cli::dead_forward_lines(&store.dead_forwards().await?) {
                println!("{line}");
            }
            return Ok(());
        }
        Command::ForwardsResend { change } => {
            let named = change.clone();
            let resent = store.resend_forwards(change).await?;
            if resent == 0 {
                if let Some(change) = named {
                    return Err(format!("{change} is not a dead-lettered forward").into());
                }
            }
            println!("{resent} dead-lettered forwards pending again");
            return Ok(());
        }
        _ => {}
    }
    run(command, &store, &store, &store, || {
        store.redrive_dead_letters()
    })
    .await
}

/// A command on the deployed tables and queues named by the environment.
async fn run_aws(command: Command) -> Result<(), Error> {
    let var = |name: &'static str| settings::required(name, std::env::var(name).ok().as_deref());
    // Every variable first: a missing one is reported before any AWS call is made.
    let (ledger_table, state_table, queue_url) =
        (var("LEDGER_TABLE")?, var("STATE_TABLE")?, var("QUEUE_URL")?);
    let dlq_url = if command == Command::RedriveDlq {
        var("DLQ_URL")?
    } else {
        String::new()
    };
    let aws = wati_ingest::lambda::aws_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let ledger = DynamoLedger::new(dynamodb.clone(), ledger_table);
    let state = DynamoState::new(dynamodb, state_table);
    if command == Command::BackfillContactIndex {
        let keyed = state.backfill_contact_index().await?;
        println!(
            "gave {keyed} items their contact index key; contact reads now use by_contact_sent"
        );
        return Ok(());
    }
    let queue = SqsQueue::new(sqs.clone(), &queue_url);
    run(command, &ledger, &queue, &state, || async move {
        redrive_dlq(&sqs, &dlq_url, &queue_url).await
    })
    .await
}

async fn run<R, F>(
    command: Command,
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    state: &dyn StateStore,
    redrive: R,
) -> Result<(), Error>
where
    R: FnOnce() -> F,
    F: std::future::Future<Output = Result<usize, wati_ingest::ports::StoreError>>,
{
    match command {
        Command::Inspect { id } => {
            let found = cli::inspect(ledger, state, &id).await?;
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        Command::Replay { since, until } => {
            let sent = cli::replay(ledger, queue, since, until).await?;
            println!("replayed {sent} events received between {since} and {until}");
        }
        Command::RedriveDlq => println!("redrove {} dead-lettered events", redrive().await?),
        // Served and answered by `main` before a store is opened; local-only commands are run by
        // `run_local`, the backfill by `run_aws`.
        Command::Serve
        | Command::Help
        | Command::Tail { .. }
        | Command::Forwards
        | Command::ForwardsResend { .. }
        | Command::BackfillContactIndex => {}
    }
    Ok(())
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
