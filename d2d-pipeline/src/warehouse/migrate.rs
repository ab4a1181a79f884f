//! Versioned schema migrations, embedded in the crate.
//!
//! Each migration is a SQL file `migrations/NNNN_name.sql`, applied once, in version order, and
//! recorded in `etl.schema_migration` with the SHA-256 of its text. A run applies every pending
//! migration in one transaction under an advisory lock, so concurrent runs (two loads starting
//! at once) wait for each other and the second finds nothing to do. An applied migration whose
//! text has changed, or a recorded version this build does not know, is an error: the schema
//! is only ever changed by adding a migration.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::db_error;
use crate::error::{Error, Result};
use crate::store::hex;

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Position in the sequence, from 1.
    pub version: i32,
    /// Short name, from the file name.
    pub name: &'static str,
    /// The SQL, run as one multi-statement script.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL text, as recorded in `etl.schema_migration.checksum`.
    pub fn checksum(&self) -> String {
        hex(&Sha256::digest(self.sql.as_bytes()))
    }
}

/// Every migration of this build, in order of version. Versions increase but need not be
/// consecutive: a pending migration is applied whatever the versions already applied.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schemas_and_audit",
        sql: include_str!("../../migrations/0001_schemas_and_audit.sql"),
    },
    Migration {
        version: 2,
        name: "staging_and_dwh",
        sql: include_str!("../../migrations/0002_staging_and_dwh.sql"),
    },
    Migration {
        version: 3,
        name: "distance",
        sql: include_str!("../../migrations/0003_distance.sql"),
    },
    Migration {
        version: 4,
        name: "merge",
        sql: include_str!("../../migrations/0004_merge.sql"),
    },
    Migration {
        version: 5,
        name: "bi",
        sql: include_str!("../../migrations/0005_bi.sql"),
    },
    Migration {
        version: 6,
        name: "roles",
        sql: include_str!("../../migrations/0006_roles.sql"),
    },
    Migration {
        version: 7,
        name: "default_privileges",
        sql: include_str!("../../migrations/0007_default_privileges.sql"),
    },
    Migration {
        version: 8,
        name: "fleet_scale",
        sql: include_str!("../../migrations/0008_fleet_scale.sql"),
    },
    Migration {
        version: 9,
        name: "least_privilege_and_dead_runs",
        sql: include_str!("../../migrations/0009_least_privilege_and_dead_runs.sql"),
    },
    Migration {
        version: 10,
        name: "bounded_rejects",
        sql: include_str!("../../migrations/0010_bounded_rejects.sql"),
    },
    Migration {
        version: 11,
        name: "one_distance",
        sql: include_str!("../../migrations/0011_one_distance.sql"),
    },
    Migration {
        version: 12,
        name: "runs_own_their_days",
        sql: include_str!("../../migrations/0012_runs_own_their_days.sql"),
    },
];

/// Key of the advisory lock that serialises migration runs within a database.
pub(crate) const MIGRATION_LOCK: i64 = 2_032_060_101;

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
}

const HISTORY_DDL: &str = "
    CREATE SCHEMA IF NOT EXISTS etl;
    CREATE TABLE IF NOT EXISTS etl.schema_migration (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );";

/// Applies every pending migration; see the module documentation.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport> {
    migrate_to(client, i32::MAX).await
}

/// Applies the pending migrations up to and including version `last`.
pub async fn migrate_to(client: &mut Client, last: i32) -> Result<MigrationReport> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("begin migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error("take the migration lock"))?;
    tx.batch_execute(HISTORY_DDL)
        .await
        .map_err(db_error("create etl.schema_migration"))?;
    let applied = applied(&tx).await?;
    let (done, pending) = plan(&applied)?;
    let mut report = MigrationReport {
        already_applied: done,
        applied: Vec::new(),
    };
    for m in pending.into_iter().filter(|m| m.version <= last) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| Error::Migration {
                version: m.version,
                name: m.name.to_owned(),
                detail: super::describe(&e),
            })?;
        tx.execute(
            "INSERT INTO etl.schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .map_err(db_error(format!("record migration {}", m.version)))?;
        report.applied.push(m.version);
    }
    tx.commit().await.map_err(db_error("commit migrations"))?;
    Ok(report)
}

/// Migrations not yet applied, without changing anything (and without needing the right to).
pub async fn pending(client: &Client) -> Result<Vec<&'static Migration>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('etl.schema_migration') IS NOT NULL",
            &[],
        )
        .await
        .map_err(db_error("look for etl.schema_migration"))?
        .get(0);
    if !exists {
        return Ok(MIGRATIONS.iter().collect());
    }
    let applied = applied(client).await?;
    Ok(plan(&applied)?.1)
}

async fn applied(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<(i32, String, String)>> {
    let rows = client
        .query(
            "SELECT version, name, checksum FROM etl.schema_migration ORDER BY version",
            &[],
        )
        .await
        .map_err(db_error("read etl.schema_migration"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Checks the recorded history against the embedded list: (applied versions, pending).
fn plan(applied: &[(i32, String, String)]) -> Result<(Vec<i32>, Vec<&'static Migration>)> {
    let mut done = Vec::new();
    for (version, name, checksum) in applied {
        let Some(m) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(Error::Migration {
                version: *version,
                name: name.clone(),
                detail: "applied to the database but unknown to this build (the database is newer than the program)".into(),
            });
        };
        if *checksum != m.checksum() {
            return Err(Error::Migration {
                version: m.version,
                name: m.name.to_owned(),
                detail: format!(
                    "changed after it was applied (recorded checksum {checksum}, embedded {}); add a new migration instead",
                    m.checksum()
                ),
            });
        }
        done.push(m.version);
    }
    let pending = MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    Ok((done, pending))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_named_after_their_files() {
        // Consecutive: a gap would let a database apply a later-numbered migration before an
        // earlier one that arrives in another build.
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{m:?}");
        }
        for m in MIGRATIONS {
            assert!(!m.sql.trim().is_empty());
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            files, expected,
            "every migration file is embedded, in order"
        );
    }

    #[test]
    fn plan_refuses_changed_and_unknown_migrations() {
        let m = &MIGRATIONS[0];
        let ok = vec![(m.version, m.name.to_owned(), m.checksum())];
        let (done, pending) = plan(&ok).unwrap();
        assert_eq!(done, [1]);
        assert_eq!(pending.len(), MIGRATIONS.len() - 1);

        let changed = vec![(1, m.name.to_owned(), "0".repeat(64))];
        let err = plan(&changed).unwrap_err().to_string();
        assert!(
            err.contains("migration 1") && err.contains("changed"),
            "{err}"
        );

        let unknown = vec![(999, "future".to_owned(), "x".into())];
        let err = plan(&unknown).unwrap_err().to_string();
        assert!(err.contains("999") && err.contains("newer"), "{err}");
    }

    #[test]
    fn checksum_is_sha256_hex() {
        let m = Migration {
            version: 1,
            name: "t",
            sql: "abc",
        };
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
