package main

import (
	"fmt"
	"io"

	"github.com/ephemera-network/ephemera/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

func runInit(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("init", "--home DIR [flags]", stdout)
	home := homeFlag(fs)
	nf := addNodeFlags(fs)
	force := fs.Bool("force", false, "rewrite the config of an existing home (the identity key is kept)")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	cfg := node.DefaultConfig()
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
	fmt.Fprintf(stdout, "initialised %s\npeer id: %s\nconfig:  %s\nkey:     %s\n", h.Dir, id, h.ConfigPath(), h.KeyPath())
	return nil
}
