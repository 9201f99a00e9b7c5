package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// floodObserver gives every subscriber the same update as fast as it takes
// them when flood is set, else nothing, and never drops a subscriber: only
// the API can end a stream.
type floodObserver struct {
	*fakeObserver
	update     *Update
	subscribed atomic.Int64
}

func (f *floodObserver) Subscribe(ctx context.Context) (<-chan Update, func()) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan Update)
	f.subscribed.Add(1)
	if f.update != nil {
		go func() {
			for {
				select {
				case ch <- *f.update:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return ch, cancel
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// listen serves h on 127.0.0.1, port 0, until the test ends.
func listen(t *testing.T, h http.Handler) *Server {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", h, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testkit.Stop(t, 10*time.Second, srv.Close) })
	return srv
}

// metricValue is the value of the series of name with labels in reg, 0 when
// there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

// eventually polls cond every 50ms until it holds, or fails the test after
// within, saying what was awaited and, through state, how things stand.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s: %s", within, what, state())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamFrom opens /v1/events of srv from the local address from ("" for
// any) and returns the response; the test closes its body.
func streamFrom(t *testing.T, srv *Server, from string) (*http.Response, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := client.Get(srv.URL() + "/v1/events")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, nil
}

// wantStatus checks a stream's answer; a 429 must say when to retry.
// streamWant opens an event stream from the usual address and checks its
// status.
func streamWant(t *testing.T, srv *Server, want int, what string) *http.Response {
	t.Helper()
	resp, err := streamFrom(t, srv, "")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, resp, want, what)
	return resp
}

func wantStatus(t *testing.T, resp *http.Response, want int, what string) {
	t.Helper()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: status %d, want %d: %s", what, resp.StatusCode, want, b)
	}
	if want == http.StatusTooManyRequests {
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: a 429 without Retry-After", what)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"rate_limit_error"`) {
			t.Errorf("%s: a 429 without the API's error shape: %s", what, b)
		}
	}
}

func TestEventStreamCaps(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		f := &floodObserver{fakeObserver: newFakeObserver(t)}
		srv := listen(t, Handler(Config{Source: obsSource{}, Observer: f, Registerer: reg,
			Streams: StreamLimits{Max: 16, MaxPerAddr: 2}}))
		var open []*http.Response
		for i := range 2 {
			resp := streamWant(t, srv, 200, fmt.Sprintf("stream %d", i+1))
			open = append(open, resp)
		}
		streamWant(t, srv, 429, "a third stream from one address")
		if got := metricValue(t, reg, "ephemera_api_streams_refused_total", "kind", "events", "reason", "per_address"); got != 1 {
			t.Errorf("refused per address: %v, want 1", got)
		}
		if got := metricValue(t, reg, "ephemera_api_streams_open", "kind", "events"); got != 2 {
			t.Errorf("open: %v, want 2", got)
		}

		// Another address has slots of its own, where the system lets a
		// test use one.
		if resp, err := streamFrom(t, srv, "127.0.0.2"); errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Log("no 127.0.0.2 here: not checking a second address")
		} else if err != nil {
			t.Fatal(err)
		} else {
			wantStatus(t, resp, 200, "a stream from a second address")
			resp.Body.Close()
		}

		// A slot frees when its client leaves.
		open[0].Body.Close()
		eventually(t, 30*time.Second, "given a stream after one closed", func() bool {
			resp, err := streamFrom(t, srv, "")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			return resp.StatusCode == 200
		}, func() string { return "429 still" })
	})
	t.Run("in all", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		f := &floodObserver{fakeObserver: newFakeObserver(t)}
		srv := listen(t, Handler(Config{Source: obsSource{}, Observer: f, Registerer: reg,
			Streams: StreamLimits{Max: 3, MaxPerAddr: 16}}))
		for i := range 3 {
			streamWant(t, srv, 200, fmt.Sprintf("stream %d", i+1))
		}
		streamWant(t, srv, 429, "a fourth stream")
		if got := metricValue(t, reg, "ephemera_api_streams_refused_total", "kind", "events", "reason", "total"); got != 1 {
			t.Errorf("refused in all: %v, want 1", got)
		}
	})
}

