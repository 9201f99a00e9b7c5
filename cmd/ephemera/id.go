package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

func runID(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("id", "--home DIR [--json]", stdout)
	home := homeFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	h := node.Home{Dir: *home}
	key, err := p2p.LoadKey(h.KeyPath())
	if err != nil {
		return err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	cfg, err := node.LoadConfig(h.ConfigPath())
	if err != nil {
		return err
	}
	addrs, running, err := dialableAddrs(h, id, cfg)
	if err != nil {
		return err
	}
	def := cfg.Definition()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			PeerID      string   `json:"peer_id"`
			Addrs       []string `json:"addrs"`
			Running     bool     `json:"running"`
			Network     string   `json:"network"`
			NetworkHash string   `json:"network_hash"`
		}{id.String(), addrs, running, def.Name, def.Hash()})
	}
	fmt.Fprintln(stdout, id)
	for _, a := range addrs {
		fmt.Fprintln(stdout, a)
	}
	fmt.Fprintf(stdout, "network %s (hash %s)\n", def.Name, def.Hash())
	return nil
}

// dialableAddrs are the addresses others can dial: the bound ones of a
// running node, else those of the config with wildcard IPs expanded to this
// machine's interfaces (a port 0 is only known once the node runs).
func dialableAddrs(h node.Home, id peer.ID, cfg node.Config) ([]string, bool, error) {
	if node.Running(h) {
		if rt, err := node.ReadRuntime(h); err == nil && rt.PeerID == id.String() {
			return rt.Addrs, true, nil
		}
	}
	listen, err := p2p.ParseListenAddrs(cfg.P2P.Listen)
	if err != nil {
		return nil, false, err
	}
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return nil, false, fmt.Errorf("network interfaces: %w", err)
	}
	resolved, err := manet.ResolveUnspecifiedAddresses(listen, ifaces)
	if err != nil {
		return nil, false, err
	}
	suffix, err := ma.NewMultiaddr("/p2p/" + id.String())
	if err != nil {
		return nil, false, err
	}
	out := make([]string, 0, len(resolved))
	for _, a := range resolved {
		out = append(out, a.Encapsulate(suffix).String())
	}
	return out, false, nil
}
