package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/testnet"
)

// topID is a peer ID whose short form is 12D3..<tag>; tag has 6 characters.
func topID(tag string) string { return "12D3KooW" + strings.Repeat("x", 38) + tag }

var topNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// topFixture is an oracle-and-router node's view of a pool of six miners.
func topFixture() (api.Overview, []api.PoolMiner, []api.Event) {
	ov := api.Overview{
		Time: topNow,
		Node: api.NodeInfo{PeerID: topID("node01"), Roles: []string{"oracle", "router"}, Network: "devnet",
			UptimeSeconds: 3723, Peers: 7},
		Pool: api.PoolSummary{Total: 6, Counts: map[string]int{"joining": 0, "validating": 1, "available": 3,
			"reserved": 1, "cooling_off": 1, "stale": 0}},
		Oracle: &api.OracleStats{ValidationsPassed: 10, ValidationsFailed: 1, PassRate: 10.0 / 11},
		Router: &api.RouterStats{SessionsOpen: 1, SessionsEnded: 4, QueuedTasks: 2, TasksDone: 12, MeanAgreement: 0.975},
	}
	m := func(tag, state string, gen uint64, oracles int, rep float64, seen time.Duration) api.PoolMiner {
		return api.PoolMiner{PeerID: topID(tag), State: state, Generation: gen, Oracles: make([]string, oracles),
			Reputation: rep, LastSeen: topNow.Add(-seen)}
	}
	miners := []api.PoolMiner{
		m("mnr005", "reserved", 2, 2, 0.91, 3*time.Second),
		m("mnr002", "available", 3, 2, 0.97, 2*time.Second),
		m("mnr001", "available", 1, 2, 0.95, 65*time.Second),
		m("mnr006", "cooling_off", 5, 1, 0.50, 2*time.Hour+5*time.Minute),
		m("mnr003", "available", 1, 2, 0.88, 0),
		m("mnr004", "validating", 7, 0, 0, 500*time.Millisecond),
	}
	events := []api.Event{
		{Time: topNow.Add(-1 * time.Second), Miner: topID("mnr002"), Kind: "state", From: "validating", State: "available", Generation: 3},
		{Time: topNow.Add(-2 * time.Second), Miner: topID("mnr002"), Kind: "attestation", Oracle: topID("orc001"), Pass: true, Score: 0.93, Generation: 3},
		{Time: topNow.Add(-3 * time.Second), Miner: topID("mnr005"), Kind: "grant", Router: topID("rtr001"), Session: "5f3a2b1c9d8e", LeaseEnd: topNow.Add(27 * time.Second), Generation: 2},
		{Time: topNow.Add(-4 * time.Second), Miner: topID("mnr006"), Kind: "release", Router: topID("rtr001"), Outcome: "completed", Generation: 5},
		{Time: topNow.Add(-5 * time.Second), Miner: topID("mnr004"), Kind: "attestation", Oracle: topID("orc001"), Pass: false, Score: 0.12, Generation: 7},
		{Time: topNow.Add(-6 * time.Second), Miner: topID("mnr004"), Kind: "state", State: "joining", Generation: 7},
		{Time: topNow.Add(-7 * time.Second), Miner: topID("mnr006"), Kind: "evidence", Oracle: topID("orc002"), Detail: "two\nverdicts \x1b[31mred\x1b[0m", Generation: 5},
	}
	return ov, miners, events
}

// topFixtureData is the fixture as gatherTop makes it of a node with every endpoint.
func topFixtureData() *topData {
	ov, miners, events := topFixture()
	sortMiners(miners)
	return &topData{Time: ov.Time, API: "http://node", Node: ov.Node, Pool: ov.Pool, Oracle: ov.Oracle,
		Router: ov.Router, Miners: miners, Transitions: events}
}

