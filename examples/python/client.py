"""A Python client for k4s: calls a service through MessagingService.Request.

    /usr/bin/python3 client.py --address 127.0.0.1:50051 calculator-service \
        '{"operation": "sum", "operands": [1, 2, 3]}'
prints the reply as JSON; exits 1 with the gRPC status on error.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from k4s.v1 import messaging_service_pb2 as pb  # noqa: E402
from k4s.v1 import messaging_service_pb2_grpc as pb_grpc  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser(description="Send a request to a k4s container or service")
    parser.add_argument("target")
    parser.add_argument("json")
    parser.add_argument("--address", default=os.environ.get("K4S_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        print(json.dumps(request(args.address, args.target, json.loads(args.json), args.timeout,
                                 os.environ.get("K4S_TOKEN", ""))))
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
