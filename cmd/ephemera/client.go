package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode"

	"github.com/ephemera-network/ephemera/api/client"
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
func (f apiFlags) client(set map[string]bool) (*client.Client, error) {
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
		return f.withToken(client.New(*f.api)), nil
	}
	h := node.Home{Dir: *f.home}
	if node.Running(h) {
		if rt, err := node.ReadRuntime(h); err == nil {
			if rt.APIURL == "" {
				return nil, fmt.Errorf("the node in home %s runs no API (api.listen is empty)", h.Dir)
			}
			return f.withToken(client.New(rt.APIURL)), nil
		}
	} else if set["home"] {
		return nil, fmt.Errorf("no node is running in home %s", h.Dir)
	}
	return f.withToken(client.New("http://" + node.DefaultAPIAddr)), nil
}

// authHint ends the message of a 401.
const authHint = "pass the node's API token with --api-token or set EPHEMERA_API_TOKEN"

func (f apiFlags) withToken(c *client.Client) *client.Client {
	c.AuthHint = authHint
	if f.token != nil {
		c.Token = strings.TrimSpace(*f.token)
	}
	return c
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
