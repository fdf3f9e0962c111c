//! TLS on both listeners (`[tls]`): a test CA and certificates made here
//! (rcgen); grpcurl, the Rust client and reqwest over TLS; plaintext
//! refused; client certificates (mTLS) on gRPC; a certificate rotated by
//! SIGHUP served to the next connection while an open Subscribe goes on.
//! Transport only, so SQLite alone.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::{net::TcpListener, process::Command};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        subscribe_response::Message, CreateRuleRequest, EventType, GetStatsRequest,
        SubscribeRequest,
    },
};
use valence_lifecycle_client::{ClientConfig, LifecycleClient};
use valence_lifecycle_server::config::Config;

use crate::{
    common::{
        eventually, output_text, test_config, tool, with_tokens, Db, TestDb, ADMIN, SEED_RULE,
    },
    process::free_port,
};

const WAIT: Duration = Duration::from_secs(20);

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A test CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        pem("CERTIFICATE", self.cert.der())
    }

    /// A leaf for `purpose`, as (certificate PEM, key PEM).
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (
            pem("CERTIFICATE", cert.der()),
            pem("PRIVATE KEY", &key.serialize_der()),
        )
    }
}

/// A CA, its file, and a server certificate and key it signed, on disk.
struct Files {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("valence test CA"),
        };
        files.write_server_cert(&files.ca, "ca.pem");
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)writes server.pem and server.key signed by `ca`, and `ca`'s
    /// certificate as `ca_file`.
    fn write_server_cert(&self, ca: &Ca, ca_file: &str) {
        let (cert, key) = ca.issue("valence server", ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(self.path("server.pem"), cert).unwrap();
        std::fs::write(self.path("server.key"), key).unwrap();
        std::fs::write(self.path(ca_file), ca.pem()).unwrap();
    }

    fn tls_config(&self, config: &mut Config) {
        config.tls.cert_path = path_str(&self.path("server.pem"));
        config.tls.key_path = path_str(&self.path("server.key"));
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// An in-process server on loopback with `config`.
struct Server {
    grpc: SocketAddr,
    api: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<bool>>,
    _db: TestDb,
}

impl Server {
    async fn start(db: TestDb, config: Config, ca: &Path) -> Server {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, api_addr) = (grpc.local_addr().unwrap(), api.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(valence_lifecycle_server::serve_with_listeners(
            config,
            grpc,
            api,
            shutdown.clone(),
        ));
        wait_answering_https(api_addr, ca).await;
        Server {
            grpc: grpc_addr,
            api: api_addr,
            shutdown,
            handle,
            _db: db,
        }
    }

    async fn stop(self) -> bool {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server did not stop within 30 s")
            .unwrap()
            .unwrap()
    }
}

fn https_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

async fn wait_answering_https(api: SocketAddr, ca: &Path) {
    let (http, url) = (https_client(ca), format!("https://{api}/health"));
    eventually(
        Duration::from_secs(10),
        &format!("{url} answering"),
        || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
}

fn client_config(grpc: SocketAddr, ca: &Path) -> ClientConfig {
    ClientConfig::new(format!("https://localhost:{}", grpc.port()))
        .with_ca_file(ca)
        .with_token(ADMIN)
}

async fn stats(client: &LifecycleClient) -> Result<(), tonic::Status> {
    client
        .lifecycle()
        .get_stats(GetStatsRequest {})
        .await
        .map(|_| ())
}

async fn grpcurl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (out.status.code(), output_text(&out))
}

#[tokio::test]
async fn grpc_and_rest_speak_tls_and_refuse_plaintext() {
    let files = Files::new();
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = with_tokens(test_config(&db.url));
    files.tls_config(&mut config);
    let ca = files.path("ca.pem");
    let server = Server::start(db, config, &ca).await;

    // The Rust client over TLS, by name and by IP address.
    let client = LifecycleClient::connect(client_config(server.grpc, &ca))
        .await
        .unwrap();
    stats(&client).await.unwrap();
    let by_ip = ClientConfig::new(server.grpc.to_string())
        .with_ca_file(&ca)
        .with_token(ADMIN);
    stats(&LifecycleClient::connect(by_ip).await.unwrap())
        .await
        .unwrap();

    // A plaintext gRPC client gets no answer (the server's TLS alert
    // reads as a broken HTTP/2 frame).
    let plain = ClientConfig::new(server.grpc.to_string()).with_token(ADMIN);
    let refused = stats(&LifecycleClient::connect_lazy(plain).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
    // A client that does not trust the CA is refused too.
    let other = Files::new();
    let distrusting = LifecycleClient::connect(client_config(server.grpc, &other.path("ca.pem")))
        .await
        .map(|_| ());
    let rejected = match distrusting {
        Err(e) => e.to_string(),
        Ok(()) => panic!("a client with another CA connected"),
    };
    assert!(
        rejected.to_lowercase().contains("certificate"),
        "{rejected}"
    );

    // REST over https with the CA; plaintext http is refused.
    let http = https_client(&ca);
    let stats_url = format!("https://{}/stats", server.api);
    let response = http
        .get(&stats_url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let plain_rest = reqwest::Client::new()
        .get(format!("http://{}/stats", server.api))
        .bearer_auth(ADMIN)
        .send()
        .await;
    assert!(plain_rest.is_err(), "{plain_rest:?}");

    // lifecyclectl with --ca-file (and VALENCE_CA_FILE, no scheme: https).
    let ctl = crate::cli::lifecyclectl();
    let endpoint = format!("https://localhost:{}", server.grpc.port());
    let ca_arg = path_str(&ca);
    let (code, stdout, stderr) = crate::cli::run(
        &ctl,
        &[
            "--ca-file",
            &ca_arg,
            "--endpoint",
            &endpoint,
            "--token",
            ADMIN,
            "health",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let bare = server.grpc.to_string();
    let (code, stdout, stderr) = crate::cli::run(
        &ctl,
        &["--endpoint", &bare, "--token", ADMIN, "health"],
        &[("VALENCE_CA_FILE", ca_arg.as_str())],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, _, _) = crate::cli::run(
        &ctl,
        &["--endpoint", &endpoint, "--token", ADMIN, "health"],
        &[],
    )
    .await;
    assert_ne!(code, Some(0), "https:// without a CA file");

    // grpcurl with -cacert; -plaintext fails.
    if tool("grpcurl").is_some() {
        let addr = format!("localhost:{}", server.grpc.port());
        let ca = path_str(&ca);
        let (code, out) = grpcurl(&["-cacert", &ca, &addr, "grpc.health.v1.Health/Check"]).await;
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("SERVING"), "{out}");
        let auth = format!("authorization: Bearer {ADMIN}");
        let (code, out) = grpcurl(&[
            "-cacert",
            &ca,
            "-H",
            &auth,
            &addr,
            "valence.lifecycle.v1.LifecycleService/GetStats",
        ])
        .await;
        assert_eq!(code, Some(0), "{out}");
        let (code, out) = grpcurl(&[
            "-plaintext",
            "-max-time",
            "5",
            &addr,
            "grpc.health.v1.Health/Check",
        ])
        .await;
        assert_ne!(code, Some(0), "plaintext grpcurl was answered: {out}");
    }
    assert!(server.stop().await);
}

#[tokio::test]
async fn client_certificates_are_required_on_grpc_when_a_client_ca_is_set() {
    let files = Files::new();
    let clients = Ca::new("valence client CA");
    std::fs::write(files.path("clients.pem"), clients.pem()).unwrap();
    let (cert, key) = clients.issue("ops", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(files.path("client.pem"), cert).unwrap();
    std::fs::write(files.path("client.key"), key).unwrap();
    let (stranger_cert, stranger_key) = files
        .ca
        .issue("stranger", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(files.path("stranger.pem"), stranger_cert).unwrap();
    std::fs::write(files.path("stranger.key"), stranger_key).unwrap();

    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = with_tokens(test_config(&db.url));
    files.tls_config(&mut config);
    config.tls.client_ca_path = path_str(&files.path("clients.pem"));
    let ca = files.path("ca.pem");
    let server = Server::start(db, config, &ca).await;

    let with_cert = client_config(server.grpc, &ca)
        .with_client_identity(files.path("client.pem"), files.path("client.key"));
    stats(&LifecycleClient::connect(with_cert).await.unwrap())
        .await
        .unwrap();
    for config in [
        client_config(server.grpc, &ca),
        client_config(server.grpc, &ca)
            .with_client_identity(files.path("stranger.pem"), files.path("stranger.key")),
    ] {
        let failed = match LifecycleClient::connect(config).await {
            Err(e) => e.to_string(),
            Ok(client) => match stats(&client).await {
                Err(status) => status.to_string(),
                Ok(()) => panic!("a call without a trusted client certificate was answered"),
            },
        };
        assert!(!failed.is_empty());
    }
    // REST asks for no client certificate.
    let response = https_client(&ca)
        .get(format!("https://{}/stats", server.api))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(server.stop().await);
}

#[test]
fn a_certificate_needs_its_key() {
    let mut config = Config::default();
    config.tls.cert_path = "/etc/valence/server.pem".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("tls.key_path"), "{error}");
    config.tls.key_path = "/etc/valence/server.key".into();
    config.validate().unwrap();
    let mut config = Config::default();
    config.tls.client_ca_path = "/etc/valence/clients.pem".into();
    assert!(config.validate().is_err());
}

/// The real binary with TLS and an admin token, plus `env`; its child,
/// gRPC and REST addresses (on loopback).
fn start_binary(
    database_url: &str,
    files: &Files,
    env: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let (grpc_port, api_port) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_valence-lifecycle"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("GRPC_PORT", grpc_port.to_string())
        .env("API_PORT", api_port.to_string())
        .env("RUST_LOG", "warn")
        .env("VALENCE_LIFECYCLE_RPC__EMBEDDED", "false")
        .env("TLS_CERT_PATH", files.path("server.pem"))
        .env("TLS_KEY_PATH", files.path("server.key"))
        .env(
            "VALENCE_LIFECYCLE_AUTH__TOKENS",
            format!(r#"[{{token = "{ADMIN}", role = "admin"}}]"#),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    (
        child,
        SocketAddr::from(([127, 0, 0, 1], grpc_port)),
        SocketAddr::from(([127, 0, 0, 1], api_port)),
    )
}

async fn terminate(mut child: tokio::process::Child) -> Option<i32> {
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits within 30 s of SIGTERM")
        .unwrap()
        .code()
}

/// With TLS and tokens, the server listens beyond loopback (0.0.0.0, so
/// the test reaches it on 127.0.0.1).
#[tokio::test]
async fn tls_and_tokens_allow_listening_beyond_loopback() {
    let files = Files::new();
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (child, grpc, api) = start_binary(&db.url, &files, &[("BIND_ADDRESS", "0.0.0.0")]);
    let ca = files.path("ca.pem");
    wait_answering_https(api, &ca).await;
    stats(
        &LifecycleClient::connect(client_config(grpc, &ca))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(terminate(child).await, Some(0));
}

/// The real binary: SIGHUP re-reads the certificate; the next connection
/// gets the new one (signed by another CA) while a Subscribe opened on the
/// old certificate keeps receiving events.
#[tokio::test]
async fn a_certificate_rotated_on_sighup_serves_new_connections_and_spares_open_streams() {
    let files = Files::new();
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (child, grpc, api) = start_binary(&db.url, &files, &[]);
    let old_ca = files.path("ca.pem");
    wait_answering_https(api, &old_ca).await;

    let old = LifecycleClient::connect(client_config(grpc, &old_ca))
        .await
        .unwrap();
    let mut stream = old
        .events()
        .subscribe(SubscribeRequest {
            event_types: vec![EventType::RuleCreated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let create = |client: LifecycleClient, id: &'static str| async move {
        let mut seed: SeedRule = serde_json::from_str(SEED_RULE).unwrap();
        seed.id = id.to_string();
        client
            .rules()
            .create_rule(CreateRuleRequest {
                rule: Some(seed.into()),
            })
            .await
            .unwrap();
    };
    let mut next_rule_event = async || loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream is open");
        if let Some(Message::Event(event)) = message.message {
            return event.entity_id;
        }
    };
    create(old.clone(), "before-rotation").await;
    assert_eq!(next_rule_event().await, "before-rotation");

    // Rotate to a certificate of another CA.
    let new_ca = Ca::new("valence rotated CA");
    files.write_server_cert(&new_ca, "new-ca.pem");
    let new_ca = files.path("new-ca.pem");
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap()
        .success());
    eventually(WAIT, "the rotated certificate served", || async {
        https_client(&new_ca)
            .get(format!("https://{api}/health"))
            .send()
            .await
            .is_ok()
    })
    .await;
    // New connections: gRPC too serves the new certificate, not the old.
    let new = LifecycleClient::connect(client_config(grpc, &new_ca))
        .await
        .unwrap();
    stats(&new).await.unwrap();
    assert!(
        LifecycleClient::connect(client_config(grpc, &old_ca))
            .await
            .is_err(),
        "a new connection was served the old certificate"
    );
    // The stream opened before the rotation goes on, on its connection.
    create(new.clone(), "after-rotation").await;
    assert_eq!(next_rule_event().await, "after-rotation");
    create(old.clone(), "on-the-old-connection").await;
    assert_eq!(next_rule_event().await, "on-the-old-connection");

    // A reload that fails (a broken key) keeps the certificate in force.
    std::fs::write(files.path("server.key"), "not a key").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap()
        .success());
    stats(
        &LifecycleClient::connect(client_config(grpc, &new_ca))
            .await
            .unwrap(),
    )
    .await
    .unwrap();

    assert_eq!(terminate(child).await, Some(0));
}
