//! Collecting items into batches, limited by what is in flight ([`next_step`] decides, the task
//! executes): with no call in flight, what is queued goes out at once (an idle target adds no
//! latency) unless the arrivals will fill the batch within a call's latency; while a call is in
//! flight, a batch that is not full waits until it fills or a call returns (under load, batches
//! fill and the requests per message fall), for at most [`MAX_IN_FLIGHT_WAIT`]. Arrivals are
//! measured in bursts ([`BURST_WINDOW`]), since a receive hands over up to 10 items at once. A
//! full batch goes out whenever a call slot is free. An optional linger waits a little longer
//! for more before any batch goes out.

use crate::observe::events::{BatchTaskFailed, LogEvent};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A running batch task.
pub struct Batcher {
    close: CancellationToken,
    handle: JoinHandle<()>,
}

impl Batcher {
    /// Stops taking new items, flushes every item already sent, and waits for the flushes.
    pub async fn finish(self) {
        self.close.cancel();
        if let Err(e) = self.handle.await {
            BatchTaskFailed { error: e.to_string() }.emit();
        }
    }
}

/// Starts a task that batches items sent to the returned sender and hands each batch to
/// `flush`, running at most `concurrency` flushes at once. A batch that is not full goes out
/// only when no flush is in flight, or when one returns ([`in_flight_wait`]); while flushes run,
/// items queue up, so batches grow with load. The task ends when every sender is dropped or
/// [`Batcher::finish`] is called, after flushing everything sent before.
pub fn spawn_batcher<T, F, Fut>(
    max: usize,
    linger: Duration,
    concurrency: usize,
    flush: F,
) -> (UnboundedSender<T>, Batcher)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = unbounded_channel::<T>();
    let close = CancellationToken::new();
    let closing = close.clone();
    let handle = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut flushes = JoinSet::new();
        let mut load = Load::default();
        loop {
            let first = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
                _ = closing.cancelled(), if !rx.is_closed() => {
                    rx.close();
                    continue;
                }
            };
            let slot = slots.clone().acquire_owned().await.expect("semaphore is never closed");
            load.arrived(1);
            let mut batch = collect(&mut rx, first, max.max(1), linger).await;
            load.arrived(batch.len() - 1);
            let started = tokio::time::Instant::now();
            loop {
                let step = next_step(
                    batch.len(),
                    max.max(1),
                    flushes.len(),
                    load.arrivals(),
                    load.call_latency,
                    started.elapsed(),
                );
                let Step::WaitAtMost(wait) = step else { break };
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => {
                            load.arrived(1);
                            batch.push(item);
                        }
                        None => break,
                    },
                    Some(done) = flushes.join_next() => load.call_took(done),
                    // A call that hangs (a target near its timeout) holds nothing back for long.
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let fut = flush(batch);
            flushes.spawn(async move {
                let started = tokio::time::Instant::now();
                fut.await;
                drop(slot);
                started.elapsed()
            });
            while let Some(done) = flushes.try_join_next() {
                load.call_took(done);
            }
        }
        while flushes.join_next().await.is_some() {}
    });
    (tx, Batcher { close, handle })
}

/// Longest a partial batch waits behind calls in flight: far above a queue call's round trip
/// (SQS on LocalStack ~5 ms; on AWS ~20 ms), so under load batches still fill, and short
/// enough that a call which hangs until its timeout does not hold back the messages after it.
pub const MAX_IN_FLIGHT_WAIT: Duration = Duration::from_millis(50);

/// Longest a partial batch waits to fill while no call is in flight, and only when the items
/// arriving would fill it that soon (the same as `publish_flush_ms = 10`, but only under load).
pub const MAX_FILL_WAIT: Duration = Duration::from_millis(10);

/// Items that arrive within this of the first item of a burst belong to that burst. Items come
/// in bursts: one receive brings up to 10 messages, and the pipeline hands their forwards to
/// the batch task within microseconds of each other. Measuring the gap between bursts instead
/// of between items keeps a pause between two receives from looking like the end of the load.
pub const BURST_WINDOW: Duration = Duration::from_millis(1);

/// Gaps between bursts longer than this count as this (an idle spell ends the estimate fast).
const MAX_COUNTED_GAP: Duration = Duration::from_millis(100);

