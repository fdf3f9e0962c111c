//! TLS on the listeners (`[tls]`): the certificates in force, swapped on
//! SIGHUP, and the handshake of each admitted connection.
//!
//! Each new connection reads the [`ServerConfig`] in force when it is
//! accepted; a reload replaces it for the next connections only, so open
//! connections and their streams keep the session they negotiated.

use std::{
    io,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{bail, Context as _};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tonic::transport::server::Connected;

use super::{io::ConnInfo, Guarded, Slot};
use crate::config::TlsConfig;

/// Which listener a handshake is for: what it offers in ALPN, and whether
/// it asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    /// gRPC: `h2`; client certificates when `tls.client_ca_path` is set.
    Grpc,
    /// REST: `http/1.1`; no client certificate.
    Rest,
}

/// The certificates in force for both listeners.
pub(crate) struct Tls {
    paths: TlsConfig,
    grpc: RwLock<Arc<ServerConfig>>,
    rest: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("paths", &self.paths).finish()
    }
}

impl Tls {
    /// Reads the configured files; `None` when TLS is off.
    pub(crate) fn load(config: &TlsConfig) -> anyhow::Result<Option<Arc<Tls>>> {
        if !config.enabled() {
            return Ok(None);
        }
        let (grpc, rest) = build(config)?;
        Ok(Some(Arc::new(Tls {
            paths: config.clone(),
            grpc: RwLock::new(grpc),
            rest: RwLock::new(rest),
        })))
    }

    /// Reads the files again (SIGHUP); on error the certificates in force
    /// stay. New connections get the new ones, open ones keep theirs.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let (grpc, rest) = build(&self.paths)?;
        *self.grpc.write().expect("tls config") = grpc;
        *self.rest.write().expect("tls config") = rest;
        Ok(())
    }

    /// Whether gRPC clients must present a certificate.
    pub(crate) fn requires_client_certificates(&self) -> bool {
        !self.paths.client_ca_path.is_empty()
    }

    fn acceptor(&self, face: Face) -> TlsAcceptor {
        let config = match face {
            Face::Grpc => &self.grpc,
            Face::Rest => &self.rest,
        };
        TlsAcceptor::from(config.read().expect("tls config").clone())
    }
}

/// What a listener's connections go through before HTTP: nothing, or a
/// TLS handshake with the certificates in force.
#[derive(Clone)]
pub(crate) struct Handshake {
    tls: Option<(Arc<Tls>, Face)>,
}

impl Handshake {
    /// Plaintext.
    pub(crate) fn none() -> Self {
        Handshake { tls: None }
    }

    /// Whether connections go straight to HTTP.
    pub(super) fn is_none(&self) -> bool {
        self.tls.is_none()
    }

    /// TLS on `face` when `tls` is configured.
    pub(crate) fn new(tls: Option<&Arc<Tls>>, face: Face) -> Self {
        Handshake {
            tls: tls.map(|tls| (tls.clone(), face)),
        }
    }

    /// `io` ready for HTTP; `None` when the handshake failed or took
    /// longer than `timeout` (logged at debug: scanners and plaintext
    /// clients are common).
    pub(super) async fn accept(
        &self,
        io: Guarded<TcpStream>,
        timeout: Duration,
        listener: &'static str,
    ) -> Option<Conn> {
        let Some((tls, face)) = &self.tls else {
            return Some(Conn::Plain(io));
        };
        let acceptor = tls.acceptor(*face);
        match tokio::time::timeout(timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(Conn::Tls(Box::new(stream))),
            Ok(Err(e)) => {
                tracing::debug!(listener, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(listener, "TLS handshake timed out");
                None
            }
        }
    }
}

/// The rustls configs of the gRPC and REST listeners, from the files.
fn build(paths: &TlsConfig) -> anyhow::Result<(Arc<ServerConfig>, Arc<ServerConfig>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&paths.cert_path, "tls.cert_path (TLS_CERT_PATH)")?;
    let key = PrivateKeyDer::from_pem_file(&paths.key_path)
        .map_err(pem_error)
        .with_context(|| {
            format!(
                "reading a private key from {} (tls.key_path / TLS_KEY_PATH)",
                paths.key_path
            )
        })?;
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")
    };
    let grpc_builder = if paths.client_ca_path.is_empty() {
        builder()?.with_no_client_auth()
    } else {
        builder()?
            .with_client_cert_verifier(client_verifier(&paths.client_ca_path, provider.clone())?)
    };
    let mut grpc = grpc_builder
        .with_single_cert(certs.clone(), key.clone_key())
        .context("the TLS certificate and key (tls.cert_path, tls.key_path) do not fit")?;
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut rest = builder()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key (tls.cert_path, tls.key_path) do not fit")?;
    rest.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(grpc), Arc::new(rest)))
}

fn client_verifier(
    path: &str,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "tls.client_ca_path (TLS_CLIENT_CA_PATH)")? {
        roots
            .add(cert)
            .with_context(|| format!("a CA certificate in {path} (tls.client_ca_path)"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("the client CA (tls.client_ca_path)")
}

fn read_certs(path: &str, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>().map_err(pem_error))
        .with_context(|| format!("reading certificates from {path} ({key})"))?;
    if certs.is_empty() {
        bail!("no PEM certificate in {path} ({key})");
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// An admitted connection, over TLS or not.
pub(crate) enum Conn {
    /// Plaintext.
    Plain(Guarded<TcpStream>),
    /// After a TLS handshake.
    Tls(Box<TlsStream<Guarded<TcpStream>>>),
}

impl Conn {
    /// The gate's record of this connection.
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        match self {
            Conn::Plain(io) => io.slot(),
            Conn::Tls(tls) => tls.get_ref().0.slot(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            slot: self.slot().clone(),
        }
    }
}
