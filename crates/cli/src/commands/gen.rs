//! `trailwatch gen`: a synthetic organization trail.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use trailwatch_core::time::{format_utc, parse_bound};
use trailwatch_gen::{GenConfig, GenReport};

use crate::cli::GenArgs;
use crate::summary::{megabytes, thousands};

pub async fn gen(args: GenArgs) -> anyhow::Result<ExitCode> {
    let end = parse_bound(&args.end, super::now_ms()).context("--end")?;
    let config = GenConfig {
        accounts: args.accounts as usize,
        days: args.days,
        events: args.events,
        seed: args.seed,
        end,
        threads: args.threads.map_or(0, usize::from),
        incidents: args.incidents,
        account_ids: args.account_ids,
        org_id: args.org_id,
    };
    let started = std::time::Instant::now();
    let report = generate(config, args.out.clone()).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated organization {} ({} accounts) into {} in {secs:.1} s\n  {} events in {} log files ({} of JSON, {} gzipped) · {} digest files · {} sessions\n  answer key: {}  accounts: {}",
        report.org_id,
        report.accounts.len(),
        args.out.display(),
        thousands(report.events),
        thousands(report.files),
        megabytes(report.bytes_uncompressed),
        megabytes(report.bytes_compressed),
        thousands(report.digest_files),
        thousands(report.sessions),
        args.out.join("expected.json").display(),
        args.out.join("accounts.json").display(),
    );
    if args.incidents {
        println!("  {} incidents injected, {} alerts expected (listed in the answer key)", report.incidents, report.alerts);
    }
    tracing::debug!(end = %format_utc(end), "generated");
    Ok(ExitCode::SUCCESS)
}

/// Generates on a blocking thread, with a progress bar on a terminal.
pub async fn generate(config: GenConfig, out: std::path::PathBuf) -> anyhow::Result<GenReport> {
    let total = config.events;
    let done = Arc::new(AtomicU64::new(0));
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} events · {elapsed}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar
    });
    let counter = done.clone();
    let shown = bar.clone();
    let out_dir = out.clone();
    let report = tokio::task::spawn_blocking(move || {
        trailwatch_gen::generate(&config, &out_dir, &|n| {
            let now = counter.fetch_add(n, Ordering::Relaxed) + n;
            if let Some(bar) = &shown {
                bar.set_position(now);
            }
        })
    })
    .await
    .context("the generator stopped unexpectedly")?
    .with_context(|| format!("generating into {}", out.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}
