//! A faithful serde model of CloudTrail log files and records.
//!
//! Field names follow the CloudTrail record contents reference. Fields that
//! vary by service (`requestParameters`, `responseElements`,
//! `additionalEventData`, `serviceEventDetails`, `insightDetails`) stay raw
//! JSON. Every struct keeps the fields it does not name in a flattened
//! `extra` map, and a field given as JSON `null` stays `null`, so a record
//! read and written again compares equal to the original.
//!
//! This owned model is for tools, fixtures and the generator. The ingest hot
//! path reads the borrowed [`crate::view::RecordView`] instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Unknown fields, kept in order of their names.
pub type Extra = BTreeMap<String, Value>;

/// A field that may be absent, present as `null`, or present with a value.
/// Absent fields are not written back; `null` ones are.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Field<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<T> From<Option<T>> for Field<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Field::Absent, Field::Value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Field::Null, Field::Value))
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Value(v) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

/// A log file: `{"Records": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFile {
    #[serde(rename = "Records")]
    pub records: Vec<Record>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One CloudTrail event record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_identity: Field<UserIdentity>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_time: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_source: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aws_region: Field<String>,
    #[serde(default, rename = "sourceIPAddress", skip_serializing_if = "Field::is_absent")]
    pub source_ip_address: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_agent: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub error_code: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub error_message: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub request_parameters: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub response_elements: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub additional_event_data: Field<Value>,
    #[serde(default, rename = "requestID", skip_serializing_if = "Field::is_absent")]
    pub request_id: Field<String>,
    #[serde(default, rename = "eventID", skip_serializing_if = "Field::is_absent")]
    pub event_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_type: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub api_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub management_event: Field<bool>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub read_only: Field<bool>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub resources: Field<Vec<Resource>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub recipient_account_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub service_event_details: Field<Value>,
    #[serde(default, rename = "sharedEventID", skip_serializing_if = "Field::is_absent")]
    pub shared_event_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub vpc_endpoint_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub vpc_endpoint_account_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub event_category: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub addendum: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session_credential_from_console: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub edge_device_details: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub tls_details: Field<TlsDetails>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub insight_details: Field<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The kind of principal behind a request (`userIdentity.type`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityType {
    Root,
    IamUser,
    AssumedRole,
    Role,
    FederatedUser,
    Directory,
    AwsAccount,
    AwsService,
    IdentityCenterUser,
    SamlUser,
    WebIdentityUser,
    Unknown,
    /// A type this version does not know, kept as written.
    Other(String),
}

impl IdentityType {
    pub fn parse(s: &str) -> Self {
        match s {
            "Root" => Self::Root,
            "IAMUser" => Self::IamUser,
            "AssumedRole" => Self::AssumedRole,
            "Role" => Self::Role,
            "FederatedUser" => Self::FederatedUser,
            "Directory" => Self::Directory,
            "AWSAccount" => Self::AwsAccount,
            "AWSService" => Self::AwsService,
            "IdentityCenterUser" => Self::IdentityCenterUser,
            "SAMLUser" => Self::SamlUser,
            "WebIdentityUser" => Self::WebIdentityUser,
            "Unknown" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Root => "Root",
            Self::IamUser => "IAMUser",
            Self::AssumedRole => "AssumedRole",
            Self::Role => "Role",
            Self::FederatedUser => "FederatedUser",
            Self::Directory => "Directory",
            Self::AwsAccount => "AWSAccount",
            Self::AwsService => "AWSService",
            Self::IdentityCenterUser => "IdentityCenterUser",
            Self::SamlUser => "SAMLUser",
            Self::WebIdentityUser => "WebIdentityUser",
            Self::Unknown => "Unknown",
            Self::Other(s) => s,
        }
    }
}

impl Serialize for IdentityType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IdentityType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// `userIdentity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    #[serde(default, rename = "type", skip_serializing_if = "Field::is_absent")]
    pub identity_type: Field<IdentityType>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub principal_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub arn: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub access_key_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session_context: Field<SessionContext>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub invoked_by: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub identity_provider: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub credential_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub on_behalf_of: Field<OnBehalfOf>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub in_scope_of: Field<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `userIdentity.sessionContext`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContext {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session_issuer: Field<SessionIssuer>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub web_id_federation_data: Field<WebIdFederationData>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub attributes: Field<SessionAttributes>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub source_identity: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub ec2_role_delivery: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub assumed_root: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `sessionContext.sessionIssuer`: the role or user that issued the session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionIssuer {
    #[serde(default, rename = "type", skip_serializing_if = "Field::is_absent")]
    pub issuer_type: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub principal_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub arn: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_name: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `sessionContext.webIdFederationData`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebIdFederationData {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub federated_provider: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub attributes: Field<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `sessionContext.attributes`. CloudTrail writes both values as strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAttributes {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub creation_date: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub mfa_authenticated: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `userIdentity.onBehalfOf` (IAM Identity Center).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnBehalfOf {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_id: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub identity_store_arn: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An entry of `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(default, rename = "ARN", skip_serializing_if = "Field::is_absent")]
    pub arn: Field<String>,
    #[serde(default, rename = "accountId", skip_serializing_if = "Field::is_absent")]
    pub account_id: Field<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Field::is_absent")]
    pub resource_type: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tlsDetails`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsDetails {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub tls_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub cipher_suite: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub client_provided_host_header: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}
