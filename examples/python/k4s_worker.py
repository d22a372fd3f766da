"""A small k4s worker library for Python, on the stubs grpc_tools.protoc generates from proto/.

A process attaches to one named container over WorkerService.Connect, receives deliveries,
answers them, and can send its own messages and requests. Payloads are JSON.

    from k4s_worker import Worker

    def handle(msg):          # msg.value is the decoded JSON; return the reply (for requests)
        return msg.value * 2

    Worker.from_env().run(handle)   # K4S_ADDRESS, K4S_CONTAINER, K4S_ATTACH_TOKEN, K4S_TOKEN
                                    # (set by the worker host that spawned it)
"""
import itertools
import json
import os
import queue
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from k4s.v1 import worker_service_pb2 as pb  # noqa: E402
from k4s.v1 import worker_service_pb2_grpc as pb_grpc  # noqa: E402

JSON = "application/json"


class K4sError(Exception):
    """A failed call or handler, with a gRPC status code (grpc.StatusCode)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _code_of(number):
    return next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)


class Message:
    """One delivery: value (decoded JSON), expects_reply, deadline (time.time() based), sender."""

    def __init__(self, delivery):
        self.id = delivery.id
        self.data = delivery.data
        self.content_type = delivery.content_type or JSON
        self.expects_reply = delivery.expects_reply
        self.sender = delivery.sender
        self.attempt = delivery.attempt
        self.deadline = time.time() + delivery.timeout_ms / 1000 if delivery.timeout_ms else None
        self.cancelled = threading.Event()

    @property
    def value(self):
        if self.content_type.startswith(JSON):
            return json.loads(self.data.decode("utf-8")) if self.data else None
        if self.content_type.startswith("text/"):
            return self.data.decode("utf-8")
        return self.data

    def time_left(self):
        """Seconds before the caller's deadline, or None when there is none."""
        return None if self.deadline is None else self.deadline - time.time()


