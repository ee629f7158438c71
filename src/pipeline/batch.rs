//! Collecting items into batches: whatever is already queued, up to a size, optionally waiting
//! a short linger for more. Under load batches fill by themselves; when idle nothing waits.

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
/// `flush`, running at most `concurrency` flushes at once. While all flush slots are busy, items
/// queue up, so batches grow with load. The task ends when every sender is dropped or
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
            let batch = collect(&mut rx, first, max.max(1), linger).await;
            let fut = flush(batch);
            flushes.spawn(async move {
                fut.await;
                drop(slot);
            });
            while flushes.try_join_next().is_some() {}
        }
        while flushes.join_next().await.is_some() {}
    });
    (tx, Batcher { close, handle })
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
