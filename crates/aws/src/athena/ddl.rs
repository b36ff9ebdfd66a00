//! The Glue tables Athena queries, as `CREATE EXTERNAL TABLE` statements.
//!
//! Both tables use partition projection, so no partition is ever added or
//! repaired: Athena computes the S3 prefixes from the query's partition
//! predicates and the table's `storage.location.template`.
//!
//! - The **raw trail** ([`raw_trail_ddl`]): the organization trail's own
//!   files, `s3://bucket/[prefix/]AWSLogs/<org-id>/<account>/CloudTrail/<region>/YYYY/MM/DD/…json.gz`,
//!   read with the CloudTrail input format (which splits `{"Records":[…]}`)
//!   and the Hive JSON SerDe. Partitions: `account`, `region`, `date`
//!   (`yyyy/MM/dd`, the folder the file was delivered to).
//! - The **enriched history** ([`enriched_events_ddl`]): gzipped JSON Lines
//!   objects under `<location>/account=<id>/region=<r>/date=<yyyy-MM-dd>/`,
//!   one line per event, as `crate::history` writes them; and the origins
//!   settled later ([`origin_updates_ddl`]) under `<location>-origins/account=<id>/date=<yyyy-MM-dd>/`.
//!
//! **Accounts are an `enum` projection.** An organization trail has one
//! prefix per account, so `account` must be projected. `injected` would
//! oblige every query to name its accounts, but the archive looks for the
//! event that issued a key without knowing which account logged it (a
//! cross-account call is logged in both), and history queries may span the
//! organization. So the tables list the organization's accounts; when
//! accounts join or leave, [`accounts_ddl`] rewrites the list (an account
//! missing from it is invisible to queries). Regions are an `enum` of the
//! commercial regions ([`COMMERCIAL_REGIONS`]); dates a `date` projection
//! from a first day to `NOW`. Partition columns are strings: compare dates
//! as `"date" BETWEEN ? AND ?` with days formatted by [`trail_day`] or
//! [`history_day`] (`date` is a reserved word: quote it in queries).
//!
//! Database and table names are identifiers: Athena cannot take them as
//! parameters, so they are checked against `^[a-z0-9_]+$` ([`identifier`])
//! before they reach any SQL. DDL takes no parameters at all, so every other
//! value written into it (location, organization id, accounts) is checked
//! too.

use trailwatch_core::ports::PortError;
use trailwatch_core::time::{civil_from_days, EpochMillis};

use crate::error::AwsResult;

/// The commercial regions a trail can log (the `region` projection).
pub const COMMERCIAL_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// The raw trail's columns: the CloudTrail record fields, lower-cased (the
/// Hive JSON SerDe matches keys case-insensitively). `requestparameters`,
/// `responseelements`, `additionaleventdata` and `serviceeventdetails` are
/// strings holding their JSON, since their shape varies by API.
const RAW_TRAIL_COLUMNS: &str = "  eventversion STRING,
  useridentity STRUCT<
    type: STRING,
    principalid: STRING,
    arn: STRING,
    accountid: STRING,
    invokedby: STRING,
    accesskeyid: STRING,
    username: STRING,
    identityprovider: STRING,
    credentialid: STRING,
    onbehalfof: STRUCT<userid: STRING, identitystorearn: STRING>,
    sessioncontext: STRUCT<
      attributes: STRUCT<mfaauthenticated: STRING, creationdate: STRING>,
      sessionissuer: STRUCT<type: STRING, principalid: STRING, arn: STRING, accountid: STRING, username: STRING>,
      ec2roledelivery: STRING,
      sourceidentity: STRING,
      webidfederationdata: STRUCT<federatedprovider: STRING, attributes: MAP<STRING, STRING>>>>,
  eventtime STRING,
  eventsource STRING,
  eventname STRING,
  awsregion STRING,
  sourceipaddress STRING,
  useragent STRING,
  errorcode STRING,
  errormessage STRING,
  requestparameters STRING,
  responseelements STRING,
  additionaleventdata STRING,
  requestid STRING,
  eventid STRING,
  readonly STRING,
  resources ARRAY<STRUCT<arn: STRING, accountid: STRING, type: STRING>>,
  eventtype STRING,
  apiversion STRING,
  managementevent STRING,
  recipientaccountid STRING,
  serviceeventdetails STRING,
  sharedeventid STRING,
  vpcendpointid STRING,
  vpcendpointaccountid STRING,
  eventcategory STRING,
  tlsdetails STRUCT<tlsversion: STRING, ciphersuite: STRING, clientprovidedhostheader: STRING>";

