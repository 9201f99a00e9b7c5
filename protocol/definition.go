package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Definition describes one network: its name, its rules and where to join
// it. It is the file network.toml, which every member holds and every
// bootstrap serves to newcomers.
//
// Its hash covers the name and the rules only. The bootstrap list and the
// members' default DHT mode are advice on how to join, not rules: a network
// that gains a bootstrap node is still the same network.
type Definition struct {
	// Name is the network's human name, ^[a-z0-9][a-z0-9-]{0,31}$.
	Name string `toml:"name" json:"name"`
	// Bootstrap holds full multiaddrs (ending in /p2p/<id>) of nodes a
	// newcomer dials first.
	Bootstrap []string `toml:"bootstrap" json:"bootstrap"`
	// DHTMode is the DHT mode members run unless their config says
	// otherwise: "auto", "server" or "client"; "" means auto. A private
	// network (a LAN, a testbed) sets "server", since AutoNAT never finds a
	// private address reachable.
	DHTMode string `toml:"dht_mode" json:"dht_mode"`
	// Params are the rules every member follows.
	Params Params `toml:"params" json:"params"`
}

// DefinitionFile is the name of the definition in a node's home, and the
// name `ephemera testnet` gives it in its directory.
const DefinitionFile = "network.toml"

// hashDomain separates the definition's hash from every other SHA-256 of
// the protocol, and versions the canonical encoding.
const hashDomain = "ephemera/network-definition/1\n"

// IDHashLen is how many hex digits of the hash the network ID carries: 64
// bits, so that two definitions never meet under one ID by accident.
const IDHashLen = 16

var networkName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ValidateNetworkName checks a network's name.
func ValidateNetworkName(name string) error {
	if !networkName.MatchString(name) {
		return fmt.Errorf("network name %q must be 1-32 lowercase letters, digits or dashes", name)
	}
	return nil
}

// Validate checks the whole definition and names the first wrong field.
func (d Definition) Validate() error {
	if err := ValidateNetworkName(d.Name); err != nil {
		return err
	}
	for _, s := range d.Bootstrap {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("bootstrap: %q is not a multiaddr: %v", s, err)
		}
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return fmt.Errorf("bootstrap: %q must end in /p2p/<peer-id>", s)
		}
	}
	switch d.DHTMode {
	case "", "auto", "server", "client":
	default:
		return fmt.Errorf("dht_mode: %q is not one of auto, server, client", d.DHTMode)
	}
	return d.Params.Validate()
}

// Hash is the network's identity: SHA-256, in lowercase hex, of hashDomain
// followed by the canonical JSON of the name and the rules (see
// canonical). Two members agree on the network exactly when their hashes
// are equal.
func (d Definition) Hash() string {
	sum := sha256.Sum256(append([]byte(hashDomain), d.canonical()...))
	return hex.EncodeToString(sum[:])
}

// ID is the network's namespace on the wire: the name, a slash and the
// first IDHashLen hex digits of the hash. Every stream protocol, gossip
// topic, DHT protocol, pool CID and signed message carries it, so members
// of two definitions never share a protocol, even under one name.
func (d Definition) ID() string { return d.Name + "/" + d.Hash()[:IDHashLen] }

