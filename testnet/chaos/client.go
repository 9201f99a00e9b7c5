package chaos

// Every request the run sends to a node is here, and every part of the API
// it reads that it does not take from package api.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
)

// localURL accepts only an http URL on 127.0.0.1: the chaos run never
// talks to anything else.
func localURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" || p.Hostname() != "127.0.0.1" {
		return fmt.Errorf("API %q is not an http URL on 127.0.0.1", u)
	}
	return nil
}

// chaosClient times out a request to a node that died under it.
var chaosClient = &http.Client{Timeout: 20 * time.Second}

// errDown is a node that is down or does not answer.
var errDown = errors.New("node down or not answering")

// call sends a JSON request to the node named name and decodes a 2xx answer
// into out. It returns the status; an error wrapping errDown when the node
// is down or the request did not get an answer.
func (c *run) call(ctx context.Context, name, method, path string, body, out any) (int, error) {
	base := c.url(name)
	if base == "" {
		return 0, fmt.Errorf("%s: %w", name, errDown)
	}
	if err := localURL(base); err != nil {
		return 0, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := chaosClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %w: %v", name, method, path, errDown, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %w: %v", name, method, path, errDown, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s %s: HTTP %d: %s", name, method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s %s: bad answer: %v", name, method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// The requests, one per endpoint. Each returns what call returns: the
// status, and an error wrapping errDown when the node is down or the request
// got no answer. A 2xx answer is decoded into out, which keeps any field
// the answer leaves out.

// postSession opens a session on router.
func (c *run) postSession(ctx context.Context, router string, req api.SessionRequest, out *chaosSession) (int, error) {
	return c.call(ctx, router, http.MethodPost, "/v1/sessions", req, out)
}

// deleteSession ends session id on router.
func (c *run) deleteSession(ctx context.Context, router, id string, out *chaosSession) (int, error) {
	return c.call(ctx, router, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, out)
}

// getSession reads session id on router.
func (c *run) getSession(ctx context.Context, router, id string, out *chaosSession) (int, error) {
	return c.call(ctx, router, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, out)
}

// getSessions lists every session of router.
func (c *run) getSessions(ctx context.Context, router string, out *[]chaosSession) (int, error) {
	return c.call(ctx, router, http.MethodGet, "/v1/sessions", nil, out)
}

// postTask submits a task to session on router.
func (c *run) postTask(ctx context.Context, router, session string, req api.TaskRequest, out *chaosTask) (int, error) {
	return c.call(ctx, router, http.MethodPost, "/v1/sessions/"+url.PathEscape(session)+"/tasks", req, out)
}

// getTask reads a task of session on router, waiting up to 5 s for its outcome.
func (c *run) getTask(ctx context.Context, router, session, task string, out *chaosTask) (int, error) {
	return c.call(ctx, router, http.MethodGet, "/v1/sessions/"+url.PathEscape(session)+"/tasks/"+url.PathEscape(task)+"?wait=5s", nil, out)
}

// getReservations lists every reservation of router.
func (c *run) getReservations(ctx context.Context, router string, out *[]chaosReservation) (int, error) {
	return c.call(ctx, router, http.MethodGet, "/v1/reservations", nil, out)
}

// getNode reads what the node named name says of itself.
func (c *run) getNode(ctx context.Context, name string, out *api.NodeInfo) (int, error) {
	return c.call(ctx, name, http.MethodGet, "/v1/node", nil, out)
}

// getPool reads the pool as the node named name sees it.
func (c *run) getPool(ctx context.Context, name string, out *[]api.PoolMiner) (int, error) {
	return c.call(ctx, name, http.MethodGet, "/v1/pool", nil, out)
}

// getTransitions reads the last transitions the node named name saw on gossip.
func (c *run) getTransitions(ctx context.Context, name string, out *[]api.Event) (int, error) {
	return c.call(ctx, name, http.MethodGet, fmt.Sprintf("/v1/transitions?limit=%d", api.MaxTransitions), nil, out)
}

// healthy asks the node named name whether it is healthy; a node that is
// down is not.
func (c *run) healthy(ctx context.Context, name string) bool {
	ok, _ := testnet.CheckHealth(ctx, c.url(name))
	return ok
}

// chaosSession is the part of a session the run reads.
type chaosSession struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	EndReason string `json:"end_reason"`
	Submitted int    `json:"tasks_submitted"`
	Completed int    `json:"tasks_completed"`
	Failed    int    `json:"tasks_failed"`
	Queued    int    `json:"tasks_queued"`
	Miners    []struct {
		Reservation string `json:"reservation"`
		Miner       string `json:"miner"`
		Generation  uint64 `json:"generation"`
		State       string `json:"state"`
	} `json:"miners"`
}

// chaosTask is the part of a task the run reads.
type chaosTask struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Answer string `json:"answer"`
	Error  string `json:"error"`
}

// chaosReservation is the part of a router's reservation the run reads.
type chaosReservation struct {
	ID         string `json:"id"`
	Session    string `json:"session"`
	Miner      string `json:"miner"`
	Generation uint64 `json:"generation"`
	State      string `json:"state"`
	Detail     string `json:"detail"`
}
