// Package api serves a node's HTTP API: health, node and peer information,
// and Prometheus metrics.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NodeInfo is the body of GET /v1/node.
type NodeInfo struct {
	PeerID           string   `json:"peer_id"`
	Addrs            []string `json:"addrs"`
	Roles            []string `json:"roles"`
	Network          string   `json:"network"`
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
	PeerID     string    `json:"peer_id"`
	State      string    `json:"state"`
	Generation uint64    `json:"generation"`
	Oracles    []string  `json:"oracles"`
	Reputation float64   `json:"reputation"`
	Models     []string  `json:"models"`
	LastSeen   time.Time `json:"last_seen"`
	Seq        uint64    `json:"seq"`
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
}

// Errors a Reserver returns, which the API maps to HTTP statuses.
var (
	ErrBadRequest  = errors.New("bad request")        // 400
	ErrNotFound    = errors.New("not found")          // 404
	ErrConflict    = errors.New("conflict")           // 409
	ErrUnavailable = errors.New("no miner available") // 503
)

// Reserver is a router's reservation desk; nil on other nodes.
type Reserver interface {
	Reserve(ctx context.Context, model string, lease time.Duration) (any, error)
	Release(ctx context.Context, id string) (any, error)
	Reservations() any
}

// ReserveRequest is the body of POST /v1/reservations.
type ReserveRequest struct {
	Model string `json:"model,omitempty"`
	// Lease is a Go duration such as "30s"; empty takes the network's default.
	Lease string `json:"lease,omitempty"`
}

// Handler routes the API's endpoints to src and gatherer, and the
// reservation endpoints to res when the node is a router.
func Handler(src Source, gatherer prometheus.Gatherer, res Reserver) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pool", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Pool())
	})
	if res != nil {
		handleReservations(mux, res)
	} else {
		mux.HandleFunc("/v1/reservations", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "this node is not a router; reservations are made through a router's API")
		})
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
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Peers())
	})
	mux.Handle("GET /metrics", MetricsHandler(gatherer))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// MetricsHandler serves gatherer in Prometheus' text format.
func MetricsHandler(gatherer prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ErrorBody is the shape of every error the API returns, as OpenAI's API does.
type ErrorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	var body ErrorBody
	body.Error.Message = msg
	body.Error.Type = "invalid_request_error"
	if status >= 500 {
		body.Error.Type = "server_error"
	}
	body.Error.Code = status
	writeJSON(w, status, body)
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
