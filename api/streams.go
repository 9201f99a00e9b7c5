package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// The API's long-lived answers, event streams (/v1/events) and streaming
// chat completions, each hold a goroutine, a connection and its buffers for
// as long as the client keeps them open. They are bounded in number, in all
// and per remote address, and an event stream whose client reads slower
// than its updates come is ended rather than left to grow.

// StreamLimits bound each kind of stream: event streams and streaming chat
// completions are counted apart. A zero field takes its default.
type StreamLimits struct {
	// Max is the streams of one kind open at once; more are a 429.
	Max int
	// MaxPerAddr is the streams of one kind open at once from one remote
	// address (an IPv6 client: from one /64).
	MaxPerAddr int
}

// DefaultStreamLimits are the limits of a node that sets none.
func DefaultStreamLimits() StreamLimits { return StreamLimits{Max: 256, MaxPerAddr: 16} }

func (l StreamLimits) withDefaults() StreamLimits {
	d := DefaultStreamLimits()
	if l.Max <= 0 {
		l.Max = d.Max
	}
	if l.MaxPerAddr <= 0 {
		l.MaxPerAddr = d.MaxPerAddr
	}
	return l
}

// Stream kinds, as the metrics label them.
const (
	kindEvents = "events"
	kindChat   = "chat"
)

// An event stream's queue: the updates, and their bytes, that may wait for a
// client before it is dropped as too slow. Enough for a burst of the pool's
// changes (the Observer's own buffer is 256), small beside a connection's
// other buffers.
const (
	streamQueue      = 256
	streamQueueBytes = 256 << 10
)

// streamRetryAfter is the Retry-After of a stream refused for the limits:
// the slots free as other clients leave, seldom within a second.
const streamRetryAfter = "5"

// streamLimiter counts the open streams of one kind.
type streamLimiter struct {
	kind   string
	limits StreamLimits
	m      *metrics

	mu     sync.Mutex
	open   int
	byAddr map[string]int
}

func newStreamLimiter(kind string, l StreamLimits, m *metrics) *streamLimiter {
	return &streamLimiter{kind: kind, limits: l.withDefaults(), m: m, byAddr: make(map[string]int)}
}

// acquire takes a slot for r's stream, or answers it with a 429 and returns
// false. The caller calls release when the stream ends.
func (l *streamLimiter) acquire(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	addr := addrKey(r.RemoteAddr)
	l.mu.Lock()
	var msg, reason string
	switch {
	case l.open >= l.limits.Max:
		reason = "total"
		msg = fmt.Sprintf("too many streams: this node serves %d %s streams at once; retry later", l.limits.Max, l.kind)
	case l.byAddr[addr] >= l.limits.MaxPerAddr:
		reason = "per_address"
		msg = fmt.Sprintf("too many streams from %s: this node serves %d %s streams at once to one address; close one or retry later",
			addr, l.limits.MaxPerAddr, l.kind)
	default:
		l.open++
		l.byAddr[addr]++
	}
	l.mu.Unlock()
	if reason != "" {
		l.m.streamsRefused.WithLabelValues(l.kind, reason).Inc()
		h := w.Header()
		h.Set("Retry-After", streamRetryAfter)
		// A client that opens streams without end gets nothing to hold
		// on to: not even an idle connection.
		h.Set("Connection", "close")
		writeError(w, http.StatusTooManyRequests, msg)
		return nil, false
	}
	l.m.streamsOpen.WithLabelValues(l.kind).Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.open--
			if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
				delete(l.byAddr, addr)
			}
			l.mu.Unlock()
			l.m.streamsOpen.WithLabelValues(l.kind).Dec()
		})
	}, true
}

// addrKey is the address a client's streams are counted under: its IP, or
// for IPv6, where one client may hold a whole /64, that prefix.
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// armWrite gives the next write to a stream's client streamTiming.write to
// complete: a client that stops reading fills the socket's buffers, then the
// write blocks, and the deadline ends it.
func armWrite(rc *http.ResponseController) error {
	err := rc.SetWriteDeadline(time.Now().Add(streamTiming.write))
	if errors.Is(err, http.ErrNotSupported) {
		return nil
	}
	return err
}

// timedOut reports whether a write failed at its deadline: the client had
// stopped reading.
func timedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// sseWriter writes an event stream's frames from a goroutine of its own,
// through a bounded queue. The kernel's socket buffers take megabytes of
// small events before a write to a client that does not read blocks, so a
// deadline alone lets such a client hold memory for a long time; the queue
// drops it as soon as it is streamQueue frames or streamQueueBytes behind.
type sseWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	queue chan []byte
	done  chan struct{} // closed when the writing goroutine ends

	mu      sync.Mutex
	stopped bool  // close has begun: no more writes
	queued  int   // bytes in queue
	err     error // why writing ended, if it failed
}

// newSSEWriter starts writing to w, whose header must be written.
func newSSEWriter(w http.ResponseWriter) *sseWriter {
	s := &sseWriter{
		w: w, rc: http.NewResponseController(w),
		queue: make(chan []byte, streamQueue), done: make(chan struct{}),
	}
	go s.run()
	return s
}

func (s *sseWriter) run() {
	defer close(s.done)
	for b := range s.queue {
		s.mu.Lock()
		s.queued -= len(b)
		var err error
		if s.stopped {
			err = net.ErrClosed
		} else {
			err = armWrite(s.rc)
		}
		s.mu.Unlock()
		if err == nil {
			_, err = s.w.Write(b)
		}
		if err == nil {
			if err = s.rc.Flush(); errors.Is(err, http.ErrNotSupported) {
				err = nil
			}
		}
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
	}
}

// send queues a frame. It is false when the writer has failed, or when the
// client is too far behind: then the stream must end.
func (s *sseWriter) send(b []byte) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued+len(b) > streamQueueBytes {
		return false
	}
	select {
	case s.queue <- b:
		s.queued += len(b)
		return true
	default:
		return false
	}
}

// failed is closed when the writer has stopped on its own, having failed.
func (s *sseWriter) failed() <-chan struct{} { return s.done }

// behind reports, once send has failed or failed() is closed, whether the
// client fell behind: the queue filled, or a write passed its deadline.
// Otherwise the client has gone.
func (s *sseWriter) behind() bool {
	select {
	case <-s.done:
	default:
		return true // the writer still runs: send found the queue full
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return timedOut(s.err)
}

// close ends the stream, cutting short a write under way, and waits for the
// writing goroutine: the handler may return only after it.
func (s *sseWriter) close() {
	s.mu.Lock()
	s.stopped = true
	// A deadline already past fails a write blocked now.
	_ = s.rc.SetWriteDeadline(time.Unix(1, 0))
	s.mu.Unlock()
	close(s.queue)
	<-s.done
}
