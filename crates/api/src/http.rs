//! The HTTP side: routes, authentication, limits, health and metrics.
//!
//! | route | what |
//! |---|---|
//! | `POST /graphql` | a GraphQL request (JSON body); queries and mutations |
//! | `GET /graphql?query=…` | queries only (a mutation is refused with 405) |
//! | `GET /graphql/ws` | subscriptions over WebSocket (`graphql-transport-ws`, also `graphql-ws`) |
//! | `GET /` | GraphiQL |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | the store answers |
//! | `GET /metrics` | Prometheus text |
//!
//! Every GraphQL route needs `Authorization: Bearer <token>`: without one,
//! with a wrong, expired or revoked one, or a malformed header, the answer is
//! the same 401 with no data (the server's log says which, naming an expired
//! token by its name, never a token). The token is checked before the body
//! is looked at; then a body over the limit gets 413, a JSON array (a batch)
//! 400, each with a GraphQL-shaped error saying so. A WebSocket client that
//! cannot set headers sends `{"authorization": "Bearer …"}` as the
//! `connection_init` payload instead; a wrong one there closes the socket
//! (code 1002, "unauthorized": async-graphql's close for a refused init).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Data, ErrorExtensions};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use trailwatch_core::ports::HistoryStore;

use crate::auth::{Principal, Refusal, Tokens};
use crate::metrics::Metrics;
use crate::{schema, ApiDeps, ApiSchema, Limits};

/// More metrics to append to `/metrics` (the pipeline's counters), already in Prometheus' text format.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the routes share.
#[derive(Clone)]
pub struct ApiState {
    schema: ApiSchema,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    history: Arc<dyn HistoryStore>,
    extra_metrics: Option<ExtraMetrics>,
    limits: Limits,
}

impl ApiState {
    pub fn new(deps: Arc<ApiDeps>, tokens: Tokens) -> Self {
        ApiState {
            history: deps.history.clone(),
            limits: deps.limits,
            schema: schema(deps),
            tokens: Arc::new(tokens),
            metrics: Arc::new(Metrics::default()),
            extra_metrics: None,
        }
    }

    /// Appends these metrics to `/metrics`.
    pub fn with_extra_metrics(mut self, extra: ExtraMetrics) -> Self {
        self.extra_metrics = Some(extra);
        self
    }

    pub fn schema(&self) -> &ApiSchema {
        &self.schema
    }
}

/// The API's routes (see the module doc).
pub fn app(state: ApiState) -> Router {
    let limits = state.limits;
    let graphql = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.timeout));
    Router::new()
        .merge(graphql)
        .route("/graphql/ws", get(graphql_ws))
        .route("/", get(graphiql))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n").into_response()
}

fn authenticate(state: &ApiState, headers: &HeaderMap) -> Option<Principal> {
    let value = headers.get(header::AUTHORIZATION).map(|v| v.to_str().map_err(|_| Refusal::Malformed));
    let checked = match value {
        None => Err(None),
        Some(Ok(value)) => state.tokens.check_header(value, crate::now_ms()).map_err(Some),
        Some(Err(refusal)) => Err(Some(refusal)),
    };
    match checked {
        Ok(principal) => Some(principal),
        Err(refusal) => {
            refused(state, refusal);
            None
        }
    }
}

