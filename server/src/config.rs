//! Settings: loaded and validated once at start-up into one typed [`Settings`].
//!
//! Every setting can come from a command-line flag, an environment variable or a TOML config
//! file (`--config` / `EXPORTAL_CONFIG`), in that order of precedence, and falls back to a
//! documented default. All settings are described in one table, [`SETTINGS`], which `--help`
//! prints, so the help text cannot fall behind the code. An invalid value stops the start with
//! a message that names where the value came from (flag, variable or file key) and what would
//! be accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One documented setting.
pub struct SettingSpec {
    /// The key in the config file; the flag is `--` + key with `_` → `-`.
    pub key: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting the server understands.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        key: "addr",
        env: "EXPORTAL_ADDR",
        default: "127.0.0.1:3000 (or LEPTOS_SITE_ADDR when set)",
        help: "Address and port to listen on. Port 0 picks a free port.",
    },
    SettingSpec {
        key: "data_dir",
        env: "EXPORTAL_DATA_DIR",
        default: "./data",
        help: "Directory for the embedded job store, queue and exported files. Created if missing.",
    },
    SettingSpec {
        key: "role",
        env: "EXPORTAL_ROLE",
        default: "all",
        help: "all: web and worker in one process; web: page, API and /ws only; worker: runs jobs only.",
    },
    SettingSpec {
        key: "log_format",
        env: "EXPORTAL_LOG_FORMAT",
        default: "plain",
        help: "plain (human-readable) or json (one object per line, for log collectors). \
               The level filter is RUST_LOG, e.g. RUST_LOG=info,server=debug.",
    },
    SettingSpec {
        key: "shutdown_grace",
        env: "EXPORTAL_SHUTDOWN_GRACE",
        default: "30s",
        help: "On Ctrl-C or SIGTERM, how long open requests and running exports may take to finish; \
               exports still running after it go back to the queue. Durations: 90s, 5m, 2h, 7d or seconds.",
    },
    SettingSpec {
        key: "datasets",
        env: "EXPORTAL_DATASETS",
        default: "(a demo database created in the data directory)",
        help: "TOML file declaring the sources and datasets users may export (see README).",
    },
    SettingSpec {
        key: "demo_orders",
        env: "EXPORTAL_DEMO_ORDERS",
        default: "1000000",
        help: "Orders in the demo database, when no datasets file is given (read on its first creation).",
    },
    SettingSpec {
        key: "auth",
        env: "EXPORTAL_AUTH",
        default: "cookie",
        help: "cookie: an anonymous identity per browser in a signed HttpOnly cookie; \
               header: trust the user name in EXPORTAL_AUTH_HEADER (behind an authenticating proxy).",
    },
    SettingSpec {
        key: "auth_header",
        env: "EXPORTAL_AUTH_HEADER",
        default: "x-forwarded-user",
        help: "The request header that carries the user name when EXPORTAL_AUTH=header.",
    },
    SettingSpec {
        key: "cookie_secret",
        env: "EXPORTAL_COOKIE_SECRET",
        default: "(generated once and kept in the data directory)",
        help: "Key that signs identity cookies (at least 32 characters). Give every web instance the same one.",
    },
    SettingSpec {
        key: "worker_concurrency",
        env: "EXPORTAL_WORKER_CONCURRENCY",
        default: "2",
        help: "Exports one worker process runs at the same time.",
    },
    SettingSpec {
        key: "max_attempts",
        env: "EXPORTAL_MAX_ATTEMPTS",
        default: "5",
        help: "Attempts per export before it fails; a message delivered more often goes to the poison queue.",
    },
    SettingSpec {
        key: "visibility_timeout",
        env: "EXPORTAL_VISIBILITY_TIMEOUT",
        default: "30s",
        help: "How long a received job stays hidden from other workers; a running job renews it every third of it. \
               A crashed worker's job is picked up again after it.",
    },
    SettingSpec {
        key: "retry_base",
        env: "EXPORTAL_RETRY_BASE",
        default: "2s",
        help: "First back-off after a transient failure; doubles per attempt (with jitter), up to 60s.",
    },
    SettingSpec {
        key: "poll_max",
        env: "EXPORTAL_POLL_MAX",
        default: "2s",
        help: "Longest pause between queue polls when idle (polling backs off from 100ms).",
    },
    SettingSpec {
        key: "max_active_jobs",
        env: "EXPORTAL_MAX_ACTIVE_JOBS",
        default: "3",
        help: "Exports one user may have queued or running at once; more are refused with 429.",
    },
    SettingSpec {
        key: "row_cap",
        env: "EXPORTAL_ROW_CAP",
        default: "10000000",
        help: "Most rows in one export: refused before queueing when the count is known, else the export stops there and fails.",
    },
    SettingSpec {
        key: "retention",
        env: "EXPORTAL_RETENTION",
        default: "7d",
        help: "How long finished files and records are kept before they expire.",
    },
    SettingSpec {
        key: "record_grace",
        env: "EXPORTAL_RECORD_GRACE",
        default: "30d",
        help: "How long the record of an expired export is kept (shown as expired) before it is deleted; then the export is unknown (404).",
    },
    SettingSpec {
        key: "download_ttl",
        env: "EXPORTAL_DOWNLOAD_TTL",
        default: "5m",
        help: "Validity of a download link minted for one click (Azure storage).",
    },
    SettingSpec {
        key: "storage",
        env: "EXPORTAL_STORAGE",
        default: "local",
        help: "local: embedded SQLite queue and job store, files in the data directory (one machine); \
               azure: Azure Storage Queue + Blob (any number of web and worker instances).",
    },
    SettingSpec {
        key: "azure_connection_string",
        env: "AZURE_STORAGE_CONNECTION_STRING",
        default: "(none)",
        help: "Azure: AccountName + AccountKey (or SharedAccessSignature) and endpoints, or UseDevelopmentStorage=true \
               for Azurite. Without it, EXPORTAL_AZURE_BLOB_URL / _QUEUE_URL with an Entra ID credential are used.",
    },
    SettingSpec {
        key: "azure_blob_url",
        env: "EXPORTAL_AZURE_BLOB_URL",
        default: "(none)",
        help: "Azure without a key: the blob endpoint, e.g. https://acct.blob.core.windows.net (Entra ID: managed identity, \
               workload identity or developer tools).",
    },
    SettingSpec {
        key: "azure_queue_url",
        env: "EXPORTAL_AZURE_QUEUE_URL",
        default: "(none)",
        help: "Azure without a key: the queue endpoint, e.g. https://acct.queue.core.windows.net.",
    },
    SettingSpec {
        key: "azure_queue",
        env: "EXPORTAL_AZURE_QUEUE",
        default: "exportal-jobs",
        help: "Azure: the job queue; the poison queue is <name>-poison. Created if missing.",
    },
    SettingSpec {
        key: "azure_files_container",
        env: "EXPORTAL_AZURE_FILES_CONTAINER",
        default: "exportal-files",
        help: "Azure: the container for exported files. Created if missing.",
    },
    SettingSpec {
        key: "azure_jobs_container",
        env: "EXPORTAL_AZURE_JOBS_CONTAINER",
        default: "exportal-jobs",
        help: "Azure: the container for job records. Created if missing.",
    },
    SettingSpec {
        key: "public_url",
        env: "EXPORTAL_PUBLIC_URL",
        default: "(none)",
        help: "The address users open, e.g. https://exports.example.com. With https, identity cookies are \
               `__Host-` prefixed and Secure; its origin is also allowed to open /ws.",
    },
    SettingSpec {
        key: "proxy_secret",
        env: "EXPORTAL_PROXY_SECRET",
        default: "(none)",
        help: "When set, every request must carry it in the x-exportal-proxy-secret header (at least 16 characters; \
               compared in constant time): only the proxy that adds it can name a user.",
    },
    SettingSpec {
        key: "trusted_proxies",
        env: "EXPORTAL_TRUSTED_PROXIES",
        default: "(none: any peer)",
        help: "Comma-separated IP addresses or CIDR ranges, e.g. 10.0.0.0/8,::1. When set, requests from other \
               peers are refused with 401 in header mode, and X-Forwarded-Proto is believed only from these.",
    },
    SettingSpec {
        key: "ws_origins",
        env: "EXPORTAL_WS_ORIGINS",
        default: "(the request's own Host, and EXPORTAL_PUBLIC_URL)",
        help: "Comma-separated origins (scheme://host[:port]) whose pages may open /ws; others get 403. \
               A request without Origin (not a browser) is allowed.",
    },
    SettingSpec {
        key: "ws_per_user",
        env: "EXPORTAL_WS_PER_USER",
        default: "16",
        help: "Live connections (/ws) one user may hold open at once; more are refused with 429.",
    },
    SettingSpec {
        key: "ws_send_timeout",
        env: "EXPORTAL_WS_SEND_TIMEOUT",
        default: "10s",
        help: "A /ws client that does not take a message within this time is disconnected (its page reconnects \
               and gets a fresh snapshot), so a slow reader never makes the server buffer for it.",
    },
    SettingSpec {
        key: "max_body",
        env: "EXPORTAL_MAX_BODY",
        default: "65536",
        help: "Largest request body in bytes (preview, submit, server functions); larger ones get 413. \
               Cancel and retry take no body and accept at most 1024 bytes.",
    },
    SettingSpec {
        key: "rate_per_minute",
        env: "EXPORTAL_RATE_PER_MINUTE",
        default: "60",
        help: "Previews and submits one identity may make per minute on average (a token bucket); more get 429 \
               with Retry-After.",
    },
    SettingSpec {
        key: "rate_burst",
        env: "EXPORTAL_RATE_BURST",
        default: "20",
        help: "Previews and submits one identity may make in a quick burst before EXPORTAL_RATE_PER_MINUTE applies.",
    },
    SettingSpec {
        key: "rate_identities",
        env: "EXPORTAL_RATE_IDENTITIES",
        default: "10000",
        help: "Identities the rate limiter tracks at once (bounded memory); beyond it, new identities share one bucket.",
    },
    SettingSpec {
        key: "admins",
        env: "EXPORTAL_ADMINS",
        default: "(none)",
        help: "Comma-separated identities that may use the admin page (/admin) and the admin API. For everyone \
               else the admin routes do not exist (404).",
    },
    SettingSpec {
        key: "admin_group_header",
        env: "EXPORTAL_ADMIN_GROUP_HEADER",
        default: "(none)",
        help: "Header mode only: a header in which the proxy lists the user's groups (comma-separated); a user \
               in the group EXPORTAL_ADMIN_GROUP is an admin too.",
    },
    SettingSpec {
        key: "admin_group",
        env: "EXPORTAL_ADMIN_GROUP",
        default: "(none)",
        help: "The group, in EXPORTAL_ADMIN_GROUP_HEADER, whose members are admins.",
    },
    SettingSpec {
        key: "audit_retention",
        env: "EXPORTAL_AUDIT_RETENTION",
        default: "365d",
        help: "How long audit entries (submit, cancel, retry, download, admin actions) are kept.",
    },
    SettingSpec {
        key: "instance",
        env: "EXPORTAL_INSTANCE",
        default: "(host name and process id)",
        help: "This process's name on the jobs it runs, shown to admins next to each running job.",
    },
    SettingSpec {
        key: "csv_line_ending",
        env: "EXPORTAL_CSV_LINE_ENDING",
        default: "crlf",
        help: "crlf (RFC 4180) or lf.",
    },
    SettingSpec {
        key: "webhook_url",
        env: "EXPORTAL_WEBHOOK_URL",
        default: "(none)",
        help: "http(s) URL that gets a signed POST when an export succeeds, fails or is cancelled (see README, \
               Webhooks). A dataset's own `webhook` key takes its place for that dataset's exports.",
    },
    SettingSpec {
        key: "webhook_secret",
        env: "EXPORTAL_WEBHOOK_SECRET",
        default: "(none)",
        help: "The HMAC-SHA256 key of the Exportal-Signature header (at least 16 characters). Required when any \
               webhook is configured; never logged.",
    },
    SettingSpec {
        key: "webhook_hosts",
        env: "EXPORTAL_WEBHOOK_HOSTS",
        default: "(none: any host)",
        help: "Comma-separated host names webhooks may be sent to; when set, a webhook URL (here or in the \
               datasets file) naming another host stops the start.",
    },
    SettingSpec {
        key: "webhook_timeout",
        env: "EXPORTAL_WEBHOOK_TIMEOUT",
        default: "10s",
        help: "How long one webhook delivery may take (connect, send, answer); longer counts as a failure.",
    },
    SettingSpec {
        key: "webhook_retry_base",
        env: "EXPORTAL_WEBHOOK_RETRY_BASE",
        default: "1s",
        help: "First pause after a failed webhook delivery; doubles per attempt (with jitter), up to 10m.",
    },
    SettingSpec {
        key: "webhook_max_attempts",
        env: "EXPORTAL_WEBHOOK_MAX_ATTEMPTS",
        default: "30",
        help: "Deliveries tried per event before it is abandoned with a log line (30 is about four hours).",
    },
    SettingSpec {
        key: "metrics_token",
        env: "EXPORTAL_METRICS_TOKEN",
        default: "(none: /metrics is open)",
        help: "When set, GET /metrics requires `Authorization: Bearer <token>` (at least 16 visible ASCII \
               characters; compared in constant time). /metrics never needs a user identity.",
    },
    SettingSpec {
        key: "azure_ca_file",
        env: "EXPORTAL_AZURE_CA_FILE",
        default: "(none: the system's roots)",
        help: "Azure: a PEM file of the CA certificates that storage endpoints' certificates must chain to; \
               when set, storage calls trust these roots only (a private CA, an emulator over HTTPS).",
    },
];

