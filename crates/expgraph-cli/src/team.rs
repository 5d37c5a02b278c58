//! Running a command alone or as one rank of an MPI job (feature `mpi`; `expgraph learn` and
//! `expgraph infer`).

use std::path::Path;

use anyhow::Context;
use expgraph_learn::{Solo, Team};

use crate::summary::Summary;

/// Run `work` alone, or, when an MPI launcher started this process (feature `mpi`), as one rank
/// of the job: every rank runs `work` with the job's [`Team`]; a rank that fails stops the whole
/// job with a message naming the rank and the cause.
pub fn run_in_team(command: &str, work: impl FnOnce(&dyn Team) -> anyhow::Result<Summary>) -> anyhow::Result<Summary> {
    #[cfg(feature = "mpi")]
    if crate::mpi_team::MpiTeam::launched() {
        let team = crate::mpi_team::MpiTeam::init()?;
        return match work(&team) {
            Err(e) if team.size() > 1 => team.abort(command, &e),
            result => result,
        };
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(size) = std::env::var("OMPI_COMM_WORLD_SIZE").ok().filter(|s| s != "1") {
        anyhow::bail!(
            "expgraph {command} was started as one of {size} MPI ranks, but this expgraph was built without \
             MPI: rebuild it with `cargo build --release -p expgraph-cli --features mpi`"
        );
    }
    work(&Solo)
}

/// The output folder's lock, taken by rank 0 only (the rank that writes; alone, this process).
pub fn writer_lock(team: &dyn Team, out: &Path, what: &str) -> anyhow::Result<Option<expgraph_io::DirLock>> {
    if team.rank() != 0 {
        return Ok(None);
    }
    let lock = expgraph_io::DirLock::acquire(out)
        .with_context(|| format!("--out {}: cannot write {what} there", out.display()))?;
    Ok(Some(lock))
}
