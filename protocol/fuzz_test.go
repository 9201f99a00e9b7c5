package protocol_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// junkSeeds are inputs every fuzz target starts from besides valid messages.
var junkSeeds = [][]byte{
	nil, {}, {0x0a}, {0x0a, 0x00}, []byte("junk"), bytes.Repeat([]byte{0xff}, 64),
	binary.AppendUvarint(nil, 1<<40), {0x0a, 0x24, 0x08, 0x01, 0x12, 0x20},
}

func addSeeds(f *testing.F, valid ...[]byte) {
	for _, v := range valid {
		f.Add(v)
		f.Add(v[:len(v)/2])              // truncated
		f.Add(append(bytes.Clone(v), 0)) // trailing byte
		flipped := bytes.Clone(v)
		flipped[len(flipped)-1] ^= 1 // broken signature
		f.Add(flipped)
	}
	for _, j := range junkSeeds {
		f.Add(j)
	}
}

// mustClassify fails on a check error that is neither a reject nor an ignore:
// gossip validators map every error by class.
func mustClassify(t *testing.T, err error) {
	t.Helper()
	if c := testkit.Class(err); c != "ok" && c != "reject" && c != "ignore" {
		t.Fatalf("error %v is %s", err, c)
	}
}

// opened checks what an opened envelope promises: its raw bytes and a signer.
func opened[M any](t *testing.T, s protocol.Signed[M], data []byte) {
	t.Helper()
	if !bytes.Equal(s.Raw, data) || s.Signer == "" || s.Signer.Validate() != nil {
		t.Fatalf("opened envelope with signer %q, raw equal %v", s.Signer, bytes.Equal(s.Raw, data))
	}
}

func FuzzOpenAttestation(f *testing.F) {
	fx := newFixture(f)
	expired := fx.att(1)
	expired.ExpiresMs = ms(testNow)
	addSeeds(f, testkit.Seal(f, fx.att(0), fx.Oracles[0].Key), testkit.Seal(f, expired, fx.Oracles[1].Key), testkit.Seal(f, fx.att(2), fx.Other.Key))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Attestation](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		err = fx.check.Attestation(s)
		mustClassify(t, err)
		if err == nil && (s.Signer != peerOf(s.Msg.Oracle) || !fx.check.Params.IsOracle(s.Signer)) {
			t.Fatalf("accepted an attestation by %s naming %x", s.Signer, s.Msg.Oracle)
		}
	})
}

func FuzzOpenAvailability(f *testing.F) {
	fx := newFixture(f)
	noQuorum := fx.avail(f)
	noQuorum.Attestations = noQuorum.Attestations[:1]
	addSeeds(f, testkit.Seal(f, fx.avail(f), fx.Miner.Key), testkit.Seal(f, noQuorum, fx.Miner.Key), testkit.Seal(f, fx.avail(f), fx.Other.Key))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Availability](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		err = fx.check.Availability(s)
		mustClassify(t, err)
		if err == nil && s.Signer != peerOf(s.Msg.Miner) {
			t.Fatalf("accepted a record of %x signed by %s", s.Msg.Miner, s.Signer)
		}
	})
}

func FuzzOpenClaim(f *testing.F) {
	fx := newFixture(f)
	addSeeds(f, testkit.Seal(f, fx.claim(), fx.Router.Key), testkit.Seal(f, fx.claim(), fx.Other.Key))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Claim](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		mustClassify(t, fx.check.Claim(s, fx.Miner.ID))
		err = fx.check.Claim(s, "")
		mustClassify(t, err)
		if err == nil && s.Signer != peerOf(s.Msg.Router) {
			t.Fatalf("accepted a claim of %x signed by %s", s.Msg.Router, s.Signer)
		}
	})
}

func FuzzOpenGrant(f *testing.F) {
	fx := newFixture(f)
	claim := testkit.Seal(f, fx.claim(), fx.Router.Key)
	addSeeds(f, testkit.Seal(f, fx.grant(claim), fx.Miner.Key), testkit.Seal(f, fx.grant(testkit.Seal(f, fx.claim(), fx.Other.Key)), fx.Miner.Key))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Grant](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		c, err := fx.check.Grant(s)
		mustClassify(t, err)
		if err == nil && (s.Signer != peerOf(s.Msg.Miner) || c.Signer != peerOf(s.Msg.Router)) {
			t.Fatalf("accepted a grant signed by %s with a claim signed by %s", s.Signer, c.Signer)
		}
	})
}

