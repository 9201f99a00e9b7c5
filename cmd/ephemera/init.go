package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/peer"
)

func runInit(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("init", "--home DIR [--join MULTIADDR[,…] | --network FILE] [--network-hash HASH] [flags]", stdout)
	home := homeFlag(fs)
	nf := addNodeFlags(fs)
	force := fs.Bool("force", false, "rewrite the config and network definition of an existing home (the identity key is kept)")
	var join listFlag
	fs.Var(&join, "join", "join the network of the bootstrap node at `multiaddr` (ending in /p2p/<id>; repeatable or comma-separated): its definition is fetched from the first that answers")
	file := fs.String("network", "", "join the network defined in `file` (a network.toml handed over out of band)")
	pin := fs.String("network-hash", "", "the network's `hash` (or its first 16 or more hex digits): refuse a definition with any other")
	joinTimeout := fs.Duration("join-timeout", time.Minute, "with --join, how long to keep asking the bootstrap nodes")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if set["join"] && set["network"] {
		return usageError{fmt.Errorf("--join and --network both say where the network's definition comes from: give one")}
	}
	if set["network-hash"] {
		if err := checkHashFlag(*pin); err != nil {
			return usageError{err}
		}
	}
	cfg := node.DefaultConfig()
	switch {
	case set["join"]:
		ctx, cancel := context.WithTimeout(context.Background(), *joinTimeout)
		defer cancel()
		def, from, err := node.FetchDefinition(ctx, join)
		if err != nil {
			return err
		}
		if err := checkPin(def, *pin, "the network at "+from); err != nil {
			return err
		}
		cfg = cfg.WithDefinition(def)
	case set["network"]:
		def, ok, err := node.ReadDefinition(*file)
		if err == nil && !ok {
			err = fmt.Errorf("network definition %s: no such file", *file)
		}
		if err != nil {
			return err
		}
		if err := checkPin(def, *pin, *file); err != nil {
			return err
		}
		cfg = cfg.WithDefinition(def)
	case set["network-hash"]:
		return usageError{fmt.Errorf("--network-hash checks a definition from --join or --network; give one of them")}
	case *force:
		// Rewriting a member's config keeps its network: only --join or
		// --network changes that.
		def, ok, err := node.ReadDefinition(node.Home{Dir: *home}.DefinitionPath())
		if err != nil {
			return err
		}
		if ok {
			cfg = cfg.WithDefinition(def)
		}
	}
	if err := nf.apply(&cfg, set); err != nil {
		return err
	}
	h := node.Home{Dir: *home}
	key, err := node.Init(h, cfg, *force)
	if err != nil {
		return err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	def := cfg.Definition()
	fmt.Fprintf(stdout, "initialised %s\npeer id: %s\nnetwork: %s (hash %s)\nconfig:  %s\nnetwork: %s\nkey:     %s\n",
		h.Dir, id, def.Name, def.Hash(), h.ConfigPath(), h.DefinitionPath(), h.KeyPath())
	if len(def.Params.Oracles) == 0 {
		fmt.Fprintln(stdout, "note:    the network names no oracles yet, so no miner can become available in it")
	}
	return nil
}

// checkHashFlag accepts a whole hash or a prefix of at least IDHashLen hex
// digits, the part a network ID shows.
func checkHashFlag(s string) error {
	if len(s) < protocol.IDHashLen || len(s) > 64 || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
		return fmt.Errorf("--network-hash %q: want the network's hash, %d to 64 hex digits", s, protocol.IDHashLen)
	}
	return nil
}

// checkPin refuses a definition whose hash is not the pinned one.
func checkPin(def protocol.Definition, pin, from string) error {
	if pin == "" {
		return nil
	}
	if got := def.Hash(); !strings.HasPrefix(got, strings.ToLower(pin)) {
		return fmt.Errorf("%s defines network %q with hash %s, not the pinned %s; nothing written", from, def.Name, got, pin)
	}
	return nil
}
