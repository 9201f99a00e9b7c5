package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

// The dashboard in a real browser: headless Chromium opens the bootstrap
// node's dashboard on a running testnet and sees the three miners available;
// a miner reserved through the router turns "reserved" on the open page with
// no reload, and "available" at the next generation once released; and once
// the node stops answering, the page says so. The page must not throw or log
// a console error on the way. Screenshots go to $EPHEMERA_ARTIFACTS
// (dashboard.png with the miner reserved, dashboard-unreachable.png), or to a
// temporary directory when it is not set.
//
// It needs Chromium (see findChromium): without one it skips, except under
// CI, where a missing browser is a failure.
func TestDashboardBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet and a browser")
	}
	chromium := findChromium(t)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn := localnet.Start(t, testnet.Spec{Network: "dash", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1}, nil)
	localnet.WaitAvailable(t, tn, 3, time.Minute)

	b := startBrowser(t, chromium)
	dash := tn.Nodes()[0].Runtime().APIURL + "/"
	if err := b.do(10*time.Second, chromedp.Navigate(dash)); err != nil {
		t.Fatalf("open %s: %v", dash, err)
	}
	b.wait("the pool page with 3 available miners over the live stream", 20*time.Second, `
		document.body.dataset.conn === 'live' &&
		document.querySelector('#view')?.dataset.page === 'pool' &&
		document.querySelector('#pool-total')?.dataset.count === '3' &&
		document.querySelectorAll('#pool-table tbody tr[data-peer][data-state="available"]').length === 3`)
	// A mark on the page: it is gone if anything reloads it.
	if err := b.do(5*time.Second, chromedp.Evaluate[chromedp.Void](`window.__marker = 1`)); err != nil {
		t.Fatal(err)
	}

	res, err := tn.Reserve(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			rctx, done := context.WithTimeout(context.Background(), 10*time.Second)
			defer done()
			tn.Release(rctx, res.ID)
		}
	}()
	row := `document.querySelector('#pool-table tbody tr[data-peer=` + jsString(res.Miner) + `]')`
	b.wait("the reserved miner's row to say reserved", 15*time.Second, fmt.Sprintf(`
		%s?.dataset.state === 'reserved' &&
		%[1]s?.dataset.generation === %s &&
		document.querySelector('#state-filter button[data-filter-state="reserved"]')?.dataset.count === '1' &&
		document.querySelectorAll('#pool-table tbody tr[data-peer][data-state="available"]').length === 2`,
		row, jsString(fmt.Sprint(res.Generation))))
	if marker, err := b.run(5*time.Second, chromedp.Evaluate[bool](`window.__marker === 1`)); err != nil || !marker {
		t.Fatalf("the page was reloaded (marker %v, %v): the update must come live", marker, err)
	}
	b.screenshot("dashboard.png")

	if _, err := tn.Release(ctx, res.ID); err != nil {
		t.Fatalf("release: %v", err)
	}
	released = true
	b.wait("the released miner back to available at the next generation", 20*time.Second, fmt.Sprintf(`
		%s?.dataset.state === 'available' && %[1]s?.dataset.generation === %s`,
		row, jsString(fmt.Sprint(res.Generation+1))))

	// The node behind the page stops: the banner must say so.
	sctx, done := context.WithTimeout(ctx, 15*time.Second)
	err = tn.Nodes()[0].Stop(sctx)
	done()
	if err != nil {
		t.Logf("stopping the bootstrap node: %v", err)
	}
	b.wait("the node unreachable banner", 20*time.Second, `
		document.body.dataset.conn === 'down' &&
		(el => !el.hidden && el.getClientRects().length > 0)(document.getElementById('unreachable'))`)
	if marker, err := b.run(5*time.Second, chromedp.Evaluate[bool](`window.__marker === 1`)); err != nil || !marker {
		t.Fatalf("the page was reloaded (marker %v, %v)", marker, err)
	}
	b.screenshot("dashboard-unreachable.png")

	if errs := b.pageErrors(); len(errs) > 0 {
		t.Errorf("the dashboard threw or logged %d error(s):\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

// findChromium finds a Chromium or Chrome to run: $EPHEMERA_CHROMIUM, else
// /usr/bin/chromium, chromium, chromium-browser or google-chrome in PATH. It
// skips the test when there is none, or fails it when CI is set.
//
// Debian's /usr/bin/chromium is a shell script that adds flags of its own
// (from /etc/chromium.d) before it runs /usr/lib/chromium/chromium: that
// binary is run directly, so the browser gets exactly the flags of
// startBrowser.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EPHEMERA_CHROMIUM"); p != "" {
		return p
	}
	var found string
	if st, err := os.Stat("/usr/bin/chromium"); err == nil && !st.IsDir() {
		found = "/usr/bin/chromium"
	} else {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				found = p
				break
			}
		}
	}
	if found == "" {
		msg := "no Chromium: install Debian's chromium package or set EPHEMERA_CHROMIUM"
		if os.Getenv("CI") != "" {
			t.Fatal("CI: " + msg)
		}
		t.Skip(msg)
	}
	const debianBinary = "/usr/lib/chromium/chromium"
	if isScript(found) {
		if st, err := os.Stat(debianBinary); err == nil && st.Mode()&0o111 != 0 {
			return debianBinary
		}
	}
	return found
}

