//! A kubelet for the device plugin's tests, built from the same `api.proto`: it serves the
//! registration socket and the pod resources API, and for each plugin that registers it
//! does what the kubelet's device manager does: asks its options, and follows its
//! ListAndWatch stream. Tests call Allocate and GetPreferredAllocation through it, restart
//! it (every socket in its directory removed, as a starting kubelet does), and say which
//! device IDs running containers hold.

use accel_device_plugin::proto::podresources as pr;
use accel_device_plugin::proto::v1beta1 as k;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Where a [`DevicePlugin`] started for a kubelet logs (in the kubelet's own directory).
const PLUGIN_LOG: &str = "accel-device-plugin.log";

/// What the kubelet has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every registration, in order.
    pub registrations: Vec<k::RegisterRequest>,
    /// Each resource's latest device list, and when it came.
    pub lists: BTreeMap<String, (Vec<k::Device>, Instant)>,
    /// ListAndWatch messages received in all.
    pub messages: u64,
    /// Every list each resource sent, in order.
    pub history: BTreeMap<String, Vec<Vec<k::Device>>>,
    /// The options each plugin gave.
    pub options: BTreeMap<String, k::DevicePluginOptions>,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Seen>,
    cv: Condvar,
    in_use: Mutex<Vec<(String, Vec<String>)>>,
}

#[derive(Debug, Clone)]
struct Registration {
    dir: PathBuf,
    shared: Arc<Shared>,
}

async fn channel(path: &Path) -> Result<tonic::transport::Channel, Status> {
    accel_device_plugin::unix_channel(path)
        .await
        .map_err(|e| Status::unavailable(format!("{}: {e}", path.display())))
}

#[tonic::async_trait]
impl k::registration_server::Registration for Registration {
    async fn register(
        &self,
        req: Request<k::RegisterRequest>,
    ) -> Result<Response<k::Empty>, Status> {
        let r = req.into_inner();
        if r.version != "v1beta1" {
            return Err(Status::invalid_argument(format!("version {}", r.version)));
        }
        let mine = {
            let mut g = self.shared.seen.lock().unwrap();
            g.registrations.push(r.clone());
            g.registrations.len() - 1
        };
        self.shared.cv.notify_all();
        // As the device manager does: after the answer, dial the plugin and follow it.
        let (dir, shared) = (self.dir.clone(), self.shared.clone());
        tokio::spawn(async move {
            let Ok(ch) = channel(&dir.join(&r.endpoint)).await else {
                return;
            };
            let mut c = k::device_plugin_client::DevicePluginClient::new(ch);
            if let Ok(o) = c.get_device_plugin_options(k::Empty {}).await {
                shared
                    .seen
                    .lock()
                    .unwrap()
                    .options
                    .insert(r.resource_name.clone(), o.into_inner());
            }
            let Ok(s) = c.list_and_watch(k::Empty {}).await else {
                return;
            };
            let mut s = s.into_inner();
            while let Ok(Some(m)) = s.message().await {
                let mut g = shared.seen.lock().unwrap();
                g.history
                    .entry(r.resource_name.clone())
                    .or_default()
                    .push(m.devices.clone());
                g.lists
                    .insert(r.resource_name.clone(), (m.devices, Instant::now()));
                g.messages += 1;
                drop(g);
                shared.cv.notify_all();
            }
            // As the device manager does when a plugin goes: its devices turn unhealthy
            // (and go after a grace period), the pods holding them keep them.
            let mut g = shared.seen.lock().unwrap();
            let latest = g
                .registrations
                .iter()
                .rposition(|x| x.resource_name == r.resource_name);
            if latest != Some(mine) {
                return;
            }
            if let Some((l, _)) = g.lists.get(&r.resource_name) {
                let l: Vec<k::Device> = l
                    .iter()
                    .map(|d| k::Device {
                        health: "Unhealthy".into(),
                        ..d.clone()
                    })
                    .collect();
                g.lists.insert(r.resource_name.clone(), (l, Instant::now()));
            }
            drop(g);
            shared.cv.notify_all();
        });
        Ok(Response::new(k::Empty {}))
    }
}

