// Package testkit is what Ephemera's tests share: keys, loopback hosts, a
// real store in a temporary directory, waiting for a condition, and a small
// signed network (five oracles, quorum three) with builders for every
// message kind. For tests whose roles run live it has an oracle set that
// passes miners now, a capture of what a role publishes, an engine the test
// can hold, a settable clock and the serving end of a request/reply
// protocol. Tests import it; the node never does.
package testkit
