//! The zeroed reserve past the end of the data file: a thread that keeps allocated,
//! zero-filled space beyond the last page LMDB has written, so that a commit overwrites
//! blocks the filesystem already holds instead of extending the file.
//!
//! Why: a commit that extends the file (new blocks, a new size) makes its `fdatasync`
//! also write the inode and the block maps (on a journalled filesystem, commit the
//! journal), every commit; a commit that overwrites allocated blocks flushes its pages and
//! no more. BENCHMARKS.md measures the difference ("The zeroed reserve").
//!
//! Why writing beside LMDB is safe: the reserve only ever *appends* (`O_APPEND`), so each
//! write lands at the file's end of that moment, decided under the inode's lock that
//! LMDB's own `pwrite`s take too. It never covers a byte LMDB has written; LMDB later
//! writes its pages over the zeros, or past them, as it writes past the end today. LMDB
//! reads only pages up to its last written one, so it never reads a zero it did not
//! write, and a file longer than its data opens as before.
//!
//! The zeros are written with `O_DIRECT`: they never sit dirty in the page cache, where a
//! commit's `fdatasync` would have to flush them in its critical path. Each top-up ends
//! with its own `fdatasync`, so the new blocks and size are on disk before LMDB reaches
//! them. A filesystem without `O_DIRECT` (tmpfs) or without room gets no reserve;
//! the log works the same without one.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Each append of zeros, bytes: a multiple of every block size `O_DIRECT` may demand, and
/// small enough that the inode lock an extending direct write holds (0.2 ms here) keeps
/// no commit waiting long.
pub const RESERVE_CHUNK_BYTES: u64 = 256 << 10;
/// The least the reserve keeps ahead of the data, bytes.
pub const RESERVE_AHEAD_MIN_BYTES: u64 = 4 << 20;
/// The most the reserve keeps ahead of the data, bytes: bounds the disk it holds unused.
pub const RESERVE_AHEAD_MAX_BYTES: u64 = 256 << 20;
/// How many seconds of the recent growth the reserve keeps ahead.
pub const RESERVE_AHEAD_SECONDS: u64 = 2;
/// How often the reserve looks at the data's end while the data grows.
pub const RESERVE_TICK: Duration = Duration::from_millis(100);
/// How often it looks while the data stands still (an idle Sluice wakes it rarely).
pub const RESERVE_IDLE_TICK: Duration = Duration::from_secs(1);
/// The reserve never takes the filesystem's free space below this, bytes (on top of the
/// ingest guard's `storage.disk_reserve_bytes`, which it also respects).
pub const RESERVE_FREE_FLOOR_BYTES: u64 = 1 << 30;

/// Where the reserve should end: `used` plus the larger of the minimum and
/// `RESERVE_AHEAD_SECONDS` of growth at `growth_per_s`, at most the maximum, in whole
/// chunks, and never past `map_size` (LMDB cannot use more).
pub fn reserve_end(used: u64, growth_per_s: u64, map_size: u64) -> u64 {
    let ahead = growth_per_s
        .saturating_mul(RESERVE_AHEAD_SECONDS)
        .clamp(RESERVE_AHEAD_MIN_BYTES, RESERVE_AHEAD_MAX_BYTES);
    let end = used.saturating_add(ahead).div_ceil(RESERVE_CHUNK_BYTES) * RESERVE_CHUNK_BYTES;
    end.min(map_size)
}

/// Whether to top up now: the file's end has fallen to less than half the way from the
/// data's end to where the reserve should end (so that top-ups come in runs of chunks,
/// each run with one `fdatasync`, not one per commit).
pub fn needs_top_up(used: u64, file_end: u64, target: u64) -> bool {
    file_end < target && file_end.saturating_sub(used) < (target.saturating_sub(used)) / 2
}

