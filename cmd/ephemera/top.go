package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"golang.org/x/term"
)

// `ephemera top`: the pool as one node sees it, in a terminal, refreshed in
// place. It reads GET /v1/overview, /v1/pool and /v1/transitions; from a node
// older than the first and the last it counts the pool itself and shows no
// transitions.

const (
	topMinInterval = 200 * time.Millisecond
	topDefaultRows = 20 // miner rows when neither --limit nor the terminal's height says
	topTransitions = 10 // recent transitions asked for and shown
	// topFewTransitions are the transitions a frame keeps when the
	// terminal is too short for all of them, before it lists fewer miners.
	topFewTransitions = 3
	topBarWidth       = 20 // characters of the bar of a state that holds every miner
	topFetchLimit     = 10 * time.Second
)

// Escape sequences of the live view: the alternate screen, the cursor, and a
// frame drawn over the last one from the top-left corner.
const (
	escEnter    = "\x1b[?1049h\x1b[?25l"
	escLeave    = "\x1b[?25h\x1b[?1049l"
	escHome     = "\x1b[H"
	escClearEOL = "\x1b[K"
	escClearEOS = "\x1b[J"
)

func top(fs *flag.FlagSet) apiBody {
	interval := fs.Duration("interval", 2*time.Second, "refresh every `duration` (at least 200ms)")
	once := fs.Bool("once", false, "print one frame, without escape codes, and exit (always so when stdout is not a terminal, and with --json)")
	state := fs.String("state", "", "list only miners in this `state` (joining, validating, available, reserved, cooling_off, stale); the counts stay whole")
	limit := fs.Int("limit", 0, "list at most `n` miners (default: as many as fit the terminal, else 20)")
	return func(c *client.Client, call apiCall) error { return runTop(c, call, *interval, *once, *state, *limit) }
}

