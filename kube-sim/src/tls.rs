//! HTTPS for the simulator (`--tls`): a CA and a server certificate generated at start, and the
//! listener that hands the router TLS connections.
//!
//! The CA is new on every start and its key never leaves the process: clients trust it through
//! the written kubeconfig's `certificate-authority-data` or the PEM file `--ca-out` writes, as
//! they trust a cluster's CA. The server certificate names what in-cluster clients dial
//! (`kubernetes.default.svc` and its longer forms, `KUBERNETES_SERVICE_HOST`'s address) and
//! loopback, so client-go's and kube-rs's hostname checks pass unchanged.
//!
//! Only HTTP/1.1 is offered (ALPN `http/1.1`): the router's upgrades (exec, attach,
//! port-forward over WebSockets, `Upgrade: SPDY/3.1`) are HTTP/1.1 upgrades, and a client that
//! would speak HTTP/2 (kubectl does, when offered) falls back to HTTP/1.1 as it does with any
//! server that does not offer `h2`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// The names every server certificate is valid for, besides the listen address and
/// [`TlsConfig::extra_names`]: loopback, and what a pod's clients dial for the API server.
pub const DEFAULT_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A TLS handshake not done in this long is dropped, so a client that connects and says
/// nothing holds no task for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many finished handshakes may wait for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// How to serve HTTPS (`SimConfig::tls`).
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// DNS names and IP addresses the server certificate is valid for beyond [`DEFAULT_NAMES`]
    /// and the address the simulator listens on. Default: none.
    pub extra_names: Vec<String>,
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A name is neither an IP address nor a valid DNS name.
    #[error("{name:?} cannot be a name in a certificate: {source}")]
    Name {
        /// The name given.
        name: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// Generating a key or signing a certificate failed.
    #[error("generating the {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// rustls refused the generated certificate or its protocol settings.
    #[error("the TLS server configuration: {0}")]
    Server(#[from] rustls::Error),
}

/// The generated CA (its certificate; the key is dropped once the server certificate is
/// signed) and the server configuration presenting the certificate it signed.
pub struct Authority {
    ca_pem: String,
    ca_der: Vec<u8>,
    names: Vec<String>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA, and a server certificate it signs for [`DEFAULT_NAMES`], `listen` (unless it
    /// is unspecified: `0.0.0.0` names nothing a client dials) and `config.extra_names`.
    /// ECDSA P-256 keys; validity rcgen's default (1975 to 4096): the CA lives as long as
    /// the process, which is what bounds it.
    pub fn generate(listen: IpAddr, config: &TlsConfig) -> Result<Authority, TlsError> {
        let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect();
        if !listen.is_unspecified() {
            names.push(listen.to_string());
        }
        names.extend(config.extra_names.iter().cloned());
        names.sort();
        names.dedup();
        // Each name on its own first, so an invalid one is named in the error.
        for name in &names {
            CertificateParams::new(vec![name.clone()]).map_err(|source| TlsError::Name {
                name: name.clone(),
                source,
            })?;
        }

        let ca_key = KeyPair::generate().map_err(|source| TlsError::Generate {
            what: "CA key",
            source,
        })?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "kube-sim CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_certificate = ca
            .self_signed(&ca_key)
            .map_err(|source| TlsError::Generate {
                what: "CA certificate",
                source,
            })?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().map_err(|source| TlsError::Generate {
            what: "server key",
            source,
        })?;
        let mut server =
            CertificateParams::new(names.clone()).map_err(|source| TlsError::Generate {
                what: "server certificate",
                source,
            })?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let server_certificate =
            server
                .signed_by(&server_key, &issuer)
                .map_err(|source| TlsError::Generate {
                    what: "server certificate",
                    source,
                })?;

        // ring explicitly, not the process default: that default is ambiguous (an error) when
        // a build links more than one provider.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![server_certificate.der().clone()];
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Authority {
            ca_pem: ca_certificate.pem(),
            ca_der: ca_certificate.der().to_vec(),
            names,
            server: Arc::new(config),
        })
    }

    /// The CA's certificate, PEM: what a client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's certificate, DER (what `kube::Config::root_cert` takes).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The names and addresses the server certificate is valid for, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Serves TLS on `listener`: connections are accepted and their handshakes run on tasks
    /// of their own (until `shutdown`), and the finished ones are handed to the router.
    pub fn listen(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (accepted, receiver) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept(
            listener,
            TlsAcceptor::from(self.server.clone()),
            accepted,
            shutdown,
        ));
        Ok(TlsListener {
            receiver,
            local_addr,
        })
    }
}

/// Accepts TCP connections and runs each handshake on a task of its own, so a slow or silent
/// client delays nobody else.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            incoming = listener.accept() => match incoming {
                Ok(incoming) => incoming,
                Err(error) => {
                    // Out of descriptors and the like: the same pause axum's own listener takes.
                    tracing::warn!(%error, "accepting a TLS connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // The server has stopped taking connections: this one just closes.
                    let _ = accepted.send((stream, peer)).await;
                }
                // A client that does not trust the CA ends here, as it should: debug, not a warning.
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The TLS connections [`Authority::listen`] accepted, as `axum::serve` takes them.
pub struct TlsListener {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(connection) => connection,
            // The acceptor stopped (shutdown): nothing more comes, and the graceful shutdown
            // that stopped it ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_defaults_the_listen_address_and_the_extra_names() {
        let config = TlsConfig {
            extra_names: vec![
                "api.sim.test".to_owned(),
                "10.0.0.1".to_owned(),
                "localhost".to_owned(),
            ],
        };
        let authority = Authority::generate("127.0.0.2".parse().unwrap(), &config).unwrap();
        for name in DEFAULT_NAMES
            .iter()
            .copied()
            .chain(["127.0.0.2", "api.sim.test", "10.0.0.1"])
        {
            assert!(
                authority.names().iter().any(|n| n == name),
                "{name} missing from {:?}",
                authority.names()
            );
        }
        assert_eq!(
            authority
                .names()
                .iter()
                .filter(|n| *n == "localhost")
                .count(),
            1,
            "names once each"
        );
        assert!(
            authority
                .ca_pem()
                .starts_with("-----BEGIN CERTIFICATE-----"),
            "{}",
            authority.ca_pem()
        );
        let unspecified =
            Authority::generate("0.0.0.0".parse().unwrap(), &TlsConfig::default()).unwrap();
        assert!(
            !unspecified.names().iter().any(|n| n == "0.0.0.0"),
            "{:?}",
            unspecified.names()
        );
    }

    #[test]
    fn refuses_a_name_no_certificate_can_hold() {
        let config = TlsConfig {
            extra_names: vec!["bücher.test".to_owned()],
        };
        match Authority::generate("127.0.0.1".parse().unwrap(), &config) {
            Err(TlsError::Name { name, .. }) => assert_eq!(name, "bücher.test"),
            other => panic!("expected a name error, got {other:?}"),
        }
    }
}
