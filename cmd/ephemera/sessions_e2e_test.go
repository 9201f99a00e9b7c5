package main

// End-to-end tests of `submit` and `sessions`: the real binary against a
// testnet of real processes, and against stand-in servers for the answer
// streams a testnet cannot be made to produce.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

var peerIDPattern = regexp.MustCompile(`12D3KooW[1-9A-HJ-NP-Za-km-z]+`)

// startPool starts spec as a testnet of real processes, in parallel with
// the other such tests, and waits until its router sees every miner
// available.
func startPool(t *testing.T, spec testnet.Spec) *testnet.Testnet {
	t.Helper()
	if testing.Short() {
		t.Skipf("starts a testnet of %d processes", spec.Bootstraps+spec.Oracles+spec.Miners+spec.Routers)
	}
	t.Parallel()
	tn := localnet.Start(t, spec, testnet.Subprocess{Binary: bin})
	waitRouterPool(t, tn.RouterURL(), spec.Miners, 90*time.Second)
	return tn
}

// waitRouterPool waits until the router's pool shows at least n available miners.
func waitRouterPool(t *testing.T, routerURL string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var miners []api.PoolMiner
		code, body := get(t, routerURL+"/v1/pool")
		if code == http.StatusOK && json.Unmarshal(body, &miners) == nil && testnet.CountState(miners, "available") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router did not see %d available miners within %s: HTTP %d %s", n, d, code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitSessions polls the router's sessions, newest first, until cond holds.
func waitSessions(t *testing.T, routerURL, what string, cond func([]listedSession) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ss []listedSession
		code, body := get(t, routerURL+"/v1/sessions")
		if code == http.StatusOK && json.Unmarshal(body, &ss) == nil && cond(ss) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: HTTP %d %s", what, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listedSession is the part of GET /v1/sessions the test reads.
type listedSession struct {
	ID            string   `json:"id"`
	State         string   `json:"state"`
	EndReason     string   `json:"end_reason"`
	Submitted     int      `json:"tasks_submitted"`
	Completed     int      `json:"tasks_completed"`
	MeanAgreement *float64 `json:"mean_agreement"`
	Params        struct {
		Redundancy int `json:"redundancy"`
	} `json:"params"`
	Warm   bool `json:"warm"`
	Miners []struct {
		State string `json:"state"`
	} `json:"miners"`
}

func TestSubmitAndSessions(t *testing.T) {
	// Four miners: three answer the redundant prompt, and the fourth is still
	// available for the streamed one while those three validate again.
	tn := startPool(t, testnet.Spec{Network: "e2e-sessions", Bootstraps: 1, Oracles: 2, Miners: 4, Routers: 1})
	router := tn.RouterURL()

	// Three miners answer and agree.
	out, errOut, code := run(t, "submit", "--api", router, "--redundancy", "3", "What is 17 + 25?")
	if code != 0 || errOut != "" {
		t.Fatalf("submit --redundancy 3: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	if first, _, _ := strings.Cut(out, "\n"); strings.TrimSpace(first) != "42" {
		t.Errorf("submit --redundancy 3: the first line is %q, want the answer 42:\n%s", first, out)
	}
	miners := map[string]bool{}
	for _, id := range peerIDPattern.FindAllString(out, -1) {
		if _, name, ok := tn.Find(id); !ok || !strings.HasPrefix(name, "miner-") {
			t.Errorf("submit names %s, which is not a miner of the testnet", id)
		}
		miners[id] = true
	}
	if len(miners) != 3 || strings.Count(out, " accepted ") != 3 {
		t.Errorf("submit --redundancy 3: want three distinct miners, each accepted:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^agreement: +(0\.9\d\d|1\.000) across 3 answers$`).MatchString(out) {
		t.Errorf("submit --redundancy 3: no agreement of the three answers:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^session: +([0-9a-f]+), task 1$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --redundancy 3 does not name its session:\n%s", out)
	}
	redundant := m[1]

	// One miner streams its answer.
	out, errOut, code = run(t, "submit", "--stream", "What is 2 + 2?", "--api", router)
	if code != 0 || errOut != "" || out != "4\n" {
		t.Errorf("submit --stream: exit %d, stderr %q, stdout %q, want \"4\\n\"", code, errOut, out)
	}

	// The submitted session ended by itself after its one task; the
	// streamed prompt ran on the warm session of the chat endpoint, which
	// stays open and gives its idle miner back after idle_release.
	var sessions []listedSession
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, errOut, code = run(t, "sessions", "--api", router, "--json")
		sessions = nil
		if code != 0 || json.Unmarshal([]byte(out), &sessions) != nil {
			t.Fatalf("sessions --json: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
		}
		ended, idleWarm := 0, 0
		for _, s := range sessions {
			if s.State == "ended" {
				ended++
			}
			if s.Warm && s.State == "open" && len(s.Miners) == 1 && s.Miners[0].State == "released" {
				idleWarm++
			}
		}
		if len(sessions) == 2 && ended == 1 && idleWarm == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions --json: want the ended session and the warm one, its miner given back:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	byID := map[string]listedSession{}
	for _, s := range sessions {
		byID[s.ID] = s
		if s.Submitted != 1 || s.Completed != 1 {
			t.Errorf("session %s: %+v, want one completed task", s.ID, s)
		}
	}
	if s, ok := byID[redundant]; !ok || s.Params.Redundancy != 3 || s.MeanAgreement == nil || s.EndReason != "max_tasks" {
		t.Errorf("sessions --json: the redundant session %s is %+v", redundant, s)
	}

	out, errOut, code = run(t, "sessions", "--api", router)
	if code != 0 || errOut != "" || !strings.Contains(out, "2 sessions: 1 open, 1 ended") || !strings.Contains(out, "open (warm: chat completions)") {
		t.Errorf("sessions: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	for _, s := range sessions {
		if !strings.Contains(out, s.ID) {
			t.Errorf("sessions does not list %s:\n%s", s.ID, out)
		}
	}
	out, errOut, code = run(t, "sessions", redundant, "--api", router)
	if code != 0 || errOut != "" || strings.Count(out, " released ") != 3 ||
		!regexp.MustCompile(`(?m)^1 +done$`).MatchString(out) {
		t.Errorf("sessions %s: exit %d, stderr %q, stdout:\n%s", redundant, code, errOut, out)
	}
	for id := range miners {
		if !strings.Contains(out, id) {
			t.Errorf("sessions %s does not show miner %s:\n%s", redundant, id, out)
		}
	}

	// A session whose answer does not come in time, or that the user
	// interrupts, is ended by submit. Five miners are more than the testnet has.
	out, errOut, code = run(t, "submit", "--api", router, "--redundancy", "5", "--timeout", "2s", "What is 1 + 1?")
	if code != 1 || out != "" {
		t.Errorf("submit past its timeout: exit %d, stdout %q", code, out)
	}
	assertOneLine(t, errOut, "no answer within --timeout 2s", "ended")
	p := start(t, "submit", "--api", router, "--redundancy", "5", "What is 1 + 1?")
	waitSessions(t, router, "the interrupted submit's session to open", func(ss []listedSession) bool {
		return len(ss) == 4 && ss[0].State == "open" && ss[0].Submitted == 1
	})
	sendSignal(t, p, os.Interrupt)
	if code := waitExit(t, p, 15*time.Second); code != 1 {
		t.Errorf("interrupted submit: exit %d", code)
	}
	assertOneLine(t, p.log(), "interrupted", "ended")
	waitSessions(t, router, "both cut-short sessions closed", func(ss []listedSession) bool {
		return ss[0].EndReason == "closed" && ss[1].EndReason == "closed"
	})

	// Mistakes are one line on stderr.
	for _, tc := range []struct {
		args  []string
		code  int
		wants []string
	}{
		{[]string{"submit", "--api", router}, 2, []string{"usage: ephemera submit"}},
		{[]string{"submit", "--api", router, "   "}, 2, []string{"usage: ephemera submit"}},
		{[]string{"submit", "--api", router, "--redundancy", "0", "What is 1 + 1?"}, 2, []string{"--redundancy 0", "1 to 16"}},
		{[]string{"submit", "What is 1 + 1?", "--api", router, "--redundancy", "17"}, 2, []string{"--redundancy 17", "1 to 16"}},
		{[]string{"submit", "--stream", "--redundancy", "17", "What is 1 + 1?", "--api", router}, 2, []string{"--redundancy 17"}},
		{[]string{"submit", "--api", router, "What", "is", "1 + 1?"}, 2, []string{`"is"`, "quote"}},
		{[]string{"sessions", "--api", router, "no-such-session"}, 1, []string{"no-such-session", "404"}},
	} {
		out, errOut, code := run(t, tc.args...)
		if code != tc.code || out != "" {
			t.Errorf("ephemera %s: exit %d (want %d), stdout %q", strings.Join(tc.args, " "), code, tc.code, out)
		}
		assertOneLine(t, errOut, tc.wants...)
	}
}

// A node with an API token refuses the commands without it, and says how to
// give it; --api-token or EPHEMERA_API_TOKEN gives it.
func TestAPIToken(t *testing.T) {
	t.Parallel()
	home := initHome(t, "--api-token", "s3cret-token")
	_, rt := startNode(t, home)

	out, errOut, code := run(t, "status", "--api", rt.APIURL)
	if code != 1 || out != "" {
		t.Errorf("status without the token: exit %d, stdout %q", code, out)
	}
	assertOneLine(t, errOut, "401", "--api-token", "EPHEMERA_API_TOKEN")
	_, errOut, _ = run(t, "sessions", "--api", rt.APIURL, "--api-token", "wrong")
	assertOneLine(t, errOut, "invalid API key", "--api-token")

	if out, errOut, code := run(t, "status", "--api", rt.APIURL, "--api-token", "s3cret-token"); code != 0 || !strings.Contains(out, rt.PeerID) {
		t.Errorf("status --api-token: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := runEnv(t, []string{"EPHEMERA_API_TOKEN=s3cret-token"}, "pool", "--api", rt.APIURL); code != 0 {
		t.Errorf("pool with EPHEMERA_API_TOKEN: exit %d, stderr %q", code, errOut)
	}
	// The node is no router: sessions says so.
	_, errOut, code = run(t, "sessions", "--api", rt.APIURL, "--api-token", "s3cret-token")
	if code != 1 {
		t.Errorf("sessions of a miner: exit %d", code)
	}
	assertOneLine(t, errOut, "not a router")
}

// standIn is a chat completions endpoint that answers with body, after
// checking the request and the token.
func standIn(t *testing.T, token, body string, check func(req map[string]any)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		}
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"no API key: send the header Authorization: Bearer <token>","type":"authentication_error","code":"invalid_api_key"}}`)
			return
		}
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if check != nil {
			check(req)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		// Write the events in pieces, as a network would deliver them.
		rc := http.NewResponseController(w)
		for rest := body; len(rest) > 0; {
			n := min(7, len(rest))
			io.WriteString(w, rest[:n])
			rc.Flush()
			rest = rest[n:]
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func chunk(content string) string {
	b, _ := json.Marshal(map[string]any{
		"object":  "chat.completion.chunk",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}}},
	})
	return string(b)
}

func TestSubmitStreamParsing(t *testing.T) {
	t.Parallel()
	hello := ": a comment\r\n" +
		"data: " + chunk("") + "\r\n\r\n" +
		"event: message\nid: 1\n" +
		"data: " + chunk("Hello") + "\n\n" +
		// One event's JSON over two data lines.
		"data: {\"choices\":[{\"delta\":\n" +
		"data: {\"content\":\", world\"}}]}\n\n" +
		"data:" + `{"choices":[{"delta":{},"finish_reason":"stop"}],"ephemera":{"miners":["x"],"agreement":1}}` + "\n\n" +
		"data: [DONE]\n\n"

	t.Run("deltas", func(t *testing.T) {
		t.Parallel()
		var got map[string]any
		u := standIn(t, "", hello, func(req map[string]any) { got = req })
		out, errOut, code := run(t, "submit", "--stream", "--api", u, "--redundancy", "2", "--model", "m1", "Say hello")
		if code != 0 || errOut != "" || out != "Hello, world\n" {
			t.Errorf("exit %d, stderr %q, stdout %q", code, errOut, out)
		}
		msgs, _ := got["messages"].([]any)
		if got["stream"] != true || got["redundancy"] != float64(2) || got["model"] != "m1" || len(msgs) != 1 {
			t.Errorf("request %v", got)
		}
	})
	t.Run("no redundancy unless asked", func(t *testing.T) {
		t.Parallel()
		var got map[string]any
		u := standIn(t, "", hello, func(req map[string]any) { got = req })
		if _, errOut, code := run(t, "submit", "--stream", "--api", u, "Say hello"); code != 0 {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		if _, ok := got["redundancy"]; ok {
			t.Errorf("request %v has a redundancy", got)
		}
		if _, ok := got["model"]; ok {
			t.Errorf("request %v has a model", got)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		out, errOut, code := run(t, "submit", "--stream", "--json", "--api", standIn(t, "", hello, nil), "Say hello")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if code != 0 || errOut != "" || len(lines) != 4 {
			t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, errOut, out)
		}
		for _, l := range lines {
			if !json.Valid([]byte(l)) {
				t.Errorf("line %q is not JSON", l)
			}
		}
	})
	t.Run("error event", func(t *testing.T) {
		t.Parallel()
		body := "data: " + chunk("Hel") + "\n\n" +
			`data: {"error":{"message":"the miner failed after part of its answer was streamed","type":"server_error","code":503}}` + "\n\n"
		out, errOut, code := run(t, "submit", "--stream", "--api", standIn(t, "", body, nil), "Say hello")
		if code != 1 || out != "Hel\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		assertOneLine(t, errOut, "the miner failed", "503")
	})
	t.Run("cut short", func(t *testing.T) {
		t.Parallel()
		out, errOut, code := run(t, "submit", "--stream", "--api", standIn(t, "", "data: "+chunk("Hel")+"\n\ndata: "+chunk("lo"), nil), "Say hello")
		if code != 1 || out != "Hel\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		assertOneLine(t, errOut, "[DONE]")
	})
	t.Run("garbage", func(t *testing.T) {
		t.Parallel()
		out, errOut, code := run(t, "submit", "--stream", "--api", standIn(t, "", "data: <html>\n\n", nil), "Say hello")
		if code != 1 || out != "" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		assertOneLine(t, errOut, "not a chat completion chunk")
	})
	t.Run("token", func(t *testing.T) {
		t.Parallel()
		u := standIn(t, "tok", hello, nil)
		out, errOut, code := run(t, "submit", "--stream", "--api", u, "Say hello")
		if code != 1 || out != "" {
			t.Errorf("without the token: exit %d, stdout %q", code, out)
		}
		assertOneLine(t, errOut, "401", "--api-token", "EPHEMERA_API_TOKEN")
		for _, env := range [][]string{nil, {"EPHEMERA_API_TOKEN=tok"}} {
			args := []string{"submit", "--stream", "--api", u, "Say hello"}
			if env == nil {
				args = append(args, "--api-token", "tok")
			}
			if out, errOut, code := runEnv(t, env, args...); code != 0 || out != "Hello, world\n" {
				t.Errorf("with the token (env %v): exit %d, stderr %q, stdout %q", env, code, errOut, out)
			}
		}
	})
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		for _, c := range []string{"submit", "sessions"} {
			out, errOut, code := run(t, c, "--help")
			if code != 0 || errOut != "" || strings.Count(out, "Usage: ephemera "+c) != 1 || !strings.Contains(out, "-api-token") {
				t.Errorf("%s --help: exit %d, stderr %q, stdout:\n%s", c, code, errOut, out)
			}
		}
		out, _, _ := run(t, "help")
		for _, c := range []string{"submit", "sessions"} {
			if !strings.Contains(out, fmt.Sprintf("  %s ", c)) {
				t.Errorf("help does not list %s:\n%s", c, out)
			}
		}
	})
}