#[derive(Debug, Clone)]
struct PodResources(Arc<Shared>);

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for PodResources {
    async fn list(
        &self,
        _: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let held = self.0.in_use.lock().unwrap().clone();
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources: held
                .into_iter()
                .enumerate()
                .map(|(i, (resource, ids))| pr::PodResources {
                    name: format!("pod-{i}"),
                    namespace: "default".into(),
                    containers: vec![pr::ContainerResources {
                        name: "c".into(),
                        devices: vec![pr::ContainerDevices {
                            resource_name: resource,
                            device_ids: ids,
                        }],
                    }],
                })
                .collect(),
        }))
    }
}

/// The test kubelet.
#[derive(Debug)]
pub struct Kubelet {
    /// Its device-plugins directory.
    pub dir: PathBuf,
    /// Its pod resources socket (outside that directory, as the real one is).
    pub pod_resources: PathBuf,
    _tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Kubelet {
    /// Starts serving.
    pub fn start() -> Kubelet {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("device-plugins");
        std::fs::create_dir(&dir).unwrap();
        let pod_resources = tmp.path().join("pod-resources.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        let pr = PodResources(shared.clone());
        {
            let _g = rt.enter();
            let l = tokio::net::UnixListener::bind(&pod_resources).unwrap();
            rt.spawn(
                tonic::transport::Server::builder()
                    .add_service(pr::pod_resources_lister_server::PodResourcesListerServer::new(pr))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l)),
            );
        }
        let mut k = Kubelet {
            dir,
            pod_resources,
            _tmp: tmp,
            rt,
            shared,
            stop: None,
        };
        k.serve();
        k
    }