/// Counts and logs a refused token: the name of an expired one, never a token.
fn refused(state: &ApiState, refusal: Option<Refusal>) {
    state.metrics.unauthorized();
    match refusal {
        None => tracing::debug!("api.unauthorized: no Authorization header"),
        Some(Refusal::Malformed) => tracing::debug!("api.unauthorized: a malformed Authorization header"),
        Some(Refusal::Unknown) => tracing::info!("api.unauthorized: an unknown or revoked token"),
        Some(Refusal::Expired { name, at }) => {
            tracing::info!(token = %name, expired = %trailwatch_core::time::format_utc(at), "api.unauthorized: an expired token")
        }
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!("api.encode_error: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn request_error(status: StatusCode, message: &str) -> Response {
    let err = async_graphql::ServerError::new(message, None);
    json_response(status, &async_graphql::Response::from_errors(vec![err]))
}

async fn execute(state: &ApiState, principal: Principal, mut request: async_graphql::Request) -> Response {
    let operation = operation_name(&mut request);
    let started = Instant::now();
    let response = state.schema.execute(request.data(principal)).await;
    state.metrics.record(operation.as_deref(), started.elapsed(), response.errors.is_empty());
    json_response(StatusCode::OK, &response)
}

/// The operation's name for metrics: as the request names it, else the document's only operation's.
fn operation_name(request: &mut async_graphql::Request) -> Option<String> {
    if request.operation_name.is_some() {
        return request.operation_name.clone();
    }
    match &request.parsed_query().ok()?.operations {
        DocumentOperations::Single(_) => None,
        DocumentOperations::Multiple(ops) if ops.len() == 1 => ops.keys().next().map(|n| n.to_string()),
        DocumentOperations::Multiple(_) => None,
    }
}

async fn graphql_post(State(state): State<ApiState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    // Authentication first: who has no token learns nothing, not even that a body is too large.
    let Some(principal) = authenticate(&state, &headers) else { return unauthorized() };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("the request body is larger than {} bytes", state.limits.body_bytes);
            return request_error(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
        Err(rejection) => return request_error(rejection.status(), "the request body could not be read"),
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return request_error(StatusCode::BAD_REQUEST, "batched requests are not accepted: send one operation per request");
    }
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => execute(&state, principal, request).await,
        Err(_) => request_error(StatusCode::BAD_REQUEST, "the body is not a GraphQL request: {\"query\": …, \"variables\": …}"),
    }
}

async fn graphql_get(State(state): State<ApiState>, headers: HeaderMap, request: Request) -> Response {
    let Some(principal) = authenticate(&state, &headers) else { return unauthorized() };
    let mut request = match async_graphql::http::parse_query_string(request.uri().query().unwrap_or_default()) {
        Ok(request) => request,
        Err(_) => return request_error(StatusCode::BAD_REQUEST, "the query string is not a GraphQL request"),
    };
    // GET must not change anything: only query operations run.
    let name = request.operation_name.clone();
    let only_queries = match request.parsed_query() {
        Ok(doc) => match &doc.operations {
            DocumentOperations::Single(op) => op.node.ty == OperationType::Query,
            DocumentOperations::Multiple(ops) => match &name {
                Some(name) => ops.get(name.as_str()).is_none_or(|op| op.node.ty == OperationType::Query),
                None => ops.values().all(|op| op.node.ty == OperationType::Query),
            },
        },
        Err(_) => true, // execution reports the syntax error
    };
    if !only_queries {
        let mut response = request_error(StatusCode::METHOD_NOT_ALLOWED, "only queries may be sent with GET; use POST");
        response.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static("GET, POST"));
        return response;
    }
    execute(&state, principal, request).await
}

async fn graphql_ws(State(state): State<ApiState>, headers: HeaderMap, request: Request) -> Response {
    // A header, when sent, must be right; without one the connection_init payload must carry it.
    let from_header = match headers.get(header::AUTHORIZATION) {
        Some(_) => match authenticate(&state, &headers) {
            Some(p) => Some(p),
            None => return unauthorized(),
        },
        None => None,
    };
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(protocol) => protocol,
        Err(status) => return status.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let schema = state.schema.clone();
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        GraphQLWebSocket::new(socket, schema, protocol)
            .on_connection_init(move |payload| async move { connection_init(&state, from_header, payload) })
            .serve()
            .await
    })
}

/// The data of an authenticated WebSocket connection: its principal.
pub(crate) fn connection_init(state: &ApiState, from_header: Option<Principal>, payload: serde_json::Value) -> async_graphql::Result<Data> {
    let principal = match from_header {
        Some(p) => Ok(p),
        None => match payload.get("authorization").or_else(|| payload.get("Authorization")).and_then(|v| v.as_str()) {
            Some(value) => state.tokens.check_header(value, crate::now_ms()).map_err(Some),
            None => Err(None),
        },
    };
    match principal {
        Ok(p) => {
            let mut data = Data::default();
            data.insert(p);
            Ok(data)
        }
        Err(refusal) => {
            refused(state, refusal);
            Err(async_graphql::Error::new("unauthorized").extend_with(|_, e| e.set("code", "UNAUTHENTICATED")))
        }
    }
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").title("trailwatch").finish())
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.history.count()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!("api.not_ready: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "the store does not answer\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the store does not answer in time\n").into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = state.metrics.render();
    if let Some(extra) = &state.extra_metrics {
        text.push_str(&extra());
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from(text)).into_response()
}
