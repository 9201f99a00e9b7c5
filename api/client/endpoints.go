package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ephemera-network/ephemera/api"
)

// get GETs path into a new T.
func get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var v T
	err := c.do(ctx, http.MethodGet, path, nil, &v)
	return v, err
}

// Health asks GET /healthz. An unhealthy node's 503 is an answer, not an
// error: its Status says "unhealthy" and its Reason why.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var h api.Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h, http.StatusServiceUnavailable)
	return h, err
}

// Node asks GET /v1/node.
func (c *Client) Node(ctx context.Context) (api.NodeInfo, error) {
	return get[api.NodeInfo](ctx, c, "/v1/node")
}

// Network asks GET /v1/network.
func (c *Client) Network(ctx context.Context) (api.NetworkInfo, error) {
	return get[api.NetworkInfo](ctx, c, "/v1/network")
}

// Peers asks GET /v1/peers.
func (c *Client) Peers(ctx context.Context) ([]api.PeerInfo, error) {
	return get[[]api.PeerInfo](ctx, c, "/v1/peers")
}

// Pool asks GET /v1/pool: every miner the node knows.
func (c *Client) Pool(ctx context.Context) ([]api.PoolMiner, error) {
	return get[[]api.PoolMiner](ctx, c, "/v1/pool")
}

// Overview asks GET /v1/overview.
func (c *Client) Overview(ctx context.Context) (api.Overview, error) {
	return get[api.Overview](ctx, c, "/v1/overview")
}

// Transitions asks GET /v1/transitions for the latest limit events, newest
// first; limit 0 takes the node's default.
func (c *Client) Transitions(ctx context.Context, limit int) ([]api.Event, error) {
	path := "/v1/transitions"
	if limit != 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	return get[[]api.Event](ctx, c, path)
}

// Reserve reserves a miner through a router: POST /v1/reservations.
func (c *Client) Reserve(ctx context.Context, req api.ReserveRequest) (api.Reservation, error) {
	var r api.Reservation
	err := c.do(ctx, http.MethodPost, "/v1/reservations", req, &r)
	return r, err
}

// Release releases a router's reservation: DELETE /v1/reservations/{id}.
func (c *Client) Release(ctx context.Context, id string) (api.Reservation, error) {
	var r api.Reservation
	err := c.do(ctx, http.MethodDelete, "/v1/reservations/"+url.PathEscape(id), nil, &r)
	return r, err
}

// Reservations lists a router's reservations: GET /v1/reservations.
func (c *Client) Reservations(ctx context.Context) ([]api.Reservation, error) {
	return get[[]api.Reservation](ctx, c, "/v1/reservations")
}

// CreateSession opens a session on a router: POST /v1/sessions.
func (c *Client) CreateSession(ctx context.Context, req api.SessionRequest) (api.SessionDetail, error) {
	var s api.SessionDetail
	err := c.do(ctx, http.MethodPost, "/v1/sessions", req, &s)
	return s, err
}

// Sessions lists a router's sessions, newest first: GET /v1/sessions.
func (c *Client) Sessions(ctx context.Context) ([]api.Session, error) {
	return get[[]api.Session](ctx, c, "/v1/sessions")
}

// Session reads one session with its tasks: GET /v1/sessions/{id}.
func (c *Client) Session(ctx context.Context, id string) (api.SessionDetail, error) {
	return get[api.SessionDetail](ctx, c, sessionPath(id))
}

// EndSession ends a session and returns it ended: DELETE
// /v1/sessions/{id}. One that had already ended is a 409.
func (c *Client) EndSession(ctx context.Context, id string) (api.SessionDetail, error) {
	var s api.SessionDetail
	err := c.do(ctx, http.MethodDelete, sessionPath(id), nil, &s)
	return s, err
}

// SubmitTask submits a task to session: POST /v1/sessions/{id}/tasks. The
// task comes back queued.
func (c *Client) SubmitTask(ctx context.Context, session string, req api.TaskRequest) (api.Task, error) {
	var t api.Task
	err := c.do(ctx, http.MethodPost, sessionPath(session)+"/tasks", req, &t)
	return t, err
}

// Task reads a task of session: GET /v1/sessions/{id}/tasks/{task}. With
// wait > 0 the router first waits up to wait (at most api.MaxTaskWait) for
// the task to finish; the client's own timeout must allow for it.
func (c *Client) Task(ctx context.Context, session, task string, wait time.Duration) (api.Task, error) {
	path := sessionPath(session) + "/tasks/" + url.PathEscape(task)
	if wait > 0 {
		path += "?wait=" + wait.String()
	}
	return get[api.Task](ctx, c, path)
}

func sessionPath(id string) string { return "/v1/sessions/" + url.PathEscape(id) }
