"""A Python client for k4s: calls a service through MessagingService.Request, or applies a
manifest through ResourceService.Apply.

    /usr/bin/python3 client.py --address 127.0.0.1:50051 calculator-service \
        '{"operation": "sum", "operands": [1, 2, 3]}'
prints the reply as JSON; exits 1 with the gRPC status on error.

    /usr/bin/python3 client.py --address 127.0.0.1:50051 --apply manifest.yaml
prints "kind/name action" per object; a rejected manifest prints the status and then each field
violation ("  field: description") that the server put in the status details as a
google.rpc.BadRequest (in the grpc-status-details-bin trailer).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory  # noqa: E402,F401
from k4s.v1 import messaging_service_pb2 as pb  # noqa: E402
from k4s.v1 import messaging_service_pb2_grpc as pb_grpc  # noqa: E402
from k4s.v1 import resource_service_pb2 as rpb  # noqa: E402
from k4s.v1 import resource_service_pb2_grpc as rpb_grpc  # noqa: E402


def request(address, target, value, timeout=10.0, token=""):
    """Sends a JSON request to a container or service and returns the decoded reply."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.MessagingServiceStub(channel)
        reply = stub.Request(
            pb.RequestRequest(target=target, data=json.dumps(value).encode(),
                              content_type="application/json", timeout_ms=int(timeout * 1000)),
            timeout=timeout + 1, metadata=metadata)
        return json.loads(reply.data.decode()) if reply.data else None


def apply(address, manifest, token=""):
    """Applies manifest text; returns (kind, name, action) per object."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        reply = rpb_grpc.ResourceServiceStub(channel).Apply(
            rpb.ApplyRequest(manifest=manifest), timeout=30, metadata=metadata)
        return [(r.kind, r.name, r.action) for r in reply.results]


def _rpc_types():
    """google.rpc.Status and google.rpc.BadRequest, from the descriptor set generate.sh builds."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen", "google_rpc.binpb")
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    pool = descriptor_pool.Default()
    for file in files:  # their imports (any, duration) are already in the pool
        pool.Add(file)
    factory = message_factory.MessageFactory(pool)
    return (factory.GetPrototype(pool.FindMessageTypeByName("google.rpc.Status")),
            factory.GetPrototype(pool.FindMessageTypeByName("google.rpc.BadRequest")))


def field_violations(err):
    """The google.rpc.BadRequest field violations of a failed call, as (field, description):
    the server puts a google.rpc.Status in the grpc-status-details-bin trailer."""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status_type, bad_request_type = _rpc_types()
        out = []
        for detail in status_type.FromString(value).details:
            bad = bad_request_type()
            if detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
                out.extend((v.field, v.description) for v in bad.field_violations)
        return out
    return []


def main():
    parser = argparse.ArgumentParser(description="Send a request to a k4s container or service, or apply a manifest")
    parser.add_argument("target", nargs="?")
    parser.add_argument("json", nargs="?")
    parser.add_argument("--apply", metavar="FILE", help="apply this manifest instead")
    parser.add_argument("--address", default=os.environ.get("K4S_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.apply:
        try:
            with open(args.apply, encoding="utf-8") as f:
                for kind, name, action in apply(args.address, f.read(), os.environ.get("K4S_TOKEN", "")):
                    print(f"{kind.lower()}/{name} {action}")
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            for field, description in field_violations(err):
                print(f"  {field}: {description}", file=sys.stderr)
            sys.exit(1)
        return
    if args.target is None or args.json is None:
        parser.error("TARGET and JSON are required (or --apply FILE)")
    try:
        print(json.dumps(request(args.address, args.target, json.loads(args.json), args.timeout,
                                 os.environ.get("K4S_TOKEN", ""))))
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
