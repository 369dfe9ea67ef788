//! The log cleaner's runtime side: it runs the cleans the broker plans (standalone: due
//! compacted partitions; cluster: the cleans partition leaders ordered), copying on a thread
//! at idle CPU priority, without the broker lock, within
//! `--log-cleaner-io-max-bytes-per-second`.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::broker::CleanTarget;
use sluice_proto::runtime::Runtime;
use tracing::{error, info, warn};

use crate::metrics::Counters;
use crate::server::{Shared, now_ms};

/// Compacts the logs of compacted topics in the background, one partition at a time. The plan
/// and the swap take the broker lock and run on the blocking pool at normal priority (a thread
/// holding the lock must never wait for spare CPU); the copy, the long part, reads closed
/// segments only, without the lock, on a thread of its own at idle priority and within
/// `--log-cleaner-io-max-bytes-per-second`. Sleeps `--log-cleaner-backoff-ms` when nothing is
/// due or a clean did not complete.
pub async fn run<R: Runtime>(rt: R, shared: Arc<Shared>) {
    let backoff = Duration::from_millis(shared.config.log_cleaner_backoff_ms);
    let (work_tx, work_rx) = async_channel::bounded::<CleanJob>(1);
    let (done_tx, done_rx) = async_channel::bounded::<Copied>(1);
    let s = shared.clone();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("log-cleaner".into())
        .spawn(move || {
            let _entered = span.enter();
            lower_priority();
            while let Ok(job) = work_rx.recv_blocking() {
                if done_tx.send_blocking(copy(&s, job)).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        error!(error = %e, "starting the log cleaner thread failed: compacted topics are not cleaned");
        return;
    }
    while !shared.shutting_down() {
        let s = shared.clone();
        let job = rt
            .spawn_blocking(move || guarded("planning a clean", || plan(&s)).flatten())
            .await;
        let mut busy = false;
        if let Some(job) = job {
            if work_tx.send(job).await.is_err() {
                break;
            }
            let Ok(copied) = done_rx.recv().await else {
                break;
            };
            let s = shared.clone();
            busy = rt
                .spawn_blocking(move || {
                    guarded("swapping a clean in", || finish(&s, copied)).unwrap_or(false)
                })
                .await;
        }
        if !busy && !shared.shutting_down() {
            futures_lite::future::or(shared.stopped(), rt.sleep(backoff)).await;
        }
    }
}

/// Runs `f`, logging a panic instead of ending the cleaner for good (the next partition's turn
/// comes after the backoff).
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .inspect_err(|_| error!("log cleaner panicked {what}"))
        .ok()
}

/// The cleaner's thread runs at idle CPU priority (`SCHED_IDLE`): the kernel then treats its
/// core as free when it wakes a request handler, which takes the core at once. At nice 10 the
/// handler was placed behind the busy core's other work instead, and produce p99 doubled while
/// a clean ran (bench/cleaner_bench.py); at idle priority it stays within a few percent.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on this thread (pid 0: the caller), reading `param` only.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if r != 0 {
            warn!(error = %std::io::Error::last_os_error(), "running the log cleaner at idle priority failed");
        }
    }
}

