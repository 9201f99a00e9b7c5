#!/usr/bin/env bash
# Turn a testnet's manifest (DIR/testnet.json, written by `ephemera testnet`
# and `make testnet`) into a Prometheus file_sd target file on stdout: one
# target per node, host:port of its API, labelled with the node's name (as
# instance), roles and peer ID. (Not the network: ephemera_build_info carries
# it, and a target label of the same name would rename the node's own.)
#
#   deploy/testnet-targets.sh DIR/testnet.json > deploy/targets/testnet.json
#
# TARGET_HOST replaces 127.0.0.1 in the targets: for Prometheus in Docker
# Desktop, TARGET_HOST=host.docker.internal.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR/testnet.json > deploy/targets/testnet.json" >&2
	exit 2
fi
if ! command -v jq >/dev/null 2>&1; then
	echo "$0: jq is not installed" >&2
	exit 1
fi
exec jq --arg host "${TARGET_HOST:-}" '
  [.nodes[]
     | {targets: [.api_url | sub("^https?://"; "") | if $host == "" then . else sub("^127\\.0\\.0\\.1"; $host) end],
        labels: {instance: .name, role: (.roles | join(",")), peer_id: .peer_id}}]
' "$1"
