//! No stuck runs: a real `daily_load` process is SIGKILLed in each phase of its run (paused
//! there by the test-only `D2D_TEST_PAUSE_AT`), against the real PostgreSQL of `DATABASE_URL`.
//! While it lives, no other run takes it for dead; once it is dead, the next run — of another
//! day — records it as `abandoned`, with the phase it died in and whether its load had
//! committed; and re-running the day leaves the warehouse, the rejects and the quarantine file
//! exactly as one clean run does.

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use d2d::pipeline::run::Phase;
use d2d::pipeline::warehouse::{TableChecksum, Warehouse};
use d2d_testkit::{example, file_paths, read_tree, TempDir, TestDb};

/// A `daily_load` child, SIGKILLed when dropped (a failing test leaves no process behind).
struct Job(Child);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PERIOD: &str = r#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"org-id"}"#;
const FIX: &str = r#"{"event":"update","on":"vehicle","at":"2019-06-01T18:17:10.101Z","data":{"id":"v1","location":{"lat":52.45,"lng":13.46,"at":"2019-06-01T18:17:10.101Z"}},"organization_id":"org-id"}"#;

/// Two landing files of 2019-06-01 with a period, three fixes and a refused line (so the
/// quarantine phase writes a file).
fn write_landing(dir: &Path) {
    let nested = dir.join("data/resources/2019/06/01/15/17");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(
        nested.join("2019-06-01-15-17-3-events.txt"),
        format!("{PERIOD}\n{FIX}\nnot json\n"),
    )
    .unwrap();
    std::fs::write(
        nested.join("2019-06-01-15-17-4-events.txt"),
        format!(
            "{}\n{}\n",
            FIX.replace("10.101Z", "20.000Z").replace("52.45", "52.46"),
            FIX.replace("10.101Z", "30.000Z").replace("52.45", "52.50")
        ),
    )
    .unwrap();
}

/// Files under `dir`, at any depth.
fn files_under(dir: &Path) -> usize {
    file_paths(dir).len()
}

/// Where one warehouse's job reads and writes.
struct Site {
    db: TestDb,
    landing: TempDir,
    lake: TempDir,
    /// The jobs' `TMPDIR`: where a load spills its rows.
    tmp: TempDir,
}

impl Site {
    async fn new(tag: &str) -> Site {
        Site {
            db: TestDb::create_tagged(tag).await,
            landing: TempDir::new(&format!("{tag}-landing")),
            lake: TempDir::new(&format!("{tag}-lake")),
            tmp: TempDir::new(&format!("{tag}-tmp")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(example("daily_load"));
        cmd.args(args)
            .env_remove("D2D_DATE")
            .env_remove("D2D_TEST_PAUSE_AT")
            .env("DATABASE_URL", &self.db.url)
            .env("D2D_LANDING", self.landing.path())
            .env("D2D_LAKE", self.lake.path())
            .env("D2D_OUTPUT", "json")
            .env("TMPDIR", self.tmp.path());
        cmd
    }

    /// The row spills (`d2d-rows-*` folders) in the jobs' `TMPDIR`.
    fn spills(&self) -> usize {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("d2d-rows-")
            })
            .count()
    }

