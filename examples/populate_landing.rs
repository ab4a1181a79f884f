//! Run with: `cargo run --example populate_landing -- --from testdata/landing --to s3://landing/ --create-bucket`
//!
//! Uploads a local folder of landing files to a landing store (an `s3://bucket/prefix` URL or
//! a folder), keeping every key (the path below `--from`) and every byte. Stands in for the
//! fleet API that writes the landing bucket, so the daily load can be tried and tested without
//! it.
//!
//! ```text
//! populate_landing --from DIR --to URL                 upload every file under DIR
//! populate_landing --from DIR --to URL --date D        only the landing files of day D
//! populate_landing ... --create-bucket                 create the bucket first (S3-compatible servers)
//! ```
//!
//! Every option can also be set through the environment variable shown by `--help`
//! (`D2D_LANDING` for `--to`, `D2D_S3_ENDPOINT` for an S3-compatible server). AWS region and
//! credentials come from the standard AWS chain (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
//! Uploading again overwrites with the same bytes, so it is safe to repeat. Exits 1 with the
//! cause (store, key) when something fails.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::NaiveDate;
use clap::Parser;
use d2d::pipeline::lake;
use d2d::pipeline::store::{Store, StoreOptions};
use futures_util::stream::{self, StreamExt, TryStreamExt};

/// Upload a local folder of landing files to a landing store (S3 or a folder), keeping keys and
/// bytes.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Local folder to upload (recursively); keys are paths relative to it, with `/`.
    #[arg(long, env = "D2D_POPULATE_FROM", default_value = "testdata/landing")]
    from: PathBuf,
    /// Landing store: `s3://bucket/prefix`, `file:///abs/dir` or a folder path.
    #[arg(long, env = "D2D_LANDING")]
    to: String,
    /// Upload only the landing files of this day (by the date in their names, YYYY-MM-DD).
    #[arg(long, env = "D2D_POPULATE_DATE", value_parser = d2d::model::landing::parse_day)]
    date: Option<NaiveDate>,
    /// Create the bucket (or folder) first when it does not exist.
    #[arg(long, env = "D2D_CREATE_BUCKET")]
    create_bucket: bool,
    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:59100 (path-style addressing).
    #[arg(long, env = "D2D_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Uploads in flight at once.
    #[arg(long, env = "D2D_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The pipeline's errors name store, key and cause in their own message.
            eprintln!("populate_landing: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> d2d::pipeline::Result<()> {
    let started = Instant::now();
    let options = StoreOptions {
        s3_endpoint: args.s3_endpoint.clone().filter(|s| !s.is_empty()),
        ..StoreOptions::default()
    };
    let source = Store::local(&args.from);
    let target = Store::open_with(&args.to, &options).await?;
    if args.create_bucket {
        target.create_if_missing().await?;
    }

    let mut objects = source.list("").await?;
    if let Some(day) = args.date {
        objects = lake::select_day(objects, day);
    }
    let terminal = std::io::stderr().is_terminal();
    let bytes: u64 = objects.iter().map(|o| o.size).sum();
    // Up to `--concurrency` copies in flight; the first error stops the rest.
    let mut copies = stream::iter(&objects)
        .map(|o| {
            let (source, target) = (&source, &target);
            async move { target.copy_from(source, &o.key, &o.key).await.map(|_| o) }
        })
        .buffer_unordered(args.concurrency.max(1));
    let (mut files_done, mut bytes_done) = (0usize, 0u64);
    while let Some(o) = copies.try_next().await? {
        files_done += 1;
        bytes_done += o.size;
        if terminal {
            eprint!(
                "\r{files_done}/{} files, {:.1}/{:.1} MB",
                objects.len(),
                mb(bytes_done),
                mb(bytes)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if terminal {
        eprintln!();
    }
    println!(
        "uploaded {} files ({:.1} MB) from {} to {} in {:.1} s",
        objects.len(),
        mb(bytes),
        args.from.display(),
        target.url(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
