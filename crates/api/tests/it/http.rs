//! The routes through `Router::oneshot`: auth, GET vs POST, health, metrics, GraphiQL.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

pub async fn call(app: axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

pub fn post(token: Option<&str>, body: Value) -> Request<Body> {
    let mut r = Request::post("/graphql").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    r.body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn no_token_or_a_wrong_one_gets_401_and_no_data() {
    let f = fixture().await;
    let app = app_of(&f);
    let q = json!({"query": "{ alerts { edges { node { id } } } }"});
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, body) = call(app.clone(), post(token, q.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(!body.contains("data") && !body.contains("alert"), "{body}");
    }
    let basic = Request::post("/graphql").header(header::AUTHORIZATION, format!("Basic {VIEWER}")).body(Body::from(q.to_string())).expect("request");
    assert_eq!(call(app.clone(), basic).await.0, StatusCode::UNAUTHORIZED);
    let get = Request::get("/graphql?query=%7Brules%7Bid%7D%7D").body(Body::empty()).expect("request");
    assert_eq!(call(app.clone(), get).await.0, StatusCode::UNAUTHORIZED);
    let ws = Request::get("/graphql/ws").header(header::AUTHORIZATION, "Bearer wrong-token-0123456789").body(Body::empty()).expect("request");
    assert_eq!(call(app.clone(), ws).await.0, StatusCode::UNAUTHORIZED, "a wrong header on the WebSocket handshake");
    let (_, metrics) = call(app, Request::get("/metrics").body(Body::empty()).expect("request")).await;
    assert!(metrics.contains("trailwatch_api_unauthorized_total 6"), "{metrics}");
}

#[tokio::test]
async fn a_viewer_queries_and_is_forbidden_to_mutate_over_http() {
    let f = fixture().await;
    let app = app_of(&f);
    let (status, body) =
        call(app.clone(), post(Some(VIEWER), json!({"query": "query Open { alerts(filter: {status: [OPEN]}) { edges { node { id } } } }"}))).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"]["alerts"]["edges"].as_array().map(Vec::len), Some(3));
    let (status, body) = call(app.clone(), post(Some(VIEWER), json!({"query": r#"mutation { resolveAlert(id: "x") { id } }"#}))).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(codes(v["errors"].as_array().expect("errors")), ["FORBIDDEN"]);
    assert!(v["data"].is_null());
    let (status, body) = call(app.clone(), post(Some(RESPONDER), json!({"query": r#"mutation { resolveAlert(id: "x") { id } }"#}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("NOT_FOUND"), "a responder gets past the guard: {body}");
    let (_, metrics) = call(app, Request::get("/metrics").body(Body::empty()).expect("request")).await;
    assert!(metrics.contains(r#"trailwatch_api_requests_total{operation="Open",outcome="ok"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"trailwatch_api_request_duration_seconds_count{operation="Open"} 1"#), "{metrics}");
}

#[tokio::test]
async fn get_runs_queries_only() {
    let f = fixture().await;
    let app = app_of(&f);
    let get = |q: &str| {
        Request::get(format!("/graphql?query={}", q.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D").replace('"', "%22")))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .expect("request")
    };
    let (status, body) = call(app.clone(), get("{ rules { id } }")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("console-signin-brute-force"));
    let (status, _) = call(app.clone(), get(r#"mutation { setAccountAlias(accountId: "111111111111", alias: "x") { id } }"#)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(f.aliases.saved().is_empty());
}

#[tokio::test]
async fn health_readiness_metrics_and_graphiql_answer() {
    let f = fixture().await;
    let app = app_of(&f);
    let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
    assert_eq!(call(app.clone(), get("/healthz")).await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(call(app.clone(), get("/readyz")).await.0, StatusCode::OK);
    let (status, text) = call(app.clone(), get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("# TYPE trailwatch_api_requests_total counter"));
    let (status, page) = call(app.clone(), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("graphiql") && page.contains("/graphql/ws"), "GraphiQL is served");
    let state = f.state().with_extra_metrics(std::sync::Arc::new(|| "trailwatch_pipeline_events_total 42\n".to_owned()));
    let (_, text) = call(trailwatch_api::app(state), get("/metrics")).await;
    assert!(text.ends_with("trailwatch_pipeline_events_total 42\n"));
}

#[tokio::test]
async fn store_failures_are_generic_to_the_client() {
    let f = fixture().await;
    let mut deps = deps_with_history(&f, std::sync::Arc::new(Broken));
    deps.limits = Limits::default();
    let state = ApiState::new(std::sync::Arc::new(deps), tokens());
    let app = trailwatch_api::app(state);
    let q = json!({"query": r#"{ event(accountId: "111111111111", eventId: "x") { eventId } }"#});
    let (status, body) = call(app.clone(), post(Some(VIEWER), q)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("INTERNAL") && !body.contains("sqlite") && !body.contains("/var/lib"), "{body}");
    assert_eq!(call(app, Request::get("/readyz").body(Body::empty()).expect("request")).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

pub fn app_of(f: &Fixture) -> axum::Router {
    trailwatch_api::app(f.state())
}

/// A history store whose backend always fails, with internals in its messages.
struct Broken;

fn broken() -> trailwatch_core::PortError {
    trailwatch_core::PortError::backend("sqlite /var/lib/trailwatch.db", "SELECT * FROM events: disk I/O error", false)
}

#[async_trait::async_trait]
impl HistoryStore for Broken {
    async fn append(&self, _: std::sync::Arc<[Event]>) -> Result<trailwatch_core::ports::WriteReport, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn page(&self, _: &trailwatch_core::ports::HistoryQuery) -> Result<trailwatch_core::ports::HistoryPage, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn count(&self) -> Result<u64, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn set_origins(&self, _: std::sync::Arc<[trailwatch_core::ports::OriginUpdate]>) -> Result<u64, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn get(&self, _: &str, _: &str) -> Result<Option<Event>, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn get_many(&self, _: &[(String, String)]) -> Result<Vec<Event>, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn search(&self, _: &trailwatch_core::ports::EventFilter) -> Result<trailwatch_core::ports::SearchPage, trailwatch_core::PortError> {
        Err(broken())
    }
    async fn last_events(&self) -> Result<Vec<trailwatch_core::ports::LastEvent>, trailwatch_core::PortError> {
        Err(broken())
    }
}
