package protocol_test

import (
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
)

// FuzzParseDefinition: whatever a network.toml (or a bootstrap's answer)
// holds, parsing it gives a valid definition that renders and parses back
// to the same hash, or one line saying what is wrong.
func FuzzParseDefinition(f *testing.F) {
	d := protocol.Definition{Name: "devnet", Bootstrap: []string{}, Params: protocol.DefaultParams()}
	for _, seed := range []string{string(d.Render()), "", "name = ", "name = \"x\"\n[params]\nquorum = -1",
		"name = \"x\"\nbootstrap = [1]", "\x00\xff"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		def, err := protocol.ParseDefinition(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			return
		}
		again, err := protocol.ParseDefinition(def.Render())
		if err != nil {
			t.Fatalf("a parsed definition does not render to a valid one: %v\n%s", err, def.Render())
		}
		if again.Hash() != def.Hash() {
			t.Fatalf("render changed the hash\n%s", def.Render())
		}
	})
}
