package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// version is set at build time: go build -ldflags "-X main.version=v0.1.0".
var version = "dev"

// command is one subcommand of the CLI.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"init", "write a node's home: config.toml and identity.key", runInit},
		{"run", "start a node", runNode},
		{"id", "print a node's peer ID and dialable multiaddrs", runID},
		apiCommand("status", "print a running node's status from its API",
			"", "", noFlags(printStatus)),
		{"doctor", "tell whether a node can take part in its network, and how to fix what stops it", runDoctor},
		apiCommand("pool", "list the miners a node knows and their states",
			"[--state STATE]", "", pool),
		apiCommand("top", "watch the pool in the terminal: counts, miners, recent transitions",
			"[--interval 2s] [--once] [--state S] [--limit N]", "", top),
		apiCommand("reserve", "reserve an available miner through a router",
			"[--lease 30s] [--model M]", "", reserve),
		apiCommand("release", "release a reservation through its router",
			"ID", "give one reservation ID", noFlags(release)),
		apiCommand("submit", "ask miners a prompt through a router; print their answers and agreement",
			`"PROMPT" [--model M] [--redundancy N] [--stream] [--timeout 2m]`, "quote the prompt as one argument", submit),
		apiCommand("sessions", "list a router's sessions, or show one with its miners and tasks",
			"[SESSION-ID]", "give one session ID", noFlags(printSessions)),
		{"testnet", "start a local multi-process testnet", runTestnet},
		{"version", "print the version", runVersion},
	}
}

// Main runs the CLI and returns the process exit code. Every failure is one
// line on stderr, prefixed with the command, and a non-zero code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		default:
			fmt.Fprintf(stderr, "ephemera %s: %s\n", c.name, oneLine(err))
			var ue usageError
			if errors.As(err, &ue) {
				return 2
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "ephemera: unknown command %q (run `ephemera help`)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "ephemera: a peer-to-peer control plane for decentralized AI inference")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: ephemera <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `ephemera <command> --help` for a command's flags.")
}

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// oneLine keeps the first line of an error, so nothing multi-line (a stack, a
// parser's context dump) ever reaches the user.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
