//! The `onair` binary as a child process, for tests of what only a real
//! process shows (signals, exit codes, open-files limits, several processes
//! talking over the network): its JSON log lines are collected as they come,
//! and it is killed when the test drops it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// A running `onair` whose log lines are collected as they come.
pub struct OnairProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// A data directory that lives as long as the process.
    _data: Option<tempfile::TempDir>,
}

impl OnairProcess {
    /// Starts `command` with its log as JSON on stdout; `what` says what
    /// failed to start. The command sets the log level it wants
    /// (`ONAIR_LOG_LEVEL`).
    pub fn spawn(command: &mut Command, what: &str) -> OnairProcess {
        let mut child = command
            .env("ONAIR_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        OnairProcess {
            child,
            lines,
            _data: None,
        }
    }

    /// Keeps `dir` (the process's data directory) until the process is dropped.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> OnairProcess {
        self._data = Some(dir);
        self
    }

    /// The JSON log lines so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first log line with this message.
    pub fn log_line(&self, message: &str) -> Option<serde_json::Value> {
        self.logs()
            .into_iter()
            .find(|line| line["message"] == message)
    }

    /// The HTTP and gRPC addresses, from the "listening" line once it comes.
    pub async fn addresses(&self) -> (SocketAddr, SocketAddr) {
        let listening =
            crate::assert_eventually!(self.log_line("listening"), "the process logs its addresses");
        let address = |name: &str| {
            listening[name]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("a {name} address in {listening}"))
        };
        (address("http"), address("grpc"))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills the process at once (SIGKILL), as a crash or an evicted pod
    /// would end, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait for exit")
    }
}

impl Drop for OnairProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
