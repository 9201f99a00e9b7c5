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
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/internal/openaiwire"
)

// maxTaskPoll bounds one GET …/tasks/{task}?wait=: the loop asks again
// until the task finishes or --timeout passes.
const maxTaskPoll = 30 * time.Second

// sessionGrace is how long a submitted session outlives --timeout before
// its reservation period ends it, should this process die without ending it.
const sessionGrace = 30 * time.Second

func submit(fs *flag.FlagSet) apiBody {
	model := fs.String("model", "", "`model` to ask (default: any model the pool serves)")
	redundancy := fs.Int("redundancy", 1, fmt.Sprintf("how many `miners` answer, from 1 to %d; their answers are compared", api.MaxRedundancy))
	stream := fs.Bool("stream", false, "print the answer as it is produced, through the OpenAI-compatible endpoint (--json: each chunk)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the answer")
	return func(c *client.Client, call apiCall) error {
		return runSubmit(c, call, submitOptions{
			model: *model, prompt: call.arg, redundancy: *redundancy, timeout: *timeout, json: call.json,
		}, *stream)
	}
}

func runSubmit(c *client.Client, call apiCall, o submitOptions, stream bool) error {
	switch {
	case strings.TrimSpace(o.prompt) == "":
		return usageError{errors.New(`what should the miners answer? usage: ephemera submit "PROMPT" [flags]`)}
	case o.redundancy < 1 || o.redundancy > api.MaxRedundancy:
		return usageError{fmt.Errorf("--redundancy %d is out of range; want 1 to %d", o.redundancy, api.MaxRedundancy)}
	case o.timeout <= 0:
		return usageError{fmt.Errorf("--timeout %s is not a positive duration such as 2m", o.timeout)}
	}
	// Every request is bounded by the context: --timeout and Ctrl-C.
	c = c.WithTimeout(0)
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first Ctrl-C, which ends the session, a second one kills.
	context.AfterFunc(sigCtx, stop)
	ctx, cancel := context.WithTimeout(sigCtx, o.timeout)
	defer cancel()
	// why says what ended ctx, if anything did.
	why := func() string {
		if sigCtx.Err() != nil {
			return "interrupted"
		}
		return fmt.Sprintf("no answer within --timeout %s", o.timeout)
	}
	if stream {
		red := 0
		if call.set["redundancy"] {
			red = o.redundancy
		}
		return streamCompletion(ctx, c, call.stdout, o.model, o.prompt, red, o.json, why)
	}
	return submitTask(ctx, c, call.stdout, o, why)
}

type submitOptions struct {
	model, prompt string
	redundancy    int
	timeout       time.Duration
	json          bool
}

// submitTask runs the prompt as a one-task session and prints its outcome.
func submitTask(ctx context.Context, c *client.Client, stdout io.Writer, o submitOptions, why func() string) error {
	begin := time.Now()
	req := api.SessionRequest{
		Model: o.model, Redundancy: o.redundancy, MinNodes: o.redundancy, MaxNodes: o.redundancy, MaxTasks: 1,
		ReservePeriod: min(o.timeout+sessionGrace, api.MaxReservePeriod).String(),
	}
	s, err := c.CreateSession(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New(why())
		}
		return err
	}
	if s.ID == "" {
		return fmt.Errorf("%s: the node answered POST /v1/sessions without a session id", c.Base())
	}
	// A session whose task did not finish is ended here; one whose task
	// finished ends by itself, having run its max_tasks of 1.
	fail := func(err error) error {
		if eerr := endSession(c, s.ID); eerr != nil {
			return fmt.Errorf("%w; ending session %s failed too: %v", err, s.ID, eerr)
		}
		return fmt.Errorf("%w; session %s ended", err, s.ID)
	}
	t, err := c.SubmitTask(ctx, s.ID, api.TaskRequest{Prompt: o.prompt})
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New(why())
		}
		return fail(err)
	}
	if t.ID == "" {
		return fail(fmt.Errorf("%s/v1/sessions/%s/tasks: not a task: it has no id", c.Base(), url.PathEscape(s.ID)))
	}
	for !t.Settled() {
		deadline, _ := ctx.Deadline()
		wait := min(time.Until(deadline), maxTaskPoll).Truncate(time.Millisecond)
		if wait <= 0 || ctx.Err() != nil {
			return fail(errors.New(why()))
		}
		if t, err = c.Task(ctx, s.ID, t.ID, wait); err != nil {
			if ctx.Err() != nil {
				err = errors.New(why())
			}
			return fail(err)
		}
	}
	if o.json {
		if err := printJSON(stdout, t); err != nil {
			return err
		}
	}
	if t.State == api.TaskFailed {
		msg := t.Error
		if msg == "" {
			msg = "no reason given"
		}
		return fmt.Errorf("task failed: %s", msg)
	}
	if o.json {
		return nil
	}
	return printTaskOutcome(stdout, s.ID, t, time.Since(begin))
}