class Worker:
    """A process serving one k4s container."""

    def __init__(self, address, container, token="", bearer=""):
        self.address = address
        self.container = container
        self.token = token
        self.bearer = bearer
        self._out = queue.Queue()
        self._ids = itertools.count(1)
        self._calls = {}
        self._messages = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Set once the stream is over: heartbeats go on while a stopping worker finishes the
        # message in hand, or the server would take the silence for a lost session.
        self._closed = threading.Event()

    @classmethod
    def from_env(cls, container=None):
        """A worker configured from the environment a k4s worker host gives spawned commands."""
        return cls(
            os.environ.get("K4S_ADDRESS", "127.0.0.1:50051"),
            container or os.environ["K4S_CONTAINER"],
            os.environ.get("K4S_ATTACH_TOKEN", ""),
            os.environ.get("K4S_TOKEN", ""),
        )

    # -- outgoing -------------------------------------------------------------------------
    def _frames(self):
        yield pb.ConnectRequest(frames=[pb.WorkerFrame(attach=pb.Attach(
            container=self.container, token=self.token, host=f"python@{socket.gethostname()}"))])
        while True:
            frame = self._out.get()
            if frame is None:
                return
            batch = [frame]
            while not self._out.empty() and len(batch) < 256:  # coalesce what is already queued
                nxt = self._out.get_nowait()
                if nxt is None:
                    yield pb.ConnectRequest(frames=batch)
                    return
                batch.append(nxt)
            yield pb.ConnectRequest(frames=batch)

    def log(self, *parts):
        """Sends a line to the container's log (k4s logs NAME)."""
        self._out.put(pb.WorkerFrame(log=pb.LogLines(
            container=self.container, lines=[" ".join(str(p) for p in parts)], stream="log")))

    def _call(self, target, value, expects_reply, timeout, parent):
        call_id = next(self._ids)
        done = threading.Event()
        slot = {"done": done}
        with self._lock:
            self._calls[call_id] = slot
        # sender: the server sets it to this attached process's container whatever is sent.
        call = pb.Call(id=call_id, target=target, data=json.dumps(value).encode(), content_type=JSON,
                       expects_reply=expects_reply, timeout_ms=int(timeout * 1000),
                       parent_delivery=parent.id if parent else 0, sender=self.container)
        self._out.put(pb.WorkerFrame(call=call))
        if not done.wait(timeout + 5):
            with self._lock:
                self._calls.pop(call_id, None)
            self._out.put(pb.WorkerFrame(cancel_call=pb.CancelCall(id=call_id)))
            raise K4sError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer from {target}")
        result = slot["result"]
        if result.HasField("error") and result.error.code:
            raise K4sError(_code_of(result.error.code), result.error.message)
        return result

    def send(self, target, value, timeout=30.0):
        """Queues a fire-and-forget message at a container or service; returns who took it."""
        return self._call(target, value, False, timeout, None).container

    def request(self, target, value, timeout=30.0, parent=None):
        """Sends a request and returns the decoded reply. Pass the message being handled as
        parent to inherit what remains of its deadline."""
        result = self._call(target, value, True, timeout, parent)
        return json.loads(result.data.decode()) if result.data else None

    # -- incoming -------------------------------------------------------------------------
    def _finish(self, msg, reply=None, error=None):
        frame = pb.DeliveryResult(id=msg.id)
        if error is not None:
            code = error.code.value[0] if isinstance(error, K4sError) else grpc.StatusCode.UNKNOWN.value[0]
            frame.error.code = code
            frame.error.message = str(error)
        elif msg.expects_reply:
            frame.data = json.dumps(reply).encode()
            frame.content_type = JSON
        with self._lock:
            self._messages.pop(msg.id, None)
        self._out.put(pb.WorkerFrame(result=frame))

    def _serve(self, handler, work):
        while True:
            msg = work.get()
            if msg is None:
                return
            left = msg.time_left()
            if msg.cancelled.is_set() or (left is not None and left <= 0):
                self._finish(msg, error=K4sError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before handling"))
                continue
            try:
                self._finish(msg, reply=handler(msg))
            except Exception as err:  # the caller gets the message (and the code of a K4sError)
                self._finish(msg, error=err)

    def run(self, handler):
        """Attaches and handles deliveries one at a time until stopped (SIGTERM/SIGINT, or the
        server ends the session). A handler's return value is the reply to a request; an
        exception becomes the caller's error."""
        work = queue.Queue()
        server = threading.Thread(target=self._serve, args=(handler, work), daemon=True)
        server.start()

        def stop(*_):
            self._stopping.set()
            work.put(None)  # finish the message in hand, then leave
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        # A spawned process holds no bearer token: its attach credential admits it for its Attach.
        if self.bearer:
            metadata = [("authorization", f"Bearer {self.bearer}")]
        else:
            metadata = [("k4s-attach-token", self.token)] if self.token else []
        with grpc.insecure_channel(self.address) as channel:
            stream = pb_grpc.WorkerServiceStub(channel).Connect(self._frames(), metadata=metadata)
            reader = threading.Thread(target=self._read, args=(stream, work), daemon=True)
            reader.start()
            while not self._stopping.is_set() and reader.is_alive():
                self._stopping.wait(0.2)
            server.join()
            # Half-close after the last results, and let the server end the stream, so nothing
            # still queued for it is cut off; cancel only if it does not answer.
            self._out.put(None)
            reader.join(timeout=5)
            self._closed.set()
            stream.cancel()
        if self._error is not None:
            raise self._error

    _error = None

    def _beat(self, interval):
        # The server declares a silent session lost after three intervals.
        while not self._closed.wait(interval):
            self._out.put(pb.WorkerFrame(heartbeat=pb.Heartbeat(sent_at_ms=int(time.time() * 1000))))

    def _read(self, stream, work):
        try:
            for batch in stream:
                for frame in batch.frames:
                    kind = frame.WhichOneof("frame")
                    if kind == "delivery":
                        msg = Message(frame.delivery)
                        with self._lock:
                            self._messages[msg.id] = msg
                        work.put(msg)
                    elif kind == "cancel_delivery":
                        with self._lock:
                            msg = self._messages.get(frame.cancel_delivery.id)
                        if msg:
                            msg.cancelled.set()
                    elif kind == "call_result":
                        with self._lock:
                            slot = self._calls.pop(frame.call_result.id, None)
                        if slot:
                            slot["result"] = frame.call_result
                            slot["done"].set()
                    elif kind == "welcome":
                        interval = (frame.welcome.heartbeat_interval_ms or 5000) / 1000
                        threading.Thread(target=self._beat, args=(interval,), daemon=True).start()
        except grpc.RpcError as err:
            if not self._stopping.is_set() and err.code() != grpc.StatusCode.CANCELLED:
                self._error = K4sError(err.code(), err.details())
        finally:
            self._stopping.set()
            self._closed.set()
            work.put(None)
