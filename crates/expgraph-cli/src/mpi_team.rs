//! The ranks of an MPI job as a learning [`Team`] (feature `mpi`): `mpirun -n R expgraph learn …`.
//!
//! Only [`Team::all_gather`] is needed (see `expgraph_learn`'s team docs). MPI counts are 32-bit,
//! so a large exchange goes in rounds of at most 1 GiB in all.

use anyhow::Context;
use expgraph_learn::{LearnError, Team};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

/// Environment variables an MPI launcher sets (Open MPI, MPICH/Hydra and Slurm's PMI, PMIx).
const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"];

/// Bytes gathered per round, all members together (below `i32::MAX`).
const ROUND_BYTES: usize = 1 << 30;

/// `MPI_COMM_WORLD` of this job.
pub struct MpiTeam {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl MpiTeam {
    /// Whether an MPI launcher started this process.
    pub fn launched() -> bool {
        LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
    }

    /// Initialize MPI (once per process); MPI is called only from this thread.
    pub fn init() -> anyhow::Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .context("MPI could not be initialized (it already was in this process)")?;
        Ok(Self { world: universe.world(), _universe: universe })
    }

    /// Stop every rank of the job: this rank failed in `expgraph {command}` with `error` (named in
    /// the message).
    pub fn abort(&self, command: &str, error: &anyhow::Error) -> ! {
        eprintln!("expgraph {command}: rank {} of {} failed: {error:#}", self.rank(), self.size());
        self.world.abort(1)
    }
}

impl Team for MpiTeam {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, LearnError> {
        let size = self.size();
        let mut lens = vec![0u64; size];
        self.world.all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let mut out: Vec<Vec<u8>> = lens.iter().map(|&l| Vec::with_capacity(usize::try_from(l).unwrap_or(0))).collect();
        let lens: Vec<usize> = lens.iter().map(|&l| usize::try_from(l).unwrap_or(usize::MAX)).collect();
        // Every member sends at most `cap` bytes per round, so a round gathers ≤ ROUND_BYTES.
        let cap = (ROUND_BYTES / size).max(1);
        let rounds = lens.iter().map(|l| l.div_ceil(cap)).max().unwrap_or(0);
        for round in 0..rounds {
            let piece = |len: usize| (len.saturating_sub(round * cap)).min(cap);
            let counts: Vec<Count> = lens.iter().map(|&l| piece(l) as Count).collect();
            let displs: Vec<Count> = counts
                .iter()
                .scan(0, |at, &c| {
                    let d = *at;
                    *at += c;
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let start = (round * cap).min(mine.len());
            let send = &mine[start..start + piece(mine.len())];
            let mut buf = vec![0u8; total];
            {
                let mut parts = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                self.world.all_gather_varcount_into(send, &mut parts);
            }
            for ((o, &c), &d) in out.iter_mut().zip(&counts).zip(&displs) {
                o.extend_from_slice(&buf[d as usize..(d + c) as usize]);
            }
        }
        Ok(out)
    }
}