/// A cleaner starved at idle priority (its CPUs saturated by other work) goes back to normal
/// scheduling at nice 10, where the kernel allows it (root or `CAP_SYS_NICE`); true if it did.
fn raise_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system calls on this thread (pid 0 / its own tid), reading `param` only.
        unsafe {
            if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0 {
                return false;
            }
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// A clean to copy: the broker's plan and when it was taken.
struct CleanJob {
    job: sluice_proto::broker::CleanJob,
    started: std::time::Instant,
}

/// A copied clean to swap in.
struct Copied {
    target: CleanTarget,
    started: std::time::Instant,
    /// `None`: the copy failed or panicked (already logged).
    cleaned: Option<sluice_proto::log::Cleaned>,
}

/// Step 1, under the broker lock: the next partition due a clean.
fn plan(shared: &Shared) -> Option<CleanJob> {
    use sluice_proto::log::CleanerLimits;
    let job = shared
        .broker
        .lock()
        .unwrap()
        .plan_clean(now_ms(), CleanerLimits::default())?;
    Some(CleanJob {
        job,
        started: std::time::Instant::now(),
    })
}

/// Step 2, on the idle-priority thread without the lock: the throttled copy.
fn copy(shared: &Shared, job: CleanJob) -> Copied {
    let CleanJob { job, started } = job;
    let (target, plan) = job.split();
    let mut throttle = Throttle::new(shared.config.log_cleaner_io_max_bytes_per_second);
    let cleaned = guarded("copying a clean", || {
        plan.copy(&mut |n| throttle.take(n) && !shared.shutting_down())
    })
    .and_then(|r| {
        r.inspect_err(|e| warn!(topic = %target.topic, partition = target.partition, error = %e, "log clean failed"))
            .ok()
    });
    Copied {
        target,
        started,
        cleaned,
    }
}

/// Step 3, under the lock: the swap; then the checkpoint and the removal of the replaced files
/// without it. True when the clean completed.
fn finish(shared: &Shared, copied: Copied) -> bool {
    let Copied {
        target:
            CleanTarget {
                topic_id,
                topic,
                partition,
            },
        started,
        cleaned,
    } = copied;
    let Some(cleaned) = cleaned else {
        return false;
    };
    let swap_started = std::time::Instant::now();
    let result = shared
        .broker
        .lock()
        .unwrap()
        .finish_clean(topic_id, partition, cleaned);
    let swap_ms = swap_started.elapsed().as_millis() as u64;
    let result = result.and_then(|s| s.map(|s| s.tidy()).transpose());
    match result {
        Ok(Some(stats)) => {
            let m = &shared.metrics;
            Counters::add(&m.log_cleans, 1);
            Counters::add(&m.log_cleaner_bytes_read, stats.bytes_read as usize);
            Counters::add(&m.log_cleaner_bytes_written, stats.bytes_written as usize);
            m.log_cleaner_last_clean_ms.store(
                started.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            info!(
                topic = %topic,
                partition,
                read_mb_per_s = format!("{:.1}", stats.bytes_read as f64 / secs / 1e6),
                ms = started.elapsed().as_millis() as u64,
                swap_ms,
                "clean complete"
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            error!(topic = %topic, partition, error = %e, "swapping cleaned segments failed");
            false
        }
    }
}

/// The cleaner's read budget: sleeps so that at most `rate` bytes go by per second.
struct Throttle {
    /// Whether this clean already asked for normal scheduling.
    raised: bool,
    rate: u64,
    started: std::time::Instant,
    bytes: u64,
    unchecked: u64,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Throttle {
            rate,
            started: std::time::Instant::now(),
            bytes: 0,
            unchecked: 0,
            raised: false,
        }
    }

    /// After 10 s below a quarter of its budget (4 MB/s without one), the clean is starved
    /// at idle priority: it asks for normal scheduling once.
    fn check_starved(&mut self) {
        if self.raised {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let floor = if self.rate == 0 {
            4e6
        } else {
            self.rate as f64 / 4.0
        };
        if secs > 10.0 && (self.bytes as f64) < floor * secs {
            self.raised = true;
            if raise_priority() {
                warn!(
                    read_mb_per_s = format!("{:.1}", self.bytes as f64 / secs / 1e6),
                    "the log cleaner was starved at idle priority: it runs at nice 10 from now on"
                );
            } else {
                warn!(
                    read_mb_per_s = format!("{:.1}", self.bytes as f64 / secs / 1e6),
                    "the log cleaner is starved at idle priority and may not raise it (needs CAP_SYS_NICE): compaction falls behind while the CPUs are saturated"
                );
            }
        }
    }

    /// Accounts `n` bytes, sleeping when ahead of the budget; always true.
    fn take(&mut self, n: u64) -> bool {
        self.bytes += n;
        self.unchecked += n;
        if self.unchecked < 64 << 10 {
            return true;
        }
        self.unchecked = 0;
        self.check_starved();
        if self.rate == 0 {
            return true;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
        }
        true
    }
}
