//! The GraphQL API over the embedded store: its dependencies, tokens, the
//! account aliases it can set (kept in the data directory), and the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use trailwatch_api::{Accounts, AliasStore, ApiDeps, ApiState, Limits, Tokens};
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::Delivery;
use trailwatch_core::ports::PortError;
use trailwatch_core::rules::RuleSet;
use trailwatch_embedded::SqliteStore;

use crate::cli::ApiOptions;
use crate::pipeline;

/// Alerts a slow subscriber may fall behind by before it misses some.
const FEED_CAPACITY: usize = 1024;

/// The channel subscriptions read and the `api` sink writes.
pub fn feed() -> broadcast::Sender<Delivery> {
    broadcast::channel::<Delivery>(FEED_CAPACITY).0
}

/// Account aliases set through the API, kept as `{"id": "alias"}` in the data directory.
pub struct FileAliases {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileAliases {
    pub fn new(data: &Path) -> Self {
        FileAliases { path: data.join("aliases.json"), lock: tokio::sync::Mutex::new(()) }
    }

    /// The aliases saved so far.
    pub fn load(data: &Path) -> anyhow::Result<BTreeMap<String, String>> {
        let path = data.join("aliases.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not a JSON object of account id to alias", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Applies the saved aliases over the accounts file's names.
    pub fn apply(data: &Path, directory: &mut AccountDirectory) -> anyhow::Result<()> {
        for (id, alias) in FileAliases::load(data)? {
            directory.set_alias(&id, &alias);
        }
        Ok(())
    }
}

#[async_trait]
impl AliasStore for FileAliases {
    async fn save(&self, account_id: &str, alias: &str) -> Result<(), PortError> {
        let _held = self.lock.lock().await;
        let fail = |e: String| PortError::backend("account aliases", e, false);
        let mut all = match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str::<BTreeMap<String, String>>(&text).map_err(|e| fail(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        all.insert(account_id.to_owned(), alias.to_owned());
        let text = serde_json::to_string_pretty(&all).map_err(|e| fail(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path)).map_err(|e| fail(e.to_string()))
    }
}

/// The tokens from the options; when none are configured, one `admin`
/// token is generated and returned so it can be printed. The token file is
/// watched: a line added, changed or removed takes effect within a second,
/// without a restart (see `trailwatch_api::auth`).
pub fn tokens(options: &ApiOptions) -> anyhow::Result<(Tokens, Option<String>)> {
    let mut tokens = Tokens::new();
    for spec in &options.tokens {
        tokens.add_spec(spec.expose(), "--token").map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    }
    if let Some(file) = &options.token_file {
        tokens.add_file(file).map_err(|e| anyhow::anyhow!("--token-file {}: {e}", file.display()))?;
        tracing::info!(file = %file.display(), tokens = tokens.len(), "API tokens loaded; the file is watched for changes");
    }
    if !tokens.is_empty() {
        return Ok((tokens, None));
    }
    let token = trailwatch_api::generate_token().map_err(|e| anyhow::anyhow!("generating an API token: {e}"))?;
    tokens.add_spec(&format!("admin:admin:{token}"), "generated").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((tokens, Some(token)))
}

/// Everything the API reads, over the embedded store.
pub fn deps(
    store: &Arc<SqliteStore>,
    rules: Arc<RuleSet>,
    data: &Path,
    trail: Option<&Path>,
    sinks: Vec<String>,
    alert_feed: broadcast::Sender<Delivery>,
) -> anyhow::Result<Arc<ApiDeps>> {
    let mut directory = (*pipeline::load_accounts(None, trail, data)?).clone();
    FileAliases::apply(data, &mut directory)?;
    Ok(Arc::new(ApiDeps {
        history: store.clone(),
        checkpoints: store.clone(),
        alerts: store.clone(),
        lifecycle: Arc::new(Lifecycle::new(store.clone(), sinks, LifecycleConfig::default())),
        rules,
        accounts: Arc::new(Accounts::new(directory, Box::new(FileAliases::new(data)))),
        identity: pipeline::identity(store),
        alert_feed,
        limits: Limits::default(),
    }))
}

/// Serves the API on `listen` until `shutdown`; prints where, and the
/// generated token if there is one.
pub async fn serve(listen: SocketAddr, state: ApiState, generated: Option<String>, shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen} (--listen sets another address)"))?;
    let at = listener.local_addr().with_context(|| format!("the address bound for {listen}"))?;
    println!("GraphQL API on http://{at}/graphql (GraphiQL at http://{at}/)");
    if let Some(token) = generated {
        println!("admin token (generated for this run): {token}");
    }
    let app = trailwatch_api::app(state);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the API server stopped");
        }
    }))
}
