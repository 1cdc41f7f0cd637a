//! The Kubernetes manifests in deploy/, judged by tests/py/validate_manifests.py: each
//! document deserialized into the official Kubernetes Python client's model of its kind (and
//! every key of it kept by the model: no unknown fields), and what the project needs of them
//! (the plugin's flags reaching the host paths through its mounts, the profiles, the KubeVirt
//! host devices). The client and PyYAML come from PyPI into a virtual environment under
//! target/, made once and reused. The validator is shown to fail too: copies of the manifests,
//! each broken in one way, are each refused with the problem named.
use accelvirt_tests::root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The virtual environment's python: target/py-k8s, made once (under a lock, so that test
/// threads and processes do not make it together) with the `kubernetes` client and PyYAML.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| accelvirt_tests::python_venv("py-k8s", &["kubernetes>=29", "pyyaml"]))
}

fn validate(dir: &Path) -> Output {
    Command::new(python())
        .arg(root().join("tests/py/validate_manifests.py"))
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn the_manifests_validate() {
    let o = validate(&root().join("deploy"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.starts_with("ok: "),
        "deploy/ does not validate:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every manifest file is read: the plugin's, KubeVirt's and the example pod's.
    assert!(out.contains(" in 3 files"), "{out}");
}

/// A broken copy: in `file`, each `(from, to)` replaced (the first occurrence), and a line of
/// the validator's complaint that must be there.
struct Broken {
    what: &'static str,
    file: &'static str,
    edits: &'static [(&'static str, &'static str)],
    says: &'static str,
}

const PLUGIN: &str = "accel-device-plugin.yaml";
const KUBEVIRT: &str = "kubevirt-permitted-host-devices.yaml";
const POD: &str = "example-pod.yaml";

const BROKEN: &[Broken] = &[
    Broken {
        what: "a typo'd key (unknown to the model, which would ignore it)",
        file: PLUGIN,
        edits: &[("volumeMounts:", "volumeMount:")],
        says: "unknown field spec.template.spec.containers[0].volumeMount",
    },
    Broken {
        what: "a volumeMount with no volume",
        file: PLUGIN,
        edits: &[(
            "- name: device-plugins\n              mountPath:",
            "- name: device-plugin\n              mountPath:",
        )],
        says: "no volume named 'device-plugin'",
    },
    Broken {
        what: "the ConfigMap mounted with subPath",
        file: PLUGIN,
        edits: &[(
            "              mountPath: /etc/accelvirt\n",
            "              mountPath: /etc/accelvirt/profiles.json\n              subPath: profiles.json\n",
        )],
        says: "mounted with subPath 'profiles.json'",
    },
    Broken {
        what: "a required field left out (a volumeMount's mountPath)",
        file: PLUGIN,
        edits: &[("              mountPath: /etc/accelvirt\n", "")],
        says: "is not a valid V1DaemonSet",
    },
    Broken {
        what: "a selector the template's labels do not match",
        file: PLUGIN,
        edits: &[(
            "      app.kubernetes.io/name: accel-device-plugin\n  updateStrategy:",
            "      app.kubernetes.io/name: device-plugin\n  updateStrategy:",
        )],
        says: "matchLabels app.kubernetes.io/name=device-plugin is not among the template's labels",
    },
    Broken {
        what: "a flag the plugin does not have",
        file: PLUGIN,
        edits: &[("--acceld=", "--acceld-socket=")],
        says: "unknown flag --acceld-socket",
    },
    Broken {
        what: "the kubelet directory flag naming an unmounted path",
        file: PLUGIN,
        edits: &[(
            "--kubelet-dir=/var/lib/kubelet/device-plugins",
            "--kubelet-dir=/var/lib/kubelet",
        )],
        says: "--kubelet-dir /var/lib/kubelet: no volume is mounted there",
    },
    Broken {
        what: "the pod resources volume of the wrong host directory",
        file: PLUGIN,
        edits: &[(
            "path: /var/lib/kubelet/pod-resources\n",
            "path: /var/lib/kubelet/podresources\n",
        )],
        says: "is the host's /var/lib/kubelet/podresources/kubelet.sock",
    },
    Broken {
        what: "acceld's socket mounted rather than its directory",
        file: PLUGIN,
        edits: &[
            (
                "mountPath: /run/accelvirt\n",
                "mountPath: /run/accelvirt/acceld.sock\n",
            ),
            ("path: /run/accelvirt\n", "path: /run/accelvirt/acceld.sock\n"),
        ],
        says: "mount the socket's directory, not the socket",
    },
    Broken {
        what: "a privileged plugin",
        file: PLUGIN,
        edits: &[("privileged: false", "privileged: true")],
        says: "must not be privileged",
    },
    Broken {
        what: "the DaemonSet's ConfigMap volume naming no ConfigMap of the manifests",
        file: PLUGIN,
        edits: &[(
            "configMap:\n            name: accel-device-plugin-profiles",
            "configMap:\n            name: accel-device-plugin-profile",
        )],
        says: "the ConfigMap accel-device-plugin-profile is not in accelvirt",
    },
    Broken {
        what: "a device's list naming no profile",
        file: PLUGIN,
        edits: &[(r#""profile": "2e-2g""#, r#""profile": "2e-8g""#)],
        says: "device '*': no profile named '2e-8g'",
    },
    Broken {
        what: "a profile name of capitals",
        file: PLUGIN,
        edits: &[(r#""2e-2g": {"#, r#""2E-2G": {"#)],
        says: "profile '2E-2G': a name is 1 to 40 of a-z, 0-9 and '-'",
    },
    Broken {
        what: "more VFs than the board holds",
        file: PLUGIN,
        edits: &[(r#""count": 4"#, r#""count": 8"#)],
        says: "more than the reference board has: engines 24 > 16",
    },
    Broken {
        what: "profiles.json not JSON",
        file: PLUGIN,
        edits: &[(r#""devices": {"#, r#""devices" {"#)],
        says: "profiles.json is not JSON",
    },
    Broken {
        what: "KubeVirt permitting a resource the plugin does not advertise",
        file: KUBEVIRT,
        edits: &[(
            "resourceName: accelvirt.io/vf-2e-2g",
            "resourceName: accelvirt.io/vf-2e-3g",
        )],
        says: "resourceName accelvirt.io/vf-2e-3g is not advertised by accel-device-plugin",
    },
    Broken {
        what: "KubeVirt selecting the PF",
        file: KUBEVIRT,
        edits: &[(r#""1FAC:A0C1""#, r#""1FAC:A0C0""#)],
        says: "pciVendorSelector '1FAC:A0C0' is not the VF's '1FAC:A0C1'",
    },
    Broken {
        what: "KubeVirt as the resource provider",
        file: KUBEVIRT,
        edits: &[(
            "externalResourceProvider: true",
            "externalResourceProvider: false",
        )],
        says: "externalResourceProvider must be true",
    },
    Broken {
        what: "no HostDevices feature gate",
        file: KUBEVIRT,
        edits: &[("- HostDevices", "- LiveMigration")],
        says: "featureGates lacks HostDevices",
    },
    Broken {
        what: "the VM asking for a device KubeVirt does not permit",
        file: KUBEVIRT,
        edits: &[(
            "deviceName: accelvirt.io/vf-4e-4g",
            "deviceName: accelvirt.io/vf-8e-8g",
        )],
        says: "deviceName accelvirt.io/vf-8e-8g is not permitted by the KubeVirt CR",
    },
    Broken {
        what: "the pod asking for no VF",
        file: POD,
        edits: &[(r#"accelvirt.io/vf: "1""#, r#"example.com/widget: "1""#)],
        says: "asks for no accelvirt.io resource",
    },
    Broken {
        what: "the pod asking for a resource the plugin does not advertise",
        file: POD,
        edits: &[(r#"accelvirt.io/vf: "1""#, r#"accelvirt.io/vf-16e: "1""#)],
        says: "accelvirt.io/vf-16e is not a resource accel-device-plugin advertises",
    },
    Broken {
        what: "a key given twice",
        file: POD,
        edits: &[(
            "restartPolicy: Never\n",
            "restartPolicy: Never\n  restartPolicy: Always\n",
        )],
        says: "key 'restartPolicy' given twice",
    },
    Broken {
        what: "no node name for the Events",
        file: PLUGIN,
        edits: &[("- name: NODE_NAME", "- name: NODE")],
        says: "no NODE_NAME (from the downward API's spec.nodeName)",
    },
    Broken {
        what: "NODE_NAME from the pod's name, not its node's",
        file: PLUGIN,
        edits: &[("fieldPath: spec.nodeName", "fieldPath: metadata.name")],
        says: "NODE_NAME must come from fieldRef spec.nodeName",
    },
    Broken {
        what: "no token",
        file: PLUGIN,
        edits: &[(
            "automountServiceAccountToken: true",
            "automountServiceAccountToken: false",
        )],
        says: "automountServiceAccountToken is false",
    },
    Broken {
        what: "a Role that may only read events",
        file: PLUGIN,
        edits: &[(r#"verbs: ["create"]"#, r#"verbs: ["get", "list"]"#)],
        says: "may not create events in namespace default",
    },
    Broken {
        what: "the binding in the plugin's namespace, not default",
        file: PLUGIN,
        edits: &[(
            "kind: RoleBinding\nmetadata:\n  name: accel-device-plugin-events\n  namespace: default",
            "kind: RoleBinding\nmetadata:\n  name: accel-device-plugin-events\n  namespace: accelvirt",
        )],
        says: "may not create events in namespace default",
    },
];

#[test]
fn broken_copies_are_refused_with_the_problem_named() {
    let deploy = root().join("deploy");
    let mut failed = Vec::new();
    for b in BROKEN {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&deploy).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let path = dir.path().join(b.file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in b.edits {
            assert!(
                text.contains(from),
                "{}: deploy/{} no longer holds {from:?}: update this case",
                b.what,
                b.file
            );
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&path, text).unwrap();
        let o = validate(dir.path());
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || o.status.code() != Some(1) || !err.contains(b.says) {
            failed.push(format!(
                "{} (deploy/{}): exit {:?}, wanted a complaint containing {:?}; it said:\n{}{}",
                b.what,
                b.file,
                o.status.code(),
                b.says,
                String::from_utf8_lossy(&o.stdout),
                err
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} broken copies were not refused as they should be:\n\n{}",
        failed.len(),
        BROKEN.len(),
        failed.join("\n")
    );
}
