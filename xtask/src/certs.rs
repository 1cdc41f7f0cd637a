//! `cargo xtask certs`: a development CA and the certificates mutual TLS between an exporter
//! and its importers needs. For development and tests only: the CA key sits beside its
//! certificate, unencrypted.
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask certs --out DIR [--name NAME] [--host HOST]...";

const HELP: &str = "Makes a development CA and certificates for remote VFs' mutual TLS in DIR:
ca.crt and ca.key (the CA), server.crt and server.key (the exporter: its names are localhost,
127.0.0.1, ::1 and every --host), client.crt and client.key (an importer named \"client\").
Run again with --name NAME to add NAME.crt and NAME.key, another importer's certificate from
the same CA (the CA is made only when DIR has none). Keys are written mode 0600.";

/// The CA's name; the CA is made again from its key on later runs (same subject and key, so
/// what it signs chains to the ca.crt already handed out).
const CA_NAME: &str = "accelvirt development CA";

fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn write(path: &Path, data: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A name for a certificate file: letters, digits, '-', '_' and '.', not starting with '.'.
fn file_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "--name {name:?}: use letters, digits, '-', '_' and '.' (it names the files and the importer)"
        ))
    }
}

/// Makes the files; returns the paths written.
pub fn make(out: &Path, name: Option<&str>, hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let mut written = Vec::new();
    let fresh = !ca_key.exists();
    let key = if fresh {
        let k = KeyPair::generate().map_err(|e| e.to_string())?;
        write(&ca_key, &k.serialize_pem(), true)?;
        written.push(ca_key.clone());
        k
    } else {
        let pem =
            std::fs::read_to_string(&ca_key).map_err(|e| format!("{}: {e}", ca_key.display()))?;
        KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", ca_key.display()))?
    };
    let ca = ca_params()?.self_signed(&key).map_err(|e| e.to_string())?;
    if fresh {
        write(&ca_crt, &ca.pem(), false)?;
        written.push(ca_crt.clone());
    }
    let leaf = |file: &str, names: Vec<String>, usage| -> Result<Vec<PathBuf>, String> {
        let mut p = CertificateParams::new(names.clone()).map_err(|e| e.to_string())?;
        p.distinguished_name
            .push(DnType::CommonName, names[0].clone());
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let k = KeyPair::generate().map_err(|e| e.to_string())?;
        let c = p.signed_by(&k, &ca, &key).map_err(|e| e.to_string())?;
        let (crt, kf) = (
            out.join(format!("{file}.crt")),
            out.join(format!("{file}.key")),
        );
        write(&crt, &c.pem(), false)?;
        write(&kf, &k.serialize_pem(), true)?;
        Ok(vec![crt, kf])
    };
    match name {
        Some(n) => {
            let n = file_name(n)?;
            if matches!(n, "ca" | "server") {
                return Err(format!("--name {n}: that name is the CA's or the server's"));
            }
            written.extend(leaf(
                n,
                vec![n.to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?);
        }
        None => {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            names.extend(hosts.iter().cloned());
            written.extend(leaf("server", names, ExtendedKeyUsagePurpose::ServerAuth)?);
            written.extend(leaf(
                "client",
                vec!["client".into()],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?);
        }
    }
    Ok(written)
}

/// `cargo xtask certs ARGS`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut out = None;
    let mut name = None;
    let mut hosts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--name" => name = Some(value("--name")?),
            "--host" => hosts.push(value("--host")?),
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let out = out.ok_or_else(|| format!("--out DIR is required\n{USAGE}"))?;
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| root.to_path_buf())
            .join(out)
    };
    for p in make(&out, name.as_deref(), &hosts)? {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files a first and a second run make, chaining to one CA: verified with rustls'
    /// own verifier (the peer that will judge them), as a server and as clients.
    #[test]
    fn certificates_chain_to_one_ca_across_runs() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        make(d, None, &["exporter.example".into()]).unwrap();
        make(d, Some("tenant-b"), &[]).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "client.crt",
            "client.key",
        ] {
            assert!(d.join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("tenant-b.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = CertificateDer::from_pem_file(d.join("ca.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let roots = std::sync::Arc::new(roots);
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let now = UnixTime::now();
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let cert = CertificateDer::from_pem_file(d.join("server.crt")).unwrap();
        for host in ["localhost", "127.0.0.1", "exporter.example"] {
            server
                .verify_server_cert(&cert, &[], &ServerName::try_from(host).unwrap(), &[], now)
                .unwrap_or_else(|e| panic!("server for {host}: {e}"));
        }
        assert!(server
            .verify_server_cert(
                &cert,
                &[],
                &ServerName::try_from("other.example").unwrap(),
                &[],
                now
            )
            .is_err());
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        for f in ["client.crt", "tenant-b.crt"] {
            let c = CertificateDer::from_pem_file(d.join(f)).unwrap();
            clients
                .verify_client_cert(&c, &[], now)
                .unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        // A server certificate is no client certificate.
        let s = CertificateDer::from_pem_file(d.join("server.crt")).unwrap();
        assert!(clients.verify_client_cert(&s, &[], now).is_err());
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", "", ".hidden", "server", "ca"] {
            assert!(make(tmp.path(), Some(bad), &[]).is_err(), "{bad:?}");
        }
    }
}
