package chaos

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
