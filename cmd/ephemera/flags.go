package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ephemera-network/ephemera/node"
)

// listFlag is a flag that may be given many times; from the environment it
// takes a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// newFlagSet makes a flag set that reports errors instead of exiting, and
// prints its help to stdout only when asked for.
func newFlagSet(name, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ephemera "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: ephemera %s %s\n\nFlags (each also read from EPHEMERA_<NAME>, e.g. --dht-mode from EPHEMERA_DHT_MODE):\n", name, synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args, then fills every flag not given on the command line
// from its EPHEMERA_* environment variable. It returns the names of the flags
// that were set either way.
func parseFlags(fs *flag.FlagSet, args []string) (map[string]bool, error) {
	return parseFlagsArgs(fs, args, 0)
}

// parseFlagsArgs is parseFlags for a command that takes up to n arguments
// besides its flags, which fs.Args returns afterwards.
func parseFlagsArgs(fs *flag.FlagSet, args []string, n int) (map[string]bool, error) {
	// The flag package calls Usage itself on -help and on every parse error;
	// silence it so help is printed once, and only when asked for.
	usage := fs.Usage
	fs.Usage = func() {}
	perr := fs.Parse(args)
	fs.Usage = usage
	if err := perr; err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return nil, err
		}
		return nil, usageError{fmt.Errorf("%v (see --help)", err)}
	}
	if fs.NArg() > n {
		return nil, usageError{fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(n))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		// --force destroys; it is never implied by the environment.
		if set[f.Name] || err != nil || f.Name == "force" {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usageError{fmt.Errorf("%s=%q: %v", env, v, serr)}
				return
			}
			set[f.Name] = true
		}
	})
	return set, err
}

func envName(flagName string) string {
	return "EPHEMERA_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// homeFlag adds --home, defaulting to ~/.ephemera.
func homeFlag(fs *flag.FlagSet) *string {
	def := ".ephemera"
	if dir, err := os.UserHomeDir(); err == nil {
		def = filepath.Join(dir, ".ephemera")
	}
	return fs.String("home", def, "the node's home `directory`")
}

// nodeFlags are the configuration flags shared by init and run.
type nodeFlags struct {
	roles, api, apiToken, metrics, dhtMode, logLevel, logFormat string
	logJSON, natPortMap, relayService                           bool
	listen, bootstrap, announce, announceExtra                  listFlag
}

func addNodeFlags(fs *flag.FlagSet) *nodeFlags {
	f := &nodeFlags{}
	fs.StringVar(&f.roles, "roles", "", "comma-separated `roles`: bootstrap, miner, oracle, router")
	fs.Var(&f.listen, "listen", "`multiaddr` to listen on (repeatable)")
	fs.Var(&f.bootstrap, "bootstrap", "bootstrap peer `multiaddr` ending in /p2p/<id> (repeatable)")
	fs.StringVar(&f.api, "api", "", "`host:port` of the HTTP API")
	fs.StringVar(&f.apiToken, "api-token", "", "bearer `token` the API requires (needed when --api is beyond loopback)")
	fs.StringVar(&f.metrics, "metrics", "", "`host:port` of a separate Prometheus /metrics listener")
	fs.StringVar(&f.dhtMode, "dht-mode", "", "DHT `mode`: auto, server or client (default: the network's, else auto)")
	fs.Var(&f.announce, "announce", "`multiaddr` to announce instead of the listened ones, such as a port forward's public address (repeatable)")
	fs.Var(&f.announceExtra, "announce-extra", "`multiaddr` to announce besides the listened ones (repeatable)")
	fs.BoolVar(&f.natPortMap, "nat-port-map", false, "ask the home router for a port mapping (UPnP, NAT-PMP)")
	fs.BoolVar(&f.relayService, "relay-service", false, "relay for nodes behind NAT (circuit relay v2; on by default for bootstrap nodes)")
	fs.StringVar(&f.logLevel, "log-level", "", "log `level`: debug, info, warn or error, optionally followed by per-module levels, e.g. info,p2p=debug,libp2p=info")
	fs.StringVar(&f.logFormat, "log-format", "", "log `format`: text or json")
	fs.BoolVar(&f.logJSON, "log-json", false, "log as JSON: short for --log-format json")
	return f
}

// apply writes the flags that were set onto cfg and validates the result.
func (f *nodeFlags) apply(cfg *node.Config, set map[string]bool) error {
	if set["roles"] {
		roles, err := node.ParseRoles(f.roles)
		if err != nil {
			return usageError{fmt.Errorf("--%w", err)}
		}
		cfg.Roles = roles
		// Bootstrap nodes are the network's relays unless told otherwise:
		// they are public, and every newcomer behind NAT meets them first.
		if node.HasRole(roles, node.RoleBootstrap) && !set["relay-service"] {
			cfg.P2P.RelayService = true
		}
	}
	if set["announce"] {
		cfg.P2P.Announce = f.announce
	}
	if set["announce-extra"] {
		cfg.P2P.AnnounceExtra = f.announceExtra
	}
	if set["nat-port-map"] {
		cfg.P2P.NATPortMap = f.natPortMap
	}
	if set["relay-service"] {
		cfg.P2P.RelayService = f.relayService
	}
	if set["listen"] {
		cfg.P2P.Listen = f.listen
	}
	if set["bootstrap"] {
		cfg.P2P.Bootstrap = f.bootstrap
	}
	if set["api"] {
		cfg.API.Listen = f.api
	}
	if set["api-token"] {
		cfg.API.Token = f.apiToken
	}
	if set["metrics"] {
		cfg.API.Metrics = f.metrics
	}
	if set["dht-mode"] {
		cfg.P2P.DHTMode = f.dhtMode
	}
	if set["log-level"] {
		cfg.Log.Level = f.logLevel
	}
	if set["log-format"] {
		cfg.Log.Format = f.logFormat
	}
	if set["log-json"] {
		switch {
		case set["log-format"] && f.logFormat != "json" && f.logJSON:
			return usageError{fmt.Errorf("--log-json conflicts with --log-format %s", f.logFormat)}
		case f.logJSON:
			cfg.Log.Format = "json"
		case !set["log-format"]:
			cfg.Log.Format = "text" // --log-json=false
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}