/// The process's role in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Web,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }

    pub fn serves_http(self) -> bool {
        matches!(self, Role::All | Role::Web)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// The validated settings of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub role: Role,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub datasets: Option<PathBuf>,
    pub demo_orders: u64,
    pub auth: Auth,
    pub cookie_secret: Option<Secret>,
    pub worker_concurrency: usize,
    pub max_attempts: u32,
    pub visibility_timeout: Duration,
    pub retry_base: Duration,
    pub poll_max: Duration,
    pub max_active_jobs: usize,
    pub row_cap: u64,
    pub retention: Duration,
    /// How long an expired job's record is kept before it is deleted.
    pub record_grace: Duration,
    pub download_ttl: Duration,
    pub csv_crlf: bool,
    pub admins: Admins,
    pub audit_retention: Duration,
    pub instance: String,
    pub storage: Storage,
    pub edge: Edge,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Secret>,
    pub webhooks: Webhooks,
}

/// Where and how finished exports are announced (see `crate::webhooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhooks {
    /// The server's webhook, for datasets without one of their own.
    pub url: Option<String>,
    pub secret: Option<Secret>,
    /// Lower-case host names; empty: any host.
    pub hosts: Vec<String>,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub max_attempts: u32,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            hosts: Vec::new(),
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            max_attempts: 30,
        }
    }
}

