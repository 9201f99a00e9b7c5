// Package testkit is what Ephemera's tests share: keys, loopback hosts, a
// real store in a temporary directory, waiting for a condition, and a small
// signed network (five oracles, quorum three) with builders for every
// message kind. Tests import it; the node never does.
package testkit
