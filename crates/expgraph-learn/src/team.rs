//! Learning as a team of processes: data-parallel EM (issue 16), e.g. the ranks of an MPI job.
//!
//! A [`Team`] is `size` members, each running the same learner on the same parameters. Every
//! sum over images is split by fixed *blocks* of images ([`BLOCK_CHUNKS`] chunks each): member
//! `r` of `R` computes blocks `⌊r·B/R⌋ .. ⌊(r+1)·B/R⌋` (reading only those images), and every
//! member then folds all block totals in block order, exactly as a single process folds them.
//! Per-image results (positions, scores, views) are gathered in image order; parent selection
//! is split by child node the same way. So the graph is bit-identical for any team size and any
//! number of threads per member; only the one collective, [`Team::all_gather`], is needed.
//!
//! [`Solo`] is the team of one (no copies, no messages); [`ThreadTeam`] runs members as threads
//! of one process (tests); the CLI's `mpi` feature implements [`Team`] over MPI.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use crate::LearnError;

/// Chunks of images per block: the unit of work a member owns and of the fixed reduction order.
pub const BLOCK_CHUNKS: usize = 8;

/// The members learning one graph together (module docs).
pub trait Team {
    /// This member, `0 .. size`.
    fn rank(&self) -> usize;
    /// Number of members, at least 1.
    fn size(&self) -> usize;
    /// Every member's `mine`, in rank order (lengths may differ), on every member. Every member
    /// calls it the same number of times, in the same order.
    fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, LearnError>;
}

/// The team of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Team for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, LearnError> {
        Ok(vec![mine.to_vec()])
    }
}

/// Items `⌊r·len/R⌋ .. ⌊(r+1)·len/R⌋` of member `rank` of `size`: contiguous, disjoint, covering
/// (the partition of `expgraph extract --shard`).
pub fn member_range(rank: usize, size: usize, len: usize) -> Range<usize> {
    expgraph_cache::CachePart { index: rank, count: size.max(1) }.slice(len)
}

/// The chunks (of `chunk_size` images, `n` images in all) that member `rank` of `size` works
/// on: whole blocks of [`BLOCK_CHUNKS`] chunks, by [`member_range`].
pub(crate) fn member_chunks(rank: usize, size: usize, n: usize, chunk_size: usize) -> Range<usize> {
    let num_chunks = n.div_ceil(chunk_size.max(1));
    let blocks = member_range(rank, size, num_chunks.div_ceil(BLOCK_CHUNKS));
    blocks.start * BLOCK_CHUNKS..(blocks.end * BLOCK_CHUNKS).min(num_chunks)
}

/// The images of [`member_chunks`].
pub(crate) fn member_images(rank: usize, size: usize, n: usize, chunk_size: usize) -> Range<usize> {
    let c = member_chunks(rank, size, n, chunk_size);
    (c.start * chunk_size).min(n)..(c.end * chunk_size).min(n)
}

/// Members as threads of one process, exchanging through shared memory: for tests and for
/// trying a team size without MPI.
pub struct ThreadTeam<'a> {
    rank: usize,
    shared: &'a ThreadShared,
}

/// What the members of a [`ThreadTeam`] share.
pub struct ThreadShared {
    size: usize,
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

impl ThreadTeam<'_> {
    /// Run `work` as `size` members on `size` threads; returns each member's result in rank order.
    pub fn run<T: Send>(size: usize, work: impl Fn(&ThreadTeam<'_>) -> T + Sync) -> Vec<T> {
        let size = size.max(1);
        let shared = ThreadShared { size, slots: Mutex::new(vec![Vec::new(); size]), barrier: Barrier::new(size) };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let (shared, work) = (&shared, &work);
                    s.spawn(move || work(&ThreadTeam { rank, shared }))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    }
}

impl Team for ThreadTeam<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, LearnError> {
        let lock = || self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        lock()[self.rank] = mine.to_vec();
        self.shared.barrier.wait();
        let all = lock().clone();
        // Nobody overwrites a slot before everyone has read this round.
        self.shared.barrier.wait();
        Ok(all)
    }
}

/// A team with a tally of what crossed it: bytes received from other members and seconds spent
/// in exchanges (waiting for the slowest member included).
pub(crate) struct Tally<'a> {
    team: &'a dyn Team,
    bytes: AtomicU64,
    nanos: AtomicU64,
    exchanges: AtomicU64,
}

/// What a [`Tally`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Exchanges ([`Team::all_gather`] calls).
    pub exchanges: u64,
    /// Bytes this member received from the others.
    pub bytes: u64,
    /// Seconds in exchanges.
    pub seconds: f64,
}

impl Traffic {
    /// What was counted after `before`.
    pub fn since(self, before: Traffic) -> Traffic {
        Traffic {
            exchanges: self.exchanges - before.exchanges,
            bytes: self.bytes - before.bytes,
            seconds: self.seconds - before.seconds,
        }
    }
}

impl<'a> Tally<'a> {
    pub fn new(team: &'a dyn Team) -> Self {
        Self { team, bytes: AtomicU64::new(0), nanos: AtomicU64::new(0), exchanges: AtomicU64::new(0) }
    }

    /// This member.
    pub fn rank(&self) -> usize {
        self.team.rank()
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.team.size()
    }

    /// Whether there is anybody to exchange with.
    pub fn is_solo(&self) -> bool {
        self.team.size() == 1
    }

    /// [`Team::all_gather`], counted.
    pub fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, LearnError> {
        let start = Instant::now();
        let all = self.team.all_gather(mine)?;
        if all.len() != self.team.size() {
            return Err(LearnError::Team(format!(
                "an exchange returned {} parts for {} members",
                all.len(),
                self.team.size()
            )));
        }
        let received: usize =
            all.iter().enumerate().filter(|(r, _)| *r != self.team.rank()).map(|(_, b)| b.len()).sum();
        self.bytes.fetch_add(received as u64, Ordering::Relaxed);
        self.nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        Ok(all)
    }

