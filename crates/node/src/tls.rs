//! Optional TLS (rustls) for the API: the validator serves HTTPS with a certificate issued by the
//! network's CA (`medledger init --tls` makes a local CA and each validator's certificate), and
//! its own calls to peers (forwarding, status polls, state sync) trust that CA only.
//!
//! TLS protects request metadata and the transport; the contents were already end-to-end
//! encrypted and every read signed (RFC 9421), so a network without TLS leaks no plaintext.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A validator's TLS files (paths relative to the validator's folder, or absolute).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The validator's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The network CA's certificate (PEM), trusted for peers.
    pub ca: PathBuf,
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 1024;

/// The CA this process trusts for its calls to peers (set once at start when TLS is on).
static PEER_CA: OnceLock<reqwest::Certificate> = OnceLock::new();

/// An HTTP client for calls to peers: trusts the network CA when TLS is on.
pub fn peer_client() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match PEER_CA.get() {
        Some(ca) => builder.tls_certs_only([ca.clone()]),
        None => builder,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads the files, remembers the CA for peer calls, and makes the server configuration.
pub fn server_config(files: &TlsFiles, base: &std::path::Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let path = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path(&files.cert))
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(path(&files.key)).map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
    let ca = std::fs::read(path(&files.ca)).map_err(|e| anyhow::anyhow!("{}: {e}", files.ca.display()))?;
    let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| anyhow::anyhow!("{}: {e}", files.ca.display()))?;
    let _ = PEER_CA.set(ca);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The address of an API client (what the rate limit keys on).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, ApiListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Self {
        *stream.remote_addr()
    }
}

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The API's listener: plain TCP, or TCP with TLS handshakes done off the accept path (a slow
/// client cannot hold up the others).
pub struct ApiListener {
    local: SocketAddr,
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls(tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>),
}

impl ApiListener {
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let Some(config) = tls else { return Ok(ApiListener { local, inner: Inner::Plain(listener) }) };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = TcpListener::accept(&listener).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        Ok(ApiListener { local, inner: Inner::Tls(rx) })
    }
}

impl Listener for ApiListener {
    type Io = Box<dyn Io>;
    type Addr = ClientAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Inner::Plain(listener) => {
                // axum's accept for TcpListener, which waits out transient errors.
                let (stream, addr) = Listener::accept(listener).await;
                (Box::new(stream), ClientAddr(addr))
            }
            Inner::Tls(rx) => match rx.recv().await {
                Some((stream, addr)) => (Box::new(stream), ClientAddr(addr)),
                // The accept task never ends while the listener lives.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ClientAddr(self.local))
    }
}
