"""Validates the Kubernetes manifests in deploy/ (or another directory holding copies).

    python validate_manifests.py [DIR]

Every YAML document of DIR/*.yaml is checked; DIR defaults to the repository's deploy/.

- A document of a Kubernetes kind (core v1, apps/v1, ...) is deserialized into the official
  Python client's model of its kind (PyPI `kubernetes`), which refuses a missing required
  field or a value of the wrong type. The models ignore keys they do not know, so the model is
  serialized again and every key of the document must be in the result: a typo such as
  `volumeMount` is an unknown field. A `null` value is refused as well.
- Custom resources (KubeVirt's) are checked only where this project has something to say.
- On top of the schema, what the project needs of them:
  - every pod template: container names unique, each with an image; volume names unique;
    every volumeMount names a volume; no ConfigMap is mounted with subPath (a subPath mount
    is never updated when the ConfigMap changes); extended resources are whole numbers, the
    same in requests as in limits; accelvirt.io resources are ones the plugin advertises.
  - the accel-device-plugin DaemonSet: spec.selector.matchLabels within the template's
    labels; RollingUpdate; the node selector accelvirt.io/accelerator=true; not privileged,
    root; only the plugin's flags, and each path they name (the kubelet's device plugin
    directory, the pod resources socket, acceld's socket, sysfs, the profiles file) reached
    through a volume mount of the right host directory (a directory, not the socket itself:
    sockets are made again when their servers restart) or, for the profiles, of the
    ConfigMap in the manifests, as a directory.
  - the profiles file (the ConfigMap's profiles.json): the format accel-device-plugin reads
    (device-plugin/src/profiles.rs), and every device's list within the reference board
    (16 engines, 16 GiB in 2 MiB granules, 256 queues, 64 VFs).
  - the KubeVirt CR: the HostDevices feature gate; pciHostDevices entries with
    pciVendorSelector "1FAC:A0C1" (the VF, never the PF), externalResourceProvider true, and
    resourceName accelvirt.io/vf or accelvirt.io/vf-<a profile>, one entry each, every one
    the plugin advertises for PCI VFs.
  - a VirtualMachineInstance or VirtualMachine: host devices named once each, every
    accelvirt.io deviceName permitted by the KubeVirt CR, memory requested, disks backed by
    volumes.
  - a Pod: asks for an accelvirt.io resource.

Prints "ok: N documents checked in M files" and exits 0, or prints each problem to stderr and
exits 1 (2 for a usage error).
"""
import glob
import json
import os
import posixpath
import re
import sys

import yaml
from kubernetes import client

DOMAIN = "accelvirt.io"
GENERIC = DOMAIN + "/vf"
REMOTE = DOMAIN + "/vf-remote"
PLUGIN = "accel-device-plugin"
VF_SELECTOR = "1FAC:A0C1"

# The plugin's flags, their defaults (device-plugin/src/bin/accel-device-plugin.rs), and the
# host paths they must reach.
KUBELET_DIR = "/var/lib/kubelet/device-plugins"
POD_RESOURCES = "/var/lib/kubelet/pod-resources/kubelet.sock"
ACCELD_SOCKET = "/run/accelvirt/acceld.sock"
SYSFS = "/sys"
FLAGS = {"kubelet-dir", "acceld", "profiles", "pod-resources", "sysfs", "imported", "node-name",
         "service-account"}

# The reference board (shared-abi/src/board.rs, Board::DEFAULT).
BOARD_ENGINES = 16
BOARD_MEMORY = 16 << 30
BOARD_GRANULE = 2 << 20
BOARD_QUEUES = 256
BOARD_VFS = 64
MAX_VFS = 256  # profiles.rs MAX_VFS
PROFILE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")

# API groups whose kinds the Kubernetes client has models of: apiVersion group -> model
# prefix before the version (V1, RbacV1... are all named <Version><Kind>).
K8S_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
}
KUBEVIRT_KINDS = {"KubeVirt", "VirtualMachineInstance", "VirtualMachine"}
# Namespaces a manifest may use without creating them.
KNOWN_NAMESPACES = {"default", "kube-system", "kubevirt"}


