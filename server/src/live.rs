//! The in-process feed of job changes that `/ws` connections follow.
//!
//! Changes fan out per owner: a publish wakes only the sockets of the job's owner, and is
//! serialised once for all of them (never for nobody). Each socket has a small queue of
//! messages not yet sent; a change of a job already waiting there in the same status replaces
//! it, so a slow socket is sent the latest progress rather than a backlog, while every change
//! of status still reaches it in order. A socket whose queue still grows past a bound is told
//! it lagged and sends a fresh snapshot instead, so slowness never turns into lost state.
//!
//! The per-owner channel also remembers the latest revision seen of each of the owner's
//! jobs while anyone watches: a process that learns of changes by reading the store (see
//! `follow_store`) offers what it read, and only what is newer than what was seen is sent.

use app::jobs::{Job, JobStatus};
use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Messages one socket may have waiting (after coalescing) before it is sent a snapshot
/// instead: a user holds few active jobs, so only a socket stalled through many status
/// changes gets there.
const MAX_PENDING: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    /// Owners with at least one subscriber.
    users: Mutex<HashMap<String, Arc<UserChannel>>>,
    /// Store followers running now (see [`Hub::follower_started`]).
    followers: AtomicUsize,
}

struct UserChannel {
    state: Mutex<ChannelState>,
    /// Cancelled when the last subscriber leaves: the owner's follower, if any, stops.
    closed: CancellationToken,
}

#[derive(Default)]
struct ChannelState {
    slots: Vec<Arc<Slot>>,
    /// The latest revision seen of each of the owner's jobs, and whether it was active.
    seen: HashMap<String, Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    revision: u64,
    active: bool,
}

/// One socket's messages not yet sent.
#[derive(Default)]
struct Slot {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    messages: VecDeque<Change>,
    lagged: bool,
}

/// One published change, serialised once and shared by every socket that sends it.
#[derive(Clone)]
struct Change {
    id: Arc<str>,
    status: JobStatus,
    text: Utf8Bytes,
}

/// `ServerMessage::Job` without cloning the job into a box.
#[derive(Serialize)]
#[serde(tag = "type", rename = "job")]
struct JobMessage<'a> {
    job: &'a Job,
}

impl Slot {
    fn push(&self, change: &Change) {
        let mut p = lock(&self.pending);
        if p.lagged {
            return;
        }
        let last_of_job = p.messages.iter_mut().rev().find(|m| m.id == change.id);
        match last_of_job {
            Some(m) if m.status == change.status => m.text = change.text.clone(),
            _ => p.messages.push_back(change.clone()),
        }
        if p.messages.len() > MAX_PENDING {
            p.messages.clear();
            p.lagged = true;
        }
        drop(p);
        // Stores a permit when the socket is busy sending, so no change is left waiting.
        self.ready.notify_one();
    }
}

/// What a socket is to send next: a snapshot first if it lagged, then these messages.
pub struct Batch {
    pub lagged: bool,
    pub messages: Vec<Utf8Bytes>,
}

/// One socket's place in its owner's channel; leaving is dropping it.
pub struct Subscription {
    hub: Hub,
    owner: String,
    channel: Arc<UserChannel>,
    slot: Arc<Slot>,
    /// Whether this socket opened the owner's channel (nobody else of theirs was connected).
    pub first: bool,
}

impl Subscription {
    /// Waits until there is something to send.
    pub async fn ready(&self) {
        self.slot.ready.notified().await;
    }

    /// Takes what waits to be sent; after a lag, later changes queue again from here.
    pub fn take(&self) -> Batch {
        let mut p = lock(&self.slot.pending);
        let lagged = std::mem::take(&mut p.lagged);
        Batch {
            lagged,
            messages: p.messages.drain(..).map(|c| c.text).collect(),
        }
    }

    /// Records what a snapshot sent, so a follower does not send those revisions again.
    pub fn saw(&self, jobs: &[Job]) {
        let mut state = lock(&self.channel.state);
        for job in jobs {
            note(&mut state.seen, job);
        }
    }

