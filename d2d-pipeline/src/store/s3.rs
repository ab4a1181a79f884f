//! The S3 store, through `aws-sdk-s3`.

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{
    ConfigBag, Intercept, ProvideCredentials, RuntimeComponents, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, ChecksumMode, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::Duration;

use super::{backoff, ObjectMeta, ObjectReader, StoreOptions, S3_INITIAL_BACKOFF, S3_MAX_BACKOFF};
use crate::error::{Error, Result};

/// What makes two stores "the same S3 service": a `CopyObject` signed for one can read the
/// other's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceId {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
}

pub(crate) struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    url: String,
    service: ServiceId,
    /// The endpoint requests go to, for messages: the override, or AWS's for the region.
    endpoint: String,
    max_attempts: u32,
    read_timeout: Duration,
}

impl S3Store {
    pub(crate) async fn open(bucket: &str, prefix: &str, options: &StoreOptions) -> Result<Self> {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let url = format!("s3://{bucket}/{prefix}");
        let max_attempts = options.s3_max_attempts.max(1);
        let sdk = sdk_config(options).await;
        // Quoted by every message and retry line: never with credentials put in the URL.
        let endpoint = match &options.s3_endpoint {
            Some(endpoint) => crate::alert::redact(endpoint, &[]),
            None => format!(
                "AWS S3 in {}",
                sdk.region()
                    .map_or("the default region".into(), |r| r.to_string())
            ),
        };
        let mut config = aws_sdk_s3::config::Builder::from(&sdk);
        if let Some(endpoint) = &options.s3_endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        config = config.interceptor(RetryLog {
            endpoint: endpoint.clone(),
        });
        // Only used to tell whether two stores share a service; a store without credentials
        // (public buckets) still works, it just never copies server-side.
        let access_key_id = match sdk.credentials_provider() {
            Some(p) => p
                .provide_credentials()
                .await
                .ok()
                .map(|c| c.access_key_id().to_owned()),
            None => None,
        };
        let service = ServiceId {
            endpoint: options.s3_endpoint.clone(),
            region: sdk.region().map(|r| r.to_string()),
            access_key_id,
        };
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            prefix,
            url,
            service,
            endpoint,
            max_attempts,
            read_timeout: options.s3_read_timeout,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn same_service(&self, other: &S3Store) -> bool {
        self.service == other.service
    }

    fn full_key(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::InvalidKey {
                url: self.url.clone(),
                key: String::new(),
                reason: "empty key",
            });
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn error<E>(&self, op: &'static str, key: &str, err: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Error::S3 {
            url: self.url.clone(),
            key: key.to_owned(),
            op,
            detail: format!("{} (endpoint {})", describe(&err), self.endpoint),
        }
    }

    /// The read timeout of an upload of `size` bytes: the plain read timeout counts from the
    /// request being sent, and sending a large body takes time of its own (one second per
    /// MiB, a pace any working link beats). A peer that stops reading the body is caught
    /// sooner, by the stalled-stream protection.
    fn upload_read_timeout(&self, size: u64) -> Duration {
        self.read_timeout + Duration::from_secs(size / (1024 * 1024))
    }

