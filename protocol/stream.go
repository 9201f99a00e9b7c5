package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
)

// MaxMessageSize bounds one message on a stream; nothing the protocol sends
// comes near it.
const MaxMessageSize = 1 << 20

// The size limit of each kind of stream message, read before the body: a
// reader refuses a longer one and resets the stream without reading it. A
// reserve request needs about 300 bytes, so a peer that sends megabytes of
// garbage is cut short at the length prefix. Messages that carry prompts or
// model output keep the general limit.
const (
	MaxReserveRequestSize = 4 << 10        // Claim, Renew, Release: a miner reads these from any peer
	MaxReserveReplySize   = 16 << 10       // Grant (with its Claim), Refusal, Receipt
	MaxChallengeSize      = 128 << 10      // Challenge: up to 64 generated prompts
	MaxAnswerSize         = MaxMessageSize // Answer: model output for every task
	MaxTaskSize           = MaxMessageSize // SessionTask: a chat's whole history
	MaxRevealSize         = 4 << 10        // Reveal
	MaxNoticeSize         = 4 << 10        // Attestation or Eviction: a miner reads these from oracles
	MaxFrameSize          = MaxMessageSize // SessionFrame: a delta, or a signed result with the whole output
)

// ErrTooLarge is wrapped by a read's error when the length prefix is over
// the reader's limit: the body was never read.
var ErrTooLarge = errors.New("message too large")

// WriteMsg writes one length-prefixed message: an unsigned varint length,
// then the bytes (the framing of libp2p's msgio/varint streams).
func WriteMsg(w io.Writer, msg []byte) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes exceeds %d", len(msg), MaxMessageSize)
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(msg)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(msg)
	return err
}

// ReadMsg reads one length-prefixed message, refusing one over max bytes
// before reading it.
func ReadMsg(r *bufio.Reader, max int) ([]byte, error) { return readMsg(r, max, nil) }

// ReadStream reads one message from r, which reads s, as ReadMsg does, and
// holds the message's size against s's resource scope while reading it. The
// scope rolls up into the stream's protocol, per peer and in all, so the
// resource manager's limits for the protocol bound what its streams may
// take at once; a message over them is refused before it is read, as one
// over max is.
func ReadStream(s network.Stream, r *bufio.Reader, max int) ([]byte, error) {
	return readMsg(r, max, s.Scope())
}

func readMsg(r *bufio.Reader, max int, scope network.ResourceScope) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("message length: %w", err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrTooLarge, n, max)
	}
	if scope != nil && n > 0 {
		if err := scope.ReserveMemory(int(n), network.ReservationPriorityAlways); err != nil {
			return nil, fmt.Errorf("message of %d bytes: %w", n, err)
		}
		defer scope.ReleaseMemory(int(n))
	}
	// Grow as bytes arrive rather than trust the header: a peer that
	// announces a megabyte and sends nothing costs us nothing.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("message body: %w", err)
	}
	return buf.Bytes(), nil
}
