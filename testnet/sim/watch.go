package sim

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// watcher records what the simulation measures, from every node's pool
// events and every router's reservations, as they happen.
type watcher struct {
	mu sync.Mutex

	// Attestations by (oracle, miner, generation, round): when each was
	// issued and who received it after how long.
	atts map[string]*attSeen

	// Routers' view of each miner: the moments its record stopped saying
	// available at some generation.
	views map[int]map[peer.ID][]recordSeen

	// reservedAt is when each miner signed its record of being reserved
	// at a generation: the moment of the reservation.
	reservedAt map[minerGen]time.Time

	reservations []reservation
	failures     map[string]int // failed reservation attempts by error kind
	failureTexts []string       // the first few failures' errors, to say why
	evidence     int            // evidence events, summed over nodes
}

type minerGen struct {
	miner peer.ID
	gen   uint64
}

type attSeen struct {
	issued time.Time
	oracle peer.ID
	miner  peer.ID
	recv   map[int]time.Duration // member index → delay
}

type recordSeen struct {
	at    time.Time
	gen   uint64
	state pb.MinerState
}

// reservation is one successful ReserveFor.
type reservation struct {
	router     int
	id         string
	miner      peer.ID
	generation uint64
	at         time.Time
	took       time.Duration
}

func newWatcher() *watcher {
	return &watcher{atts: map[string]*attSeen{}, reservedAt: map[minerGen]time.Time{}, views: map[int]map[peer.ID][]recordSeen{}, failures: map[string]int{}}
}

// watch subscribes to m's pool; call it right after m started.
func (w *watcher) watch(m *Member) {
	isRouter := m.Role == node.RoleRouter
	if isRouter {
		w.mu.Lock()
		w.views[m.Index] = map[peer.ID][]recordSeen{}
		w.mu.Unlock()
	}
	m.PoolView().Subscribe(func(ev pool.Event) {
		now := time.Now()
		switch ev.Kind {
		case pool.EventAttestation:
			a := ev.Attestation
			key := fmt.Sprintf("%s/%x/%d/%d", a.Signer, a.Msg.Miner, a.Msg.Generation, a.Msg.Round)
			w.mu.Lock()
			s := w.atts[key]
			if s == nil {
				miner, _ := peer.IDFromBytes(a.Msg.Miner)
				s = &attSeen{issued: protocol.Time(a.Msg.IssuedMs), oracle: a.Signer, miner: miner, recv: map[int]time.Duration{}}
				w.atts[key] = s
			}
			if _, dup := s.recv[m.Index]; !dup {
				s.recv[m.Index] = now.Sub(s.issued)
			}
			w.mu.Unlock()
		case pool.EventAvailability:
			if !isRouter {
				return
			}
			r := ev.Availability
			w.mu.Lock()
			if k := (minerGen{r.Signer, r.Msg.Generation}); r.Msg.State == pb.MinerState_RESERVED && w.reservedAt[k].IsZero() {
				w.reservedAt[k] = protocol.Time(r.Msg.IssuedMs)
			}
			v := w.views[m.Index]
			v[r.Signer] = append(v[r.Signer], recordSeen{at: now, gen: r.Msg.Generation, state: r.Msg.State})
			w.mu.Unlock()
		case pool.EventEvidence:
			w.mu.Lock()
			w.evidence++
			w.mu.Unlock()
		}
	})
}

// maxFailureTexts is how many failed reservations the report quotes.
const maxFailureTexts = 5

// reserved is the routers' ObserveReserve hook.
func (w *watcher) reserved(routerIdx int) func(router.Reservation, time.Duration, error) {
	return func(res router.Reservation, took time.Duration, err error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.failures[router.Outcome(err)]++
			if len(w.failureTexts) < maxFailureTexts {
				w.failureTexts = append(w.failureTexts, err.Error())
			}
			return
		}
		id, perr := peer.Decode(res.Miner)
		if perr != nil {
			w.failures["bad_miner_id"]++
			return
		}
		w.reservations = append(w.reservations, reservation{
			router: routerIdx, id: res.ID, miner: id, generation: res.Generation, at: time.Now(), took: took,
		})
	}
}

// leftAvailable is when router r's view stopped listing miner m as
// available at generation g: the first record after the one saying so
// that says anything else. A router that never listed it as available
// gets the zero time; ok is false if it listed it and never saw it end.
func (w *watcher) leftAvailable(r int, m peer.ID, g uint64) (at time.Time, ok bool) {
	listed := false
	for _, s := range w.views[r][m] {
		if s.gen == g && s.state == pb.MinerState_AVAILABLE {
			listed = true
			continue
		}
		if listed {
			return s.at, true
		}
		if s.gen > g {
			return time.Time{}, true
		}
	}
	return time.Time{}, !listed
}

// doubleBookings counts (miner, generation) pairs granted under more than
// one reservation.
func (w *watcher) doubleBookings() int {
	ids := map[minerGen][]string{}
	for _, r := range w.reservations {
		k := minerGen{r.miner, r.generation}
		if !slices.Contains(ids[k], r.id) {
			ids[k] = append(ids[k], r.id)
		}
	}
	n := 0
	for _, v := range ids {
		if len(v) > 1 {
			n++
		}
	}
	return n
}
