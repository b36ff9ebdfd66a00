//! Depth, complexity, page size, time range and body size limits.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;

use super::http::{app_of, call, post};
use super::*;

#[tokio::test]
async fn page_size_is_bounded() {
    let f = fixture().await;
    let (_, errors) = f.run(Role::Viewer, "{ alerts(first: 201) { edges { cursor } } }", json!({})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"]);
    let (_, errors) = f.run(Role::Viewer, "{ alerts(first: -1) { edges { cursor } } }", json!({})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"]);
    let (_, errors) = f.run(Role::Viewer, "{ alerts(first: 200) { edges { cursor } } }", json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let (_, errors) = f.run(Role::Viewer, r#"{ alerts(after: "bm90IGEgY3Vyc29y") { edges { cursor } } }"#, json!({})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "a forged cursor");
}

#[tokio::test]
async fn event_searches_need_a_bounded_range() {
    let f = fixture().await;
    let q = "query($f: EventSearch!) { events(filter: $f) { edges { cursor } } }";
    let (_, errors) = f.run(Role::Viewer, q, json!({"f": {"since": "2024-01-01T00:00:00Z", "until": "2024-02-02T00:00:00Z"}})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "32 days");
    let (_, errors) = f.run(Role::Viewer, q, json!({"f": {"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "backwards");
    let (_, errors) = f.run(Role::Viewer, q, json!({"f": {"since": "2024-01-01T00:00:00Z"}})).await;
    assert!(!errors.is_empty(), "until is required");
    let (_, errors) = f.run(Role::Viewer, q, json!({"f": {"since": "2024-01-01T00:00:00Z", "until": "2024-02-01T00:00:00Z"}})).await;
    assert!(errors.is_empty(), "31 days is allowed: {errors:?}");
    let s = r#"{ sessions(originPrincipal: "x", since: "2024-01-01T00:00:00Z", until: "2024-03-01T00:00:00Z") { truncated } }"#;
    let (_, errors) = f.run(Role::Viewer, s, json!({})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"]);
}

#[tokio::test]
async fn deep_and_complex_queries_are_refused() {
    let f = fixture().await;
    // 15 levels (the limit is 12).
    let deep = format!("{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}", "ofType { ".repeat(10), "} ".repeat(10));
    let (data, errors) = f.run(Role::Viewer, &deep, json!({})).await;
    assert!(data.is_null());
    assert!(errors.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("nested too deep"))), "{errors:?}");
    let complex = "{ a: alerts(first: 200) { edges { node { id title summary events { eventId raw } transitions { kind } } } } }";
    let (data, errors) = f.run(Role::Viewer, complex, json!({})).await;
    assert!(data.is_null(), "{errors:?}");
    assert!(errors.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("too complex"))), "{errors:?}");
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused() {
    let f = fixture().await;
    let padding = " ".repeat(70 * 1024);
    let (status, body) = call(app_of(&f), post(Some(VIEWER), json!({"query": format!("{{ rules {{ id }} }}{padding}")}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let garbage = Request::post("/graphql").header(header::AUTHORIZATION, format!("Bearer {VIEWER}")).body(Body::from("not json")).expect("request");
    assert_eq!(call(app_of(&f), garbage).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_408() {
    let f = fixture().await;
    let slow = Arc::new(Watched::slow(f.history.clone(), Duration::from_secs(10)));
    let mut deps = deps_with_history(&f, slow.clone());
    deps.limits = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let app = trailwatch_api::app(ApiState::new(Arc::new(deps), tokens()));
    let started = std::time::Instant::now();
    let q = json!({"query": format!(r#"{{ event(accountId: "{PROD}", eventId: "ev-{PROD}-0001") {{ eventId }} }}"#)});
    let (status, body) = call(app.clone(), post(Some(VIEWER), q)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the limit, not when the store did: {:?}", started.elapsed());
    assert_eq!(slow.reads().0, 1, "the request reached the store");
    // A request within the limit on the same server still answers.
    let (status, body) = call(app, post(Some(VIEWER), json!({"query": "{ rules { id } }"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("root-account-usage"), "{body}");
}
