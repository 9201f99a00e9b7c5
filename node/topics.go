package node

import (
	"context"
	"fmt"

	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
)

// startPool builds the pool view and joins every topic with the kinds
// protocol.TopicKinds says it carries, each judged by the pool.
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
		t, err := n.gossip.Join(ctx, name, gossip.EnvelopeValidator(kinds...), nil)
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