    fn serve(&mut self) {
        let sock = self.dir.join("kubelet.sock");
        let _g = self.rt.enter();
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = Registration {
            dir: self.dir.clone(),
            shared: self.shared.clone(),
        };
        self.rt.spawn(
            tonic::transport::Server::builder()
                .add_service(k::registration_server::RegistrationServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(l),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        self.stop = Some(tx);
    }

    /// A kubelet restart: it stops, and the new one removes every socket in its directory
    /// and serves a new `kubelet.sock`. What it saw before is forgotten.
    pub fn restart(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        std::thread::sleep(Duration::from_millis(50));
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        {
            let mut g = self.shared.seen.lock().unwrap();
            g.lists.clear();
            g.options.clear();
        }
        self.serve();
    }

    /// Waits until `f` holds for what the kubelet has seen; panics after `within`.
    pub fn wait<T>(
        &self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        let t = Instant::now();
        let mut g = self.shared.seen.lock().unwrap();
        loop {
            if let Some(v) = f(&g) {
                return v;
            }
            let left = within.checked_sub(t.elapsed()).unwrap_or_else(|| {
                panic!(
                    "the kubelet did not see {what} within {within:?}: {:#?}\nthe plugin's log:\n{}",
                    *g,
                    std::fs::read_to_string(self._tmp.path().join(PLUGIN_LOG))
                        .unwrap_or_default()
                )
            });
            g = self
                .shared
                .cv
                .wait_timeout(g, left.min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
    }

    /// Waits for `resource`'s list to satisfy `f`; the list.
    pub fn wait_list(
        &self,
        resource: &str,
        within: Duration,
        what: &str,
        f: impl Fn(&[k::Device]) -> bool,
    ) -> Vec<k::Device> {
        self.wait(within, &format!("{resource}: {what}"), |s| {
            s.lists
                .get(resource)
                .filter(|(l, _)| f(l))
                .map(|(l, _)| l.clone())
        })
    }

    /// Waits until some list `resource` sent (now or before) satisfies `f`.
    pub fn wait_sent(
        &self,
        resource: &str,
        within: Duration,
        what: &str,
        f: impl Fn(&[k::Device]) -> bool,
    ) {
        self.wait(within, &format!("{resource}: {what}"), |s| {
            s.history
                .get(resource)
                .is_some_and(|h| h.iter().any(|l| f(l)))
                .then_some(())
        })
    }

    /// A snapshot of what it saw.
    pub fn with_seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.shared.seen.lock().unwrap())
    }

    /// Which device IDs the pod resources API says are held.
    pub fn set_in_use(&self, held: &[(&str, Vec<String>)]) {
        *self.shared.in_use.lock().unwrap() = held
            .iter()
            .map(|(r, ids)| (r.to_string(), ids.clone()))
            .collect();
    }

    fn endpoint(&self, resource: &str) -> PathBuf {
        let g = self.shared.seen.lock().unwrap();
        let r = g
            .registrations
            .iter()
            .rev()
            .find(|r| r.resource_name == resource)
            .unwrap_or_else(|| panic!("{resource} never registered: {:#?}", *g));
        self.dir.join(&r.endpoint)
    }

    /// A client of `resource`'s plugin, on this kubelet's runtime.
    pub fn client(
        &self,
        resource: &str,
    ) -> k::device_plugin_client::DevicePluginClient<tonic::transport::Channel> {
        let p = self.endpoint(resource);
        let ch = self.rt.block_on(channel(&p)).unwrap();
        k::device_plugin_client::DevicePluginClient::new(ch)
    }

    /// Runs a future on this kubelet's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Allocate of `ids` for one container.
    pub fn allocate(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<k::ContainerAllocateResponse, Status> {
        let mut c = self.client(resource);
        let r = self.rt.block_on(c.allocate(k::AllocateRequest {
            container_requests: vec![k::ContainerAllocateRequest {
                devices_ids: ids.to_vec(),
            }],
        }))?;
        Ok(r.into_inner().container_responses.remove(0))
    }

    /// GetPreferredAllocation for one container.
    pub fn preferred(
        &self,
        resource: &str,
        available: &[String],
        must: &[String],
        size: i32,
    ) -> Vec<String> {
        let mut c = self.client(resource);
        let r = self
            .rt
            .block_on(c.get_preferred_allocation(k::PreferredAllocationRequest {
                container_requests: vec![k::ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.to_vec(),
                    must_include_device_i_ds: must.to_vec(),
                    allocation_size: size,
                }],
            }))
            .unwrap();
        r.into_inner().container_responses.remove(0).device_i_ds
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A running `accel-device-plugin`.
#[derive(Debug)]
pub struct DevicePlugin {
    child: Option<Child>,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    /// Its stderr.
    pub log: PathBuf,
}

impl DevicePlugin {
    /// Starts one for `kubelet`, against acceld at `acceld`, with more arguments.
    pub fn start(kubelet: &Kubelet, acceld: &Path, extra: &[&std::ffi::OsStr]) -> DevicePlugin {
        Self::start_with_env(kubelet, acceld, extra, Vec::new())
    }

    /// As [`DevicePlugin::start`], with these environment variables (a pod's, say).
    pub fn start_with_env(
        kubelet: &Kubelet,
        acceld: &Path,
        extra: &[&std::ffi::OsStr],
        env: Vec<(String, String)>,
    ) -> DevicePlugin {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--kubelet-dir".into(),
            kubelet.dir.clone().into(),
            "--acceld".into(),
            acceld.into(),
            "--pod-resources".into(),
            kubelet.pod_resources.clone().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_os_string()));
        let mut p = DevicePlugin {
            child: None,
            args,
            env,
            log: kubelet._tmp.path().join(PLUGIN_LOG),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(crate::bin("accel-device-plugin"))
                .args(&self.args)
                .env_remove("ACCELD_SOCKET")
                // Outside a cluster unless the test says otherwise.
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("KUBERNETES_SERVICE_PORT")
                .env_remove("NODE_NAME")
                .envs(self.env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start accel-device-plugin"),
        );
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for DevicePlugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
