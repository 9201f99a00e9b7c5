// Package router is the router role: it reserves an ephemeral miner for a
// user session with a signed claim, keeps the lease alive with renewals, and
// ends it with a release, all on the reserve stream protocol. Every
// reservation is written to the store before it is handed out, so a router
// that restarts resumes renewing what it holds.
//
// The files follow the jobs:
//
//   - router.go: the Router, its start and stop, and Reserve from request
//     to stored grant (claim, adopt).
//   - select.go: which miners to claim, in which order, and finding more
//     through the DHT.
//   - wire.go: the reserve protocol exchange: sending claims, renewals and
//     releases, and verifying the grants and receipts that answer them.
//   - lease.go: a lease's life once granted: renewing, ending and Release.
//   - persist.go: reservations in the store: loading, saving, pruning;
//     keys.go names their keys.
//   - pending.go: claims sent but not settled, and settling them after a
//     lost reply or a restart.
//   - latency.go: the round trips measured to each miner.
package router
