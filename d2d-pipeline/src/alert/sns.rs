//! The SNS alert: the failure summary published to a topic with `aws-sdk-sns`.

use crate::alert::AlertCommand;
use crate::error::{Error, Result};
use crate::store::s3::{describe, sdk_config};
use crate::store::StoreOptions;

/// SNS allows at most 100 characters in a subject (printable ASCII, no line breaks).
const MAX_SUBJECT: usize = 100;

/// Publishes a daily run's failure summary to an SNS topic, [`redact`](super::redact)ed as
/// the alert command's is (URL passwords, `password=` settings, the database password, the
/// AWS secrets of the job's environment).
///
/// The client is made as the S3 store's is: region and credentials from the standard AWS
/// chain, [`StoreOptions::s3_endpoint`] (`D2D_S3_ENDPOINT`) as the endpoint when set (an
/// S3-compatible server that also emulates SNS, such as moto), and the same bounded retries.
///
/// ```no_run
/// # async fn demo() -> d2d_pipeline::Result<()> {
/// use d2d_pipeline::alert::SnsAlert;
/// use d2d_pipeline::store::StoreOptions;
/// SnsAlert::new("arn:aws:sns:eu-central-1:123456789012:d2d-alerts")
///     .database_url("postgres://etl:s3cret@db/d2d")
///     .publish("d2d daily_load failed: 2019-06-01", "day 2019-06-01 failed while merging: ...", &StoreOptions::from_env())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsAlert {
    topic_arn: String,
    redactor: AlertCommand,
}

impl SnsAlert {
    /// Alerts to the topic `topic_arn`.
    pub fn new(topic_arn: impl Into<String>) -> Self {
        Self {
            topic_arn: topic_arn.into(),
            redactor: AlertCommand::new(""),
        }
    }

    /// The topic's ARN.
    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    /// A value to hide from the summary, as [`AlertCommand::secret`].
    pub fn secret(mut self, value: impl Into<String>) -> Self {
        self.redactor = self.redactor.secret(value);
        self
    }

    /// Hides the password of this libpq URL from the summary, as
    /// [`AlertCommand::database_url`].
    pub fn database_url(mut self, url: &str) -> Self {
        self.redactor = self.redactor.database_url(url);
        self
    }

    /// The summary as it will be published ([`AlertCommand::redacted`]).
    pub fn redacted(&self, summary: &str) -> String {
        self.redactor.redacted(summary)
    }

    /// Publishes the redacted `summary` with `subject` (redacted too, made one line of
    /// printable ASCII and cut to SNS's 100 characters). Returns SNS's message id.
    pub async fn publish(
        &self,
        subject: &str,
        summary: &str,
        options: &StoreOptions,
    ) -> Result<String> {
        let sdk = sdk_config(options).await;
        let mut config = aws_sdk_sns::config::Builder::from(&sdk);
        if let Some(endpoint) = &options.s3_endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = aws_sdk_sns::Client::from_conf(config.build());
        let out = client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(sns_subject(&self.redacted(subject)))
            .message(self.redacted(summary))
            .send()
            .await
            .map_err(|e| Error::AlertSns {
                topic: self.topic_arn.clone(),
                detail: describe(&e),
            })?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}

/// `text` as an SNS subject: printable ASCII only (others become `?`, line breaks spaces),
/// at most 100 characters, never empty.
fn sns_subject(text: &str) -> String {
    let subject: String = text
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(MAX_SUBJECT)
        .collect();
    match subject.trim() {
        "" => "d2d alert".to_owned(),
        s => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_short_line_of_ascii() {
        assert_eq!(
            sns_subject("d2d failed: 2019-06-01\nmore"),
            "d2d failed: 2019-06-01 more"
        );
        assert_eq!(sns_subject("día — x"), "d?a ? x");
        assert_eq!(sns_subject(&"x".repeat(300)).len(), 100);
        assert_eq!(sns_subject(" \n"), "d2d alert");
    }

    #[test]
    fn the_summary_is_redacted() {
        let alert = SnsAlert::new("arn:aws:sns:us-east-1:1:t")
            .database_url("postgres://u:hunter2-long@h/d")
            .secret("another-secret");
        assert_eq!(
            alert.redacted("postgres://u:hunter2-long@h/d another-secret hunter2-long"),
            "postgres://u:***@h/d *** ***"
        );
    }
}
