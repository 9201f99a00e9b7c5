// Package api serves a node's HTTP API: health, node and peer information,
// Prometheus metrics and, on routers, reservations, sessions and an
// OpenAI-compatible chat completions endpoint.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/internal/openaiwire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NodeInfo is the body of GET /v1/node.
type NodeInfo struct {
	PeerID           string   `json:"peer_id"`
	Addrs            []string `json:"addrs"`
	Roles            []string `json:"roles"`
	Network          string   `json:"network"`
	NetworkHash      string   `json:"network_hash"`
	NetworkID        string   `json:"network_id"`
	Version          string   `json:"version"`
	UptimeSeconds    float64  `json:"uptime_seconds"`
	Peers            int      `json:"peers"`
	RoutingTableSize int      `json:"routing_table_size"`
	DHTMode          string   `json:"dht_mode"`
	// State and Generation are the node's own lifecycle, on miners only.
	State      string  `json:"state,omitempty"`
	Generation *uint64 `json:"generation,omitempty"`
}

// PoolMiner is one element of GET /v1/pool.
type PoolMiner struct {
	PeerID     string   `json:"peer_id"`
	State      string   `json:"state"`
	Generation uint64   `json:"generation"`
	Oracles    []string `json:"oracles"`
	Reputation float64  `json:"reputation"`
	// Reach is how this node is connected to the miner now: "public" (a
	// direct connection to a miner that announces no relay address),
	// "hole-punched" (a direct connection to a miner behind NAT that a
	// hole punch made), "direct" (one the miner behind NAT dialled
	// itself), "relayed" (through a relay only), or "" (no connection).
	Reach    string    `json:"reach"`
	Models   []string  `json:"models"`
	LastSeen time.Time `json:"last_seen"`
	Seq      uint64    `json:"seq"`
}

// PeerInfo is one element of GET /v1/peers.
type PeerInfo struct {
	PeerID         string   `json:"peer_id"`
	Addrs          []string `json:"addrs"`
	Direction      string   `json:"direction"`
	LatencyMS      float64  `json:"latency_ms"`
	AgentVersion   string   `json:"agent_version,omitempty"`
	InRoutingTable bool     `json:"in_routing_table"`
}

// NetworkInfo answers GET /v1/network: how this node reaches its network
// and how the network reaches it, what `ephemera doctor` reads.
type NetworkInfo struct {
	Network     string `json:"network"`
	NetworkHash string `json:"network_hash"`
	DHTMode     string `json:"dht_mode"`
	// Listen, Announced and Observed are what the node listens on, what it
	// tells peers, and what peers saw its connections come from.
	Listen    []string `json:"listen"`
	Announced []string `json:"announced"`
	Observed  []string `json:"observed"`
	// AutoNAT v2's verdicts on the node's public addresses, and AutoNAT's
	// on the node as a whole: public, private or unknown.
	Reachable    []string `json:"reachable"`
	Unreachable  []string `json:"unreachable"`
	Unknown      []string `json:"unknown"`
	Reachability string   `json:"reachability"`
	// RelayAddrs are the node's addresses through relays that hold a
	// reservation for it; RelayService says whether it relays for others.
	RelayAddrs   []string `json:"relay_addrs"`
	RelayService bool     `json:"relay_service"`
	// Dialable: "yes" (a confirmed address or a relay reservation), "no",
	// or "unknown" before AutoNAT's first verdict.
	Dialable   string          `json:"dialable"`
	Bootstraps []BootstrapInfo `json:"bootstraps"`
	// Foreign are the peers parted with for following another network
	// definition.
	Foreign []ForeignPeer `json:"foreign"`
}

// BootstrapInfo is one bootstrap peer in NetworkInfo.
type BootstrapInfo struct {
	PeerID    string    `json:"peer_id"`
	Addrs     []string  `json:"addrs"`
	Connected bool      `json:"connected"`
	Error     string    `json:"error,omitempty"`
	Tried     time.Time `json:"tried"`
	// NetworkHash is set when the peer follows another definition.
	NetworkHash string `json:"network_hash,omitempty"`
}

// ForeignPeer is a peer of another network definition.
type ForeignPeer struct {
	PeerID      string `json:"peer_id"`
	NetworkHash string `json:"network_hash"`
}

// Health is the body of GET /healthz.
type Health struct {
	Status string `json:"status"`           // "ok" or "unhealthy"
	Reason string `json:"reason,omitempty"` // why the node is unhealthy
}

// Source is what the API reads from a node.
type Source interface {
	Info() NodeInfo
	Peers() []PeerInfo
	// Health returns nil when the node is healthy, else the reason it is not.
	Health() error
	// Pool lists every miner the node knows.
	Pool() []PoolMiner
	// Network says how the node reaches its network and is reached.
	Network() NetworkInfo
}

