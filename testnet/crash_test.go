package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

// A reserved miner killed with SIGKILL and restarted as a real process is
// still reserved, at the same generation, until its lease ends or it is
// released; and the release then works as usual.
func TestReservedMinerSurvivesKill9(t *testing.T) {
	tn, launcher := startCrashNet(t, "crash")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	res, err := tn.Reserve(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	n, name, ok := tn.Find(res.Miner)
	if !ok {
		t.Fatalf("reserved miner %s is not in the testnet", res.Miner)
	}
	if err := n.(*testnet.Process).Kill(); err != nil {
		t.Fatal(err)
	}
	n, err = tn.Restart(ctx, name, launcher)
	if err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	var info api.NodeInfo
	if err := getJSON(ctx, n.Runtime().APIURL+"/v1/node", &info); err != nil {
		t.Fatal(err)
	}
	if info.State != "reserved" || info.Generation == nil || *info.Generation != res.Generation {
		t.Fatalf("after kill -9 and restart: state %q generation %v, want reserved at %d", info.State, info.Generation, res.Generation)
	}
	// Nobody else can take it meanwhile.
	if other, err := tn.Reserve(ctx, time.Minute); err == nil && other.Miner == res.Miner {
		t.Fatalf("the reserved miner was granted again: %+v", other)
	}
	if _, err := tn.Release(ctx, res.ID); err != nil {
		t.Fatalf("release after restart: %v", err)
	}
	if _, err := tn.WaitPool(ctx, "the miner available at the next generation", func(m []api.PoolMiner) bool {
		for _, x := range m {
			if x.PeerID == res.Miner {
				return x.State == "available" && x.Generation == res.Generation+1
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
}

func getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// startCrashNet starts a testnet of real processes with one router and two
// miners, and waits until both miners are available.
func startCrashNet(t *testing.T, network string) (*testnet.Testnet, testnet.Subprocess) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts 7 processes")
	}
	tn, launcher := startProcesses(t, testnet.Spec{Network: network, Bootstraps: 1, Oracles: 3, Miners: 2, Routers: 1})
	localnet.WaitAvailable(t, tn, 2, time.Minute)
	return tn, launcher
}

// startProcesses starts spec as real processes of the test binary, healthy,
// and stopped when the test ends.
func startProcesses(t *testing.T, spec testnet.Spec) (*testnet.Testnet, testnet.Subprocess) {
	t.Helper()
	launcher := testnet.Subprocess{Binary: binary}
	return localnet.Start(t, spec, launcher), launcher
}

// crashSession is the part of GET /v1/sessions/{id} the test reads.
type crashSession struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	EndReason string `json:"end_reason"`
	Completed int    `json:"tasks_completed"`
	Miners    []struct {
		Reservation string `json:"reservation"`
		Miner       string `json:"miner"`
		Generation  uint64 `json:"generation"`
		State       string `json:"state"`
		Tasks       int    `json:"tasks"`
	} `json:"miners"`
}

// crashTask is the part of a task the test reads.
type crashTask struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Answer  string `json:"answer"`
	Error   string `json:"error"`
	Answers []struct {
		Miner    string `json:"miner"`
		Accepted bool   `json:"accepted"`
		Error    string `json:"error"`
	} `json:"answers"`
}

// routerCall sends a JSON request to a node's API and decodes a 2xx answer into out.
func routerCall(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, bytes.TrimSpace(raw))
	}
	return json.Unmarshal(raw, out)
}

// crashReservation is the part of a router's reservation the test reads.
type crashReservation struct {
	ID       string    `json:"id"`
	Session  string    `json:"session"`
	State    string    `json:"state"`
	LeaseEnd time.Time `json:"lease_end"`
}

// reservationOf finds one reservation in the router's GET /v1/reservations.
func reservationOf(ctx context.Context, t *testing.T, base, id string) (crashReservation, bool) {
	t.Helper()
	var all []crashReservation
	if err := routerCall(ctx, http.MethodGet, base+"/v1/reservations", nil, &all); err != nil {
		t.Fatalf("reservations: %v", err)
	}
	for _, r := range all {
		if r.ID == id {
			return r, true
		}
	}
	return crashReservation{}, false
}

