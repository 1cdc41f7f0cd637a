//! Kubernetes Events about the node: why a profile change was refused, and when one was
//! carried out or failed, where `kubectl describe node` and `kubectl get events` show them.
//!
//! The API server is reached as client-go's in-cluster configuration reaches it: its address
//! from `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the pod's service account token
//! (read again for every event: the kubelet rotates it) and CA. An event is a core/v1 Event
//! whose involved object is the Node, in namespace `default` (as the kubelet writes its node
//! events). Posting happens on a thread of its own, so a slow or absent API server never
//! holds up the device list; at most [`QUEUE`] events wait, and each is tried [`ATTEMPTS`]
//! times. Off a cluster, or without a node name, events are only logged.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a pod finds its service account's token and the cluster's CA.
pub const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The component named as the events' source.
pub const COMPONENT: &str = "accel-device-plugin";
/// Events waiting to be posted; more are logged and dropped.
pub const QUEUE: usize = 32;
/// Tries per event (a second and then two apart).
pub const ATTEMPTS: u32 = 3;
/// Connect, write and read timeout of one try.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The API server's answer is read up to this much (its error Status is far smaller).
const ANSWER_MAX: u64 = 64 * 1024;
/// Kubernetes' limit on an event's note, in bytes; longer messages are cut.
const MESSAGE_MAX: usize = 1024;

/// Why an event could not be posted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token or CA file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// No connection to the API server.
    #[error("API server {addr}: {source}")]
    Io {
        /// host:port.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// TLS could not be set up (a host that is no valid server name, say).
    #[error("TLS: {0}")]
    Tls(String),
    /// The API server refused the event.
    #[error("API server answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The start of its answer (a Status object, which says why).
        body: String,
    },
    /// The answer was not HTTP.
    #[error("API server's answer is not HTTP: {0:?}")]
    Answer(String),
}

/// Normal or Warning, as Kubernetes types events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something went as asked.
    Normal,
    /// Something a person should look at.
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub kind: Kind,
    /// A short CamelCase reason (`ProfileChangeRefused`).
    pub reason: &'static str,
    /// What happened, for a person.
    pub message: String,
}

/// The API server of the cluster the plugin runs in.
#[derive(Debug, Clone)]
pub struct ApiServer {
    host: String,
    port: u16,
    token: PathBuf,
    ca: PathBuf,
}

impl ApiServer {
    /// The API server as a pod sees it: `KUBERNETES_SERVICE_HOST` and `_PORT`, and the token
    /// and `ca.crt` in `service_account`. None where those variables are not set (not in a
    /// cluster).
    pub fn in_cluster(service_account: &Path) -> Option<ApiServer> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()?
            .parse()
            .ok()?;
        Some(ApiServer {
            host,
            port,
            token: service_account.join("token"),
            ca: service_account.join("ca.crt"),
        })
    }

    /// `host:port`, an IPv6 address in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let file = |why: String| Error::File {
            path: self.ca.clone(),
            why,
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).map_err(|e| file(e.to_string()))? {
            roots
                .add(c.map_err(|e| file(e.to_string()))?)
                .map_err(|e| file(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(file("no CA certificate in it".into()));
        }
        // ring, as the remote VFs' TLS: it builds with the C compiler alone.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(c))
    }

    /// POSTs `body` (JSON) to `path`; Ok when the server created it.
    pub fn post(&self, path: &str, body: &[u8]) -> Result<(), Error> {
        let token = std::fs::read_to_string(&self.token).map_err(|e| Error::File {
            path: self.token.clone(),
            why: e.to_string(),
        })?;
        let token = token.trim();
        // It goes into a header line: nothing but a bearer token's characters.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::File {
                path: self.token.clone(),
                why: "not a bearer token (empty, or not printable ASCII)".into(),
            });
        }
        let config = self.tls()?;
        let addr = self.authority();
        let io = |source| Error::Io {
            addr: addr.clone(),
            source,
        };
        let sock_addr = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        let sock = TcpStream::connect_timeout(&sock_addr, TIMEOUT).map_err(io)?;
        sock.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        sock.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        // The certificate must name the host dialled, an IP address as the service's is.
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| Error::Tls(e.to_string()))?;
        let conn =
            rustls::ClientConnection::new(config, name).map_err(|e| Error::Tls(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n\
             User-Agent: {COMPONENT}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        tls.write_all(head.as_bytes()).map_err(io)?;
        tls.write_all(body).map_err(io)?;
        tls.flush().map_err(io)?;
        // `Connection: close`: the answer ends where the stream does.
        let mut answer = Vec::new();
        match Read::by_ref(&mut tls)
            .take(ANSWER_MAX)
            .read_to_end(&mut answer)
        {
            Ok(_) => {}
            // A server that closes without close_notify has still answered in full.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(io(e)),
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| text.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| Error::Answer(text.chars().take(80).collect()))?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .chars()
            .take(300)
            .collect();
        Err(Error::Refused { status, body })
    }
}