// Reserver is a router's reservation desk; nil on other nodes.
type Reserver interface {
	Reserve(ctx context.Context, model string, lease time.Duration) (Reservation, error)
	Release(ctx context.Context, id string) (Reservation, error)
	Reservations() []Reservation
}

// ReserveRequest is the body of POST /v1/reservations.
type ReserveRequest struct {
	Model string `json:"model,omitempty"`
	// Lease is a Go duration such as "30s"; empty takes the network's default.
	Lease string `json:"lease,omitempty"`
}

// Config is what Handler serves.
type Config struct {
	Source   Source
	Gatherer prometheus.Gatherer
	Reserver Reserver // nil unless the node is a router
	Sessions Sessions // nil unless the node is a router
	// Observer serves the dashboard's data: /v1/overview, /v1/history,
	// /v1/miners/{peer_id}, /v1/transitions and /v1/events. Nil serves none.
	Observer Observer
	// UI serves the dashboard's static files for GET /, /index.html and
	// /ui/..., with the request's path as it is, and without a token. Nil
	// serves none.
	UI http.Handler
	// Token, when set, is needed by every endpoint but GET /healthz and the
	// UI's: as "Authorization: Bearer <Token>" or, on GET only (EventSource
	// cannot set headers), as the query parameter access_token.
	Token string
	// Listen is the host:port the API listens on: a request's Host may name
	// its host, or any IP address when it is unspecified (0.0.0.0, ::).
	Listen string
	// AllowedHosts are further names a request's Host may carry, besides
	// localhost and loopback addresses; "*" takes every Host.
	AllowedHosts []string
	// Streams bounds the event streams and streaming chat completions open
	// at once.
	Streams StreamLimits
	// Registerer, when set, takes the API's own metrics: what it refused
	// and the streams it dropped.
	Registerer prometheus.Registerer
}

// Handler routes the API's endpoints to c.Source and c.Gatherer, and the
// reservation, session and OpenAI-compatible endpoints to c.Reserver and
// c.Sessions when the node is a router, and the dashboard's data and files to
// c.Observer and c.UI. A nil Gatherer serves no /metrics.
// A known path asked with another method is a 405 with an Allow header; an
// unknown path a 404; a panic a 500 that says nothing of it. A Host the API
// does not answer to, and a state-changing request from another site's web
// page, are a 403 (guard).
func Handler(c Config) http.Handler {
	if c.Source == nil {
		panic("api: Handler without a Source")
	}
	src := c.Source
	m := newMetrics(c.Registerer)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pool", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Pool())
	})
	if c.Reserver != nil {
		handleReservations(mux, c.Reserver)
	} else {
		notRouter(mux, "this node is not a router; reservations are made through a router's API",
			"/v1/reservations", "/v1/reservations/")
	}
	if c.Sessions != nil {
		handleSessions(mux, c.Sessions)
		handleOpenAI(mux, c.Sessions, newStreamLimiter(kindChat, c.Streams, m))
	} else {
		notRouter(mux, "this node is not a router; sessions, models and chat completions are served by a router's API",
			"/v1/sessions", "/v1/sessions/", "/v1/models", "/v1/models/", "/v1/chat/completions")
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := src.Health(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, Health{Status: "unhealthy", Reason: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, Health{Status: "ok"})
	})
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Info())
	})
	mux.HandleFunc("GET /v1/network", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Network())
	})
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Peers())
	})
	if c.Gatherer != nil {
		mux.Handle("GET /metrics", MetricsHandler(c.Gatherer))
	}
	if c.Observer != nil {
		handleObserve(mux, c.Observer, newStreamLimiter(kindEvents, c.Streams, m))
	}
	if c.UI != nil {
		mux.Handle("GET /{$}", c.UI)
		mux.Handle("GET /index.html", c.UI)
		mux.Handle("GET /ui/", c.UI)
	}
	var h http.Handler = route(mux, m)
	if c.Token != "" {
		h = requireToken(c.Token, c.UI != nil, h)
	}
	h = guard(newHostGuard(c.Listen, c.AllowedHosts), m, h)
	return recoverPanics(h)
}

// notRouter answers every method on paths with a 404 that says why.
func notRouter(mux *http.ServeMux, msg string, paths ...string) {
	for _, p := range paths {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, msg)
		})
	}
}

// probeMethods are the methods route tries when a request's own matches no
// pattern, to tell a wrong method (405) from an unknown path (404).
var probeMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
}

