package chaos

// Every request the run sends to a node is here.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
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

// requestTimeout times out a request to a node that died under it.
const requestTimeout = 20 * time.Second

// errDown is a node that is down or does not answer.
var errDown = errors.New("node down or not answering")

// call sends a request to the node named name through send, what naming it,
// and stores a 2xx answer in out. It returns the status; an error wrapping
// errDown when the node is down or the request did not get an answer.
func call[T any](c *run, name, what string, out *T, send func(*client.Client) (T, error)) (int, error) {
	base := c.url(name)
	if base == "" {
		return 0, fmt.Errorf("%s: %w", name, errDown)
	}
	if err := localURL(base); err != nil {
		return 0, err
	}
	v, err := send(client.New(base).WithTimeout(requestTimeout))
	var se *client.StatusError
	switch {
	case err == nil:
		*out = v
		return http.StatusOK, nil
	case errors.As(err, &se):
		return se.Status, fmt.Errorf("%s %s: %w", name, what, err)
	case errors.Is(err, client.ErrNotAPI):
		return http.StatusOK, fmt.Errorf("%s %s: bad answer: %w", name, what, err)
	}
	return 0, fmt.Errorf("%s %s: %w: %v", name, what, errDown, err)
}

// The requests, one per endpoint. Each returns what call returns: the
// status, and an error wrapping errDown when the node is down or the request
// got no answer. A 2xx answer is stored in out; otherwise out is left as it
// was.

// postSession opens a session on router.
func (c *run) postSession(ctx context.Context, router string, req api.SessionRequest, out *api.SessionDetail) (int, error) {
	return call(c, router, "POST /v1/sessions", out, func(cl *client.Client) (api.SessionDetail, error) {
		return cl.CreateSession(ctx, req)
	})
}

// deleteSession ends session id on router.
func (c *run) deleteSession(ctx context.Context, router, id string, out *api.SessionDetail) (int, error) {
	return call(c, router, "DELETE /v1/sessions/"+id, out, func(cl *client.Client) (api.SessionDetail, error) {
		return cl.EndSession(ctx, id)
	})
}

// getSession reads session id on router.
func (c *run) getSession(ctx context.Context, router, id string, out *api.SessionDetail) (int, error) {
	return call(c, router, "GET /v1/sessions/"+id, out, func(cl *client.Client) (api.SessionDetail, error) {
		return cl.Session(ctx, id)
	})
}

// getSessions lists every session of router.
func (c *run) getSessions(ctx context.Context, router string, out *[]api.Session) (int, error) {
	return call(c, router, "GET /v1/sessions", out, func(cl *client.Client) ([]api.Session, error) {
		return cl.Sessions(ctx)
	})
}

// postTask submits a task to session on router.
func (c *run) postTask(ctx context.Context, router, session string, req api.TaskRequest, out *api.Task) (int, error) {
	return call(c, router, "POST /v1/sessions/"+session+"/tasks", out, func(cl *client.Client) (api.Task, error) {
		return cl.SubmitTask(ctx, session, req)
	})
}

// getTask reads a task of session on router, waiting up to 5 s for its outcome.
func (c *run) getTask(ctx context.Context, router, session, task string, out *api.Task) (int, error) {
	return call(c, router, "GET /v1/sessions/"+session+"/tasks/"+task, out, func(cl *client.Client) (api.Task, error) {
		return cl.Task(ctx, session, task, 5*time.Second)
	})
}

// getReservations lists every reservation of router.
func (c *run) getReservations(ctx context.Context, router string, out *[]api.Reservation) (int, error) {
	return call(c, router, "GET /v1/reservations", out, func(cl *client.Client) ([]api.Reservation, error) {
		return cl.Reservations(ctx)
	})
}

// getNode reads what the node named name says of itself.
func (c *run) getNode(ctx context.Context, name string, out *api.NodeInfo) (int, error) {
	return call(c, name, "GET /v1/node", out, func(cl *client.Client) (api.NodeInfo, error) {
		return cl.Node(ctx)
	})
}

// getPool reads the pool as the node named name sees it.
func (c *run) getPool(ctx context.Context, name string, out *[]api.PoolMiner) (int, error) {
	return call(c, name, "GET /v1/pool", out, func(cl *client.Client) ([]api.PoolMiner, error) {
		return cl.Pool(ctx)
	})
}

// getTransitions reads the last transitions the node named name saw on gossip.
func (c *run) getTransitions(ctx context.Context, name string, out *[]api.Event) (int, error) {
	return call(c, name, "GET /v1/transitions", out, func(cl *client.Client) ([]api.Event, error) {
		return cl.Transitions(ctx, api.MaxTransitions)
	})
}

// healthy asks the node named name whether it is healthy; a node that is
// down is not.
func (c *run) healthy(ctx context.Context, name string) bool {
	ok, _ := testnet.CheckHealth(ctx, c.url(name))
	return ok
}
