package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// The mem transport carries a node's connections as in-process byte
// streams between /ip4/<ip>/memory/<index> addresses, in place of QUIC
// datagrams on the simnet. The address keeps the node's IP, on which the
// resource manager's per-IP limits and rate limits and the gater key. Each
// stream behaves as a TCP connection on the same links would: the dial
// takes a round trip, and every write reaches the other side in order,
// after the pair's one-way delay, no sooner than 100 Mbit/s lets it out
// (each connection has the whole rate to itself, where the simnet shares it
// among a node's connections; nothing here comes near it). The host's own
// upgrader secures it with Noise and multiplexes it with yamux, exactly as
// it would a TCP connection, so the nodes speak their real protocols over
// it. What it leaves out is packet loss, congestion control and QUIC's
// per-packet timers and crypto: they cost the simulation a third of its
// time, and nothing Ephemera checks depends on them, since no link here is
// lossy.

// tcpSegment is the payload of one simulated TCP segment: the mem transport
// counts a write of n bytes as ceil(n/tcpSegment) packets.
const tcpSegment = 1448

// memNet is the registry of the mem transport's listeners.
type memNet struct {
	mu        sync.Mutex
	listeners map[int]*memListener
}

func (n *Network) memListener(idx int) *memListener {
	n.mem.mu.Lock()
	defer n.mem.mu.Unlock()
	return n.mem.listeners[idx]
}

// memOn gives a host the mem transport at /ip4/<ip>/memory/<idx>, and makes it dial
// only such addresses: the QUIC address every node must also listen on
// (p2p.listen takes no other kind) is on a link that carries nothing.
func (n *Network) memOn(idx int, link *linkCounters) []libp2p.Option {
	laddr := ma.StringCast(fmt.Sprintf("/ip4/%s/memory/%d", simIP(idx), idx))
	return []libp2p.Option{
		libp2p.Transport(func(u transport.Upgrader, rcmgr network.ResourceManager) (transport.Transport, error) {
			return &memTransport{net: n, idx: idx, laddr: laddr, link: link, upgrader: u, rcmgr: rcmgr}, nil
		}),
		libp2p.ListenAddrs(laddr),
		libp2p.DialRanker(memOnly),
	}
}

// memOnly ranks a peer's /memory addresses for dialling, all at once, and
// leaves out the rest.
func memOnly(addrs []ma.Multiaddr) []network.AddrDelay {
	var out []network.AddrDelay
	for _, a := range addrs {
		if isMem(a) {
			out = append(out, network.AddrDelay{Addr: a})
		}
	}
	return out
}

func isMem(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_MEMORY)
	return err == nil
}

func memIndex(a ma.Multiaddr) (int, error) {
	v, err := a.ValueForProtocol(ma.P_MEMORY)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

// memTransport is one node's mem transport.
type memTransport struct {
	net      *Network
	idx      int
	laddr    ma.Multiaddr
	link     *linkCounters
	upgrader transport.Upgrader
	rcmgr    network.ResourceManager
}

func (t *memTransport) Protocols() []int { return []int{ma.P_MEMORY} }
func (t *memTransport) Proxy() bool      { return false }

func (t *memTransport) CanDial(a ma.Multiaddr) bool {
	_, err := memIndex(a)
	return err == nil && len(a) == 2
}

func (t *memTransport) Listen(laddr ma.Multiaddr) (transport.Listener, error) {
	idx, err := memIndex(laddr)
	if err != nil || idx != t.idx {
		return nil, fmt.Errorf("mem transport of node %d cannot listen on %s", t.idx, laddr)
	}
	l := &memListener{t: t, conns: make(chan *memConn), done: make(chan struct{})}
	t.net.mem.mu.Lock()
	defer t.net.mem.mu.Unlock()
	if t.net.mem.listeners == nil {
		t.net.mem.listeners = map[int]*memListener{}
	}
	if _, ok := t.net.mem.listeners[idx]; ok {
		return nil, fmt.Errorf("listen on %s: %w", laddr, syscall.EADDRINUSE)
	}
	t.net.mem.listeners[idx] = l
	return t.upgrader.UpgradeListener(t, l), nil
}

func (t *memTransport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, err
	}
	c, err := t.dial(ctx, raddr, scope)
	if err != nil {
		scope.Done()
		return nil, err
	}
	return t.upgrader.Upgrade(ctx, t, c, network.DirOutbound, p, scope)
}