    fn upload_config(&self, size: u64) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .read_timeout(self.upload_read_timeout(size))
                .build(),
        )
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            url: self.url.clone(),
            key: key.to_owned(),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    etag: object.e_tag().map(unquote),
                });
            }
        }
        Ok(out)
    }

    async fn get_object(&self, key: &str) -> Result<ByteStream> {
        let full = self.full_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => Ok(out.body),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(self.not_found(key))
            }
            Err(e) => Err(self.error("get", key, e)),
        }
    }

    /// The whole object. The SDK retries a request that fails before its response; a body
    /// that breaks off after it (connection reset, truncated, stalled) is asked for again
    /// here, the same number of times and with the same backoff, each retry logged.
    pub(crate) async fn get(&self, key: &str) -> Result<Bytes> {
        let mut attempt = 1;
        loop {
            let body = self.get_object(key).await?;
            let cause = match body.collect().await {
                Ok(bytes) => return Ok(bytes.into_bytes()),
                Err(e) => chain(&e),
            };
            if attempt >= self.max_attempts {
                return Err(Error::S3 {
                    url: self.url.clone(),
                    key: key.to_owned(),
                    op: "get",
                    detail: format!(
                        "reading the body failed {attempt} times, last: {cause} (endpoint {})",
                        self.endpoint
                    ),
                });
            }
            tracing::warn!(
                endpoint = %self.endpoint,
                operation = "GetObject (body)",
                request = %format!("GET {}{key}", self.url),
                attempt = attempt + 1,
                max_attempts = self.max_attempts,
                cause = %cause,
                "retrying S3 request"
            );
            // Half the longest backoff: the SDK waits a random share of it, this waits
            // alike on average, without a random source of its own.
            tokio::time::sleep(backoff(attempt) / 2).await;
            attempt += 1;
        }
    }

    pub(crate) async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        let body = self.get_object(key).await?;
        Ok(Box::pin(body.into_async_read()))
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let full = self.full_key(key)?;
        let size = bytes.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(bytes))
            // S3 checks the body against the SHA-256 the SDK sends and keeps it, so a later
            // `stored_sha256` verifies the object without reading it back.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .customize()
            .config_override(self.upload_config(size))
            .send()
            .await
            .map_err(|e| self.error("put", key, e))?;
        Ok(())
    }

    pub(crate) async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        let full = self.full_key(key)?;
        let body = ByteStream::from_path(path).await.map_err(|e| Error::S3 {
            url: self.url.clone(),
            key: key.to_owned(),
            op: "put",
            detail: format!("cannot read {}: {}", path.display(), chain(&e)),
        })?;
        let size = body.size_hint().1.unwrap_or(0);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(body)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .customize()
            .config_override(self.upload_config(size))
            .send()
            .await
            .map_err(|e| self.error("put", key, e))?;
        Ok(())
    }

    pub(crate) async fn copy_from(
        &self,
        src: &S3Store,
        src_key: &str,
        dst_key: &str,
    ) -> Result<()> {
        let source = format!("{}/{}", src.bucket, encode_key(&src.full_key(src_key)?));
        let full = self.full_key(dst_key)?;
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(full)
            .copy_source(source)
            // S3 computes the copy's SHA-256 over the bytes it wrote and keeps it: the copy
            // is verified without the bytes leaving the service.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // CopyObject has no typed "no such key" error; when the service refused the copy,
            // check the source to say which side is missing. Not after a timeout or a broken
            // connection: asking an unanswering endpoint again would double the wait.
            Err(e) if e.as_service_error().is_some() => match src.head(src_key).await {
                Ok(None) => Err(src.not_found(src_key)),
                _ => Err(self.error("copy", dst_key, e)),
            },
            Err(e) => Err(self.error("copy", dst_key, e)),
        }
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out
                    .content_length()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
                etag: out.e_tag().map(unquote),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    pub(crate) async fn stored_sha256(&self, key: &str) -> Result<Option<(ObjectMeta, [u8; 32])>> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => {
                // A multipart object's checksum is of its parts (`…-N`): no use here.
                let Some(sha) = out.checksum_sha256().and_then(decode_sha256) else {
                    return Ok(None);
                };
                let meta = ObjectMeta {
                    key: key.to_owned(),
                    size: out
                        .content_length()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    etag: out.e_tag().map(unquote),
                };
                Ok(Some((meta, sha)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error("delete", key, e))?;
        Ok(())
    }

    pub(crate) async fn create_bucket(&self) -> Result<()> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses an explicit location constraint.
        if let Some(region) = self.service.region.as_deref().filter(|r| *r != "us-east-1") {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) if e.as_service_error().is_none() => Err(self.error("create bucket", "", e)),
            Err(e) => {
                // "Already exists" may still be ours on some servers: usable is what counts.
                if self
                    .client
                    .head_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .is_ok()
                {
                    Ok(())
                } else {
                    Err(self.error("create bucket", "", e))
                }
            }
        }
    }
}

/// The AWS settings of every client d2d makes (S3, and SNS and Secrets Manager with the same
/// endpoint override): region and credentials from the standard chain (region `us-east-1`
/// when none is set), and the bounded retries and timeouts of [`StoreOptions`].
pub(crate) async fn sdk_config(options: &StoreOptions) -> aws_config::SdkConfig {
    // Standard mode retries what is transient (timeouts, connection errors, 5xx, throttling)
    // with exponential backoff and full jitter; the bounds are ours, not the SDK's defaults
    // (3 attempts, 1 s initial), so a busy day survives a longer hiccup while an endpoint
    // that never answers still fails within `StoreOptions::unanswered_bound`.
    let max_attempts = options.s3_max_attempts.max(1);
    let retry = RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(S3_INITIAL_BACKOFF)
        .with_max_backoff(S3_MAX_BACKOFF);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.s3_connect_timeout)
        .read_timeout(options.s3_read_timeout)
        .build();
    // The read timeout ends when the response head arrives; a body that stops flowing is
    // caught by the SDK's stalled-stream protection, given the same patience (its own
    // default is 20 s, which would let a stalled body outlast the bound).
    let stalled = StalledStreamProtectionConfig::enabled()
        .grace_period(options.s3_read_timeout)
        .build();
    // A server without region (S3-compatible, or a machine with no AWS profile) still
    // needs one for signing.
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(retry)
        .timeout_config(timeouts)
        .stalled_stream_protection(stalled)
        .load()
        .await
}