class Problems:
    def __init__(self):
        self.list = []

    def add(self, where, what):
        self.list.append(f"{where}: {what}")


P = Problems()


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently; the API server's decoder refuses it)."""


def _mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", k.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class Doc:
    def __init__(self, file, index, body):
        self.file = file
        self.index = index
        self.body = body
        self.api_version = body.get("apiVersion")
        self.kind = body.get("kind")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        self.name = meta.get("name")
        self.namespace = meta.get("namespace")

    @property
    def where(self):
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{os.path.basename(self.file)} (document {self.index + 1}) {self.kind} {ns}{self.name}"


def load(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")))
    if not files:
        P.add(directory, "no *.yaml files")
    docs = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                bodies = list(yaml.load_all(fh, Loader=UniqueKeyLoader))
        except (OSError, yaml.YAMLError) as e:
            P.add(os.path.basename(f), f"not YAML: {e}")
            continue
        for i, b in enumerate(bodies):
            if b is None:
                continue
            where = f"{os.path.basename(f)} (document {i + 1})"
            if not isinstance(b, dict):
                P.add(where, "not a mapping")
                continue
            missing = [k for k in ("apiVersion", "kind") if not isinstance(b.get(k), str)]
            if missing or not isinstance(b.get("metadata"), dict) or not b["metadata"].get("name"):
                P.add(where, "apiVersion, kind and metadata.name are required")
                continue
            docs.append(Doc(f, i, b))
    return files, docs


# --- the schema, by the Kubernetes client's models -------------------------------------------


def model_name(doc):
    group, _, version = doc.api_version.rpartition("/")
    if group not in K8S_GROUPS or not re.fullmatch(r"v\d+((alpha|beta)\d+)?", version):
        return None
    # The models are named by version and kind only: V1DaemonSet, V1ClusterRole, V1beta1...
    return version[0].upper() + version[1:] + doc.kind


def null_and_unknown(orig, again, path, where):
    """Every key of the document must survive the round trip through the model."""
    if isinstance(orig, dict):
        if not isinstance(again, dict):
            P.add(where, f"{path or 'the document'}: a mapping where the schema has no fields")
            return
        for k, v in orig.items():
            p = f"{path}.{k}" if path else str(k)
            if v is None:
                P.add(where, f"{p}: null (give a value or leave the key out)")
            elif k not in again:
                P.add(where, f"unknown field {p}")
            else:
                null_and_unknown(v, again[k], p, where)
    elif isinstance(orig, list):
        if not isinstance(again, list) or len(again) != len(orig):
            P.add(where, f"{path}: a list the schema does not keep")
            return
        for i, (a, b) in enumerate(zip(orig, again)):
            null_and_unknown(a, b, f"{path}[{i}]", where)


def quantities_as_strings(v, key=None):
    """A copy of a document with numeric quantities (`cpu: 1`) as strings: the API server
    takes either, the client's newer (pydantic) models only a string."""
    if isinstance(v, dict):
        if key in ("limits", "requests"):
            return {k: str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else
                    quantities_as_strings(x, k) for k, x in v.items()}
        return {k: str(x) if k == "sizeLimit" and isinstance(x, (int, float)) else
                quantities_as_strings(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [quantities_as_strings(x) for x in v]
    return v


def check_schema(doc, api):
    name = model_name(doc)
    if doc.api_version.startswith("kubevirt.io/"):
        if doc.kind not in KUBEVIRT_KINDS:
            P.add(doc.where, f"a KubeVirt kind this validator does not know: {doc.kind}")
        return
    if name is None or not hasattr(client.models, name):
        P.add(doc.where, f"no Kubernetes model for apiVersion {doc.api_version} kind {doc.kind}")
        return
    try:
        obj = api._ApiClient__deserialize(quantities_as_strings(doc.body), name)
    except (ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        P.add(doc.where, f"is not a valid {name}: {msg}")
        return
    null_and_unknown(doc.body, api.sanitize_for_serialization(obj), "", doc.where)


# --- helpers ---------------------------------------------------------------------------------


def get(d, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def as_list(v):
    return v if isinstance(v, list) else []


def parse_size(s):
    """host_driver::spec::parse_size."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", s) if isinstance(s, str) else None
    if not m:
        return None
    mult = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
            "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
            "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}.get(m.group(2).lower())
    return None if mult is None else int(m.group(1)) * mult


def is_uint(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= 0xFFFFFFFF


# --- the profiles file -----------------------------------------------------------------------


def check_profiles(text, where):
    """The profiles file as accel-device-plugin reads it; returns the profile names."""

    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"key {sorted(dup)[0]!r} given twice")
        return dict(pairs)

    try:
        f = json.loads(text, object_pairs_hook=no_dups)
    except ValueError as e:
        P.add(where, f"profiles.json is not JSON: {e}")
        return set()
    if not isinstance(f, dict):
        P.add(where, "profiles.json: not an object")
        return set()
    for k in f:
        if k not in ("profiles", "devices"):
            P.add(where, f"profiles.json: unknown field {k!r} (profiles and devices)")
    profiles = f.get("profiles", {})
    devices = f.get("devices", {})
    if not isinstance(profiles, dict) or not isinstance(devices, dict):
        P.add(where, "profiles.json: profiles and devices are objects")
        return set()
    shapes = {}
    for name, p in profiles.items():
        w = f"profiles.json: profile {name!r}"
        if not PROFILE_NAME.match(name) or name == "remote":
            P.add(where, f"{w}: a name is 1 to 40 of a-z, 0-9 and '-', not at either end, "
                  "not \"remote\"")
        if not isinstance(p, dict):
            P.add(where, f"{w}: not an object")
            continue
        for k in p:
            if k not in ("engines", "memory", "queues", "vectors", "weight"):
                P.add(where, f"{w}: unknown field {k!r}")
        for k in ("engines", "memory", "queues"):
            if k not in p:
                P.add(where, f"{w}: {k} is required")
        mem = parse_size(p.get("memory"))
        if "memory" in p and not mem:
            P.add(where, f"{w}: memory {p.get('memory')!r} is not a size more than 0 "
                  "(e.g. 512M, 4G)")
        elif mem and mem % BOARD_GRANULE:
            P.add(where, f"{w}: memory {p['memory']} is not a whole number of 2 MiB granules")
        for k in ("engines", "queues"):
            if k in p and not is_uint(p[k], 1):
                P.add(where, f"{w}: {k} must be a whole number more than 0")
        if "vectors" in p and not is_uint(p["vectors"]):
            P.add(where, f"{w}: vectors must be a whole number")
        if "weight" in p and not (is_uint(p["weight"]) and 1 <= p["weight"] <= 1000):
            P.add(where, f"{w}: weight is 1..=1000")
        shape = (p.get("engines"), mem, p.get("queues"), p.get("vectors"), p.get("weight"))
        for other, s in shapes.items():
            if s == shape:
                P.add(where, f"profiles.json: profiles {other} and {name} have the same shape")
        shapes[name] = shape
    for dev, shares in devices.items():
        w = f"profiles.json: device {dev!r}"
        if not dev:
            P.add(where, f"{w}: an empty device name")
        if not isinstance(shares, list):
            P.add(where, f"{w}: not a list of {{profile, count}}")
            continue
        vfs = engines = memory = queues = 0
        for s in shares:
            if not isinstance(s, dict):
                P.add(where, f"{w}: {s!r} is not a {{profile, count}}")
                continue
            for k in s:
                if k not in ("profile", "count"):
                    P.add(where, f"{w}: unknown field {k!r}")
            prof, count = s.get("profile"), s.get("count")
            if prof not in profiles:
                P.add(where, f"{w}: no profile named {prof!r}")
            if not is_uint(count, 1):
                P.add(where, f"{w}: count {count!r} of {prof}: a whole number more than 0")
                continue
            vfs += count
            e, m, q = (shapes.get(prof) or (0, 0, 0))[:3]
            engines += count * (e if is_uint(e) else 0)
            memory += count * (m or 0)
            queues += count * (q if is_uint(q) else 0)
        if vfs > MAX_VFS:
            P.add(where, f"{w}: {vfs} VFs (at most {MAX_VFS})")
        over = [f"{what} {have} > {cap}" for what, have, cap in (
            ("VFs", vfs, BOARD_VFS), ("engines", engines, BOARD_ENGINES),
            ("memory GiB", memory / (1 << 30), BOARD_MEMORY >> 30),
            ("queues", queues, BOARD_QUEUES)) if have > cap]
        if over:
            P.add(where, f"{w}: more than the reference board has: {', '.join(over)}")
    return set(profiles)


# --- pod templates ---------------------------------------------------------------------------


def check_pod_spec(spec, where, resources):
    """What any pod template must have; `resources` are the accelvirt.io resources the
    plugin can advertise (None: not known)."""
    containers = as_list(spec.get("containers")) + as_list(spec.get("initContainers"))
    if not as_list(spec.get("containers")):
        P.add(where, "no containers")
    volumes = {}
    for v in as_list(spec.get("volumes")):
        n = v.get("name")
        if n in volumes:
            P.add(where, f"volume {n!r} given twice")
        volumes[n] = v
    names = set()
    for c in containers:
        cn = c.get("name")
        cw = f"container {cn!r}"
        if cn in names:
            P.add(where, f"{cw} given twice")
        names.add(cn)
        if not c.get("image"):
            P.add(where, f"{cw}: no image")
        paths = set()
        for m in as_list(c.get("volumeMounts")):
            v = volumes.get(m.get("name"))
            if v is None:
                P.add(where, f"{cw}: volumeMount {m.get('mountPath')!r} names no volume: "
                      f"no volume named {m.get('name')!r}")
            elif "configMap" in v and m.get("subPath"):
                P.add(where, f"{cw}: ConfigMap volume {v['name']!r} mounted with subPath "
                      f"{m['subPath']!r}: a subPath mount is never updated when the ConfigMap "
                      "changes; mount the ConfigMap as a directory")
            mp = m.get("mountPath", "")
            if not mp.startswith("/"):
                P.add(where, f"{cw}: mountPath {mp!r} is not absolute")
            if posixpath.normpath(mp) in paths:
                P.add(where, f"{cw}: two mounts at {mp}")
            paths.add(posixpath.normpath(mp))
        lim = get(c, "resources", "limits", default={}) or {}
        req = get(c, "resources", "requests", default={}) or {}
        for r in set(lim) | set(req):
            if "/" not in r or r.split("/")[0].endswith("kubernetes.io"):
                continue
            # An extended resource: a whole number, requests (if given) equal to limits.
            if r not in lim:
                P.add(where, f"{cw}: extended resource {r} in requests but not in limits")
            elif r in req and str(req[r]) != str(lim[r]):
                P.add(where, f"{cw}: extended resource {r}: requests {req[r]} != limits {lim[r]}")
            if not re.fullmatch(r"[1-9]\d*", str(lim.get(r, req.get(r)))):
                P.add(where, f"{cw}: extended resource {r}: {lim.get(r, req.get(r))!r} is not "
                      "a whole number more than 0")
            if r.startswith(DOMAIN + "/") and resources is not None and r not in resources:
                P.add(where, f"{cw}: {r} is not a resource accel-device-plugin advertises "
                      f"(it advertises {', '.join(sorted(resources))})")
    return volumes


def plugin_flags(c, where):
    """The plugin's flags, with their defaults."""
    flags = {"kubelet-dir": KUBELET_DIR, "pod-resources": POD_RESOURCES, "sysfs": SYSFS}
    for e in as_list(c.get("env")):
        if e.get("name") == "ACCELD_SOCKET" and "value" in e:
            flags["acceld"] = e["value"]
    flags.setdefault("acceld", ACCELD_SOCKET)
    argv = [str(a) for a in as_list(c.get("command"))[1:]] + [str(a) for a in as_list(c.get("args"))]
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("--"):
            P.add(where, f"argument {a!r}: the plugin takes no positional arguments")
            continue
        name, eq, value = a[2:].partition("=")
        if name not in FLAGS:
            P.add(where, f"unknown flag --{name} (the plugin's: "
                  f"{', '.join('--' + f for f in sorted(FLAGS))})")
            continue
        if not eq:
            if i >= len(argv):
                P.add(where, f"--{name} without a value")
                continue
            value = argv[i]
            i += 1
        flags[name] = value
    return flags


def mount_of(path, c, volumes):
    """The mount `path` is under, its volume, and where `path` is inside the volume."""
    path = posixpath.normpath(path)
    best = None
    for m in as_list(c.get("volumeMounts")):
        mp = posixpath.normpath(m.get("mountPath", ""))
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(posixpath.normpath(best["mountPath"])):
                best = m
    if best is None:
        return None, None, None
    rest = posixpath.relpath(path, posixpath.normpath(best["mountPath"]))
    if best.get("subPath"):
        rest = posixpath.join(best["subPath"], rest)
    return best, volumes.get(best.get("name")), posixpath.normpath(rest)


def check_host_path(flag, path, host, c, volumes, where, directory, read_only):
    """`path` (a flag's value) must be `host` on the node, through a hostPath mount of a
    directory (`directory`: `path` itself is one; else `path` is a file in a mounted one)."""
    m, v, rest = mount_of(path, c, volumes)
    if m is None or v is None:
        P.add(where, f"--{flag} {path}: no volume is mounted there (it must be the host's {host})")
        return
    hp = get(v, "hostPath", "path")
    if hp is None:
        P.add(where, f"--{flag} {path}: volume {v['name']!r} is not a hostPath volume of {host}")
        return
    seen = posixpath.normpath(posixpath.join(hp, rest))
    if seen != host:
        P.add(where, f"--{flag} {path} is the host's {seen} through volume {v['name']!r}, "
              f"not {host}")
    if not directory and rest == ".":
        P.add(where, f"--{flag} {path}: mount the socket's directory, not the socket (a "
              "server that restarts makes a new socket, which a mount of the old one hides)")
    if read_only is True and not m.get("readOnly"):
        P.add(where, f"--{flag} {path}: mount {m['mountPath']} read-only")
    if read_only is False and m.get("readOnly"):
        P.add(where, f"--{flag} {path}: the plugin writes there; mount {m['mountPath']} "
              "read-write")


def grants_event_create(rule):
    return ("" in as_list(rule.get("apiGroups")) or "*" in as_list(rule.get("apiGroups"))) and \
        any(r in ("events", "*") for r in as_list(rule.get("resources"))) and \
        any(v in ("create", "*") for v in as_list(rule.get("verbs")))


def check_events(doc, pspec, c, flags, by_kind):
    """The plugin posts Events about its node to namespace default: it needs its node's
    name, a service account token, and a role that lets it create events there."""
    where = doc.where
    node_env = [e for e in as_list(c.get("env")) if e.get("name") == "NODE_NAME"]
    if "node-name" not in flags:
        if not node_env:
            P.add(where, "no NODE_NAME (from the downward API's spec.nodeName) and no "
                  "--node-name: Events about profile changes would only be logged")
        elif get(node_env[0], "valueFrom", "fieldRef", "fieldPath") != "spec.nodeName":
            P.add(where, "NODE_NAME must come from fieldRef spec.nodeName (the node the pod "
                  "runs on)")
    sa = pspec.get("serviceAccountName") or "default"
    sa_docs = [d for d in by_kind.get("ServiceAccount", [])
               if d.name == sa and d.namespace == doc.namespace]
    automount = pspec.get("automountServiceAccountToken")
    if automount is None and sa_docs:
        automount = sa_docs[0].body.get("automountServiceAccountToken")
    if automount is False and "service-account" not in flags:
        P.add(where, "automountServiceAccountToken is false: the plugin has no token to post "
              "Events with")
    roles = {}
    for kind in ("Role", "ClusterRole"):
        for d in by_kind.get(kind, []):
            if any(grants_event_create(r) for r in as_list(d.body.get("rules"))):
                roles[(kind, d.name, d.namespace if kind == "Role" else None)] = d
    granted = False
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for b in by_kind.get(kind, []):
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and
                       s.get("namespace", b.namespace) == doc.namespace
                       for s in as_list(b.body.get("subjects"))):
                continue
            ref = b.body.get("roleRef") or {}
            rk, rn = ref.get("kind"), ref.get("name")
            # A RoleBinding grants in its own namespace; a ClusterRoleBinding everywhere.
            in_default = kind == "ClusterRoleBinding" or b.namespace == "default"
            key = (rk, rn, b.namespace if rk == "Role" else None)
            if in_default and key in roles:
                granted = True
    if not granted:
        P.add(where, f"ServiceAccount {sa} may not create events in namespace default (no "
              "Role or ClusterRole that allows it is bound to it there)")


def check_plugin(doc, by_kind):
    """The accel-device-plugin DaemonSet; returns the resources it advertises (None if they
    cannot be told)."""
    where = doc.where
    spec = doc.body.get("spec", {})
    tmpl = spec.get("template", {})
    pspec = tmpl.get("spec", {})
    sel = get(spec, "selector", "matchLabels", default={}) or {}
    labels = get(tmpl, "metadata", "labels", default={}) or {}
    if not sel:
        P.add(where, "spec.selector.matchLabels is empty")
    for k, v in sel.items():
        if labels.get(k) != v:
            P.add(where, f"spec.selector.matchLabels {k}={v} is not among the template's "
                  "labels: the DaemonSet would select no pods of its own")
    if get(spec, "updateStrategy", "type", default="RollingUpdate") != "RollingUpdate":
        P.add(where, "updateStrategy: RollingUpdate")
    if get(pspec, "nodeSelector", "accelvirt.io/accelerator") != "true":
        P.add(where, 'nodeSelector accelvirt.io/accelerator: "true" is missing')
    sa = pspec.get("serviceAccountName")
    if sa and sa != "default" and not any(
        d.name == sa and d.namespace == doc.namespace for d in by_kind.get("ServiceAccount", [])
    ):
        P.add(where, f"serviceAccountName {sa}: no such ServiceAccount in {doc.namespace}")
    plugin = [c for c in as_list(pspec.get("containers")) if c.get("name") == PLUGIN]
    if not plugin:
        P.add(where, f"no container named {PLUGIN}")
        check_pod_spec(pspec, where, None)
        return None
    c = plugin[0]
    volumes = {v.get("name"): v for v in as_list(pspec.get("volumes"))}
    sc = c.get("securityContext") or {}
    psc = pspec.get("securityContext") or {}
    if sc.get("privileged"):
        P.add(where, "the plugin opens no device: it must not be privileged")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    if (uid not in (None, 0)) or sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        P.add(where, "the plugin must run as root (the kubelet's device plugin directory is "
              "root's)")
    flags = plugin_flags(c, where)
    check_events(doc, pspec, c, flags, by_kind)
    check_host_path("kubelet-dir", flags["kubelet-dir"], KUBELET_DIR, c, volumes, where,
                    True, False)
    check_host_path("pod-resources", flags["pod-resources"], POD_RESOURCES, c, volumes, where,
                    False, None)
    check_host_path("acceld", flags["acceld"], ACCELD_SOCKET, c, volumes, where, False, None)
    check_host_path("sysfs", flags["sysfs"], SYSFS, c, volumes, where, True, True)
    if "imported" in flags:
        m, v, _ = mount_of(flags["imported"], c, volumes)
        if m is None or v is None or "hostPath" not in v:
            P.add(where, f"--imported {flags['imported']}: no hostPath volume is mounted there")
    resources = {GENERIC} | ({REMOTE} if "imported" in flags else set())
    if "profiles" not in flags:
        return resources
    path = flags["profiles"]
    m, v, rest = mount_of(path, c, volumes)
    if m is None or v is None or "configMap" not in v:
        P.add(where, f"--profiles {path}: no ConfigMap volume is mounted there")
        return None
    if m.get("subPath"):
        return None  # said by check_pod_spec
    if "/" in rest or rest == ".":
        P.add(where, f"--profiles {path}: not a file of ConfigMap volume {v['name']!r}")
        return None
    cm_name = v["configMap"].get("name")
    key = rest
    items = as_list(v["configMap"].get("items"))
    if items:
        key = next((i.get("key") for i in items if i.get("path") == rest), None)
    cms = [d for d in by_kind.get("ConfigMap", [])
           if d.name == cm_name and d.namespace == doc.namespace]
    if not cms:
        P.add(where, f"--profiles: the ConfigMap {cm_name} is not in {doc.namespace} in these "
              "manifests")
        return None
    data = cms[0].body.get("data") or {}
    if key not in data:
        P.add(where, f"--profiles {path}: ConfigMap {cm_name} has no key {key or rest!r}")
        return None
    names = check_profiles(data[key], cms[0].where)
    return resources | {f"{GENERIC}-{n}" for n in names}


# --- KubeVirt --------------------------------------------------------------------------------


def check_kubevirt(doc, resources):
    """The KubeVirt CR; returns the resource names it permits."""
    where = doc.where
    conf = get(doc.body, "spec", "configuration", default={}) or {}
    gates = as_list(get(conf, "developerConfiguration", "featureGates"))
    if "HostDevices" not in gates:
        P.add(where, "spec.configuration.developerConfiguration.featureGates lacks HostDevices")
    permitted = set()
    pci = get(conf, "permittedHostDevices", "pciHostDevices")
    if not isinstance(pci, list) or not pci:
        P.add(where, "spec.configuration.permittedHostDevices.pciHostDevices is empty")
        return permitted
    for i, e in enumerate(pci):
        w = f"pciHostDevices[{i}]"
        if not isinstance(e, dict):
            P.add(where, f"{w}: not a mapping")
            continue
        for k in e:
            if k not in ("pciVendorSelector", "resourceName", "externalResourceProvider"):
                P.add(where, f"{w}: unknown field {k}")
        r = e.get("resourceName")
        if e.get("pciVendorSelector") != VF_SELECTOR:
            P.add(where, f"{w} ({r}): pciVendorSelector {e.get('pciVendorSelector')!r} is not "
                  f"the VF's {VF_SELECTOR!r}")
        if e.get("externalResourceProvider") is not True:
            P.add(where, f"{w} ({r}): externalResourceProvider must be true (accel-device-plugin "
                  "advertises the VFs, not KubeVirt)")
        if r in permitted:
            P.add(where, f"{w}: resourceName {r} given twice")
        permitted.add(r)
        if not isinstance(r, str) or not r.startswith(DOMAIN + "/"):
            P.add(where, f"{w}: resourceName {r!r} is not accelvirt.io's")
        elif r == REMOTE:
            P.add(where, f"{w}: {r} are vfio-user sockets, not PCI devices")
        elif resources is not None and r not in resources:
            P.add(where, f"{w}: resourceName {r} is not advertised by accel-device-plugin: it "
                  f"is {GENERIC} or {GENERIC}-<a profile of the ConfigMap> "
                  f"({', '.join(sorted(resources - {REMOTE}))})")
    for r in sorted((resources or set()) - {REMOTE} - permitted):
        P.add(where, f"{r} is advertised by accel-device-plugin but not permitted: VMs cannot "
              "be given it")
    return permitted


def check_vm(doc, permitted):
    where = doc.where
    if doc.kind == "VirtualMachine":
        spec = get(doc.body, "spec", "template", "spec")
    else:
        spec = doc.body.get("spec")
    if not isinstance(spec, dict):
        P.add(where, "no spec" if doc.kind != "VirtualMachine" else "no spec.template.spec")
        return
    domain = spec.get("domain") or {}
    if not (get(domain, "resources", "requests", "memory") or get(domain, "memory", "guest")):
        P.add(where, "no memory requested (domain.resources.requests.memory)")
    vols = {v.get("name") for v in as_list(spec.get("volumes"))}
    for d in as_list(get(domain, "devices", "disks")):
        if d.get("name") not in vols:
            P.add(where, f"disk {d.get('name')!r}: no volume of that name")
    names, accel = set(), 0
    for i, h in enumerate(as_list(get(domain, "devices", "hostDevices"))):
        w = f"hostDevices[{i}]"
        for k in h:
            if k not in ("name", "deviceName", "tag"):
                P.add(where, f"{w}: unknown field {k}")
        if not h.get("name") or h.get("name") in names:
            P.add(where, f"{w}: a name is required, once each")
        names.add(h.get("name"))
        dn = h.get("deviceName")
        if isinstance(dn, str) and dn.startswith(DOMAIN + "/"):
            accel += 1
            if permitted is None:
                P.add(where, f"{w}: {dn}: no KubeVirt CR in these manifests permits it")
            elif dn not in permitted:
                P.add(where, f"{w}: deviceName {dn} is not permitted by the KubeVirt CR "
                      f"(permitted: {', '.join(sorted(permitted))})")
    if not accel:
        P.add(where, "asks for no accelvirt.io host device")


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    directory = argv[1] if len(argv) == 2 else os.path.join(here, "..", "..", "deploy")
    files, docs = load(directory)
    api = client.ApiClient()
    for d in docs:
        check_schema(d, api)
    try:
        check_project(directory, docs)
    except (AttributeError, TypeError, KeyError):
        # A document of the wrong shape: its schema problems are already said.
        if not P.list:
            raise
    if P.list:
        for p in P.list:
            print(p, file=sys.stderr)
        print(f"{len(P.list)} problem(s) in {directory}", file=sys.stderr)
        return 1
    print(f"ok: {len(docs)} documents checked in {len(files)} files")
    return 0


def check_project(directory, docs):
    """What the project needs of the manifests, beyond the schema."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.kind, []).append(d)
    namespaces = {d.name for d in by_kind.get("Namespace", [])} | KNOWN_NAMESPACES
    for d in docs:
        if d.namespace and d.namespace not in namespaces:
            P.add(d.where, f"namespace {d.namespace} is not created by these manifests")
    plugins = [d for d in by_kind.get("DaemonSet", []) if d.name == PLUGIN]
    resources = None
    if not plugins:
        P.add(directory, f"no DaemonSet named {PLUGIN}")
    for d in plugins:
        resources = check_plugin(d, by_kind)
    for d in by_kind.get("DaemonSet", []) + by_kind.get("Pod", []):
        pspec = get(d.body, "spec", "template", "spec") if d.kind == "DaemonSet" else d.body.get("spec")
        check_pod_spec(pspec or {}, d.where, resources)
    for d in by_kind.get("Pod", []):
        lim = {}
        for c in as_list(get(d.body, "spec", "containers")):
            lim.update(get(c, "resources", "limits", default={}) or {})
        if not any(r.startswith(DOMAIN + "/") for r in lim):
            P.add(d.where, "asks for no accelvirt.io resource in resources.limits")
    permitted = None
    for d in by_kind.get("KubeVirt", []):
        if not d.api_version.startswith("kubevirt.io/"):
            continue
        permitted = (permitted or set()) | check_kubevirt(d, resources)
    for d in by_kind.get("VirtualMachineInstance", []) + by_kind.get("VirtualMachine", []):
        if d.api_version.startswith("kubevirt.io/"):
            check_vm(d, permitted)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
