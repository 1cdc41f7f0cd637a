//! The Kubernetes device plugin end to end: real `accel-sim` and `acceld` processes, the
//! plugin as users run it, and a kubelet built from the same `api.proto`
//! (`accelvirt_tests::kubelet`) that registers it, follows its device lists, allocates,
//! restarts, and says which VFs running containers hold.
use accel_device_plugin::inventory::{remote_id, vf_id};
use accelvirt_tests::kube_api;
use accelvirt_tests::kubelet::{DevicePlugin, Kubelet};
use accelvirt_tests::{accelctl, Acceld, Sim};
use std::ffi::OsStr;
use std::time::Duration;

const VF: &str = "accelvirt.io/vf";
/// Bound on what the plugin shows the kubelet after acceld knows it: an event, two reads of
/// the device and a stream message; generous for a loaded two-core machine.
const SEEN: Duration = Duration::from_secs(5);
/// A hung firmware: acceld notices once the heartbeat has stood still for its command
/// timeout and a second more (6 s by default), then resets and restores the device.
const HANG: Duration = Duration::from_secs(15);

fn ids(sim: &Sim, n: u32) -> Vec<String> {
    (0..n)
        .map(|v| vf_id(sim.sock.to_str().unwrap(), v))
        .collect()
}

/// Waits until the plugin's log says `what`; panics with the log after [`SEEN`].
fn wait_log(p: &DevicePlugin, what: &str) {
    let t = std::time::Instant::now();
    while !p.log().contains(what) {
        assert!(t.elapsed() < SEEN, "never said {what:?}: {}", p.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn healthy(l: &[accel_device_plugin::proto::v1beta1::Device], want: &[String]) -> bool {
    let mut got: Vec<&str> = l
        .iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id.as_str())
        .collect();
    got.sort();
    let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
    w.sort();
    got == w && l.len() == want.len()
}

fn health_of(l: &[accel_device_plugin::proto::v1beta1::Device], id: &str) -> String {
    l.iter()
        .find(|d| d.id == id)
        .map(|d| d.health.clone())
        .unwrap_or_default()
}

/// A started setup: a device with `vfs` equal VFs, its daemon, a kubelet and the plugin
/// registered with it.
fn setup(vfs: u32, extra: &[&OsStr]) -> (Sim, Acceld, Kubelet, DevicePlugin) {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    if vfs > 0 {
        d.ctl_json(&["create-vf", "--count", &vfs.to_string()]);
    }
    let k = Kubelet::start();
    let p = DevicePlugin::start(&k, &d.sock, extra);
    (sim, d, k, p)
}

#[test]
fn registers_lists_every_vf_and_allocates_one_and_four() {
    let (sim, _d, k, p) = setup(4, &[]);
    let want = ids(&sim, 4);
    let list = k.wait_list(VF, SEEN, "4 healthy VFs", |l| healthy(l, &want));
    assert!(
        list.iter().all(|d| d.topology.is_none()),
        "no NUMA for sockets"
    );
    k.with_seen(|s| {
        let r = s
            .registrations
            .iter()
            .find(|r| r.resource_name == VF)
            .expect("registered");
        assert_eq!(r.version, "v1beta1");
        assert_eq!(r.endpoint, "accelvirt-vf.sock");
        let o = r.options.as_ref().unwrap();
        assert!(o.get_preferred_allocation_available && !o.pre_start_required);
        assert_eq!(s.options[VF], *o, "GetDevicePluginOptions says the same");
    });
    // One VF: its socket mounted, the variables naming it.
    let r = k.allocate(VF, &want[1..2]).unwrap();
    assert_eq!(r.mounts.len(), 1, "{r:?}");
    let m = &r.mounts[0];
    assert_eq!(
        std::path::Path::new(&m.host_path),
        sim.dir.path().join("accel0-vf1.sock")
    );
    assert_eq!(
        m.container_path,
        format!("/var/run/accelvirt/vfio-user/{}.sock", want[1])
    );
    assert_eq!(
        r.envs["VFIO_USER_RESOURCE_ACCELVIRT_IO_VF"],
        m.container_path
    );
    assert_eq!(r.envs["ACCEL_DEVICE"], m.container_path);
    assert!(r.devices.is_empty() && r.cdi_devices.is_empty());
    // A pod's job runs on what was mounted (its host side here).
    let o = accelctl(
        std::path::Path::new(&m.host_path),
        &["run", "--job", "crc32c", "--size", "64K", "--seconds", "1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Four: four mounts, the variable lists them in order.
    let r = k.allocate(VF, &want).unwrap();
    assert_eq!(r.mounts.len(), 4);
    let listed: Vec<&str> = r.envs["VFIO_USER_RESOURCE_ACCELVIRT_IO_VF"]
        .split(',')
        .collect();
    let mounted: Vec<&str> = r.mounts.iter().map(|m| m.container_path.as_str()).collect();
    assert_eq!(listed, mounted);
    for (m, v) in r.mounts.iter().zip(0..) {
        assert_eq!(
            std::path::Path::new(&m.host_path),
            sim.dir.path().join(format!("accel0-vf{v}.sock"))
        );
    }
    // Refused: an ID that is not ours, and one named twice.
    let e = k.allocate(VF, &["nope-vf0".into()]).unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = k
        .allocate(VF, &[want[0].clone(), want[0].clone()])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(p.log().contains("allocated"), "{}", p.log());
}

#[test]
fn health_follows_vf_faults_resets_and_the_firmware() {
    let (sim, d, k, p) = setup(2, &[]);
    let want = ids(&sim, 2);
    k.wait_list(VF, SEEN, "2 healthy VFs", |l| healthy(l, &want));
    // VF 0's tenant touches a queue it does not own: a fault, the VF unhealthy.
    let vf0 =
        host_driver::vfio_user::VfioUser::connect(&sim.dir.path().join("accel0-vf0.sock"), false)
            .unwrap();
    let beyond = shared_abi::regs::vf::QUEUES.start() as u64
        + 200 * shared_abi::regs::QUEUE_REGS_SIZE as u64;
    let mut b = [0u8; 4];
    let _ = vf0.region_read(0, beyond, &mut b);
    drop(vf0);
    let l = k.wait_list(VF, SEEN, "VF 0 unhealthy", |l| {
        health_of(l, &want[0]) == "Unhealthy"
    });
    assert_eq!(health_of(&l, &want[1]), "Healthy", "VF 1 is not touched");
    // Its reset (as vfio-pci does when the VM lets go) makes it healthy again.
    d.ctl_json(&["vf", "reset", "0"]);
    k.wait_list(VF, SEEN, "VF 0 healthy after its reset", |l| {
        healthy(l, &want)
    });
    // The firmware hangs: every VF unhealthy; acceld resets the device and restores the
    // layout: healthy again, the same IDs.
    nix::sys::signal::kill(sim.core_pid(), nix::sys::signal::Signal::SIGSTOP).unwrap();
    k.wait_list(
        VF,
        HANG,
        "every VF unhealthy while the firmware is stopped",
        |l| l.len() == 2 && l.iter().all(|d| d.health == "Unhealthy"),
    );
    k.wait_list(VF, HANG, "healthy after acceld restored the device", |l| {
        healthy(l, &want)
    });
    assert!(d.log().contains("heartbeat_lost"), "{}", d.log());
    assert!(!p.log().contains("panicked"), "{}", p.log());
}

#[test]
fn a_kubelet_restart_is_followed_by_registration_and_the_same_ids() {
    let (sim, _d, mut k, p) = setup(3, &[]);
    let want = ids(&sim, 3);
    k.wait_list(VF, SEEN, "3 healthy VFs", |l| healthy(l, &want));
    let before = k.with_seen(|s| s.registrations.len());
    k.restart();
    k.wait(SEEN, "a second registration", |s| {
        (s.registrations.len() > before).then_some(())
    });
    k.wait_list(VF, SEEN, "the same 3 IDs after the restart", |l| {
        healthy(l, &want)
    });
    assert!(p.log().contains("the kubelet restarted"), "{}", p.log());
    // And the plugin serves the new kubelet: an allocation works.
    k.allocate(VF, &want[..1]).unwrap();
}

#[test]
fn an_acceld_restart_turns_vfs_unhealthy_then_back_with_the_same_ids() {
    let (sim, mut d, k, p) = setup(2, &[]);
    let want = ids(&sim, 2);
    k.wait_list(VF, SEEN, "2 healthy VFs", |l| healthy(l, &want));
    d.stop_with(nix::sys::signal::Signal::SIGKILL);
    k.wait_list(VF, SEEN, "unhealthy while acceld is gone", |l| {
        l.len() == 2 && l.iter().all(|d| d.health == "Unhealthy")
    });
    d.kill_and_restart();
    k.wait_list(VF, SEEN, "healthy again, same IDs", |l| healthy(l, &want));
    assert!(p.log().contains("acceld"), "{}", p.log());
}

#[test]
fn preferred_allocations_keep_to_one_device() {
    // Two devices under one daemon: A with 4 VFs, B with 2.
    let a = Sim::start();
    let b = Sim::start();
    let d = Acceld::start(&a, &["--device", b.sock.to_str().unwrap()]);
    for (dev, n) in [(&a, "4"), (&b, "2")] {
        let r = std::process::Command::new(accelvirt_tests::bin("accelctl"))
            .args(["-d", dev.sock.to_str().unwrap(), "create-vf", "--count", n])
            .env("ACCELD_SOCKET", &d.sock)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let k = Kubelet::start();
    let _p = DevicePlugin::start(&k, &d.sock, &[]);
    let (ia, ib) = (ids(&a, 4), ids(&b, 2));
    let all: Vec<String> = ia.iter().chain(&ib).cloned().collect();
    k.wait_list(VF, SEEN, "6 healthy VFs", |l| healthy(l, &all));
    let on = |got: &[String], ids: &[String]| got.iter().all(|g| ids.contains(g));
    let got = k.preferred(VF, &all, &[], 2);
    assert!(got.len() == 2 && on(&got, &ib), "2 fit B exactly: {got:?}");
    let got = k.preferred(VF, &all, &[], 3);
    assert!(got.len() == 3 && on(&got, &ia), "3 only fit A: {got:?}");
    let got = k.preferred(VF, &all, &[ib[0].clone()], 2);
    assert_eq!(
        got,
        [ib[0].clone(), ib[1].clone()],
        "must-include on B, rest from B"
    );
    let got = k.preferred(VF, &all, &[], 6);
    assert_eq!(got.len(), 6);
}

#[test]
fn profiles_carve_the_device_and_change_only_when_no_vf_is_in_use() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let k = Kubelet::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.json");
    let big_profile = r#""4e-4g": {"engines": 4, "memory": "4G", "queues": 64},"#;
    let profiles = |list: &str| {
        format!(
            r#"{{"profiles": {{{big_profile}
                               "2e-2g": {{"engines": 2, "memory": "2G", "queues": 32}}}},
                "devices": {{"*": [{list}]}}}}"#
        )
    };
    // The same, with 4e-4g gone from the file.
    let without_big = |list: &str| {
        format!(
            r#"{{"profiles": {{"2e-2g": {{"engines": 2, "memory": "2G", "queues": 32}}}},
                "devices": {{"*": [{list}]}}}}"#
        )
    };
    let write = |text: String| {
        // Whole, as a ConfigMap update lands (a new file swapped in).
        let tmp = dir.path().join(".new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(profiles(r#"{"profile": "4e-4g", "count": 2}"#));
    // In a cluster: refusals and changes become Events about the node.
    let api = kube_api::ApiServer::start();
    let mut args = vec![OsStr::new("--profiles"), file.as_os_str()];
    let cluster = kube_api::plugin_args(&api, "node-a");
    args.extend(cluster.iter().map(|a| a.as_os_str()));
    let p = DevicePlugin::start_with_env(&k, &d.sock, &args, api.env());
    // The empty device is carved to the file: 2 VFs of 4e-4g.
    let big = "accelvirt.io/vf-4e-4g";
    let small = "accelvirt.io/vf-2e-2g";
    let two = ids(&sim, 2);
    k.wait_list(big, SEEN, "2 VFs of 4e-4g", |l| healthy(l, &two));
    k.wait_list(small, SEEN, "none of 2e-2g", |l| l.is_empty());
    k.wait_list(VF, SEEN, "no VF outside the profiles", |l| l.is_empty());
    let l = d.ctl_json(&["vf", "list"]);
    assert_eq!(accelvirt_tests::layout(&l).len(), 2, "{l}");
    // A container holds one of them: the change is refused, the VFs stay. The file no
    // longer names 4e-4g, so by the profiles the VFs are plain `accelvirt.io/vf` now.
    k.allocate(big, &two[..1]).unwrap();
    k.set_in_use(&[(big, vec![two[0].clone()])]);
    write(without_big(r#"{"profile": "2e-2g", "count": 4}"#));
    wait_log(&p, "not re-carved");
    assert!(
        p.log().contains(&two[0]),
        "the log names the VF: {}",
        p.log()
    );
    let e = api.wait_event("ProfileChangeRefused", SEEN);
    assert_eq!(e["type"], "Warning", "{e}");
    assert_eq!(e["involvedObject"]["kind"], "Node", "{e}");
    assert_eq!(e["involvedObject"]["name"], "node-a", "{e}");
    assert_eq!(e["metadata"]["namespace"], "default", "{e}");
    let why = e["message"].as_str().unwrap();
    assert!(why.contains(&two[0]) && why.contains("2e-2g"), "{e}");
    let r = &api.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v1/namespaces/default/events")
    );
    assert_eq!(r.authorization, format!("Bearer {}", kube_api::TOKEN));
    // The held VF stays what the pod holds it as, healthy, and is never offered as
    // another resource (a second pod could be given it); the free one moves to its
    // profile's resource once the kubelet says no pod holds it.
    k.wait_list(VF, SEEN, "the free VF, as accelvirt.io/vf", |l| {
        healthy(l, &two[1..])
    });
    k.wait_list(big, SEEN, "the held VF still advertised, healthy", |l| {
        healthy(l, &two[..1])
    });
    // Retried every second while held, said once, and no flapping meanwhile.
    let lists_before = k.with_seen(|s| s.history.get(big).map_or(0, Vec::len));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(api.events("ProfileChangeRefused").len(), 1);
    k.with_seen(|s| {
        assert_eq!(
            s.history[big].len(),
            lists_before,
            "the held VF's list did not change while the change waited: {:?}",
            &s.history[big][lists_before..]
        );
    });
    assert_eq!(
        accelvirt_tests::layout(&d.ctl_json(&["vf", "list"])).len(),
        2
    );
    // Released: the device is carved to the new list, advertised as the new resource.
    let (big_at, vf_at) = k.with_seen(|s| (s.history[big].len(), s.history[VF].len()));
    k.set_in_use(&[]);
    let four = ids(&sim, 4);
    k.wait_list(small, SEEN, "4 VFs of 2e-2g", |l| healthy(l, &four));
    k.wait_list(VF, SEEN, "no VF outside the profiles", |l| l.is_empty());
    // Nothing is advertised as 4e-4g any more: its plugin stops.
    let t = std::time::Instant::now();
    while k.dir.join("accelvirt-vf-4e-4g.sock").exists() {
        assert!(t.elapsed() < SEEN, "4e-4g's plugin still serves");
        std::thread::sleep(Duration::from_millis(20));
    }
    // From the moment the device is held back for the carving, nothing healthy is offered
    // as the old resources: the new VFs (under the old IDs) are the new profile's at once,
    // not moved there from what the old VFs were.
    assert!(
        !p.log().contains(&format!("advertised as {small}")),
        "{}",
        p.log()
    );
    k.with_seen(|s| {
        for (r, at) in [(big, big_at), (VF, vf_at)] {
            let lists = &s.history[r][at..];
            // The stream sends the latest list: a hold-back shorter than the kubelet's
            // read may not be among them (the log's check above stands then).
            let Some(held_back) = lists
                .iter()
                .position(|l| !l.is_empty() && l.iter().all(|d| d.health == "Unhealthy"))
            else {
                continue;
            };
            assert!(
                lists[held_back..]
                    .iter()
                    .flatten()
                    .all(|d| d.health == "Unhealthy"),
                "{r}: a healthy device after the hold-back: {lists:?}"
            );
        }
    });
    k.with_seen(|s| {
        // Until its pod let go of it (after, it may move there before the carving).
        let before = &s.history[VF][..vf_at];
        assert!(
            before.iter().flatten().all(|d| d.id != two[0]),
            "the held VF was never offered as accelvirt.io/vf: {before:?}"
        );
    });
    let l = accelvirt_tests::layout(&d.ctl_json(&["vf", "list"]));
    assert_eq!(l.len(), 4);
    assert!(l.iter().all(|v| v["engines"] == 2), "{l:?}");
    assert!(p.log().contains("re-carving"), "{}", p.log());
    let e = api.wait_event("ProfileChanged", SEEN);
    assert_eq!(e["type"], "Normal", "{e}");
    assert_eq!(api.events("ProfileChangeRefused").len(), 1);
    // A bad file changes nothing and says why.
    std::fs::write(&file, "{ not json").unwrap();
    wait_log(&p, "keeping the profiles read before");
    assert_eq!(
        accelvirt_tests::layout(&d.ctl_json(&["vf", "list"])).len(),
        4
    );
}

/// The profiles file changes while the plugin is down and a pod holds a VF: the restarted
/// plugin asks the kubelet first, and offers the held VF only as what the pod holds it as.
#[test]
fn a_restarted_plugin_offers_a_held_vf_only_as_its_pod_holds_it() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let k = Kubelet::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.json");
    let big = "accelvirt.io/vf-4e-4g";
    std::fs::write(
        &file,
        r#"{"profiles": {"4e-4g": {"engines": 4, "memory": "4G", "queues": 64}},
            "devices": {"*": [{"profile": "4e-4g", "count": 2}]}}"#,
    )
    .unwrap();
    let args = [OsStr::new("--profiles"), file.as_os_str()];
    let mut p = DevicePlugin::start(&k, &d.sock, &args);
    let two = ids(&sim, 2);
    k.wait_list(big, SEEN, "2 VFs of 4e-4g", |l| healthy(l, &two));
    k.allocate(big, &two[..1]).unwrap();
    k.set_in_use(&[(big, vec![two[0].clone()])]);
    p.stop();
    // Down: the file loses 4e-4g, and names no device (the layout stays as acceld holds it).
    std::fs::write(
        &file,
        r#"{"profiles": {"2e-2g": {"engines": 2, "memory": "2G", "queues": 32}}}"#,
    )
    .unwrap();
    let vf_at = k.with_seen(|s| s.history.get(VF).map_or(0, Vec::len));
    let _p = DevicePlugin::start(&k, &d.sock, &args);
    k.wait_list(VF, SEEN, "the free VF, as accelvirt.io/vf", |l| {
        healthy(l, &two[1..])
    });
    k.wait_list(big, SEEN, "the held VF, as its pod holds it", |l| {
        healthy(l, &two[..1])
    });
    k.with_seen(|s| {
        let lists = &s.history[VF][vf_at..];
        assert!(
            lists.iter().flatten().all(|d| d.id != two[0]),
            "the held VF offered as accelvirt.io/vf: {lists:?}"
        );
    });
    // Released: it moves to what its shape says now.
    k.set_in_use(&[]);
    k.wait_list(VF, SEEN, "both VFs, as accelvirt.io/vf", |l| {
        healthy(l, &two)
    });
}