    /// Runs `daily_load` to its end; it must succeed.
    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "daily_load {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `daily_load --date 2019-06-01 --move`, paused on entering `phase`; returns it
    /// and its run id once it says so on stderr.
    fn start_paused(&self, phase: &str) -> (Job, i64) {
        let mut job = Job(self
            .command(&["--date", "2019-06-01", "--move"])
            .env("D2D_TEST_PAUSE_AT", phase)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap());
        let stderr = job.0.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads stderr to its end (the pipe must not fill); hands over the pause line's run id,
        // or everything read if the process ends without pausing.
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("D2D_TEST_PAUSE_AT: run ") {
                    let run = rest.split(' ').next().unwrap().parse::<i64>().unwrap();
                    let _ = tx.send(Ok(run));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = tx.send(Err(seen));
        });
        // Generous: the wait ends as soon as the job pauses; this only bounds a broken run.
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Ok(run)) => (job, run),
            Ok(Err(stderr)) => panic!("daily_load ended without pausing at {phase}:\n{stderr}"),
            Err(e) => panic!("daily_load did not pause at {phase}: {e}"),
        }
    }

    async fn wh(&self) -> Warehouse {
        Warehouse::connect(&self.db.url).await.unwrap()
    }

    /// dwh, etl.reject, the quarantine file and the curated zone: what a run leaves behind.
    async fn outcome(
        &self,
    ) -> (
        Vec<TableChecksum>,
        Vec<String>,
        Vec<u8>,
        Vec<(String, Vec<u8>)>,
    ) {
        let wh = self.wh().await;
        let rejects = wh
            .client()
            .query(
                "SELECT r::text FROM etl.reject AS r ORDER BY landing_day, source_key, line",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let quarantine = std::fs::read(
            self.lake
                .path()
                .join("quarantine/dt=2019-06-01/rejects.ndjson"),
        )
        .unwrap();
        let mut curated: Vec<_> = read_tree(&self.lake.path().join("curated"))
            .into_iter()
            .map(|(key, bytes)| (format!("curated/{key}"), bytes))
            .collect();
        curated.sort();
        (
            wh.dwh_checksums().await.unwrap(),
            rejects,
            quarantine,
            curated,
        )
    }

    /// status, phase, committed, finished, error of a run.
    async fn run_row(&self, run: i64) -> (String, Option<String>, bool, bool, Option<String>) {
        let row = self
            .wh()
            .await
            .client()
            .query_one(
                "SELECT status, phase, committed_at IS NOT NULL, finished_at IS NOT NULL, error
                   FROM etl.load_run WHERE run_id = $1",
                &[&run],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
    }

    /// Waits until PostgreSQL has ended the killed job's sessions: its run's lock is free.
    async fn wait_until_dead(&self, run: i64) {
        let wh = self.wh().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let held: i64 = wh
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_locks
                      WHERE locktype = 'advisory' AND classid = 2032060103 AND objsubid = 2
                        AND objid::bigint = $1",
                    &[&run],
                )
                .await
                .unwrap()
                .get(0);
            if held == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the session of killed run {run} is still there"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every phase of a run, and whether the load is committed by the time it begins.
const PHASES: [(&str, bool); 8] = [
    ("setup", false),
    ("list", false),
    ("archive", false),
    ("load", false),
    ("merge", false),
    ("quarantine", true),
    ("curate", true),
    ("cleanup", true),
];

#[tokio::test]
async fn a_run_killed_in_any_phase_is_recorded_abandoned_and_a_rerun_repairs_all() {
    assert_eq!(PHASES.len(), Phase::ALL.len(), "a phase is not killed in");
    let clean = Site::new("kill_clean").await;
    write_landing(clean.landing.path());
    clean.run(&["--date", "2019-06-01", "--move"]);
    let expected = clean.outcome().await;

    let site = Site::new("kill").await;
    for (phase, committed) in PHASES {
        write_landing(site.landing.path());
        let (mut job, run) = site.start_paused(phase);

        // Alive: recorded in its phase, and not taken for dead.
        let row = site.run_row(run).await;
        assert_eq!(
            (row.0.as_str(), row.1.as_deref(), row.2),
            ("running", Some(phase), committed),
            "{phase}"
        );
        let closed = site.wh().await.abandon_dead_runs().await.unwrap();
        assert!(closed.is_empty(), "{phase}: a live run was abandoned");

        job.0.kill().unwrap();
        job.0.wait().unwrap();
        site.wait_until_dead(run).await;
        assert_eq!(site.run_row(run).await.0, "running", "{phase}");
        // From the load to the curated zone the spill of rows exists: the kill left it.
        let spilled = matches!(phase, "load" | "merge" | "quarantine" | "curate");
        assert_eq!(site.spills(), usize::from(spilled), "{phase}: spills left");

        // What a kill leaves of the other scratch kinds (a back-fill's spool, a curated
        // file being encoded, the quarantine's overflow), held by nobody.
        let spool = site.tmp.path().join("d2d-spool-2019-06-01-killed");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::write(spool.join("lock"), b"").unwrap();
        for name in ["d2d-curated-killed.parquet", "d2d-quarantine-1-2-3.ndjson"] {
            std::fs::write(site.tmp.path().join(name), b"left by a kill").unwrap();
        }

        // The next run, of another day, closes it (and removes what it left on disk).
        site.run(&["--date", "2019-06-02", "--allow-empty"]);
        assert_eq!(site.spills(), 0, "{phase}: a killed run's spill is removed");
        assert_eq!(
            temporaries(site.tmp.path()),
            Vec::<String>::new(),
            "{phase}: a killed run's scratch is removed"
        );
        let (status, died_in, was_committed, finished, error) = site.run_row(run).await;
        assert_eq!(status, "abandoned", "{phase}");
        assert_eq!(died_in.as_deref(), Some(phase));
        assert_eq!(was_committed, committed, "{phase}");
        assert!(finished, "{phase}");
        let error = error.unwrap();
        let says = if committed {
            format!("abandoned after its load was committed: its session ended in phase {phase}")
        } else {
            format!("abandoned: its session ended in phase {phase}, before its load was committed")
        };
        assert!(error.starts_with(&says), "{phase}: {error}");

        // A re-run of the day ends as one clean run does.
        site.run(&["--date", "2019-06-01", "--move"]);
        assert_eq!(site.outcome().await, expected, "after a kill in {phase}");
        assert_eq!(
            files_under(site.landing.path()),
            0,
            "{phase}: --move emptied landing"
        );
    }

    // Every run is closed; the killed ones (one per phase) are the only abandoned ones, and
    // each kill was followed by two runs (the other day's, then the repair).
    let statuses: Vec<(String, i64)> = site
        .wh()
        .await
        .client()
        .query(
            "SELECT status, count(*) FROM etl.load_run GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("abandoned".to_owned(), PHASES.len() as i64),
            ("succeeded".to_owned(), 2 * PHASES.len() as i64)
        ]
    );
}

/// `d2d-*` temporaries left in `dir` (spills, spools, curated and quarantine files).
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("d2d-"))
        .collect()
}

