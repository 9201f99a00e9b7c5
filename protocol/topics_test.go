package protocol_test

import (
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"google.golang.org/protobuf/proto"
)

// Every topic carries kinds, each kind rides one topic (evidence rides
// those of what it is about), and the wire names stay what they were.
func TestTopics(t *testing.T) {
	if got := protocol.TopicID("devnet", protocol.TopicAttestations); got != "/ephemera/devnet/attestations/1" {
		t.Errorf("TopicID = %q", got)
	}
	evidence, _ := protocol.KindOf(&pb.Evidence{})
	seen := map[string]string{}
	for _, topic := range protocol.Topics {
		if len(protocol.TopicKinds[topic]) == 0 {
			t.Errorf("topic %s carries no kind", topic)
		}
		for _, k := range protocol.TopicKinds[topic] {
			if prev, ok := seen[k.Domain]; ok && k.Domain != evidence.Domain {
				t.Errorf("%s rides both %s and %s", k.Domain, prev, topic)
			}
			seen[k.Domain] = topic
		}
	}
	for _, tt := range []struct {
		m     proto.Message
		topic string
	}{
		{&pb.Attestation{}, protocol.TopicAttestations},
		{&pb.Grant{}, protocol.TopicReservations},
		{&pb.Release{}, protocol.TopicReservations},
		{&pb.Availability{}, protocol.TopicPool},
		{&pb.Claim{}, ""},
	} {
		k, _ := protocol.KindOf(tt.m)
		if got := protocol.TopicOf(k); got != tt.topic {
			t.Errorf("TopicOf(%s) = %q, want %q", k.Domain, got, tt.topic)
		}
	}
}
