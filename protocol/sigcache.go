package protocol

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// SigCache remembers envelopes whose signature has been verified, by the
// SHA-256 of their bytes. Every availability record carries a quorum of
// attestations, and every node sees each record on gossip and the DHT:
// without it, the same few attestation signatures would be verified again
// for every record and every transition. Safe for concurrent use.
type SigCache struct {
	mu       sync.Mutex
	max      int
	seen     map[[32]byte]struct{}
	verified atomic.Uint64
}

// Verified counts the signatures verified through the cache: the opens it
// could not spare.
func (c *SigCache) Verified() uint64 { return c.verified.Load() }

// NewSigCache holds up to max digests; when full, it forgets an arbitrary half.
func NewSigCache(max int) *SigCache {
	return &SigCache{max: max, seen: make(map[[32]byte]struct{}, max)}
}

func (c *SigCache) has(d [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.seen[d]
	return ok
}

func (c *SigCache) add(d [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) >= c.max {
		n := 0
		for k := range c.seen { // map order is random: an arbitrary half goes
			if n++; n > c.max/2 {
				break
			}
			delete(c.seen, k)
		}
	}
	c.seen[d] = struct{}{}
}

// OpenCached is Open through cache c (see openCached), for messages a node
// opens again and again, or whose verifications it counts.
func OpenCached[T any, M Message[T]](c *SigCache, raw []byte) (Signed[M], error) {
	return openCached[T, M](c, raw)
}

// openCached opens an envelope like Open, skipping the signature check for
// bytes already verified: the same bytes carry the same signature, so a
// cached digest trusts nothing new. A nil cache always verifies.
func openCached[T any, M Message[T]](c *SigCache, raw []byte) (Signed[M], error) {
	if c == nil {
		return Open[T, M](raw)
	}
	d := sha256.Sum256(raw)
	if c.has(d) {
		env, err := record.UnmarshalEnvelope(raw)
		if err == nil {
			rec := &Record[T, M]{}
			if err = rec.UnmarshalRecord(env.RawPayload); err == nil {
				if signer, err := peer.IDFromPublicKey(env.PublicKey); err == nil {
					return Signed[M]{Msg: rec.Msg, Signer: signer, Raw: raw}, nil
				}
			}
		}
	}
	c.verified.Add(1)
	s, err := Open[T, M](raw)
	if err == nil {
		c.add(d)
	}
	return s, err
}
