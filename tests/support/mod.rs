//! Shared by the facade's integration tests: a database of their own on a real PostgreSQL
//! server (plain or TLS), created through the pipeline's own connection code.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use d2d::pipeline::warehouse::Warehouse;

/// A database created for one test on the server of `admin`, dropped when the value is (also
/// when the test panics). Set `D2D_KEEP_TEST_DB=1` to keep it for a post-mortem.
pub struct TestDb {
    /// URL of the test database: `admin` with the database name replaced.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    pub async fn create(admin: &str, tag: &str) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("d2d_test_{tag}_{}_{nanos}", std::process::id());
        let wh = Warehouse::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
        // Our own [a-z0-9_] name: safe to splice (identifiers cannot be bound).
        wh.client()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: with_dbname(admin, &name),
            admin: admin.to_owned(),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("D2D_KEEP_TEST_DB").is_some() {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(wh) = Warehouse::connect(&admin).await {
                    let _ = wh
                        .client()
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// `url` (a `postgres://` URI) with its database name replaced; the query string is kept.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{dbname}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// An example binary, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

#[test]
fn with_dbname_replaces_only_the_database() {
    assert_eq!(
        with_dbname(
            "postgres://u:p@h:1/d2d?sslmode=verify-full&sslrootcert=/a/b.pem",
            "x"
        ),
        "postgres://u:p@h:1/x?sslmode=verify-full&sslrootcert=/a/b.pem"
    );
    assert_eq!(with_dbname("postgres://u@h", "x"), "postgres://u@h/x");
}