const topGolden = `ephemera top  node 12D3..node01  network devnet  at 12:00:00
roles oracle,router  up 1h02m  peers 7

POOL  6 miners
  joining        0
  validating     1  ###
  available      3  ##########
  reserved       1  ###
  cooling_off    1  ###
  stale          0
oracle  validations 10 passed, 1 failed, pass rate 90.9%
router  sessions 1 open  tasks 2 queued, 12 done, 0 failed  agreement 0.975

MINERS
  STATE         GEN ORACLES REPUTATION  LAST SEEN   PEER ID
  validating      7       0       0.00  now         12D3..mnr004
  available       1       2       0.95  1m05s ago   12D3..mnr001
  available       1       2       0.88  now         12D3..mnr003
  ... 3 more (--limit 3)

RECENT TRANSITIONS
  11:59:59  12D3..mnr002  state        validating -> available  gen 3
  11:59:58  12D3..mnr002  attestation  oracle 12D3..orc001 pass 0.93  gen 3
  11:59:57  12D3..mnr005  grant        router 12D3..rtr001 session 5f3a2b1c until 12:00:27
  11:59:56  12D3..mnr006  release      router 12D3..rtr001 completed
  11:59:55  12D3..mnr004  attestation  oracle 12D3..orc001 fail 0.12  gen 7
  11:59:54  12D3..mnr004  state        (new) -> joining  gen 7
  11:59:53  12D3..mnr006  evidence     oracle 12D3..orc002: two verdicts ?[31mred?[0m
`

func TestTopRenderGolden(t *testing.T) {
	got := renderTop(topFixtureData(), nil, topOptions{limit: 3, loc: time.UTC}, topNow)
	if got != topGolden {
		t.Errorf("frame:\n%s\nwant:\n%s", got, topGolden)
	}
}

func TestTopRenderRows(t *testing.T) {
	d := topFixtureData()
	frame := renderTop(d, nil, topOptions{limit: 20, loc: time.UTC}, topNow)
	if strings.ContainsRune(frame, '\x1b') {
		t.Errorf("escape code in a plain frame:\n%q", frame)
	}
	if strings.Contains(frame, "more (--limit") {
		t.Errorf("six miners truncated at --limit 20:\n%s", frame)
	}
	// Sorted by state in the lifecycle's order, then generation.
	var order []string
	var peerCol int
	for l := range strings.Lines(frame) {
		if strings.HasPrefix(l, "  STATE ") {
			peerCol = strings.Index(l, "PEER ID")
		}
		// Rows, and only rows, end in a miner's ID.
		if m := regexp.MustCompile(`12D3\.\.(mnr\d+)\n$`).FindStringSubmatch(l); m != nil {
			order = append(order, m[1])
			// Every row's columns line up with the header's.
			if strings.Index(l, "12D3..") != peerCol {
				t.Errorf("row %q: peer ID at column %d, header at %d", l, strings.Index(l, "12D3.."), peerCol)
			}
		}
	}
	if want := "mnr004 mnr001 mnr003 mnr002 mnr005 mnr006"; strings.Join(order, " ") != want {
		t.Errorf("rows in order %v, want %s:\n%s", order, want, frame)
	}
	for _, want := range []string{"cooling_off     5       1       0.50  2h05m ago", "reserved        2       2       0.91  3s ago"} {
		if !strings.Contains(frame, want) {
			t.Errorf("frame lacks %q:\n%s", want, frame)
		}
	}

	// --state lists only those miners; the counts stay whole.
	d.Miners = slicesFilter(d.Miners, func(m api.PoolMiner) bool { return m.State == "available" })
	frame = renderTop(d, nil, topOptions{state: "available", limit: 20, loc: time.UTC}, topNow)
	if !strings.Contains(frame, "MINERS  in state available") || len(regexp.MustCompile(`(?m)^  available +\d+ +2 .*12D3\.\.mnr\d+$`).FindAllString(frame, -1)) != 3 ||
		!strings.Contains(frame, "  reserved       1  ###") {
		t.Errorf("--state available:\n%s", frame)
	}
	d.Miners = nil
	if frame = renderTop(d, nil, topOptions{limit: 20, loc: time.UTC}, topNow); !strings.Contains(frame, "MINERS\n  (none)\n") {
		t.Errorf("no miners:\n%s", frame)
	}
}