// route serves mux, answering in the API's error shape where mux would not
// match: 405 with Allow when the path is served under other methods, else 404.
// A request with a body that is not JSON is a 415 (contentTypeRefusal).
func route(mux *http.ServeMux, m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			if msg := contentTypeRefusal(r); msg != "" {
				m.refused.WithLabelValues("content_type").Inc()
				writeError(w, http.StatusUnsupportedMediaType, msg)
				return
			}
			mux.ServeHTTP(w, r)
			return
		}
		var allow []string
		for _, m := range probeMethods {
			probe := *r
			probe.Method = m
			if _, pattern := mux.Handler(&probe); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed,
			fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
	})
}

// contentTypeRefusal says why a POST, PUT or PATCH is refused for its
// Content-Type, or is "" when it is not: the type must be application/json,
// with any parameters, and may be left out only when there is no body. A
// web page can send text/plain or a form anywhere without asking; it must
// ask the API (a CORS preflight, which it answers with no) before it sends
// JSON.
func contentTypeRefusal(r *http.Request) string {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return ""
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		if r.ContentLength == 0 {
			return ""
		}
		return "a body without Content-Type refused: send it as application/json"
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return ""
	}
	return fmt.Sprintf("content type %q refused: send the body as application/json", openaiwire.Clip(ct, 100))
}

// clientKey marks a request's context with the API client it came from.
type clientKey struct{}

// tokenClient names the holder of the node's API token, the one client a
// token identifies today.
const tokenClient = "token"

// clientOf is the API client a request came from: "" without a token.
func clientOf(r *http.Request) string {
	c, _ := r.Context().Value(clientKey{}).(string)
	return c
}

// requireToken lets through requests that carry "Authorization: Bearer
// <token>", GET requests with the query parameter access_token=<token>, and
// those for /healthz and, when ui, the dashboard's static files. The query
// parameter is taken out of the request before it goes further, so that no
// handler sees (or logs) it.
func requireToken(token string, ui bool, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	// Hashing first keeps the comparison's time independent of the token's
	// length as well as of its content.
	matches := func(got string) bool {
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || ui && isUIPath(r) {
			next.ServeHTTP(w, r)
			return
		}
		msg := "no API key: send the header Authorization: Bearer <token>"
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, got, ok := strings.Cut(h, " ")
			if ok && strings.EqualFold(scheme, "Bearer") && matches(strings.TrimSpace(got)) {
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey{}, tokenClient)))
				return
			}
			msg = "invalid API key: send the header Authorization: Bearer <token> with the node's API token"
		} else if q := r.URL.Query(); q.Has("access_token") {
			if r.Method == http.MethodGet && matches(q.Get("access_token")) {
				q.Del("access_token")
				r2 := r.Clone(r.Context())
				r2.URL.RawQuery = q.Encode()
				r2.RequestURI = r2.URL.RequestURI()
				next.ServeHTTP(w, r2)
				return
			}
			msg = "invalid API key: the query parameter access_token must be the node's API token, and is taken on GET requests only"
		}
		body := errorBody(http.StatusUnauthorized, msg)
		body.Error.Code = "invalid_api_key"
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeJSON(w, http.StatusUnauthorized, body)
	})
}

// isUIPath reports whether r asks for the dashboard's static files.
func isUIPath(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p == "/" || p == "/index.html" || p == "/ui" || strings.HasPrefix(p, "/ui/")
}

// recoverPanics turns a handler's panic into a logged 500 that says nothing
// of it, or, when the answer has begun, into an aborted connection.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			logf(r, "api: panic serving %s %s: %v\n%s", r.Method, r.URL.Path, v, debug.Stack())
			if tw.wrote.Load() {
				panic(http.ErrAbortHandler)
			}
			writeError(w, http.StatusInternalServerError, "internal error; the node's log has the details")
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter records whether an answer has begun. Unwrap lets
// http.ResponseController reach the writer beneath.
type trackingWriter struct {
	http.ResponseWriter
	wrote atomic.Bool
}

func (t *trackingWriter) WriteHeader(status int) {
	t.wrote.Store(true)
	t.ResponseWriter.WriteHeader(status)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote.Store(true)
	return t.ResponseWriter.Write(b)
}

func (t *trackingWriter) Flush() { _ = t.FlushError() }

func (t *trackingWriter) FlushError() error {
	t.wrote.Store(true)
	return http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// MetricsHandler serves gatherer in Prometheus' text format.
func MetricsHandler(gatherer prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client has gone; nothing to tell it
}

// Server is an HTTP server bound to one address.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Listen binds addr (host:port; port 0 picks a free one) and serves h on it.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		ln:  ln,
		log: log,
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, with the real port.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the base URL clients use, e.g. http://127.0.0.1:7601.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops accepting requests and waits for those in flight until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.srv.Close()
	}
	return err
}
