//! `onboarding(window, regions)`: the account list against the newest
//! delivery per account and region, as a viewer reads it.

use serde_json::{json, Value};
use trailwatch_api::Role;
use trailwatch_core::time::{civil_from_days, format_utc};

use super::*;

const NEVER: &str = "444444444444";
const STRANGER: &str = "999999999999";

const QUERY: &str = r#"query($window: String!, $regions: [String!], $status: [OnboardingStatus!]) {
  onboarding(window: $window, regions: $regions) {
    windowSeconds since regions regionsGiven allDelivering
    counts { accounts onboarded silent neverDelivered suspended unknownAccounts }
    accounts(status: $status) { id name ouPath organizationStatus status lastDelivery silentRegions reason regions { region lastDelivery state } }
  }
}"#;

/// A log file of `account` in `region` whose name says `at`.
fn recent_file(account: &str, region: &str, at: i64) -> FileOutcome {
    let (y, m, d) = civil_from_days(at.div_euclid(86_400_000));
    let stamp: String = format_utc(at).chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(13).collect();
    FileOutcome {
        key: format!("AWSLogs/o-abcdefghij/{account}/CloudTrail/{region}/{y:04}/{m:02}/{d:02}/{account}_CloudTrail_{region}_{stamp}Z_AbCdEf0123456789.json.gz"),
        kind: ObjectKind::Log,
        account_id: account.to_owned(),
        region: region.to_owned(),
        size: 100,
        modified: at,
        status: FileStatus::Done,
        events: 1,
        bytes: 1000,
        rejected: Vec::new(),
        error: None,
    }
}

fn account<'a>(data: &'a Value, id: &str) -> &'a Value {
    data["onboarding"]["accounts"].as_array().expect("accounts").iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("{id} missing: {data}"))
}

#[tokio::test]
async fn onboarding_reports_each_account_against_its_deliveries() {
    let f = fixture().await;
    // The fixture's trail is from 2024: prod delivers again now, in both its regions; a
    // stranger delivers too; a new account has never delivered.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let hour_ago = now - 3_600_000;
    let files = vec![recent_file(PROD, "us-east-1", hour_ago), recent_file(PROD, "eu-west-1", hour_ago), recent_file(STRANGER, "us-east-1", hour_ago)];
    f.deps.checkpoints.record(files.into(), now).await.expect("record");
    let mut directory = f.deps.accounts.directory();
    let with_new =
        AccountDirectory::from_list_accounts(r#"[{"Id":"444444444444","Name":"Fresh Workload","Status":"ACTIVE","OuPath":"Root/Workloads"}]"#, "accounts.json")
            .expect("accounts");
    let mut listed: Vec<trailwatch_core::accounts::Account> = directory.accounts().cloned().collect();
    listed.extend(with_new.accounts().cloned());
    directory = AccountDirectory::from_list_accounts(&serde_json::to_string(&listed).expect("json"), "accounts.json").expect("accounts");
    f.deps.accounts.replace(directory);

    let (data, errors) = f.run(Role::Viewer, QUERY, json!({"window": "24h"})).await;
    assert!(errors.is_empty(), "a viewer reads it: {errors:?}");
    let o = &data["onboarding"];
    assert_eq!(o["windowSeconds"], 86_400);
    assert_eq!(o["allDelivering"], false);
    assert_eq!(o["regionsGiven"], false);
    assert_eq!(o["regions"], json!(["eu-west-1", "us-east-1"]));
    assert_eq!(o["counts"], json!({"accounts": 5, "onboarded": 1, "silent": 1, "neverDelivered": 1, "suspended": 1, "unknownAccounts": 1}));
    let order: Vec<&str> = o["accounts"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(order, ["NEVER_DELIVERED", "SILENT", "UNKNOWN_ACCOUNT", "SUSPENDED", "ONBOARDED"], "those needing attention first");

    let prod = account(&data, PROD);
    assert_eq!(
        (prod["status"].as_str(), prod["name"].as_str(), prod["ouPath"].as_str()),
        (Some("ONBOARDED"), Some("Prod Payments"), Some("Root/Workloads/Prod"))
    );
    assert_eq!(prod["silentRegions"], json!([]));
    assert_eq!(prod["regions"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect::<Vec<_>>(), ["DELIVERING", "DELIVERING"]);

    let dev = account(&data, DEV);
    assert_eq!(dev["status"], "SILENT");
    assert_eq!(dev["silentRegions"], json!(["eu-west-1", "us-east-1"]));
    assert!(dev["lastDelivery"].as_str().unwrap().starts_with("2024-01-15T"), "{dev}");
    assert!(dev["reason"].as_str().unwrap().starts_with("no log file within 24h from any expected region"), "{dev}");

    let never = account(&data, NEVER);
    assert_eq!((never["status"].as_str(), never["lastDelivery"].as_str()), (Some("NEVER_DELIVERED"), None));
    assert_eq!(account(&data, "333333333333")["status"], "SUSPENDED");
    let stranger = account(&data, STRANGER);
    assert_eq!((stranger["status"].as_str(), stranger["name"].as_str()), (Some("UNKNOWN_ACCOUNT"), None));

    // Only the failing ones; and regions asked for explicitly.
    let (data, errors) = f.run(Role::Viewer, QUERY, json!({"window": "7d", "status": ["SILENT", "NEVER_DELIVERED"]})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let ids: Vec<&str> = data["onboarding"]["accounts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [NEVER, DEV]);
    let (data, errors) = f.run(Role::Viewer, QUERY, json!({"window": "24h", "regions": ["us-east-1", "ap-south-1"]})).await;
    assert!(errors.is_empty(), "{errors:?}");
    let prod = account(&data, PROD);
    assert_eq!(prod["status"], "SILENT", "prod never delivered from ap-south-1");
    assert_eq!(prod["silentRegions"], json!(["ap-south-1"]));
    assert_eq!(data["onboarding"]["regionsGiven"], true);
}

#[tokio::test]
async fn onboarding_refuses_bad_windows_and_regions() {
    let f = fixture().await;
    for (vars, want) in [
        (json!({"window": "yesterday"}), "is not a window"),
        (json!({"window": "0m"}), "must be between"),
        (json!({"window": "24h", "regions": ["US East"]}), "is not a region name"),
    ] {
        let (_, errors) = f.run(Role::Viewer, QUERY, vars.clone()).await;
        assert_eq!(codes(&errors), ["BAD_USER_INPUT"], "{vars}: {errors:?}");
        assert!(errors[0]["message"].as_str().unwrap().contains(want), "{vars}: {errors:?}");
    }
    // Without a principal the guard answers (the HTTP layer never lets that happen).
    let schema = trailwatch_api::schema(f.deps.clone());
    let response = schema.execute(async_graphql::Request::new("{ onboarding { allDelivering } }")).await;
    let out = serde_json::to_value(&response).unwrap();
    assert_eq!(codes(out["errors"].as_array().unwrap()), ["UNAUTHENTICATED"]);
}