func FuzzOpenRelease(f *testing.F) {
	fx := newFixture(f)
	byMiner := fx.release()
	byMiner.Signer = []byte(fx.Miner.ID)
	addSeeds(f, testkit.Seal(f, fx.release(), fx.Router.Key), testkit.Seal(f, byMiner, fx.Miner.Key), testkit.Seal(f, fx.release(), fx.Other.Key))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Release](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		err = fx.check.Release(s)
		mustClassify(t, err)
		if err == nil && s.Signer != peerOf(s.Msg.Miner) && s.Signer != peerOf(s.Msg.Router) {
			t.Fatalf("accepted a release signed by %s, neither miner nor router", s.Signer)
		}
	})
}

func FuzzOpenEvidence(f *testing.F) {
	fx := newFixture(f)
	pass := testkit.Seal(f, fx.att(0), fx.Oracles[0].Key)
	failing := fx.att(0)
	failing.Pass = false
	fail := testkit.Seal(f, failing, fx.Oracles[0].Key)
	claimA := testkit.Seal(f, fx.claim(), fx.Router.Key)
	cb := fx.claim()
	cb.Nonce = []byte("another-nonce-99")
	gA, gB := testkit.Seal(f, fx.grant(claimA), fx.Miner.Key), testkit.Seal(f, fx.grant(testkit.Seal(f, cb, fx.Router.Key)), fx.Miner.Key)
	addSeeds(f,
		testkit.Seal(f, &pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: pass, Second: fail}, fx.Other.Key),
		testkit.Seal(f, &pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: gA, Second: gB}, fx.Router.Key),
		testkit.Seal(f, &pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: gA, Second: gA}, fx.Router.Key),
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := protocol.Open[pb.Evidence](data)
		if err != nil {
			return
		}
		opened(t, s, data)
		offender, err := fx.check.Evidence(s.Msg)
		mustClassify(t, err)
		if err == nil && (offender == "" || bytes.Equal(s.Msg.First, s.Msg.Second)) {
			t.Fatalf("evidence against %q of one message twice", offender)
		}
	})
}

func FuzzReadMsg(f *testing.F) {
	for _, seed := range [][]byte{
		{0}, {3, 'a', 'b', 'c'}, {3, 'a'}, {0x80}, {0x80, 0x01}, bytes.Repeat([]byte{0xff}, 11),
		binary.AppendUvarint(nil, protocol.MaxMessageSize+1), append(binary.AppendUvarint(nil, 300), make([]byte, 300)...),
	} {
		f.Add(seed, uint16(100))
		f.Add(seed, uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			msg, err := protocol.ReadMsg(r, int(max))
			if err != nil {
				return
			}
			if len(msg) > int(max) {
				t.Fatalf("read %d bytes, max %d", len(msg), max)
			}
			var b bytes.Buffer
			if err := protocol.WriteMsg(&b, msg); err != nil {
				t.Fatal(err)
			}
			again, err := protocol.ReadMsg(bufio.NewReader(&b), int(max))
			if err != nil || !bytes.Equal(again, msg) {
				t.Fatalf("round trip of %d bytes: %v", len(msg), err)
			}
		}
	})
}

func FuzzAvailabilityValidator(f *testing.F) {
	fx := newFixture(f)
	v := protocol.AvailabilityValidator{Check: fx.check}
	key := protocol.AvailabilityKey([]byte(fx.Miner.ID))
	valid := testkit.Seal(f, fx.avail(f), fx.Miner.Key)
	for _, s := range [][]byte{valid, testkit.Seal(f, fx.avail(f), fx.Other.Key), []byte("junk"), nil} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, value []byte, minerKey bool) {
		k := "/avail/x"
		if minerKey {
			k = key
		}
		err := v.Validate(k, value)
		i, serr := v.Select(k, [][]byte{value})
		if (err == nil) != (serr == nil) || (serr == nil && i != 0) {
			t.Fatalf("Validate says %v but Select says %d, %v", err, i, serr)
		}
		if !minerKey {
			return
		}
		// Against the valid seq-1 record, value wins only if valid and newer.
		i, serr = v.Select(k, [][]byte{valid, value})
		if serr != nil || i < 0 || i > 1 {
			t.Fatalf("Select with a valid record: %d, %v", i, serr)
		}
		if i == 1 {
			s, oerr := protocol.Open[pb.Availability](value)
			if err != nil || oerr != nil || s.Msg.Seq <= 1 {
				t.Fatalf("selected an invalid or older record (validate %v)", err)
			}
		}
	})
}
