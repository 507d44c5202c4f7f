//! Load generator for `/ws` (run by `bench/ws.sh`, in its own process): opens many live
//! connections spread over users (header authentication), then submits exports for those
//! users and measures, from outside, what the server spends on them.
//!
//!   ws_load ADDR SERVER_PID CONNECTIONS USERS JOBS [hold SECONDS]
//!
//! The exports are submitted at `RATE` a second (environment, default 5), so that delivery
//! times are those of a server at work, not of a queue that a flood of submits builds up.
//!
//! With `hold`, it only keeps the connections open that long (for counting what idle pages
//! cost the store).
//!
//! Prints one `key value` line per figure: the server's RSS before and after the sockets
//! opened (idle), its CPU time per 1,000 published changes, and how long each change of a
//! job's status took from the store write to each socket of its owner (the job's own
//! `created_at`, `started_at` and `finished_at` are set right before the writes that make it
//! queued, running and final; one clock, one machine).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field present")
}

/// User + system CPU seconds of the process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server alive");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on Linux.
    ticks as f64 / 100.0
}

#[derive(Default)]
struct Stats {
    /// Milliseconds from the store write to arrival, per change of status per socket.
    latencies: Mutex<Vec<f64>>,
    /// Job messages received, over all sockets.
    messages: AtomicU64,
    /// Final states received, over all sockets.
    finals: AtomicU64,
    /// Connections that were refused or closed before their snapshot.
    refused: AtomicU64,
    /// Messages seen by the first socket of each user (every change, when it keeps up).
    published: AtomicU64,
}

/// What is read of a message: only what the figures need.
#[derive(serde::Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    job: Option<JobFacts>,
    jobs: Option<Vec<JobFacts>>,
}

#[derive(serde::Deserialize)]
struct JobFacts {
    id: String,
    status: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl JobFacts {
    /// When the write that gave the job its status was made.
    fn written_at(&self) -> Option<DateTime<Utc>> {
        match self.status.as_str() {
            "queued" => Some(self.created_at),
            "running" => self.started_at,
            "succeeded" | "failed" | "cancelled" => self.finished_at,
            _ => None,
        }
    }
}

async fn socket(
    addr: String,
    user: String,
    counts: bool,
    stats: Arc<Stats>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", user.parse().unwrap());
    let connected = tokio_tungstenite::connect_async(request).await;
    let Ok((mut ws, _)) = connected else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    // A server that cannot read the jobs closes the socket instead of sending a snapshot.
    let Some(Ok(Message::Text(_snapshot))) = ws.next().await else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    Some(tokio::spawn(async move {
        let mut last: HashMap<String, String> = HashMap::new();
        let mut local = Vec::new();
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let arrived = Utc::now();
            let m: Incoming = serde_json::from_str(&text).unwrap();
            let jobs = match m.kind.as_str() {
                "job" => m.job.into_iter().collect(),
                "snapshot" => m.jobs.unwrap_or_default(),
                _ => continue,
            };
            for job in jobs {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                if counts {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                if last.get(&job.id) == Some(&job.status) {
                    continue;
                }
                if let Some(at) = job.written_at() {
                    local.push((arrived - at).num_microseconds().unwrap() as f64 / 1000.0);
                }
                if matches!(job.status.as_str(), "succeeded" | "failed" | "cancelled") {
                    stats.finals.fetch_add(1, Ordering::Relaxed);
                }
                last.insert(job.id, job.status);
            }
            // Handed over as it goes, so the figures are complete when the run ends.
            if !local.is_empty() {
                stats.latencies.lock().unwrap().append(&mut local);
            }
        }
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, pid, connections, users, jobs, hold) = match &args[..] {
        [a, p, c, u, j] => (a, p, c, u, j, None),
        [a, p, c, u, j, h, s] if h == "hold" => (a, p, c, u, j, Some(s.parse::<u64>().unwrap())),
        _ => {
            eprintln!("usage: ws_load ADDR SERVER_PID CONNECTIONS USERS JOBS [hold SECONDS]");
            std::process::exit(2);
        }
    };
    let pid: u32 = pid.parse().unwrap();
    let connections: usize = connections.parse().unwrap();
    let users: usize = users.parse().unwrap();
    let jobs: usize = jobs.parse().unwrap();
    let stats = Arc::new(Stats::default());

    let rss_before = proc_status(pid, "VmRSS:");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = Vec::new();
    for i in 0..connections {
        let (addr, stats, gate) = (addr.clone(), stats.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            socket(addr, format!("load-{}", i % users), i < users, stats).await
        }));
    }
    for o in opening {
        tasks.push(o.await.unwrap());
    }
    println!("connect_seconds {:.1}", started.elapsed().as_secs_f64());
    println!(
        "connections_without_snapshot {}",
        stats.refused.load(Ordering::Relaxed)
    );
    if let Some(seconds) = hold {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return;
    }
    // Let the server settle (allocator, timers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = proc_status(pid, "VmRSS:");
    println!("rss_before_kb {rss_before}");
    println!("rss_after_kb {rss_after}");
    println!(
        "rss_per_connection_kb {:.1}",
        (rss_after as f64 - rss_before as f64) / connections.max(1) as f64
    );

    let cpu_before = cpu_seconds(pid);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let submitted = Instant::now();
    let rate: f64 = std::env::var("RATE").map_or(5.0, |r| r.parse().unwrap());
    let start = tokio::time::Instant::now();
    let submits = futures::stream::iter(0..jobs)
        .then(|j| async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(j as f64 / rate)).await;
            j
        })
        .map(|j| {
            let http = http.clone();
            let url = format!("{base}/api/v1/exports");
            async move {
                let res = http
                    .post(url)
                    .header("x-forwarded-user", format!("load-{}", j % users))
                    .json(&serde_json::json!({"dataset": "orders", "format": "csv"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
            }
        })
        .buffer_unordered(64);
    futures::pin_mut!(submits);
    while submits.next().await.is_some() {}
    // Every socket of a user gets each of that user's jobs' final state.
    let expected = (0..connections)
        .map(|i| (0..jobs).filter(|j| j % users == i % users).count() as u64)
        .sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.finals.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let published = stats.published.load(Ordering::Relaxed);
    println!("run_seconds {:.1}", submitted.elapsed().as_secs_f64());
    println!(
        "finals_received {} of {expected}",
        stats.finals.load(Ordering::Relaxed)
    );
    println!("changes_published {published}");
    println!(
        "messages_received {}",
        stats.messages.load(Ordering::Relaxed)
    );
    println!("server_cpu_seconds {cpu:.2}");
    println!(
        "server_cpu_seconds_per_1000_changes {:.3}",
        cpu / published.max(1) as f64 * 1000.0
    );
    let mut l = std::mem::take(&mut *stats.latencies.lock().unwrap());
    l.sort_by(f64::total_cmp);
    println!("latency_samples {}", l.len());
    println!("latency_p50_ms {:.1}", percentile(&l, 0.50));
    println!("latency_p99_ms {:.1}", percentile(&l, 0.99));
    println!("latency_max_ms {:.1}", percentile(&l, 1.0));
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
}
