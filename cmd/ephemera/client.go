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

// apiCommand makes a command that talks to a running node. Its flags are
// the API flags and those that define adds; define returns the body, which
// runs once they are parsed, with the client of the node they name.
// synopsis is the command's own part of its usage line. arg, when not
// empty, lets the command take one argument and says what to do about a
// second (see parseFlagsArg).
func apiCommand(name, summary, synopsis, arg string, define func(fs *flag.FlagSet) apiBody) command {
	run := func(args []string, stdout, _ io.Writer) error {
		fs := newFlagSet(name, strings.TrimSpace(synopsis+" [--api URL | --home DIR] [--api-token T] [--json]"), stdout)
		af := addAPIFlags(fs)
		body := define(fs)
		call := apiCall{stdout: stdout}
		var err error
		if arg != "" {
			call.arg, call.set, err = parseFlagsArg(fs, args, arg)
		} else {
			call.set, err = parseFlags(fs, args)
		}
		if err != nil {
			return err
		}
		call.json = *af.json
		c, err := af.client(call.set)
		if err != nil {
			return err
		}
		return body(c, call)
	}
	return command{name, summary, run}
}

// apiBody is the work of an API command. It checks its own flags before it
// uses c: making c sends nothing.
type apiBody func(c *client.Client, call apiCall) error

// noFlags is the define of an API command with no flags of its own.
func noFlags(body apiBody) func(*flag.FlagSet) apiBody {
	return func(*flag.FlagSet) apiBody { return body }
}

// apiCall is what the body of an API command is given besides its client.
type apiCall struct {
	arg    string          // the command's argument, if it takes one
	set    map[string]bool // the flags given, on the command line or in the environment
	json   bool            // --json
	stdout io.Writer
}
