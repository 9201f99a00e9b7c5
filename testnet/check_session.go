package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
)

// checkPrompt has one right answer the built-in engine knows.
const checkPrompt, checkAnswer = "What is 17 + 25?", "42"

// CheckSession runs one session with redundancy 3 through the first router:
// three miners answer one prompt, their answers must agree and be right,
// and each miner must come back available only at its next generation.
func (t *Testnet) CheckSession(ctx context.Context, log io.Writer) error {
	const redundancy = 3
	if t.Spec.Miners < redundancy || t.RouterURL() == "" {
		fmt.Fprintf(log, "session check skipped: it needs %d miners and a router\n", redundancy)
		return nil
	}
	if _, err := t.WaitPool(ctx, fmt.Sprintf("%d available miners", redundancy), func(m []api.PoolMiner) bool {
		return CountState(m, "available") >= redundancy
	}); err != nil {
		return err
	}
	c := client.New(t.RouterURL())
	begin := time.Now()
	s, err := c.CreateSession(ctx, api.SessionRequest{Redundancy: redundancy, MaxTasks: 1})
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	task, err := c.SubmitTask(ctx, s.ID, api.TaskRequest{Prompt: checkPrompt})
	if err != nil {
		return fmt.Errorf("submit task: %w", err)
	}
	for !task.Settled() {
		if task, err = c.Task(ctx, s.ID, task.ID, 25*time.Second); err != nil {
			return fmt.Errorf("task: %w", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("task still %s: %w", task.State, ctx.Err())
		}
	}
	if task.State != api.TaskDone {
		return fmt.Errorf("task failed: %s", task.Error)
	}
	gens := map[string]uint64{}
	for _, a := range task.Answers {
		if a.Error == "" && a.Accepted {
			gens[a.Miner] = a.Generation
		}
	}
	switch {
	case len(gens) != redundancy:
		return fmt.Errorf("%d agreeing answers from distinct miners, want %d: %+v", len(gens), redundancy, task.Answers)
	case task.Agreement == nil || *task.Agreement < 0.8:
		return fmt.Errorf("agreement %v, want at least 0.8", task.Agreement)
	case !strings.Contains(task.Answer, checkAnswer):
		return fmt.Errorf("answer %q to %q lacks %s", task.Answer, checkPrompt, checkAnswer)
	}
	fmt.Fprintf(log, "session: %d miners answered %q with %q, agreement %.2f, in %.1fs\n",
		redundancy, checkPrompt, task.Answer, *task.Agreement, time.Since(begin).Seconds())
	ended := time.Now()
	if _, err := t.WaitPool(ctx, "the session's miners available again at their next generation", func(m []api.PoolMiner) bool {
		back := 0
		for _, x := range m {
			if g, ok := gens[x.PeerID]; ok && x.State == "available" && x.Generation == g+1 {
				back++
			}
		}
		return back == redundancy
	}); err != nil {
		return err
	}
	fmt.Fprintf(log, "session: its %d miners released, validated again and available at their next generation after %.1fs\n",
		redundancy, time.Since(ended).Seconds())
	return nil
}

// CheckChatStream sends one streaming chat completion to the first router
// with curl, as any OpenAI client would, and checks the server-sent events:
// chunks of the answer, then [DONE].
func (t *Testnet) CheckChatStream(ctx context.Context, log io.Writer) error {
	if t.Spec.Miners == 0 || t.RouterURL() == "" {
		fmt.Fprintln(log, "chat check skipped: it needs a miner and a router")
		return nil
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		return errors.New("chat check: curl is not installed")
	}
	body := `{"model":"","stream":true,"messages":[{"role":"user","content":"` + checkPrompt + `"}]}`
	cmd := exec.CommandContext(ctx, curl, "-sS", "-N", "--fail-with-body", "--max-time", "120",
		"-H", "Content-Type: application/json", "-d", body, t.RouterURL()+"/v1/chat/completions")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	begin := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("curl: %v: %s%s", err, bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(out))
	}
	text, chunks, err := readSSE(out)
	if err != nil {
		return err
	}
	if !strings.Contains(text, checkAnswer) {
		return fmt.Errorf("streamed answer %q to %q lacks %s", text, checkPrompt, checkAnswer)
	}
	fmt.Fprintf(log, "chat: curl streamed %q in %d chunks in %.1fs\n", text, chunks, time.Since(begin).Seconds())
	return nil
}

// readSSE reads OpenAI's chat completion chunks: the content deltas joined
// and how many chunks there were. The stream must end with [DONE].
func readSSE(raw []byte) (text string, chunks int, err error) {
	var b strings.Builder
	done := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if done {
			return "", 0, errors.New("events after [DONE]")
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			return "", 0, fmt.Errorf("chunk %q: %v", line, err)
		}
		if c.Error != nil {
			return "", 0, fmt.Errorf("stream error: %s", c.Error.Message)
		}
		if c.Object != "chat.completion.chunk" {
			return "", 0, fmt.Errorf("chunk of object %q", c.Object)
		}
		chunks++
		for _, ch := range c.Choices {
			b.WriteString(ch.Delta.Content)
		}
	}
	if !done {
		return "", 0, errors.New("the stream ended without [DONE]")
	}
	return b.String(), chunks, nil
}
