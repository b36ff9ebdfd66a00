//! SDK clients, built in one place.
//!
//! [`AwsSettings`] is what every service is configured with: the region, an
//! optional endpoint override (a local emulator; S3 then uses path-style
//! addressing), and an optional role to assume for Organizations reads (the
//! management or delegated-administrator account, with an external id).
//! Credentials come from the default chain (environment, profile, SSO, web
//! identity, ECS task role, instance profile).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::ConfigBag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::error::{classify, AwsResult};

/// A role to assume for some calls (Organizations reads).
#[derive(Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    /// Required by roles that guard against the confused deputy.
    pub external_id: Option<String>,
    pub session_name: String,
}

impl fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The external id is a shared secret of sorts: never in logs.
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "<redacted>"))
            .field("session_name", &self.session_name)
            .finish()
    }
}

/// Where and as whom the services talk to AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// The region; None takes it from the environment or profile.
    pub region: Option<String>,
    /// An endpoint for every service (a local emulator such as moto).
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the default chain (an emulator).
    pub credentials: Option<StaticCredentials>,
    /// The role the Organizations client assumes, if any.
    pub organizations_role: Option<AssumeRole>,
}

/// An access key pair given directly, for emulators and tests.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl StaticCredentials {
    /// The key pair emulators accept.
    pub fn test() -> StaticCredentials {
        StaticCredentials { access_key_id: "testing".to_owned(), secret_access_key: "testing".to_owned() }
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials").field("access_key_id", &self.access_key_id).field("secret_access_key", &"<redacted>").finish()
    }
}

/// Who the service runs as (STS GetCallerIdentity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Requests sent to AWS, by service and operation (`DynamoDB:BatchWriteItem`),
/// each attempt counted (a retry is a request AWS bills). Shared by every
/// client of one [`Clients`]; `/metrics` and the cost benchmark read it.
#[derive(Debug, Default, Clone)]
pub struct ApiCalls {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ApiCalls {
    /// Calls so far, by `Service:Operation`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    fn count(&self, name: String) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
}

impl Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "trailwatch.ApiCalls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.count(format!("{}:{}", meta.service(), meta.name()));
        }
        Ok(())
    }
}

/// Every SDK client the services use, sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub config: SdkConfig,
    /// Requests sent by these clients.
    pub calls: ApiCalls,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub athena: aws_sdk_athena::Client,
    pub sns: aws_sdk_sns::Client,
    pub sts: aws_sdk_sts::Client,
    /// With the configured role's credentials when one is set.
    pub organizations: aws_sdk_organizations::Client,
}

impl Clients {
    /// Loads the shared configuration and builds every client.
    pub async fn connect(settings: &AwsSettings) -> AwsResult<Clients> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sts::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "trailwatch-static",
            ));
        }
        let config = loader.load().await;
        let calls = ApiCalls::default();
        let s3_config = aws_sdk_s3::config::Builder::from(&config).force_path_style(settings.endpoint_url.is_some()).interceptor(calls.clone()).build();
        let organizations = match &settings.organizations_role {
            None => aws_sdk_organizations::Client::from_conf(aws_sdk_organizations::config::Builder::from(&config).interceptor(calls.clone()).build()),
            Some(role) => {
                let mut builder = AssumeRoleProvider::builder(role.role_arn.clone()).session_name(role.session_name.clone()).configure(&config);
                if let Some(id) = &role.external_id {
                    builder = builder.external_id(id.clone());
                }
                let provider = builder.build().await;
                let assumed = aws_sdk_organizations::config::Builder::from(&config).credentials_provider(provider).interceptor(calls.clone()).build();
                aws_sdk_organizations::Client::from_conf(assumed)
            }
        };
        Ok(Clients {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&config).interceptor(calls.clone()).build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&config).interceptor(calls.clone()).build()),
            athena: aws_sdk_athena::Client::from_conf(aws_sdk_athena::config::Builder::from(&config).interceptor(calls.clone()).build()),
            sns: aws_sdk_sns::Client::from_conf(aws_sdk_sns::config::Builder::from(&config).interceptor(calls.clone()).build()),
            sts: aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&config).interceptor(calls.clone()).build()),
            organizations,
            config,
            calls,
        })
    }

    /// Who these credentials belong to; services log it at start.
    pub async fn caller_identity(&self) -> AwsResult<CallerIdentity> {
        let out = self.sts.get_caller_identity().send().await.map_err(|e| classify("sts:GetCallerIdentity", e))?;
        Ok(CallerIdentity { account: out.account.unwrap_or_default(), arn: out.arn.unwrap_or_default(), user_id: out.user_id.unwrap_or_default() })
    }

    /// The region the clients are configured for.
    pub fn region(&self) -> Option<&str> {
        self.config.region().map(Region::as_ref)
    }
}
