package protocol_test

// The fixture the protocol tests share, and the test vectors of the
// session protocol that docs/PROTOCOL.md prints.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

// testNow is the fixed clock of every Checker in these tests.
var testNow = time.Date(2031, time.March, 14, 15, 9, 26, 535_000_000, time.UTC)

// fixture is a network of five oracles (quorum three), a miner, a router and
// an outsider, judged at testNow.
type fixture struct {
	*testkit.Network
	check protocol.Checker
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, testNow)
	f := &fixture{Network: n, check: n.Checker()}
	return f
}

func (f *fixture) lifetime() time.Duration { return f.check.Params.AttestationLifetime.Std() }
func (f *fixture) skew() time.Duration     { return f.check.Params.ClockSkew.Std() }

func ms(t time.Time) int64 { return protocol.Ms(t) }

// att is a valid passing attestation by oracle i of the miner at generation 7, round 100.
func (f *fixture) att(i int) *pb.Attestation { return f.Attestation(i, f.Miner.ID) }

// sealedAtts seals passing attestations of the miner at generation 7 by the given oracles.
func (f *fixture) sealedAtts(tb testing.TB, oracles ...int) [][]byte {
	var out [][]byte
	for _, i := range oracles {
		out = append(out, f.SealedAttestation(tb, i, f.Miner.ID).Raw)
	}
	return out
}

// avail is a valid AVAILABLE record of the miner at generation 7, attested by a quorum.
func (f *fixture) avail(tb testing.TB) *pb.Availability {
	return f.Availability(tb, f.Miner, 1, 7, pb.MinerState_AVAILABLE)
}

// claim is a valid claim by the router for the miner at generation 7.
func (f *fixture) claim() *pb.Claim { return f.Claim() }

// grant is a valid grant by the miner of the sealed claim.
func (f *fixture) grant(claimRaw []byte) *pb.Grant { return f.Grant(claimRaw) }

// release is a valid release of the reservation, signed by the router.
func (f *fixture) release() *pb.Release { return f.Release() }

// sealRaw seals payload bytes under any domain and payload type, bypassing
// the protocol's own marshalling.
func sealRaw(tb testing.TB, domain string, codec, payload []byte, k crypto.PrivKey) []byte {
	tb.Helper()
	return testkit.SealRecord(tb, &rawRecord{domain: domain, codec: codec, payload: payload}, k)
}

type rawRecord struct {
	domain  string
	codec   []byte
	payload []byte
}

func (r *rawRecord) Domain() string                 { return r.domain }
func (r *rawRecord) Codec() []byte                  { return r.codec }
func (r *rawRecord) MarshalRecord() ([]byte, error) { return r.payload, nil }
func (r *rawRecord) UnmarshalRecord(b []byte) error { r.payload = b; return nil }

// peerOf decodes a binary peer ID field, or "" if it is none.
func peerOf(b []byte) peer.ID {
	id, err := peer.IDFromBytes(b)
	if err != nil {
		return ""
	}
	return id
}

// The session protocol's test vectors, as docs/PROTOCOL.md prints them in its
// appendix. The test rebuilds every message from the appendix's description,
// compares the bytes, and checks that the document still prints them, so
// neither the code nor the document can drift from the other unnoticed.
//
// Keys are Ed25519 from a 32-byte seed of one repeated byte: "key 3" (the
// router) has seed 03…03, "key 4" (the miner) 04…04.

// vectorDoc is the document that prints the vectors.
const vectorDoc = "../docs/PROTOCOL.md"

