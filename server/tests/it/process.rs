//! Runs the real `valence-lifecycle` binary as a child process.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// A server running as its own process.
pub(crate) struct ServerProcess {
    pub child: Child,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    /// Starts the binary on free ports with `database_url` and `env`, and
    /// waits until /health answers (see common::wait_answering).
    pub(crate) async fn start(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let (grpc, api) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_valence-lifecycle"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("GRPC_PORT", grpc.to_string())
            .env("API_PORT", api.to_string())
            .env("RUST_LOG", "warn")
            // No embedded chain unless the test asks for one.
            .env("VALENCE_LIFECYCLE_RPC__EMBEDDED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawning valence-lifecycle");
        let server = ServerProcess {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            api: SocketAddr::from(([127, 0, 0, 1], api)),
        };
        crate::common::wait_answering(&format!("http://{}", server.api)).await;
        server
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server did not exit within 30 s after SIGTERM")
            .unwrap();
        exit.code()
    }
}
