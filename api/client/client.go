// Package client talks to an Ephemera node's HTTP API. Its methods send the
// requests of package api and return its types; Do sends any other.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/api"
)

// DefaultTimeout bounds a request of a client from New, reading the answer
// included: long enough for a router that must find a miner again.
const DefaultTimeout = 30 * time.Second

// maxAnswer bounds an answer read whole; maxErrorBody an error's body.
const (
	maxAnswer    = 16 << 20
	maxErrorBody = 1 << 20
)

// ErrNotAPI is an answer with a success status that is not the JSON the
// endpoint answers with.
var ErrNotAPI = errors.New("not an Ephemera API answer")

// Client sends requests to one node's API. Its methods are safe for
// concurrent use; set its fields before the first request.
//
// A method's error is a *StatusError when the node answered with an error
// status, wraps ErrNotAPI when a success could not be read, and is the
// context's error when ctx ended first. Any other means the request or its
// answer did not get through: the node is down or not reachable.
type Client struct {
	base string
	http *http.Client
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// AuthHint, when set, ends the message of a 401: how to give the
	// token.
	AuthHint string
}

// New is a client of the API at base, an http(s) URL such as
// http://127.0.0.1:7601, whose requests are bounded by DefaultTimeout.
func New(base string) *Client {
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: DefaultTimeout}}
}

// Base is the URL of the API, without a trailing slash.
func (c *Client) Base() string { return c.base }

// WithTimeout is a copy of c whose requests are bounded by d as well as by
// their context; with d 0, by their context only: for long polls and
// streams.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.http = &http.Client{Transport: c.http.Transport, Timeout: d}
	return &cp
}

// Do sends a request to path (with its query, if any) with in, unless nil,
// as its JSON body, and decodes a 2xx answer into out, unless out is nil.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out)
}

// do is Do that also takes the statuses in answer as answers, not errors.
func (c *Client) do(ctx context.Context, method, path string, in, out any, answer ...int) error {
	resp, err := c.Send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	u := c.base + path
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	ok := resp.StatusCode/100 == 2
	for _, s := range answer {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		return c.statusError(u, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: %w: %v", u, ErrNotAPI, err)
	}
	return nil
}

// Send sends a request as Do does and returns the response, whatever its
// status: for an answer that is not one JSON value, such as a stream. The
// caller closes its body.
func (c *Client) Send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the node at %s: %v", u, err)
	}
	return resp, nil
}

// CheckResponse is nil for a response of Send with a 2xx status, else its
// *StatusError, read from its body.
func (c *Client) CheckResponse(resp *http.Response) error {
	if resp.StatusCode/100 == 2 {
		return nil
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	u := c.base
	if resp.Request != nil {
		u = resp.Request.URL.String()
	}
	return c.statusError(u, resp.StatusCode, raw)
}

// StatusError is an answer with a status that is not a success.
type StatusError struct {
	URL    string // of the request
	Status int
	// Message is the API's message, "" when the answer carried none.
	Message string
	// Hint says what to do about it: the client's AuthHint on a 401.
	Hint string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: HTTP %d", e.URL, e.Status)
	if e.Message != "" {
		msg = fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// HasStatus reports whether err is a *StatusError with status.
func HasStatus(err error, status int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == status
}

func (c *Client) statusError(u string, status int, raw []byte) error {
	e := &StatusError{URL: u, Status: status}
	var body api.ErrorBody
	if json.Unmarshal(raw, &body) == nil {
		e.Message = body.Error.Message
	}
	if status == http.StatusUnauthorized {
		e.Hint = c.AuthHint
	}
	return e
}