// Hex as the appendix prints it; white space is ignored.
const (
	vecKey3 = "002408011220ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1"
	vecKey4 = "002408011220ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c"

	vecTask = `
	0a2408011220ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d112182f657068656d
	6572612f73657373696f6e2d7461736b2f311a9b020a066465766e65741220303132333435363738396162636465
	66303132333435363738396162636465661a26002408011220ed4928c628d1c2c6eae90338905995612959273a5c
	63f93636c14614ac8737d12226002408011220ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d77268793
	33dbdabe7c2807322000000000000000000000000000000000000000000000000000000000000000003a22666564
	63626139383736353433323130666564636261393837363534333231302f314212657068656d6572612d6275696c
	74696e2d314a190a0673797374656d120f416e737765722062726965666c792e4a160a0475736572120e57686174
	2069732032202b20323f501058026080d095ffbc3168e0a499ffbc312a40743aff2ed87369758f31a4459c3006e1
	db42d6c5698f0fab20ac2953018217b9370980b439da21e1608c11d2b7c4e7fb29875559ee00eda0a1d270ed2d60
	4803
	`
	vecTaskDigest = "7fb5ae4ee34c6316e5dfe5e28efb0bc2fd49ed447b7811a5320684af1167a1a5"

	vecResult = `
	0a2408011220ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c12172f657068656d
	6572612f7461736b2d726573756c742f311a6f0a066465766e65741226002408011220ca93ac1705187071d67b83
	c7ff0efe8108e8ec4530575d7726879333dbdabe7c1a207fb5ae4ee34c6316e5dfe5e28efb0bc2fd49ed447b7811
	a5320684af1167a1a52212657068656d6572612d6275696c74696e2d312a0134300c380140032a405d1c663af416
	f69ee70d715ea709661bb8916247809d25534a63c98f714e7d44e9cc0814a13aaaf4d0795091e3a06d6fae2bdd01
	c4940fbcc5defec00047d906
	`
	vecResultDigest = "4e6f165f3cec7d1b19fcb2dd3f3bcc96b5a7017467103912a283fd115dcea738"

	vecCommit = `
	0a2408011220ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c12172f657068656d
	6572612f7461736b2d636f6d6d69742f311a740a066465766e65741226002408011220ca93ac1705187071d67b83
	c7ff0efe8108e8ec4530575d7726879333dbdabe7c1a207fb5ae4ee34c6316e5dfe5e28efb0bc2fd49ed447b7811
	a5320684af1167a1a522204e6f165f3cec7d1b19fcb2dd3f3bcc96b5a7017467103912a283fd115dcea7382a402b
	9a3cf0d734560ea7914340b508a8a73ec615bc988722f5ec6c368f3730ce0fac98a7e57a94ccb1d0764d4eb9d7fc
	a3633738e1fb5690ee00a0cc2058b42a07
	`
	vecCommitDigest = "fdbabbfba823dbe0afc712df16e95d916fb6e50581e3dec86f39c7d229ff0b79"

	vecReveal = `
	0a2408011220ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d112122f657068656d
	6572612f72657665616c2f311a7a0a066465766e65741226002408011220ed4928c628d1c2c6eae9033890599561
	2959273a5c63f93636c14614ac8737d11a26002408011220ca93ac1705187071d67b83c7ff0efe8108e8ec453057
	5d7726879333dbdabe7c22207fb5ae4ee34c6316e5dfe5e28efb0bc2fd49ed447b7811a5320684af1167a1a52a40
	d17bd6104078c4db11703d48fddaec2ee0059c69917881cddfa62bf61c9a75fd9e7ffe1614922deeae4806fabad2
	711a1946df9f39b1a8965db8d50e472cee05
	`
	vecRevealDigest = "4b2a6c361de8fe296a2ebbda8de3793c798bff9c80a33f521ce8a9dc4197d86b"

	vecError = `
	0a2408011220ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c12162f657068656d
	6572612f7461736b2d6572726f722f311a6f0a066465766e65741226002408011220ca93ac1705187071d67b83c7
	ff0efe8108e8ec4530575d7726879333dbdabe7c1a207fb5ae4ee34c6316e5dfe5e28efb0bc2fd49ed447b7811a5
	320684af1167a1a520062a196576657279207461736b20736c6f7420697320696e207573652a401ffc792491230e
	47bde9d10ce01eebdb395576176d3d90197d7c0dde504a2d8c77003b75f8909bc8697c4b6e94dd02095e7a718555
	90bbd982ee26dbb2014401
	`
	vecErrorDigest = "e12304cc468a87527bbbe6515152af5254f6a972e23287e66aa560c5fd6f1fb8"

	vecDeltaFrame    = "03 12 01 34"
	vecEnvFrameStart = "fa01 0a f701"
)

// vecNow is the moment the vectors are checked at: the task's issued_ms.
var vecNow = time.UnixMilli(1_700_000_000_000)

// seededKey is the Ed25519 key whose 32-byte seed is b repeated.
func seededKey(tb testing.TB, b byte) crypto.PrivKey {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{b}, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		tb.Fatalf("bad hex in a vector: %v", err)
	}
	return b
}

