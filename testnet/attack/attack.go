// Package attack runs attacks that cost an attacker little against a local
// testnet of real ephemera processes, and checks the bounds the network
// must hold while they run. An attacker's nodes run in this process, wired
// as any node is, so that an attack can drive their roles directly.
package attack

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/testnet"
)

// Attack is one attack and the bound it checks.
type Attack struct {
	Name    string
	Summary string
	// Quick attacks take under a minute each; the others need a record's
	// lifetime or many identities.
	Quick bool
	Spec  testnet.Spec
	// InProcess names the members that run in this process (the
	// attacker's own nodes); the others are real processes.
	InProcess []string
	// Backend, when set, gives an in-process node an inference engine of
	// the attacker's making.
	Backend func(name string) inference.Backend
	// Available is how many miners must be available before the attack
	// begins; 0 means every miner of Spec.
	Available int
	Run       func(ctx context.Context, e *Env) error
}

// Env is a running attack: its testnet and what it measured.
type Env struct {
	Net    *testnet.Testnet
	Result *Result
	Log    io.Writer
	// launcher starts members again after Stop, as Run first did.
	launcher testnet.Launcher
}

// Result is what one attack measured and whether its bounds held.
type Result struct {
	Attack  string
	Figures []Figure
	Checks  []Check
}

// Figure is one measurement.
type Figure struct {
	Name  string
	Value float64
	Unit  string
}

// Check is one bound and whether it held.
type Check struct {
	Bound  string
	OK     bool
	Detail string
}

// Figure records a measurement.
func (r *Result) Figure(name string, v float64, unit string) {
	r.Figures = append(r.Figures, Figure{name, v, unit})
}

// Check records whether bound held, with what was seen.
func (r *Result) Check(bound string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{bound, ok, fmt.Sprintf(format, args...)})
}

// Passed reports whether every bound held.
func (r *Result) Passed() bool {
	return !slices.ContainsFunc(r.Checks, func(c Check) bool { return !c.OK })
}

// Logf writes one line of progress.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(e.Log, "  "+format+"\n", args...)
}

// Run starts a's testnet in dir, with the real processes of binary and the
// attacker's nodes in this process, waits until every miner is available,
// runs the attack and stops the testnet.
func Run(ctx context.Context, a Attack, binary, dir string, log io.Writer) (res *Result, err error) {
	res = &Result{Attack: a.Name}
	launcher := mixed{in: a.InProcess, process: testnet.Subprocess{Binary: binary}, inProcess: testnet.InProcess{Backend: a.Backend}}
	tn, err := testnet.Start(ctx, dir, a.Spec, launcher)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := tn.Stop(sctx); serr != nil && err == nil {
			err = fmt.Errorf("stop the testnet: %w", serr)
		}
	}()
	if err != nil {
		return res, fmt.Errorf("start the testnet: %w", err)
	}
	if _, err := tn.WaitHealthy(ctx); err != nil {
		return res, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := waitAvailable(wctx, tn, cmp.Or(a.Available, a.Spec.Miners)); err != nil {
		return res, err
	}
	e := &Env{Net: tn, Result: res, Log: log, launcher: launcher}
	return res, a.Run(ctx, e)
}

// mixed launches the members named in in this process and the others as
// real processes.
type mixed struct {
	in        []string
	process   testnet.Subprocess
	inProcess testnet.InProcess
}

func (m mixed) Launch(ctx context.Context, name string, home node.Home) (testnet.Node, error) {
	if slices.Contains(m.in, name) {
		return m.inProcess.Launch(ctx, name, home)
	}
	return m.process.Launch(ctx, name, home)
}

// Member finds a running member by name.
func (e *Env) Member(name string) (testnet.Member, error) {
	for _, m := range e.Net.Members() {
		if m.Name == name {
			return m, nil
		}
	}
	return testnet.Member{}, fmt.Errorf("no member %q in the testnet", name)
}

// InProcess is the in-process node of the member named name.
func (e *Env) InProcess(name string) (*node.Node, error) {
	m, err := e.Member(name)
	if err != nil {
		return nil, err
	}
	in, ok := m.Node.(testnet.InProcessNode)
	if !ok {
		return nil, fmt.Errorf("%s does not run in this process", name)
	}
	return in.Node, nil
}

// All lists every attack, quick ones first.
func All() []Attack {
	all := []Attack{CrossSite(), SilentEvents(), Hoarding(), GarbageFrames(), FullBootstrap(), Stalling(12), Stalling(50), RecordSpam()}
	slices.SortStableFunc(all, func(a, b Attack) int {
		if a.Quick == b.Quick {
			return 0
		}
		if a.Quick {
			return -1
		}
		return 1
	})
	return all
}

// Select picks the attacks named in names (comma-separated; empty: all).
func Select(names string) ([]Attack, error) {
	all := All()
	if names == "" {
		return all, nil
	}
	var out []Attack
	for n := range strings.SplitSeq(names, ",") {
		i := slices.IndexFunc(all, func(a Attack) bool { return a.Name == strings.TrimSpace(n) })
		if i < 0 {
			known := make([]string, len(all))
			for j, a := range all {
				known[j] = a.Name
			}
			return nil, fmt.Errorf("no attack %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}