// dial connects to the listener at raddr after a round trip, as a TCP
// handshake would take, and hands it the other end.
func (t *memTransport) dial(ctx context.Context, raddr ma.Multiaddr, scope network.ConnManagementScope) (*memConn, error) {
	idx, err := memIndex(raddr)
	if err != nil {
		return nil, err
	}
	rtt := 2 * (accessDelay(simIP(t.idx).String()) + accessDelay(simIP(idx).String()))
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(rtt):
	}
	l := t.net.memListener(idx)
	if l == nil {
		return nil, fmt.Errorf("dial %s: %w", raddr, syscall.ECONNREFUSED)
	}
	local, remote := memPair(t, l.t)
	select {
	case l.conns <- remote:
		return local, nil
	case <-l.done:
		return nil, fmt.Errorf("dial %s: %w", raddr, syscall.ECONNREFUSED)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// memListener is a manet.Listener; the host's upgrader wraps it.
type memListener struct {
	t     *memTransport
	conns chan *memConn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (manet.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.t.net.mem.mu.Lock()
		if l.t.net.mem.listeners[l.t.idx] == l {
			delete(l.t.net.mem.listeners, l.t.idx)
		}
		l.t.net.mem.mu.Unlock()
	})
	return nil
}

func (l *memListener) Addr() net.Addr          { return memAddr(l.t.idx) }
func (l *memListener) Multiaddr() ma.Multiaddr { return l.t.laddr }

// memAddr is a node's address on the mem transport: its index.
type memAddr int

func (a memAddr) Network() string { return "memory" }
func (a memAddr) String() string  { return strconv.Itoa(int(a)) }

// memPair makes the two ends of a connection from a to b.
func memPair(a, b *memTransport) (*memConn, *memConn) {
	delay := accessDelay(simIP(a.idx).String()) + accessDelay(simIP(b.idx).String())
	ab, ba := newPipe(delay, a.link, b.link), newPipe(delay, b.link, a.link)
	return &memConn{in: ba, out: ab, local: a, remote: b}, &memConn{in: ab, out: ba, local: b, remote: a}
}

// memConn is one end of a mem connection: a manet.Conn.
type memConn struct {
	in, out       *pipe
	local, remote *memTransport
}

func (c *memConn) Read(b []byte) (int, error)  { return c.in.read(b) }
func (c *memConn) Write(b []byte) (int, error) { return c.out.write(b) }

// Close ends both directions: what was sent still arrives, then the other
// side reads EOF, and its writes fail from then on.
func (c *memConn) Close() error {
	c.out.closeWrite()
	c.in.closeRead()
	return nil
}

func (c *memConn) LocalAddr() net.Addr               { return memAddr(c.local.idx) }
func (c *memConn) RemoteAddr() net.Addr              { return memAddr(c.remote.idx) }
func (c *memConn) LocalMultiaddr() ma.Multiaddr      { return c.local.laddr }
func (c *memConn) RemoteMultiaddr() ma.Multiaddr     { return c.remote.laddr }
func (c *memConn) SetReadDeadline(t time.Time) error { c.in.setDeadline(t); return nil }

// Writes never wait (yamux's windows bound what is in flight), so only a
// deadline already past matters to them.
func (c *memConn) SetWriteDeadline(t time.Time) error { c.out.setWriteDeadline(t); return nil }

func (c *memConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// pipe is one direction of a mem connection. The reader waits on a
// sync.Cond, which synctest counts as durably blocked, woken by the writer
// or by a timer for the next chunk's arrival or the read deadline.
type pipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	delay  time.Duration
	chunks []chunk
	// free is when the sender's uplink has sent everything written so far.
	free          time.Time
	eof           bool // the writer closed
	closed        bool // the reader closed
	deadline      time.Time
	writeDeadline time.Time
	timer         *time.Timer
	from, to      *linkCounters
}

type chunk struct {
	data []byte
	at   time.Time
}

func newPipe(delay time.Duration, from, to *linkCounters) *pipe {
	p := &pipe{delay: delay, from: from, to: to}
	p.cond.L = &p.mu
	return p
}

var errReset = fmt.Errorf("mem connection: %w", syscall.ECONNRESET)