/// The settings of the HTTP edge: who may call, from where, and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The origin (`scheme://host[:port]`, lower case) of `EXPORTAL_PUBLIC_URL`.
    pub public_origin: Option<String>,
    pub proxy_secret: Option<Secret>,
    /// Empty: every peer may call.
    pub trusted_proxies: Vec<IpRange>,
    /// Empty: the same origin as the request's Host (and the public origin).
    pub ws_origins: Vec<String>,
    pub ws_per_user: usize,
    pub ws_send_timeout: Duration,
    pub max_body: usize,
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    pub rate_identities: usize,
}

impl Edge {
    /// Whether users reach the server over https (cookies are then `__Host-` and Secure).
    pub fn public_https(&self) -> bool {
        self.public_origin
            .as_deref()
            .is_some_and(|o| o.starts_with("https://"))
    }
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            public_origin: None,
            proxy_secret: None,
            trusted_proxies: Vec::new(),
            ws_origins: Vec::new(),
            ws_per_user: 16,
            ws_send_timeout: Duration::from_secs(10),
            max_body: 65_536,
            rate_per_minute: 60,
            rate_burst: 20,
            rate_identities: 10_000,
        }
    }
}

/// An IP address or a CIDR range (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(v: &str) -> Result<IpRange, String> {
        let bad = || format!("`{v}` is not an IP address or CIDR range such as 10.0.0.0/8");
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
        };
        Ok(IpRange { addr, prefix })
    }

    /// Whether `ip` is in the range; an IPv4 peer seen as `::ffff:a.b.c.d` counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The origin of an absolute http(s) URL, lower case and without a default port:
/// `HTTPS://Example.com:443/app` → `https://example.com`.
pub fn origin_of(url: &str) -> Result<String, String> {
    let bad = || format!("`{url}` is not an http(s) URL such as https://exports.example.com");
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(bad());
    }
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Ok(format!("{scheme}://{authority}"))
}

/// Where jobs, the queue and files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Local,
    Azure(crate::azure::AzureSettings),
}

impl Storage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Storage::Local => "local",
            Storage::Azure(_) => "azure",
        }
    }
}

/// Who may use the admin routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admins {
    pub users: Vec<String>,
    /// Header mode: (lower-case header name, group) — a user listed in that group is an admin.
    pub group: Option<(String, String)>,
}

/// The name a process gives itself on the jobs it runs: `<host>:<pid>`.
pub fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "exportal".into());
    format!("{host}:{}", std::process::id())
}

