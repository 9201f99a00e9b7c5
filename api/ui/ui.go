// Package ui serves the node's live web dashboard: a few static files
// embedded in the binary (HTML, CSS and vanilla JavaScript modules, no build
// step) that read the node's data API from the same origin.
//
// Handler answers the paths a browser asks for: "/" (and "/index.html") is
// the page, "/ui/<file>" its assets. Nothing is fetched from elsewhere, so the
// dashboard works offline, and a strict Content-Security-Policy says so.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every answer: scripts, styles and
// connections (fetch, EventSource) from the same origin only, no inline
// script or style, no frames, no plugins.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// contentTypes are the types of the files the dashboard is made of, set here
// rather than read from the system's MIME tables so they never vary.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// file is one embedded file, ready to serve.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// files are the embedded files by their path under static/.
var files = load()

func load() map[string]file {
	out := map[string]file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		out[name] = file{name: name, body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: reading the embedded files: " + err.Error())
	}
	if _, ok := out["index.html"]; !ok {
		panic("ui: no index.html embedded")
	}
	return out
}

// Handler serves the dashboard: "/" and "/index.html" the page, "/ui/<file>"
// an asset, anything else a 404. It takes the request's path as the browser
// sent it (mount it on "/" and "/ui/", without http.StripPrefix). Only GET
// and HEAD are served. Every answer is revalidated by its ETag (Cache-Control:
// no-cache), so a new binary's files are picked up at once.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, ok := lookup(r.URL.Path)
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

// lookup maps a request path to the file it names: the page at "/" or
// "/index.html", an asset under "/ui/". The page is not served under "/ui/",
// where its relative links would not resolve.
func lookup(p string) (file, bool) {
	if p == "/" || p == "/index.html" {
		return files["index.html"], true
	}
	name, ok := strings.CutPrefix(p, "/ui/")
	if !ok || name == "index.html" || !fs.ValidPath(name) {
		return file{}, false
	}
	f, ok := files[name]
	return f, ok
}