func (p *pipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	switch {
	case p.eof:
		return 0, net.ErrClosed
	case p.closed:
		return 0, errReset
	case !p.writeDeadline.IsZero() && !now.Before(p.writeDeadline):
		return 0, os.ErrDeadlineExceeded
	}
	if len(b) == 0 {
		return 0, nil
	}
	start := now
	if p.free.After(now) {
		start = p.free
	}
	p.free = start.Add(time.Duration(len(b)) * 8 * time.Second / linkBitsPerSecond)
	p.chunks = append(p.chunks, chunk{data: append([]byte(nil), b...), at: p.free.Add(p.delay)})
	segments := uint64((len(b) + tcpSegment - 1) / tcpSegment)
	p.from.sentPackets.Add(segments)
	p.from.sentBytes.Add(uint64(len(b)))
	p.to.recvPackets.Add(segments)
	p.to.recvBytes.Add(uint64(len(b)))
	if len(p.chunks) == 1 {
		p.cond.Broadcast()
	}
	return len(b), nil
}

func (p *pipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		now := time.Now()
		switch {
		case p.closed:
			return 0, net.ErrClosed
		case !p.deadline.IsZero() && !now.Before(p.deadline):
			return 0, os.ErrDeadlineExceeded
		case len(p.chunks) > 0 && !p.chunks[0].at.After(now):
			return p.take(b), nil
		case len(p.chunks) == 0 && p.eof:
			return 0, io.EOF
		}
		var wake time.Time
		if len(p.chunks) > 0 {
			wake = p.chunks[0].at
		}
		if !p.deadline.IsZero() && (wake.IsZero() || p.deadline.Before(wake)) {
			wake = p.deadline
		}
		if !wake.IsZero() {
			p.wakeAt(wake.Sub(now))
		}
		p.cond.Wait()
	}
}

// take copies out what the first chunks that have arrived hold.
func (p *pipe) take(b []byte) int {
	n := 0
	now := time.Now()
	for n < len(b) && len(p.chunks) > 0 && !p.chunks[0].at.After(now) {
		c := &p.chunks[0]
		k := copy(b[n:], c.data)
		n += k
		c.data = c.data[k:]
		if len(c.data) == 0 {
			p.chunks[0] = chunk{}
			p.chunks = p.chunks[1:]
		}
	}
	return n
}

func (p *pipe) wakeAt(d time.Duration) {
	if p.timer == nil {
		p.timer = time.AfterFunc(d, func() {
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
		})
		return
	}
	p.timer.Reset(d)
}

func (p *pipe) setDeadline(t time.Time) {
	p.mu.Lock()
	p.deadline = t
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) setWriteDeadline(t time.Time) {
	p.mu.Lock()
	p.writeDeadline = t
	p.mu.Unlock()
}

func (p *pipe) closeWrite() {
	p.mu.Lock()
	p.eof = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) closeRead() {
	p.mu.Lock()
	p.closed = true
	p.chunks = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// errMemPartition says why the mem transport cannot run a partition.
var errMemPartition = errors.New("sim: the mem transport cannot partition a network (its streams have no packets to drop); use quic")

// nullPacketConn is the packet conn of a QUIC listener that nobody dials:
// it drops what is written and blocks reads until closed, or until a read
// deadline already past, which is how quic-go stops reading a conn it was
// given.
type nullPacketConn struct {
	addr    *net.UDPAddr
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	expired chan struct{} // closed while the read deadline is past
}

func newNullPacketConn(addr *net.UDPAddr) *nullPacketConn {
	return &nullPacketConn{addr: addr, done: make(chan struct{}), expired: make(chan struct{})}
}

func (c *nullPacketConn) ReadFrom([]byte) (int, net.Addr, error) {
	c.mu.Lock()
	expired := c.expired
	c.mu.Unlock()
	select {
	case <-c.done:
		return 0, nil, net.ErrClosed
	case <-expired:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// SetReadDeadline honours only a deadline already past, or none: nothing
// ever arrives, so a later one would only end a read with a timeout.
func (c *nullPacketConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	past := !t.IsZero() && !t.After(time.Now())
	select {
	case <-c.expired:
		if !past {
			c.expired = make(chan struct{})
		}
	default:
		if past {
			close(c.expired)
		}
	}
	return nil
}

func (c *nullPacketConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (c *nullPacketConn) Close() error                              { c.once.Do(func() { close(c.done) }); return nil }
func (c *nullPacketConn) LocalAddr() net.Addr                       { return c.addr }
func (c *nullPacketConn) SetDeadline(t time.Time) error             { return c.SetReadDeadline(t) }
func (c *nullPacketConn) SetWriteDeadline(time.Time) error          { return nil }

// SetReadBuffer and SetWriteBuffer keep quic-go from warning that it cannot
// size the buffers of a conn that carries nothing.
func (c *nullPacketConn) SetReadBuffer(int) error  { return nil }
func (c *nullPacketConn) SetWriteBuffer(int) error { return nil }
