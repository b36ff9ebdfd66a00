//! Creates the shared resources of AWS mode where they do not exist yet:
//! the DynamoDB tables, the queues with their dead-letter queues, the topic
//! the trail bucket notifies (S3 → SNS → SQS, so other consumers can
//! subscribe too), the alert topic, and the bucket's notification
//! configuration. For development accounts and emulators (`trailwatch
//! aws-setup`); production deploys the CloudFormation stack under `infra/`.
//! Every step is idempotent.

use std::time::Duration;

use aws_sdk_s3::types::{Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, S3KeyFilter, TopicConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::clients::Clients;
use crate::dynamo::{self, TableNames};
use crate::error::{classify, AwsResult};
use crate::sqs::create_queue_with_dlq;

/// What to create.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The trail bucket (created if missing).
    pub bucket: String,
    /// Key prefix of the trail in the bucket ("" or ending in `/`).
    pub trail_prefix: String,
    /// Prefix of queue and topic names.
    pub name_prefix: String,
    pub tables: TableNames,
    /// Receives before a message goes to its dead-letter queue.
    pub max_receive_count: u32,
    pub visibility: Duration,
}

/// What exists afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub notification_queue_url: String,
    pub notification_dlq_url: String,
    pub enricher_queue_url: String,
    pub enricher_dlq_url: String,
    /// The topic the bucket notifies.
    pub objects_topic_arn: String,
    /// The topic alerts are published to.
    pub alert_topic_arn: String,
}

pub async fn provision(clients: &Clients, plan: &Plan) -> AwsResult<Provisioned> {
    create_bucket(clients, &plan.bucket).await?;
    let db = &clients.dynamodb;
    dynamo::create_sessions_table(db, &plan.tables.sessions).await?;
    dynamo::create_ledger_table(db, &plan.tables.ledger).await?;
    dynamo::create_pending_table(db, &plan.tables.pending).await?;
    dynamo::create_aliases_table(db, &plan.tables.aliases).await?;
    dynamo::create_integrity_table(db, &plan.tables.integrity).await?;
    crate::alerts::create_table(db, &plan.tables.alerts).await?;

    let (notification_queue_url, notification_dlq_url) =
        create_queue_with_dlq(&clients.sqs, &format!("{}-notifications", plan.name_prefix), plan.max_receive_count, plan.visibility).await?;
    let (enricher_queue_url, enricher_dlq_url) =
        create_queue_with_dlq(&clients.sqs, &format!("{}-enricher", plan.name_prefix), plan.max_receive_count, plan.visibility).await?;
    let objects_topic_arn = create_topic(clients, &format!("{}-trail-objects", plan.name_prefix)).await?;
    let alert_topic_arn = create_topic(clients, &format!("{}-alerts", plan.name_prefix)).await?;

    // S3 may publish to the objects topic, for this bucket only.
    let bucket_arn = format!("arn:aws:s3:::{}", plan.bucket);
    let topic_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TrailBucketPublishes",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "SNS:Publish",
            "Resource": objects_topic_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn}}
        }]
    });
    clients
        .sns
        .set_topic_attributes()
        .topic_arn(&objects_topic_arn)
        .attribute_name("Policy")
        .attribute_value(topic_policy.to_string())
        .send()
        .await
        .map_err(|e| classify("sns:SetTopicAttributes", e))?;

    // The topic may deliver to the notification queue.
    let queue_arn = queue_arn(clients, &notification_queue_url).await?;
    let queue_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TrailObjectsTopicDelivers",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": objects_topic_arn}}
        }]
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(&notification_queue_url)
        .attributes(QueueAttributeName::Policy, queue_policy.to_string())
        .send()
        .await
        .map_err(|e| classify("sqs:SetQueueAttributes", e))?;
    clients
        .sns
        .subscribe()
        .topic_arn(&objects_topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .return_subscription_arn(true)
        .send()
        .await
        .map_err(|e| classify("sns:Subscribe", e))?;

    let mut rules = vec![FilterRule::builder().name(FilterRuleName::Prefix).value(format!("{}AWSLogs/", plan.trail_prefix)).build()];
    rules.push(FilterRule::builder().name(FilterRuleName::Suffix).value(".json.gz").build());
    let topic = TopicConfiguration::builder()
        .id("trailwatch-trail-objects")
        .topic_arn(&objects_topic_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(NotificationConfigurationFilter::builder().key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build()).build())
        .build()
        .map_err(|e| crate::error::invalid("s3:PutBucketNotificationConfiguration", e))?;
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&plan.bucket)
        .notification_configuration(NotificationConfiguration::builder().topic_configurations(topic).build())
        .send()
        .await
        .map_err(|e| classify("s3:PutBucketNotificationConfiguration", e))?;

    Ok(Provisioned { notification_queue_url, notification_dlq_url, enricher_queue_url, enricher_dlq_url, objects_topic_arn, alert_topic_arn })
}

async fn create_bucket(clients: &Clients, bucket: &str) -> AwsResult<()> {
    let mut request = clients.s3.create_bucket().bucket(bucket);
    if let Some(region) = clients.region().filter(|r| *r != "us-east-1") {
        request = request.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder().location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region)).build(),
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
            match code.as_deref() {
                Some("BucketAlreadyOwnedByYou") => Ok(()),
                _ => Err(classify("s3:CreateBucket", e)),
            }
        }
    }
}

async fn create_topic(clients: &Clients, name: &str) -> AwsResult<String> {
    // CreateTopic returns the existing topic's ARN when it exists.
    let out = clients.sns.create_topic().name(name).send().await.map_err(|e| classify("sns:CreateTopic", e))?;
    out.topic_arn.ok_or_else(|| crate::error::invalid("sns:CreateTopic", format!("no ARN returned for topic {name}")))
}

/// A queue's ARN from its URL.
pub async fn queue_arn(clients: &Clients, url: &str) -> AwsResult<String> {
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify("sqs:GetQueueAttributes", e))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| crate::error::invalid("sqs:GetQueueAttributes", format!("no QueueArn for {url}")))
}
