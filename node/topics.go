package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
)

// startPool builds the pool view and joins every topic with the kinds
// protocol.TopicKinds says it carries, each judged by the pool. A node that
// is only a miner joins them only to publish its records and grants: it
// needs no other miner's, and oracles send it its own verdicts directly
// (protocol.NoticeProtocol), so its gossip costs stay flat as the network
// grows.
func (n *Node) startPool(ctx context.Context) error {
	var err error
	if n.pool, err = pool.New(n.store, n.check, n.log.With("module", "pool")); err != nil {
		return err
	}
	judges := n.pool.Judges(n.key, n.publish)
	for _, name := range protocol.Topics {
		var kinds []gossip.Kind
		for _, k := range protocol.TopicKinds[name] {
			j, ok := judges[k.Domain]
			if !ok {
				return fmt.Errorf("topic %s: the pool has no judge of %s", name, k.Domain)
			}
			kinds = append(kinds, gossip.Judged(j.New, j.Take))
		}
		join := n.gossip.Join
		if !n.followsGossip() {
			join = func(ctx context.Context, name string, v gossip.Validator, _ gossip.Handler) (*gossip.Topic, error) {
				return n.gossip.JoinToPublish(ctx, name, v)
			}
		}
		t, err := join(ctx, name, gossip.EnvelopeValidator(kinds...), nil)
		if err != nil {
			return err
		}
		// Validators of the topics joined first may already publish evidence.
		n.topicsMu.Lock()
		n.topics[name] = t
		n.topicsMu.Unlock()
	}
	return nil
}

// followsGossip reports whether this node subscribes to the network's
// topics: every role but the miner needs the whole pool view.
func (n *Node) followsGossip() bool {
	return slices.ContainsFunc(n.cfg.Roles, func(r Role) bool { return r != RoleMiner })
}

// publish sends data on one of the network's topics.
func (n *Node) publish(ctx context.Context, topic string, data []byte) error {
	n.topicsMu.RLock()
	t, ok := n.topics[topic]
	n.topicsMu.RUnlock()
	if !ok {
		return fmt.Errorf("not joined to topic %s", topic)
	}
	return t.Publish(ctx, data)
}

// topicPeers counts the peers subscribed to one of the network's topics.
func (n *Node) topicPeers(topic string) int {
	n.topicsMu.RLock()
	t, ok := n.topics[topic]
	n.topicsMu.RUnlock()
	if !ok {
		return 0
	}
	return len(t.Peers())
}

func (n *Node) publisher(topic string) func(context.Context, []byte) error {
	return func(ctx context.Context, data []byte) error { return n.publish(ctx, topic, data) }
}
