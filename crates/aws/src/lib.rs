//! trailwatch on AWS: adapters for the ports of `trailwatch-core` over S3,
//! SQS, DynamoDB, Athena, SNS, Organizations and STS.
//!
//! Every SDK client is built in [`clients`] from one [`clients::AwsSettings`]
//! (credential chain, region, endpoint override for emulators), and every SDK
//! error becomes a [`trailwatch_core::ports::PortError`] through
//! [`error::classify`], which decides whether trying again can help.

pub mod alerts;
pub mod athena;
pub mod clients;
pub mod cloudtrail;
pub mod dynamo;
pub mod error;
pub mod faults;
pub mod history;
pub mod member;
pub mod moto;
pub mod organizations;
pub mod provision;
pub mod s3;
pub mod sns;
pub mod sqs;
