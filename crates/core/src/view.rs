//! The borrowed view of a record that the ingest hot path reads.
//!
//! Strings borrow from the record's bytes when they hold no escapes, so
//! reading a record allocates only for the rare escaped string. Fields not
//! named here are skipped without being built; the record's bytes are kept
//! whole elsewhere, so nothing is lost.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

type Str<'a> = Option<Cow<'a, str>>;

/// The fields of a record trailwatch indexes, resolves and matches on.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView<'a> {
    #[serde(borrow, default)]
    pub event_version: Str<'a>,
    #[serde(borrow, default)]
    pub event_time: Str<'a>,
    /// The event time as exports from log pipelines (Logstash, Elastic)
    /// carry it when they have moved `eventTime` there.
    #[serde(borrow, default, rename = "@timestamp")]
    pub export_timestamp: Str<'a>,
    #[serde(borrow, default)]
    pub event_source: Str<'a>,
    #[serde(borrow, default)]
    pub event_name: Str<'a>,
    #[serde(borrow, default)]
    pub aws_region: Str<'a>,
    #[serde(borrow, default, rename = "sourceIPAddress")]
    pub source_ip_address: Str<'a>,
    #[serde(borrow, default)]
    pub user_agent: Str<'a>,
    #[serde(borrow, default)]
    pub error_code: Str<'a>,
    #[serde(borrow, default)]
    pub error_message: Str<'a>,
    #[serde(borrow, default, rename = "eventID")]
    pub event_id: Str<'a>,
    #[serde(borrow, default)]
    pub event_type: Str<'a>,
    #[serde(borrow, default)]
    pub event_category: Str<'a>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub read_only: Option<bool>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub management_event: Option<bool>,
    #[serde(borrow, default)]
    pub recipient_account_id: Str<'a>,
    #[serde(borrow, default, rename = "sharedEventID")]
    pub shared_event_id: Str<'a>,
    #[serde(borrow, default)]
    pub vpc_endpoint_id: Str<'a>,
    #[serde(borrow, default)]
    pub user_identity: Option<IdentityView<'a>>,
    #[serde(borrow, default)]
    pub request_parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub response_elements: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub insight_details: Option<InsightView<'a>>,
}

/// `userIdentity`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView<'a> {
    #[serde(borrow, default, rename = "type")]
    pub identity_type: Str<'a>,
    #[serde(borrow, default)]
    pub principal_id: Str<'a>,
    #[serde(borrow, default)]
    pub arn: Str<'a>,
    #[serde(borrow, default)]
    pub account_id: Str<'a>,
    #[serde(borrow, default)]
    pub access_key_id: Str<'a>,
    #[serde(borrow, default)]
    pub user_name: Str<'a>,
    #[serde(borrow, default)]
    pub invoked_by: Str<'a>,
    #[serde(borrow, default)]
    pub identity_provider: Str<'a>,
    #[serde(borrow, default)]
    pub credential_id: Str<'a>,
    #[serde(borrow, default)]
    pub session_context: Option<SessionContextView<'a>>,
    #[serde(borrow, default)]
    pub on_behalf_of: Option<OnBehalfOfView<'a>>,
}

/// `userIdentity.sessionContext`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContextView<'a> {
    #[serde(borrow, default)]
    pub session_issuer: Option<IssuerView<'a>>,
    #[serde(borrow, default)]
    pub attributes: Option<AttributesView<'a>>,
    #[serde(borrow, default)]
    pub source_identity: Str<'a>,
    #[serde(borrow, default)]
    pub ec2_role_delivery: Str<'a>,
    #[serde(borrow, default)]
    pub web_id_federation_data: Option<WebIdView<'a>>,
}

/// `sessionContext.sessionIssuer`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerView<'a> {
    #[serde(borrow, default, rename = "type")]
    pub issuer_type: Str<'a>,
    #[serde(borrow, default)]
    pub principal_id: Str<'a>,
    #[serde(borrow, default)]
    pub arn: Str<'a>,
    #[serde(borrow, default)]
    pub account_id: Str<'a>,
    #[serde(borrow, default)]
    pub user_name: Str<'a>,
}

/// `sessionContext.attributes`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributesView<'a> {
    #[serde(borrow, default)]
    pub creation_date: Str<'a>,
    #[serde(borrow, default)]
    pub mfa_authenticated: Str<'a>,
}

/// `sessionContext.webIdFederationData`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebIdView<'a> {
    #[serde(borrow, default)]
    pub federated_provider: Str<'a>,
}

/// `insightDetails`, borrowed: an Insights event names the API it is about
/// here, and has no top-level `eventSource` or `eventName`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsightView<'a> {
    #[serde(borrow, default)]
    pub event_source: Str<'a>,
    #[serde(borrow, default)]
    pub event_name: Str<'a>,
}

/// `userIdentity.onBehalfOf`, borrowed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnBehalfOfView<'a> {
    #[serde(borrow, default)]
    pub user_id: Str<'a>,
    #[serde(borrow, default)]
    pub identity_store_arn: Str<'a>,
}

/// CloudTrail writes `readOnly` as a boolean; a few old or copied records
/// carry it as the string `"true"`/`"false"`. Accept both.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a boolean, \"true\" or \"false\"")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "true" | "True" | "TRUE" => Ok(Some(true)),
                "false" | "False" | "FALSE" => Ok(Some(false)),
                _ => Ok(None),
            }
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

impl<'a> RecordView<'a> {
    /// Reads the view from one record's bytes.
    pub fn parse(bytes: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    pub fn identity_type(&self) -> Option<&str> {
        self.user_identity.as_ref()?.identity_type.as_deref()
    }
}
