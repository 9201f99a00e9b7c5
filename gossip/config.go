package gossip

import (
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

// Config is the gossip part of a node's configuration.
type Config struct {
	// MaxMessageSize bounds one gossip message; larger ones are dropped unread.
	MaxMessageSize int `toml:"max_message_size"`
	// ValidatorTimeout bounds how long one message may take to validate.
	ValidatorTimeout duration.Duration `toml:"validator_timeout"`
	// ValidatorConcurrency bounds how many messages of one topic validate at once.
	ValidatorConcurrency int `toml:"validator_concurrency"`
}

// DefaultConfig suits signed control messages, which are a few hundred bytes.
func DefaultConfig() Config {
	return Config{
		MaxMessageSize:       64 << 10,
		ValidatorTimeout:     duration.Duration(2 * time.Second),
		ValidatorConcurrency: 256,
	}
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	if c.MaxMessageSize < 1<<10 || c.MaxMessageSize > 4<<20 {
		return fmt.Errorf("gossip.max_message_size: %d, must be between 1024 and 4194304", c.MaxMessageSize)
	}
	if c.ValidatorTimeout.Std() <= 0 {
		return fmt.Errorf("gossip.validator_timeout: %s, must be positive", c.ValidatorTimeout)
	}
	if c.ValidatorConcurrency < 1 {
		return fmt.Errorf("gossip.validator_concurrency: %d, must be at least 1", c.ValidatorConcurrency)
	}
	return nil
}
