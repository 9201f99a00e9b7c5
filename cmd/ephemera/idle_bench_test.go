package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
)

// Idle-node figures: what one real `ephemera run` process costs while its
// network has nothing to do. The goals are under 60 MB resident and under
// 1% of a core.
const (
	idleSettle = 5 * time.Second  // after every miner is available, before measuring
	idleWindow = 15 * time.Second // the measuring window
	idleSample = 250 * time.Millisecond
)

// BenchmarkIdleNode starts the README's testnet (1 bootstrap, 3 oracles,
// 5 miners, 1 router) as real processes of the binary TestMain built, waits
// until every node is healthy and every miner available, lets it settle,
// then watches the first node of each role over a 15 s window through
// /proc: rss-MB is the largest VmRSS seen and cpu-%core the CPU time
// (user + system) over the wall time, in percent of one core. The unsuffixed
// figures are the miner's; bootstrap-, oracle- and router- ones are the
// other roles'. Each b.Loop iteration is one window, so the default
// -benchtime runs one.
func BenchmarkIdleNode(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc: Linux only")
	}
	spec := testnet.DefaultSpec()
	spec.Network = "bench-idle"
	tn, err := testnet.Start(context.Background(), b.TempDir(), spec, testnet.Subprocess{Binary: bin})
	if tn != nil {
		b.Cleanup(func() {
			// SIGTERM to every node, SIGKILL to any still running after 10 s.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tn.Stop(ctx); err != nil {
				b.Logf("stop testnet: %v", err)
			}
		})
	}
	if err != nil {
		b.Fatalf("start testnet: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	statuses, err := tn.WaitHealthy(ctx)
	if err != nil {
		b.Fatalf("testnet not healthy: %v", err)
	}
	if _, err := tn.WaitPool(ctx, "every miner available", func(m []api.PoolMiner) bool {
		return testnet.CountState(m, "available") == spec.Miners
	}); err != nil {
		b.Fatal(err)
	}

	// The first node of each role.
	var watched []idleProc
	for _, role := range []string{"miner", "bootstrap", "oracle", "router"} {
		for _, s := range statuses {
			if len(s.Roles) == 1 && s.Roles[0] == role {
				watched = append(watched, idleProc{role: role, name: s.Name, pid: s.PID})
				break
			}
		}
	}
	if len(watched) == 0 || watched[0].role != "miner" {
		b.Fatalf("no miner among %d nodes", len(statuses))
	}
	tick := clockTicks()
	time.Sleep(idleSettle)

	for b.Loop() {
		start := make([]float64, len(watched))
		for i := range watched {
			start[i] = watched[i].cpuSeconds(b, tick)
		}
		begin := time.Now()
		for time.Since(begin) < idleWindow {
			for i := range watched {
				watched[i].maxRSS = max(watched[i].maxRSS, watched[i].rssMB(b))
			}
			time.Sleep(idleSample)
		}
		wall := time.Since(begin).Seconds()
		for i := range watched {
			watched[i].cpu += watched[i].cpuSeconds(b, tick) - start[i]
		}
		for i := range watched {
			watched[i].wall += wall
		}
	}

	b.ReportMetric(0, "ns/op") // ns/op would only be the window's length
	for _, w := range watched {
		prefix := w.role + "-"
		if w.role == "miner" {
			prefix = ""
		}
		cpu := w.cpu / w.wall * 100
		b.ReportMetric(w.maxRSS, prefix+"rss-MB")
		b.ReportMetric(cpu, prefix+"cpu-%core")
		b.Logf("%s (pid %d): max RSS %.1f MB, CPU %.2f%% of a core over %.0fs", w.name, w.pid, w.maxRSS, cpu, w.wall)
	}
}

// idleProc is one watched node process and what was measured of it.
type idleProc struct {
	role, name string
	pid        int
	maxRSS     float64 // MB (2^20 bytes)
	cpu, wall  float64 // seconds
}

// rssMB is the process's VmRSS from /proc/PID/status, in MB.
func (p *idleProc) rssMB(b *testing.B) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					return kb / 1024
				}
			}
			break
		}
	}
	b.Fatalf("%s: no VmRSS in /proc/%d/status", p.name, p.pid)
	return 0
}

// cpuSeconds is the process's utime + stime from /proc/PID/stat.
func (p *idleProc) cpuSeconds(b *testing.B, tick float64) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces: the
	// fields after its closing one start at field 3 (state), so utime
	// (field 14) and stime (field 15) are the 12th and 13th.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("%s: short /proc/%d/stat: %q", p.name, p.pid, s)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("%s: bad /proc/%d/stat: %q", p.name, p.pid, s)
	}
	return (utime + stime) / tick
}

// clockTicks is the kernel's clock ticks per second (USER_HZ), the unit of
// /proc/PID/stat times: `getconf CLK_TCK`, or 100, its value on every
// architecture Go supports.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}
