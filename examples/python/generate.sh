#!/bin/sh
# Generates the Python gRPC stubs of the k4s API from proto/ into examples/python/gen/, and the
# descriptors of google.rpc's Status and BadRequest (validation errors' details).
# Needs Debian's python3-grpcio and python3-grpc-tools (run with /usr/bin/python3, or $PYTHON).
set -e
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$here/gen" && mkdir -p "$here/gen"
"$python" -m grpc_tools.protoc -I"$here/../../proto" \
  --python_out="$here/gen" --grpc_python_out="$here/gen" \
  "$here"/../../proto/k4s/v1/*.proto
# google/rpc's protos use proto3 `optional`, which Debian's protoc (3.5) cannot compile: their
# descriptors go into a descriptor set that client.py loads at run time (with pip's
# googleapis-common-protos, `from google.rpc import error_details_pb2` is the same thing).
"$here"/../../node_modules/.bin/buf build "$here/../../proto" --path "$here/../../proto/google/rpc" \
  --exclude-imports -o "$here/gen/google_rpc.binpb"
