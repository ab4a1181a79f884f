//! Build with: `cargo lambda build --release --bin d2d-lambda --features lambda` (or plain
//! `cargo build --release --bin d2d-lambda --features lambda` on an Amazon Linux 2023 host)
//!
//! The daily job as an AWS Lambda function (custom runtime, `provided.al2023`): each
//! invocation `{"date": "YYYY-MM-DD"}` (or `{}` for yesterday in `D2D_TIME_ZONE`) loads one
//! landing day, exactly as `daily_load --date` does, and returns a JSON summary (day, run id,
//! counts); a failed run is returned as the invocation's error after the failure summary went
//! to `D2D_ALERT_SNS_TOPIC`. Configuration: the environment variables of `daily_load`
//! (`D2D_LANDING`, `D2D_LAKE`, `DATABASE_URL` or `D2D_DATABASE_SECRET_ARN`, ...), listed in
//! the documentation of `d2d::pipeline::lambda`. Logs are JSON lines (CloudWatch).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // lambda_runtime panics on a missing AWS_LAMBDA_FUNCTION_NAME; say plainly what is wrong.
    for name in ["AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME"] {
        if std::env::var_os(name).is_none() {
            return Err(format!(
                "{name} is not set: this binary is served by the AWS Lambda runtime (or an \
                 emulator of it); call d2d::pipeline::lambda::handle to run the handler elsewhere"
            )
            .into());
        }
    }
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
    d2d::pipeline::lambda::run().await
}
