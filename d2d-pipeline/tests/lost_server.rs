//! The warehouse lost just as a run ends (a PostgreSQL restart: every connection cut, new ones
//! refused for a while), through a TCP proxy on 127.0.0.1 in front of the real server. The run
//! still closes its record once the server answers again, instead of leaving it `running`
//! after one immediate try; and a client that is gone mid-statement has its statement ended by
//! the server within seconds. (A process of its own, one test: the curate gate is an
//! environment variable.)
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use d2d_pipeline::run::{no_events, run_day, RunConfig};
use d2d_pipeline::warehouse::Warehouse;
use d2d_pipeline::Error;
use d2d_testkit::{CurateGate, TempDir, TestDb};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Relays TCP to PostgreSQL until cut; then refuses (accepts and closes at once) the next
/// `refuse` connections, and relays again.
struct Proxy {
    port: u16,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    relays: Vec<AbortHandle>,
    refuse: u32,
    refused: u32,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let mut s = shared.lock().unwrap();
                if s.refuse > 0 {
                    s.refuse -= 1;
                    s.refused += 1;
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    let mut server = TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                s.relays.push(relay.abort_handle());
            }
        });
        Proxy { port, state }
    }

    /// Cuts every connection and refuses the next `refuse` ones.
    fn cut(&self, refuse: u32) {
        let mut s = self.state.lock().unwrap();
        for relay in s.relays.drain(..) {
            relay.abort();
        }
        s.refuse = refuse;
    }

    fn refused(&self) -> u32 {
        self.state.lock().unwrap().refused
    }
}

#[tokio::test]
async fn a_lost_server_is_survived_and_a_gone_client_is_noticed() {
    a_run_closes_its_record_once_a_lost_server_answers_again().await;
    a_statement_of_a_client_that_is_gone_ends_within_seconds().await;
}

async fn a_run_closes_its_record_once_a_lost_server_answers_again() {
    let db = TestDb::create().await;
    let mut wh = Warehouse::connect(&db.url).await.unwrap();
    wh.migrate().await.unwrap();
    // The test URL is postgres://user:pw@127.0.0.1:PORT/db: the proxy takes the host's place.
    let (head, rest) = db.url.split_once("@").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(host.to_owned()).await;
    let via_proxy = format!("{head}@127.0.0.1:{}/{path}", proxy.port);

    let (landing, lake) = (TempDir::new("lost-landing"), TempDir::new("lost-lake"));
    let data = landing.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("2019-06-01-10-0-0-events.txt"),
        r#"{"event":"update","on":"vehicle","at":"2019-06-01T10:00:00Z","data":{"id":"v1","location":{"lat":52.5,"lng":13.4,"at":"2019-06-01T10:00:00Z"}},"organization_id":"org"}"#,
    )
    .unwrap();
    let gate = CurateGate::close_on("2019-06-01");
    let config = RunConfig::new(
        landing.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &via_proxy,
    );
    let day: NaiveDate = "2019-06-01".parse().unwrap();
    let run = tokio::spawn(async move { run_day(&config, day, &no_events).await });

    // The load has committed; the run is in its curate phase when the server goes.
    gate.reached().await;
    proxy.cut(2);
    gate.open();
    let result = run.await.unwrap();
    assert!(
        matches!(result, Err(Error::AfterCommit { .. })),
        "{result:?}"
    );
    assert_eq!(proxy.refused(), 2, "the run tried again while refused");

    // Recorded as what it is: committed, then failed in curate; not left running.
    let (status, error): (String, Option<String>) = wh
        .client()
        .query_one("SELECT status, error FROM etl.load_run", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(status, "succeeded", "{error:?}");
    assert!(
        error.as_deref().unwrap_or("").starts_with("curate:"),
        "{error:?}"
    );
}

/// Not a test of its own: the test above sets an environment variable, which must not race
/// with another thread of the same process reading the environment.
async fn a_statement_of_a_client_that_is_gone_ends_within_seconds() {
    // What a killed job leaves mid-merge: its server session, busy. With the check every
    // session sets (client_connection_check_interval), the server notices the closed socket
    // and ends it, so the next run sees the dead run at once instead of after the statement.
    let db = TestDb::create().await;
    let (head, rest) = db.url.split_once("@").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(host.to_owned()).await;
    let via_proxy = format!("{head}@127.0.0.1:{}/{path}", proxy.port);
    let busy = Warehouse::connect(&via_proxy).await.unwrap();
    let pid: i32 = busy
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sleeping = tokio::spawn(async move {
        let _ = busy.client().execute("SELECT pg_sleep(600)", &[]).await;
    });
    let admin = Warehouse::connect(&db.url).await.unwrap();
    let alive = |pid: i32| {
        let admin = &admin;
        async move {
            admin
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[&pid],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        }
    };
    while !alive(pid).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut(0);
    // Generous: ends within a second or two with the check; without it, after ten minutes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while alive(pid).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gone client's statement still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sleeping.abort();
}