// endSession ends a session on the user's behalf; one that has already
// ended is fine.
func endSession(c *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.EndSession(ctx, id); err != nil && !client.HasStatus(err, http.StatusConflict) {
		return err
	}
	return nil
}

// printTaskOutcome prints the chosen answer, then each miner's answer, the
// agreement and the timings.
func printTaskOutcome(w io.Writer, sessionID string, t api.Task, elapsed time.Duration) error {
	answer := strings.TrimRight(t.Answer, "\r\n")
	if strings.TrimSpace(answer) == "" {
		answer = "(empty answer)"
	}
	fmt.Fprintln(w, answer)
	fmt.Fprintln(w)
	// The ANSWER column shows the answers that differ from the chosen one
	// and the miners' errors; it is left out when there are none.
	texts := make([]string, len(t.Answers))
	differ := false
	for i, a := range t.Answers {
		switch {
		case a.Error != "":
			texts[i] = openaiwire.Clip("error: "+a.Error, 120)
		case a.Output != t.Answer:
			texts[i] = strconv.Quote(openaiwire.Clip(a.Output, 120))
		default:
			texts[i] = "(the answer above)"
			continue
		}
		differ = true
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "MINER\tSIMILARITY\tVERDICT\tENGINE\tROUND TRIP"
	if differ {
		header += "\tANSWER"
	}
	fmt.Fprintln(tw, header)
	answered := 0
	for i, a := range t.Answers {
		sim, verdict, engine := "-", "failed", "-"
		if a.Error == "" {
			answered++
			verdict = "accepted"
			if !a.Accepted {
				verdict = "rejected"
			}
			engine = fmt.Sprintf("%dms", a.EngineMs)
		}
		if a.Similarity != nil {
			sim = fmt.Sprintf("%.3f", *a.Similarity)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%dms", a.Miner, sim, verdict, engine, a.RoundTripMs)
		if differ {
			fmt.Fprintf(tw, "\t%s", texts[i])
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if t.Agreement != nil && answered >= 2 {
		fmt.Fprintf(w, "agreement: %.3f across %d answers\n", *t.Agreement, answered)
	}
	attempts := plural(t.Attempts, "attempt")
	fmt.Fprintf(w, "timing:    queued %s, ran %s (%s); %s in all\n",
		time.Duration(t.QueueMs)*time.Millisecond, time.Duration(t.RunMs)*time.Millisecond, attempts,
		elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "session:   %s, task %s\n", sessionID, t.ID)
	return nil
}

// streamCompletion asks the OpenAI-compatible endpoint with "stream": true
// and prints the answer as its chunks arrive, or with asJSON each chunk.
func streamCompletion(ctx context.Context, c *client.Client, stdout io.Writer, model, prompt string, redundancy int, asJSON bool, why func() string) error {
	body := map[string]any{
		"messages": []api.Message{{Role: "user", Content: prompt}},
		"stream":   true,
	}
	if model != "" {
		body["model"] = model
	}
	if redundancy > 0 {
		body["redundancy"] = redundancy
	}
	const path = "/v1/chat/completions"
	resp, err := c.Send(ctx, http.MethodPost, path, body)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New(why())
		}
		return err
	}
	defer resp.Body.Close()
	if err := c.CheckResponse(resp); err != nil {
		return err
	}
	p := &chunkPrinter{w: stdout, json: asJSON}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		// A server that does not stream answers with the whole completion.
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err == nil {
			err = p.completion(raw)
		}
		if err != nil && ctx.Err() != nil {
			err = errors.New(why())
		}
		return errors.Join(err, p.end(err == nil))
	}
	done, err := openaiwire.ReadEvents(resp.Body, maxEventData, func(ev openaiwire.Event) (bool, error) {
		if ev.Cut || ev.ErrorLine {
			return false, nil // an event cut off by the end of the stream is dropped, as the specification says
		}
		return p.event(ev.Data)
	})
	if errors.Is(err, openaiwire.ErrTooLarge) {
		err = fmt.Errorf("an event of the answer stream is larger than %d bytes", maxEventData)
	}
	switch {
	case err == nil && !done:
		err = errors.New("the answer stream ended before its [DONE] event")
	case err != nil && ctx.Err() != nil:
		err = errors.New(why())
	}
	return errors.Join(err, p.end(err == nil))
}

// chunkPrinter prints a chat completion stream's chunks.
type chunkPrinter struct {
	w       io.Writer
	json    bool
	printed bool // some content was printed
	nl      bool // and it ended with a newline
}

// chatChunk is the part of an OpenAI chunk, or of an error event, read here.
type chatChunk struct {
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		Message *struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Error *struct {
		Message string `json:"message"`
		Code    any    `json:"code"`
	} `json:"error"`
}

func (e chatChunk) err() error {
	if e.Error == nil {
		return nil
	}
	msg := e.Error.Message
	if msg == "" {
		msg = "the node reported an error without a message"
	}
	if code, ok := e.Error.Code.(float64); ok {
		return fmt.Errorf("%s (HTTP %d)", msg, int(code))
	}
	return errors.New(msg)
}

// event handles one server-sent event's data.
func (p *chunkPrinter) event(data string) (done bool, err error) {
	if strings.TrimSpace(data) == "[DONE]" {
		return true, nil
	}
	var ch chatChunk
	if err := json.Unmarshal([]byte(data), &ch); err != nil {
		return false, fmt.Errorf("not a chat completion chunk: %s", openaiwire.Clip(data, 60))
	}
	if err := ch.err(); err != nil {
		return false, err
	}
	if p.json {
		var b bytes.Buffer
		if err := json.Compact(&b, []byte(data)); err != nil {
			return false, err
		}
		b.WriteByte('\n')
		_, err := p.w.Write(b.Bytes())
		return false, err
	}
	for _, c := range ch.Choices {
		if c.Delta.Content != nil {
			if err := p.print(*c.Delta.Content); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

// completion handles a whole (not streamed) chat completion.
func (p *chunkPrinter) completion(raw []byte) error {
	var ch chatChunk
	if err := json.Unmarshal(raw, &ch); err != nil {
		return fmt.Errorf("not a chat completion: %s", openaiwire.Clip(string(raw), 60))
	}
	if err := ch.err(); err != nil {
		return err
	}
	if p.json {
		return printJSON(p.w, json.RawMessage(raw))
	}
	for _, c := range ch.Choices {
		if c.Message != nil {
			if err := p.print(c.Message.Content); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *chunkPrinter) print(s string) error {
	if s == "" {
		return nil
	}
	if _, err := io.WriteString(p.w, s); err != nil {
		return err
	}
	p.printed, p.nl = true, strings.HasSuffix(s, "\n")
	if f, ok := p.w.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// end ends the printed answer with a newline: a whole answer always, one
// cut short by an error only if some of it was printed.
func (p *chunkPrinter) end(whole bool) error {
	if p.json || p.nl || (!whole && !p.printed) {
		return nil
	}
	_, err := io.WriteString(p.w, "\n")
	return err
}

// maxEventData bounds one server-sent event.
const maxEventData = 16 << 20

// parseFlagsArg is parseFlagsArgs for a command that takes at most one
// argument, which may come before, between or after its flags; "--" ends the
// flags, for an argument that begins with a dash. It returns the argument,
// "" if none was given. extra says what to do about a second argument.
func parseFlagsArg(fs *flag.FlagSet, args []string, extra string) (string, map[string]bool, error) {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // the parser reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	set, err := parseFlagsArgs(fs, append(append(flags, "--"), rest...), len(rest))
	if err != nil {
		return "", nil, err
	}
	if fs.NArg() > 1 {
		return "", nil, usageError{fmt.Errorf("unexpected argument %q: %s (see --help)", fs.Arg(1), extra)}
	}
	return fs.Arg(0), set, nil
}
