//! The write queue both stores share, for group commit: each request queues its batch and waits;
//! the writer takes every batch waiting, commits them in one transaction (one fsync, or one round
//! trip to PostgreSQL, for all of them), and answers each with its own counts.
//!
//! The channel is unbounded, but what reaches it is not: every batch comes from a request that
//! passed the credential layer, its quota and the server's concurrency limit, and within the body
//! limit. A request that times out or whose client leaves still leaves its batch, which the next
//! group takes, so the queue holds at most the limit's worth plus what was abandoned during one
//! commit.

use onerec_core::api::{EventsStored, UserEvent};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// One request's batch, and where its answer goes.
pub(super) struct WriteJob {
    pub events: Vec<UserEvent>,
    reply: oneshot::Sender<Result<EventsStored, StoreError>>,
}

/// The requests' end of the queue; cheap to clone. Dropping every clone lets the writer finish
/// what is queued and stop.
#[derive(Clone)]
pub(super) struct Jobs(mpsc::UnboundedSender<WriteJob>);

/// The writer's end of the queue.
pub(super) struct Queue(mpsc::UnboundedReceiver<WriteJob>);

pub(super) fn queue() -> (Jobs, Queue) {
    let (jobs, queue) = mpsc::unbounded_channel();
    (Jobs(jobs), Queue(queue))
}

impl Jobs {
    /// Queues `events` and waits for the writer's answer.
    pub async fn append(&self, events: Vec<UserEvent>) -> Result<EventsStored, StoreError> {
        let stopped = || StoreError::Failed("the event writer has stopped".into());
        let (reply, done) = oneshot::channel();
        self.0.send(WriteJob { events, reply }).map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

impl Queue {
    /// Waits for a batch, then takes every other one waiting with it; `None` once every [`Jobs`]
    /// is dropped and nothing is left.
    pub async fn next_group(&mut self) -> Option<Vec<WriteJob>> {
        let first = self.0.recv().await?;
        Some(self.with_waiting(first))
    }

    /// [`Queue::next_group`] on a thread of its own (the redb writer's), outside the runtime.
    pub fn blocking_next_group(&mut self) -> Option<Vec<WriteJob>> {
        let first = self.0.blocking_recv()?;
        Some(self.with_waiting(first))
    }

    fn with_waiting(&mut self, first: WriteJob) -> Vec<WriteJob> {
        let mut group = vec![first];
        while let Ok(job) = self.0.try_recv() {
            group.push(job);
        }
        group
    }
}

/// Answers each job of a group: with its own counts (`written` has one per job, in order), or
/// every one with the error.
pub(super) fn answer(group: Vec<WriteJob>, written: Result<Vec<EventsStored>, StoreError>) {
    match written {
        Ok(counts) => {
            for (job, count) in group.into_iter().zip(counts) {
                let _ = job.reply.send(Ok(count));
            }
        }
        Err(e) => {
            for job in group {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use onerec_core::api::{EventKind, StoredEvent};

    use super::*;

    fn events(n: usize) -> Vec<UserEvent> {
        let event = |i: usize| StoredEvent {
            event_id: format!("e{i}"),
            item: "1".into(),
            kind: EventKind::Click,
            value: None,
            timestamp: 1_700_000_000,
            request_id: None,
        };
        (0..n).map(|i| UserEvent { user: "u".into(), event: event(i) }).collect()
    }

    #[tokio::test]
    async fn the_writer_takes_every_waiting_batch_and_answers_each_its_own() {
        let (jobs, mut queue) = queue();
        let send = |n: usize| {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.append(events(n)).await })
        };
        let (one, two) = (send(1), send(2));
        // On the test's single-threaded runtime, both requests queue before this task runs again.
        tokio::task::yield_now().await;
        let group = queue.next_group().await.expect("two batches are waiting");
        assert_eq!(group.iter().map(|job| job.events.len()).collect::<Vec<_>>(), [1, 2]);
        let counts = group.iter().map(|job| EventsStored { stored: job.events.len(), duplicates: 0 }).collect();
        answer(group, Ok(counts));
        assert_eq!(one.await.unwrap().unwrap().stored, 1);
        assert_eq!(two.await.unwrap().unwrap().stored, 2);

        let (three, four) = (send(3), send(4));
        tokio::task::yield_now().await;
        let group = queue.next_group().await.expect("two batches are waiting");
        answer(group, Err(StoreError::Unavailable("down".into())));
        for refused in [three.await.unwrap(), four.await.unwrap()] {
            assert!(matches!(refused, Err(StoreError::Unavailable(why)) if why == "down"));
        }

        drop(jobs);
        assert!(queue.next_group().await.is_none(), "with every handle gone the writer stops");
    }
}
