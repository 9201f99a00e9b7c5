package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/api"
)

// A released reservation says when it ended and the lease end it had; an
// active one says when its lease ends.
func TestPrintReservation(t *testing.T) {
	for _, tt := range []struct {
		name, raw string
		want, not []string
	}{
		{"active", `{"id":"r1","miner":"m","generation":3,"lease_end":"2026-12-04T10:00:30Z","state":"active"}`,
			[]string{"reservation r1: active", "lease ends:"}, []string{"ended:"}},
		{"released", `{"id":"r1","miner":"m","generation":3,"lease_end":"2026-12-04T10:00:30Z","state":"released","ended":"2026-12-04T10:00:05Z"}`,
			[]string{"reservation r1: released", "ended:", "lease was:  until "}, []string{"lease ends:"}},
		{"lost", `{"id":"r1","miner":"m","lease_end":"2026-12-04T10:00:30Z","state":"lost","ended":"2026-12-04T10:00:05Z","detail":"miner refused the release"}`,
			[]string{"ended:", "detail:     miner refused the release"}, []string{"lease ends:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r api.Reservation
			if err := json.Unmarshal([]byte(tt.raw), &r); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := printReservation(&b, r, false); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("no %q in\n%s", w, b.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("%q in\n%s", n, b.String())
				}
			}
		})
	}
}