/// What the batch task does next with a batch that is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send it now.
    Send,
    /// Wait for more items, a call to return, or this long, then decide again.
    WaitAtMost(Duration),
}

/// How items are arriving: a burst of `items` on average (at least 1) every `every`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrivals {
    /// The mean time from one burst to the next.
    pub every: Duration,
    /// The mean number of items in a burst.
    pub items: f64,
}

impl Arrivals {
    /// How long until `n` more items have arrived at this rate.
    fn time_for(&self, n: usize) -> Duration {
        self.every.mul_f64(n as f64 / self.items.max(1.0))
    }
}

/// The batching policy, for a batch of `len` items (at most `max`) collected for `waited`,
/// with items arriving as `arrivals` says (`None`: no estimate, or the arrivals have stopped)
/// and calls taking `call_latency` on average (`None`: none has returned yet):
///
/// - a full batch goes at once;
/// - while calls are in flight, a partial batch waits for one to return or for the batch to
///   fill, for at most [`MAX_IN_FLIGHT_WAIT`], but only when another burst is expected before
///   a call returns (bursts come more often than calls take, or the latency is not known yet):
///   under load, batches grow and requests per message fall, while sparse messages never wait
///   for nothing;
/// - otherwise it goes at once (an idle target adds no latency) unless, at the current arrival
///   rate, the rest of the batch arrives within [`MAX_FILL_WAIT`] of the start and within twice
///   a call's latency: waiting that long then saves more than it costs.
pub fn next_step(
    len: usize,
    max: usize,
    in_flight: usize,
    arrivals: Option<Arrivals>,
    call_latency: Option<Duration>,
    waited: Duration,
) -> Step {
    if len >= max {
        return Step::Send;
    }
    let more_before_a_return = match (arrivals, call_latency) {
        (_, None) => true,
        (Some(arrivals), Some(latency)) => arrivals.every < latency,
        (None, Some(_)) => false,
    };
    if in_flight > 0 && more_before_a_return {
        return match MAX_IN_FLIGHT_WAIT.checked_sub(waited) {
            Some(left) if !left.is_zero() => Step::WaitAtMost(left),
            _ => Step::Send,
        };
    }
    let (Some(arrivals), Some(latency)) = (arrivals, call_latency) else {
        return Step::Send;
    };
    let eta = arrivals.time_for(max - len);
    if !eta.is_zero() && waited + eta <= MAX_FILL_WAIT && eta <= latency * 2 {
        Step::WaitAtMost(eta)
    } else {
        Step::Send
    }
}

/// What the batch task knows of its load: the bursts in which items arrive (see
/// [`BURST_WINDOW`]) and a call's latency (moving averages, weight 1/8 for the newest).
#[derive(Debug, Default)]
struct Load {
    /// When the current burst started, and how many items it has.
    burst: Option<(tokio::time::Instant, usize)>,
    last_arrival: Option<tokio::time::Instant>,
    /// The mean time from one burst's start to the next and the mean burst size; `None`
    /// before the second burst.
    mean: Option<Arrivals>,
    call_latency: Option<Duration>,
}

impl Load {
    /// `n` items arrived now.
    fn arrived(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let now = tokio::time::Instant::now();
        self.last_arrival = Some(now);
        match self.burst {
            Some((start, ref mut items)) if now.duration_since(start) < BURST_WINDOW => *items += n,
            previous => {
                if let Some((start, items)) = previous {
                    let burst = Arrivals {
                        every: now.duration_since(start).min(MAX_COUNTED_GAP),
                        items: items as f64,
                    };
                    self.mean = Some(self.mean.map_or(burst, |mean| Arrivals {
                        every: average(mean.every, burst.every),
                        items: (mean.items * 7.0 + burst.items) / 8.0,
                    }));
                }
                self.burst = Some((now, n));
            }
        }
    }

    /// How items arrive, or `None` when there is no estimate yet or the last arrival is already
    /// longer ago than twice the mean gap between bursts (the arrivals have stopped). A gap
    /// that is already longer than the mean counts as it is.
    fn arrivals(&self) -> Option<Arrivals> {
        let mean = self.mean?;
        let since = self.last_arrival?.elapsed();
        (since <= mean.every * 2).then(|| Arrivals {
            every: mean.every.max(since),
            ..mean
        })
    }

