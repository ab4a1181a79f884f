//! Run with: `cargo run --example setup_warehouse -- --database-url postgres://d2d:d2d@127.0.0.1:54329/d2d`
//!
//! Creates or upgrades the d2d warehouse schema: applies the embedded, versioned migrations
//! (schemas `staging`, `dwh`, `bi`, `etl`, their tables, procedures and views, and the roles
//! `d2d_loader` and `d2d_bi`) that the database does not have yet, in one transaction. Safe to
//! run any number of times, also concurrently. Refuses a database whose applied migrations
//! differ from this build's.
//!
//! ```text
//! setup_warehouse [--database-url URL]      apply what is pending (DATABASE_URL by default)
//! setup_warehouse --dry-run                 only list what is pending
//! ```
//!
//! Run it as the owner of the schema (a role that may create schemas and roles); the daily
//! job itself can then run as a member of `d2d_loader`. TLS: add `sslmode=require` (or
//! `verify-full`, with `sslrootcert=/path/ca.pem` for a provider's CA) to the URL.

use std::process::ExitCode;

use clap::Parser;
use d2d::pipeline::warehouse::{Warehouse, MIGRATIONS};

/// Create or upgrade the d2d warehouse schema in PostgreSQL (versioned migrations).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// PostgreSQL URL (libpq form; `sslmode` and `sslrootcert` are honoured).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// List pending migrations without applying them.
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("setup_warehouse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> d2d::pipeline::Result<()> {
    let mut wh = Warehouse::connect(&args.database_url).await?;
    let pending = wh.pending_migrations().await?;
    if args.dry_run {
        if pending.is_empty() {
            println!(
                "the warehouse is up to date ({} migrations)",
                MIGRATIONS.len()
            );
        }
        for m in pending {
            println!("pending: {:04}_{}", m.version, m.name);
        }
        return Ok(());
    }
    let report = wh.migrate().await?;
    for version in &report.applied {
        if let Some(m) = MIGRATIONS.iter().find(|m| m.version == *version) {
            println!("applied {:04}_{}", m.version, m.name);
        }
    }
    println!(
        "the warehouse is up to date: {} migrations ({} applied now, {} before)",
        MIGRATIONS.len(),
        report.applied.len(),
        report.already_applied.len()
    );
    Ok(())
}
