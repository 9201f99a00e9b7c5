package testkit

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// QUICHost is Host listening on QUIC as well.
func QUICHost(tb testing.TB, key crypto.PrivKey) host.Host {
	return Host(tb, key, libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
}

// UDPPort is one UDP port on 127.0.0.1 whose process can change under a
// client without its knowing, as a node killed and restarted on the same
// port: it forwards each datagram to the host now behind it, and that
// host's back to the client. A host with the same key behind it answers a
// QUIC connection of the one before with a stateless reset, as a restarted
// node does.
type UDPPort struct {
	client      host.Host
	front, back *net.UDPConn
	addr        ma.Multiaddr
	target      atomic.Pointer[net.UDPAddr]
	sender      atomic.Pointer[net.UDPAddr] // the client's side
	dead        atomic.Bool                 // every datagram is dropped
	current     host.Host
}

// NewUDPPort opens a port for client, dead until Serve.
func NewUDPPort(tb testing.TB, client host.Host) *UDPPort {
	tb.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	front, err := net.ListenUDP("udp4", lo)
	if err != nil {
		tb.Fatal(err)
	}
	back, err := net.ListenUDP("udp4", lo)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { front.Close(); back.Close() })
	addr, err := manet.FromNetAddr(front.LocalAddr())
	if err != nil {
		tb.Fatal(err)
	}
	u := &UDPPort{client: client, front: front, back: back, addr: addr.Encapsulate(ma.StringCast("/quic-v1"))}
	u.dead.Store(true)
	go u.pump(front, back, u.target.Load, &u.sender)
	go u.pump(back, front, u.sender.Load, nil)
	return u
}

// pump copies datagrams from in through out to to(), noting their sender
// in from when it is set.
func (u *UDPPort) pump(in, out *net.UDPConn, to func() *net.UDPAddr, from *atomic.Pointer[net.UDPAddr]) {
	buf := make([]byte, 64<<10)
	for {
		n, src, err := in.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if from != nil {
			from.Store(src)
		}
		if dst := to(); dst != nil && !u.dead.Load() {
			_, _ = out.WriteToUDP(buf[:n], dst)
		}
	}
}

// Crash kills the host behind the port as SIGKILL would: silently, the
// frames of its close dropped. The port stays dead until Serve.
func (u *UDPPort) Crash() {
	u.dead.Store(true)
	if u.current != nil {
		_ = u.current.Close()
		u.current = nil
		time.Sleep(50 * time.Millisecond) // what was in flight is dropped
	}
}

// Serve puts h, listening on QUIC, behind the port, and gives the client
// the port as h's only address.
func (u *UDPPort) Serve(tb testing.TB, h host.Host) {
	tb.Helper()
	var real *net.UDPAddr
	for _, a := range h.Addrs() {
		if udp, last := ma.SplitLast(a); last != nil && last.Protocol().Code == ma.P_QUIC_V1 {
			if na, err := manet.ToNetAddr(udp); err == nil {
				real, _ = na.(*net.UDPAddr)
			}
		}
	}
	if real == nil {
		tb.Fatalf("no QUIC address in %v", h.Addrs())
	}
	u.current = h
	u.target.Store(real)
	u.dead.Store(false)
	u.client.Peerstore().ClearAddrs(h.ID())
	u.client.Peerstore().AddAddr(h.ID(), u.addr, time.Hour)
}
