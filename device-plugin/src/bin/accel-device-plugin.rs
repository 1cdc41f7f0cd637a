//! `accel-device-plugin`: advertises acceld's VFs to the kubelet.
use accel_device_plugin::{events, kubelet::Servers, log, pods, state};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// A Kubernetes device plugin for accelvirt VFs: one more client of acceld, serving the
/// kubelet's device plugin API (v1beta1) for `accelvirt.io/vf` and one resource per profile.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The kubelet's device plugin directory (its registration socket is kubelet.sock there).
    #[arg(long, default_value = accel_device_plugin::KUBELET_DIR)]
    kubelet_dir: PathBuf,
    /// acceld's socket.
    #[arg(long, env = "ACCELD_SOCKET", default_value = accelvirt_api::DEFAULT_SOCKET)]
    acceld: PathBuf,
    /// A profiles file (JSON): VF shapes and how many of each every device carries. Read
    /// again whenever it changes.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// The kubelet's pod resources socket: which VFs running containers hold.
    #[arg(long, default_value = accel_device_plugin::POD_RESOURCES)]
    pod_resources: PathBuf,
    /// Where sysfs is mounted (NUMA nodes of PCI VFs).
    #[arg(long, default_value = "/sys")]
    sysfs: PathBuf,
    /// Advertise the remote VFs imported here (`accel-remote import`'s runtime directory)
    /// as accelvirt.io/vf-remote.
    #[arg(long)]
    imported: Option<PathBuf>,
    /// The node this runs on (the downward API's spec.nodeName): events about profile
    /// changes are posted about it. Without it they are only logged.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The pod's service account directory (token and ca.crt) for posting events to the
    /// API server named by KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
    #[arg(long, default_value = events::SERVICE_ACCOUNT)]
    service_account: PathBuf,
}

/// Events go to the API server when the plugin runs in a cluster and knows its node.
fn recorder(a: &Args) -> events::Recorder {
    match (
        events::ApiServer::in_cluster(&a.service_account),
        &a.node_name,
    ) {
        (Some(api), Some(node)) if !node.is_empty() => {
            log!("events about node {node} go to the API server");
            events::Recorder::new(api, node.clone())
        }
        (Some(_), _) => {
            log!("no node name (NODE_NAME or --node-name): events are only logged");
            events::Recorder::log_only()
        }
        (None, _) => events::Recorder::log_only(),
    }
}

fn main() {
    let a = Args::parse();
    if let Some(p) = &a.profiles {
        if let Err(e) = accel_device_plugin::profiles::Profiles::load(p) {
            eprintln!("accel-device-plugin: {e}");
            std::process::exit(2);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(a));
    std::process::exit(code);
}

async fn run(a: Args) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("accel-device-plugin: cannot handle signals");
        return 1;
    };
    let allocations = Arc::new(pods::Allocations::default());
    let cfg = state::Config {
        acceld: a.acceld.clone(),
        profiles: a.profiles.clone(),
        pod_resources: pods::PodResources {
            socket: a.pod_resources.clone(),
        },
        sysfs: a.sysfs.clone(),
        imported: a.imported.clone(),
        events: recorder(&a),
    };
    let (st, snap, mut resources) = state::State::new(cfg, allocations.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(st.run(stop_rx));
    let mut servers = Servers::new(a.kubelet_dir.clone());
    log!(
        "kubelet directory {}, acceld {}",
        a.kubelet_dir.display(),
        a.acceld.display()
    );
    loop {
        let want = resources.borrow_and_update().clone();
        servers.set(&want, &snap, &allocations).await;
        tokio::select! {
            c = resources.changed() => if c.is_err() { break },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    log!("stopping");
    let _ = stop_tx.send(true);
    servers.stop().await;
    let _ = task.await;
    0
}
