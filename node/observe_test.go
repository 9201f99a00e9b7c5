package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

// sse is one event of a /v1/events stream.
type sse struct{ event, data string }

// streamEvents reads n's /v1/events onto a channel until ctx ends.
func streamEvents(t *testing.T, ctx context.Context, n *node.Node) <-chan sse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Runtime().APIURL+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan sse, 256)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sse{}
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	var v T
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}

// A reservation made through the router shows on the bootstrap node's
// dashboard data: live on /v1/events, and in the miner's history.
func TestObserveReservation(t *testing.T) {
	if testing.Short() {
		t.Skip("6 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "observenet", Bootstraps: 1, Oracles: 3, Miners: 1, Routers: 1}, nil)
	boot := inProcess(t, tn.Nodes()[0])
	miner, rt := localnet.WithRole(tn, node.RoleMiner)[0], localnet.WithRole(tn, node.RoleRouter)[0]
	minerID := miner.ID().String()
	waitPool(t, boot, "the miner available", 60*time.Second, func(v poolView) bool { return v.Count("available") == 1 })
	waitPool(t, rt, "the miner available to the router", 30*time.Second, func(v poolView) bool { return v.Count("available") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	events := streamEvents(t, ctx, boot)

	// The overview comes first.
	first := <-events
	var ov api.Overview
	if first.event != "overview" || json.Unmarshal([]byte(first.data), &ov) != nil {
		t.Fatalf("first event %+v", first)
	}
	if ov.Node.PeerID != boot.ID().String() || ov.Pool.Total != 1 || ov.Pool.Counts["available"] != 1 {
		t.Errorf("overview node %s, pool %+v", ov.Node.PeerID, ov.Pool)
	}
	var topics []string
	for _, g := range ov.Gossip {
		topics = append(topics, g.Topic)
	}
	if !slices.Equal(topics, protocol.Topics) {
		t.Errorf("gossip topics %v", topics)
	}
	if pool := ov.Gossip[slices.Index(topics, protocol.TopicPool)]; pool.Accept == 0 {
		t.Errorf("the bootstrap node accepted no pool message: %+v", pool)
	}
	if ov.Oracle != nil || ov.Router != nil {
		t.Errorf("bootstrap node with oracle %+v, router %+v", ov.Oracle, ov.Router)
	}

	res, err := rt.Router().Reserve(ctx, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Miner != minerID {
		t.Fatalf("reserved %s, want %s", res.Miner, minerID)
	}

	var sawTransition, sawMiner bool
	for !sawTransition || !sawMiner {
		var ev sse
		select {
		case ev = <-events:
		case <-ctx.Done():
			t.Fatalf("transition to reserved seen: %v; miner reserved seen: %v", sawTransition, sawMiner)
		}
		switch ev.event {
		case "transition":
			var e api.Event
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatal(err)
			}
			if e.Kind == api.EventState && e.State == "reserved" && e.Miner == minerID {
				if e.From != "available" {
					t.Errorf("reserved from %q, want available", e.From)
				}
				sawTransition = true
			}
		case "miner":
			var m api.PoolMiner
			if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
				t.Fatal(err)
			}
			if m.PeerID == minerID && m.State == "reserved" {
				sawMiner = true
			}
		}
	}

	// The grant travels on its own topic, so it may reach this node just
	// after the reserved record did.
	hasGrant := func(h api.MinerHistory) bool {
		return slices.ContainsFunc(h.Events, func(e api.Event) bool { return e.Kind == api.EventGrant })
	}
	h := getJSON[api.MinerHistory](t, boot.Runtime().APIURL+"/v1/miners/"+minerID)
	for deadline := time.Now().Add(10 * time.Second); !hasGrant(h) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		h = getJSON[api.MinerHistory](t, boot.Runtime().APIURL+"/v1/miners/"+minerID)
	}
	if h.Miner.PeerID != minerID || h.Miner.State != "reserved" {
		t.Errorf("miner %+v", h.Miner)
	}
	var states []string
	var passes int
	var grant *api.Event
	for _, e := range h.Events {
		switch e.Kind {
		case api.EventState:
			states = append(states, e.State)
		case api.EventAttestation:
			if e.Pass && e.Generation == res.Generation {
				passes++
			}
		case api.EventGrant:
			grant = &e
		}
	}
	// The miner may have joined before the bootstrap node heard of it; from
	// validating on, this node sees every state.
	if i := slices.Index(states, "validating"); i < 0 || !slices.Equal(states[i:], []string{"validating", "available", "reserved"}) {
		t.Errorf("states %v, want validating, available, reserved", states)
	}
	if passes < 3 {
		t.Errorf("%d passing attestations of generation %d, want the quorum of 3", passes, res.Generation)
	}
	if grant == nil || grant.Router != rt.ID().String() || grant.Generation != res.Generation || grant.LeaseEnd.IsZero() {
		t.Errorf("grant %+v", grant)
	}

	recent := getJSON[[]api.Event](t, boot.Runtime().APIURL+"/v1/transitions?limit=5")
	if len(recent) == 0 || len(recent) > 5 {
		t.Errorf("%d recent transitions", len(recent))
	}
	if hist := getJSON[api.History](t, boot.Runtime().APIURL+"/v1/history"); hist.IntervalSeconds != 10 || len(hist.Points) == 0 {
		t.Errorf("history %+v", hist)
	}

	// The dashboard's page is served on the same listener.
	resp, err := http.Get(boot.Runtime().APIURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// The router's and an oracle's overviews carry their figures.
	if ov := getJSON[api.Overview](t, rt.Runtime().APIURL+"/v1/overview"); ov.Router == nil || ov.Oracle != nil {
		t.Errorf("router's overview: router %+v, oracle %+v", ov.Router, ov.Oracle)
	}
	for _, n := range tn.Nodes() {
		nn := inProcess(t, n)
		if !node.HasRole(nn.Config().Roles, node.RoleOracle) {
			continue
		}
		if ov := getJSON[api.Overview](t, nn.Runtime().APIURL+"/v1/overview"); ov.Oracle == nil || ov.Router != nil {
			t.Errorf("oracle's overview: oracle %+v, router %+v", ov.Oracle, ov.Router)
		}
		break
	}
}
