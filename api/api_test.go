package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/prometheus/client_golang/prometheus"
)

type fakeSource struct {
	info   api.NodeInfo
	peers  []api.PeerInfo
	health error
}

func (f *fakeSource) Info() api.NodeInfo       { return f.info }
func (f *fakeSource) Peers() []api.PeerInfo    { return f.peers }
func (f *fakeSource) Health() error            { return f.health }
func (f *fakeSource) Pool() []api.PoolMiner    { return []api.PoolMiner{} }
func (f *fakeSource) Network() api.NetworkInfo { return api.NetworkInfo{} }

func newFake() *fakeSource {
	return &fakeSource{
		info: api.NodeInfo{
			PeerID:           "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
			Addrs:            []string{"/ip4/127.0.0.1/tcp/7600"},
			Roles:            []string{"bootstrap", "oracle"},
			Network:          "devnet",
			Version:          "v0.0.0-test",
			UptimeSeconds:    12.5,
			Peers:            3,
			RoutingTableSize: 7,
			DHTMode:          "server",
		},
		peers: []api.PeerInfo{
			{PeerID: "peer-a", Addrs: []string{"/ip4/10.0.0.1/tcp/1"}, Direction: "inbound", LatencyMS: 1.5, AgentVersion: "ephemera/1", InRoutingTable: true},
			{PeerID: "peer-b", Addrs: []string{}, Direction: "outbound"},
		},
	}
}

func newRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ephemera_test_events_total", Help: "Test events."})
	reg.MustRegister(c)
	c.Add(42)
	return reg
}

func do(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, api.LocalRequest(method, path, nil))
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v T
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name   string
		health error
		status int
		want   api.Health
	}{
		{"healthy", nil, http.StatusOK, api.Health{Status: "ok"}},
		{"unhealthy", errors.New("no peers for 2m"), http.StatusServiceUnavailable, api.Health{Status: "unhealthy", Reason: "no peers for 2m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFake()
			src.health = tt.health
			rec := do(t, api.Handler(api.Config{Source: src, Gatherer: newRegistry(t)}), http.MethodGet, "/healthz")
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if got := decode[api.Health](t, rec); got != tt.want {
				t.Errorf("body = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHealthzOKBodyShape(t *testing.T) {
	rec := do(t, api.Handler(api.Config{Source: newFake(), Gatherer: newRegistry(t)}), http.MethodGet, "/healthz")
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(raw, map[string]any{"status": "ok"}) {
		t.Errorf("body = %v, want exactly {\"status\":\"ok\"}", raw)
	}
}

func TestNodeAndPeers(t *testing.T) {
	src := newFake()
	h := api.Handler(api.Config{Source: src, Gatherer: newRegistry(t)})

	rec := do(t, h, http.MethodGet, "/v1/node")
	if rec.Code != http.StatusOK {
		t.Fatalf("/v1/node status = %d", rec.Code)
	}
	if got := decode[api.NodeInfo](t, rec); !reflect.DeepEqual(got, src.info) {
		t.Errorf("/v1/node = %+v, want %+v", got, src.info)
	}

	rec = do(t, h, http.MethodGet, "/v1/peers")
	if rec.Code != http.StatusOK {
		t.Fatalf("/v1/peers status = %d", rec.Code)
	}
	if got := decode[[]api.PeerInfo](t, rec); !reflect.DeepEqual(got, src.peers) {
		t.Errorf("/v1/peers = %+v, want %+v", got, src.peers)
	}
}

func TestNodeJSONFieldNames(t *testing.T) {
	rec := do(t, api.Handler(api.Config{Source: newFake(), Gatherer: newRegistry(t)}), http.MethodGet, "/v1/node")
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peer_id", "addrs", "roles", "network", "version", "uptime_seconds", "peers", "routing_table_size", "dht_mode"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/v1/node lacks %q: %v", k, raw)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := newRegistry(t)
	for name, h := range map[string]http.Handler{
		"Handler":        api.Handler(api.Config{Source: newFake(), Gatherer: reg}),
		"MetricsHandler": api.MetricsHandler(reg),
	} {
		t.Run(name, func(t *testing.T) {
			rec := do(t, h, http.MethodGet, "/metrics")
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d", rec.Code)
			}
			if body := rec.Body.String(); !strings.Contains(body, "ephemera_test_events_total 42") {
				t.Errorf("/metrics lacks the counter:\n%s", body)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		method, path string
	}{
		{http.MethodGet, "/nope"},
		{http.MethodGet, "/v1/nodes"},
		{http.MethodGet, "/"},
		{http.MethodPost, "/v1/node"},
		{http.MethodDelete, "/v1/peers"},
		{http.MethodPut, "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := do(t, api.Handler(api.Config{Source: newFake(), Gatherer: newRegistry(t)}), tt.method, tt.path)
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("status = %d, want 4xx", rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var raw map[string]map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
				t.Fatalf("body is not {\"error\":{...}}: %v\n%s", err, rec.Body)
			}
			e, ok := raw["error"]
			if !ok || len(raw) != 1 {
				t.Fatalf("body = %s, want only an error object", rec.Body)
			}
			msg, _ := e["message"].(string)
			if msg == "" || !strings.Contains(msg, tt.path) {
				t.Errorf("error.message = %q, want it to name %s", msg, tt.path)
			}
			if typ, _ := e["type"].(string); typ == "" {
				t.Errorf("error.type is empty")
			}
			if code, _ := e["code"].(float64); int(code) != rec.Code {
				t.Errorf("error.code = %v, want %d", e["code"], rec.Code)
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestListenRoundTrip(t *testing.T) {
	srv, err := api.Listen("127.0.0.1:0", api.Handler(api.Config{Source: newFake(), Gatherer: newRegistry(t)}), discard())
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok || addr.Port == 0 || !addr.IP.IsLoopback() {
		t.Fatalf("Addr = %v, want 127.0.0.1 with a real port", srv.Addr())
	}
	if want := "http://" + addr.String(); srv.URL() != want {
		t.Errorf("URL = %q, want %q", srv.URL(), want)
	}

	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(srv.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("GET /healthz = %d %s", resp.StatusCode, body)
	}
	client.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := client.Get(srv.URL() + "/healthz"); err == nil {
		t.Error("server still answers after Close")
	}
}

func TestListenTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, err := api.Listen(ln.Addr().String(), http.NotFoundHandler(), discard())
	if err == nil {
		srv.Close(context.Background())
		t.Fatalf("Listen on taken %s succeeded", ln.Addr())
	}
}

func TestListenBadAddr(t *testing.T) {
	if srv, err := api.Listen("nope", http.NotFoundHandler(), discard()); err == nil {
		srv.Close(context.Background())
		t.Fatal("Listen(\"nope\") succeeded")
	}
}