// sessionVectors builds the appendix's messages in order: task, result,
// commitment, reveal, error, each sealed.
type sessionVectors struct {
	router, miner           peer.ID
	task, result            []byte
	commit, reveal, refusal []byte
}

func buildSessionVectors(tb testing.TB) sessionVectors {
	tb.Helper()
	rk, mk := seededKey(tb, 3), seededKey(tb, 4)
	v := sessionVectors{router: testkit.ID(tb, rk), miner: testkit.ID(tb, mk)}
	v.task = testkit.Seal(tb, &pb.SessionTask{
		Network:     "devnet",
		Session:     "0123456789abcdef0123456789abcdef",
		Router:      []byte(v.router),
		Miner:       []byte(v.miner),
		Generation:  7,
		GrantDigest: make([]byte, 32),
		Task:        "fedcba9876543210fedcba9876543210/1",
		Model:       "ephemera-builtin-1",
		Messages: []*pb.ChatMessage{
			{Role: "system", Content: "Answer briefly."},
			{Role: "user", Content: "What is 2 + 2?"},
		},
		MaxTokens:  16,
		Mode:       pb.TaskMode_TASK_MODE_COMMIT_REVEAL,
		IssuedMs:   1_700_000_000_000,
		DeadlineMs: 1_700_000_060_000,
	}, rk)
	taskDigest := protocol.Digest(v.task)
	v.result = testkit.Seal(tb, &pb.TaskResult{
		Network:          "devnet",
		Miner:            []byte(v.miner),
		TaskDigest:       taskDigest,
		Model:            "ephemera-builtin-1",
		Output:           "4",
		PromptTokens:     12,
		CompletionTokens: 1,
		LatencyMs:        3,
	}, mk)
	v.commit = testkit.Seal(tb, &pb.TaskCommit{
		Network:    "devnet",
		Miner:      []byte(v.miner),
		TaskDigest: taskDigest,
		ResultHash: protocol.ResultHash(v.result),
	}, mk)
	v.reveal = testkit.Seal(tb, &pb.Reveal{
		Network:    "devnet",
		Router:     []byte(v.router),
		Miner:      []byte(v.miner),
		TaskDigest: taskDigest,
	}, rk)
	v.refusal = testkit.Seal(tb, &pb.TaskError{
		Network:    "devnet",
		Miner:      []byte(v.miner),
		TaskDigest: taskDigest,
		Code:       pb.TaskErrorCode_TASK_ERROR_BUSY,
		Detail:     "every task slot is in use",
	}, mk)
	return v
}

func TestSessionVectors(t *testing.T) {
	v := buildSessionVectors(t)
	if got := hex.EncodeToString([]byte(v.router)); got != vecKey3 {
		t.Errorf("key 3 is %s, the appendix says %s", got, vecKey3)
	}
	if got := hex.EncodeToString([]byte(v.miner)); got != vecKey4 {
		t.Errorf("key 4 is %s, the appendix says %s", got, vecKey4)
	}
	for _, c := range []struct {
		name          string
		env           []byte
		want, wantSum string
	}{
		{"SessionTask", v.task, vecTask, vecTaskDigest},
		{"TaskResult", v.result, vecResult, vecResultDigest},
		{"TaskCommit", v.commit, vecCommit, vecCommitDigest},
		{"Reveal", v.reveal, vecReveal, vecRevealDigest},
		{"TaskError", v.refusal, vecError, vecErrorDigest},
	} {
		if !bytes.Equal(c.env, unhex(t, c.want)) {
			t.Errorf("%s envelope:\n%x\nthe appendix says:\n%x", c.name, c.env, unhex(t, c.want))
		}
		if got := hex.EncodeToString(protocol.Digest(c.env)); got != c.wantSum {
			t.Errorf("%s digest %s, the appendix says %s", c.name, got, c.wantSum)
		}
	}
}

