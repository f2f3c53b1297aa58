//! `wati-ingest`: the whole pipeline as one local process on the embedded store.

use std::process::ExitCode;

use wati_ingest::local::{bind, LocalConfig, LocalPipeline, SecretSource};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wati-ingest: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
    println!(
        "read API token: in {}",
        config.data_dir.join("api_token").display()
    );
    println!("data: {}", pipeline.store.path().display());
    let _processor = pipeline.spawn_processor();
    pipeline.serve(listener, shutdown_signal()).await?;
    Ok(())
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