// isScript tells a launcher script ("#!") from the browser binary.
func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 2)
	n, _ := f.Read(head)
	return n == 2 && string(head) == "#!"
}

// chromiumFlags are every flag the browser gets, besides the two chromedp
// adds itself (--remote-debugging-pipe, and about:blank as the first page).
// The first five are the issue's; the rest keep every request on loopback:
// no name resolves except 127.0.0.1, and no component, sync, translation or
// other background service reaches out.
func chromiumFlags(userDataDir string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("user-data-dir", userDataDir),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		// Shared memory in the temporary directory: /dev/shm is 64 MB in a
		// default container, and Chromium crashes when it fills.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("window-size", "1280,900"),
	}
}

// browser is one headless Chromium with one tab, and the errors its page
// threw or logged.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab's chromedp context

	mu   sync.Mutex
	errs []string
}

// startBrowser starts Chromium with chromiumFlags and an empty profile, and
// kills it when the test ends. Its contexts do not derive from the test's, so
// that it is closed in order after a timeout too.
func startBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(path)}, chromiumFlags(t.TempDir())...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		cctx, done := context.WithTimeout(ctx, 10*time.Second)
		defer done()
		if err := chromedp.Cancel(cctx); err != nil {
			t.Logf("closing the browser: %v", err)
		}
		cancelTab()
		cancelAlloc() // kills the process if it is still there, and waits for it
	})
	// Listen starts the browser and opens the tab, on the tab's own context.
	start := time.Now()
	if err := chromedp.Listen(ctx, b.event); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	version, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.userAgent`))
	if err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Logf("browser %s up in %v: %s", path, time.Since(start).Round(time.Millisecond), version)
	return b
}

// event keeps the page's uncaught exceptions and console.error calls. It runs
// on chromedp's reading goroutine: it must not block.
func (b *browser) event(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = "exception: " + d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		msg += fmt.Sprintf(" (%s:%d:%d)", d.URL, d.LineNumber+1, d.ColumnNumber+1)
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		parts := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			switch {
			case a.Description != "":
				parts = append(parts, a.Description)
			case len(a.Value) > 0:
				parts = append(parts, string(a.Value))
			default:
				parts = append(parts, string(a.Type))
			}
		}
		msg = "console.error: " + strings.Join(parts, " ")
	default:
		return
	}
	b.mu.Lock()
	b.errs = append(b.errs, msg)
	b.mu.Unlock()
}

func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// do runs actions on the tab within d.
func (b *browser) do(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// run runs one action on the tab within d and returns its value.
func (b *browser) run(d time.Duration, a chromedp.Action[bool]) (bool, error) {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// wait polls the page until the JavaScript expression cond is true, or fails
// the test after d with what the page showed.
func (b *browser) wait(what string, d time.Duration, cond string) {
	b.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	var err error
	for {
		var ok bool
		ok, err = b.run(2*time.Second, chromedp.Evaluate[bool](cond))
		if err == nil && ok {
			b.t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.screenshot("dashboard-failed.png")
	b.t.Fatalf("waiting %v for %s (last error: %v); the page shows %s; page errors: %q",
		d, what, err, b.describe(), b.pageErrors())
}

// describe is what the page shows, for a failure's message.
func (b *browser) describe() string {
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		conn: document.body.dataset.conn,
		page: document.querySelector('#view')?.dataset.page,
		total: document.querySelector('#pool-total')?.dataset.count,
		unreachable: !document.getElementById('unreachable')?.hidden,
		rows: [...document.querySelectorAll('#pool-table tbody tr[data-peer]')]
			.map(r => r.dataset.peer.slice(-6) + ':' + r.dataset.state + '@' + r.dataset.generation),
	})`))
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return s
}

// screenshot saves a full-page PNG of the tab as name in $EPHEMERA_ARTIFACTS,
// or in a temporary directory when it is not set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("EPHEMERA_ARTIFACTS")
	if dir == "" {
		dir = b.t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		b.t.Errorf("screenshot %s: not a PNG", name)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}