#[tokio::test]
async fn sigterm_in_any_phase_stops_the_run_records_it_and_leaves_no_debris() {
    let clean = Site::new("term_clean").await;
    write_landing(clean.landing.path());
    clean.run(&["--date", "2019-06-01", "--move"]);
    let expected = clean.outcome().await;

    let site = Site::new("term").await;
    for (phase, committed) in PHASES {
        write_landing(site.landing.path());
        let (mut job, run) = site.start_paused(phase);
        let pid = job.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        // Generous: the job stops as soon as PostgreSQL has ended its sessions; this only
        // bounds a job that ignores the signal.
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = job.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: SIGTERM did not stop the job"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(143), "{phase}");

        // Recorded by the stopped job itself, not left to the next run.
        let (status, stopped_in, was_committed, finished, _) = site.run_row(run).await;
        assert_eq!(
            (
                status.as_str(),
                stopped_in.as_deref(),
                was_committed,
                finished
            ),
            ("abandoned", Some(phase), committed, true),
            "{phase}"
        );
        assert_eq!(
            temporaries(site.tmp.path()),
            Vec::<String>::new(),
            "{phase}"
        );
        assert!(
            !file_paths(site.lake.path()).iter().any(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("d2d-")),
            "{phase}: a temporary file in the lake"
        );

        site.run(&["--date", "2019-06-01", "--move"]);
        assert_eq!(site.outcome().await, expected, "after SIGTERM in {phase}");
    }
}
