//! Queue semantics, written once for every adapter: the embedded queue runs them here; the
//! Azure adapter runs the same functions.

use server::queue::{Queue, QueueError};
use std::sync::Arc;
use std::time::Duration;

async fn local_queue() -> (Arc<dyn Queue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pool = server::embedded::open(&dir.path().join("q.db"))
        .await
        .unwrap();
    (Arc::new(server::queue::local::LocalQueue::new(pool)), dir)
}

/// A received message is hidden for its visibility timeout, then comes back with a higher
/// dequeue count and a new receipt.
pub async fn visibility_hides_and_redelivers(q: Arc<dyn Queue>) {
    q.send("m1", Duration::ZERO).await.unwrap();
    let first = q.receive(32, Duration::from_millis(600)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].body, "m1");
    assert_eq!(first[0].dequeue_count, 1);
    assert!(
        q.receive(32, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty(),
        "hidden while held"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = q.receive(32, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1, "visible again after the timeout");
    assert_eq!(again[0].dequeue_count, 2);
    assert_ne!(again[0].receipt, first[0].receipt);
    assert!(
        matches!(q.delete(&first[0]).await, Err(QueueError::Lost)),
        "a stale receipt cannot delete"
    );
    q.delete(&again[0]).await.unwrap();
    assert!(q
        .receive(32, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}

/// Extending visibility keeps a message hidden past its first timeout and changes the receipt.
pub async fn heartbeat_extends_and_rotates_the_receipt(q: Arc<dyn Queue>) {
    q.send("m2", Duration::ZERO).await.unwrap();
    let held = q
        .receive(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    let extended = q.extend(&held, Duration::from_secs(5)).await.unwrap();
    assert_ne!(extended.receipt, held.receipt);
    assert!(
        matches!(
            q.extend(&held, Duration::from_secs(5)).await,
            Err(QueueError::Lost)
        ),
        "the old receipt is void"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        q.receive(32, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "still hidden after the first timeout"
    );
    q.delete(&extended).await.unwrap();
}

/// Extending to zero releases a message at once; a delayed send appears only after its delay.
pub async fn release_and_delayed_send(q: Arc<dyn Queue>) {
    q.send("m3", Duration::ZERO).await.unwrap();
    let held = q
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    q.extend(&held, Duration::ZERO).await.unwrap();
    let back = q.receive(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(back.len(), 1, "released at once");
    q.delete(&back[0]).await.unwrap();

    q.send("later", Duration::from_millis(800)).await.unwrap();
    assert!(
        q.receive(1, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "not before its delay"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let late = q.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(late.len(), 1);
    q.delete(&late[0]).await.unwrap();
}

/// A dead-lettered message leaves the queue for the poison queue.
pub async fn dead_letter_moves_to_poison(q: Arc<dyn Queue>) {
    let before = q.poison_len().await.unwrap();
    q.send("bad", Duration::ZERO).await.unwrap();
    let held = q
        .receive(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    q.dead_letter(&held).await.unwrap();
    assert_eq!(q.poison_len().await.unwrap(), before + 1);
    assert!(q.receive(32, Duration::ZERO).await.unwrap().is_empty());
}

/// Concurrent receivers never get the same message.
pub async fn competing_receivers_split_the_messages(q: Arc<dyn Queue>) {
    for i in 0..40 {
        q.send(&format!("c{i}"), Duration::ZERO).await.unwrap();
    }
    let receivers = (0..4).map(|_| {
        let q = q.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.receive(3, Duration::from_secs(30)).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                for m in batch {
                    q.delete(&m).await.unwrap();
                    got.push(m.body);
                }
            }
        })
    });
    let mut all: Vec<String> = Vec::new();
    for r in receivers {
        all.extend(r.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "each message exactly once");
}

#[tokio::test]
async fn local_queue_visibility_hides_and_redelivers() {
    let (q, _dir) = local_queue().await;
    visibility_hides_and_redelivers(q).await;
}

#[tokio::test]
async fn local_queue_heartbeat_extends_and_rotates_the_receipt() {
    let (q, _dir) = local_queue().await;
    heartbeat_extends_and_rotates_the_receipt(q).await;
}

#[tokio::test]
async fn local_queue_release_and_delayed_send() {
    let (q, _dir) = local_queue().await;
    release_and_delayed_send(q).await;
}

#[tokio::test]
async fn local_queue_dead_letter_moves_to_poison() {
    let (q, _dir) = local_queue().await;
    dead_letter_moves_to_poison(q).await;
}

#[tokio::test]
async fn local_queue_competing_receivers_split_the_messages() {
    let (q, _dir) = local_queue().await;
    competing_receivers_split_the_messages(q).await;
}
