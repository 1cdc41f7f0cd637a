//! Remote VFs between two network namespaces made here (as root): `accel-remote export` in
//! one, `accel-remote import` in the other, a veth pair between them, and development
//! certificates made with `cargo xtask certs` as a user makes them.
use crate::{bin, root, Sim};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long anything here is waited for.
pub const T: Duration = Duration::from_secs(20);

/// Development certificates (`cargo xtask certs`, as a user makes them): the server's name
/// covers every test's exporter address; `client` and `other` are importers; `stranger` is
/// an importer from another CA.
pub fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("accelvirt-remote-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.to_str().unwrap().to_string();
        let mut first = vec!["certs".to_string(), "--out".into(), out.clone()];
        for n in 1..=15 {
            first.extend(["--host".to_string(), format!("10.77.{n}.1")]);
        }
        xtask(&first);
        xtask(&[
            "certs".into(),
            "--out".into(),
            out.clone(),
            "--name".into(),
            "other".into(),
        ]);
        let stranger = dir.join("stranger");
        xtask(&[
            "certs".into(),
            "--out".into(),
            stranger.to_str().unwrap().into(),
        ]);
        dir
    })
}

fn xtask(args: &[String]) {
    let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .arg("xtask")
        .args(args)
        .output()
        .expect("cargo xtask");
    assert!(
        o.status.success(),
        "xtask {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two network namespaces joined by a veth pair: "a" (10.77.N.1, the exporter's host) and
/// "b" (10.77.N.2, the importer's). Removed when dropped.
#[derive(Debug)]
pub struct Net {
    /// The exporter's namespace.
    pub a: String,
    /// The importer's namespace.
    pub b: String,
    /// Which subnet (10.77.N.0/24).
    pub n: u8,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Net {
    pub fn new(n: u8) -> Net {
        let p = std::process::id();
        let (a, b) = (format!("avr{p}-{n}a"), format!("avr{p}-{n}b"));
        let net = Net { a, b, n };
        ip(&["netns", "add", &net.a]);
        ip(&["netns", "add", &net.b]);
        let (va, vb) = (net.dev_a(), net.dev_b());
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &net.a]);
        ip(&["link", "set", &vb, "netns", &net.b]);
        ip(&[
            "-n",
            &net.a,
            "addr",
            "add",
            &format!("10.77.{n}.1/24"),
            "dev",
            &va,
        ]);
        ip(&[
            "-n",
            &net.b,
            "addr",
            "add",
            &format!("10.77.{n}.2/24"),
            "dev",
            &vb,
        ]);
        for (ns, d) in [(&net.a, &va), (&net.b, &vb)] {
            ip(&["-n", ns, "link", "set", d, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn dev_a(&self) -> String {
        format!("avr{}x{}", std::process::id() % 100_000, self.n)
    }

    pub fn dev_b(&self) -> String {
        format!("avr{}y{}", std::process::id() % 100_000, self.n)
    }

    pub fn addr(&self) -> String {
        format!("10.77.{}.1:7700", self.n)
    }

    /// The importer's end of the wire down or up (the cable pulled, put back).
    pub fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.b,
            "link",
            "set",
            &self.dev_b(),
            if up { "up" } else { "down" },
        ]);
    }

    pub fn exec(&self, ns: &str, prog: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(prog);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).output();
    }
}

/// A process killed when dropped, its output in a file.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(mut c: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = c
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends it `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Waits for it to exit by itself.
    pub fn exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device with `n` VFs.
pub fn device(n: u16) -> Sim {
    let sim = Sim::start();
    let o = sim.ctl(&["create-vf", "--count", &n.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sim
}

pub fn vf_socket(sim: &Sim, v: u16) -> PathBuf {
    vfio_user_wire::vf_socket_path(&sim.sock, v)
}

/// `accel-remote export` in namespace a, serving `vfs` of `sim`.
pub fn exporter(net: &Net, sim: &Sim, vfs: &[u16], allow: &[&str], extra: &[&str]) -> Proc {
    let c = certs();
    let mut cmd = net.exec(&net.a, &bin("accel-remote"));
    cmd.arg("export");
    for v in vfs {
        cmd.arg("--vf").arg(vf_socket(sim, *v));
    }
    cmd.args(["--listen", &net.addr()])
        .arg("--cert")
        .arg(c.join("server.crt"))
        .arg("--key")
        .arg(c.join("server.key"))
        .arg("--ca")
        .arg(c.join("ca.crt"));
    for a in allow {
        cmd.args(["--allow", a]);
    }
    cmd.args(extra);
    let p = Proc::spawn(cmd, sim.dir.path().join(format!("export-{}.log", net.n)));
    let t = Instant::now();
    while !p.log().contains("exporting on") {
        assert!(t.elapsed() < T, "the exporter did not start: {}", p.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// `accel-remote import` in namespace b as `name` (a certificate in `dir`), serving VF `vf`
/// at `socket`.
pub fn importer(net: &Net, dir: &Path, name: &str, vf: u32, socket: &Path, extra: &[&str]) -> Proc {
    let mut cmd = net.exec(&net.b, &bin("accel-remote"));
    cmd.args(["import", "--connect", &net.addr(), "--vf", &vf.to_string()])
        .arg("--socket")
        .arg(socket)
        .arg("--cert")
        .arg(dir.join(format!("{name}.crt")))
        .arg("--key")
        .arg(dir.join(format!("{name}.key")))
        .arg("--ca")
        .arg(dir.join("ca.crt"))
        .arg("--runtime-dir")
        .arg(socket.parent().unwrap())
        .args(extra);
    let log = socket.with_extension("log");
    Proc::spawn(cmd, log)
}

/// An importer that must come up.
pub fn imported(net: &Net, sim: &Sim, vf: u32, extra: &[&str]) -> (Proc, PathBuf) {
    let socket = sim.dir.path().join(format!("remote{}-{vf}.sock", net.n));
    let mut p = importer(net, certs(), "client", vf, &socket, extra);
    let t = Instant::now();
    while !p.log().contains("served at") {
        assert!(
            p.exit(Duration::ZERO).is_none(),
            "the importer exited: {}",
            p.log()
        );
        assert!(t.elapsed() < T, "the importer did not start: {}", p.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, socket)
}