/// The enriched history's columns: one event a line, as the history writer
/// (`crate::history`) writes it: the fields searches filter on as columns of
/// their own, the whole actor (`Caller`) and origin (`Origin`) as JSON
/// strings, the record byte for byte. `aws_region` is the record's own
/// (the `region` partition says `unknown` when a record has none).
const ENRICHED_COLUMNS: &str = "  account_id STRING,
  event_id STRING,
  event_time BIGINT,
  aws_region STRING,
  event_source STRING,
  event_name STRING,
  identity_type STRING,
  actor_arn STRING,
  access_key_id STRING,
  actor STRING,
  shared_event_id STRING,
  source_ip STRING,
  error_code STRING,
  read_only BOOLEAN,
  origin_kind STRING,
  origin_principal STRING,
  origin_account STRING,
  origin_confidence STRING,
  origin STRING,
  raw STRING,
  seq BIGINT,
  written_at BIGINT";

/// The columns of origins settled after their event was written (one
/// update a line, under `<location>-origins/`): the newest `written_at` of
/// an event wins over the origin it was written with.
const ORIGIN_UPDATE_COLUMNS: &str = "  account_id STRING,
  event_id STRING,
  event_time BIGINT,
  origin_kind STRING,
  origin_principal STRING,
  origin_account STRING,
  origin_confidence STRING,
  origin STRING,
  written_at BIGINT";

/// Checks a database or table name: `^[a-z0-9_]+$`, at most 255 bytes.
/// Names cannot be execution parameters, so only names that need no
/// quoting and can carry nothing else reach SQL.
pub fn identifier<'a>(what: &str, name: &'a str) -> AwsResult<&'a str> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(PortError::Invalid { what: what.to_owned(), message: format!("{name:?} must match ^[a-z0-9_]+$") });
    }
    Ok(name)
}

/// `"database"."table"` for queries, both checked by [`identifier`].
pub fn qualified(database: &str, table: &str) -> AwsResult<String> {
    Ok(format!("\"{}\".\"{}\"", identifier("Athena database", database)?, identifier("Athena table", table)?))
}

/// The raw trail's `date` partition value of the day holding `ms` (`yyyy/MM/dd`).
pub fn trail_day(ms: EpochMillis) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}/{m:02}/{d:02}")
}

/// The enriched history's `date` partition value of the day holding `ms` (`yyyy-MM-dd`).
pub fn history_day(ms: EpochMillis) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The table over the organization trail's files. `location` is where the
/// trail writes, before `AWSLogs/` (`s3://bucket` or `s3://bucket/prefix`);
/// `accounts` are the organization's accounts (see the module's note);
/// `since` is in the first day that can be queried.
pub fn raw_trail_ddl(database: &str, table: &str, location: &str, org_id: &str, accounts: &[String], since: EpochMillis) -> AwsResult<String> {
    let name = qualified_ddl(database, table)?;
    let root = format!("{}/AWSLogs/{}", s3_location(location)?, organization(org_id)?);
    let accounts = account_list(accounts)?;
    Ok(format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{RAW_TRAIL_COLUMNS}\n)
PARTITIONED BY (`account` STRING, `region` STRING, `date` STRING)
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS INPUTFORMAT 'com.amazon.emr.cloudtrail.CloudTrailInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION '{root}/'
TBLPROPERTIES (
  'projection.enabled'='true',
  'projection.account.type'='enum',
  'projection.account.values'='{accounts}',
  'projection.region.type'='enum',
  'projection.region.values'='{regions}',
  'projection.date.type'='date',
  'projection.date.format'='yyyy/MM/dd',
  'projection.date.range'='{first},NOW',
  'projection.date.interval'='1',
  'projection.date.interval.unit'='DAYS',
  'storage.location.template'='{root}/${{account}}/CloudTrail/${{region}}/${{date}}'
)",
        regions = COMMERCIAL_REGIONS.join(","),
        first = trail_day(since),
    ))
}

