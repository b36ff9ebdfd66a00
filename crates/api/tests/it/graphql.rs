//! Queries, mutations and the subscription through `Schema::execute`.

use std::collections::HashSet;

use async_graphql::futures_util::StreamExt;
use serde_json::{json, Value};
use trailwatch_api::{BroadcastSink, Principal, Role};
use trailwatch_core::alerts::AlertSink;

use super::*;

const ALERTS: &str = r#"query($filter: AlertFilter, $first: Int, $after: String) {
  alerts(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id ruleId severity status accountId count origin { kind principal chain { accessKeyId roleArn } } } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

fn ids(data: &Value, list: &str) -> Vec<String> {
    data[list]["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn alerts_list_with_every_filter() {
    let f = fixture().await;
    let (data, errors) = f.run(Role::Viewer, ALERTS, json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ids(&data, "alerts").len(), 3);

    let cases = [
        (json!({"rule": "iam-user-created"}), 2),
        (json!({"account": DEV}), 2),
        (json!({"severityAtLeast": "HIGH"}), 2),
        (json!({"status": ["OPEN"]}), 3),
        (json!({"status": ["RESOLVED"]}), 0),
        (json!({"originPrincipal": ALICE}), 1),
        (json!({"since": "2024-01-15T11:00:00Z"}), 1),
        (json!({"until": "2024-01-15T10:00:00Z"}), 0),
        (json!({"until": "2024-01-15T10:00:01Z"}), 2),
    ];
    for (filter, want) in cases {
        let (data, errors) = f.run(Role::Viewer, ALERTS, json!({"filter": filter})).await;
        assert!(errors.is_empty(), "{filter}: {errors:?}");
        assert_eq!(ids(&data, "alerts").len(), want, "{filter}");
    }
    let (data, _) = f.run(Role::Viewer, ALERTS, json!({"filter": {"originPrincipal": ALICE}})).await;
    let node = &data["alerts"]["edges"][0]["node"];
    assert_eq!(node["origin"]["kind"], "IAM_USER");
    assert_eq!(node["count"], 20);
    assert_eq!(node["origin"]["chain"][0]["accessKeyId"], KEY);
}

#[tokio::test]
async fn alert_paging_has_no_duplicates_or_gaps() {
    let f = fixture().await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (data, errors) = f.run(Role::Viewer, ALERTS, json!({"first": 1, "after": after})).await;
        assert!(errors.is_empty(), "{errors:?}");
        seen.extend(ids(&data, "alerts"));
        let info = &data["alerts"]["pageInfo"];
        if info["hasNextPage"] != true {
            break;
        }
        after = info["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 3);
}

#[tokio::test]
async fn one_alert_with_transitions_and_events() {
    let f = fixture().await;
    let (data, _) = f.run(Role::Viewer, ALERTS, json!({"filter": {"originPrincipal": ALICE}})).await;
    let id = data["alerts"]["edges"][0]["node"]["id"].as_str().expect("id").to_owned();
    let q = r#"query($id: String!) { alert(id: $id) { id title summary firstSeen lastSeen
        transitions { revision kind at cause by notify }
        events { eventId eventName eventTime accountAlias raw origin { principal } } } }"#;
    let (data, errors) = f.run(Role::Viewer, q, json!({"id": id})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let alert = &data["alert"];
    assert_eq!(alert["firstSeen"], "2024-01-15T10:00:00Z");
    assert_eq!(alert["transitions"][0]["kind"], "OPENED");
    let events = alert["events"].as_array().expect("events");
    assert_eq!(events.len(), 20, "every sample is in history");
    assert_eq!(events[0]["accountAlias"], "Prod Payments");
    assert_eq!(events[0]["raw"]["eventName"], "CreateUser");
    assert_eq!(events[0]["origin"]["principal"], ALICE);
    let (data, errors) = f.run(Role::Viewer, r#"{ alert(id: "nope") { id } }"#, json!({})).await;
    assert!(errors.is_empty() && data["alert"].is_null());
}

#[tokio::test]
async fn acknowledge_and_resolve_record_who_did_it() {
    let f = fixture().await;
    let (data, _) = f.run(Role::Viewer, ALERTS, json!({"filter": {"account": DEV, "rule": "iam-delete-denied"}})).await;
    let id = ids(&data, "alerts").remove(0);
    let ack = r#"mutation($id: String!) { acknowledgeAlert(id: $id, note: "looking") { status } }"#;
    let (data, errors) = f.run(Role::Responder, ack, json!({"id": id})).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data["acknowledgeAlert"]["status"], "ACKNOWLEDGED");
    let (_, errors) = f.run(Role::Responder, ack, json!({"id": id})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "acknowledged twice: {errors:?}");
    let resolve = r#"mutation($id: String!) { resolveAlert(id: $id, note: "false positive") { status transitions { kind cause by } } }"#;
    let (data, errors) = f.run(Role::Admin, resolve, json!({"id": id})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let transitions = data["resolveAlert"]["transitions"].as_array().expect("transitions");
    assert_eq!(transitions.last().expect("last")["cause"], "false positive");
    assert_eq!(transitions.last().expect("last")["by"], "ada");
    assert_eq!(transitions[transitions.len() - 2]["by"], "rita");
    let (_, errors) = f.run(Role::Responder, r#"mutation { resolveAlert(id: "missing") { id } }"#, json!({})).await;
    assert_eq!(codes(&errors), ["NOT_FOUND"]);
}

#[tokio::test]
async fn a_viewer_cannot_mutate_and_a_responder_cannot_alias() {
    let f = fixture().await;
    let (data, _) = f.run(Role::Viewer, ALERTS, json!({})).await;
    let id = ids(&data, "alerts").remove(0);
    let (data, errors) = f.run(Role::Viewer, r#"mutation($id: String!) { acknowledgeAlert(id: $id) { status } }"#, json!({"id": id})).await;
    assert_eq!(codes(&errors), ["FORBIDDEN"]);
    assert!(data.is_null());
    let (_, errors) = f.run(Role::Responder, r#"mutation { setAccountAlias(accountId: "111111111111", alias: "pay") { alias } }"#, json!({})).await;
    assert_eq!(codes(&errors), ["FORBIDDEN"]);
    assert!(f.aliases.saved().is_empty());
    let stored = f.deps.alerts.get(&id).await.expect("get").expect("alert");
    assert_eq!(stored.revision, 1, "nothing changed");
}

#[tokio::test]
async fn set_account_alias_persists_and_shows() {
    let f = fixture().await;
    let q = r#"mutation { setAccountAlias(accountId: "111111111111", alias: "payments-prod") { id name alias } }"#;
    let (data, errors) = f.run(Role::Admin, q, json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data["setAccountAlias"], json!({"id": PROD, "name": "Prod Payments", "alias": "payments-prod"}));
    assert_eq!(f.aliases.saved().get(PROD).map(String::as_str), Some("payments-prod"));
    let (data, _) = f.run(Role::Viewer, r#"{ account(id: "111111111111") { alias } }"#, json!({})).await;
    assert_eq!(data["account"]["alias"], "payments-prod");
    let (_, errors) = f.run(Role::Admin, r#"mutation { setAccountAlias(accountId: "12", alias: "x") { id } }"#, json!({})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"]);
}

#[tokio::test]
async fn accounts_merge_the_file_and_the_trail() {
    let f = fixture().await;
    let q = r#"query($first: Int, $after: String, $filter: AccountFilter) { accounts(first: $first, after: $after, filter: $filter) {
        edges { node { id name alias email status ouPath tags { key value } inOrganization lastEventTime regions { region lastEventTime lastFileTime files failedFiles } } }
        pageInfo { hasNextPage endCursor } } }"#;
    let (data, errors) = f.run(Role::Viewer, q, json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let nodes: Vec<&Value> = data["accounts"]["edges"].as_array().expect("edges").iter().map(|e| &e["node"]).collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["id"], PROD);
    assert_eq!(nodes[0]["email"], "pay@example.com");
    assert_eq!(nodes[0]["ouPath"], "Root/Workloads/Prod");
    assert_eq!(nodes[0]["tags"], json!([{"key": "environment", "value": "production"}]));
    assert!(nodes[1]["ouPath"].is_null() && nodes[1]["tags"] == json!([]), "an account the file says less of: {}", nodes[1]);
    assert_eq!(nodes[0]["lastEventTime"], "2024-01-15T10:59:00Z");
    let us = nodes[0]["regions"].as_array().expect("regions").iter().find(|r| r["region"] == "us-east-1").expect("us-east-1").clone();
    assert_eq!(us["files"], 1);
    assert!(us["lastFileTime"].as_str().is_some_and(|t| t.starts_with("2024-01-15T11:0")), "{us}");
    assert_eq!(nodes[2]["status"], "SUSPENDED");
    assert!(nodes[2]["lastEventTime"].is_null());
    let (data, _) = f.run(Role::Viewer, q, json!({"first": 2})).await;
    let after = data["accounts"]["pageInfo"]["endCursor"].as_str().expect("cursor").to_owned();
    assert_eq!(data["accounts"]["pageInfo"]["hasNextPage"], true);
    let (data, _) = f.run(Role::Viewer, q, json!({"first": 2, "after": after})).await;
    assert_eq!(data["accounts"]["edges"][0]["node"]["id"], "333333333333");
    assert_eq!(data["accounts"]["pageInfo"]["hasNextPage"], false);
    let (data, _) = f.run(Role::Viewer, q, json!({"filter": {"status": "SUSPENDED"}})).await;
    assert_eq!(data["accounts"]["edges"].as_array().map(Vec::len), Some(1));
    let (data, _) = f.run(Role::Viewer, r#"{ account(id: "999999999999") { id } }"#, json!({})).await;
    assert!(data["account"].is_null());
}

#[tokio::test]
async fn rules_list_the_pack_with_last_fired() {
    let f = fixture().await;
    let (data, errors) =
        f.run(Role::Viewer, "{ rules { id title level tags tests testsPassed testFailures path indexed lastFired threshold { above } } }", json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let rules = data["rules"].as_array().expect("rules");
    let brute = rules.iter().find(|r| r["id"] == "console-signin-brute-force").expect("the built-in pack is loaded");
    assert!(brute["tests"].as_u64().unwrap_or(0) > 0);
    assert!(brute["threshold"]["above"].as_u64().is_some());
    assert!(brute["lastFired"].is_null());
    for rule in rules {
        assert_eq!(rule["testsPassed"], rule["tests"], "every test of {} passes: {}", rule["id"], rule["testFailures"]);
        assert_eq!(rule["testFailures"], json!([]));
    }
}

#[tokio::test]
async fn identity_resolves_a_key_at_a_time() {
    let f = fixture().await;
    let q = r#"query($key: String!, $at: DateTime) { identity(accessKeyId: $key, at: $at) { accessKeyId at missing origin { kind principal confidence chain { roleArn kind time } } } }"#;
    let (data, errors) = f.run(Role::Viewer, q, json!({"key": KEY, "at": "2024-01-15T10:30:00Z"})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let o = &data["identity"]["origin"];
    assert_eq!(o["kind"], "IAM_USER");
    assert_eq!(o["principal"], ALICE);
    assert_eq!(o["confidence"], "EXACT");
    assert_eq!(o["chain"][0]["kind"], "ASSUME_ROLE");
    // Outside the session's window the key names nothing known.
    let (data, _) = f.run(Role::Viewer, q, json!({"key": KEY, "at": "2024-01-15T08:00:00Z"})).await;
    assert_ne!(data["identity"]["origin"]["principal"], ALICE);
    assert!(data["identity"]["missing"].is_string());
    let (_, errors) = f.run(Role::Viewer, q, json!({"key": KEY, "at": "2030-01-01T00:00:00Z"})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "after trail time");
    let (_, errors) = f.run(Role::Viewer, q, json!({"key": "x'; DROP"})).await;
    assert_eq!(codes(&errors), ["BAD_USER_INPUT"]);
}

#[tokio::test]
async fn health_sums_up_ingest_and_delivery() {
    let f = fixture().await;
    let (data, errors) = f
        .run(
            Role::Viewer,
            "{ health(quietHours: 1) { files { status count } events pendingResolutions deliveriesOutstanding { sink count } quietAccounts quietHours } }",
            json!({}),
        )
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    let h = &data["health"];
    assert_eq!(h["files"], json!([{"status": "done", "count": 2}]));
    assert_eq!(h["events"], 120);
    assert_eq!(h["pendingResolutions"], 0);
    let sinks = h["deliveriesOutstanding"].as_array().expect("sinks");
    assert!(sinks.iter().any(|s| s["sink"] == "api" && s["count"].as_u64().unwrap_or(0) >= 3), "{sinks:?}");
    // The fixture's events are from 2024: every account is quiet now.
    assert_eq!(h["quietAccounts"], json!([PROD, DEV, "333333333333"]));
}

const EVENTS: &str = r#"query($filter: EventSearch!, $first: Int, $after: String) {
  events(filter: $filter, first: $first, after: $after) {
    edges { cursor node { eventId accountId eventName region errorCode readOnly sourceIp actor { type arn } origin { principal kind } } }
    pageInfo { hasNextPage endCursor } } }"#;

fn day() -> Value {
    json!({"since": "2024-01-15T00:00:00Z", "until": "2024-01-16T00:00:00Z"})
}

fn with(extra: Value) -> Value {
    let mut f = day();
    for (k, v) in extra.as_object().expect("object") {
        f[k] = v.clone();
    }
    f
}

#[tokio::test]
async fn events_search_with_every_filter() {
    let f = fixture().await;
    let arn = format!("arn:aws:sts::{DEV}:assumed-role/Admin/work");
    let cases = [
        (json!({}), 121),
        (json!({"account": PROD}), 60),
        (json!({"region": "eu-west-1"}), 61),
        (json!({"eventSource": "iam.amazonaws.com"}), 121),
        (json!({"eventName": "DeleteUser"}), 6),
        (json!({"actorArn": arn}), 61),
        (json!({"originPrincipal": ALICE}), 60),
        (json!({"originKind": "IAM_USER"}), 121),
        (json!({"originKind": "ROOT"}), 0),
        (json!({"sourceIp": "203.0.113.7"}), 121),
        (json!({"errorCode": "AccessDenied"}), 6),
        (json!({"readOnly": false}), 27),
        (json!({"since": "2024-01-15T10:30:00Z", "until": "2024-01-15T10:31:00Z"}), 2),
    ];
    for (extra, want) in cases {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let (data, errors) = f.run(Role::Viewer, EVENTS, json!({"filter": with(extra.clone()), "first": 200, "after": after})).await;
            assert!(errors.is_empty(), "{extra}: {errors:?}");
            n += data["events"]["edges"].as_array().map_or(0, Vec::len);
            if data["events"]["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = data["events"]["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
        assert_eq!(n, want, "{extra}");
    }
    let q = format!(r#"{{ event(accountId: "{DEV}", eventId: "ev-{DEV}-0010") {{ eventName errorCode accountAlias raw }} }}"#);
    let (data, errors) = f.run(Role::Viewer, &q, json!({})).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data["event"]["errorCode"], "AccessDenied");
    assert_eq!(data["event"]["accountAlias"], "Dev");
    assert_eq!(data["event"]["raw"]["eventID"], format!("ev-{DEV}-0010"));
}

#[tokio::test]
async fn event_paging_from_any_edge_while_events_arrive() {
    let f = fixture().await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut page = 0;
    loop {
        let (data, errors) = f.run(Role::Viewer, EVENTS, json!({"filter": day(), "first": 7, "after": after})).await;
        assert!(errors.is_empty(), "{errors:?}");
        let edges = data["events"]["edges"].as_array().expect("edges").clone();
        seen.extend(edges.iter().map(|e| e["node"]["eventId"].as_str().unwrap_or_default().to_owned()));
        if data["events"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        // Alternate between the end cursor and a middle edge's cursor (then skip back to it).
        after = if page % 2 == 0 {
            data["events"]["pageInfo"]["endCursor"].as_str().map(str::to_owned)
        } else {
            seen.truncate(seen.len() - 3);
            edges[edges.len() - 4]["cursor"].as_str().map(str::to_owned)
        };
        if page == 3 {
            // Ingest goes on: a later event shows up on a later page, once.
            f.history.append(vec![event(PROD, 200, "GetUser", ALICE)].into()).await.expect("append");
        }
        page += 1;
    }
    assert_eq!(seen.len(), 122, "all events, the late one included");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 122, "no duplicates");
}

#[tokio::test]
async fn sessions_show_the_blast_radius_of_an_origin() {
    let f = fixture().await;
    let q = r#"query($p: String!) { sessions(originPrincipal: $p, since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z") {
        originPrincipal accounts roles eventsExamined truncated sessions { accessKeyId accountId roleArn depth events firstEvent lastEvent } } }"#;
    let (data, errors) = f.run(Role::Viewer, q, json!({"p": ALICE})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let s = &data["sessions"];
    assert_eq!(s["accounts"], json!([PROD]));
    assert_eq!(s["roles"], json!([format!("arn:aws:iam::{PROD}:role/Admin")]));
    assert_eq!(s["eventsExamined"], 60);
    assert_eq!(s["sessions"][0]["accessKeyId"], KEY);
    assert_eq!(s["sessions"][0]["events"], 60);
    assert_eq!(s["truncated"], false);
}

#[tokio::test]
async fn a_subscription_receives_a_transition_through_the_sink() {
    let f = fixture().await;
    let schema = trailwatch_api::schema(f.deps.clone());
    let request = async_graphql::Request::new(
        "subscription { alertTransitions(minSeverity: MEDIUM) { deliveryKey alert { id severity status } transition { kind by cause } } }",
    )
    .data(Principal { name: "vera".into(), role: Role::Viewer });
    let mut stream = schema.execute_stream(request);
    // The subscription subscribes when first polled.
    let next = tokio::spawn(async move { stream.next().await.map(|r| serde_json::to_value(&r).expect("json")) });
    while f.feed.receiver_count() == 0 {
        tokio::task::yield_now().await;
    }
    let sink = BroadcastSink::new(f.feed.clone());
    assert_eq!(sink.name(), "api");
    // What the delivery worker would hand the api sink: the outbox entries, oldest first.
    let due = f.deps.alerts.due("api", i64::MAX, 100).await.expect("due");
    assert!(due.len() >= 3);
    for d in &due {
        sink.deliver(d).await.expect("deliver");
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), next).await.expect("in time").expect("task").expect("an item");
    assert!(got.get("errors").is_none(), "{got}");
    let item = &got["data"]["alertTransitions"];
    assert_eq!(item["alert"]["severity"], "HIGH", "LOW alerts are filtered out");
    assert_eq!(item["transition"]["kind"], "OPENED");
    assert!(item["deliveryKey"].as_str().is_some_and(|k| k.ends_with(":1")));
}

#[tokio::test]
async fn the_schema_file_is_in_sync() {
    let f = fixture().await;
    let sdl = trailwatch_api::schema(f.deps.clone()).sdl();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).expect("write schema.graphql");
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(file == sdl, "crates/api/schema.graphql is out of date: run UPDATE_SCHEMA=1 cargo test -p trailwatch-api the_schema_file_is_in_sync");
}