/// With a profiles file in use and no answer from the kubelet's pod resources, the plugin
/// cannot know what pods hold each VF as: it offers none, and says why.
#[test]
fn without_the_kubelets_pod_resources_no_vf_is_offered_under_profiles() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "2"]);
    let k = Kubelet::start();
    std::fs::remove_file(&k.pod_resources).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.json");
    std::fs::write(
        &file,
        r#"{"profiles": {"2e-2g": {"engines": 2, "memory": "2G", "queues": 32}}}"#,
    )
    .unwrap();
    let p = DevicePlugin::start(&k, &d.sock, &[OsStr::new("--profiles"), file.as_os_str()]);
    wait_log(&p, "no VF is offered until the kubelet's pod resources");
    k.wait_list(VF, SEEN, "registered, and nothing offered", |l| {
        l.is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));
    k.with_seen(|s| {
        assert!(
            s.history[VF].iter().all(Vec::is_empty),
            "{:?}",
            s.history[VF]
        )
    });
    // Said once, not once per try.
    let log = p.log();
    assert_eq!(log.matches("no VF is offered until").count(), 1, "{log}");
}

/// Events are posted off the plugin's path: an API server that takes the connection and
/// never answers holds up no re-carve and no device list.
#[test]
fn a_stalled_api_server_holds_nothing_up() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let k = Kubelet::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.json");
    let write = |count: u32| {
        let tmp = dir.path().join(".new");
        std::fs::write(
            &tmp,
            format!(
                r#"{{"profiles": {{"p": {{"engines": 2, "memory": "2G", "queues": 8}}}},
                    "devices": {{"*": [{{"profile": "p", "count": {count}}}]}}}}"#
            ),
        )
        .unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(2);
    let api = kube_api::ApiServer::stalled();
    let mut args = vec![OsStr::new("--profiles"), file.as_os_str()];
    let cluster = kube_api::plugin_args(&api, "node-a");
    args.extend(cluster.iter().map(|a| a.as_os_str()));
    let p = DevicePlugin::start_with_env(&k, &d.sock, &args, api.env());
    let p_res = "accelvirt.io/vf-p";
    k.wait_list(p_res, SEEN, "2 VFs carved", |l| healthy(l, &ids(&sim, 2)));
    // Its ProfileChanged is still on the way (each try waits 5 s for an answer): the next
    // change is carried out all the same.
    write(4);
    k.wait_list(p_res, SEEN, "4 VFs carved", |l| healthy(l, &ids(&sim, 4)));
    wait_log(&p, "re-carved to 4");
    assert!(!p.log().contains("not posted"), "{}", p.log());
}