// canonical is the encoding the hash covers: a JSON object with the keys
// "name" and "params", no whitespace, keys sorted at every level; params
// keyed by their names in network.toml; durations as integer nanoseconds;
// oracles as canonical peer-ID strings, sorted (their order means nothing:
// rendezvous hashing ranks them itself).
func (d Definition) canonical() []byte {
	params := map[string]any{}
	v := reflect.ValueOf(d.Params)
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		switch f := v.Field(i).Interface().(type) {
		case duration.Duration:
			params[key] = int64(f)
		case []string:
			ids := make([]string, 0, len(f))
			for _, s := range f {
				if id, err := peer.Decode(s); err == nil {
					s = id.String()
				}
				ids = append(ids, s)
			}
			slices.Sort(ids)
			params[key] = ids
		default:
			params[key] = f
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	// Maps encode with sorted keys; the values are numbers, strings and
	// string lists, whose JSON form is unique.
	if err := enc.Encode(map[string]any{"name": d.Name, "params": params}); err != nil {
		panic(fmt.Sprintf("canonical definition: %v", err)) // only plain values above
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// ParseDefinition reads a network.toml. A field it does not know is an
// error: most likely a typo, and a silently ignored rule would be a
// different network.
func ParseDefinition(data []byte) (Definition, error) {
	d := Definition{Params: DefaultParams()}
	md, err := toml.Decode(string(data), &d)
	if err != nil {
		s, _, _ := strings.Cut(err.Error(), "\n")
		return d, errors.New(s)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return d, fmt.Errorf("unknown field %q", undecoded[0].String())
	}
	if !md.IsDefined("name") {
		return d, errors.New("name: missing")
	}
	if d.Bootstrap == nil {
		d.Bootstrap = []string{}
	}
	return d, d.Validate()
}

// Render writes the definition as network.toml, every rule spelled out so
// that an operator can read what the network's hash covers.
func (d Definition) Render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# The definition of the Ephemera network %q. Every member holds the same\n", d.Name)
	b.WriteString("# file; its hash, which covers the name and [params], is the network's identity:\n")
	fmt.Fprintf(&b, "# %s\n", d.Hash())
	b.WriteString("# Changing any rule makes a new network (see docs/OPERATING.md).\n\n")
	fmt.Fprintf(&b, "name = %s\n\n", tomlString(d.Name))
	b.WriteString("# Nodes a newcomer dials first, full multiaddrs ending in /p2p/<peer-id>.\n")
	b.WriteString("# Not part of the hash: bootstraps may come and go.\n")
	fmt.Fprintf(&b, "bootstrap = %s\n\n", tomlList(d.Bootstrap))
	b.WriteString("# The DHT mode of members whose config does not set one: auto (server when\n")
	b.WriteString("# reachable), server or client. Not part of the hash.\n")
	fmt.Fprintf(&b, "dht_mode = %s\n\n", tomlString(d.DHTMode))
	b.WriteString("[params]\n")
	v := reflect.ValueOf(d.Params)
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		var val string
		switch f := v.Field(i).Interface().(type) {
		case duration.Duration:
			val = tomlString(f.String())
		case []string:
			val = tomlList(f)
		case string:
			val = tomlString(f)
		case float64:
			// 'f' with -1 digits round-trips; a whole number still needs
			// its ".0" to stay a TOML float.
			val = strconv.FormatFloat(f, 'f', -1, 64)
			if !strings.Contains(val, ".") {
				val += ".0"
			}
		default:
			val = fmt.Sprint(f)
		}
		if doc := paramDocs[key]; doc != "" {
			fmt.Fprintf(&b, "\n# %s\n", strings.ReplaceAll(doc, "\n", "\n# "))
		}
		fmt.Fprintf(&b, "%s = %s\n", key, val)
	}
	return b.Bytes()
}

// paramDocs says in network.toml what each rule is (docs/PROTOCOL.md §4
// says more).
var paramDocs = map[string]string{
	"oracles":                   "Peer IDs of the oracle set. Empty: nothing can become available.",
	"quorum":                    "Distinct oracles that must pass a miner's generation.",
	"oracles_per_round":         "Oracles assigned to a miner per round by rendezvous hashing; 0 means\nquorum + 1.",
	"round_period":              "Length of a validation round.",
	"attestation_lifetime":      "How long an attestation counts.",
	"lease":                     "Default lease of a reservation.",
	"lease_max":                 "The longest lease a miner grants.",
	"claim_lifetime":            "How long a claim may take to reach its miner.",
	"revalidation_backoff":      "Cooling off after a failed validation: doubles per failure up to\nrevalidation_backoff_max.",
	"challenges_per_validation": "Tasks per validation, and the fraction that must pass.",
	"challenge_bank":            "A challenge bank file (JSON) on the oracles; \"\" uses the embedded bank.",
	"record_lifetime":           "Lifetime of a miner's availability record and of DHT provider records;\nboth are refreshed at a third of it.",
	"clock_skew":                "How far ahead of a member's clock a message may be dated.",
	"penalty_period":            "How long oracles refuse to attest a miner caught equivocating.",
	"routers":                   "Peer IDs of the only routers miners take claims from. Empty: any router.",
	"max_router_share":          "The fraction of the pool's miners one router may hold at once, rounded\nup; 1 means no limit.",
	"router_share_floor":        "Miners one router may always hold, however small the pool.",
}

func tomlString(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a valid TOML basic string
	return string(b)
}

func tomlList(xs []string) string {
	items := make([]string, len(xs))
	for i, x := range xs {
		items[i] = tomlString(x)
	}
	return "[" + strings.Join(items, ", ") + "]"
}
