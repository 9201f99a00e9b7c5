package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"strings"
	"testing"
)

// do serves one request through Handler.
func do(t *testing.T, method, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w
}

// wantSecurity checks the headers every answer carries.
func wantSecurity(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if got := w.Header().Get("Content-Security-Policy"); got != CSP {
		t.Errorf("Content-Security-Policy = %q, want %q", got, CSP)
	}
	if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
}

func TestCSPIsStrict(t *testing.T) {
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP lacks %q: %s", want, CSP)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:", "data:"} {
		if strings.Contains(CSP, bad) {
			t.Errorf("CSP allows %q: %s", bad, CSP)
		}
	}
}

func TestIndex(t *testing.T) {
	for _, p := range []string{"/", "/index.html"} {
		w := do(t, http.MethodGet, p)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, w.Code)
		}
		wantSecurity(t, w)
		if got := w.Header().Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", p, got)
		}
		if got := w.Header().Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", p, got)
		}
		body := w.Body.String()
		for _, want := range []string{`<main id="view"`, `id="unreachable"`, `id="auth-form"`, `src="ui/app.js"`} {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: the page lacks %s", p, want)
			}
		}
	}
}

func TestHead(t *testing.T) {
	w := do(t, http.MethodHead, "/ui/app.js")
	if w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Fatalf("HEAD /ui/app.js: %d with %d bytes", w.Code, w.Body.Len())
	}
}

func TestETag(t *testing.T) {
	w := do(t, http.MethodGet, "/ui/style.css")
	etag := w.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if got := w.Header().Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache", got)
	}
	if w := do(t, http.MethodGet, "/ui/style.css", "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", w.Code)
	}
}

func TestNotFound(t *testing.T) {
	for _, p := range []string{
		"/ui/nope.js", "/ui/", "/ui", "/ui/index.html", "/ui/static/app.js", "/app.js", "/v1/pool",
		"/ui/../ui.go", "/ui/./app.js", "/ui//app.js", "/ui/app.js/",
	} {
		w := do(t, http.MethodGet, "http://node"+p)
		if w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
		wantSecurity(t, w)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		w := do(t, m, "/")
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d, Allow %q", m, w.Code, w.Header().Get("Allow"))
		}
	}
}

var wantType = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

var (
	htmlRef   = regexp.MustCompile(`(?:src|href)="([^"#][^"]*)"`)
	jsImport  = regexp.MustCompile(`(?m)(?:^import\s[^;]*?from\s*|\bimport\(\s*)['"]([^'"]+)['"]`)
	cssURL    = regexp.MustCompile(`url\(\s*['"]?([^'")]+)`)
	scriptTag = regexp.MustCompile(`(?s)<script\b([^>]*)>(.*?)</script>`)
)

// TestReferences follows every file the page loads, the modules' imports and
// the style sheet's URLs: each exists with its Content-Type, and every
// embedded file is used.
func TestReferences(t *testing.T) {
	seen := map[string]bool{}
	var follow func(ref, from string)
	follow = func(ref, from string) {
		u, err := url.Parse(ref)
		if err != nil || u.Scheme != "" || u.Host != "" {
			t.Errorf("%s: %q is not a path on the node", from, ref)
			return
		}
		base, _ := url.Parse("http://node" + from)
		p := base.ResolveReference(u).Path
		if seen[p] {
			return
		}
		seen[p] = true
		w := do(t, http.MethodGet, p)
		if w.Code != http.StatusOK {
			t.Errorf("%s refers to %s: %d", from, p, w.Code)
			return
		}
		wantSecurity(t, w)
		if want, got := wantType[path.Ext(p)], w.Header().Get("Content-Type"); want == "" || got != want {
			t.Errorf("%s: Content-Type %q, want %q", p, got, want)
		}
		body := w.Body.String()
		var refs [][]string
		switch path.Ext(p) {
		case ".js":
			refs = jsImport.FindAllStringSubmatch(body, -1)
		case ".css":
			refs = cssURL.FindAllStringSubmatch(body, -1)
		}
		for _, m := range refs {
			follow(m[1], p)
		}
	}
	page := do(t, http.MethodGet, "/").Body.String()
	for _, m := range htmlRef.FindAllStringSubmatch(page, -1) {
		follow(m[1], "/")
	}
	if len(seen) < 8 {
		t.Errorf("followed only %d files from the page: %v", len(seen), seen)
	}
	for name := range files {
		if name != "index.html" && !seen["/ui/"+name] {
			t.Errorf("%s is embedded but nothing refers to it", name)
		}
	}
}

// TestNoInline: the CSP forbids inline scripts, styles and handlers; the
// page must not need them.
func TestNoInline(t *testing.T) {
	page := string(files["index.html"].body)
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script: %s", m[0])
		}
	}
	if strings.Contains(page, "<style") {
		t.Error("inline <style> in the page")
	}
	handler := regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	for name, f := range files {
		ext := path.Ext(name)
		if ext != ".html" && ext != ".js" {
			continue
		}
		body := string(f.body)
		if strings.Contains(body, "style=") || strings.Contains(body, "'style'") || strings.Contains(body, "cssText") {
			t.Errorf("%s sets a style attribute, which the CSP blocks", name)
		}
		if ext == ".html" && handler.MatchString(body) {
			t.Errorf("%s has an inline event handler", name)
		}
		if strings.Contains(body, "eval(") || strings.Contains(body, "new Function") {
			t.Errorf("%s evaluates strings as code", name)
		}
	}
}

var (
	// A URL with a host: http://x.y, https://x.y, //x.y (protocol-relative).
	externalURL  = regexp.MustCompile(`(?i)(?:\b[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s'"<>)]*`)
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/|<!--.*?-->`)
	lineComment  = regexp.MustCompile(`(?m)^\s*//.*$|\s//\s.*$`)
)

// namespaces are URLs that name an XML vocabulary; nothing fetches them.
var namespaces = map[string]bool{
	"http://www.w3.org/2000/svg":   true,
	"http://www.w3.org/1999/xhtml": true,
	"http://www.w3.org/1999/xlink": true,
}

// TestNoExternalURL: the dashboard works offline and the CSP would block
// anything from elsewhere: no file names another host, comments aside.
func TestNoExternalURL(t *testing.T) {
	for name, f := range files {
		body := blockComment.ReplaceAllString(string(f.body), "")
		if ext := path.Ext(name); ext == ".js" || ext == ".css" {
			body = lineComment.ReplaceAllString(body, "")
		}
		for _, u := range externalURL.FindAllString(body, -1) {
			if !namespaces[u] {
				t.Errorf("%s refers to %s", name, u)
			}
		}
		for _, bad := range []string{"@import", "fonts.googleapis", "cdn."} {
			if strings.Contains(body, bad) {
				t.Errorf("%s has %q", name, bad)
			}
		}
	}
}

// TestSize keeps the dashboard small; it logs the total for reports.
func TestSize(t *testing.T) {
	const limit = 128 << 10
	total := 0
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += int(info.Size())
		t.Logf("%6d  %s", info.Size(), p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%6d  bytes in %d files", total, len(files))
	if total > limit {
		t.Errorf("the embedded files take %d bytes, over %d", total, limit)
	}
}
