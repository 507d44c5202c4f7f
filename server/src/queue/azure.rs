//! The queue in Azure Storage Queue: a main queue and `<name>-poison`. Visibility timeouts are
//! whole seconds in Azure: shorter durations are rounded up.

use super::{JobMessage, Queue, QueueError, Received};
use crate::azure::{explain, status_of, timed};
use async_trait::async_trait;
use azure_core::http::headers::HeaderName;
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::QueueClient;
use std::time::Duration;

pub struct AzureQueue {
    main: QueueClient,
    poison: QueueClient,
}

fn secs(d: Duration) -> i32 {
    d.as_secs_f64().ceil().min(7.0 * 24.0 * 3600.0) as i32
}

fn unavailable(what: &str, e: azure_core::Error) -> QueueError {
    QueueError::Unavailable(explain(what, &e))
}

/// A stale pop receipt or a vanished message: this holder no longer has it.
fn lost_or(what: &str, e: azure_core::Error) -> QueueError {
    match status_of(&e) {
        (Some(404), _) | (Some(400), Some(_)) => QueueError::Lost,
        _ => unavailable(what, e),
    }
}

async fn approximate_count(q: &QueueClient, what: &str) -> Result<usize, QueueError> {
    let props = timed(what, q.get_properties(None))
        .await
        .map_err(QueueError::Unavailable)?
        .map_err(|e| unavailable(what, e))?;
    let count = props
        .approximate_messages_count()
        .map_err(|e| unavailable(what, e))?;
    Ok(count.unwrap_or(0).max(0) as usize)
}

async fn receive_from(
    q: &QueueClient,
    max: usize,
    visibility: Duration,
) -> Result<Vec<Received>, QueueError> {
    let options = QueueClientReceiveMessagesOptions {
        number_of_messages: Some(max.clamp(1, 32) as i32),
        visibility_timeout: Some(secs(visibility).max(1)),
        ..Default::default()
    };
    let response = timed(
        "receiving queue messages",
        q.receive_messages(Some(options)),
    )
    .await
    .map_err(QueueError::Unavailable)?
    .map_err(|e| unavailable("receiving queue messages", e))?;
    let model = response
        .into_model()
        .map_err(|e| unavailable("reading queue messages", e))?;
    Ok(model
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            Some(Received {
                id: m.message_id?,
                receipt: m.pop_receipt?,
                body: m.message_text.unwrap_or_default(),
                dequeue_count: m.dequeue_count.unwrap_or(1).max(1) as u32,
            })
        })
        .collect())
}

async fn delete_from(q: &QueueClient, message: &Received) -> Result<(), QueueError> {
    timed(
        "deleting a queue message",
        q.delete_message(&message.id, &message.receipt, None),
    )
    .await
    .map_err(QueueError::Unavailable)?
    .map_err(|e| lost_or("deleting a queue message", e))?;
    Ok(())
}

impl AzureQueue {
    pub fn new(main: QueueClient, poison: QueueClient) -> Self {
        Self { main, poison }
    }

    /// Creates both queues if missing (an existing queue is not an error).
    pub async fn ensure(&self) -> Result<(), String> {
        for (q, what) in [
            (&self.main, "creating the job queue"),
            (&self.poison, "creating the poison queue"),
        ] {
            match timed(what, q.create(None)).await? {
                Ok(_) => {}
                Err(e) if status_of(&e).0 == Some(409) => {}
                Err(e) => return Err(explain(what, &e)),
            }
        }
        Ok(())
    }

    async fn send_to(
        &self,
        q: &QueueClient,
        body: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let message = QueueMessage {
            message_text: Some(body.to_string()),
        };
        let options = QueueClientSendMessageOptions {
            visibility_timeout: (!delay.is_zero()).then(|| secs(delay)),
            // Jobs never expire from the queue by age: only the worker ends them.
            message_time_to_live: Some(-1),
            ..Default::default()
        };
        let content = message
            .try_into()
            .map_err(|e| unavailable("encoding a queue message", e))?;
        timed(
            "sending a queue message",
            q.send_message(content, Some(options)),
        )
        .await
        .map_err(QueueError::Unavailable)?
        .map_err(|e| unavailable("sending a queue message", e))?;
        Ok(())
    }
}

#[async_trait]
impl Queue for AzureQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.send_to(&self.main, body, delay).await
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        receive_from(&self.main, max, visibility).await
    }

    async fn extend(
        &self,
        message: &Received,
        visibility: Duration,
    ) -> Result<Received, QueueError> {
        let response = timed(
            "extending a message's visibility",
            self.main
                .update_message(&message.id, &message.receipt, secs(visibility), None),
        )
        .await
        .map_err(QueueError::Unavailable)?
        .map_err(|e| lost_or("extending a message's visibility", e))?;
        let receipt = response
            .headers()
            .get_optional_string(&HeaderName::from_static("x-ms-popreceipt"))
            .ok_or_else(|| {
                QueueError::Unavailable("the queue returned no new pop receipt".into())
            })?;
        Ok(Received {
            receipt,
            ..message.clone()
        })
    }

    async fn delete(&self, message: &Received) -> Result<(), QueueError> {
        delete_from(&self.main, message).await
    }

    async fn dead_letter(&self, message: &Received) -> Result<(), QueueError> {
        // Copy first, then delete: a failure in between leaves a duplicate, never a loss.
        self.send_to(&self.poison, &message.body, Duration::ZERO)
            .await?;
        self.delete(message).await
    }

    async fn poison_len(&self) -> Result<usize, QueueError> {
        approximate_count(&self.poison, "reading the poison queue").await
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        approximate_count(&self.main, "reading the job queue").await
    }

    async fn remove_poisoned(&self, job: &str) -> Result<usize, QueueError> {
        // Azure cannot delete by content: receive the poison messages, delete this job's, and
        // keep the others hidden until the scan ends (so each is seen once), then show them again.
        const SCAN_VISIBILITY: Duration = Duration::from_secs(60);
        let mut held = Vec::new();
        let mut removed = 0;
        let mut scanned = 0;
        let result = async {
            while scanned < super::POISON_SCAN_LIMIT {
                let batch = receive_from(&self.poison, 32, SCAN_VISIBILITY).await?;
                if batch.is_empty() {
                    break;
                }
                scanned += batch.len();
                for m in batch {
                    if JobMessage::decode(&m.body).is_some_and(|msg| msg.job == job) {
                        delete_from(&self.poison, &m).await?;
                        removed += 1;
                    } else {
                        held.push(m);
                    }
                }
            }
            Ok::<_, QueueError>(())
        }
        .await;
        for m in &held {
            // Best effort: a message not shown again now is shown when its visibility ends.
            let _ = timed(
                "releasing a poison message",
                self.poison.update_message(&m.id, &m.receipt, 0, None),
            )
            .await;
        }
        result.map(|()| removed)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        timed("reading the job queue", self.main.get_properties(None))
            .await
            .map_err(QueueError::Unavailable)?
            .map_err(|e| unavailable("reading the job queue", e))?;
        Ok(())
    }
}