func slicesFilter[T any](in []T, keep func(T) bool) []T {
	var out []T
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// Without --limit, a terminal whose height is known gets as many rows as fit,
// and no line is wider than the terminal.
func TestTopRenderFits(t *testing.T) {
	d := topFixtureData()
	for i := range 40 {
		d.Miners = append(d.Miners, api.PoolMiner{PeerID: topID(fmt.Sprintf("xtr%03d", i)), State: "stale", LastSeen: topNow.Add(-time.Minute)})
	}
	for _, height := range []int{50, 40, 30, 10} {
		frame := renderTop(d, nil, topOptions{limit: topDefaultRows, height: height, width: 60, loc: time.UTC}, topNow)
		lines := strings.Split(strings.TrimSuffix(frame, "\n"), "\n")
		if len(lines) > max(height-1, 26) { // 24 lines besides the rows, one row at least, and "... more"
			t.Errorf("height %d: %d lines:\n%s", height, len(lines), frame)
		}
		if height >= 40 && len(lines) != height-1 {
			t.Errorf("height %d: %d lines, want the frame to fill %d:\n%s", height, len(lines), height-1, frame)
		}
		if !strings.Contains(frame, " more (--limit ") {
			t.Errorf("height %d: 46 miners not truncated:\n%s", height, frame)
		}
		for _, l := range lines {
			if len(l) > 60 {
				t.Errorf("height %d: line of %d columns: %q", height, len(l), l)
			}
		}
	}
	// A short terminal gets fewer transitions first, down to three, then
	// fewer miners.
	six := topFixtureData()
	for _, tc := range []struct{ height, rows, events int }{{31, 6, 7}, {28, 6, 4}, {27, 6, 3}, {24, 2, 3}, {5, 1, 3}} {
		frame := renderTop(six, nil, topOptions{limit: topDefaultRows, height: tc.height, loc: time.UTC}, topNow)
		rows := len(regexp.MustCompile(`(?m)12D3\.\.mnr\d+$`).FindAllString(frame, -1))
		events := len(regexp.MustCompile(`(?m)^  \d\d:\d\d:\d\d  `).FindAllString(frame, -1))
		if rows != tc.rows || events != tc.events {
			t.Errorf("height %d: %d rows and %d transitions, want %d and %d:\n%s", tc.height, rows, events, tc.rows, tc.events, frame)
		}
	}

	// Without a height, the limit holds.
	frame := renderTop(d, nil, topOptions{limit: topDefaultRows, loc: time.UTC}, topNow)
	rows := regexp.MustCompile(`(?m)^  stale +0 +0 +0\.00  1m00s ago +12D3\.\.xtr\d{3}$`)
	if n := len(rows.FindAllString(frame, -1)); n != 14 || !strings.Contains(frame, "... 26 more (--limit 20)") {
		t.Errorf("default limit: %d stale rows:\n%s", n, frame)
	}
}

func TestTopRenderUnreachable(t *testing.T) {
	err := unreachableError{errors.New("cannot reach the node at http://127.0.0.1:1/v1/overview: connection refused")}
	frame := renderTop(nil, err, topOptions{limit: 20, loc: time.UTC}, topNow)
	want := "ephemera top  (no data yet)  at 12:00:00\n" +
		"node unreachable: cannot reach the node at http://127.0.0.1:1/v1/overview: connection refused (retrying)\n"
	if frame != want {
		t.Errorf("unreachable, no data yet:\n%s\nwant:\n%s", frame, want)
	}
	// With earlier data, the frame keeps it and says how old it is.
	d := topFixtureData()
	frame = renderTop(d, err, topOptions{limit: 20, loc: time.UTC}, topNow.Add(time.Minute))
	if !strings.Contains(frame, "connection refused (retrying); the data below is from 12:00:00\n") ||
		!strings.Contains(frame, "  available      3  ##########") {
		t.Errorf("unreachable with earlier data:\n%s", frame)
	}
	frame = renderTop(d, errors.New("invalid API key (HTTP 401)"), topOptions{limit: 20, loc: time.UTC}, topNow)
	if !strings.Contains(frame, "node error: invalid API key (HTTP 401) (retrying)") {
		t.Errorf("an error answer:\n%s", frame)
	}
}

// topServer is a node's API: /v1/node and /v1/pool always; /v1/overview and
// /v1/transitions only when full (else 404, as an older node answers).
func topServer(t *testing.T, full bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	ov, miners, events := topFixture()
	var hits atomic.Int32
	mux := http.NewServeMux()
	reply := func(path string, v any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if path == "/v1/transitions" && r.URL.Query().Get("limit") != "10" {
				http.Error(w, "want limit 10", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	reply("/v1/node", ov.Node)
	reply("/v1/pool", miners)
	if full {
		reply("/v1/overview", ov)
		reply("/v1/transitions", events)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &hits
}

func runMain(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestTopOnce(t *testing.T) {
	srv, _ := topServer(t, true)
	// A buffer is no terminal: one frame, no escape codes, exit 0.
	out, errOut, code := runMain("top", "--api", srv.URL, "--limit", "4")
	if code != 0 || errOut != "" {
		t.Fatalf("top: exit %d, stderr %q", code, errOut)
	}
	if strings.ContainsRune(out, '\x1b') {
		t.Errorf("escape codes when stdout is no terminal:\n%q", out)
	}
	for _, want := range []string{"node 12D3..node01  network devnet", "roles oracle,router  up 1h02m  peers 7",
		"  available      3  ##########", "pass rate 90.9%", "agreement 0.975", "... 2 more (--limit 4)",
		"RECENT TRANSITIONS", "validating -> available  gen 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("frame lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "older node") {
		t.Errorf("a full node taken for an older one:\n%s", out)
	}

	out, errOut, code = runMain("top", "--once", "--json", "--api", srv.URL, "--state", "available", "--limit", "2")
	var d topData
	if code != 0 || errOut != "" || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("top --json: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	if d.Pool.Counts["available"] != 3 || d.Pool.Total != 6 || len(d.Miners) != 2 || d.Miners[0].PeerID != topID("mnr001") ||
		len(d.Transitions) != 7 || d.Oracle == nil || d.Router == nil || d.Node.PeerID != topID("node01") || len(d.Missing) != 0 {
		t.Errorf("top --json: %+v", d)
	}
}

// An older node has no /v1/overview nor /v1/transitions: the counts come from
// /v1/pool, and there are no transitions.
func TestTopDegrade(t *testing.T) {
	srv, _ := topServer(t, false)
	c := client.New(srv.URL)
	d, err := gatherTop(context.Background(), c, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"joining": 0, "validating": 1, "available": 3, "reserved": 1, "cooling_off": 1, "stale": 0}
	if fmt.Sprint(d.Pool.Counts) != fmt.Sprint(want) || d.Pool.Total != 6 || d.Transitions != nil ||
		d.Oracle != nil || d.Router != nil || d.Node.PeerID != topID("node01") ||
		strings.Join(d.Missing, " ") != "/v1/overview /v1/transitions" {
		t.Errorf("degraded data: %+v", d)
	}
	out, errOut, code := runMain("top", "--once", "--api", srv.URL)
	if code != 0 || errOut != "" {
		t.Fatalf("top --once of an older node: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"node 12D3..node01  network devnet",
		"older node without /v1/overview and /v1/transitions: counts from /v1/pool; no transitions\n",
		"POOL  6 miners\n", "  validating     1  ###\n", "  available      3  ##########\n", "  cooling_off    1  ###\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("degraded frame lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"RECENT TRANSITIONS", "\noracle  ", "\nrouter  "} {
		if strings.Contains(out, bad) {
			t.Errorf("degraded frame shows %q:\n%s", bad, out)
		}
	}
	out, _, code = runMain("top", "--once", "--json", "--api", srv.URL)
	if code != 0 || !strings.Contains(out, `"transitions": null`) || !strings.Contains(out, `"/v1/overview"`) {
		t.Errorf("top --json of an older node: exit %d:\n%s", code, out)
	}
}

func TestTopErrors(t *testing.T) {
	srv, hits := topServer(t, true)
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--interval", "100ms"}, "", "--interval 100ms is below the minimum of 200ms"},
		{[]string{"--interval", "0s"}, "", "--interval 0s"},
		{[]string{"--interval", "-2s"}, "", "--interval -2s"},
		{[]string{"--interval", "soon"}, "", `invalid value "soon" for flag -interval`},
		{[]string{"--interval", "5"}, "", `invalid value "5" for flag -interval`},
		{nil, "EPHEMERA_INTERVAL=50ms", "--interval 50ms"},
		{[]string{"--limit", "0"}, "", "--limit 0"},
		{[]string{"--limit", "-3"}, "", "--limit -3"},
		{[]string{"--limit", "many"}, "", `invalid value "many" for flag -limit`},
		{nil, "EPHEMERA_LIMIT=0", "--limit 0"},
		{[]string{"--state", "busy"}, "", `--state "busy" is not one of joining,`},
		{[]string{"extra"}, "", `unexpected argument "extra"`},
		{[]string{"--api", "ftp://node"}, "", "is not an http(s) URL"},
	} {
		t.Run(strings.Join(append(tc.args, tc.env), " "), func(t *testing.T) {
			if tc.env != "" {
				k, v, _ := strings.Cut(tc.env, "=")
				t.Setenv(k, v)
			}
			args := append([]string{"top", "--once"}, tc.args...)
			if !strings.Contains(strings.Join(tc.args, " "), "--api") {
				args = append(args, "--api", srv.URL)
			}
			out, errOut, code := runMain(args...)
			if code != 2 || out != "" {
				t.Errorf("exit %d, stdout %q; want exit 2", code, out)
			}
			if !strings.HasPrefix(errOut, "ephemera top: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q, want one line with %q", errOut, tc.want)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("a usage error still asked the node %d times", n)
	}

	// An unreachable node: --once fails with one line and exit 1.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	out, errOut, code := runMain("top", "--once", "--api", dead.URL)
	if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 ||
		!strings.HasPrefix(errOut, "ephemera top: cannot reach the node at "+dead.URL) {
		t.Errorf("unreachable --once: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A refusal is an error too.
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthorized","message":"invalid API key"}}`))
	}))
	defer deny.Close()
	_, errOut, code = runMain("top", "--once", "--api", deny.URL)
	if code != 1 || !strings.Contains(errOut, "invalid API key (HTTP 401)") || !strings.Contains(errOut, "--api-token") {
		t.Errorf("refused --once: exit %d, stderr %q", code, errOut)
	}
}

// The live view draws on the alternate screen, keeps going while the node is
// unreachable, and leaves the terminal as it was when it stops.
func TestTopLive(t *testing.T) {
	srv, hits := topServer(t, true)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	for _, tc := range []struct {
		url   string
		wants []string
	}{
		{srv.URL, []string{"node 12D3..node01", "RECENT TRANSITIONS"}},
		{dead.URL, []string{"node unreachable: cannot reach the node at", dead.URL + "/v1/overview", "(retrying)"}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var out logging.Buffer
		done := make(chan error, 1)
		go func() {
			done <- liveTop(ctx, &out, client.New(tc.url), topOptions{limit: 20, height: 30, width: 80, loc: time.UTC}, topMinInterval)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(out.String(), escHome) < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: liveTop: %v", tc.url, err)
		}
		got := out.String()
		if n := strings.Count(got, escHome); n < 3 {
			t.Errorf("%s: %d frames in 10s, want 3 at 200ms", tc.url, n)
		}
		if !strings.HasPrefix(got, escEnter+escHome) || !strings.HasSuffix(got, escClearEOS+escLeave) ||
			strings.Count(got, escEnter) != 1 || strings.Count(got, escLeave) != 1 {
			t.Errorf("%s: the screen is not entered once and left once:\n%q", tc.url, got)
		}
		frames := strings.Split(got, escHome)
		last := strings.ReplaceAll(strings.TrimSuffix(frames[len(frames)-1], escClearEOS+escLeave), escClearEOL, "")
		for _, want := range tc.wants {
			if !strings.Contains(last, want) {
				t.Errorf("%s: the last frame lacks %q:\n%s", tc.url, want, last)
			}
		}
		for l := range strings.Lines(last) {
			if len(strings.TrimSuffix(l, "\n")) > 80 {
				t.Errorf("%s: line wider than 80: %q", tc.url, l)
			}
		}
		if lines := strings.Count(last, "\n"); lines > 29 {
			t.Errorf("%s: %d lines on a terminal of 30", tc.url, lines)
		}
	}
	if hits.Load() < 9 {
		t.Errorf("%d requests for 3 frames or more", hits.Load())
	}
}

// TestTopE2E runs `top --once` of the real binary against a router and an
// oracle of a testnet whose two miners are available.
func TestTopE2E(t *testing.T) {
	tn := startPool(t, testnet.Spec{Network: "e2e-top", Bootstraps: 1, Oracles: 1, Miners: 2, Routers: 1})
	router := tn.RouterURL()
	nodes := tn.Nodes()
	oracle, routerRT := nodes[1].Runtime(), nodes[len(nodes)-1].Runtime()

	out, errOut, code := run(t, "top", "--once", "--api", router)
	if code != 0 || errOut != "" {
		t.Fatalf("top --once: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	t.Logf("top --once of the router:\n%s", out)
	if strings.ContainsRune(out, '\x1b') {
		t.Errorf("escape codes in --once:\n%q", out)
	}
	header := fmt.Sprintf("ephemera top  node %s  network e2e-top  at ", shortID(routerRT.PeerID))
	for _, re := range []string{
		`(?m)^` + regexp.QuoteMeta(header) + `\d\d:\d\d:\d\d$`,
		`(?m)^roles router  up \S+  peers [1-9]\d*$`,
		`(?m)^POOL  2 miners$`,
		`(?m)^  available      2  #{20}$`,
		`(?m)^  joining        0$`,
		`(?m)^  reserved       0$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("top --once of the router does not match %s:\n%s", re, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^  available +\d+ +1 +\d+\.\d\d  (now|\d\S* ago) +12D3\.\.\w{6}$`).FindAllString(out, -1)); n != 2 {
		t.Errorf("top --once: %d rows of available miners, want 2:\n%s", n, out)
	}
	// Whether the node has the dashboard's endpoints or not, the counts
	// hold; with them, there are transitions and the roles' figures.
	full := !strings.Contains(out, "older node")
	t.Logf("the node serves /v1/overview and /v1/transitions: %v", full)
	if full {
		for _, want := range []string{"router  sessions 0 open", "RECENT TRANSITIONS", "-> available"} {
			if !strings.Contains(out, want) {
				t.Errorf("top --once of the router lacks %q:\n%s", want, out)
			}
		}
		out, errOut, code = run(t, "top", "--once", "--api", oracle.APIURL)
		if code != 0 || !regexp.MustCompile(`(?m)^oracle  validations (\d{2,}|[2-9]) passed, \d+ failed, pass rate \d+\.\d%$`).MatchString(out) {
			t.Errorf("top --once of the oracle: exit %d, stderr %q:\n%s", code, errOut, out)
		}
	}

	out, errOut, code = run(t, "top", "--once", "--json", "--api", router)
	var d topData
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("top --once --json: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	if d.Node.PeerID != routerRT.PeerID || d.Pool.Total != 2 || d.Pool.Counts["available"] != 2 || len(d.Miners) != 2 ||
		testnet.CountState(d.Miners, "available") != 2 {
		t.Errorf("top --once --json: %+v", d)
	}
}
