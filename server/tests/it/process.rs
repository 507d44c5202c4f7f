//! The server binary as a child process, for the tests that kill it or run several instances.
//!
//! Each instance listens on port 0 and the test reads the real port from its "listening" log
//! line. Picking a free port first and passing it in left a window in which a test running in
//! parallel could take the port, and a health check then answered from the wrong server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in the "Exportal is listening" line (plain or coloured log output).
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("Exportal is listening") {
        return None;
    }
    let rest = &line[line.find("http://127.0.0.1:")? + "http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Server {
    /// Starts the server with `args` (and `--addr 127.0.0.1:0`), returning once it listens.
    /// Its log goes to this test's output, where a failing test shows it.
    pub fn start(args: &[String]) -> Server {
        Self::start_in(Path::new("."), args)
    }

    /// Like [`Server::start`], with `dir` as the working directory.
    pub fn start_in(dir: &Path, args: &[String]) -> Server {
        Self::start_with_env(dir, args, &[])
    }

    /// Like [`Server::start_in`], with extra environment variables (an identity endpoint, say).
    pub fn start_with_env(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .current_dir(dir)
            .args(["--addr", "127.0.0.1:0", "--log-format", "plain"])
            .args(args)
            .envs(env.iter().copied())
            .env("LEPTOS_OUTPUT_NAME", "exportal")
            .env("RUST_LOG", "warn,server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, port) = mpsc::channel();
        // Keeps reading after the port is known, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(p) = listening_port(&line) {
                    let _ = found.send(p);
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(60))
            .expect("the server reports the address it listens on");
        Server { child, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

#[test]
fn the_port_is_read_from_plain_and_coloured_log_lines() {
    assert_eq!(
        listening_port("INFO Exportal is listening url=http://127.0.0.1:4321 role=\"all\""),
        Some(4321)
    );
    assert_eq!(
        listening_port("\u{1b}[32m INFO\u{1b}[0m Exportal is listening \u{1b}[3murl\u{1b}[0m\u{1b}[2m=\u{1b}[0mhttp://127.0.0.1:80 role"),
        Some(80)
    );
    assert_eq!(listening_port("export started"), None);
}
