package api

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ephemera-network/ephemera/internal/openaiwire"
)

// A web page the node's user opens can reach the API on loopback: its
// browser sends requests there on the page's behalf. Two checks keep such a
// page out. The Host check defeats DNS rebinding, where a page's own name is
// made to point at 127.0.0.1 so that the browser lets it read the answers:
// the Host is then the page's name, never one the API answers to. The
// Origin check refuses the requests a page may send anywhere without reading
// the answer (a form, a "simple" fetch) when they would change state.

// hostGuard decides which Host names the API answers to.
type hostGuard struct {
	all bool // "*" was configured: every Host
	// anyIP takes every IP address: the API listens on all of them. A Host
	// that is an IP address cannot come from a rebound name, since the
	// browser then connects to the address it names.
	anyIP  bool
	listen string // the host the API listens on, normalised
	names  map[string]bool
}

func newHostGuard(listen string, allowed []string) hostGuard {
	g := hostGuard{names: make(map[string]bool)}
	if listen != "" {
		h := hostname(listen)
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() || h == "" {
			g.anyIP = true
		} else {
			g.listen = h
		}
	}
	for _, a := range allowed {
		if a == "*" {
			g.all = true
			continue
		}
		g.names[hostname(a)] = true
	}
	return g
}

// hostname is the host of a Host header or host:port, lower case, without
// port, brackets or a trailing dot.
func hostname(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// named reports whether host (a hostname) is one the API answers to
// without "*": a loopback name or address, the listen address, or a
// configured name.
func (g hostGuard) named(host string) bool {
	if host == "" {
		return false
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true // RFC 6761: browsers resolve these to loopback themselves
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsLoopback() || g.anyIP {
			return true
		}
		if l := net.ParseIP(g.listen); l != nil && l.Equal(ip) {
			return true
		}
	}
	return host == g.listen || g.names[host]
}

// allows reports whether a request's Host header is one the API answers to.
// An empty one (HTTP/1.0) comes from no browser.
func (g hostGuard) allows(hostHeader string) bool {
	return g.all || hostHeader == "" || g.named(hostname(hostHeader))
}

// unsafeMethod is a method that may change the node's state.
func unsafeMethod(m string) bool {
	switch m {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// originRefusal says why a state-changing request from a browser is refused,
// or is "" when it is not: it has no Origin (curl, the CLI), or one of the
// API's own names, or its page has the API's own origin. "*" in
// allowed_hosts does not extend to origins.
func (g hostGuard) originRefusal(r *http.Request) string {
	if !unsafeMethod(r.Method) {
		return ""
	}
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") {
		return "cross-site request refused: a web page of another site may not change this node's state"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" && (strings.EqualFold(u.Host, r.Host) || g.named(hostname(u.Host))) {
		return ""
	}
	return fmt.Sprintf("origin %q refused: a web page of another site may not change this node's state", openaiwire.Clip(origin, 100))
}

// guard answers 403 to a request for a Host the API does not answer to,
// and to a state-changing request from another site's web page.
func guard(g hostGuard, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.allows(r.Host) {
			m.refused.WithLabelValues("host").Inc()
			writeError(w, http.StatusForbidden, fmt.Sprintf(
				"host %q refused: this API answers to localhost, loopback addresses and its listen address; add the name to api.allowed_hosts to serve it",
				openaiwire.Clip(r.Host, 100)))
			return
		}
		if msg := g.originRefusal(r); msg != "" {
			m.refused.WithLabelValues("origin").Inc()
			writeError(w, http.StatusForbidden, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}
