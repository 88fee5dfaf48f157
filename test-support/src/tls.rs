//! The HTTPS mode of the loopback hosts: a CA and a server certificate for
//! `127.0.0.1`, `::1` and `localhost`, generated anew for every host, so
//! tests see exactly what a private or corporate CA looks like to a client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A host name only [`crate::proxy::ForwardProxy`] resolves (to 127.0.0.1):
/// a request that reaches it went through the proxy.
pub const PROXIED_HOST: &str = "openwrk.test";

/// A CA (its PEM written to a file for `--ca-bundle`) and a server config.
pub struct TestCa {
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn generate() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "openwrk test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("server key");
        // `openwrk.test` resolves nowhere: only the test proxy maps it to loopback.
        let mut params =
            CertificateParams::new(vec!["localhost".into(), PROXIED_HOST.into()]).expect("params");
        params.subject_alt_names.extend([
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::IpAddress("::1".parse().unwrap()),
        ]);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                    .expect("server key DER"),
            )
            .expect("server config");
        TestCa {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// Writes the CA certificate to `dir/ca.pem` (for `--ca-bundle` / `OPENWRK_CA_BUNDLE`).
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    /// What the server thread needs to accept TLS connections.
    pub fn listener_factory(&self) -> TlsServer {
        TlsServer(self.server.clone())
    }
}

/// The server side of a [`TestCa`], sendable to the host's thread.
pub struct TlsServer(Arc<rustls::ServerConfig>);

impl TlsServer {
    pub fn listener(&self, tcp: TcpListener) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(self.0.clone()),
        }
    }
}

/// TLS on top of a TCP listener, for `axum::serve`. A failed handshake (a
/// client that does not trust the CA) drops that connection only.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