/// The growth estimate after a tick that saw the data grow by `grew` bytes in `elapsed`:
/// it follows a rise at once and decays by an eighth a tick (to zero, in time), so a
/// burst keeps its room.
pub fn next_growth(previous_per_s: u64, grew: u64, elapsed: Duration) -> u64 {
    let millis = u64::try_from(elapsed.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let observed = grew.saturating_mul(1000) / millis;
    observed.max(previous_per_s - previous_per_s.div_ceil(8))
}

/// How long to wait before the next look: short while the data grows, long while idle.
pub fn next_tick(growth_per_s: u64) -> Duration {
    if growth_per_s > 0 {
        RESERVE_TICK
    } else {
        RESERVE_IDLE_TICK
    }
}

/// What the writer tells the reserve: how many pages of the file LMDB has written.
#[derive(Debug, Default)]
pub struct WrittenPages(AtomicU64);

impl WrittenPages {
    pub fn set(&self, pages: u64) {
        self.0.store(pages, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running reserve thread. Dropping the handle drops `stop`, which wakes the thread and
/// stops it; `join` also waits for it.
pub struct Reserve {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reserve {
    /// Starts the reserve for the data file of the log in `dir`, whose pages are
    /// `page_size` bytes; `None` if the file cannot be opened for direct appends (the log
    /// then runs without a reserve, as it would on tmpfs).
    pub fn start(
        dir: &Path,
        page_size: u64,
        map_size: u64,
        disk_reserve_bytes: u64,
        written: Arc<WrittenPages>,
    ) -> Option<Reserve> {
        let file = dir.join(super::DATA_FILE);
        let appender = match std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&file)
        {
            Ok(appender) => appender,
            Err(error) => {
                tracing::info!(%error, file = %file.display(), "No zeroed reserve for the data file (direct appends are not possible here).");
                return None;
            }
        };
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let dir = dir.to_path_buf();
        let limits = Limits {
            page_size,
            map_size,
            free_floor: RESERVE_FREE_FLOOR_BYTES.max(disk_reserve_bytes),
        };
        let thread = std::thread::Builder::new()
            .name("sluice-reserve".to_owned())
            .spawn(move || run(appender, &dir, &limits, &written, &stopped))
            .ok()?;
        Some(Reserve { stop, thread })
    }

    /// Stops the thread and waits for it (it finishes the chunk it is writing).
    pub fn join(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

struct Limits {
    page_size: u64,
    map_size: u64,
    free_floor: u64,
}

/// Why a top-up stopped early; the reserve then stops for good (it is an optimisation,
/// and a filesystem that refuses it once will refuse it again).
#[derive(Debug, thiserror::Error)]
enum TopUpError {
    #[error("cannot read the data file's size: {0}")]
    Size(std::io::Error),
    #[error("cannot append zeros: {0}")]
    Append(std::io::Error),
    #[error("cannot sync the zeros: {0}")]
    Sync(std::io::Error),
}

fn run(
    mut appender: File,
    dir: &Path,
    limits: &Limits,
    written: &WrittenPages,
    stopped: &Receiver<()>,
) {
    let zeros = AlignedZeros::new();
    let mut last_used = written.get() * limits.page_size;
    let mut last_tick = Instant::now();
    let mut growth_per_s = 0;
    loop {
        match stopped.recv_timeout(next_tick(growth_per_s)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let used = written.get() * limits.page_size;
        let now = Instant::now();
        growth_per_s = next_growth(
            growth_per_s,
            used.saturating_sub(last_used),
            now - last_tick,
        );
        (last_used, last_tick) = (used, now);
        let target = reserve_end(used, growth_per_s, limits.map_size);
        if let Err(error) = top_up(&mut appender, &zeros, used, target, dir, limits) {
            tracing::warn!(%error, "The data file's zeroed reserve stops; commits extend the file instead.");
            return;
        }
    }
}

/// Appends zeros until the file reaches `target`, if it has fallen behind, then syncs
/// them. Stops short, without error, where free space would fall under the floor.
fn top_up(
    appender: &mut File,
    zeros: &AlignedZeros,
    used: u64,
    target: u64,
    dir: &Path,
    limits: &Limits,
) -> Result<(), TopUpError> {
    let mut file_end = appender.metadata().map_err(TopUpError::Size)?.len();
    if !needs_top_up(used, file_end, target) {
        return Ok(());
    }
    let free = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    let room = free.saturating_sub(limits.free_floor);
    let target = target.min(file_end.saturating_add(room));
    let mut appended = false;
    while file_end < target {
        appender
            .write_all(zeros.chunk())
            .map_err(TopUpError::Append)?;
        file_end += RESERVE_CHUNK_BYTES;
        appended = true;
    }
    if appended {
        appender.sync_data().map_err(TopUpError::Sync)?;
        metrics::gauge!(crate::telemetry::name::LOG_RESERVE_BYTES)
            .set(file_end.saturating_sub(used) as f64);
    }
    Ok(())
}

/// One chunk of zeros at an address `O_DIRECT` accepts (page-aligned).
struct AlignedZeros {
    buffer: Vec<u8>,
    offset: usize,
}

impl AlignedZeros {
    const ALIGN: usize = 4096;
    const LEN: usize = RESERVE_CHUNK_BYTES as usize;

    fn new() -> AlignedZeros {
        let buffer = vec![0u8; Self::LEN + Self::ALIGN];
        let offset = buffer.as_ptr().align_offset(Self::ALIGN);
        AlignedZeros { buffer, offset }
    }

    fn chunk(&self) -> &[u8] {
        &self.buffer[self.offset..self.offset + Self::LEN]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_reserve_keeps_two_seconds_of_growth_within_its_bounds() {
        let map = 1 << 40;
        // Idle: the minimum, in whole chunks past the data.
        assert_eq!(
            reserve_end(10 * MIB + 5, 0, map),
            14 * MIB + RESERVE_CHUNK_BYTES
        );
        // 30 MiB/s: 60 MiB ahead.
        assert_eq!(reserve_end(100 * MIB, 30 * MIB, map), 160 * MIB);
        // Far faster than the maximum allows.
        assert_eq!(reserve_end(0, 10_000 * MIB, map), RESERVE_AHEAD_MAX_BYTES);
        // Never past the map.
        assert_eq!(reserve_end(100 * MIB, 30 * MIB, 120 * MIB), 120 * MIB);
    }

    #[test]
    fn a_top_up_waits_until_half_the_reserve_is_used() {
        // 100 MiB of data, the reserve should reach 160 MiB.
        assert!(!needs_top_up(100 * MIB, 160 * MIB, 160 * MIB));
        assert!(!needs_top_up(100 * MIB, 131 * MIB, 160 * MIB));
        assert!(needs_top_up(100 * MIB, 129 * MIB, 160 * MIB));
        // The data has passed the zeros (a commit larger than the reserve).
        assert!(needs_top_up(170 * MIB, 150 * MIB, 230 * MIB));
        // At the map's end there is nothing left to add.
        assert!(!needs_top_up(100 * MIB, 120 * MIB, 120 * MIB));
    }

    #[test]
    fn the_growth_estimate_rises_at_once_and_decays_slowly() {
        let tick = Duration::from_millis(100);
        assert_eq!(next_growth(0, 3 * MIB, tick), 30 * MIB);
        assert_eq!(next_growth(30 * MIB, 0, tick), 30 * MIB - 30 * MIB / 8);
        assert_eq!(next_growth(8, 0, Duration::ZERO), 7);
        // Idle again: the estimate reaches zero, and the reserve looks less often.
        let mut growth = 30 * MIB;
        let mut ticks = 0;
        while growth > 0 {
            growth = next_growth(growth, 0, tick);
            ticks += 1;
            assert!(ticks < 200, "the estimate decays to zero");
        }
        assert_eq!(next_tick(growth), RESERVE_IDLE_TICK);
        assert_eq!(next_tick(1), RESERVE_TICK);
    }

    #[test]
    fn a_top_up_appends_zeros_after_everything_written_and_never_over_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data.mdb");
        // Bytes "LMDB" wrote: three pages of a pattern.
        let written: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&path, &written).expect("write");
        let Some(mut appender) = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&path)
            .ok()
        else {
            // A temporary directory on tmpfs has no O_DIRECT; the reserve does not start
            // there either (see `Reserve::start`).
            return;
        };
        let limits = Limits {
            page_size: 4096,
            map_size: 1 << 40,
            free_floor: 0,
        };
        let used = written.len() as u64;
        let target = reserve_end(used, 0, limits.map_size);
        let zeros = AlignedZeros::new();
        let mut top_up_now = || {
            top_up(&mut appender, &zeros, used, target, dir.path(), &limits).expect("top up");
        };
        top_up_now();
        let after = std::fs::read(&path).expect("read");
        let reached = after.len() as u64;
        assert!(
            (target..target + RESERVE_CHUNK_BYTES).contains(&reached),
            "the file reaches the target in whole chunks past the data: {reached} for {target}"
        );
        assert_eq!(&after[..written.len()], &written[..], "data kept");
        assert!(
            after[written.len()..].iter().all(|&b| b == 0),
            "zeros after"
        );
        // Nothing to do until half of it is used.
        top_up_now();
        assert_eq!(std::fs::metadata(&path).expect("size").len(), reached);
    }
}
