//! The in-process feed of job changes that `/ws` connections follow.
//!
//! Every stored change and every progress tick is published here; each connection filters
//! for its owner. A connection that falls behind (the channel lags) is sent a fresh snapshot
//! instead of the missed messages, so slowness never turns into lost state.

use app::jobs::Job;
use tokio::sync::broadcast;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Job>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub fn publish(&self, job: &Job) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(job.clone());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Job> {
        self.tx.subscribe()
    }
}
