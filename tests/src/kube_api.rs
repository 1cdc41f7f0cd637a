//! A Kubernetes API server for the device plugin's events: HTTPS on 127.0.0.1 with a
//! certificate for that address from a CA made on the spot, a service account directory
//! (token and `ca.crt`) as a pod has, and every request it was sent kept for the test to
//! read. It answers each POST as the real one answers a created object (201 and the object).
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The token the service account directory holds.
pub const TOKEN: &str = "accelvirt-test-token";

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`.
    pub method: String,
    /// `/api/v1/namespaces/default/events`.
    pub path: String,
    /// The Authorization header.
    pub authorization: String,
    /// The body, as JSON.
    pub body: serde_json::Value,
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    tmp: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl ApiServer {
    /// Starts one.
    pub fn start() -> ApiServer {
        Self::start_with(false)
    }

    /// Starts one that takes every connection and never says a word on it (a server
    /// stalled, or a black hole on the way to it).
    pub fn stalled() -> ApiServer {
        Self::start_with(true)
    }

    fn start_with(stall: bool) -> ApiServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "test cluster CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        // The service's address, as the API server's certificate names it.
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(tmp.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(tmp.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(tmp.path().join("namespace"), "accelvirt").unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) if stall => held.push(sock),
                    Ok((sock, _)) => {
                        if let Some(req) = serve(&config, sock) {
                            r.lock().unwrap().push(req);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ApiServer {
            tmp,
            port,
            requests,
            stop,
        }
    }

    /// The service account directory a pod would have.
    pub fn service_account(&self) -> &Path {
        self.tmp.path()
    }

    /// The in-cluster environment that leads a client here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), self.port.to_string()),
        ]
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The events posted so far whose reason is `reason`.
    pub fn events(&self, reason: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.body["reason"] == reason)
            .map(|r| r.body)
            .collect()
    }

    /// Waits up to `within` for an event with `reason`; the first.
    pub fn wait_event(&self, reason: &str, within: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            if let Some(e) = self.events(reason).into_iter().next() {
                return e;
            }
            assert!(
                t.elapsed() < within,
                "no {reason} event in {within:?}; requests: {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one request on `sock` and answers it; the request, if one was read whole.
fn serve(config: &Arc<rustls::ServerConfig>, sock: TcpStream) -> Option<Request> {
    sock.set_nonblocking(false).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let conn = rustls::ServerConnection::new(config.clone()).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut rd = BufReader::new(&mut tls);
    let mut line = String::new();
    rd.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut len, mut authorization) = (0usize, String::new());
    loop {
        let mut h = String::new();
        rd.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().ok()?,
            "authorization" => authorization = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    rd.read_exact(&mut body).ok()?;
    drop(rd);
    let answer = String::from_utf8_lossy(&body).into_owned();
    let _ = write!(
        tls,
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Some(Request {
        method,
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

/// The plugin's flags for `api`'s cluster, as node `node`.
pub fn plugin_args(api: &ApiServer, node: &str) -> Vec<PathBuf> {
    vec![
        "--service-account".into(),
        api.service_account().to_path_buf(),
        "--node-name".into(),
        node.into(),
    ]
}
