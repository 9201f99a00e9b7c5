package attack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/testnet"
)

// small is the testnet of the attacks on one node's API.
var small = testnet.Spec{Bootstraps: 1, Oracles: 1, Miners: 1, Routers: 1}

func named(spec testnet.Spec, network string) testnet.Spec {
	spec.Network = network
	return spec
}

// CrossSite is a web page against a router's API on loopback, with no
// token (the default): requests sent with its foreign Origin, and through
// a DNS name rebound to 127.0.0.1 (a foreign Host).
func CrossSite() Attack {
	return Attack{
		Name:    "cross-site",
		Summary: "a web page posts to the router's loopback API, and reads it through a rebound DNS name",
		Quick:   true,
		Spec:    named(small, "attack-web"),
		Run:     crossSite,
	}
}

// webRequest is one request a web page can make.
type webRequest struct {
	what                string
	method, path, ctype string
	origin, host        string
	body                string
	want                int
}

func crossSite(ctx context.Context, e *Env) error {
	const evil, rebound = "http://evil.example", "rebind.evil.example"
	chat := `{"model":"` + inference.BuiltinModel + `","messages":[{"role":"user","content":"What is 1 + 1?"}]}`
	session := `{"redundancy":1,"reserve_period":"24h"}`
	attacks := []webRequest{
		{"chat completion as text/plain from a foreign origin", "POST", "/v1/chat/completions", "text/plain", evil, "", chat, 403},
		{"session without Content-Type from a foreign origin", "POST", "/v1/sessions", "", evil, "", session, 403},
		{"reservation from a foreign origin", "POST", "/v1/reservations", "application/json", evil, "", `{"lease":"10m"}`, 403},
		{"release from a foreign origin", "DELETE", "/v1/reservations/x", "", evil, "", "", 403},
		{"sessions read through a rebound name", "GET", "/v1/sessions", "", "", rebound, "", 403},
		{"events read through a rebound name", "GET", "/v1/events", "", "", rebound, "", 403},
		{"chat completion through a rebound name", "POST", "/v1/chat/completions", "application/json", "", rebound, chat, 403},
	}
	honest := []webRequest{
		{"sessions read by the CLI", "GET", "/v1/sessions", "", "", "", "", 200},
		{"session without Content-Type from the CLI", "POST", "/v1/sessions", "", "", "", session, 415},
	}
	base := e.Net.RouterURL()
	allowed := 0
	for _, r := range attacks {
		code, err := r.send(ctx, base)
		if err != nil {
			return err
		}
		if code != r.want {
			allowed++
			e.Logf("%s: %d, want %d", r.what, code, r.want)
		}
	}
	e.Result.Figure("cross-site-allowed", float64(allowed), "requests")
	e.Result.Check("every cross-site and rebinding request gets 403", allowed == 0, "%d of %d were not refused with 403", allowed, len(attacks))
	for _, r := range honest {
		code, err := r.send(ctx, base)
		if err != nil {
			return err
		}
		e.Result.Check(r.what+fmt.Sprintf(" gets %d", r.want), code == r.want, "got %d", code)
	}
	return nil
}

func (r webRequest) send(ctx context.Context, base string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		return 0, err
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.origin != "" {
		req.Header.Set("Origin", r.origin)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
	}
	if r.host != "" {
		req.Host = r.host
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(cctx))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", r.what, err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// SilentEvents opens thousands of event streams on a router and never
// reads them.
func SilentEvents() Attack {
	return Attack{
		Name:    "silent-events",
		Summary: "3,000 /v1/events clients that never read",
		Quick:   true,
		Spec:    named(small, "attack-events"),
		Run:     silentEvents,
	}
}

func silentEvents(ctx context.Context, e *Env) error {
	const clients, hold, boundMB = 3000, 30 * time.Second, 50.0
	routerName := "router-0"
	before, err := e.rss(routerName)
	if err != nil {
		return err
	}
	u, err := url.Parse(e.Net.RouterURL())
	if err != nil {
		return err
	}
	req := "GET /v1/events HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: text/event-stream\r\n\r\n"
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", u.Host)
		if err != nil {
			e.Logf("dial %d: %v", len(conns), err)
			break
		}
		conns = append(conns, c)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			e.Logf("write %d: %v", len(conns), err)
		}
	}
	e.Logf("%d silent clients connected; holding them %s", len(conns), hold)
	peak := before
	deadline := time.Now().Add(hold)
	servedAll := true
	for time.Now().Before(deadline) {
		if r, err := e.rss(routerName); err == nil {
			peak = max(peak, r)
		}
		// An honest client is still served meanwhile.
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		code, err := webRequest{what: "honest pool read", method: "GET", path: "/v1/pool"}.send(hctx, e.Net.RouterURL())
		cancel()
		if err != nil || code != 200 {
			servedAll = false
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	delta := peak - before
	e.Result.Figure("clients", float64(len(conns)), "connections")
	e.Result.Figure("router-rss-delta-MB", delta, "MB")
	e.Result.Check(fmt.Sprintf("%d silent event clients leave the router under +%.0f MB", clients, boundMB), delta < boundMB && len(conns) == clients,
		"%d clients: RSS %.1f → peak %.1f MB (+%.1f)", len(conns), before, peak, delta)
	e.Result.Check("an honest client is served throughout", servedAll, "GET /v1/pool answered 200 every second: %v", servedAll)
	return nil
}
