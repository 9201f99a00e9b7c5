package p2p

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/internal/logging"
)

// A wrong bootstrap address beside a right one is recorded with the reason
// its dial failed, not only that it failed, and logged once with its address.
func TestBootstrapStatusNamesTheCause(t *testing.T) {
	good := testHost(t)
	gone := testHost(t)
	goneAddr := gone.Addrs()[0].String()
	bad := goneAddr + "/p2p/" + gone.ID().String()
	gone.Close() // nobody listens on its port now

	cfg := testConfig()
	cfg.Bootstrap = []string{good.Addrs()[0].String() + "/p2p/" + good.ID().String(), bad}
	cfg.MinPeers = 3 // never met: the bad address is dialled again and again
	cfg.BootstrapInterval = duration.Duration(time.Second)
	var logs logging.Buffer
	h := startHost(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h.Start(context.Background())

	var st BootstrapStatus
	waitUntil(t, "the bad bootstrap to be dialled", func() bool {
		for _, s := range h.Bootstraps() {
			if s.Peer == gone.ID().String() && s.Error != "" {
				st = s
				return true
			}
		}
		return false
	})
	if st.Connected || !strings.Contains(st.Error, "refused") {
		t.Errorf("the bad bootstrap's status %+v does not say the connection was refused", st)
	}
	time.Sleep(3 * time.Second) // a few more rounds
	out := logs.String()
	if n := strings.Count(out, "bootstrap peer unreachable"); n != 1 {
		t.Errorf("%d warnings for the bad bootstrap, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, goneAddr) || !strings.Contains(out, "refused") {
		t.Errorf("the warning names neither the address nor the cause:\n%s", out)
	}
}