/// Logs one warning per retry of an S3 request — the endpoint, the operation and request, the
/// attempt, and why the one before failed — where the SDK would retry silently (the issue: a
/// silent endpoint kept the job waiting for minutes without a line).
#[derive(Debug)]
struct RetryLog {
    endpoint: String,
}

/// Why the last attempt of a request failed, kept in the request's config bag until the retry.
#[derive(Debug, Clone)]
struct LastFailure(String);

impl Storable for LastFailure {
    type Storer = StoreReplace<Self>;
}

impl Intercept for RetryLog {
    fn name(&self) -> &'static str {
        "d2d::RetryLog"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let cause = match context.response() {
                Some(response) => format!("HTTP {}: {}", response.status().as_u16(), chain(error)),
                None => chain(error),
            };
            cfg.interceptor_state().store_put(LastFailure(cause));
        }
        Ok(())
    }

    // Before transmitting rather than before the attempt: the request then has its endpoint
    // and bucket resolved, so the log names the whole URL.
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if attempt < 2 {
            return Ok(());
        }
        let request = context.request();
        tracing::warn!(
            endpoint = %self.endpoint,
            operation = cfg.load::<Metadata>().map_or("request", |m| m.name()),
            request = %crate::alert::redact(&format!("{} {}", request.method(), request.uri()), &[]),
            attempt,
            max_attempts = cfg.load::<RetryConfig>().map_or(0, |r| r.max_attempts()),
            cause = cfg.load::<LastFailure>().map_or("unknown", |f| f.0.as_str()),
            "retrying S3 request"
        );
        Ok(())
    }
}

/// The useful part of an SDK error: the service's code, message and HTTP status, or for a
/// failure before any response (connection refused, timeout) its chain of causes. The SDK's
/// own `Display` says only "service error", and `DisplayErrorContext` ends with the whole
/// `Debug` dump of the raw response.
pub(crate) fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}"),
            }
        }
        other => chain(other),
    }
}

/// `err` and its causes, `: `-separated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// ETags come quoted (`"abc…"`); the quotes are transport, not value.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// A base64 SHA-256 checksum header (`x-amz-checksum-sha256`) as its 32 bytes; `None` for
/// anything else (a composite `…-N` checksum, a malformed value).
fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits = text.trim_end_matches('=').as_bytes();
    // 32 bytes are 43 digits (and one `=` of padding).
    if digits.len() != 43 {
        return None;
    }
    let mut out = Vec::with_capacity(33);
    for group in digits.chunks(4) {
        let mut bits = 0u32;
        for (i, c) in group.iter().enumerate() {
            bits |= value(*c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out.try_into().ok()
}

/// The bytes `x-amz-copy-source` percent-encodes: all but `/` and RFC 3986's unreserved ones.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and RFC 3986 unreserved bytes.
fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, COPY_SOURCE).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keys_are_percent_encoded() {
        assert_eq!(
            encode_key("raw/dt=2019-06-01/a b+ü.txt"),
            "raw/dt%3D2019-06-01/a%20b%2B%C3%BC.txt"
        );
        assert_eq!(unquote("\"abc\""), "abc");
    }

    #[test]
    fn sha256_checksums_decode_from_base64() {
        use sha2::Digest;
        // SHA-256 of "" is e3b0c442…: base64 from `printf '' | openssl dgst -sha256 -binary | base64`.
        let empty: [u8; 32] = sha2::Sha256::digest(b"").into();
        assert_eq!(
            decode_sha256("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
            Some(empty)
        );
        assert_eq!(
            decode_sha256("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=-3"),
            None
        );
        assert_eq!(decode_sha256("AAAA"), None);
        assert_eq!(
            decode_sha256("!7DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
            None
        );
    }
}
