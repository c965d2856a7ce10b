//! Group commit: callers hand in one item each and wait; a writer task takes the first item waiting and every other
//! one already waiting (up to a maximum), writes them together (one transaction, one disk sync) and answers each
//! caller with its own result. Used for status changes here and for single sends in the API.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::EngineError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Reply<R> = oneshot::Sender<Result<R, EngineError>>;

/// The callers' side of a group writer.
#[derive(Debug)]
pub struct Group<T, R> {
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Group<T, R> {
    fn clone(&self) -> Self {
        Group { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> Group<T, R> {
    /// Starts the writer on the current tokio runtime. `write` gets a group and returns one result per item, in
    /// order, or one error for all. The writer ends when every `Group` clone is dropped, or after `stop` once
    /// nothing is left waiting.
    pub fn spawn<F, Fut>(max: usize, stop: CancellationToken, write: F) -> (Group<T, R>, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, EngineError>> + Send,
    {
        Self::spawn_parallel(max, 1, stop, write)
    }

    /// As [`Group::spawn`], with up to `parallel` groups written at once: while one waits for its commit, the next
    /// takes what has arrived. For databases that commit concurrent transactions in parallel (PostgreSQL).
    pub fn spawn_parallel<F, Fut>(
        max: usize,
        parallel: usize,
        stop: CancellationToken,
        write: F,
    ) -> (Group<T, R>, JoinHandle<()>)
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, EngineError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(max.max(1) * 4);
        let write = std::sync::Arc::new(write);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let task = tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            let stopped = stop.cancelled();
            tokio::pin!(stopped);
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let first = tokio::select! {
                    biased;
                    item = rx.recv() => match item { Some(i) => i, None => break },
                    _ = &mut stopped => match rx.try_recv() { Ok(i) => i, Err(_) => break },
                };
                // Sized once for what waits, not grown item by item.
                let room = max.min(rx.len() + 1);
                let (mut items, mut replies) = (Vec::with_capacity(room), Vec::with_capacity(room));
                items.push(first.0);
                replies.push(first.1);
                while items.len() < max {
                    match rx.try_recv() {
                        Ok((item, reply)) => {
                            items.push(item);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let write = write.clone();
                running.spawn(async move {
                    match write(items).await {
                        Ok(results) => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(slot);
                });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
        (Group { tx }, task)
    }

    /// Hands in one item and waits for its result.
    pub async fn submit(&self, item: T) -> Result<R, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| EngineError::NotRunning)?;
        answer.await.map_err(|_| EngineError::NotRunning)?
    }
}

#[cfg(test)]
mod tests {
    use smsgate_store::StoreError;

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_share_writes_and_get_their_own_results() {
        let writes = Arc::new(AtomicUsize::new(0));
        let counter = writes.clone();
        let (group, _task) = Group::spawn(100, CancellationToken::new(), move |items: Vec<u32>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500u32 {
            let g = group.clone();
            tasks.spawn(async move { (i, g.submit(i).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, r) = done.unwrap();
            assert_eq!(r.ok(), Some(i * 2));
        }
        assert!(writes.load(Ordering::SeqCst) < 500, "items were grouped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_groups_overlap_and_answer_each_item() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let (group, _task) = Group::spawn_parallel(10, 3, CancellationToken::new(), move |items: Vec<u32>| {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(items.into_iter().map(|i| i + 1).collect())
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let g = group.clone();
            tasks.spawn(async move { (i, g.submit(i).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, r) = done.unwrap();
            assert_eq!(r.ok(), Some(i + 1));
        }
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} groups were written at once");
    }

    #[tokio::test]
    async fn a_failed_write_fails_its_group_and_stop_drains() {
        let stop = CancellationToken::new();
        let (group, task) = Group::spawn(10, stop.clone(), |_items: Vec<u32>| async {
            Err::<Vec<u32>, _>(StoreError::Commit("disk full".into()).into())
        });
        let failed = group.submit(1).await.map_err(|e| e.to_string());
        assert_eq!(failed, Err("store: commit failed: disk full".to_string()));
        stop.cancel();
        task.await.unwrap();
        assert!(matches!(group.submit(2).await, Err(EngineError::NotRunning)));
    }
}
