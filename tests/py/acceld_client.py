"""Drives acceld's API from Python's grpcio, with stubs generated from api/proto by
grpc_tools.protoc: the API is the .proto, not our Rust client.

    python acceld_client.py STUBS_DIR ACCELD_SOCKET DEVICE

Exits 0 when every check holds; prints what failed otherwise.
"""
import sys

sys.path.insert(0, sys.argv[1])
sock, device = sys.argv[2], sys.argv[3]

import grpc  # noqa: E402
from accelvirt.v1 import accelvirt_pb2 as pb  # noqa: E402
from accelvirt.v1 import accelvirt_pb2_grpc as rpc  # noqa: E402

# gRPC core (1.57 and later) sends a UNIX socket's path, %-encoded, as :authority, which is
# no authority under RFC 9113 and which h2 (tonic's HTTP/2) refuses; "localhost" is what
# grpc-go and the kubelet send over UNIX sockets.
channel = grpc.insecure_channel("unix:" + sock, options=[("grpc.default_authority", "localhost")])
api = rpc.AccelvirtStub(channel)


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


devices = api.ListDevices(pb.ListDevicesRequest(), timeout=10).devices
check([d.name for d in devices] == [device], f"one device, {device}: {devices}")
check(devices[0].online and devices[0].transport == "vfio-user", f"online over vfio-user: {devices}")

info = api.GetDeviceInfo(pb.DeviceRequest(device=device), timeout=10)
check(info.info.total_vfs >= 4 and info.info.engines > 0, f"device info: {info}")
check(info.info.caps & (1 << 4), "the EVENTS capability")

# Create two VFs of an explicit size; the answer carries their resources and hand-offs.
granules = (256 << 20) >> info.info.granule_shift
made = api.CreateVfs(
    pb.CreateVfsRequest(
        device=device,
        count=2,
        spec=pb.VfSpec(engines=1, mem_granules=granules, queues=4, vectors=4, weight=300),
    ),
    timeout=30,
)
check([v.vf for v in made.vfs] == [0, 1], f"VFs 0 and 1: {made.vfs}")
check(all(v.queue_count == 4 and v.mem_granules == granules and v.weight == 300 for v in made.vfs), f"sizes: {made.vfs}")
check(made.handoffs[1].endpoint.socket.path.endswith("accel0-vf1.sock"), f"hand-off: {made.handoffs[1]}")
check("vfio-user-pci" in made.handoffs[0].qemu, f"QEMU line: {made.handoffs[0].qemu}")

# Resize one resource, leave the rest.
r = api.ResizeVf(pb.ResizeVfRequest(device=device, vf=1, spec=pb.VfSpec(queues=8)), timeout=30)
check(r.vfs[0].queue_count == 8 and r.vfs[0].mem_granules == granules, f"resize: {r}")

listed = api.ListVfs(pb.DeviceRequest(device=device), timeout=10)
check([(v.vf, v.queue_count) for v in listed.vfs] == [(0, 4), (1, 8)], f"list: {listed}")

# Errors are gRPC statuses with accelctl's exit code beside them.
try:
    api.GetVf(pb.VfRequest(device=device, vf=63), timeout=10)
    check(False, "VF 63 does not exist")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.NOT_FOUND, f"NOT_FOUND, got {e.code()}")
    md = dict(e.trailing_metadata() or ())
    check(md.get("accelvirt-exit-code") == "3", f"exit code 3 in metadata: {md}")
try:
    api.CreateVfs(pb.CreateVfsRequest(device=device, count=0), timeout=10)
    check(False, "count 0 is refused")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"INVALID_ARGUMENT, got {e.code()}")

stats = api.GetStats(pb.DeviceRequest(device=device), timeout=10)
check(len(stats.vfs) == 2 and stats.device.vfs_created >= 2, f"stats: {stats}")

health = api.GetHealth(pb.DeviceRequest(device=device), timeout=10)
check(health.online and health.heartbeat_ok and not health.drift and not health.problems, f"health: {health}")

# WatchEvents: the kept events first (the creates' state changes), then new ones (an FLR).
stream = api.WatchEvents(pb.EventsRequest(device=device), timeout=30)
api.ResetVf(pb.VfRequest(device=device, vf=0), timeout=10)
kinds = []
for ev in stream:
    kinds.append((ev.kind, ev.vf if ev.HasField("vf") else None))
    if ("vf_flr_done", 0) in kinds:
        break
check(("vf_state_changed", 1) in kinds, f"kept events: {kinds}")
stream.cancel()

gone = api.DestroyVfs(pb.DestroyVfsRequest(device=device, all=True), timeout=30)
check(gone.destroyed == 2, f"destroyed: {gone}")
check(len(api.ListVfs(pb.DeviceRequest(device=device), timeout=10).vfs) == 0, "no VF left")
print("ok")
