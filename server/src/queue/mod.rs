//! The job queue, with Azure Storage Queue's semantics so that one worker works with every
//! adapter: a received message is hidden for a visibility timeout (not removed), carries its
//! dequeue count and a pop receipt, can have its visibility extended (a heartbeat, which
//! changes the receipt), and is deleted only after the job's final state is stored. A message
//! that keeps coming back is moved to the poison queue.

pub mod azure;
pub mod local;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The body of every queue message: only a reference to the job record, and the job's
/// ticket when it was sent, so that a message left over from before a retry (the job has a
/// new ticket since) is recognised and dropped. Messages without a ticket (sent by older
/// versions) match jobs without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub v: u32,
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

impl JobMessage {
    pub fn new(job: &str) -> Self {
        Self {
            v: 1,
            job: job.to_string(),
            ticket: None,
        }
    }

    /// The message that may start `job` as it is now.
    pub fn for_job(job: &app::jobs::Job) -> Self {
        Self {
            ticket: job.ticket.clone(),
            ..Self::new(&job.id)
        }
    }

    /// Whether this message may start `job`: it was sent for the job's current ticket.
    pub fn matches(&self, job: &app::jobs::Job) -> bool {
        self.ticket == job.ticket
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("messages serialise")
    }

    pub fn decode(body: &str) -> Option<Self> {
        serde_json::from_str::<Self>(body).ok().filter(|m| m.v == 1)
    }
}

/// The most poison messages one redrive looks through.
pub const POISON_SCAN_LIMIT: usize = 1024;

/// A message taken from the queue, hidden from others until its visibility ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    /// Proves this holder received it last; changes on every receive and extend.
    pub receipt: String,
    pub body: String,
    /// How many times it has been received, this time included.
    pub dequeue_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message was received again by someone else (or deleted): this holder lost it.
    #[error("the message is no longer held by this receiver")]
    Lost,
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a message, visible after `delay`.
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError>;
    /// Takes up to `max` visible messages, hiding each for `visibility`.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError>;
    /// Hides a held message for `visibility` from now; returns it with its new receipt.
    async fn extend(
        &self,
        message: &Received,
        visibility: Duration,
    ) -> Result<Received, QueueError>;
    async fn delete(&self, message: &Received) -> Result<(), QueueError>;
    /// Moves a held message to the poison queue.
    async fn dead_letter(&self, message: &Received) -> Result<(), QueueError>;
    /// Messages in the poison queue (for operators and tests).
    async fn poison_len(&self) -> Result<usize, QueueError>;
    /// Messages in the main queue, visible or not (approximate on Azure).
    async fn depth(&self) -> Result<usize, QueueError>;
    /// Removes the poison messages of the job `job` (a redrive); returns how many went. At most
    /// [`POISON_SCAN_LIMIT`] poison messages are looked at: one left behind is harmless, since a
    /// redrive gives the job a new ticket that no old message carries.
    async fn remove_poisoned(&self, job: &str) -> Result<usize, QueueError>;
    async fn ping(&self) -> Result<(), QueueError>;
}
