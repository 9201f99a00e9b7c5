package protocol_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func TestPoolCID(t *testing.T) {
	a := protocol.PoolCID("testnet", "llama")
	if !a.Equals(protocol.PoolCID("testnet", "llama")) {
		t.Error("PoolCID is not deterministic")
	}
	if a.Version() != 1 || a.Type() != cid.Raw {
		t.Errorf("CID version %d codec %#x, want CIDv1 raw", a.Version(), a.Type())
	}
	dec, err := mh.Decode(a.Hash())
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("ephemera/testnet/pool/llama"))
	if dec.Code != mh.SHA2_256 || dec.Length != 32 || !bytes.Equal(dec.Digest, want[:]) {
		t.Errorf("multihash %+v, want sha2-256 of the pool name", dec)
	}
	parsed, err := cid.Decode(a.String())
	if err != nil || !parsed.Equals(a) {
		t.Errorf("CID does not survive its string form: %v", err)
	}
	distinct := map[string]string{}
	for _, c := range []struct{ net, model string }{
		{"testnet", "llama"}, {"mainnet", "llama"}, {"testnet", "mistral"}, {"testnet", ""}, {"", "llama"},
		{"testnet", "Llama"}, {"testnet", "llama "},
	} {
		k := protocol.PoolCID(c.net, c.model).KeyString()
		if prev, dup := distinct[k]; dup {
			t.Errorf("%v shares its CID with %s", c, prev)
		}
		distinct[k] = c.net + "/" + c.model
	}
}

func TestNames(t *testing.T) {
	if got := protocol.ValidateProtocol("testnet"); got != "/ephemera/testnet/validate/2.0.0" {
		t.Errorf("ValidateProtocol %q", got)
	}
	if got := protocol.ReserveProtocol("testnet"); got != "/ephemera/testnet/reserve/1.0.0" {
		t.Errorf("ReserveProtocol %q", got)
	}
	if protocol.ValidateProtocol("a") == protocol.ValidateProtocol("b") {
		t.Error("networks share a protocol")
	}
	if got := protocol.AvailabilityKey([]byte{0x00, 0x24, 0xff}); got != "/avail/\x00\x24\xff" {
		t.Errorf("AvailabilityKey %q", got)
	}
}

func TestWriteReadMsg(t *testing.T) {
	sizes := []int{0, 1, 127, 128, 300, 16383, 16384, 70_000, protocol.MaxMessageSize}
	var stream bytes.Buffer
	var sent [][]byte
	for _, n := range sizes {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i*31 + n)
		}
		if err := protocol.WriteMsg(&stream, msg); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
		sent = append(sent, msg)
	}
	r := bufio.NewReader(&stream)
	for i, want := range sent {
		got, err := protocol.ReadMsg(r, protocol.MaxMessageSize)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d of %d bytes changed", i, len(want))
		}
	}
	if _, err := protocol.ReadMsg(r, protocol.MaxMessageSize); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read past the end: %v", err)
	}
}

func TestWriteMsgFraming(t *testing.T) {
	var b bytes.Buffer
	if err := protocol.WriteMsg(&b, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if got := b.Bytes(); !bytes.Equal(got, []byte{3, 'a', 'b', 'c'}) {
		t.Errorf("framing % x", got)
	}
	b.Reset()
	if err := protocol.WriteMsg(&b, make([]byte, protocol.MaxMessageSize+1)); err == nil {
		t.Error("wrote an oversized message")
	}
	if b.Len() != 0 {
		t.Errorf("an oversized message wrote %d bytes", b.Len())
	}
	if err := protocol.WriteMsg(failWriter{}, []byte("x")); err == nil {
		t.Error("write error lost")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// countingReader counts the bytes pulled from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadMsgErrors(t *testing.T) {
	header := func(n uint64) []byte { return binary.AppendUvarint(nil, n) }
	tests := []struct {
		name    string
		in      []byte
		max     int
		wantErr string // substring; "" for success
		wantEOF bool   // the error wraps io.ErrUnexpectedEOF
	}{
		{"empty input", nil, 100, "EOF", true},
		{"partial length", []byte{0x80}, 100, "EOF", true},
		{"length overflows 64 bits", bytes.Repeat([]byte{0xff}, 11), 100, "length", false},
		{"body truncated", append(header(10), "abc"...), 100, "body", true},
		{"no body", header(10), 100, "body", true},
		{"exactly max", append(header(5), "hello"...), 5, "", false},
		{"over max", append(header(6), "hello!"...), 5, "exceeds", false},
		{"huge length, no body", header(1 << 62), protocol.MaxMessageSize, "exceeds", false},
		{"max uint64 length", header(1<<64 - 1), protocol.MaxMessageSize, "exceeds", false},
		{"zero max, empty message", header(0), 0, "", false},
		{"zero max, one byte", append(header(1), 'x'), 0, "exceeds", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := &countingReader{r: bytes.NewReader(tt.in)}
			_, err := protocol.ReadMsg(bufio.NewReader(cr), tt.max)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one about %q", err, tt.wantErr)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) != tt.wantEOF {
				t.Errorf("error %v: wraps ErrUnexpectedEOF %v, want %v", err, !tt.wantEOF, tt.wantEOF)
			}
		})
	}
}

// TestReadMsgRefusesBeforeReading: an oversized length is refused before a
// byte of the body is consumed (or a buffer for it allocated).
func TestReadMsgRefusesBeforeReading(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 64<<10)
	in := append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	r := bufio.NewReaderSize(bytes.NewReader(in), 16)
	if _, err := protocol.ReadMsg(r, 1024); err == nil {
		t.Fatal("read an oversized message")
	}
	// The small bufio buffer holds at most 16 bytes: the body is still there.
	rest, _ := io.ReadAll(r)
	if len(rest) < len(body)-16 {
		t.Errorf("%d of %d body bytes consumed before refusing", len(body)-len(rest), len(body))
	}
	allocs := testing.AllocsPerRun(20, func() {
		_, _ = protocol.ReadMsg(bufio.NewReader(bytes.NewReader(binary.AppendUvarint(nil, 1<<40))), protocol.MaxMessageSize)
	})
	if allocs > 10 {
		t.Errorf("%v allocations refusing a message", allocs)
	}
}
