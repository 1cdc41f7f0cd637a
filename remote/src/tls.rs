//! Mutual TLS for remote VFs: both sides present a certificate their peer's CA signed, and the
//! exporter maps the importer's identity (its certificate's first DNS name, which the chain
//! check has vouched for) to the VFs it may have. Configurations come from PEM files, as
//! `cargo xtask certs` writes them.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be made. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the material (a key that does not match its certificate, say).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The CA file's certificates could not make a verifier.
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn file_err(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads `cert` (PEM, the certificate first, then any intermediates) and `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(cert, e))?;
        if chain.is_empty() {
            return Err(file_err(cert, "no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
        Ok(Identity { chain, key })
    }
}

/// The CAs whose certificates are accepted, from a PEM file.
pub fn load_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
        roots
            .add(c.map_err(|e| file_err(ca, e))?)
            .map_err(|e| file_err(ca, e))?;
    }
    if roots.is_empty() {
        return Err(file_err(ca, "no CA certificate in it"));
    }
    Ok(roots)
}

/// ring, not aws-lc-rs: it builds with the C compiler alone (aws-lc wants CMake and more),
/// which every machine that builds this has. rustls marks it deprecated for lacking
/// post-quantum key exchange; TLS 1.3 with X25519 is what both ends get.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The exporter's side: its identity, and importers must present a certificate `roots`
/// vouch for (no certificate, or another CA's, and the handshake fails).
pub fn server_config(id: Identity, roots: RootCertStore) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain, id.key)?;
    Ok(Arc::new(c))
}

/// The importer's side: its identity, and the exporter's certificate must chain to `roots`
/// and name the host dialled.
pub fn client_config(id: Identity, roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(id.chain, id.key)?;
    Ok(Arc::new(c))
}

/// The identity of a peer whose certificate the handshake verified: its first DNS name
/// (`cargo xtask certs --name NAME` gives a client certificate the name NAME). None if it
/// presented no certificate or it names no host.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let name = cert.valid_dns_names().next()?.to_string();
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testcerts::{ca, leaf, roots, Ca};
    use std::io::{Read, Write};

    /// One handshake over a socket pair, both ends driven here; the server's view of the
    /// client's identity, or the error either side hit.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        host: &str,
    ) -> Result<Option<String>, String> {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let host = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
        // The client's end stays open until the server is done (it still writes its session
        // tickets after reading), so it is handed back rather than dropped in the thread.
        let t = std::thread::spawn(move || {
            let r = (|| -> Result<(), String> {
                let mut c =
                    rustls::ClientConnection::new(client, host).map_err(|e| e.to_string())?;
                let mut sock = &b;
                let mut s = rustls::Stream::new(&mut c, &mut sock);
                s.write_all(b"hello").map_err(|e| e.to_string())?;
                s.flush().map_err(|e| e.to_string())
            })();
            (r, b)
        });
        let mut conn = rustls::ServerConnection::new(server).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        let mut sock = &a;
        let got = rustls::Stream::new(&mut conn, &mut sock).read_exact(&mut buf);
        if got.is_err() {
            // The client may be waiting for the server's next flight: let it see the end.
            let _ = a.shutdown(std::net::Shutdown::Both);
        }
        let (sent, _b) = t.join().unwrap();
        match (got, sent) {
            (Ok(()), Ok(())) => Ok(peer_identity(&conn)),
            (got, sent) => Err(format!("server: {got:?}; client: {sent:?}")),
        }
    }

    #[test]
    fn mutual_tls_admits_the_cas_certificates_and_names_the_client() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ca1 = ca("accelvirt test CA");
        let server = server_config(
            leaf(dir, &ca1, "exporter.test", true, false),
            roots(dir, &ca1, "ca.crt"),
        )
        .unwrap();
        let client = client_config(
            leaf(dir, &ca1, "tenant-a", false, false),
            roots(dir, &ca1, "ca.crt"),
        )
        .unwrap();
        assert_eq!(
            handshake(server, client, "exporter.test"),
            Ok(Some("tenant-a".into()))
        );
    }

    #[test]
    fn another_cas_expired_or_misnamed_certificates_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (ca1, other) = (ca("accelvirt test CA"), ca("someone else's CA"));
        let server = || {
            server_config(
                leaf(dir, &ca1, "exporter.test", true, false),
                roots(dir, &ca1, "ca.crt"),
            )
            .unwrap()
        };
        let client = |ca: &Ca, expired: bool| {
            client_config(
                leaf(dir, ca, "tenant-b", false, expired),
                roots(dir, &ca1, "ca.crt"),
            )
            .unwrap()
        };
        // A client certificate from another CA.
        let e = handshake(server(), client(&other, false), "exporter.test").unwrap_err();
        assert!(e.contains("UnknownIssuer") || e.contains("unknown"), "{e}");
        // An expired client certificate.
        let e = handshake(server(), client(&ca1, true), "exporter.test").unwrap_err();
        assert!(e.to_lowercase().contains("expired"), "{e}");
        // The exporter's certificate does not name the host dialled.
        let e = handshake(server(), client(&ca1, false), "elsewhere.test").unwrap_err();
        assert!(e.contains("NotValidForName") || e.contains("name"), "{e}");
        // An importer that trusts only another CA refuses the exporter.
        let c = client_config(
            leaf(dir, &ca1, "tenant-c", false, false),
            roots(dir, &other, "other.crt"),
        )
        .unwrap();
        assert!(handshake(server(), c, "exporter.test").is_err());
    }

    #[test]
    fn unreadable_material_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = dir.join("missing.crt");
        let e = Identity::load(&missing, &missing).unwrap_err().to_string();
        assert!(e.contains("missing.crt"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(load_roots(&empty)
            .unwrap_err()
            .to_string()
            .contains("no CA certificate"));
    }
}