    /// What was counted so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            exchanges: self.exchanges.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            seconds: self.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// Little-endian packing of the numbers members exchange (bit-exact: floats travel as bits).
pub(crate) mod wire {
    use crate::LearnError;

    /// Appends numbers to a byte buffer.
    #[derive(Default)]
    pub struct Writer(pub Vec<u8>);

    impl Writer {
        pub fn u64(&mut self, v: u64) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        pub fn f64s(&mut self, v: impl IntoIterator<Item = f64>) {
            for x in v {
                self.0.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        pub fn f32s(&mut self, v: impl IntoIterator<Item = f32>) {
            for x in v {
                self.0.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        pub fn bools(&mut self, v: impl IntoIterator<Item = bool>) {
            self.0.extend(v.into_iter().map(u8::from));
        }
    }

    /// Reads back what a [`Writer`] wrote, failing (not panicking) on a short message.
    pub struct Reader<'a> {
        bytes: &'a [u8],
        from: usize,
    }

    impl<'a> Reader<'a> {
        /// Read the message of member `from`.
        pub fn new(bytes: &'a [u8], from: usize) -> Self {
            Self { bytes, from }
        }
        fn take(&mut self, len: usize) -> Result<&'a [u8], LearnError> {
            if self.bytes.len() < len {
                return Err(LearnError::Team(format!(
                    "the message of member {} is {} bytes short",
                    self.from,
                    len - self.bytes.len()
                )));
            }
            let (head, rest) = self.bytes.split_at(len);
            self.bytes = rest;
            Ok(head)
        }
        pub fn u64(&mut self) -> Result<u64, LearnError> {
            let b = self.take(8)?;
            Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        }
        pub fn len(&mut self) -> Result<usize, LearnError> {
            let v = self.u64()?;
            usize::try_from(v).map_err(|_| LearnError::Team(format!("member {} sent a length of {v}", self.from)))
        }
        pub fn f64s(&mut self, count: usize) -> Result<Vec<f64>, LearnError> {
            let b = self.take(count.checked_mul(8).ok_or_else(|| self.too_long())?)?;
            Ok(b.chunks_exact(8).map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))).collect())
        }
        pub fn f32s(&mut self, count: usize) -> Result<Vec<f32>, LearnError> {
            let b = self.take(count.checked_mul(4).ok_or_else(|| self.too_long())?)?;
            Ok(b.chunks_exact(4).map(|c| f32::from_bits(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect())
        }
        pub fn bools(&mut self, count: usize) -> Result<Vec<bool>, LearnError> {
            Ok(self.take(count)?.iter().map(|b| *b != 0).collect())
        }
        /// The message must end here.
        pub fn finish(self) -> Result<(), LearnError> {
            if self.bytes.is_empty() {
                Ok(())
            } else {
                Err(LearnError::Team(format!(
                    "the message of member {} has {} bytes too many",
                    self.from,
                    self.bytes.len()
                )))
            }
        }
        fn too_long(&self) -> LearnError {
            LearnError::Team(format!("member {} sent an impossible length", self.from))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_cover_every_item_once_in_order() {
        for len in 0..40 {
            for size in 1..7 {
                let ranges: Vec<_> = (0..size).map(|r| member_range(r, size, len)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, len);
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
        // 10 blocks over 3 members: 3, 3, 4.
        assert_eq!((0..3).map(|r| member_range(r, 3, 10)).collect::<Vec<_>>(), vec![0..3, 3..6, 6..10]);
    }

    #[test]
    fn thread_team_gathers_in_rank_order_round_after_round() {
        let out = ThreadTeam::run(3, |t| {
            let tally = Tally::new(t);
            let a = tally.all_gather(&vec![t.rank() as u8; t.rank() + 1]).unwrap();
            let b = tally.all_gather(&[10 + t.rank() as u8]).unwrap();
            (a, b, tally.traffic())
        });
        for (rank, (a, b, traffic)) in out.into_iter().enumerate() {
            assert_eq!(a, vec![vec![0], vec![1, 1], vec![2, 2, 2]]);
            assert_eq!(b, vec![vec![10], vec![11], vec![12]]);
            // Received: the others' bytes of both rounds (round 1: 6 − (rank+1); round 2: 2).
            assert_eq!((traffic.exchanges, traffic.bytes), (2, (6 - (rank + 1) + 2) as u64));
        }
    }

    #[test]
    fn wire_round_trips_bits_and_refuses_short_or_long_messages() {
        let mut w = wire::Writer::default();
        w.u64(3);
        w.f64s([f64::MIN_POSITIVE, -0.0, 1.0 / 3.0]);
        w.f32s([f32::MAX]);
        w.bools([true, false]);
        let mut r = wire::Reader::new(&w.0, 1);
        assert_eq!(r.len().unwrap(), 3);
        let f = r.f64s(3).unwrap();
        assert_eq!(
            f.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [f64::MIN_POSITIVE, -0.0, 1.0 / 3.0].map(f64::to_bits)
        );
        assert_eq!(r.f32s(1).unwrap(), [f32::MAX]);
        assert_eq!(r.bools(2).unwrap(), [true, false]);
        r.finish().unwrap();
        let err = wire::Reader::new(&w.0[..5], 2).u64().unwrap_err().to_string();
        assert!(err.contains("member 2") && err.contains("3 bytes short"), "{err}");
        let err = wire::Reader::new(&w.0, 2).finish().unwrap_err().to_string();
        assert!(err.contains("too many"), "{err}");
    }
}
