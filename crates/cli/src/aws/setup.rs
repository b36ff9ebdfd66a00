//! `trailwatch aws-setup`: creates what the services need in a development
//! account or an emulator, and prints the settings to run them with.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use trailwatch_aws::provision::{provision, Plan};

use super::args::AwsSetupArgs;
use super::Settings;
use crate::commands::emit;

pub async fn run(args: AwsSetupArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_options(&args.aws)?;
    let clients = settings.connect("aws-setup").await?;
    let bucket = settings.trail_bucket()?.to_owned();
    let trail_prefix = match settings.options.trail_prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let plan = Plan {
        bucket: bucket.clone(),
        trail_prefix,
        name_prefix: args.name_prefix.clone(),
        tables: settings.tables.clone(),
        max_receive_count: args.max_receive_count,
        visibility: Duration::from_secs(120),
    };
    let made = provision(&clients, &plan).await.context("creating the resources")?;
    let athena = settings.athena(&clients);
    for statement in athena_ddl(&clients, &settings).await? {
        athena.query(&statement, &[]).await.with_context(|| format!("running Athena DDL: {}", statement.lines().next().unwrap_or_default()))?;
    }
    let mut text = String::new();
    for (name, value) in [
        ("TRAILWATCH_TRAIL_BUCKET", bucket.as_str()),
        ("TRAILWATCH_TABLE_PREFIX", settings.options.table_prefix.as_str()),
        ("TRAILWATCH_NOTIFICATION_QUEUE", made.notification_queue_url.as_str()),
        ("TRAILWATCH_ENRICHER_QUEUE", made.enricher_queue_url.as_str()),
        ("TRAILWATCH_ALERT_TOPIC_ARN", made.alert_topic_arn.as_str()),
    ] {
        text.push_str(&format!("{name}={value}\n"));
    }
    text.push_str(&format!(
        "# dead-letter queues: {} and {}\n# the bucket notifies {} (subscribe more consumers there)\n",
        made.notification_dlq_url, made.enricher_dlq_url, made.objects_topic_arn
    ));
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// How far back the tables' date projection reaches.
const QUERYABLE_DAYS: i64 = 2 * 366;

/// The database, the raw trail table (for an organization trail), and the
/// enriched history's two tables. Partition projection lists the accounts:
/// run this again when accounts join (the enricher's account refresh does).
async fn athena_ddl(clients: &trailwatch_aws::clients::Clients, settings: &Settings) -> anyhow::Result<Vec<String>> {
    use trailwatch_aws::athena::ddl;
    let o = &settings.options;
    let organization = clients.organizations.describe_organization().send().await.ok().and_then(|out| out.organization).and_then(|org| org.id);
    let mut accounts: Vec<String> = match &organization {
        Some(_) => trailwatch_aws::organizations::load_directory(&clients.organizations)
            .await
            .context("listing the organization's accounts")?
            .accounts()
            .map(|a| a.id.clone())
            .collect(),
        None => Vec::new(),
    };
    if accounts.is_empty() {
        accounts.push(clients.caller_identity().await.context("asking STS for this account")?.account);
    }
    accounts.sort();
    let since = crate::commands::now_ms() - QUERYABLE_DAYS * 86_400_000;
    let history = format!("s3://{}/{}", settings.history_bucket()?, o.history_prefix.trim_matches('/'));
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {}", ddl::identifier("--athena-database", &o.athena_database)?)];
    if let Some(org) = &organization {
        let trail = match o.trail_prefix.trim_matches('/') {
            "" => format!("s3://{}", settings.trail_bucket()?),
            p => format!("s3://{}/{p}", settings.trail_bucket()?),
        };
        statements.push(ddl::raw_trail_ddl(&o.athena_database, &o.athena_trail_table, &trail, org, &accounts, since)?);
    }
    statements.push(ddl::enriched_events_ddl(&o.athena_database, &o.athena_events_table, &history, &accounts, since)?);
    statements.push(ddl::origin_updates_ddl(
        &o.athena_database,
        &format!("{}_origins", o.athena_events_table),
        // The events' location: the updates sit beside it, under `<location>-origins/`.
        &history,
        &accounts,
        since,
    )?);
    Ok(statements)
}
