//! One module per subcommand.

mod alerts;
pub mod api;
mod export;
mod gen;
mod ingest;
mod ledger;
pub mod onboarding;
mod resolve;
mod rules;
mod run;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{AlertArgs, ApiOptions, Cli, Command, DataArgs, PipelineArgs, RunArgs};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Run(args)) => run::run(args).await,
        None => {
            run::run(RunArgs {
                data: DataArgs { data: "trailwatch-data".into() },
                pipeline: PipelineArgs { trail: None, prefix: String::new(), workers: None, no_identity: false, no_history: false, public_keys: None },
                alerts: AlertArgs::default(),
                api: ApiOptions::default(),
                no_api: false,
                interval: 5,
                demo_events: 60_000,
            })
            .await
        }
        Some(Command::Ingest(args)) => ingest::ingest(args).await,
        Some(Command::Export(args)) => export::export(args).await,
        Some(Command::Gen(args)) => gen::gen(args).await,
        Some(Command::Ledger(args)) => ledger::ledger(args).await,
        Some(Command::Resolve(args)) => resolve::resolve(args).await,
        Some(Command::Rules(args)) => rules::rules(args).await,
        Some(Command::Alerts(args)) => alerts::alerts(args).await,
        Some(Command::Api(args)) if args.aws => crate::aws::api::run(args).await,
        Some(Command::Api(args)) => api::api(args).await,
        Some(Command::Query(args)) => api::query(args).await,
        Some(Command::Collector(args)) => crate::aws::collector::run(args).await,
        Some(Command::Enricher(args)) => crate::aws::enricher::run(args).await,
        Some(Command::Backfill(args)) => crate::aws::backfill::run(args).await,
        Some(Command::AwsSetup(args)) => crate::aws::setup::run(args).await,
        Some(Command::Onboarding(args)) => onboarding::onboarding(args).await,
    }
}

/// A token cancelled by Ctrl-C (SIGINT) or SIGTERM. A second signal exits at once.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing the files in flight (press Ctrl-C again to stop at once)");
        cancel.cancel();
        wait_for_signal().await;
        eprintln!("stopped at once; files in flight will be read again next time");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes a command's result to standard output; a reader that went away
/// (`| head`) ends the output quietly instead of failing.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("writing to standard output")),
        _ => Ok(()),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