// TestSessionVectorsCheck: the vectors are valid messages, each accepted by
// the check its receiver applies, and the commitment binds the result.
func TestSessionVectorsCheck(t *testing.T) {
	v := buildSessionVectors(t)
	check := protocol.Checker{Network: "devnet", Params: protocol.DefaultParams(), Now: func() time.Time { return vecNow }}
	task := testkit.Open[pb.SessionTask](t, v.task)
	if err := check.SessionTask(task, v.miner); err != nil {
		t.Errorf("task: %v", err)
	}
	digest := task.Digest()
	result := testkit.Open[pb.TaskResult](t, v.result)
	if err := check.TaskResult(result, v.miner, digest); err != nil {
		t.Errorf("result: %v", err)
	}
	commit := testkit.Open[pb.TaskCommit](t, v.commit)
	if err := check.TaskCommit(commit, v.miner, digest); err != nil {
		t.Errorf("commitment: %v", err)
	}
	if !bytes.Equal(commit.Msg.ResultHash, protocol.Digest(v.result)) {
		t.Error("the commitment's result_hash is not the digest of the result envelope")
	}
	reveal := testkit.Open[pb.Reveal](t, v.reveal)
	if err := check.Reveal(reveal, v.router, v.miner, digest); err != nil {
		t.Errorf("reveal: %v", err)
	}
	taskErr := testkit.Open[pb.TaskError](t, v.refusal)
	if err := check.TaskError(taskErr, v.miner, digest); err != nil {
		t.Errorf("task error: %v", err)
	}
	// A minute later the task's deadline has passed: IGNORE, which the
	// miner answers with TASK_ERROR_EXPIRED.
	late := check
	late.Now = func() time.Time { return vecNow.Add(time.Minute) }
	if err := late.SessionTask(task, v.miner); testkit.Class(err) != "ignore" {
		t.Errorf("task at its deadline: %v, want an IGNORE", err)
	}
}

// TestSessionFrameVectors: the frames a miner writes, with their length
// prefix, as the appendix prints them.
func TestSessionFrameVectors(t *testing.T) {
	v := buildSessionVectors(t)
	var b bytes.Buffer
	if err := protocol.WriteFrame(&b, &pb.SessionFrame{Body: &pb.SessionFrame_Delta{Delta: "4"}}); err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, vecDeltaFrame); !bytes.Equal(b.Bytes(), want) {
		t.Errorf("delta frame % x, the appendix says % x", b.Bytes(), want)
	}
	b.Reset()
	if err := protocol.WriteFrame(&b, &pb.SessionFrame{Body: &pb.SessionFrame_Envelope{Envelope: v.commit}}); err != nil {
		t.Fatal(err)
	}
	start := unhex(t, vecEnvFrameStart)
	if !bytes.Equal(b.Bytes(), append(bytes.Clone(start), v.commit...)) {
		t.Errorf("envelope frame starts % x, the appendix says % x", b.Bytes()[:min(len(start), b.Len())], start)
	}
	f, err := protocol.ReadFrame(bufio.NewReader(&b))
	if err != nil {
		t.Fatal(err)
	}
	if env, ok := f.Body.(*pb.SessionFrame_Envelope); !ok || !bytes.Equal(env.Envelope, v.commit) {
		t.Errorf("frame read back as %v", f)
	}
}

// TestSessionVectorsInDocument: the document prints every vector this test
// checks, byte for byte.
func TestSessionVectorsInDocument(t *testing.T) {
	raw, err := os.ReadFile(vectorDoc)
	if err != nil {
		t.Skipf("no %s: %v", vectorDoc, err)
	}
	// Hex blocks are wrapped and indented in the document; so are some
	// digests. Compare with all white space taken out.
	doc := strings.Join(strings.Fields(string(raw)), "")
	for name, s := range map[string]string{
		"key 3": vecKey3, "key 4": vecKey4,
		"SessionTask": vecTask, "SessionTask digest": vecTaskDigest,
		"TaskResult": vecResult, "TaskResult digest": vecResultDigest,
		"TaskCommit": vecCommit, "TaskCommit digest": vecCommitDigest,
		"Reveal": vecReveal, "Reveal digest": vecRevealDigest,
		"TaskError": vecError, "TaskError digest": vecErrorDigest,
		"delta frame": vecDeltaFrame, "envelope frame": vecEnvFrameStart,
	} {
		want := strings.Join(strings.Fields(s), "")
		if want == "" || !strings.Contains(doc, want) {
			t.Errorf("%s does not print the %s vector %s", vectorDoc, name, want)
		}
	}
}