    /// Cancelled when the owner's last socket closes.
    pub fn closed(&self) -> CancellationToken {
        self.channel.closed.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut users = lock(&self.hub.inner.users);
        let mut state = lock(&self.channel.state);
        state.slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
        if state.slots.is_empty() {
            self.channel.closed.cancel();
            if users
                .get(&self.owner)
                .is_some_and(|c| Arc::ptr_eq(c, &self.channel))
            {
                users.remove(&self.owner);
            }
        }
    }
}

/// Records `job`'s revision; whether it is newer than what was seen before.
fn note(seen: &mut HashMap<String, Seen>, job: &Job) -> bool {
    let now = Seen {
        revision: job.revision,
        active: job.status.is_active(),
    };
    match seen.get_mut(&job.id) {
        Some(s) if s.revision >= job.revision => false,
        Some(s) => {
            *s = now;
            true
        }
        None => {
            seen.insert(job.id.clone(), now);
            true
        }
    }
}

/// Counts a running follower for as long as it lives.
pub struct FollowerGuard(Hub);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.inner.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins `owner`'s channel; changes of their jobs are queued for this subscriber from now.
    pub fn subscribe(&self, owner: &str) -> Subscription {
        let slot = Arc::new(Slot::default());
        let mut users = lock(&self.inner.users);
        let mut first = false;
        let channel = users
            .entry(owner.to_string())
            .or_insert_with(|| {
                first = true;
                Arc::new(UserChannel {
                    state: Mutex::default(),
                    closed: CancellationToken::new(),
                })
            })
            .clone();
        lock(&channel.state).slots.push(slot.clone());
        drop(users);
        Subscription {
            hub: self.clone(),
            owner: owner.to_string(),
            channel,
            slot,
            first,
        }
    }

    fn channel(&self, owner: &str) -> Option<Arc<UserChannel>> {
        lock(&self.inner.users).get(owner).cloned()
    }

    /// A change written (or progress made) in this process: sent to the owner's sockets.
    pub fn publish(&self, job: &Job) {
        self.send(job, false);
    }

    /// A record read from the store: sent only if it is newer than what was seen, so a read
    /// that raced a newer write never steps a page back.
    pub fn offer(&self, job: &Job) {
        self.send(job, true);
    }

    fn send(&self, job: &Job, only_newer: bool) {
        let Some(channel) = self.channel(&job.owner) else {
            return; // nobody is watching
        };
        let text =
            serde_json::to_string(&JobMessage { job }).expect("server messages always serialise");
        let change = Change {
            id: job.id.as_str().into(),
            status: job.status,
            text: text.into(),
        };
        let mut state = lock(&channel.state);
        // Progress published in-process keeps the stored revision: it is sent all the same.
        if !note(&mut state.seen, job) && only_newer {
            return;
        }
        for slot in &state.slots {
            slot.push(&change);
        }
    }

    /// The owner's jobs last seen active, which a follower reads again.
    pub fn active_jobs(&self, owner: &str) -> Vec<String> {
        let Some(channel) = self.channel(owner) else {
            return vec![];
        };
        let state = lock(&channel.state);
        state
            .seen
            .iter()
            .filter(|(_, s)| s.active)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Those of `ids` this hub has not seen a state of for their owner: jobs created
    /// elsewhere, which a follower reads once.
    pub fn unseen(&self, owner: &str, ids: Vec<String>) -> Vec<String> {
        let Some(channel) = self.channel(owner) else {
            return vec![];
        };
        let state = lock(&channel.state);
        ids.into_iter()
            .filter(|id| !state.seen.contains_key(id))
            .collect()
    }

    /// Counts a follower until the guard is dropped.
    pub fn follower_started(&self) -> FollowerGuard {
        self.inner.followers.fetch_add(1, Ordering::Relaxed);
        FollowerGuard(self.clone())
    }

    /// Store followers running now: one per owner with connected sockets, on an instance
    /// that follows the store.
    pub fn followers(&self) -> usize {
        self.inner.followers.load(Ordering::Relaxed)
    }

    /// Owners with at least one subscriber.
    pub fn watched_owners(&self) -> usize {
        lock(&self.inner.users).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::jobs::ExportFormat;
    use app::live::ServerMessage;

    fn job(id: &str, owner: &str, status: JobStatus, revision: u64, rows: u64) -> Job {
        let mut job = Job::queued(id, owner, "orders", ExportFormat::Csv, vec!["id".into()]);
        job.status = status;
        job.revision = revision;
        job.progress.rows = rows;
        job
    }

    fn jobs_in(batch: &Batch) -> Vec<Job> {
        batch
            .messages
            .iter()
            .map(|t| match serde_json::from_str(t.as_str()).unwrap() {
                ServerMessage::Job { job } => *job,
                other => panic!("expected a job, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_job_message_reads_as_the_shared_server_message() {
        let j = job("j1", "alice", JobStatus::Running, 3, 10);
        let text = serde_json::to_string(&JobMessage { job: &j }).unwrap();
        let message: ServerMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(message, ServerMessage::Job { job: Box::new(j) });
    }

    #[test]
    fn progress_waiting_for_a_socket_is_replaced_but_status_changes_are_kept_in_order() {
        let hub = Hub::new();
        let sub = hub.subscribe("alice");
        hub.publish(&job("j1", "alice", JobStatus::Queued, 1, 0));
        for rows in 1..=100 {
            hub.publish(&job("j1", "alice", JobStatus::Running, 2, rows));
        }
        hub.publish(&job("j2", "alice", JobStatus::Queued, 1, 0));
        hub.publish(&job("j1", "alice", JobStatus::Succeeded, 3, 100));
        let got = jobs_in(&sub.take());
        let seen: Vec<_> = got
            .iter()
            .map(|j| (j.id.as_str(), j.status, j.progress.rows))
            .collect();
        assert_eq!(
            seen,
            [
                ("j1", JobStatus::Queued, 0),
                ("j1", JobStatus::Running, 100),
                ("j2", JobStatus::Queued, 0),
                ("j1", JobStatus::Succeeded, 100),
            ]
        );
        assert!(sub.take().messages.is_empty());
    }

    #[test]
    fn changes_reach_only_the_owners_sockets() {
        let hub = Hub::new();
        let alice = hub.subscribe("alice");
        let bob = hub.subscribe("bob");
        hub.publish(&job("j1", "alice", JobStatus::Queued, 1, 0));
        hub.publish(&job("j9", "carol", JobStatus::Queued, 1, 0));
        assert_eq!(alice.take().messages.len(), 1);
        assert!(bob.take().messages.is_empty());
    }

    #[test]
    fn a_socket_stalled_through_too_many_changes_is_told_to_send_a_snapshot() {
        let hub = Hub::new();
        let sub = hub.subscribe("alice");
        for i in 0..=MAX_PENDING {
            hub.publish(&job(&format!("j{i}"), "alice", JobStatus::Queued, 1, 0));
        }
        let batch = sub.take();
        assert!(batch.lagged);
        assert!(batch.messages.is_empty());
        hub.publish(&job("later", "alice", JobStatus::Queued, 1, 0));
        let batch = sub.take();
        assert!(!batch.lagged);
        assert_eq!(batch.messages.len(), 1);
    }

    #[test]
    fn records_read_from_the_store_are_sent_only_when_newer_than_seen() {
        let hub = Hub::new();
        let sub = hub.subscribe("alice");
        sub.saw(&[job("j1", "alice", JobStatus::Running, 5, 10)]);
        hub.offer(&job("j1", "alice", JobStatus::Running, 5, 10));
        hub.offer(&job("j1", "alice", JobStatus::Running, 4, 5));
        assert!(sub.take().messages.is_empty());
        assert_eq!(hub.active_jobs("alice"), ["j1"]);
        hub.offer(&job("j1", "alice", JobStatus::Succeeded, 6, 20));
        assert_eq!(jobs_in(&sub.take())[0].revision, 6);
        assert!(hub.active_jobs("alice").is_empty());
    }

    #[test]
    fn the_channel_closes_with_its_last_subscriber() {
        let hub = Hub::new();
        let a = hub.subscribe("alice");
        let b = hub.subscribe("alice");
        assert!(a.first && !b.first);
        let closed = a.closed();
        drop(a);
        assert!(!closed.is_cancelled());
        assert_eq!(hub.watched_owners(), 1);
        drop(b);
        assert!(closed.is_cancelled());
        assert_eq!(hub.watched_owners(), 0);
        assert!(hub.subscribe("alice").first);
    }
}
