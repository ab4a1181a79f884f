//! The phase a run is in, kept in `etl.load_run` so that a run that dies can be told what it
//! was doing; and a test-only pause at a named phase.

use std::time::Duration;

use super::Phase;
use crate::warehouse::{RunId, RunKey, Warehouse};

/// Writes one run's phases on a connection of its own. The run's main connection cannot:
/// during the load and the merge it is inside the load transaction, where the phase would stay
/// invisible to everyone else, and be rolled back, exactly when a dead run needs it told.
pub(super) struct PhaseLog {
    /// `None`: a detached log, for work done before the run exists (a back-fill's days
    /// archived ahead, `run/backfill.rs`); it records nothing and never pauses.
    wh: Option<(Warehouse, RunKey)>,
    run: RunId,
}

impl PhaseLog {
    /// The log of `run`, written through `wh` (not the run's main connection) with the run's
    /// `key`.
    pub(super) fn new(wh: Warehouse, run: RunId, key: RunKey) -> PhaseLog {
        PhaseLog {
            wh: Some((wh, key)),
            run,
        }
    }

    /// A log that records nothing: the work it follows has no run record yet.
    pub(super) fn detached() -> PhaseLog {
        PhaseLog {
            wh: None,
            run: RunId(0),
        }
    }

    /// Records that the run enters `phase`, then pauses there if a test asked for it. A write
    /// that fails is logged and the run goes on: the phase only describes a run that dies, and
    /// the run's own work does not depend on it.
    pub(super) async fn enter(&self, phase: Phase) {
        let Some((wh, key)) = &self.wh else {
            return;
        };
        if let Err(e) = wh.record_phase(self.run, key, phase.name()).await {
            tracing::warn!(run = self.run.0, phase = phase.name(), error = %e, "could not record the run's phase");
        }
        pause_if_asked(self.run, phase).await;
    }
}

/// The environment variable of the test-only pause.
const PAUSE_AT_VAR: &str = "D2D_TEST_PAUSE_AT";

/// Test-only, for the tests that SIGKILL a real `daily_load` in each phase: with
/// `D2D_TEST_PAUSE_AT=<phase name>` in the environment, the run stops on entering that phase
/// (after recording it), prints `D2D_TEST_PAUSE_AT: run <id> paused at <phase>` on stderr, and
/// goes on after an hour. Its connections stay open meanwhile, as a slow run's would. Only in
/// debug builds (the tests'): a release binary ignores the variable.
pub(super) async fn pause_if_asked(run: RunId, phase: Phase) {
    if !cfg!(debug_assertions) || std::env::var(PAUSE_AT_VAR).ok().as_deref() != Some(phase.name())
    {
        return;
    }
    eprintln!("{PAUSE_AT_VAR}: run {run} paused at {phase}");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