    fn call_took(&mut self, done: Result<Duration, tokio::task::JoinError>) {
        if let Ok(took) = done {
            self.call_latency = Some(self.call_latency.map_or(took, |mean| average(mean, took)));
        }
    }
}

fn average(mean: Duration, new: Duration) -> Duration {
    (mean * 7 + new) / 8
}

/// Starts a batch with `first` and adds queued items until `max` or, with a non-zero `linger`,
/// until `linger` has passed.
pub async fn collect<T>(rx: &mut UnboundedReceiver<T>, first: T, max: usize, linger: Duration) -> Vec<T> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if linger.is_zero() => break,
            Err(TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            },
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    #[tokio::test(start_paused = true)]
    async fn takes_what_is_queued_up_to_max() {
        let (tx, mut rx) = unbounded_channel();
        for i in 0..25 {
            tx.send(i).unwrap();
        }
        let first = rx.recv().await.unwrap();
        assert_eq!(
            collect(&mut rx, first, 10, Duration::ZERO).await,
            (0..10).collect::<Vec<_>>()
        );
        let first = rx.recv().await.unwrap();
        assert_eq!(collect(&mut rx, first, 100, Duration::ZERO).await.len(), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn batcher_flushes_everything_before_it_ends() {
        let flushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = flushed.clone();
        let (tx, handle) = spawn_batcher(10, Duration::ZERO, 2, move |batch: Vec<u32>| {
            let sink = sink.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                sink.lock().unwrap().push(batch.len());
            }
        });
        for i in 0..95 {
            tx.send(i).unwrap();
        }
        handle.finish().await;
        assert!(tx.send(1).is_err(), "a finished batcher takes no more items");
        let sizes = flushed.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 95);
        assert!(sizes.iter().all(|&n| n <= 10));
    }

    /// Bursts of `items` every `every`.
    fn bursts(every: Duration, items: f64) -> Option<Arrivals> {
        Some(Arrivals { every, items })
    }

    #[test]
    fn only_a_partial_batch_behind_a_call_in_flight_or_about_to_fill_waits() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert_eq!(
            next_step(1, 10, 0, None, Some(ms(5)), ms(0)),
            Step::Send,
            "idle: out at once"
        );
        assert_eq!(
            next_step(1, 10, 1, bursts(ms(1), 1.0), Some(ms(5)), ms(0)),
            Step::WaitAtMost(MAX_IN_FLIGHT_WAIT),
            "a call in flight and more coming before it returns: wait for more or for its return"
        );
        assert_eq!(
            next_step(1, 10, 1, None, None, ms(0)),
            Step::WaitAtMost(MAX_IN_FLIGHT_WAIT),
            "no call has returned yet: wait behind the first"
        );
        assert_eq!(
            next_step(1, 10, 1, bursts(ms(20), 1.0), Some(ms(5)), ms(0)),
            Step::Send,
            "sparse arrivals (one per 20 ms, calls of 5 ms): waiting gains nothing"
        );
        assert_eq!(
            next_step(3, 10, 1, bursts(ms(1), 1.0), Some(ms(5)), MAX_IN_FLIGHT_WAIT),
            Step::Send
        );
        assert_eq!(
            next_step(10, 10, 3, bursts(us(100), 1.0), Some(ms(5)), ms(0)),
            Step::Send,
            "a full batch goes whenever a slot is free"
        );
        assert_eq!(
            next_step(5, 10, 0, bursts(us(800), 1.0), Some(ms(5)), ms(1)),
            Step::WaitAtMost(ms(4)),
            "under load, the rest arrives soon: wait for it"
        );
        assert_eq!(
            next_step(5, 10, 0, bursts(ms(4), 5.0), Some(ms(5)), ms(0)),
            Step::WaitAtMost(ms(4)),
            "bursts of 5 every 4 ms: the next burst fills it"
        );
        assert_eq!(
            next_step(5, 10, 0, bursts(us(800), 1.0), Some(ms(5)), ms(7)),
            Step::Send,
            "never past MAX_FILL_WAIT"
        );
        assert_eq!(
            next_step(5, 10, 0, bursts(us(800), 1.0), Some(us(50)), ms(0)),
            Step::Send,
            "calls cheaper than the wait: send"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_between_bursts_is_not_the_end_of_the_load() {
        let mut load = Load::default();
        load.call_took(Ok(Duration::from_millis(8)));
        // Receives of 7 forwards each, every 3 ms.
        for _ in 0..20 {
            load.arrived(7);
            tokio::time::advance(Duration::from_millis(3)).await;
        }
        let arrivals = load
            .arrivals()
            .expect("bursts every 3 ms: still arriving 3 ms after one");
        assert_eq!(arrivals.every, Duration::from_millis(3));
        assert!((arrivals.items - 7.0).abs() < 0.01, "{arrivals:?}");
        assert!(matches!(
            next_step(7, 10, 1, Some(arrivals), load.call_latency, Duration::ZERO),
            Step::WaitAtMost(_)
        ));
        tokio::time::advance(Duration::from_millis(4)).await;
        assert_eq!(load.arrivals(), None, "7 ms without a burst: the arrivals have stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn items_of_one_burst_count_as_one_arrival() {
        let mut load = Load::default();
        for _ in 0..10 {
            for _ in 0..4 {
                load.arrived(1);
                tokio::time::advance(Duration::from_micros(100)).await;
            }
            tokio::time::advance(Duration::from_micros(4600)).await;
        }
        let arrivals = load.arrivals().expect("arriving");
        assert_eq!(arrivals.every, Duration::from_millis(5));
        assert!((arrivals.items - 4.0).abs() < 0.01, "{arrivals:?}");
    }

    /// (time of the flush, batch size) per flush.
    type Flushes = Arc<std::sync::Mutex<Vec<(Duration, usize)>>>;

    /// Records every flush; each takes 10 ms.
    fn timed_batcher(max: usize) -> (UnboundedSender<u32>, Batcher, Flushes) {
        let flushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = flushed.clone();
        let start = tokio::time::Instant::now();
        let (tx, batcher) = spawn_batcher(max, Duration::ZERO, 16, move |batch: Vec<u32>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((start.elapsed(), batch.len()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        (tx, batcher, flushed)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_batcher_sends_at_once_and_a_busy_one_batches_behind_the_call() {
        let (tx, batcher, flushed) = timed_batcher(10);
        tx.send(0).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // While the first call is in flight, 5 more come one by one.
        for i in 1..=5 {
            tx.send(i).unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Idle again: the next one goes out at once.
        tx.send(6).unwrap();
        batcher.finish().await;
        let ms = |d: Duration| d.as_millis();
        let seen: Vec<(u128, usize)> = flushed.lock().unwrap().iter().map(|&(t, n)| (ms(t), n)).collect();
        assert_eq!(
            seen,
            vec![(0, 1), (10, 5), (36, 1)],
            "one call at once, then the five that queued behind it in one call when it returned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_holds_the_next_batch_back_only_briefly() {
        let flushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = flushed.clone();
        let start = tokio::time::Instant::now();
        let (tx, batcher) = spawn_batcher(10, Duration::ZERO, 16, move |batch: Vec<u32>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((start.elapsed(), batch.len()));
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
        });
        tx.send(0).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        tx.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = flushed.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(Duration::ZERO, 1), (Duration::from_millis(1) + MAX_IN_FLIGHT_WAIT, 1)],
            "the second message waits MAX_IN_FLIGHT_WAIT, not the 120 s call"
        );
        drop(tx);
        batcher.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_do_not_wait_for_calls_in_flight() {
        let (tx, batcher, flushed) = timed_batcher(10);
        for i in 0..40 {
            tx.send(i).unwrap();
        }
        batcher.finish().await;
        let seen = flushed.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        assert!(
            seen.iter().all(|&(t, n)| t.is_zero() && n == 10),
            "four full batches at once: {seen:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn linger_waits_for_more_then_flushes_partial() {
        let (tx, mut rx) = unbounded_channel();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send(2).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(3).unwrap();
        });
        let start = tokio::time::Instant::now();
        assert_eq!(collect(&mut rx, 1, 10, Duration::from_millis(5)).await, vec![1, 2]);
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        sender.await.unwrap();
    }
}
