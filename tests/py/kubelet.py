"""Plays the kubelet for accel-device-plugin with Python's grpcio, stubs generated from
device-plugin/proto/deviceplugin/v1beta1/api.proto by grpc_tools.protoc: another gRPC and
protobuf implementation than the plugin's is the judge of its wire format.

    python kubelet.py STUBS_DIR KUBELET_DIR ID...

Serves the registration socket KUBELET_DIR/kubelet.sock, waits for the plugin of
accelvirt.io/vf to register, then does what the kubelet's device manager does with it and
checks each answer against the IDs given (every VF the plugin should list). Prints "ok".
"""
import queue
import sys
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])
kubelet_dir, want = sys.argv[2], sorted(sys.argv[3:])

import grpc  # noqa: E402
from deviceplugin.v1beta1 import api_pb2 as pb  # noqa: E402
from deviceplugin.v1beta1 import api_pb2_grpc as rpc  # noqa: E402


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


registered = queue.Queue()


class Registration(rpc.RegistrationServicer):
    def Register(self, request, context):
        registered.put(request)
        return pb.Empty()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
rpc.add_RegistrationServicer_to_server(Registration(), server)
server.add_insecure_port("unix:" + kubelet_dir + "/kubelet.sock")
server.start()
print("serving", flush=True)

try:
    reg = registered.get(timeout=30)
except queue.Empty:
    check(False, "no registration within 30 s")
check(reg.version == "v1beta1", f"version {reg.version!r}")
check(reg.resource_name == "accelvirt.io/vf", f"resource {reg.resource_name!r}")
check(reg.endpoint == "accelvirt-vf.sock", f"endpoint {reg.endpoint!r}")
check(reg.options.get_preferred_allocation_available, "preferred allocation offered")
check(not reg.options.pre_start_required, "no PreStartContainer asked for")

# As grpc-go and the kubelet do over UNIX sockets: ":authority" is "localhost" (gRPC core
# 1.57 and later would send the %-encoded path, which is no authority).
channel = grpc.insecure_channel(
    "unix:" + kubelet_dir + "/" + reg.endpoint,
    options=[("grpc.default_authority", "localhost")],
)
plugin = rpc.DevicePluginStub(channel)
opts = plugin.GetDevicePluginOptions(pb.Empty(), timeout=10)
check(opts == reg.options, f"options {opts} differ from the registration's")

stream = plugin.ListAndWatch(pb.Empty(), timeout=60)
deadline = time.time() + 20
devices = []
for resp in stream:
    devices = resp.devices
    if sorted(d.ID for d in devices) == want and all(d.health == "Healthy" for d in devices):
        break
    check(time.time() < deadline, f"the list never became {want}: {devices}")
check(all(not d.HasField("topology") for d in devices), "no NUMA node for sockets")

ids = [d.ID for d in devices]
a = plugin.Allocate(
    pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids[:2])]),
    timeout=10,
)
check(len(a.container_responses) == 1, "one container's answer")
c = a.container_responses[0]
check(len(c.mounts) == 2, f"two mounts: {c.mounts}")
var = c.envs.get("VFIO_USER_RESOURCE_ACCELVIRT_IO_VF", "")
check(var.split(",") == [m.container_path for m in c.mounts], f"the variable lists the mounts: {var}")
check(c.envs.get("ACCEL_DEVICE") == c.mounts[0].container_path, "ACCEL_DEVICE names the first")
check(all(m.host_path.endswith(".sock") and not m.read_only for m in c.mounts), "socket mounts")

try:
    plugin.Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["nope"])]),
        timeout=10,
    )
    check(False, "an unknown ID was allocated")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown ID: {e.code()}")

p = plugin.GetPreferredAllocation(
    pb.PreferredAllocationRequest(
        container_requests=[
            pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=ids, must_include_deviceIDs=[ids[-1]], allocation_size=2
            )
        ]
    ),
    timeout=10,
)
got = list(p.container_responses[0].deviceIDs)
check(len(got) == 2 and got[0] == ids[-1] and set(got) <= set(ids), f"preferred {got}")
plugin.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids[:1]), timeout=10)
stream.cancel()
server.stop(0)
print("ok")
