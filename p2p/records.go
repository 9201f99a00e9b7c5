package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	record "github.com/libp2p/go-libp2p-record"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// Sentinel errors of a DHT put this node refuses to store.
var (
	ErrPeerRecordLimit = errors.New("dht: the putting peer holds its limit of records here")
	ErrRecordLimit     = errors.New("dht: this node holds its limit of records")
)

// pendingTTL is how long a PUT_VALUE's sender is remembered for the store
// that follows it at once in the same goroutine.
const pendingTTL = 5 * time.Second

// recordStore is the DHT's value datastore: an in-memory map that caps the
// records it holds, per putting peer and in all. Kademlia stores any valid
// record it is sent; without caps, fresh identities' valid records fill a
// DHT server's memory (80,000 in 25 s from one peer). A record about this
// node itself (its own /avail/ or /pk/ key) is never refused.
//
// The datastore sees keys and values, not who sent them: the DHT's request
// hook (expect) notes each PUT_VALUE's sender under the record's key just
// before the DHT validates and stores it, and Put takes the note. A put
// with no note (a race of two senders for one key) counts as the unknown
// peer's, which has the same cap as any other.
type recordStore struct {
	ds.Batching
	self    peer.ID
	perPeer int
	total   int
	now     func() time.Time

	mu      sync.Mutex
	pending map[string]pendingPut // record key → the sender of the PUT being handled
	owner   map[ds.Key]peer.ID    // stored record → who put it ("" unknown, self ours)
	count   map[peer.ID]int       // stored records per putter
}

type pendingPut struct {
	from peer.ID
	at   time.Time
}

func newRecordStore(self peer.ID, perPeer, total int) *recordStore {
	return &recordStore{
		Batching: dssync.MutexWrap(ds.NewMapDatastore()),
		self:     self, perPeer: perPeer, total: total, now: time.Now,
		pending: map[string]pendingPut{}, owner: map[ds.Key]peer.ID{}, count: map[peer.ID]int{},
	}
}

// hook is the DHT's request hook: it notes who sends each PUT_VALUE.
func (s *recordStore) hook(_ context.Context, st network.Stream, req *dhtpb.Message) {
	if req.GetType() != dhtpb.Message_PUT_VALUE || req.GetRecord() == nil {
		return
	}
	s.expect(string(req.GetRecord().GetKey()), st.Conn().RemotePeer())
}

func (s *recordStore) expect(key string, from peer.ID) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) >= 1024 {
		// Notes of puts that never reached the store (invalid records).
		for k, p := range s.pending {
			if now.Sub(p.at) > pendingTTL {
				delete(s.pending, k)
			}
		}
	}
	s.pending[key] = pendingPut{from, now}
}

// putter is who put value, a marshalled record: this node for a record
// about itself, else the sender noted by the hook, else unknown ("").
func (s *recordStore) putter(value []byte) peer.ID {
	rec := new(recpb.Record)
	if proto.Unmarshal(value, rec) != nil {
		return ""
	}
	key := string(rec.GetKey())
	if _, rest, err := record.SplitKey(key); err == nil && rest == string(s.self) {
		return s.self
	}
	p, ok := s.pending[key]
	if !ok || s.now().Sub(p.at) > pendingTTL {
		return ""
	}
	delete(s.pending, key)
	return p.from
}

// Put stores a record, unless it is a new one and its putter, or the store,
// holds its limit already. A newer version of a stored record replaces it
// and stays its first putter's.
func (s *recordStore) Put(ctx context.Context, k ds.Key, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := s.putter(value)
	if _, held := s.owner[k]; !held && from != s.self {
		switch {
		case s.count[from] >= s.perPeer:
			return fmt.Errorf("%w (%d, from %s)", ErrPeerRecordLimit, s.perPeer, from)
		case len(s.owner) >= s.total:
			return fmt.Errorf("%w (%d)", ErrRecordLimit, s.total)
		}
	}
	if err := s.Batching.Put(ctx, k, value); err != nil {
		return err
	}
	if _, held := s.owner[k]; !held {
		s.owner[k] = from
		s.count[from]++
	}
	return nil
}

// Delete removes a record (expired, swept by the DHT) and frees its place.
func (s *recordStore) Delete(ctx context.Context, k ds.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Batching.Delete(ctx, k); err != nil {
		return err
	}
	if from, held := s.owner[k]; held {
		delete(s.owner, k)
		if s.count[from]--; s.count[from] <= 0 {
			delete(s.count, from)
		}
	}
	return nil
}

// Batch applies its writes through Put and Delete, caps and all.
func (s *recordStore) Batch(context.Context) (ds.Batch, error) { return ds.NewBasicBatch(s), nil }

// held is how many records the store holds, and how many of them p put.
func (s *recordStore) held(p peer.ID) (all, of int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.owner), s.count[p]
}