#[test]
fn a_failed_re_carve_is_said_once_and_not_tried_again_each_resync() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let k = Kubelet::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profiles.json");
    let write = |profile: &str| {
        let tmp = dir.path().join(".new");
        std::fs::write(
            &tmp,
            format!(r#"{{"profiles": {{"p": {profile}}}, "devices": {{"*": [{{"profile": "p", "count": 2}}]}}}}"#),
        )
        .unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    // More engines than the board has: acceld refuses the VFs.
    write(r#"{"engines": 64, "memory": "1G", "queues": 4}"#);
    let p = DevicePlugin::start(&k, &d.sock, &[OsStr::new("--profiles"), file.as_os_str()]);
    wait_log(&p, "ProfileChangeFailed");
    // Past a resync: not tried again (each try destroys and half-creates the device's VFs).
    std::thread::sleep(accel_device_plugin::state::RESYNC + Duration::from_millis(1500));
    let log = p.log();
    assert_eq!(log.matches("re-carving to").count(), 1, "{log}");
    assert_eq!(log.matches("ProfileChangeFailed").count(), 1, "{log}");
    // A file that can be carried out is, at once.
    write(r#"{"engines": 2, "memory": "2G", "queues": 8}"#);
    let two = ids(&sim, 2);
    k.wait_list(
        "accelvirt.io/vf-p",
        SEEN,
        "2 VFs of the corrected profile",
        |l| healthy(l, &two),
    );
    assert_eq!(
        accelvirt_tests::layout(&d.ctl_json(&["vf", "list"])).len(),
        2
    );
}

#[test]
fn imported_remote_vfs_are_advertised_and_unhealthy_while_their_link_is_down() {
    let rt = tempfile::tempdir().unwrap();
    let dir = rt.path();
    // An importer's state file, as `accel-remote import` keeps it (this process stands in
    // for the importer: the plugin, like accelctl, lists only importers still running).
    let mut v = host_driver::imported::ImportedVf {
        socket: dir.join("remote0.sock"),
        exporter: "10.0.0.1:7700".into(),
        vf: 3,
        link: "up".into(),
        pid: std::process::id(),
        ..Default::default()
    };
    host_driver::imported::write(dir, &v).unwrap();
    let (_sim, _d, k, _p) = setup(0, &[OsStr::new("--imported"), dir.as_os_str()]);
    let id = remote_id("10.0.0.1:7700", 3);
    let r = "accelvirt.io/vf-remote";
    let one = std::slice::from_ref(&id);
    k.wait_list(r, SEEN, "the remote VF, healthy", |l| healthy(l, one));
    let a = k.allocate(r, one).unwrap();
    assert_eq!(std::path::Path::new(&a.mounts[0].host_path), v.socket);
    assert_eq!(
        a.envs["VFIO_USER_RESOURCE_ACCELVIRT_IO_VF-REMOTE"],
        a.mounts[0].container_path
    );
    v.link = "down".into();
    host_driver::imported::write(dir, &v).unwrap();
    k.wait_list(r, SEEN, "unhealthy while the link is down", |l| {
        health_of(l, &id) == "Unhealthy"
    });
    v.link = "up".into();
    host_driver::imported::write(dir, &v).unwrap();
    k.wait_list(r, SEEN, "healthy again", |l| healthy(l, one));
}
