//! TLS to PostgreSQL, tested against a real server that requires it: the TLS-only cluster of
//! `scripts/services start` (`ssl=on`, a certificate for 127.0.0.1 and localhost from a
//! throwaway CA, and a `pg_hba.conf` of `hostssl` lines only). Its URL, with
//! `sslmode=verify-full&sslrootcert=<the CA>`, is `D2D_TLS_DATABASE_URL`.
//!
//! - `verify-full` with the right CA connects, and `setup_warehouse` + `daily_load` load the
//!   sample day through it;
//! - a wrong CA, a wrong host name and plain TCP are refused, each with a message naming why;
//! - `verify-ca` checks the chain but not the name, `require` without a CA encrypts without
//!   checking (libpq's meaning of both).

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use d2d::pipeline::warehouse::Warehouse;
use d2d_testkit::{example, TempDir, TestDb};

/// The TLS cluster's admin URL (verify-full, with its CA).
fn tls_url() -> String {
    let url = std::env::var("D2D_TLS_DATABASE_URL").expect(
        "D2D_TLS_DATABASE_URL must name the TLS-only test PostgreSQL server; \
         run `eval \"$(scripts/services start)\"` or scripts/test",
    );
    assert!(
        url.contains("sslmode=verify-full") && url.contains("sslrootcert="),
        "D2D_TLS_DATABASE_URL should ask for verify-full with a sslrootcert: {url}"
    );
    url
}

/// `url` with the value of query parameter `key` replaced (or the parameter removed).
fn with_param(url: &str, key: &str, value: Option<&str>) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(key))
        .map(str::to_owned)
        .collect();
    if let Some(v) = value {
        pairs.push(format!("{key}={v}"));
    }
    if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    }
}

/// Is this session encrypted? (From the server's side.)
async fn over_tls(wh: &Warehouse) -> bool {
    wh.client()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn refusal(url: &str) -> String {
    match Warehouse::connect(url).await {
        Ok(_) => panic!("{url} connected, but must be refused"),
        Err(e) => {
            let e = e.to_string();
            eprintln!("refused, as it must be: {e}");
            e
        }
    }
}

fn assert_names(err: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(err.contains(w), "expected {w:?} in the error: {err}");
    }
    assert!(!err.contains(":d2d@"), "the error shows a password: {err}");
}

/// A CA of its own, which signed nothing the server has.
struct OtherCa {
    dir: TempDir,
}

impl OtherCa {
    fn new() -> OtherCa {
        let dir = TempDir::new("tls-other-ca");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=d2d test: an unrelated CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-keyout",
            ])
            .arg(dir.path().join("ca.key"))
            .arg("-out")
            .arg(dir.path().join("ca.pem"))
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        OtherCa { dir }
    }

    fn pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

fn run(name: &str, args: &[&str], database_url: &str) -> Output {
    Command::new(example(name))
        .args(args)
        .env("DATABASE_URL", database_url)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_over_tls_and_loads_the_sample_day() {
    let db = TestDb::create_on(&tls_url(), "tls_load").await;
    let lake = TempDir::new("tls-lake");

    let out = run("setup_warehouse", &[], &db.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lake_arg = lake.path().to_str().unwrap();
    let out = run(
        "daily_load",
        &[
            "--date",
            "2019-06-01",
            "--landing",
            "testdata/landing",
            "--lake",
            lake_arg,
        ],
        &db.url,
    );
    assert!(
        out.status.success(),
        "daily_load over TLS failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let wh = Warehouse::connect(&db.url).await.unwrap();
    assert!(over_tls(&wh).await, "verify-full must be encrypted");
    let rows = wh
        .client()
        .query(
            "SELECT operating_period_id::text, vehicles::int8, round(avg_metres::numeric, 1)::text
               FROM bi.avg_distance_per_operating_period ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("op_1".to_owned(), 44, "4938.4".to_owned()),
            ("op_2".to_owned(), 100, "9016.9".to_owned())
        ]
    );
    let (status, files): (String, i64) = wh
        .client()
        .query_one(
            "SELECT status::text, (SELECT count(*) FROM etl.file_manifest) FROM etl.load_run",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((status.as_str(), files), ("succeeded", 717));
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_the_certificate() {
    let other = OtherCa::new();
    let pem = other.pem();
    let wrong = with_param(&tls_url(), "sslrootcert", pem.to_str());
    let err = refusal(&wrong).await;
    assert_names(
        &err,
        &[
            "not signed by a CA of sslrootcert",
            &pem.display().to_string(),
        ],
    );
    // verify-ca checks the chain too.
    let err = refusal(&with_param(&wrong, "sslmode", Some("verify-ca"))).await;
    assert_names(&err, &["not signed by a CA of sslrootcert"]);
    // Without sslrootcert, verify-full trusts the Mozilla roots, which did not sign it either.
    let err = refusal(&with_param(&tls_url(), "sslrootcert", None)).await;
    assert_names(&err, &["not signed by a CA of the bundled Mozilla roots"]);
}

#[tokio::test]
async fn a_wrong_host_name_is_refused_by_verify_full_only() {
    // The same server reached by a name its certificate does not list (hostaddr keeps the
    // address, libpq-style; TLS checks the name in host).
    let url = tls_url().replacen("@127.0.0.1:", "@wrong-name.invalid:", 1);
    let url = with_param(&url, "hostaddr", Some("127.0.0.1"));
    let err = refusal(&url).await;
    assert_names(
        &err,
        &[
            "not valid for the host name \"wrong-name.invalid\"",
            "wrong-name.invalid:",
        ],
    );
    // verify-ca checks the chain, not the name: libpq's meaning.
    let wh = Warehouse::connect(&with_param(&url, "sslmode", Some("verify-ca")))
        .await
        .unwrap();
    assert!(over_tls(&wh).await);
    // The certificate lists localhost too.
    let localhost = tls_url().replacen("@127.0.0.1:", "@localhost:", 1);
    let localhost = with_param(&localhost, "hostaddr", Some("127.0.0.1"));
    let wh = Warehouse::connect(&localhost).await.unwrap();
    assert!(over_tls(&wh).await);
}

#[tokio::test]
async fn plain_tcp_is_refused_by_a_tls_only_server() {
    for mode in [Some("disable"), Some("allow"), None] {
        let url = with_param(&tls_url(), "sslmode", mode);
        let err = refusal(&url).await;
        assert_names(
            &err,
            &[
                "no pg_hba.conf entry",
                "no encryption",
                "accepts this connection only over TLS",
            ],
        );
    }
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_a_ca() {
    // libpq's `require` without sslrootcert encrypts but trusts any certificate; `prefer`
    // takes TLS when the server offers it.
    for mode in ["require", "prefer"] {
        let url = with_param(
            &with_param(&tls_url(), "sslrootcert", None),
            "sslmode",
            Some(mode),
        );
        let wh = Warehouse::connect(&url).await.unwrap();
        assert!(over_tls(&wh).await, "{mode}");
    }
}

#[test]
fn the_ca_of_the_services_is_where_the_url_says() {
    let url = tls_url();
    let ca = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("sslrootcert="))
        .unwrap();
    assert!(Path::new(ca).is_file(), "{ca}");
    if let Ok(env_ca) = std::env::var("D2D_TLS_CA") {
        assert_eq!(env_ca, ca);
    }
}
