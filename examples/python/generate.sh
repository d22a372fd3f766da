#!/bin/sh
# Generates the Python gRPC stubs of the k4s API from proto/ into examples/python/gen/.
# Needs Debian's python3-grpcio and python3-grpc-tools (run with /usr/bin/python3).
set -e
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$here/gen" && mkdir -p "$here/gen"
/usr/bin/python3 -m grpc_tools.protoc -I"$here/../../proto" \
  --python_out="$here/gen" --grpc_python_out="$here/gen" \
  "$here"/../../proto/k4s/v1/*.proto
