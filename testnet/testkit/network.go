package testkit

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Party is one signer of a test network.
type Party struct {
	Key crypto.PrivKey
	ID  peer.ID
}

func party(tb testing.TB, name string) Party {
	k := Key(tb, name)
	return Party{Key: k, ID: ID(tb, k)}
}

// Network is a signed network for tests of the message checks and the state
// built from them: five oracles (quorum three), two miners, a router and an
// outsider, all with keys derived from their names, judged at Now.
//
// Its builders make valid messages of the first miner at generation 7 and
// round 100, in session "s1", unless an edit says otherwise; an edit runs
// before sealing.
type Network struct {
	Name    string
	Now     time.Time
	Params  protocol.Params
	Oracles []Party
	Miner   Party
	Miner2  Party
	Router  Party
	Other   Party
}

// NewNetwork is a Network named name, judged at now.
func NewNetwork(tb testing.TB, name string, now time.Time) *Network {
	tb.Helper()
	n := &Network{Name: name, Now: now, Params: protocol.DefaultParams()}
	n.Params.Quorum = 3
	for _, o := range []string{"oracle0", "oracle1", "oracle2", "oracle3", "oracle4"} {
		p := party(tb, o)
		n.Oracles = append(n.Oracles, p)
		n.Params.Oracles = append(n.Params.Oracles, p.ID.String())
	}
	if err := n.Params.Validate(); err != nil {
		tb.Fatal(err)
	}
	n.Miner, n.Miner2 = party(tb, "miner"), party(tb, "miner2")
	n.Router, n.Other = party(tb, "router"), party(tb, "other")
	return n
}

// Checker judges messages of the network at its fixed time.
func (n *Network) Checker() protocol.Checker {
	now := n.Now
	return protocol.Checker{Network: n.Name, Params: n.Params, Now: func() time.Time { return now }}
}

// Digest32 is a stand-in 32-byte digest named by s.
func Digest32(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func ms(t time.Time) int64 { return protocol.Ms(t) }

func apply[M any](m M, edits []func(M)) M {
	for _, e := range edits {
		e(m)
	}
	return m
}

// Attestation is oracle i's passing verdict on miner, issued a minute ago.
func (n *Network) Attestation(i int, miner peer.ID, edits ...func(*pb.Attestation)) *pb.Attestation {
	issued := n.Now.Add(-time.Minute)
	return apply(&pb.Attestation{
		Network: n.Name, Oracle: []byte(n.Oracles[i].ID), Miner: []byte(miner), Generation: 7, Round: 100,
		Model: "llama", ScoreMilli: 900, Pass: true, IssuedMs: ms(issued),
		ExpiresMs:       ms(issued.Add(n.Params.AttestationLifetime.Std())),
		ChallengeDigest: Digest32("challenge"),
	}, edits)
}

// SealedAttestation is Attestation sealed by oracle i.
func (n *Network) SealedAttestation(tb testing.TB, i int, miner peer.ID, edits ...func(*pb.Attestation)) protocol.Signed[*pb.Attestation] {
	tb.Helper()
	return Signed(tb, n.Attestation(i, miner, edits...), n.Oracles[i].Key)
}

// Availability is m's record, issued a second ago. An AVAILABLE record
// carries passing attestations of its generation by the first quorum of
// oracles; edits run after they are attached.
func (n *Network) Availability(tb testing.TB, m Party, seq, gen uint64, state pb.MinerState, edits ...func(*pb.Availability)) *pb.Availability {
	tb.Helper()
	issued := n.Now.Add(-time.Second)
	a := &pb.Availability{
		Network: n.Name, Miner: []byte(m.ID), Seq: seq, State: state, Generation: gen, Models: []string{"llama"},
		IssuedMs: ms(issued), ExpiresMs: ms(issued.Add(n.Params.RecordLifetime.Std())),
	}
	if state == pb.MinerState_AVAILABLE {
		for i := range int(n.Params.Quorum) {
			att := n.SealedAttestation(tb, i, m.ID, func(a *pb.Attestation) { a.Generation = gen })
			a.Attestations = append(a.Attestations, att.Raw)
		}
	}
	return apply(a, edits)
}

// SealedAvailability is Availability sealed by m.
func (n *Network) SealedAvailability(tb testing.TB, m Party, seq, gen uint64, state pb.MinerState, edits ...func(*pb.Availability)) protocol.Signed[*pb.Availability] {
	tb.Helper()
	return Signed(tb, n.Availability(tb, m, seq, gen, state, edits...), m.Key)
}

// Claim is the router's claim of the miner, expiring in five seconds.
func (n *Network) Claim(edits ...func(*pb.Claim)) *pb.Claim {
	return apply(&pb.Claim{
		Network: n.Name, Session: "s1", Router: []byte(n.Router.ID), Miner: []byte(n.Miner.ID), Generation: 7,
		LeaseMs: 30_000, Nonce: []byte("nonce-0123456789"), ExpiresMs: ms(n.Now.Add(5 * time.Second)), Model: "llama",
	}, edits)
}

// Grant is the miner's grant to the router, in session "s1" at generation 7,
// of the sealed claim, for a lease of 30 s. It takes its fields from the
// builders' defaults, not from the claim, so that a test can make them
// disagree.
func (n *Network) Grant(claim []byte, edits ...func(*pb.Grant)) *pb.Grant {
	return apply(&pb.Grant{
		Network: n.Name, Miner: []byte(n.Miner.ID), Router: []byte(n.Router.ID), Session: "s1", Generation: 7,
		LeaseEndMs: ms(n.Now.Add(30 * time.Second)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, edits)
}

// SealedGrant is the miner's sealed grant of a claim built with claimEdits.
func (n *Network) SealedGrant(tb testing.TB, claimEdits []func(*pb.Claim), edits ...func(*pb.Grant)) protocol.Signed[*pb.Grant] {
	tb.Helper()
	claim := Seal(tb, n.Claim(claimEdits...), n.Router.Key)
	return Signed(tb, n.Grant(claim, edits...), n.Miner.Key)
}

// Release is the router's COMPLETED release of the miner's session, now.
func (n *Network) Release(edits ...func(*pb.Release)) *pb.Release {
	return apply(&pb.Release{
		Network: n.Name, Session: "s1", Signer: []byte(n.Router.ID), Miner: []byte(n.Miner.ID), Router: []byte(n.Router.ID),
		Generation: 7, Outcome: pb.Outcome_COMPLETED, Rating: 5, IssuedMs: ms(n.Now),
	}, edits)
}

// OracleIDs are the oracles' peer IDs, in order.
func (n *Network) OracleIDs() []peer.ID {
	ids := make([]peer.ID, len(n.Oracles))
	for i, o := range n.Oracles {
		ids[i] = o.ID
	}
	return ids
}