// runTask submits prompt to the session at base and waits for its outcome.
func runTask(ctx context.Context, t *testing.T, base, session, prompt string) crashTask {
	t.Helper()
	var task crashTask
	tasks := base + "/v1/sessions/" + url.PathEscape(session) + "/tasks"
	if err := routerCall(ctx, http.MethodPost, tasks, api.TaskRequest{Prompt: prompt}, &task); err != nil {
		t.Fatalf("submit: %v", err)
	}
	for task.State != "done" && task.State != "failed" {
		if err := routerCall(ctx, http.MethodGet, tasks+"/"+url.PathEscape(task.ID)+"?wait=20s", nil, &task); err != nil {
			t.Fatalf("task: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("task still %s: %v", task.State, ctx.Err())
		}
	}
	return task
}

// A router killed with SIGKILL and restarted resumes its open session: the
// session is still open on the miner it held, which is still reserved; a
// task submitted after the restart runs on it; and ending the session
// releases the miner, which is validated again and available at its next
// generation.
func TestRouterKill9ResumesSession(t *testing.T) {
	tn, launcher := startCrashNet(t, "rcrash")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	base := tn.RouterURL()
	var s crashSession
	if err := routerCall(ctx, http.MethodPost, base+"/v1/sessions",
		api.SessionRequest{Redundancy: 1, MaxTasks: 5, ReservePeriod: "5m"}, &s); err != nil {
		t.Fatalf("open session: %v", err)
	}
	sessionURL := func() string { return tn.RouterURL() + "/v1/sessions/" + url.PathEscape(s.ID) }
	for len(s.Miners) == 0 || s.Miners[0].State != "active" {
		if err := routerCall(ctx, http.MethodGet, sessionURL(), nil, &s); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("the session holds no miner: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	held := s.Miners[0]
	if task := runTask(ctx, t, base, s.ID, "What is 17 + 25?"); task.State != "done" || !strings.Contains(task.Answer, "42") {
		t.Fatalf("task before the crash: %+v", task)
	}

	before, ok := reservationOf(ctx, t, base, held.Reservation)
	if !ok || before.State != "active" {
		t.Fatalf("the session's reservation before the crash: %+v", before)
	}

	// kill -9, and up again on the same home and ports.
	r, name, ok := tn.Find(tn.Nodes()[len(tn.Nodes())-1].Runtime().PeerID)
	if !ok || !strings.HasPrefix(name, "router") {
		t.Fatalf("the last node is %q, not the router", name)
	}
	if err := r.(*testnet.Process).Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Restart(ctx, name, launcher); err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}

	if err := routerCall(ctx, http.MethodGet, sessionURL(), nil, &s); err != nil {
		t.Fatalf("the session after the restart: %v", err)
	}
	if s.State != "open" || len(s.Miners) != 1 || s.Miners[0].State != "active" ||
		s.Miners[0].Reservation != held.Reservation || s.Miners[0].Miner != held.Miner || s.Completed != 1 {
		t.Fatalf("after kill -9 and restart: %+v, want open, holding %+v", s, held)
	}
	pool, err := tn.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range pool {
		if m.PeerID == held.Miner {
			found = true
			if m.State != "reserved" || m.Generation != held.Generation {
				t.Fatalf("the session's miner is %s at generation %d, want still reserved at %d", m.State, m.Generation, held.Generation)
			}
		}
	}
	if !found {
		t.Fatalf("the session's miner %s is not in the pool view", held.Miner)
	}
	// The restarted router renews the lease it held (at once, on start).
	for {
		after, ok := reservationOf(ctx, t, tn.RouterURL(), held.Reservation)
		if !ok || after.State != "active" {
			t.Fatalf("the session's reservation after the restart: %+v", after)
		}
		if after.LeaseEnd.After(before.LeaseEnd) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the lease was not renewed after the restart: %+v", after)
		}
		time.Sleep(100 * time.Millisecond)
	}

	task := runTask(ctx, t, tn.RouterURL(), s.ID, "What is 20 + 3?")
	if task.State != "done" || !strings.Contains(task.Answer, "23") || len(task.Answers) != 1 ||
		task.Answers[0].Miner != held.Miner || !task.Answers[0].Accepted {
		t.Fatalf("task after the restart: %+v", task)
	}

	if err := routerCall(ctx, http.MethodDelete, sessionURL(), nil, &s); err != nil {
		t.Fatalf("end the session: %v", err)
	}
	if s.State != "ended" || s.EndReason != "closed" || len(s.Miners) != 1 || s.Miners[0].State != "released" || s.Miners[0].Tasks != 2 {
		t.Fatalf("ended session: %+v", s)
	}
	sawValidating := false
	if _, err := tn.WaitPool(ctx, "the miner validating, then available at the next generation", func(m []api.PoolMiner) bool {
		for _, x := range m {
			if x.PeerID != held.Miner {
				continue
			}
			if x.State == "validating" && x.Generation == held.Generation+1 {
				sawValidating = true
			}
			return x.State == "available" && x.Generation == held.Generation+1
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if !sawValidating {
		t.Error("the released miner was never seen validating before it was available again")
	}
}