/// The core/v1 Event for `e` about node `node` at `secs` since the epoch.
pub fn event_object(node: &str, e: &Event, secs: u64) -> serde_json::Value {
    let t = host_driver::time::rfc3339(secs);
    let mut cut = e.message.len().min(MESSAGE_MAX);
    while !e.message.is_char_boundary(cut) {
        cut -= 1;
    }
    let message = &e.message[..cut];
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "generateName": format!("{node}."), "namespace": "default" },
        // The kubelet names a node by its name in the uid field of its node events too, so
        // `kubectl describe node` finds them.
        "involvedObject": { "apiVersion": "v1", "kind": "Node", "name": node, "uid": node },
        "reason": e.reason,
        "message": message,
        "type": e.kind.as_str(),
        "source": { "component": COMPONENT, "host": node },
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
    })
}

/// Where events go: the log always, and the API server when the plugin runs in a cluster.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Option<mpsc::SyncSender<Event>>,
}

impl Recorder {
    /// Logs only.
    pub fn log_only() -> Recorder {
        Recorder { tx: None }
    }

    /// Posts events about `node` to `api` from a thread of its own (which ends when the
    /// last clone of the recorder is dropped).
    pub fn new(api: ApiServer, node: String) -> Recorder {
        let (tx, rx) = mpsc::sync_channel::<Event>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("k8s-events".into())
            .spawn(move || {
                for e in rx {
                    post(&api, &node, &e);
                }
            });
        match spawned {
            Ok(_) => Recorder { tx: Some(tx) },
            Err(e) => {
                crate::log!("no thread for Kubernetes events ({e}): they are only logged");
                Recorder::log_only()
            }
        }
    }

    /// Logs `e` and queues it for the API server.
    pub fn record(&self, kind: Kind, reason: &'static str, message: String) {
        crate::log!("event: {reason} {message}");
        if let Some(tx) = &self.tx {
            let e = Event {
                kind,
                reason,
                message,
            };
            if let Err(mpsc::TrySendError::Full(e)) = tx.try_send(e) {
                crate::log!("event {} not posted: {QUEUE} events wait already", e.reason);
            }
        }
    }
}

fn post(api: &ApiServer, node: &str, e: &Event) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = event_object(node, e, secs).to_string();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(u64::from(attempt)));
        }
        match api.post("/api/v1/namespaces/default/events", body.as_bytes()) {
            Ok(()) => return,
            Err(r) => {
                let again = worth_retrying(&r);
                last = Some(r);
                if !again {
                    break;
                }
            }
        }
    }
    if let Some(r) = last {
        crate::log!("event {} not posted: {r}", e.reason);
    }
}

/// Whether a failed post may succeed if made again: a server's "no" gets the same answer,
/// except "too many requests" (API priority and fairness), which asks for exactly that.
fn worth_retrying(e: &Error) -> bool {
    match e {
        Error::Refused { status, .. } => !(400..500).contains(status) || *status == 429,
        Error::Tls(_) => false,
        // A projected token is swapped in place now and then; a connection may drop.
        Error::File { .. } | Error::Io { .. } | Error::Answer(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_servers_lasting_no_is_final() {
        let refused = |status| Error::Refused {
            status,
            body: String::new(),
        };
        assert!(!worth_retrying(&refused(403)));
        assert!(!worth_retrying(&refused(422)));
        assert!(worth_retrying(&refused(429)));
        assert!(worth_retrying(&refused(503)));
    }

    #[test]
    fn the_event_is_about_the_node_in_default() {
        let e = Event {
            kind: Kind::Warning,
            reason: "ProfileChangeRefused",
            message: "x".repeat(2000),
        };
        let o = event_object("node-a", &e, 1_796_400_061);
        // Cut in bytes, on a character's boundary (a re-carve's message has "×" in it).
        let wide = Event {
            message: "×".repeat(700),
            ..e.clone()
        };
        let m = event_object("node-a", &wide, 0)["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!((m.len(), m.chars().count()), (1024, 512));
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generateName"], "node-a.");
        assert_eq!(o["involvedObject"]["kind"], "Node");
        assert_eq!(o["involvedObject"]["name"], "node-a");
        assert_eq!(o["type"], "Warning");
        assert_eq!(o["firstTimestamp"], "2026-12-04T16:01:01Z");
        assert_eq!(o["message"].as_str().unwrap().len(), MESSAGE_MAX);
    }

    #[test]
    fn an_ipv6_service_address_is_bracketed() {
        let a = ApiServer {
            host: "fd00::1".into(),
            port: 443,
            token: PathBuf::new(),
            ca: PathBuf::new(),
        };
        assert_eq!(a.authority(), "[fd00::1]:443");
    }

    #[test]
    fn missing_material_is_named() {
        let d = tempfile::tempdir().unwrap();
        let a = ApiServer {
            host: "127.0.0.1".into(),
            port: 1,
            token: d.path().join("token"),
            ca: d.path().join("ca.crt"),
        };
        let e = a.post("/x", b"{}").unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        std::fs::write(d.path().join("token"), "t\r\nX-Injected: 1\n").unwrap();
        let e = a.post("/x", b"{}").unwrap_err().to_string();
        assert!(e.contains("not a bearer token"), "{e}");
        std::fs::write(d.path().join("token"), "t\n").unwrap();
        std::fs::write(d.path().join("ca.crt"), "not a certificate").unwrap();
        let e = a.post("/x", b"{}").unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
    }
}
