#!/bin/sh
# Lint the .proto files and regenerate the Go code next to them
# (proto/chipledger/v1/ledger.pb.go and chipledgerv1connect/ledger.connect.go).
#
# buf and the protoc plugins are pinned by `tool` lines in go.mod; the first
# run builds buf from source (about 1-1.5 min on 2 cores), later runs are fast.
# Everything runs offline (local plugins only, no BSR deps).
#
# Usage: proto/generate.sh          (from any directory)
#
# Breaking-change check against the committed baseline:
#   go tool buf breaking --against proto/baseline.binpb
# Refresh the baseline after an accepted API change:
#   go tool buf build -o proto/baseline.binpb
set -eu

cd "$(dirname "$0")/.."

go tool buf lint
go tool buf generate
go build ./proto/...

echo "proto: lint clean, code generated"
