package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// apiFlags are the flags of every command that talks to a running node.
type apiFlags struct {
	api, home *string
	json      *bool
}

func addAPIFlags(fs *flag.FlagSet) apiFlags {
	return apiFlags{
		api:  fs.String("api", "", "`URL` (or host:port) of the node's API (default: from --home if that node runs, else "+node.DefaultAPIAddr+")"),
		home: homeFlag(fs),
		json: fs.Bool("json", false, "print JSON"),
	}
}

// client resolves which API to talk to: --api, else the running node of
// --home, else the default address.
func (f apiFlags) client(set map[string]bool) (*apiClient, error) {
	if *f.api != "" {
		// host:port, as `run --api` takes it, means that node over http.
		if !strings.Contains(*f.api, "://") {
			*f.api = "http://" + *f.api
		}
		u, err := url.Parse(*f.api)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageError{fmt.Errorf("--api %q is not an http(s) URL such as http://127.0.0.1:7601", *f.api)}
		}
		return newAPIClient(strings.TrimSuffix(*f.api, "/")), nil
	}
	h := node.Home{Dir: *f.home}
	if node.Running(h) {
		if rt, err := node.ReadRuntime(h); err == nil {
			return newAPIClient(rt.APIURL), nil
		}
	} else if set["home"] {
		return nil, fmt.Errorf("no node is running in home %s", h.Dir)
	}
	return newAPIClient("http://" + node.DefaultAPIAddr), nil
}

type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(base string) *apiClient {
	return &apiClient{base: base, http: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request and decodes a JSON answer into out. okStatus lists the
// statuses that carry an answer (not an error) besides 2xx.
func (c *apiClient) do(method, path string, body, out any, okStatus ...int) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the node at %s: %v", u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	ok := resp.StatusCode/100 == 2
	for _, s := range okStatus {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		var e api.ErrorBody
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error.Message, resp.StatusCode)
		}
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: not an Ephemera API answer: %v", u, err)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