/// The table over the enriched history: gzipped JSON Lines under
/// `<location>/account=<id>/region=<r>/date=<yyyy-MM-dd>/`, one event a
/// line with the columns `account_id`, `event_id`, `event_time` (epoch
/// milliseconds), `aws_region`, `event_source`, `event_name`,
/// `identity_type`, `actor_arn`, `access_key_id`, `actor` (JSON),
/// `shared_event_id`, `source_ip`, `error_code`, `read_only`, `origin_kind`,
/// `origin_principal`, `origin_account`, `origin_confidence`, `origin`
/// (JSON), `raw` (the record), `seq` and `written_at`. Fields absent from a
/// line read as NULL.
pub fn enriched_events_ddl(database: &str, table: &str, location: &str, accounts: &[String], since: EpochMillis) -> AwsResult<String> {
    let name = qualified_ddl(database, table)?;
    let root = s3_location(location)?;
    let accounts = account_list(accounts)?;
    Ok(format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{ENRICHED_COLUMNS}\n)
PARTITIONED BY (`account` STRING, `region` STRING, `date` STRING)
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS TEXTFILE
LOCATION '{root}/'
TBLPROPERTIES (
  'projection.enabled'='true',
  'projection.account.type'='enum',
  'projection.account.values'='{accounts}',
  'projection.region.type'='enum',
  'projection.region.values'='{regions},unknown',
  'projection.date.type'='date',
  'projection.date.format'='yyyy-MM-dd',
  'projection.date.range'='{first},NOW',
  'projection.date.interval'='1',
  'projection.date.interval.unit'='DAYS',
  'storage.location.template'='{root}/account=${{account}}/region=${{region}}/date=${{date}}/'
)",
        regions = COMMERCIAL_REGIONS.join(","),
        first = history_day(since),
    ))
}

/// The table over origins settled later: gzipped JSON Lines under
/// `<location>-origins/account=<id>/date=<yyyy-MM-dd>/` (`location` is the
/// enriched history's), one update a line: `account_id`, `event_id`,
/// `event_time`, `origin_kind`, `origin_principal`, `origin_account`,
/// `origin_confidence`, `origin` (JSON) and `written_at`.
pub fn origin_updates_ddl(database: &str, table: &str, location: &str, accounts: &[String], since: EpochMillis) -> AwsResult<String> {
    let name = qualified_ddl(database, table)?;
    let root = format!("{}-origins", s3_location(location)?);
    let accounts = account_list(accounts)?;
    Ok(format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{ORIGIN_UPDATE_COLUMNS}\n)
PARTITIONED BY (`account` STRING, `date` STRING)
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS TEXTFILE
LOCATION '{root}/'
TBLPROPERTIES (
  'projection.enabled'='true',
  'projection.account.type'='enum',
  'projection.account.values'='{accounts}',
  'projection.date.type'='date',
  'projection.date.format'='yyyy-MM-dd',
  'projection.date.range'='{first},NOW',
  'projection.date.interval'='1',
  'projection.date.interval.unit'='DAYS',
  'storage.location.template'='{root}/account=${{account}}/date=${{date}}/'
)",
        first = history_day(since),
    ))
}

/// Rewrites the account list of any of these tables, for accounts that joined or
/// left the organization.
pub fn accounts_ddl(database: &str, table: &str, accounts: &[String]) -> AwsResult<String> {
    Ok(format!("ALTER TABLE {} SET TBLPROPERTIES ('projection.account.values'='{}')", qualified_ddl(database, table)?, account_list(accounts)?))
}

/// `` `database`.`table` `` for DDL (Hive quoting).
fn qualified_ddl(database: &str, table: &str) -> AwsResult<String> {
    Ok(format!("`{}`.`{}`", identifier("Athena database", database)?, identifier("Athena table", table)?))
}

/// `s3://bucket[/prefix]` without a trailing slash, with nothing in it that
/// could end a SQL string or start a template variable.
fn s3_location(location: &str) -> AwsResult<&str> {
    let trimmed = location.trim_end_matches('/');
    let ok = trimmed.strip_prefix("s3://").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'=' | b'+' | b'!' | b'*' | b'(' | b')'))
    });
    if !ok {
        return Err(PortError::Invalid { what: "S3 location".into(), message: format!("{location:?} is not an s3://bucket[/prefix] location") });
    }
    Ok(trimmed)
}

