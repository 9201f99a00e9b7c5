package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/internal/openaiwire"
)

// printSessions lists the router's sessions, or shows the one named.
func printSessions(c *client.Client, call apiCall) error {
	ctx, id, stdout := context.Background(), call.arg, call.stdout
	if id != "" {
		v, err := c.Session(ctx, id)
		if err != nil {
			return err
		}
		if call.json {
			return printJSON(stdout, v)
		}
		return printSession(stdout, v)
	}
	list, err := c.Sessions(ctx)
	if err != nil {
		return err
	}
	if call.json {
		return printJSON(stdout, list)
	}
	counts := map[string]int{}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tMODEL\tREDUNDANCY\tTASKS\tMINERS\tMEAN AGREEMENT\tCREATED")
	for _, s := range list {
		counts[s.State]++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d\t%d\t%s\t%s\n", s.ID, sessionState(s), modelName(s.Params.Model),
			s.Params.Redundancy, s.Completed, s.Submitted, len(s.Miners), agreementText(s.MeanAgreement), localTime(s.Created))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	for _, st := range []string{api.SessionOpen, api.SessionEnded} {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	if len(parts) == 0 {
		fmt.Fprintln(stdout, plural(len(list), "session"))
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s\n", plural(len(list), "session"), strings.Join(parts, ", "))
	return nil
}

// printSession shows one session, its miners and its tasks.
func printSession(w io.Writer, v api.SessionDetail) error {
	s, p := v.Session, v.Session.Params
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "session\t%s\n", s.ID)
	fmt.Fprintf(tw, "state\t%s\n", sessionState(s))
	fmt.Fprintf(tw, "model\t%s\n", modelName(p.Model))
	fmt.Fprintf(tw, "redundancy\t%d (min_nodes %d, max_nodes %d)\n", p.Redundancy, p.MinNodes, p.MaxNodes)
	fmt.Fprintf(tw, "tasks\t%d submitted of at most %d: %d completed, %d failed, %d queued\n",
		s.Submitted, p.MaxTasks, s.Completed, s.Failed, s.Queued)
	agreement := agreementText(s.MeanAgreement)
	if s.MeanAgreement != nil {
		agreement += fmt.Sprintf(" (mean over %s)", plural(s.AgreementN, "task"))
	}
	fmt.Fprintf(tw, "agreement\t%s\n", agreement)
	fmt.Fprintf(tw, "task timeout\t%s\n", p.TaskTimeout)
	fmt.Fprintf(tw, "created\t%s\n", localTime(s.Created))
	if s.Ended.IsZero() {
		fmt.Fprintf(tw, "ends\t%s (reserve period %s)\n", localTime(s.Ends), p.ReservePeriod)
	} else {
		fmt.Fprintf(tw, "ended\t%s\n", localTime(s.Ended))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(s.Miners) == 0 {
		fmt.Fprintln(w, "no miners held")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MINER\tGEN\tSTATE\tTASKS\tSINCE\tUNTIL\tDETAIL")
		for _, h := range s.Miners {
			detail := "-"
			if h.Detail != "" {
				detail = openaiwire.Clip(h.Detail, 80)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", h.Miner, h.Generation, h.State, h.Tasks,
				localTime(h.Since), localTime(h.Until), detail)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	if len(v.Tasks) == 0 {
		fmt.Fprintln(w, "no tasks")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tSTATE")
	for _, t := range v.Tasks {
		fmt.Fprintf(tw, "%s\t%s\n", t.ID, t.State)
	}
	return tw.Flush()
}

func sessionState(s api.Session) string {
	switch {
	case s.EndReason != "":
		return s.State + " (" + s.EndReason + ")"
	case s.Warm:
		return s.State + " (warm: chat completions)"
	}
	return s.State
}

func modelName(m string) string {
	if m == "" {
		return "any"
	}
	return m
}

func agreementText(a *float64) string {
	if a == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *a)
}

func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// plural is "1 task", "2 tasks".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