/// How callers are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Cookie,
    /// Trust this (lower-case) header.
    Header(String),
}

/// A secret value: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Parses `90s`, `5m`, `2h`, `7d`, `250ms` or a plain number of seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a duration such as 90s, 5m, 2h or 7d".to_string())?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit.trim() {
        "" | "s" => Ok(secs(1)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        _ => Err(format!("unknown unit `{unit}` (use ms, s, m, h or d)")),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("expected a whole number greater than 0".into()),
    }
}

/// A whole number in `min..=max`: extremes that would panic, spin or exhaust memory are
/// refused at start-up rather than found later.
fn within<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    move |v| match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

/// A duration in `min..=max`.
fn duration_within(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |v| {
        let d = parse_duration(v)?;
        if d < min {
            Err(format!("must be at least {}", show_duration(min)))
        } else if d > max {
            Err(format!("must be at most {}", show_duration(max)))
        } else {
            Ok(d)
        }
    }
}

fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl Settings {
    /// Settings from options alone, ignoring the process environment: for embedding the
    /// server and for tests.
    pub fn from_args<I, S>(args: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match Command::parse(args.into_iter().map(Into::into), |_| None)? {
            Command::Run(s) => Ok(*s),
            _ => Err(ConfigError::UnknownFlag("--help/--version".into())),
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Settings>),
    Help,
    Version,
}

/// A setting that could not be used, with where it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("unknown option {0} (see --help)")]
    UnknownFlag(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("config file {path}: {problem}")]
    File { path: String, problem: String },
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Flag(String),
    Env(&'static str),
    File(PathBuf, &'static str),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "option {flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File(path, key) => write!(f, "config file {}, key `{key}`", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

impl Command {
    /// Reads the command line (without the program name) and the environment through `env`,
    /// so that tests can pass both without touching the process's own.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Command, ConfigError> {
        let mut flags: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
        let mut config_path: Option<(PathBuf, Origin)> = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            match name.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                _ => {}
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ConfigError::MissingValue(name.clone()))
            };
            if name == "--config" {
                config_path = Some((value()?.into(), Origin::Flag(name.clone())));
                continue;
            }
            let spec = SETTINGS
                .iter()
                .find(|s| flag_of(s.key) == name)
                .ok_or_else(|| ConfigError::UnknownFlag(arg.clone()))?;
            flags.insert(spec.key, (value()?, name.clone()));
        }
        if config_path.is_none() {
            config_path =
                env("EXPORTAL_CONFIG").map(|p| (p.into(), Origin::Env("EXPORTAL_CONFIG")));
        }
        let file = match &config_path {
            Some((path, origin)) => read_config_file(path, origin)?,
            None => BTreeMap::new(),
        };

        let raw = |key: &'static str| -> Option<(String, Origin)> {
            let spec = SETTINGS.iter().find(|s| s.key == key).expect("known key");
            if let Some((v, flag)) = flags.get(key) {
                return Some((v.clone(), Origin::Flag(flag.clone())));
            }
            if let Some(v) = env(spec.env) {
                return Some((v, Origin::Env(spec.env)));
            }
            let (path, _) = config_path.as_ref()?;
            file.get(key)
                .map(|v| (v.clone(), Origin::File(path.clone(), spec.key)))
        };

        let addr = match raw("addr") {
            Some(v) => v,
            None => (
                env("LEPTOS_SITE_ADDR").unwrap_or_else(|| "127.0.0.1:3000".into()),
                Origin::Env("LEPTOS_SITE_ADDR"),
            ),
        };
        let settings = Settings {
            addr: parse(addr, |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| "expected an address and port such as 127.0.0.1:3000".into())
            })?,
            data_dir: parse(
                raw("data_dir").unwrap_or(("./data".into(), Origin::Default)),
                |v| {
                    if v.trim().is_empty() {
                        Err("must not be empty".into())
                    } else {
                        Ok(PathBuf::from(v))
                    }
                },
            )?,
            role: parse(
                raw("role").unwrap_or(("all".into(), Origin::Default)),
                |v| match v {
                    "all" => Ok(Role::All),
                    "web" => Ok(Role::Web),
                    "worker" => Ok(Role::Worker),
                    _ => Err("expected one of: all, web, worker".into()),
                },
            )?,
            log_format: parse(
                raw("log_format").unwrap_or(("plain".into(), Origin::Default)),
                |v| match v {
                    "plain" => Ok(LogFormat::Plain),
                    "json" => Ok(LogFormat::Json),
                    _ => Err("expected plain or json".into()),
                },
            )?,
            shutdown_grace: parse(
                or_default(raw("shutdown_grace"), "30s"),
                duration_within(Duration::ZERO, DAY),
            )?,
            datasets: raw("datasets")
                .map(|v| parse(v, |p| Ok(PathBuf::from(p))))
                .transpose()?,
            demo_orders: parse(
                or_default(raw("demo_orders"), "1000000"),
                within(1, 100_000_000),
            )?,
            auth: {
                let header = parse(or_default(raw("auth_header"), "x-forwarded-user"), |h| {
                    axum::http::HeaderName::from_bytes(h.as_bytes())
                        .map(|n| n.as_str().to_string())
                        .map_err(|_| "not a valid HTTP header name".into())
                })?;
                parse(or_default(raw("auth"), "cookie"), |v| match v {
                    "cookie" => Ok(Auth::Cookie),
                    "header" => Ok(Auth::Header(header.clone())),
                    _ => Err("expected cookie or header".into()),
                })?
            },
            cookie_secret: raw("cookie_secret")
                .map(|v| {
                    parse(v, |s| {
                        if s.len() >= 32 {
                            Ok(Secret(s.to_string()))
                        } else {
                            Err("must be at least 32 characters".into())
                        }
                    })
                })
                .transpose()?,
            worker_concurrency: parse(or_default(raw("worker_concurrency"), "2"), within(1, 256))?,
            max_attempts: parse(or_default(raw("max_attempts"), "5"), within(1, 100))?,
            // Azure Storage Queue refuses a visibility timeout over 7 days.
            visibility_timeout: parse(
                or_default(raw("visibility_timeout"), "30s"),
                duration_within(Duration::from_secs(1), 7 * DAY),
            )?,
            retry_base: parse(
                or_default(raw("retry_base"), "2s"),
                duration_within(Duration::ZERO, Duration::from_secs(60)),
            )?,
            // An idle worker sleeps this long between polls: 0 would make it spin.
            poll_max: parse(
                or_default(raw("poll_max"), "2s"),
                duration_within(Duration::from_millis(10), Duration::from_secs(3600)),
            )?,
            max_active_jobs: parse(or_default(raw("max_active_jobs"), "3"), within(1, 100_000))?,
            row_cap: parse(or_default(raw("row_cap"), "10000000"), positive)?,
            // Both end up added to the current time as chrono durations: far-future values would
            // overflow there.
            retention: parse(
                or_default(raw("retention"), "7d"),
                duration_within(Duration::from_secs(60), 3650 * DAY),
            )?,
            record_grace: parse(
                or_default(raw("record_grace"), "30d"),
                duration_within(Duration::from_secs(60), 3650 * DAY),
            )?,
            download_ttl: parse(
                or_default(raw("download_ttl"), "5m"),
                duration_within(Duration::from_secs(1), 7 * DAY),
            )?,
            csv_crlf: parse(or_default(raw("csv_line_ending"), "crlf"), |v| match v {
                "crlf" => Ok(true),
                "lf" => Ok(false),
                _ => Err("expected crlf or lf".into()),
            })?,
            admins: {
                let users = match raw("admins") {
                    None => Vec::new(),
                    Some(v) => parse(v, |s| {
                        comma_list(s, |u| {
                            if u.len() <= 256 && u.chars().all(|c| !c.is_control()) {
                                Ok(u.to_string())
                            } else {
                                Err(format!("`{u}` is not a user name"))
                            }
                        })
                    })?,
                };
                let header = raw("admin_group_header")
                    .map(|v| {
                        parse(v, |h| {
                            axum::http::HeaderName::from_bytes(h.as_bytes())
                                .map(|n| n.as_str().to_string())
                                .map_err(|_| "not a valid HTTP header name".into())
                        })
                    })
                    .transpose()?;
                let group = raw("admin_group").map(|(v, _)| v.trim().to_string());
                let group = match (header, group) {
                    (None, None) => None,
                    (Some(h), Some(g)) if !g.is_empty() && !g.contains(',') => {
                        if raw("auth").is_none_or(|(a, _)| a.trim() != "header") {
                            return Err(ConfigError::Invalid {
                                origin: "EXPORTAL_ADMIN_GROUP_HEADER".into(),
                                problem: "admin groups come from the proxy: it needs EXPORTAL_AUTH=header".into(),
                            });
                        }
                        Some((h, g))
                    }
                    _ => {
                        return Err(ConfigError::Invalid {
                            origin: "EXPORTAL_ADMIN_GROUP_HEADER / EXPORTAL_ADMIN_GROUP".into(),
                            problem: "set both, the group being one name without commas".into(),
                        })
                    }
                };
                Admins { users, group }
            },
            audit_retention: parse(
                or_default(raw("audit_retention"), "365d"),
                duration_within(DAY, 3650 * DAY),
            )?,
            instance: match raw("instance") {
                None => default_instance(),
                Some(v) => parse(v, |s| {
                    if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) {
                        Ok(s.to_string())
                    } else {
                        Err("use 1 to 128 visible ASCII characters".into())
                    }
                })?,
            },
            storage: {
                let name = |key: &'static str, default: &str| {
                    parse(or_default(raw(key), default), |v| {
                        let ok = (3..=63).contains(&v.len())
                            && v.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                            && !v.starts_with('-')
                            && !v.contains("--");
                        if ok {
                            Ok(v.to_string())
                        } else {
                            Err("use 3-63 lower-case letters, digits and single hyphens".into())
                        }
                    })
                };
                let azure = crate::azure::AzureSettings {
                    connection_string: raw("azure_connection_string").map(|(v, _)| Secret(v)),
                    blob_url: raw("azure_blob_url").map(|(v, _)| v),
                    queue_url: raw("azure_queue_url").map(|(v, _)| v),
                    queue: name("azure_queue", "exportal-jobs")?,
                    files_container: name("azure_files_container", "exportal-files")?,
                    jobs_container: name("azure_jobs_container", "exportal-jobs")?,
                    ca_file: raw("azure_ca_file").map(|(v, _)| PathBuf::from(v)),
                };
                parse(or_default(raw("storage"), "local"), |v| {
                    match v {
                    "local" => Ok(Storage::Local),
                    "azure" if azure.connection_string.is_none() && (azure.blob_url.is_none() || azure.queue_url.is_none()) => Err(
                        "azure storage needs AZURE_STORAGE_CONNECTION_STRING, or EXPORTAL_AZURE_BLOB_URL and EXPORTAL_AZURE_QUEUE_URL".into(),
                    ),
                    "azure" => Ok(Storage::Azure(azure.clone())),
                    _ => Err("expected local or azure".into()),
                }
                })?
            },
            edge: {
                let public_origin = raw("public_url").map(|v| parse(v, origin_of)).transpose()?;
                Edge {
                    public_origin,
                    proxy_secret: raw("proxy_secret")
                        .map(|v| {
                            parse(v, |s| {
                                if s.len() >= 16 && s.bytes().all(|b| b.is_ascii_graphic()) {
                                    Ok(Secret(s.to_string()))
                                } else {
                                    Err("must be at least 16 visible ASCII characters".into())
                                }
                            })
                        })
                        .transpose()?,
                    trusted_proxies: match raw("trusted_proxies") {
                        None => Vec::new(),
                        Some(v) => parse(v, |s| comma_list(s, IpRange::parse))?,
                    },
                    ws_origins: match raw("ws_origins") {
                        None => Vec::new(),
                        Some(v) => parse(v, |s| comma_list(s, origin_of))?,
                    },
                    ws_per_user: parse(or_default(raw("ws_per_user"), "16"), within(1, 1000))?,
                    ws_send_timeout: parse(
                        or_default(raw("ws_send_timeout"), "10s"),
                        duration_within(Duration::from_millis(100), Duration::from_secs(600)),
                    )?,
                    max_body: parse(or_default(raw("max_body"), "65536"), within(1024, 16 << 20))?,
                    rate_per_minute: parse(
                        or_default(raw("rate_per_minute"), "60"),
                        within(1, 1_000_000),
                    )?,
                    rate_burst: parse(or_default(raw("rate_burst"), "20"), within(1, 1_000_000))?,
                    rate_identities: parse(
                        or_default(raw("rate_identities"), "10000"),
                        within(1, 10_000_000),
                    )?,
                }
            },
            webhooks: {
                let hosts = match raw("webhook_hosts") {
                    None => Vec::new(),
                    Some(v) => parse(v, |s| comma_list(s, crate::webhooks::parse_host))?,
                };
                let secret = match raw("webhook_secret") {
                    None => None,
                    Some((v, _)) if v.trim().chars().count() >= 16 => {
                        Some(Secret(v.trim().to_string()))
                    }
                    // Not `parse`: its message would show the value.
                    Some((_, origin)) => {
                        return Err(ConfigError::Invalid {
                            origin: origin.to_string(),
                            problem: "must be at least 16 characters".into(),
                        })
                    }
                };
                let url = raw("webhook_url")
                    .map(|v| parse(v, |u| crate::webhooks::check_url(u, &hosts)))
                    .transpose()?;
                if url.is_some() && secret.is_none() {
                    return Err(ConfigError::Invalid {
                        origin: "EXPORTAL_WEBHOOK_SECRET (file key `webhook_secret`)".into(),
                        problem: "missing: required when EXPORTAL_WEBHOOK_URL is set (deliveries are signed with it)"
                            .into(),
                    });
                }
                Webhooks {
                    url,
                    secret,
                    hosts,
                    timeout: parse(
                        or_default(raw("webhook_timeout"), "10s"),
                        duration_within(Duration::from_millis(100), Duration::from_secs(300)),
                    )?,
                    retry_base: parse(
                        or_default(raw("webhook_retry_base"), "1s"),
                        duration_within(Duration::from_millis(10), Duration::from_secs(600)),
                    )?,
                    max_attempts: parse(
                        or_default(raw("webhook_max_attempts"), "30"),
                        within(1, 1000),
                    )?,
                }
            },
            // Not through `parse`, which quotes the value it refuses: this one is a secret.
            metrics_token: raw("metrics_token")
                .map(|(v, origin)| {
                    let v = v.trim();
                    if v.len() >= 16 && v.bytes().all(|b| b.is_ascii_graphic()) {
                        Ok(Secret(v.to_string()))
                    } else {
                        Err(ConfigError::Invalid {
                            origin: origin.to_string(),
                            problem: "must be at least 16 visible ASCII characters".into(),
                        })
                    }
                })
                .transpose()?,
        };
        Ok(Command::Run(Box::new(settings)))
    }
}

