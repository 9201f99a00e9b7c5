package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// apiFlags are the flags of every command that talks to a running node.
type apiFlags struct {
	api, home, token *string
	json             *bool
}

func addAPIFlags(fs *flag.FlagSet) apiFlags {
	return apiFlags{
		api:   fs.String("api", "", "`URL` (or host:port) of the node's API (default: from --home if that node runs, else "+node.DefaultAPIAddr+")"),
		home:  homeFlag(fs),
		token: fs.String("api-token", "", "bearer `token` to send, for a node whose API requires one"),
		json:  fs.Bool("json", false, "print JSON"),
	}
}

// client resolves which API to talk to: --api, else the running node of
// --home, else the default address.
func (f apiFlags) client(set map[string]bool) (*apiClient, error) {
	if f.token != nil && strings.ContainsFunc(*f.token, unicode.IsControl) {
		return nil, usageError{errors.New("--api-token contains a control character such as a newline")}
	}
	if *f.api != "" {
		// host:port, as `run --api` takes it, means that node over http.
		if !strings.Contains(*f.api, "://") {
			*f.api = "http://" + *f.api
		}
		u, err := url.Parse(*f.api)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageError{fmt.Errorf("--api %q is not an http(s) URL such as http://127.0.0.1:7601", *f.api)}
		}
		return f.withToken(newAPIClient(strings.TrimSuffix(*f.api, "/"))), nil
	}
	h := node.Home{Dir: *f.home}
	if node.Running(h) {
		if rt, err := node.ReadRuntime(h); err == nil {
			if rt.APIURL == "" {
				return nil, fmt.Errorf("the node in home %s runs no API (api.listen is empty)", h.Dir)
			}
			return f.withToken(newAPIClient(rt.APIURL)), nil
		}
	} else if set["home"] {
		return nil, fmt.Errorf("no node is running in home %s", h.Dir)
	}
	return f.withToken(newAPIClient("http://" + node.DefaultAPIAddr)), nil
}

func (f apiFlags) withToken(c *apiClient) *apiClient {
	if f.token != nil {
		c.token = strings.TrimSpace(*f.token)
	}
	return c
}

type apiClient struct {
	base  string
	token string // sent as "Authorization: Bearer <token>" when set
	http  *http.Client
}

func newAPIClient(base string) *apiClient {
	return &apiClient{base: base, http: &http.Client{Timeout: 30 * time.Second}}
}

// untimed is a copy of c whose requests are bounded only by their context:
// for long polls and streams.
func (c *apiClient) untimed() *apiClient {
	cp := *c
	cp.http = &http.Client{Transport: c.http.Transport}
	return &cp
}

// do sends a request and decodes a JSON answer into out. okStatus lists the
// statuses that carry an answer (not an error) besides 2xx.
func (c *apiClient) do(method, path string, body, out any, okStatus ...int) error {
	return c.doCtx(context.Background(), method, path, body, out, okStatus...)
}

// doCtx is do bounded by ctx as well as by the client's timeout.
func (c *apiClient) doCtx(ctx context.Context, method, path string, body, out any, okStatus ...int) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	u := c.base + path
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	ok := resp.StatusCode/100 == 2
	for _, s := range okStatus {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		return statusError(u, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: not an Ephemera API answer: %v", u, err)
	}
	return nil
}

// send sends a request with the client's token and returns the response,
// whatever its status; the caller closes its body.
func (c *apiClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
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
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
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

// statusError is the error of an answer that is not a success: the API's
// message when it sent one.
func statusError(u string, status int, raw []byte) error {
	var e api.ErrorBody
	msg := fmt.Sprintf("%s: HTTP %d", u, status)
	if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
		msg = fmt.Sprintf("%s (HTTP %d)", e.Error.Message, status)
	}
	if status == http.StatusUnauthorized {
		msg += "; pass the node's API token with --api-token or set EPHEMERA_API_TOKEN"
	}
	return errors.New(msg)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
