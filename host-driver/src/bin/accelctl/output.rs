//! Tables for people, JSON for programs: the same fields in both. JSON field names are stable
//! and documented in the README.

use host_driver::transport::VfEndpoint;
use host_driver::vfio_user::{scan_sockets, VfioUser};
use host_driver::{Accel, VfHandoff};
use serde::Serialize;
use serde_json::json;
use shared_abi::regs::DevCaps;
use shared_abi::resources::{
    DeviceInfo, DeviceStats, FreeResources, VfFault, VfInfo, VfState, VfStats,
};
use std::path::Path;
use std::sync::Arc;

pub struct Out {
    pub json: bool,
}

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints a table in one write: a line per row through stdout's line buffering would be a
/// system call per VF.
fn table(head: &[&str], rows: &[Vec<String>]) {
    print!("{}", host_driver::table::columns(head, rows));
}

fn version(v: u32) -> String {
    shared_abi::image::Version(v).to_string()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

fn engines(mask: u32) -> String {
    let v: Vec<u32> = (0..32).filter(|b| mask & (1 << b) != 0).collect();
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if (b - a + 1) as usize == v.len() && a != b => format!("{a}-{b}"),
        _ => v
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn state(s: u8) -> &'static str {
    VfState::from_wire(s as u32).map_or("unknown", |s| s.name())
}

fn vf_json(v: &VfInfo, shift: u8) -> serde_json::Value {
    json!({
        "vf": v.vf.get(),
        "state": state(v.state),
        "engines": v.engine_mask.get().count_ones(),
        "engine_mask": v.engine_mask.get(),
        "memory_bytes": (v.mem_granules.get() as u64) << shift,
        "memory_base_granule": v.mem_base.get(),
        "queues": v.queue_count.get(),
        "queue_base": v.queue_base.get(),
        "vectors": v.vector_count.get(),
        "vector_base": v.vector_base.get(),
        "weight": v.weight.get(),
        "faults": v.fault_count.get(),
        "last_fault": VfFault::from_wire(v.fault_code.get()).map_or("unknown", |f| f.name()),
        "flr_count": v.flr_count.get(),
    })
}

fn vf_row(v: &VfInfo, shift: u8) -> Vec<String> {
    vec![
        v.vf.get().to_string(),
        state(v.state).into(),
        format!(
            "{} ({})",
            v.engine_mask.get().count_ones(),
            engines(v.engine_mask.get())
        ),
        human((v.mem_granules.get() as u64) << shift),
        format!("{} @{}", v.queue_count.get(), v.queue_base.get()),
        format!("{} @{}", v.vector_count.get(), v.vector_base.get()),
        v.weight.get().to_string(),
        v.fault_count.get().to_string(),
        v.flr_count.get().to_string(),
    ]
}

const VF_HEAD: [&str; 9] = [
    "VF", "STATE", "ENGINES", "MEMORY", "QUEUES", "VECTORS", "WEIGHT", "FAULTS", "FLRS",
];

#[derive(Serialize)]
pub struct Found {
    pub device: String,
    pub transport: &'static str,
    pub firmware: Option<String>,
    pub vfs_enabled: Option<u16>,
    pub status: String,
}

/// Opens and asks a device who it is; a failure becomes its status line.
async fn probe(
    device: String,
    transport: &'static str,
    opened: host_driver::Result<Accel>,
) -> Found {
    let (firmware, vfs_enabled, status) = match opened {
        Ok(acc) => match acc.device_info().await {
            Ok(i) => (
                Some(version(i.fw_version.get())),
                Some(i.num_vfs_enabled.get()),
                "ok".to_string(),
            ),
            Err(e) => (None, None, e.to_string()),
        },
        Err(e) => (None, None, format!("not usable ({e})")),
    };
    Found {
        device,
        transport,
        firmware,
        vfs_enabled,
        status,
    }
}

/// Our PCI functions, the sockets in `dir`, and the device `named` (`-d` or
/// `$ACCEL_DEVICE`) wherever it is, each probed once.
pub async fn discover(dir: &Path, named: Option<&str>) -> Vec<Found> {
    let mut v = Vec::new();
    let mut pcis = host_driver::kernel::Sysfs::default().find_pfs();
    let mut sockets = scan_sockets(dir);
    match named.map(host_driver::DeviceAddr::parse) {
        Some(Ok(host_driver::DeviceAddr::Pci(a))) if !pcis.contains(&a) => pcis.push(a),
        Some(Ok(host_driver::DeviceAddr::Socket(p)))
            if !sockets.iter().any(|s| same_file(s, &p)) =>
        {
            sockets.push(p)
        }
        _ => {}
    }
    for a in pcis {
        let opened = Accel::open(&host_driver::DeviceAddr::Pci(a.clone()));
        v.push(probe(a, "vfio", opened).await);
    }
    for p in sockets {
        let opened = VfioUser::connect(&p, true)
            .and_then(|t| Accel::with_transport(Arc::new(t), std::time::Duration::from_secs(2)));
        v.push(probe(p.display().to_string(), "vfio-user", opened).await);
    }
    v
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether a person watches stderr: a terminal that is not a dumb one (a serial console's log
/// sets TERM=dumb), so progress bars are drawn only where they can be redrawn.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}

impl Out {
    pub fn list(&self, found: &[Found], dir: &Path) {
        if self.json {
            return print_json(&json!({ "devices": found }));
        }
        if found.is_empty() {
            println!(
                "no accelvirt devices found: no PCI function with our IDs in /sys/bus/pci/devices, \
                 no device-model socket in {} (--runtime-dir or $ACCEL_RUNTIME_DIR sets it; \
                 -d or $ACCEL_DEVICE names one device anywhere)",
                dir.display()
            );
            return;
        }
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|f| {
                vec![
                    f.device.clone(),
                    f.transport.into(),
                    f.firmware.clone().unwrap_or("-".into()),
                    f.vfs_enabled.map_or("-".into(), |n| n.to_string()),
                    f.status.clone(),
                ]
            })
            .collect();
        table(&["DEVICE", "TRANSPORT", "FIRMWARE", "VFS", "STATUS"], &rows);
    }

    pub fn info(
        &self,
        dev: &str,
        i: &DeviceInfo,
        f: &FreeResources,
        (st, fault): (shared_abi::regs::DevStatus, u32),
        slots: Option<[host_driver::update::Slot; 2]>,
    ) {
        use shared_abi::regs::DevStatus;
        let faulted = st.intersects(DevStatus::FAULT | DevStatus::HALTED);
        let health = if faulted {
            format!(
                "FAULTED: {} (fault code {fault}); reset the device",
                host_driver::error::fault_name(fault)
            )
        } else {
            "ok".to_string()
        };
        let caps = DevCaps::from_bits_truncate(i.caps.get());
        let cap_names: Vec<String> = caps
            .iter_names()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        let shift = i.granule_shift;
        let j = json!({
            "device": dev,
            "abi": format!("{}.{}", i.abi_major.get(), i.abi_minor.get()),
            "firmware": version(i.fw_version.get()),
            "build_id": format!("{:08x}", i.build_id.get()),
            "capabilities": cap_names,
            "uptime_ms": i.uptime_ms.get(),
            "health": if faulted { "faulted" } else { "ok" },
            "fault_code": fault,
            "total_vfs": i.total_vfs.get(),
            "vfs_in_use": i.vfs_in_use.get(),
            "vfs_enabled": i.num_vfs_enabled.get(),
            "board": {
                "engines": i.engines,
                "memory_bytes": (i.mem_granules.get() as u64) << shift,
                "granule_bytes": 1u64 << shift,
                "queues": i.queues.get(),
                "vectors": i.vectors.get(),
            },
            "free": {
                "engines": f.engine_mask.get().count_ones(),
                "engine_mask": f.engine_mask.get(),
                "memory_bytes": (f.mem_granules.get() as u64) << shift,
                "largest_memory_bytes": (f.largest_mem_run.get() as u64) << shift,
                "queues": f.queues.get(),
                "vectors": f.vectors.get(),
                "vf_slots": f.free_vf_slots.get(),
            },
            "flash": slots.map(|s| s.map(|s| json!({
                "slot": s.name,
                "state": s.state,
                "version": version(s.version),
                "build_id": format!("{:08x}", s.build_id),
                "size": s.size,
            }))),
        });
        if self.json {
            return print_json(&j);
        }
        println!("device      {dev}");
        println!("health      {health}");
        println!(
            "firmware    {} (build {:08x}), ABI {}.{}",
            version(i.fw_version.get()),
            i.build_id.get(),
            i.abi_major.get(),
            i.abi_minor.get()
        );
        println!("caps        {}", cap_names.join(" "));
        println!(
            "VFs         {} in use, {} enabled, TotalVFs {}",
            i.vfs_in_use.get(),
            i.num_vfs_enabled.get(),
            i.total_vfs.get()
        );
        if let Some(slots) = slots {
            let s: Vec<String> = slots
                .iter()
                .map(|s| match s.state {
                    "empty" => format!("{} empty", s.name),
                    st => format!(
                        "{} {st} {} (build {:08x})",
                        s.name,
                        version(s.version),
                        s.build_id
                    ),
                })
                .collect();
            println!("flash       {}", s.join(", "));
        }
        println!();
        table(
            &["RESOURCE", "TOTAL", "FREE", "LARGEST FREE RUN"],
            &[
                vec![
                    "engines".into(),
                    i.engines.to_string(),
                    f.engine_mask.get().count_ones().to_string(),
                    "-".into(),
                ],
                vec![
                    "memory".into(),
                    human((i.mem_granules.get() as u64) << shift),
                    human((f.mem_granules.get() as u64) << shift),
                    human((f.largest_mem_run.get() as u64) << shift),
                ],
                vec![
                    "queues".into(),
                    i.queues.get().to_string(),
                    f.queues.get().to_string(),
                    f.largest_queue_run.get().to_string(),
                ],
                vec![
                    "vectors".into(),
                    i.vectors.get().to_string(),
                    f.vectors.get().to_string(),
                    f.largest_vector_run.get().to_string(),
                ],
            ],
        );
    }

    pub fn vfs(&self, vfs: &[VfInfo], shift: u8) {
        if self.json {
            let list: Vec<_> = vfs.iter().map(|v| vf_json(v, shift)).collect();
            return print_json(&json!({ "vfs": list }));
        }
        if vfs.is_empty() {
            println!("no VFs (create some with: accelctl -d DEV create-vf --count 4)");
            return;
        }
        table(
            &VF_HEAD,
            &vfs.iter().map(|v| vf_row(v, shift)).collect::<Vec<_>>(),
        );
    }

    pub fn vf_show(&self, v: &VfInfo, h: &VfHandoff, shift: u8) {
        if self.json {
            let mut j = vf_json(v, shift);
            j["handoff"] = serde_json::to_value(h).unwrap_or_default();
            return print_json(&j);
        }
        table(&VF_HEAD, &[vf_row(v, shift)]);
        println!();
        print_handoff(h);
    }

    pub fn created(&self, vfs: &[VfInfo], hs: &[VfHandoff], shift: u8) {
        if self.json {
            let list: Vec<_> = vfs
                .iter()
                .zip(hs)
                .map(|(v, h)| {
                    let mut j = vf_json(v, shift);
                    j["handoff"] = serde_json::to_value(h).unwrap_or_default();
                    j
                })
                .collect();
            return print_json(&json!({ "created": list }));
        }
        println!(
            "created {} VF{}",
            vfs.len(),
            if vfs.len() == 1 { "" } else { "s" }
        );
        table(
            &VF_HEAD,
            &vfs.iter().map(|v| vf_row(v, shift)).collect::<Vec<_>>(),
        );
        let all: String = hs.iter().map(handoff_text).collect();
        print!("\nhand a VF to a VM:\n{all}{PF_WARNING}\n");
    }

    pub fn run_report(&self, r: &crate::run::Report) {
        if self.json {
            return print_json(r);
        }
        println!(
            "{} × {} bytes on {} queue{} × depth {}: {} jobs in {:.2} s (submitting stopped at the \
             deadline; the jobs in flight then took {:.2} s more)",
            r.job,
            r.size,
            r.queues,
            if r.queues == 1 { "" } else { "s" },
            r.depth,
            r.jobs,
            r.seconds,
            r.drain_seconds
        );
        println!(
            "throughput  {:.3} GiB/s, {:.0} jobs/s",
            r.gib_per_s, r.jobs_per_s
        );
        println!(
            "latency     p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (submit to reap)",
            r.latency_us_p50, r.latency_us_p99, r.latency_us_max
        );
        println!("every result matched the host's");
    }

    pub fn flashed(&self, r: &crate::flash::Report, bytes: usize, activated: Option<(u32, u32)>) {
        let slot = shared_abi::image::slot_name(r.flashed.slot);
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let mib_s = bytes as f64 / secs / (1 << 20) as f64;
        let (v, b) = (r.header.fw_version.get(), r.header.build_id.get());
        if self.json {
            print_json(&json!({
                "slot": slot,
                "version": version(v),
                "build_id": format!("{b:08x}"),
                "bytes": bytes,
                "resumed_from": r.flashed.resumed_from,
                "seconds": secs,
                "mib_per_s": mib_s,
                "running": activated.map(|(v, b)| json!({
                    "version": version(v),
                    "build_id": format!("{b:08x}"),
                })),
            }));
            return;
        }
        println!(
            "flashed {} (build {b:08x}) into slot {slot}: {bytes} bytes in {secs:.2} s ({mib_s:.1} MiB/s), verified by the device",
            version(v)
        );
        match activated {
            Some((v, b)) => println!("running {} (build {b:08x})", version(v)),
            None => println!("it boots at the next reset (`accelctl fw-reset`)"),
        }
    }

    pub fn fw_reset(&self, v: u32, b: u32) {
        if self.json {
            print_json(&json!({ "version": version(v), "build_id": format!("{b:08x}") }));
        } else {
            println!("running {} (build {b:08x})", version(v));
        }
    }

    pub fn destroyed(&self, n: u16) {
        if self.json {
            return print_json(&json!({ "destroyed": n }));
        }
        println!("destroyed {n} VF{}", if n == 1 { "" } else { "s" });
    }

    pub fn stats(&self, d: &DeviceStats, vfs: &[VfStats]) {
        if self.json {
            let list: Vec<_> = vfs
                .iter()
                .map(|s| {
                    json!({"vf": s.vf.get(), "state": state(s.state),
                    "jobs": s.jobs.get(), "bytes": s.bytes.get(), "engine_us": s.engine_us.get(),
                    "faults": s.faults.get(), "flr_count": s.flr_count.get()})
                })
                .collect();
            return print_json(&json!({
                "mailbox_commands": d.mbox_commands.get(), "mailbox_errors": d.mbox_errors.get(),
                "mailbox_replays": d.mbox_replays.get(), "vfs_created": d.vfs_created.get(),
                "vfs_destroyed": d.vfs_destroyed.get(), "flrs": d.flrs.get(), "uptime_ms": d.uptime_ms.get(),
                "vfs": list,
            }));
        }
        println!(
            "mailbox: {} commands, {} errors, {} replays; VFs created {}, destroyed {}; FLRs {}; uptime {} ms",
            d.mbox_commands.get(), d.mbox_errors.get(), d.mbox_replays.get(), d.vfs_created.get(),
            d.vfs_destroyed.get(), d.flrs.get(), d.uptime_ms.get()
        );
        if !vfs.is_empty() {
            println!();
            let rows: Vec<Vec<String>> = vfs
                .iter()
                .map(|s| {
                    vec![
                        s.vf.get().to_string(),
                        state(s.state).into(),
                        s.jobs.get().to_string(),
                        s.bytes.get().to_string(),
                        s.engine_us.get().to_string(),
                        s.faults.get().to_string(),
                        s.flr_count.get().to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "VF",
                    "STATE",
                    "JOBS",
                    "BYTES",
                    "ENGINE_US",
                    "FAULTS",
                    "FLRS",
                ],
                &rows,
            );
        }
    }
}

fn print_handoff(h: &VfHandoff) {
    print!("{}", handoff_text(h));
}

fn handoff_text(h: &VfHandoff) -> String {
    match &h.endpoint {
        VfEndpoint::Pci {
            address,
            iommu_group,
            driver,
            ..
        } => format!(
            "  VF {}: {address} (IOMMU group {}, driver {})\n    qemu:             {}\n    \
             cloud-hypervisor: {}\n",
            h.vf,
            iommu_group.map_or("none".into(), |g| g.to_string()),
            driver.clone().unwrap_or("none".into()),
            h.qemu,
            h.cloud_hypervisor
        ),
        VfEndpoint::Socket { path } => format!(
            "  VF {}: {}\n    qemu 10.1+:       {}\n    cloud-hypervisor: {}\n",
            h.vf,
            path.display(),
            h.qemu,
            h.cloud_hypervisor
        ),
    }
}

/// Printed with every handoff: the one mistake that takes down every tenant at once.
pub const PF_WARNING: &str = "\
give VMs the VFs, never the PF: a VMM resets each device it is given when the VM starts, and a
PF reset disables SR-IOV and destroys every VF, as on silicon (QEMU 11.1 even aborts when a PF
and one of its VFs are in the same VM)";
