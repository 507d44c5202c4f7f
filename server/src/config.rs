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
use std::net::SocketAddr;
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
        key: "shutdown_grace_secs",
        env: "EXPORTAL_SHUTDOWN_GRACE_SECS",
        default: "30",
        help: "On Ctrl-C or SIGTERM, how long open requests may take to finish before the process exits.",
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
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Settings),
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
                raw("shutdown_grace_secs").unwrap_or(("30".into(), Origin::Default)),
                |v| {
                    v.parse::<u64>()
                        .map(Duration::from_secs)
                        .map_err(|_| "expected a whole number of seconds".into())
                },
            )?,
        };
        Ok(Command::Run(settings))
    }
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
            Command::Run(s) => Ok(s),
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
    }

    #[test]
    fn flags_beat_environment_which_beats_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exportal.toml");
        std::fs::write(
            &file,
            "role = \"worker\"\nlog_format = \"json\"\nshutdown_grace_secs = 5\n",
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

        let msg = parse_with(&[], &[("EXPORTAL_SHUTDOWN_GRACE_SECS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("EXPORTAL_SHUTDOWN_GRACE_SECS"), "{msg}");
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
}