func runTop(c *client.Client, call apiCall, interval time.Duration, once bool, state string, limit int) error {
	set, stdout := call.set, call.stdout
	if interval < topMinInterval {
		return usageError{fmt.Errorf("--interval %s is below the minimum of %s", interval, topMinInterval)}
	}
	if set["limit"] && limit < 1 {
		return usageError{fmt.Errorf("--limit %d: list at least 1 miner", limit)}
	}
	if err := checkPoolState(state); err != nil {
		return err
	}
	opts := topOptions{state: state, limit: topDefaultRows, loc: time.Local}
	if set["limit"] {
		opts.limit = limit
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if once || call.json || !isTerminal(stdout) {
		fctx, cancel := context.WithTimeout(ctx, topFetchLimit)
		defer cancel()
		d, err := gatherTop(fctx, c, opts.state)
		if err != nil {
			return err
		}
		if call.json {
			if set["limit"] && len(d.Miners) > opts.limit {
				d.Miners = d.Miners[:opts.limit]
			}
			return printJSON(stdout, d)
		}
		_, err = io.WriteString(stdout, renderTop(d, nil, opts, time.Now()))
		return err
	}
	opts.fitHeight = !set["limit"]
	return liveTop(ctx, stdout, c, opts, interval)
}

// liveTop redraws the view every interval on the alternate screen until ctx
// ends, and leaves the terminal as it found it. A node that does not answer
// is a line in the frame, not the end.
func liveTop(ctx context.Context, w io.Writer, c *client.Client, opts topOptions, interval time.Duration) (err error) {
	if _, err := io.WriteString(w, escEnter); err != nil {
		return err
	}
	defer func() {
		if _, rerr := io.WriteString(w, escLeave); err == nil {
			err = rerr
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last *topData
	for {
		fctx, cancel := context.WithTimeout(ctx, max(interval, topFetchLimit))
		d, ferr := gatherTop(fctx, c, opts.state)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if ferr == nil {
			last = d
		}
		// Measured every frame: the terminal may have been resized.
		if cw, ch := terminalSize(w); cw > 0 {
			opts.width = cw
			if opts.fitHeight {
				opts.height = ch
			}
		}
		frame := renderTop(last, ferr, opts, time.Now())
		// Each line clears what the last frame left to its right, and the
		// end of the frame clears the lines below: no flicker of a blank
		// screen between frames.
		frame = escHome + strings.ReplaceAll(frame, "\n", escClearEOL+"\n") + escClearEOS
		if _, err := io.WriteString(w, frame); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalSize is w's width and height, from the terminal itself, else from
// $COLUMNS and $LINES, else 0 for unknown.
func terminalSize(w io.Writer) (width, height int) {
	if f, ok := w.(*os.File); ok {
		if cw, ch, err := term.GetSize(int(f.Fd())); err == nil && cw > 0 && ch > 0 {
			return cw, ch
		}
	}
	return envInt("COLUMNS"), envInt("LINES")
}

// envInt is a positive integer from the environment, else 0.
func envInt(name string) int {
	n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name)))
	if err != nil || n < 1 {
		return 0
	}
	return n
}

// topOptions shape a frame.
type topOptions struct {
	state  string // list only miners in this state; "" for all
	limit  int    // miner rows at most
	events int    // transitions at most; 0 for topTransitions
	height int    // when > 0, fewer rows so that the frame fits this many lines
	// fitHeight: the live view fits the terminal's height (no --limit given).
	fitHeight bool
	width     int            // when > 0, lines are cut to this many columns
	loc       *time.Location // of the times shown
}

// topData is what one frame shows, and what --json prints.
type topData struct {
	Time   time.Time        `json:"time"` // the node's clock with /v1/overview, else this one's
	API    string           `json:"api"`
	Node   api.NodeInfo     `json:"node"`
	Pool   api.PoolSummary  `json:"pool"`
	Oracle *api.OracleStats `json:"oracle"` // nil unless the node is an oracle with /v1/overview
	Router *api.RouterStats `json:"router"` // nil unless the node is a router with /v1/overview
	// Miners are the pool's miners in --state if given, by state then
	// generation.
	Miners []api.PoolMiner `json:"miners"`
	// Transitions are the most recent events, newest first; nil when the
	// node has no /v1/transitions.
	Transitions []api.Event `json:"transitions"`
	// Missing names the endpoints the node does not serve (an older node).
	Missing []string `json:"missing,omitempty"`
}

// unreachableError is a request that got no answer at all.
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

// gatherTop asks the node for one frame's data. Without /v1/overview (an
// older node) the header comes from /v1/node and the counts from /v1/pool;
// without /v1/transitions there are none.
func gatherTop(ctx context.Context, c *client.Client, state string) (*topData, error) {
	d := &topData{API: c.Base()}
	ov, err := c.Overview(ctx)
	hasOverview, err := topAnswer(c, "/v1/overview", err, true)
	if err != nil {
		return nil, err
	}
	if hasOverview {
		d.Time, d.Node, d.Pool, d.Oracle, d.Router = ov.Time, ov.Node, ov.Pool, ov.Oracle, ov.Router
	} else {
		d.Missing = append(d.Missing, "/v1/overview")
		info, err := c.Node(ctx)
		if _, err := topAnswer(c, "/v1/node", err, false); err != nil {
			return nil, err
		}
		d.Node = info
	}
	miners, err := c.Pool(ctx)
	if _, err := topAnswer(c, "/v1/pool", err, false); err != nil {
		return nil, err
	}
	if !hasOverview || d.Pool.Counts == nil {
		d.Pool = api.PoolSummary{Total: len(miners), Counts: map[string]int{}}
		for _, s := range poolStates {
			d.Pool.Counts[s] = 0
		}
		for _, m := range miners {
			d.Pool.Counts[m.State]++
		}
	}
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	events, err := c.Transitions(ctx, topTransitions)
	hasTransitions, err := topAnswer(c, "/v1/transitions?limit="+strconv.Itoa(topTransitions), err, true)
	if err != nil {
		return nil, err
	}
	if hasTransitions {
		d.Transitions = append([]api.Event{}, events...)
	} else {
		d.Missing = append(d.Missing, "/v1/transitions")
	}
	d.Miners = []api.PoolMiner{}
	for _, m := range miners {
		if state == "" || m.State == state {
			d.Miners = append(d.Miners, m)
		}
	}
	sortMiners(d.Miners)
	return d, nil
}

// topAnswer says whether the request for path got its answer, from the
// request's error: an answer with an error status or one that cannot be read
// is that error; no answer at all is an unreachableError. With optional, a
// 404 is no error but false: the node is older than the endpoint.
func topAnswer(c *client.Client, path string, err error, optional bool) (bool, error) {
	var se *client.StatusError
	switch {
	case err == nil:
		return true, nil
	case optional && client.HasStatus(err, http.StatusNotFound):
		return false, nil
	case errors.As(err, &se), errors.Is(err, client.ErrNotAPI):
		return false, err
	case errors.Is(err, context.DeadlineExceeded):
		return false, unreachableError{fmt.Errorf("%s%s: no answer in time", c.Base(), path)}
	case errors.Is(err, context.Canceled):
		return false, errors.New("interrupted")
	}
	return false, unreachableError{err}
}

// sortMiners orders miners by state, in the order of the lifecycle, then by
// generation, then by peer ID.
func sortMiners(ms []api.PoolMiner) {
	rank := func(s string) int {
		if i := slices.Index(poolStates, s); i >= 0 {
			return i
		}
		return len(poolStates)
	}
	slices.SortStableFunc(ms, func(a, b api.PoolMiner) int {
		return cmp.Or(cmp.Compare(rank(a.State), rank(b.State)), cmp.Compare(a.State, b.State),
			cmp.Compare(a.Generation, b.Generation), cmp.Compare(a.PeerID, b.PeerID))
	})
}

// renderTop draws one frame of plain text: d, the last data gathered (nil if
// none yet), and fetchErr, why the latest attempt failed (nil if it did not).
func renderTop(d *topData, fetchErr error, opts topOptions, now time.Time) string {
	if opts.loc == nil {
		opts.loc = time.Local
	}
	frame := drawTop(d, fetchErr, opts, now)
	if opts.height > 0 && d != nil {
		// As many rows as the terminal has room for: fewer transitions
		// first, down to a few, then fewer miners, down to one.
		opts.limit = len(d.Miners)
		frame = drawTop(d, fetchErr, opts, now)
		// The last line ends in a newline too, which would scroll a full
		// screen: the frame keeps one line fewer than the terminal's.
		if over := strings.Count(frame, "\n") - (opts.height - 1); over > 0 {
			shown := min(len(d.Transitions), topTransitions)
			cut := min(over, max(0, shown-topFewTransitions))
			opts.events, over = shown-cut, over-cut
			if over > 0 {
				opts.limit = max(1, len(d.Miners)-over-1) // one line more says how many are left out
			}
			frame = drawTop(d, fetchErr, opts, now)
		}
	}
	// What the node sends is shown, never obeyed: no control character of
	// its text reaches the terminal.
	frame = strings.Map(func(r rune) rune {
		if r != '\n' && (unicode.IsControl(r) || r == utf8.RuneError) {
			return '?'
		}
		return r
	}, frame)
	if opts.width > 0 {
		lines := strings.SplitAfter(frame, "\n")
		for i, l := range lines {
			lines[i] = fitWidth(strings.TrimSuffix(l, "\n"), opts.width) + l[len(strings.TrimSuffix(l, "\n")):]
		}
		frame = strings.Join(lines, "")
	}
	return frame
}

// wrap breaks s at spaces into lines of at most width runes where it can;
// width 0 is no limit.
func wrap(s string, width int) []string {
	if width <= 0 {
		return []string{s}
	}
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		switch {
		case cur == "":
			cur = w
		case utf8.RuneCountInString(cur)+1+utf8.RuneCountInString(w) <= width:
			cur += " " + w
		default:
			lines = append(lines, cur)
			cur = w
		}
	}
	return append(lines, cur)
}

// fitWidth cuts s to at most width runes, for a column of the screen.
func fitWidth(s string, width int) string {
	n := 0
	for i := range s {
		if n == width {
			return s[:i]
		}
		n++
	}
	return s
}

func drawTop(d *topData, fetchErr error, opts topOptions, now time.Time) string {
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	clock := func(t time.Time) string { return t.In(opts.loc).Format("15:04:05") }

	if d == nil {
		line("ephemera top  %s  at %s", "(no data yet)", clock(now))
	} else {
		n := d.Node
		line("ephemera top  node %s  network %s  at %s", shortID(n.PeerID), orDash(n.Network), clock(d.Time))
		roles := strings.Join(n.Roles, ",")
		if roles == "" {
			roles = "none"
		}
		second := fmt.Sprintf("roles %s  up %s  peers %d", roles, uptime(n.UptimeSeconds), n.Peers)
		if n.State != "" && n.Generation != nil {
			second += fmt.Sprintf("  own state %s gen %d", n.State, *n.Generation)
		}
		line("%s", second)
	}
	if fetchErr != nil {
		what := "node error"
		var ue unreachableError
		if errors.As(fetchErr, &ue) {
			what = "node unreachable"
		}
		msg := fmt.Sprintf("%s: %s (retrying)", what, oneLine(fetchErr))
		if d != nil {
			msg += "; the data below is from " + clock(d.Time)
		}
		// The one line that matters most is wrapped, not cut.
		for _, l := range wrap(msg, opts.width) {
			line("%s", l)
		}
	}
	if d == nil {
		return b.String()
	}
	if len(d.Missing) > 0 {
		note := "older node without " + strings.Join(d.Missing, " and ") + ":"
		if slices.Contains(d.Missing, "/v1/overview") {
			note += " counts from /v1/pool;"
		}
		if slices.Contains(d.Missing, "/v1/transitions") {
			note += " no transitions;"
		}
		line("%s", strings.TrimSuffix(note, ";"))
	}

	line("")
	line("POOL  %d miners", d.Pool.Total)
	states := slices.Clone(poolStates)
	for s := range d.Pool.Counts {
		if !slices.Contains(states, s) {
			states = append(states, s)
		}
	}
	slices.Sort(states[len(poolStates):])
	for _, s := range states {
		n := d.Pool.Counts[s]
		line("%s", strings.TrimRight(fmt.Sprintf("  %-11s %4d  %s", s, n, bar(n, d.Pool.Total)), " "))
	}
	if o := d.Oracle; o != nil {
		rate := "-"
		if o.ValidationsPassed+o.ValidationsFailed > 0 {
			rate = fmt.Sprintf("%.1f%%", 100*o.PassRate)
		}
		line("oracle  validations %d passed, %d failed, pass rate %s", o.ValidationsPassed, o.ValidationsFailed, rate)
	}
	if r := d.Router; r != nil {
		agreement := "-"
		if r.TasksDone > 0 {
			agreement = fmt.Sprintf("%.3f", r.MeanAgreement)
		}
		line("router  sessions %d open  tasks %d queued, %d done, %d failed  agreement %s",
			r.SessionsOpen, r.QueuedTasks, r.TasksDone, r.TasksFailed, agreement)
	}

	line("")
	title := "MINERS"
	if opts.state != "" {
		title += "  in state " + opts.state
	}
	line("%s", title)
	if len(d.Miners) == 0 {
		line("  (none)")
	} else {
		line("  %-11s %5s %7s %10s  %-10s  %s", "STATE", "GEN", "ORACLES", "REPUTATION", "LAST SEEN", "PEER ID")
		shown := d.Miners[:min(len(d.Miners), max(opts.limit, 1))]
		for _, m := range shown {
			line("  %-11s %5d %7d %10.2f  %-10s  %s", m.State, m.Generation, len(m.Oracles), m.Reputation,
				ago(d.Time, m.LastSeen), shortID(m.PeerID))
		}
		if more := len(d.Miners) - len(shown); more > 0 {
			line("  ... %d more (--limit %d)", more, len(shown))
		}
	}

	if d.Transitions != nil {
		line("")
		line("RECENT TRANSITIONS")
		if len(d.Transitions) == 0 {
			line("  (none yet)")
		}
		events := topTransitions
		if opts.events > 0 {
			events = opts.events
		}
		for _, e := range d.Transitions[:min(len(d.Transitions), events)] {
			line("%s", strings.TrimRight(fmt.Sprintf("  %s  %-12s  %-11s  %s", clock(e.Time), shortID(e.Miner), e.Kind, describeEvent(e, clock)), " "))
		}
	}
	return b.String()
}

// describeEvent is the last column of a transition: what changed.
func describeEvent(e api.Event, clock func(time.Time) string) string {
	switch e.Kind {
	case "state":
		return fmt.Sprintf("%s -> %s  gen %d", cmp.Or(e.From, "(new)"), e.State, e.Generation)
	case "attestation":
		verdict := "fail"
		if e.Pass {
			verdict = "pass"
		}
		return fmt.Sprintf("oracle %s %s %.2f  gen %d", shortID(e.Oracle), verdict, e.Score, e.Generation)
	case "grant":
		s := fmt.Sprintf("router %s", shortID(e.Router))
		if e.Session != "" {
			s += " session " + shortSession(e.Session)
		}
		if !e.LeaseEnd.IsZero() {
			s += " until " + clock(e.LeaseEnd)
		}
		return s
	case "release":
		s := cmp.Or(e.Outcome, "released")
		if e.Router != "" {
			s = fmt.Sprintf("router %s %s", shortID(e.Router), s)
		}
		return s
	case "evidence":
		s := e.Detail
		if e.Oracle != "" {
			s = fmt.Sprintf("oracle %s: %s", shortID(e.Oracle), s)
		}
		return strings.ReplaceAll(s, "\n", " ")
	}
	return cmp.Or(e.State, e.Outcome, e.Detail)
}

// shortID is a peer ID cut to its start and its end, e.g. 12D3..x4kQv9.
func shortID(id string) string {
	if len(id) <= 12 {
		return orDash(id)
	}
	return id[:4] + ".." + id[len(id)-6:]
}

func shortSession(id string) string {
	if len(id) <= 8 {
		return id
	}
	return id[:8]
}

func orDash(s string) string { return cmp.Or(s, "-") }

// bar is n of total as at most topBarWidth characters, at least one when n > 0.
func bar(n, total int) string {
	if n <= 0 || total <= 0 {
		return ""
	}
	return strings.Repeat("#", max(1, min(topBarWidth, n*topBarWidth/total)))
}

// uptime is a whole number of seconds as 12d, 3d04h, 4h05m, 5m06s or 6s.
func uptime(seconds float64) string {
	return compactDuration(time.Duration(seconds) * time.Second)
}

// ago is how long before now t was, e.g. "5s ago"; "-" when t is unset.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "now"
	}
	return compactDuration(d) + " ago"
}

func compactDuration(d time.Duration) string {
	s := int64(max(d, 0) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	case s < 10*86400:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	default:
		return fmt.Sprintf("%dd", s/86400)
	}
}
