#!/usr/bin/env bash
# Start a local Ephemera testnet: builds bin/ephemera, then runs
# `ephemera testnet`, which writes the network's definition (DIR/network.toml)
# and a home per node, starts each node as its own process (libp2p on
# 127.0.0.1, or on --host IP, with ports the kernel picks; every API on
# 127.0.0.1), waits until all are healthy, prints a table, each node's home,
# the command another machine runs to join, and DIR/testnet.json, and stops
# every node on Ctrl-C.
#
#   testnet/run.sh [--dir DIR | --keep] [--host IP] [--bootstraps N] [--oracles N] [--miners N] [--routers N] [--check]
#
# --host IP binds every node's libp2p addresses to IP, an address of this
# machine that others can dial, so that people on other machines can join
# with the printed command; without it the command works on this machine only.
# Without --dir the homes go into a temporary directory, removed on exit
# unless --keep (or the testnet failed: its logs say why).
# --check waits until every node is healthy and every miner available, walks
# one miner through reserve and release, runs one session of 3 agreeing
# miners through the router, streams one chat completion with curl, stops
# the testnet and exits 0 — or 1 at the first step that fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v go >/dev/null 2>&1; then
	echo "testnet/run.sh: Go is not installed (need Go 1.26 or newer: https://go.dev/dl/)" >&2
	exit 1
fi

make --no-print-directory build >&2
exec "$root/bin/ephemera" testnet "$@"
