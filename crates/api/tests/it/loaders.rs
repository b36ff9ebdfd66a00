//! DataLoaders: a page of alerts reads its sample events in one batch.

use serde_json::json;
use trailwatch_core::alerts::Severity;

use super::*;

#[tokio::test]
async fn the_sample_events_of_a_page_of_alerts_are_one_read() {
    let f = fixture().await;
    // 20 alerts of 20 samples each: 400 events.
    let mut events = Vec::new();
    let mut detections = Vec::new();
    for group in 0..20 {
        for i in 0..20 {
            let e = event(PROD, 1_000 + group * 20 + i, "CreateAccessKey", ALICE);
            let mut d = detection("access-key-burst", Severity::Medium, &e);
            d.dedup_key = format!("access-key-burst|{group}");
            d.group = vec![("batch".into(), group.to_string())];
            detections.push(d);
            events.push(e);
        }
    }
    f.history.append(events.into()).await.expect("append");
    f.deps.lifecycle.apply(&detections, t("2024-01-16T12:00:00Z")).await.expect("apply");
    let watched = Arc::new(Watched::new(f.history.clone()));
    let schema = trailwatch_api::schema(Arc::new(deps_with_history(&f, watched.clone())));
    let q = r#"{ alerts(first: 20, filter: {rule: "access-key-burst"}) { edges { node { events { eventId eventName } } } } }"#;
    let (data, errors) = run_on(&schema, Role::Viewer, q, json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let edges = data["alerts"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 20);
    for edge in edges {
        let events = edge["node"]["events"].as_array().expect("events");
        assert_eq!(events.len(), 20, "every sample is read: {edge}");
        assert!(events.iter().all(|e| e["eventName"] == "CreateAccessKey"));
    }
    // The 400 keys fit one DataLoader batch (at most 1,000 keys): one read, no reads by one key.
    assert_eq!(watched.reads(), (0, 1, 400), "(get, get_many, keys)");
}