/// A comma-separated list, each item checked by `item`; empty items are ignored.
fn comma_list<T>(v: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(item)
        .collect()
}

fn or_default(value: Option<(String, Origin)>, default: &str) -> (String, Origin) {
    value.unwrap_or_else(|| (default.to_string(), Origin::Default))
}

fn parse<T>(
    (value, origin): (String, Origin),
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    f(value.trim()).map_err(|problem| ConfigError::Invalid {
        origin: origin.to_string(),
        problem: format!("{value:?}: {problem}"),
    })
}

fn read_config_file(
    path: &Path,
    origin: &Origin,
) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let err = |problem: String| ConfigError::File {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot be read ({e}); it was named by {origin}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.message().to_string()))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let spec = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| err(format!("unknown key `{key}` (see --help for the keys)")))?;
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(err(format!(
                    "key `{key}` must be a string or number, not {}",
                    other.type_str()
                )))
            }
        };
        out.insert(spec.key, value);
    }
    Ok(out)
}

/// The text `--help` prints.
pub fn help_text() -> String {
    let mut out = format!(
        "Exportal {} — asynchronous data exports\n\n\
         USAGE:\n    server [OPTIONS]\n\n\
         Each setting can be given as an option, an environment variable or a key in a TOML\n\
         config file, in that order of precedence.\n\n\
         OPTIONS:\n    --config <FILE>  [env: EXPORTAL_CONFIG]\n        TOML file with any of the keys below.\n",
        env!("CARGO_PKG_VERSION")
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "    {} <VALUE>  [env: {}] [file key: {}] [default: {}]\n        {}\n",
            flag_of(s.key),
            s.env,
            s.key,
            s.default,
            s.help
        ));
    }
    out.push_str("    -h, --help     Print this help.\n    -V, --version  Print the version.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Command::parse(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())? {
            Command::Run(s) => Ok(*s),
            other => panic!("expected settings, got {other:?}"),
        }
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = parse_with(&[], &[]).unwrap();
        assert_eq!(s.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.role, Role::All);
        assert_eq!(s.log_format, LogFormat::Plain);
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.datasets, None);
        assert_eq!(s.auth, Auth::Cookie);
        assert_eq!(s.max_active_jobs, 3);
        assert_eq!(s.row_cap, 10_000_000);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.record_grace, Duration::from_secs(30 * 86_400));
        assert!(s.csv_crlf);
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("7w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn header_auth_uses_the_configured_header_and_secrets_are_not_printed() {
        let s = parse_with(
            &[],
            &[
                ("EXPORTAL_AUTH", "header"),
                ("EXPORTAL_AUTH_HEADER", "X-Remote-User"),
            ],
        )
        .unwrap();
        assert_eq!(s.auth, Auth::Header("x-remote-user".into()));
        let msg = parse_with(
            &[],
            &[
                ("EXPORTAL_AUTH", "header"),
                ("EXPORTAL_AUTH_HEADER", "bad header"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("EXPORTAL_AUTH_HEADER"), "{msg}");

        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let s = parse_with(&[], &[("EXPORTAL_COOKIE_SECRET", secret)]).unwrap();
        assert!(!format!("{s:?}").contains(secret));
        let msg = parse_with(&[], &[("EXPORTAL_COOKIE_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("at least 32") && msg.contains("EXPORTAL_COOKIE_SECRET"),
            "{msg}"
        );
    }

    #[test]
    fn azure_storage_needs_credentials_and_valid_names() {
        let msg = parse_with(&[], &[("EXPORTAL_STORAGE", "azure")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("EXPORTAL_STORAGE") && msg.contains("AZURE_STORAGE_CONNECTION_STRING"),
            "{msg}"
        );
        let s = parse_with(
            &["--storage", "azure"],
            &[(
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            )],
        )
        .unwrap();
        let Storage::Azure(azure) = s.storage else {
            panic!("azure expected")
        };
        assert_eq!(azure.queue, "exportal-jobs");
        assert!(
            !format!("{azure:?}").contains("UseDevelopmentStorage"),
            "the connection string is secret"
        );
        let msg = parse_with(&[], &[("EXPORTAL_AZURE_QUEUE", "Jobs_Queue")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("EXPORTAL_AZURE_QUEUE") && msg.contains("lower-case"),
            "{msg}"
        );
    }

    #[test]
    fn limits_must_be_positive() {
        let msg = parse_with(&[], &[("EXPORTAL_MAX_ACTIVE_JOBS", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("EXPORTAL_MAX_ACTIVE_JOBS") && msg.contains("from 1 to"),
            "{msg}"
        );
        let msg = parse_with(&[], &[("EXPORTAL_VISIBILITY_TIMEOUT", "100ms")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at least 1s"), "{msg}");
    }

    #[test]
    fn flags_beat_environment_which_beats_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exportal.toml");
        std::fs::write(
            &file,
            "role = \"worker\"\nlog_format = \"json\"\nshutdown_grace = 5\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let s = parse_with(
            &["--config", file, "--role=web"],
            &[("EXPORTAL_ROLE", "all"), ("EXPORTAL_LOG_FORMAT", "plain")],
        )
        .unwrap();
        assert_eq!(s.role, Role::Web, "flag wins");
        assert_eq!(s.log_format, LogFormat::Plain, "environment beats file");
        assert_eq!(
            s.shutdown_grace,
            Duration::from_secs(5),
            "file beats default"
        );
    }

    #[test]
    fn leptos_site_addr_is_the_fallback_address() {
        let s = parse_with(&[], &[("LEPTOS_SITE_ADDR", "127.0.0.1:4000")]).unwrap();
        assert_eq!(s.addr.port(), 4000);
        let s = parse_with(
            &["--addr", "127.0.0.1:0"],
            &[("LEPTOS_SITE_ADDR", "127.0.0.1:4000")],
        )
        .unwrap();
        assert_eq!(s.addr.port(), 0);
    }

    #[test]
    fn a_bad_value_names_its_variable_and_what_is_accepted() {
        let e = parse_with(&[], &[("EXPORTAL_ROLE", "boss")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("EXPORTAL_ROLE"), "{msg}");
        assert!(
            msg.contains("boss") && msg.contains("all, web, worker"),
            "{msg}"
        );

        let msg = parse_with(&["--addr", "localhost"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("option --addr") && msg.contains("127.0.0.1:3000"),
            "{msg}"
        );

        let msg = parse_with(&[], &[("EXPORTAL_SHUTDOWN_GRACE", "-1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("EXPORTAL_SHUTDOWN_GRACE"), "{msg}");
    }

    #[test]
    fn config_file_problems_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        let msg = parse_with(&[], &[("EXPORTAL_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("unknown key `colour`"),
            "{msg}"
        );

        std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
        let msg = parse_with(&["--config", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("key `log_format`") && msg.contains("plain or json"),
            "{msg}"
        );

        std::fs::write(&file, "role = [\n").unwrap();
        let msg = parse_with(&["--config", file.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("config file"), "{msg}");

        let missing = dir.path().join("missing.toml");
        let msg = parse_with(&["--config", missing.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("missing.toml") && msg.contains("option --config"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_flags_and_missing_values_are_refused() {
        assert_eq!(
            parse_with(&["--colour", "x"], &[]).unwrap_err(),
            ConfigError::UnknownFlag("--colour".into())
        );
        assert_eq!(
            parse_with(&["--role"], &[]).unwrap_err(),
            ConfigError::MissingValue("--role".into())
        );
    }

    #[test]
    fn extreme_numbers_and_durations_are_refused_at_start_up_naming_the_variable() {
        // Each would panic (chrono overflow), spin (a zero poll) or exhaust something later.
        let cases: &[(&str, &str, &str)] = &[
            ("EXPORTAL_POLL_MAX", "0", "at least 10ms"),
            ("EXPORTAL_POLL_MAX", "0ms", "at least 10ms"),
            ("EXPORTAL_RETENTION", "99999999999d", "at most 3650d"),
            (
                "EXPORTAL_RETENTION",
                "18446744073709551615",
                "at most 3650d",
            ),
            ("EXPORTAL_RECORD_GRACE", "99999999999d", "at most 3650d"),
            ("EXPORTAL_RECORD_GRACE", "0", "at least 1m"),
            ("EXPORTAL_DOWNLOAD_TTL", "1000000000d", "at most 7d"),
            ("EXPORTAL_DOWNLOAD_TTL", "0", "at least 1s"),
            ("EXPORTAL_VISIBILITY_TIMEOUT", "30d", "at most 7d"),
            ("EXPORTAL_SHUTDOWN_GRACE", "400d", "at most 1d"),
            ("EXPORTAL_RETRY_BASE", "2h", "at most 1m"),
            (
                "EXPORTAL_WORKER_CONCURRENCY",
                "100000000000",
                "from 1 to 256",
            ),
            ("EXPORTAL_MAX_ATTEMPTS", "0", "from 1 to 100"),
            (
                "EXPORTAL_DEMO_ORDERS",
                "1000000000000",
                "from 1 to 100000000",
            ),
            ("EXPORTAL_MAX_ACTIVE_JOBS", "99999999", "from 1 to 100000"),
            ("EXPORTAL_WS_PER_USER", "0", "from 1 to 1000"),
            ("EXPORTAL_WS_SEND_TIMEOUT", "0", "at least 100ms"),
            ("EXPORTAL_MAX_BODY", "10", "from 1024 to"),
            ("EXPORTAL_MAX_BODY", "999999999999", "from 1024 to"),
            ("EXPORTAL_RATE_PER_MINUTE", "0", "from 1 to"),
            ("EXPORTAL_RATE_BURST", "-1", "from 1 to"),
            ("EXPORTAL_RATE_IDENTITIES", "0", "from 1 to"),
        ];
        for (var, value, expected) in cases {
            let msg = parse_with(&[], &[(var, value)])
                .err()
                .unwrap_or_else(|| panic!("{var}={value} was accepted"))
                .to_string();
            assert!(
                msg.contains(var) && msg.contains(expected),
                "{var}={value}: {msg}"
            );
        }
        // The bounds themselves are accepted.
        let s = parse_with(
            &[],
            &[
                ("EXPORTAL_POLL_MAX", "10ms"),
                ("EXPORTAL_RETENTION", "3650d"),
                ("EXPORTAL_RECORD_GRACE", "3650d"),
                ("EXPORTAL_DOWNLOAD_TTL", "7d"),
            ],
        )
        .unwrap();
        assert_eq!(s.poll_max, Duration::from_millis(10));
        // Far-future instants from the largest accepted values still fit chrono.
        let now = chrono::Utc::now();
        for d in [s.retention, s.record_grace, s.download_ttl] {
            let d = chrono::Duration::from_std(d).unwrap();
            assert!(now.checked_add_signed(d).is_some());
        }
    }

    #[test]
    fn edge_settings_parse_origins_peers_and_secrets() {
        let s = parse_with(&[], &[]).unwrap();
        assert_eq!(s.edge, Edge::default());
        assert!(!s.edge.public_https());

        let s = parse_with(
            &[],
            &[
                (
                    "EXPORTAL_PUBLIC_URL",
                    "HTTPS://Exports.Example.com:443/app/",
                ),
                ("EXPORTAL_PROXY_SECRET", "0123456789abcdef"),
                (
                    "EXPORTAL_TRUSTED_PROXIES",
                    "10.0.0.0/8, 127.0.0.1 ,fd00::/8",
                ),
                (
                    "EXPORTAL_WS_ORIGINS",
                    "https://a.example.com,http://localhost:3000",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            s.edge.public_origin.as_deref(),
            Some("https://exports.example.com")
        );
        assert!(s.edge.public_https());
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        assert_eq!(
            s.edge.ws_origins,
            ["https://a.example.com", "http://localhost:3000"]
        );
        let peers = &s.edge.trusted_proxies;
        let inside = |ip: &str| peers.iter().any(|r| r.contains(ip.parse().unwrap()));
        assert!(inside("10.1.2.3") && inside("127.0.0.1") && inside("fd00::1"));
        assert!(inside("::ffff:10.9.9.9"), "IPv4-mapped peers count as IPv4");
        assert!(!inside("127.0.0.2") && !inside("11.0.0.1") && !inside("fe80::1"));

        for (var, value, expected) in [
            ("EXPORTAL_PUBLIC_URL", "exports.example.com", "http(s) URL"),
            ("EXPORTAL_PUBLIC_URL", "ftp://x", "http(s) URL"),
            ("EXPORTAL_PUBLIC_URL", "https://user@x", "http(s) URL"),
            ("EXPORTAL_PROXY_SECRET", "short", "at least 16"),
            ("EXPORTAL_TRUSTED_PROXIES", "10.0.0.0/33", "CIDR"),
            ("EXPORTAL_TRUSTED_PROXIES", "proxy.local", "CIDR"),
            ("EXPORTAL_WS_ORIGINS", "*", "http(s) URL"),
        ] {
            let msg = parse_with(&[], &[(var, value)]).unwrap_err().to_string();
            assert!(msg.contains(var) && msg.contains(expected), "{msg}");
        }
        assert!(IpRange::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn help_documents_every_setting() {
        let help = help_text();
        for s in SETTINGS {
            assert!(
                help.contains(s.env) && help.contains(&flag_of(s.key)),
                "{} missing",
                s.key
            );
        }
        assert!(matches!(
            Command::parse(["--help".to_string()], |_| None).unwrap(),
            Command::Help
        ));
    }

    #[test]
    fn the_metrics_token_is_optional_long_enough_and_never_printed() {
        assert_eq!(parse_with(&[], &[]).unwrap().metrics_token, None);
        let token = "scrape-token-0123456789";
        let s = parse_with(&[], &[("EXPORTAL_METRICS_TOKEN", token)]).unwrap();
        assert_eq!(s.metrics_token, Some(Secret(token.into())));
        assert!(!format!("{s:?}").contains(token));
        for bad in ["short-token", "sixteen chars but spaces"] {
            let msg = parse_with(&["--metrics-token", bad], &[])
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("--metrics-token") && msg.contains("at least 16 visible"),
                "{msg}"
            );
            assert!(
                !msg.contains(bad),
                "a refused secret is not repeated: {msg}"
            );
        }
    }
}
