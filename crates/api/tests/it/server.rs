//! One real server on 127.0.0.1, queried with `curl`.

use std::process::Command;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_queries_the_running_server() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED curl_queries_the_running_server: curl is not installed");
        return;
    }
    let f = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = trailwatch_api::app(f.state());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/graphql");
    let body = r#"{"query":"query Open { alerts(filter: {status: [OPEN], severityAtLeast: HIGH}) { edges { node { ruleId accountId } } } }"}"#;
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output().expect("curl runs")).await.expect("join")
    };
    let ok = run(vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "-H".into(),
        format!("Authorization: Bearer {VIEWER}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        body.into(),
        url.clone(),
    ])
    .await;
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["data"]["alerts"]["edges"].as_array().map(Vec::len), Some(2), "{text}");
    let denied = run(vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--max-time".into(),
        "10".into(),
        "-d".into(),
        body.into(),
        url,
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "401");
    server.abort();
}