/// An organization id: `o-` then 10 to 32 lowercase letters or digits.
fn organization(org_id: &str) -> AwsResult<&str> {
    let ok =
        org_id.strip_prefix("o-").is_some_and(|rest| (10..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if !ok {
        return Err(PortError::Invalid { what: "organization id".into(), message: format!("{org_id:?} must match ^o-[a-z0-9]{{10,32}}$") });
    }
    Ok(org_id)
}

/// Accounts as a projection's value list: 12 digits each, sorted, each once.
fn account_list(accounts: &[String]) -> AwsResult<String> {
    if let Some(bad) = accounts.iter().find(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit())) {
        return Err(PortError::Invalid { what: "account id".into(), message: format!("{bad:?} is not 12 digits") });
    }
    let mut list: Vec<&str> = accounts.iter().map(String::as_str).collect();
    list.sort_unstable();
    list.dedup();
    if list.is_empty() {
        return Err(PortError::Invalid { what: "account list".into(), message: "the account projection needs at least one account".into() });
    }
    Ok(list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_lower_case_letters_digits_and_underscores() {
        for good in ["trailwatch", "cloudtrail_raw", "t2"] {
            assert!(identifier("table", good).is_ok(), "{good}");
        }
        for bad in ["", "Trail", "trail-raw", "trail.raw", "t\"; DROP TABLE x; --", "tra il", "trail`"] {
            assert!(identifier("table", bad).is_err(), "{bad}");
        }
        assert_eq!(qualified("db", "events").unwrap(), "\"db\".\"events\"");
    }

    #[test]
    fn days_are_formatted_as_each_table_partitions_them() {
        let t = trailwatch_core::time::parse_utc("2024-03-09T23:59:59Z").unwrap();
        assert_eq!((trail_day(t), history_day(t)), ("2024/03/09".to_owned(), "2024-03-09".to_owned()));
    }

    #[test]
    fn values_written_into_ddl_are_checked() {
        let accounts = vec!["508917263341".to_owned()];
        assert!(raw_trail_ddl("db", "raw", "s3://bucket/prefix/", "o-a1b2c3d4e5", &accounts, 0).is_ok());
        assert!(raw_trail_ddl("db", "raw", "s3://bucket/x'y", "o-a1b2c3d4e5", &accounts, 0).is_err(), "a quote would end the SQL string");
        assert!(raw_trail_ddl("db", "raw", "s3://bucket/${x}", "o-a1b2c3d4e5", &accounts, 0).is_err(), "a template variable");
        assert!(raw_trail_ddl("db", "raw", "https://bucket", "o-a1b2c3d4e5", &accounts, 0).is_err());
        assert!(raw_trail_ddl("db", "raw", "s3://bucket", "org", &accounts, 0).is_err());
        assert!(raw_trail_ddl("db", "raw", "s3://bucket", "o-a1b2c3d4e5", &["5089".to_owned()], 0).is_err());
        assert!(raw_trail_ddl("db", "raw", "s3://bucket", "o-a1b2c3d4e5", &[], 0).is_err());
        let ddl = raw_trail_ddl("db", "raw", "s3://bucket/prefix/", "o-a1b2c3d4e5", &accounts, 0).unwrap();
        assert!(ddl.contains("LOCATION 's3://bucket/prefix/AWSLogs/o-a1b2c3d4e5/'"), "{ddl}");
        assert!(ddl.contains("'storage.location.template'='s3://bucket/prefix/AWSLogs/o-a1b2c3d4e5/${account}/CloudTrail/${region}/${date}'"), "{ddl}");
        assert!(ddl.contains("'projection.date.range'='1970/01/01,NOW'"), "{ddl}");
        let alter = accounts_ddl("db", "raw", &["741258963012".into(), "508917263341".into(), "741258963012".into()]).unwrap();
        assert_eq!(alter, "ALTER TABLE `db`.`raw` SET TBLPROPERTIES ('projection.account.values'='508917263341,741258963012')");
    }
}
