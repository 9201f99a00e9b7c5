package protocol

import (
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

func testDefinition(t *testing.T) Definition {
	t.Helper()
	d := Definition{Name: "devnet", Bootstrap: []string{}, Params: DefaultParams()}
	d.Params.Oracles = []string{
		"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
		"12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
	}
	return d
}

func TestDefinitionRoundTrip(t *testing.T) {
	d := testDefinition(t)
	d.Bootstrap = []string{"/ip4/192.0.0.65/udp/7600/quic-v1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}
	d.DHTMode = "server"
	d.Params.PassThreshold = 1
	d.Params.ChallengeBank = `bank "x".json`
	got, err := ParseDefinition(d.Render())
	if err != nil {
		t.Fatalf("parse rendered: %v\n%s", err, d.Render())
	}
	if got.Hash() != d.Hash() || got.DHTMode != "server" || len(got.Bootstrap) != 1 || got.Params.ChallengeBank != d.Params.ChallengeBank {
		t.Fatalf("round trip changed the definition:\n%s\nparsed %+v", d.Render(), got)
	}
	if !strings.Contains(string(d.Render()), d.Hash()) {
		t.Fatal("the rendered file does not name its hash")
	}
}

func TestDefinitionHash(t *testing.T) {
	d := testDefinition(t)
	h := d.Hash()
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("hash %q is not 64 lowercase hex digits", h)
	}
	if d.ID() != "devnet/"+h[:IDHashLen] {
		t.Fatalf("ID %q", d.ID())
	}
	// Not rules: the bootstrap list, the DHT mode, the oracles' order.
	same := d
	same.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}
	same.DHTMode = "server"
	same.Params.Oracles = []string{d.Params.Oracles[1], d.Params.Oracles[0]}
	if same.Hash() != h {
		t.Fatal("bootstrap, dht_mode or the oracles' order changed the hash")
	}
	// Every rule and the name are.
	changes := map[string]func(*Definition){
		"name":      func(d *Definition) { d.Name = "othernet" },
		"oracles":   func(d *Definition) { d.Params.Oracles = d.Params.Oracles[:1] },
		"quorum":    func(d *Definition) { d.Params.Quorum = 1 },
		"lease":     func(d *Definition) { d.Params.Lease = duration.Duration(31 * time.Second) },
		"pass":      func(d *Definition) { d.Params.PassThreshold = 0.9 },
		"bank":      func(d *Definition) { d.Params.ChallengeBank = "bank.json" },
		"per round": func(d *Definition) { d.Params.OraclesPerRound = 2 },
		"routers":   func(d *Definition) { d.Params.Routers = d.Params.Oracles[:1] },
		"share":     func(d *Definition) { d.Params.MaxRouterShare = 1 },
		"floor":     func(d *Definition) { d.Params.RouterShareFloor = 1 },
	}
	for name, change := range changes {
		c := testDefinition(t)
		change(&c)
		if c.Hash() == h {
			t.Errorf("changing %s kept the hash", name)
		}
	}
}

// TestDefinitionCanonical pins the canonical encoding, which other
// implementations must reproduce byte for byte (docs/PROTOCOL.md §4).
func TestDefinitionCanonical(t *testing.T) {
	d := testDefinition(t)
	want := `{"name":"devnet","params":{"attestation_lifetime":1800000000000,"challenge_bank":"","challenges_per_validation":5,` +
		`"claim_lifetime":10000000000,"clock_skew":30000000000,"lease":30000000000,"lease_max":600000000000,"max_router_share":0.5,` +
		`"oracles":["12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq","12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"],` +
		`"oracles_per_round":0,"pass_threshold":0.8,"penalty_period":3600000000000,"provide_validity":90000000000,"quorum":2,` +
		`"record_lifetime":180000000000,"revalidation_backoff":10000000000,"revalidation_backoff_max":300000000000,"round_period":5000000000,` +
		`"router_share_floor":3,"routers":[]}}`
	if got := string(d.canonical()); got != want {
		t.Fatalf("canonical\n got %s\nwant %s", got, want)
	}
}

func TestParseDefinitionErrors(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"no name":       {`bootstrap = []`, "name: missing"},
		"bad name":      {`name = "Dev Net"`, "network name"},
		"unknown":       {"name = \"devnet\"\nquorum = 2", `unknown field "quorum"`},
		"unknown param": {"name = \"devnet\"\n[params]\nquorom = 2", `unknown field "params.quorom"`},
		"bad addr":      {"name = \"devnet\"\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]", "must end in /p2p/"},
		"bad mode":      {"name = \"devnet\"\ndht_mode = \"always\"", "dht_mode"},
		"bad params":    {"name = \"devnet\"\n[params]\nquorum = 0", "params.quorum"},
		"not toml":      {"name = ", "line 1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseDefinition([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is more than one line: %q", err)
			}
		})
	}
}
