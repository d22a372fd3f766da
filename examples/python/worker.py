"""A Python k4s worker: the one the README shows and the conformance suite checks.

Attach it to an external container:   /usr/bin/python3 worker.py --address 127.0.0.1:50051 py-worker
or let a worker host spawn it:        spec.command: [/usr/bin/python3, examples/python/worker.py]

Requests (JSON):
  {"op": "echo", "value": V}                      -> V
  {"op": "words", "text": "a b c"}                -> {"words": 3, "by": CONTAINER}
  {"op": "fail", "code": "INVALID_ARGUMENT", "message": M}  -> that error
  {"op": "sleep", "ms": N}                        -> "slept", or DEADLINE_EXCEEDED when the
                                                     caller's deadline or cancel comes first
  {"op": "call", "target": T, "value": V}         -> the reply of a nested request to T
                                                     (inherits what remains of our deadline)
  {"op": "info"}                                  -> {"container": C, "deadline_ms_left": N}
Fire-and-forget messages:
  {"op": "forward", "target": T, "value": V, "delay_ms": N}
                                                  -> after N ms (default 0), sends V on to T
  anything else                                   -> logged
"""
import argparse
import os
import time

import grpc

from k4s_worker import K4sError, Worker


def make_handler(worker):
    def handle(msg):
        value = msg.value
        op = value.get("op") if isinstance(value, dict) else None
        if not msg.expects_reply:
            if op == "forward":
                time.sleep(value.get("delay_ms", 0) / 1000)
                worker.send(value["target"], value["value"])
            else:
                worker.log(f"received {value!r}")
            return None
        if op == "echo":
            return value.get("value")
        if op == "words":
            return {"words": len(str(value.get("text", "")).split()), "by": worker.container}
        if op == "fail":
            code = getattr(grpc.StatusCode, value.get("code", "UNKNOWN"), grpc.StatusCode.UNKNOWN)
            raise K4sError(code, value.get("message", "failed"))
        if op == "sleep":
            worker.log(f"sleeping {value.get('ms', 0)} ms")
            end = time.time() + value.get("ms", 0) / 1000
            while time.time() < end:
                if msg.cancelled.wait(0.01) or (msg.time_left() is not None and msg.time_left() <= 0):
                    raise K4sError(grpc.StatusCode.DEADLINE_EXCEEDED, "gave up: caller's deadline or cancel")
            return "slept"
        if op == "call":
            left = msg.time_left()
            return worker.request(value["target"], value.get("value"), timeout=left or 30.0, parent=msg)
        if op == "info":
            left = msg.time_left()
            return {"container": worker.container, "deadline_ms_left": None if left is None else int(left * 1000)}
        raise K4sError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown op {op!r}")
    return handle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("container", nargs="?", help="container to attach to (default $K4S_CONTAINER)")
    parser.add_argument("--address", default=os.environ.get("K4S_ADDRESS", "127.0.0.1:50051"))
    args = parser.parse_args()
    worker = Worker.from_env(container=args.container)
    worker.address = args.address
    worker.log(f"python worker attached as {worker.container}")
    worker.run(make_handler(worker))


if __name__ == "__main__":
    main()