func TestChatStreamCaps(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := &fakeStreamSessions{}
	srv := listen(t, Handler(Config{Source: obsSource{}, Sessions: s, Registerer: reg,
		Streams: StreamLimits{Max: 16, MaxPerAddr: 2}}))
	post := func(stream bool) *http.Response {
		t.Helper()
		body := fmt.Sprintf(`{"stream":%t,"messages":[{"role":"user","content":"hi"}]}`, stream)
		resp, err := http.Post(srv.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	wantStatus(t, post(true), 200, "stream 1")
	wantStatus(t, post(true), 200, "stream 2")
	wantStatus(t, post(true), 429, "a third stream from one address")
	wantStatus(t, post(false), 200, "a completion that is not streamed")
	if got := metricValue(t, reg, "ephemera_api_streams_refused_total", "kind", "chat", "reason", "per_address"); got != 1 {
		t.Errorf("refused per address: %v, want 1", got)
	}
}

// fakeStreamSessions streams one delta and then holds the completion until
// its client leaves, or streams with flood; one that is not streamed it
// answers at once.
type fakeStreamSessions struct {
	Sessions
	flood func(ctx context.Context, onDelta func(string) error)
}

func (fakeStreamSessions) Models() []string { return []string{"m1"} }

func (f fakeStreamSessions) Complete(ctx context.Context, req CompletionRequest, onDelta func(string) error) (Completion, error) {
	if onDelta == nil {
		return Completion{Text: "ok"}, nil
	}
	if f.flood != nil {
		f.flood(ctx, onDelta)
		return Completion{}, errors.New("flood over")
	}
	if err := onDelta("tok"); err != nil {
		return Completion{}, err
	}
	<-ctx.Done()
	return Completion{}, ctx.Err()
}

// Hundreds of clients that ask for the event stream and never read: those
// over the limits are refused at once, those let in are dropped when their
// queue fills, and the node is left with the goroutines it had. The write
// deadline is an hour: only the queue can drop them.
func TestSilentEventClients(t *testing.T) {
	shortTiming(t, time.Hour, time.Hour, time.Hour)
	const clients = 300
	limits := DefaultStreamLimits()
	reg := prometheus.NewRegistry()
	big := Event{Kind: EventEvidence, Detail: strings.Repeat("x", 16<<10)}
	f := &floodObserver{fakeObserver: newFakeObserver(t), update: &Update{Transition: &big}}
	srv := listen(t, Handler(Config{Source: obsSource{}, Observer: f, Registerer: reg}))
	addr := srv.Addr().String()
	baseline := runtime.NumGoroutine()

	for i := range clients {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /v1/events HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}

	value := func(name string, labels ...string) float64 { return metricValue(t, reg, name, labels...) }
	state := func() string {
		return fmt.Sprintf("%d subscribed, %v dropped, %v refused, %v open; %d goroutines, %d before",
			f.subscribed.Load(), value("ephemera_api_streams_dropped_total", "kind", "events"),
			value("ephemera_api_streams_refused_total", "kind", "events", "reason", "per_address"),
			value("ephemera_api_streams_open", "kind", "events"), runtime.NumGoroutine(), baseline)
	}
	// A slot freed by a drop may be taken by a client that came later: how
	// many are let in depends on the timing, but every one is dropped.
	eventually(t, 60*time.Second, "every client refused or dropped", func() bool {
		refused := value("ephemera_api_streams_refused_total", "kind", "events", "reason", "per_address")
		dropped := value("ephemera_api_streams_dropped_total", "kind", "events")
		return refused+dropped == clients && value("ephemera_api_streams_open", "kind", "events") == 0
	}, state)
	dropped := value("ephemera_api_streams_dropped_total", "kind", "events")
	if dropped < float64(limits.MaxPerAddr) || float64(f.subscribed.Load()) != dropped {
		t.Errorf("%s; want at least %d let in, and each one dropped", state(), limits.MaxPerAddr)
	}
	if value("ephemera_api_streams_refused_total", "kind", "events", "reason", "total") != 0 {
		t.Errorf("refused for the total, not the address: %s", state())
	}
	// The clients' connections are still open on their side: what the
	// server held for them must be gone all the same.
	eventually(t, 60*time.Second, "back to the goroutines of before", func() bool {
		return runtime.NumGoroutine() <= baseline+10
	}, state)
}

// A streaming chat completion whose client stops reading is stopped at a
// write's deadline, rather than holding the completion (and its miners),
// and counted as dropped.
func TestChatStreamSilentClientDropped(t *testing.T) {
	shortTiming(t, time.Hour, time.Hour, 200*time.Millisecond)
	reg := prometheus.NewRegistry()
	told := make(chan error, 1)
	s := &fakeStreamSessions{flood: func(ctx context.Context, onDelta func(string) error) {
		big := strings.Repeat("x", 64<<10)
		for {
			if err := onDelta(big); err != nil {
				told <- err
				return
			}
			if ctx.Err() != nil {
				told <- ctx.Err()
				return
			}
		}
	}}
	srv := listen(t, Handler(Config{Source: obsSource{}, Sessions: s, Registerer: reg}))
	c, err := net.DialTimeout("tcp", srv.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // never read
	body := `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	if _, err := fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		srv.Addr(), len(body), body); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-told:
		if !timedOut(err) {
			t.Errorf("the completion was stopped by %v, want a write's deadline", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the completion still streams to a client that does not read")
	}
	eventually(t, 30*time.Second, "counted as dropped", func() bool {
		return metricValue(t, reg, "ephemera_api_streams_dropped_total", "kind", "chat") == 1 &&
			metricValue(t, reg, "ephemera_api_streams_open", "kind", "chat") == 0
	}, func() string { return "not yet" })
}
